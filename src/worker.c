/* worker: a thread's event loop, its SO_REUSEPORT listeners, its idle upstream pools and
 * its part in a graceful stop. Client connections live in conn.c. */
#include <sluice/worker.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/rand.h>

#include <unistd.h>

#include <sluice/listener.h>
#include <sluice/log.h>
#include <sluice/conn.h>
#include <sluice/request.h>
#include <sluice/upconn.h>
#include <sluice/upstream.h>

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct wlistener *wl = arg;
    (void)l;
    conn_accept(wl->w, fd, sa, salen, wl->tls);
    worker_fd_check(wl->w);
}

static void listeners_enable(struct worker *w, int on)
{
    for (int i = 0; i < w->nlst; i++) {
        if (on)
            evconnlistener_enable(w->lst[i].lev);
        else
            evconnlistener_disable(w->lst[i].lev);
    }
}

/* Accepting pauses while client and backend connections use three quarters of the
 * worker's share of RLIMIT_NOFILE: the connections it holds must still find descriptors for
 * their backend connections (an accept that took the last one turned a request into a 502
 * and marked a healthy backend down). HAProxy derives maxconn from the same limit. */
void worker_fd_check(struct worker *w)
{
    int used = w->nconns + w->nupconns, high = w->fd_share - w->fd_share / 4;
    if (!w->fd_paused && used >= high) {
        w->fd_paused = 1;
        listeners_enable(w, 0);
        stats_add(&w->stats, STAT_accept_pauses, 1);
        log_warn("listener", "thread=%d: %d client and %d backend connections, near its %d "
                 "descriptors (RLIMIT_NOFILE): accepting paused", w->id, w->nconns,
                 w->nupconns, w->fd_share);
    } else if (w->fd_paused && used < high - high / 8) {
        w->fd_paused = 0;
        if (!w->draining && !evtimer_pending(w->accept_retry, NULL))
            listeners_enable(w, 1);
        log_info("listener", "thread=%d: accepting again", w->id);
    }
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    if (w->draining || w->fd_paused)
        return;
    listeners_enable(w, 1);
}

/* accept() failed, most often EMFILE: stop accepting for 100 ms instead of spinning. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct wlistener *wl = arg;
    struct worker *w = wl->w;
    int e = EVUTIL_SOCKET_ERROR();
    (void)l;
    stats_add(&w->stats, STAT_accept_errors, 1);
    log_warn("listener", "accept failed: %s; pausing accept for 100ms", strerror(e));
    listeners_enable(w, 0);
    struct timeval tv = {0, 100000};
    evtimer_add(w->accept_retry, &tv);
}

static void stop_cb(void *arg);
static void pool_sweep_cb(evutil_socket_t fd, short what, void *arg);
static void grace_cb(evutil_socket_t fd, short what, void *arg);
static void reload_cb(void *arg);

/* The descriptors one worker's connections may use: RLIMIT_NOFILE (main raised it to the
 * hard limit) less what the process keeps for itself (logs, epoll, listeners, Redis, health
 * checks, the admin listener), shared by the workers. */
static int fd_share(int nworkers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > (1u << 30))
        return 1 << 30;
    long spare = (long)rl.rlim_cur - 24 - 8L * nworkers;
    long share = spare / (nworkers > 0 ? nworkers : 1);
    return share < 8 ? 8 : (int)share;
}

int worker_init(struct worker *w, struct proxy *px, int id, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->px = px;
    struct event_config *ec = event_config_new();
    if (ec) {
        /* coalesce the epoll_ctl calls one loop turn makes (enable+disable cancel) */
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        /* only this worker's thread touches its base: other threads post to w->box */
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    }
    w->base = ec ? event_base_new_with_config(ec) : NULL;
    if (ec)
        event_config_free(ec);
    if (!w->base) {
        snprintf(err, errlen, "worker %d: cannot create an event base", id);
        return -1;
    }
    mail_init(&w->stop_mail, stop_cb, w);
    mail_init(&w->reload_mail, reload_cb, w);
    int boxed = mailbox_init(&w->box, w->base) == 0;
    w->grace = evtimer_new(w->base, grace_cb, w);
    w->accept_retry = evtimer_new(w->base, accept_retry_cb, w);
    w->pool_sweep = evtimer_new(w->base, pool_sweep_cb, w);
    if (RAND_bytes((unsigned char *)w->rng, sizeof w->rng) != 1)
        w->rng[0] = (uint64_t)id * 0x9E3779B97F4A7C15ULL + 1;
    w->rng[1] |= 1;
    for (int i = 0; i < WORKER_MAX_LISTEN; i++)
        w->pending_fd[i] = -1;
    w->fd_share = fd_share(px->nworkers);
    snprintf(w->name, sizeof w->name, "worker %d", id);
    if (!boxed || !w->grace || !w->accept_retry || !w->pool_sweep ||
        rclient_init(&w->redis, w->base, &w->stats, w->name) < 0) {
        snprintf(err, errlen, "worker %d: out of memory", id);
        return -1;
    }
    return 0;
}

/* The listen specs of a generation, plain ones first: spec i and whether it is TLS. */
static size_t specs(const struct runtime *rt, const char **spec, int *tls)
{
    const struct proxy_conf *pc = &rt->cfg->proxy;
    size_t n = 0;
    for (size_t i = 0; i < pc->listen.n; i++, n++) {
        spec[n] = pc->listen.v[i];
        tls[n] = 0;
    }
    for (size_t i = 0; i < pc->tls_listen.n; i++, n++) {
        spec[n] = pc->tls_listen.v[i];
        tls[n] = 1;
    }
    return n;
}

static int find_listener(const struct worker *w, const char *spec, int tls)
{
    for (int i = 0; i < w->nlst; i++)
        if (w->lst[i].spec && w->lst[i].tls == tls && strcmp(w->lst[i].spec, spec) == 0)
            return i;
    return -1;
}

int worker_prepare(struct worker *w, const struct runtime *next, char *err, size_t errlen)
{
    const char *spec[WORKER_MAX_LISTEN];
    int tls[WORKER_MAX_LISTEN];
    size_t n = specs(next, spec, tls);
    for (size_t i = 0; i < n; i++) {
        w->pending_fd[i] = -1;
        if (find_listener(w, spec[i], tls[i]) >= 0)
            continue;
        w->pending_fd[i] = listener_socket(spec[i], w->id == 0, err, errlen);
        if (w->pending_fd[i] < 0) {
            worker_unprepare(w);
            return -1;
        }
    }
    return 0;
}

void worker_unprepare(struct worker *w)
{
    for (int i = 0; i < WORKER_MAX_LISTEN; i++) {
        if (w->pending_fd[i] >= 0)
            close(w->pending_fd[i]);
        w->pending_fd[i] = -1;
    }
}

static void pools_free(struct worker *w);

/* Listeners for rt: keep the ones whose spec stayed, open the prepared ones, close the
 * rest. Sockets that stay are never closed, so no queued connection is lost. */
static void adopt_listeners(struct worker *w, const struct runtime *rt)
{
    const char *spec[WORKER_MAX_LISTEN];
    int tls[WORKER_MAX_LISTEN];
    size_t n = specs(rt, spec, tls);
    struct wlistener next[WORKER_MAX_LISTEN];
    int nn = 0;
    for (size_t i = 0; i < n; i++) {
        int k = find_listener(w, spec[i], tls[i]);
        if (k >= 0) {
            next[nn++] = w->lst[k];
            w->lst[k].lev = NULL;
            w->lst[k].spec = NULL;
            continue;
        }
        if (w->pending_fd[i] < 0)
            continue;
        unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
        struct evconnlistener *lev =
            evconnlistener_new(w->base, accept_cb, NULL, flags, -1, w->pending_fd[i]);
        if (!lev) {
            close(w->pending_fd[i]);
        } else {
            next[nn].w = w;
            next[nn].spec = strdup(spec[i]);
            next[nn].tls = tls[i];
            next[nn].lev = lev;
            nn++;
        }
        w->pending_fd[i] = -1;
    }
    for (int i = 0; i < w->nlst; i++) {
        if (w->lst[i].lev)
            evconnlistener_free(w->lst[i].lev);
        free(w->lst[i].spec);
    }
    memcpy(w->lst, next, sizeof next[0] * (size_t)nn);
    w->nlst = nn;
    for (int i = 0; i < nn; i++) {
        evconnlistener_set_cb(w->lst[i].lev, accept_cb, &w->lst[i]);
        evconnlistener_set_error_cb(w->lst[i].lev, accept_error_cb);
        if (w->draining || w->fd_paused)
            evconnlistener_disable(w->lst[i].lev);
    }
}

int worker_adopt(struct worker *w)
{
    struct runtime *rt = atomic_load(&w->px->rt);
    size_t nh = (size_t)rt->cfg->proxy.max_headers;
    struct http1_header *hdrs = calloc(nh, sizeof *hdrs);
    struct pool *pools = calloc((size_t)(rt->up.n > 0 ? rt->up.n : 1), sizeof *pools);
    char *path = malloc(rt->cfg->proxy.max_line_size + 2); /* a target is shorter */
    if (!hdrs || !pools || !path) {
        free(hdrs);
        free(pools);
        free(path);
        worker_unprepare(w);
        return -1;
    }
    runtime_ref(rt);
    adopt_listeners(w, rt);
    if (w->rt)
        pools_free(w); /* idle connections belong to the old backend table */
    free(w->pools);
    free(w->hdrs);
    free(w->path);
    w->pools = pools;
    w->hdrs = hdrs;
    w->path = path;
    w->nhdrs = nh;
    struct runtime *old = w->rt;
    w->rt = rt;
    runtime_unref(old);
    rclient_configure(&w->redis, &rt->cfg->redis, rt->redis_ip);
    atomic_store(&w->adopted, rt->generation);
    return 0;
}

static void reload_cb(void *arg)
{
    worker_adopt(arg);
}

void worker_reload(struct worker *w)
{
    mailbox_post(&w->box, &w->reload_mail);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

static void pools_free(struct worker *w)
{
    for (int b = 0; w->rt && b < w->rt->up.n; b++) {
        struct upconn *u = w->pools[b].head;
        while (u) {
            struct upconn *next = u->next;
            upconn_free(u);
            u = next;
        }
        w->pools[b].head = w->pools[b].tail = NULL;
        w->pools[b].count = 0;
    }
}

/* Runs on the worker's own thread. */
static void stop_cb(void *arg)
{
    struct worker *w = arg;
    if (w->draining)
        return;
    w->draining = 1;
    for (int i = 0; i < w->nlst; i++) {
        /* connections already in the kernel's accept queue were accepted from the client's
         * point of view: take them (closing the socket would reset them) */
        int lfd = evconnlistener_get_fd(w->lst[i].lev);
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int cfd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (cfd < 0)
                break;
            conn_accept(w, cfd, (struct sockaddr *)&ss, (int)sl, w->lst[i].tls);
        }
        evconnlistener_free(w->lst[i].lev);
        free(w->lst[i].spec);
    }
    w->nlst = 0;
    evtimer_del(w->accept_retry);
    pools_free(w);
    conn_drain_idle(w);
    struct timeval tv;
    uint32_t ms = w->rt->cfg->proxy.shutdown_grace_ms;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(w->grace, &tv);
    worker_conn_gone(w);
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    log_warn("worker", "shutdown grace expired thread=%d sessions=%d: closing them", w->id,
             w->nconns);
    event_base_loopbreak(w->base);
}

void worker_stop(struct worker *w)
{
    mailbox_post(&w->box, &w->stop_mail);
}

void worker_conn_gone(struct worker *w)
{
    worker_fd_check(w);
    if (w->draining && w->nconns == 0)
        event_base_loopbreak(w->base);
}

void worker_free(struct worker *w)
{
    while (w->conns)
        conn_kill(w->conns);
    rclient_free(&w->redis); /* after the connections: none holds a call any more */
    req_pool_free(w);
    if (w->pools)
        pools_free(w);
    for (int i = 0; i < w->nlst; i++) {
        evconnlistener_free(w->lst[i].lev);
        free(w->lst[i].spec);
    }
    w->nlst = 0;
    worker_unprepare(w);
    runtime_unref(w->rt);
    w->rt = NULL;
    mailbox_free(&w->box); /* after the connections: their waiters took their mails back */
    if (w->grace)
        event_free(w->grace);
    if (w->accept_retry)
        event_free(w->accept_retry);
    if (w->pool_sweep)
        event_free(w->pool_sweep);
    free(w->hdrs);
    free(w->path);
    free(w->pools);
    if (w->base)
        event_base_free(w->base);
}

void worker_request_id(struct worker *w, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        /* xorshift128+ */
        uint64_t x = w->rng[0], y = w->rng[1];
        w->rng[0] = y;
        x ^= x << 23;
        w->rng[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
        uint64_t v = w->rng[1] + y;
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(v >> (i * 4)) & 15];
    }
    out[32] = '\0';
}

/* ---- idle upstream pool ---- */

static void idle_event_cb(struct sock *sk, short what, void *arg)
{
    struct upconn *u = arg;
    (void)sk;
    (void)what;
    worker_pool_unlink(u->w, u);
    upconn_free(u);
}

/* A backend that talks on an idle connection sent more than its last response's framing:
 * those bytes would be read as the next request's answer (another client's). Close it. */
static void idle_read_cb(struct sock *sk, void *arg)
{
    struct upconn *u = arg;
    stats_add(&u->w->stats, STAT_upstream_dirty, 1);
    log_warn("upstream", "backend=%s sent %zu bytes on an idle connection; closed it",
             u->b->conf->name, evbuffer_get_length(sock_in(sk)));
    idle_event_cb(sk, 0, arg);
}

/* What has arrived on idle u since its last response (and the loop has not read yet):
 * 0 nothing, 1 bytes, -1 the backend closed it. Under TLS only decrypted bytes count (a
 * TLS 1.3 server may send session tickets at any time). */
static int idle_arrived(struct upconn *u)
{
    if (evbuffer_get_length(sock_in(&u->sk)) > 0)
        return 1;
    if (u->b->tls)
        return 0;
    char c;
    ssize_t n = recv(sock_fd(&u->sk), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 1;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

int worker_pool_evict(struct worker *w)
{
    for (int i = 0; w->rt && i < w->rt->up.n; i++) {
        struct upconn *u = w->pools[i].tail;
        if (u) {
            worker_pool_unlink(w, u);
            upconn_free(u);
            return 1;
        }
    }
    return 0;
}

/* Idle connections to b a thread keeps: `keepalive`, or with `auto` at least
 * KEEPALIVE_AUTO_MIN and as many as b had requests in flight (all threads) at the most
 * when this thread last sent one, so that the next wave of a load that keeps that many in
 * flight (HTTP/2 streams, many clients) finds its connections open; the peak is forgotten
 * an idle_timeout after it was seen, and extra connections close after idle_timeout.
 * Measured: 32 idle per thread against 320 HTTP/2 streams in flight opened a backend
 * connection for 46 % of the requests (docs/benchmarks.md, HTTP/2). */
static int keep_idle(struct pool *p, const struct backend *b)
{
    int k = b->conf->keepalive;
    if (k >= 0)
        return k;
    return p->peak > KEEPALIVE_AUTO_MIN ? p->peak : KEEPALIVE_AUTO_MIN;
}

/* keepalive = auto: one of this thread's requests is being sent to b. */
static void note_peak(struct pool *p, const struct backend *b)
{
    if (b->conf->keepalive >= 0)
        return;
    int n = up_inflight(b);
    uint64_t now = up_now_ms();
    if (n >= p->peak || now - p->peak_ms > b->conf->idle_timeout_ms) {
        p->peak = n;
        p->peak_ms = now;
    }
}

/* An idle connection to b that is safe to send a request on, or NULL. Connections that
 * hold bytes nobody asked for are closed and counted; ones the backend closed, dropped. */
/* The worker's pools are those of its generation: a backend of another one (a request
 * admitted before a reload) has none here. Its index means nothing in this table. */
static int pooled_here(const struct worker *w, const struct backend *b)
{
    return w->rt && b->index >= 0 && b->index < w->rt->up.n && &w->rt->up.b[b->index] == b;
}

struct upconn *worker_pool_get(struct worker *w, struct backend *b)
{
    if (!pooled_here(w, b))
        return NULL;
    struct pool *p = &w->pools[b->index];
    struct upconn *u;
    note_peak(p, b);
    while ((u = p->head) != NULL) {
        worker_pool_unlink(w, u);
        /* one whose idle time is up is not taken, even if its idle timeout has not been
         * run yet: that timeout may already be due in this loop turn */
        int got = up_now_ms() - u->idle_since_ms >= u->b->conf->idle_timeout_ms ? -1
                                                                                : idle_arrived(u);
        /* reading stays armed, without the idle timeout: the request sets its own when it
         * sends. A read already due runs the request's callback, which finds nothing (the
         * peek above) or its response; an idle timeout already due means: not this one */
        if (got == 0 && sock_handover(&u->sk) == 0)
            return u;
        if (got > 0)
            stats_add(&w->stats, STAT_upstream_dirty, 1);
        upconn_free(u);
    }
    return NULL;
}

/* The sweep runs at `due` (up_now_ms's clock), at the latest. */
static void sweep_arm(struct worker *w, uint64_t due, uint64_t now)
{
    if (w->sweep_due && w->sweep_due <= due)
        return; /* the usual case: armed for an older connection (a put costs no timer) */
    struct timeval tv;
    ms_tv(&tv, (uint32_t)(due > now ? due - now : 1));
    evtimer_add(w->pool_sweep, &tv);
    w->sweep_due = due;
}

/* Close the idle connections whose idle_timeout is up (each pool's oldest first), then wait
 * for the next one due. One timer for all pools: a put adds none, a get removes none. */
static void pool_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    uint64_t now = up_now_ms(), next = UINT64_MAX;
    for (int i = 0; w->rt && i < w->rt->up.n; i++) {
        struct upconn *u;
        while ((u = w->pools[i].tail) != NULL) {
            uint64_t due = u->idle_since_ms + u->b->conf->idle_timeout_ms;
            if (due > now) {
                next = due < next ? due : next;
                break;
            }
            worker_pool_unlink(w, u);
            upconn_free(u);
        }
    }
    w->sweep_due = 0;
    if (next != UINT64_MAX)
        sweep_arm(w, next, now);
}

void worker_pool_put(struct worker *w, struct upconn *u)
{
    if (!pooled_here(w, u->b)) {
        upconn_free(u);
        return;
    }
    struct pool *p = &w->pools[u->b->index];
    if (p->count >= keep_idle(p, u->b)) {
        upconn_free(u);
        return;
    }
    u->reused = 0;
    u->idle_since_ms = up_now_ms();
    u->prev = NULL;
    u->next = p->head;
    if (p->head)
        p->head->prev = u;
    else
        p->tail = u;
    p->head = u;
    p->count++;
    sock_setcb(&u->sk, idle_read_cb, NULL, idle_event_cb, u);
    /* no timer per connection: the response's read timer stays (it cannot come before
     * idle_timeout unless read_timeout is shorter: then it goes) and the sweep closes it */
    if (u->b->conf->read_timeout_ms < u->b->conf->idle_timeout_ms)
        sock_set_timeouts(&u->sk, NULL, NULL);
    sock_enable(&u->sk, EV_READ);
    sweep_arm(w, u->idle_since_ms + u->b->conf->idle_timeout_ms, u->idle_since_ms);
}

void worker_pool_unlink(struct worker *w, struct upconn *u)
{
    struct pool *p = &w->pools[u->b->index];
    if (u->prev)
        u->prev->next = u->next;
    else
        p->head = u->next;
    if (u->next)
        u->next->prev = u->prev;
    else
        p->tail = u->prev;
    u->prev = u->next = NULL;
    p->count--;
}
