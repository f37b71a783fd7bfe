/* worker: a thread's event loop, its SO_REUSEPORT listeners, its idle upstream pools and
 * its part in a graceful stop. Sessions live in session.c. */
#include <sluice/worker.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/rand.h>

#include <sluice/log.h>
#include <sluice/session.h>

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)l;
    session_accept(arg, fd, sa, salen);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    if (w->draining)
        return;
    for (int i = 0; i < w->nlev; i++)
        evconnlistener_enable(w->lev[i]);
}

/* accept() failed, most often EMFILE: stop accepting for 100 ms instead of spinning. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct worker *w = arg;
    int e = EVUTIL_SOCKET_ERROR();
    stats_add(&w->stats, STAT_accept_errors, 1);
    log_warn("listener", "accept failed: %s; pausing accept for 100ms", strerror(e));
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    evtimer_add(w->accept_retry, &tv);
}

static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256] = "0.0.0.0";
    const char *port = spec;
    const char *colon = strrchr(spec, ':');
    if (colon) {
        size_t hl = (size_t)(colon - spec);
        if (hl >= sizeof host)
            return -1;
        memcpy(host, spec, hl);
        host[hl] = '\0';
        if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = '\0';
        }
        port = colon + 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void ctl_cb(evutil_socket_t fd, short what, void *arg);
static void grace_cb(evutil_socket_t fd, short what, void *arg);

int worker_init(struct worker *w, struct proxy *px, int id, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->px = px;
    w->base = event_base_new();
    w->nhdrs = (size_t)px->cfg->proxy.max_headers;
    w->hdrs = calloc(w->nhdrs, sizeof *w->hdrs);
    w->pools = calloc((size_t)(px->up.n > 0 ? px->up.n : 1), sizeof *w->pools);
    if (!w->base || !w->hdrs || !w->pools) {
        snprintf(err, errlen, "worker %d: out of memory", id);
        return -1;
    }
    w->ctl = event_new(w->base, -1, 0, ctl_cb, w);
    w->grace = evtimer_new(w->base, grace_cb, w);
    w->accept_retry = evtimer_new(w->base, accept_retry_cb, w);
    if (RAND_bytes((unsigned char *)w->rng, sizeof w->rng) != 1)
        w->rng[0] = (uint64_t)id * 0x9E3779B97F4A7C15ULL + 1;
    w->rng[1] |= 1;
    const struct proxy_conf *pc = &px->cfg->proxy;
    for (size_t i = 0; i < pc->nlisten; i++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (parse_listen(pc->listen[i], &ss, &sl) < 0) {
            snprintf(err, errlen, "listen %s: cannot resolve", pc->listen[i]);
            return -1;
        }
        unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                         LEV_OPT_CLOSE_ON_EXEC;
        w->lev[i] = evconnlistener_new_bind(w->base, accept_cb, w, flags, 4096,
                                            (struct sockaddr *)&ss, (int)sl);
        if (!w->lev[i]) {
            snprintf(err, errlen, "listen %s: %s", pc->listen[i], strerror(errno));
            return -1;
        }
        evconnlistener_set_error_cb(w->lev[i], accept_error_cb);
        w->nlev = (int)i + 1;
    }
    return 0;
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
    for (int b = 0; b < w->px->up.n; b++) {
        struct upconn *u = w->pools[b].head;
        while (u) {
            struct upconn *next = u->next;
            upconn_free(u);
            u = next;
        }
        w->pools[b].head = NULL;
        w->pools[b].count = 0;
    }
}

/* Runs on the worker's own thread. */
static void ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    if (w->draining)
        return;
    w->draining = 1;
    for (int i = 0; i < w->nlev; i++) {
        evconnlistener_free(w->lev[i]);
        w->lev[i] = NULL;
    }
    w->nlev = 0;
    evtimer_del(w->accept_retry);
    pools_free(w);
    session_drain_idle(w);
    struct timeval tv;
    uint32_t ms = w->px->cfg->proxy.shutdown_grace_ms;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(w->grace, &tv);
    worker_session_gone(w);
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    log_warn("worker", "shutdown grace expired thread=%d sessions=%d: closing them", w->id,
             w->nsessions);
    event_base_loopbreak(w->base);
}

void worker_stop(struct worker *w)
{
    event_active(w->ctl, EV_READ, 0);
}

void worker_session_gone(struct worker *w)
{
    if (w->draining && w->nsessions == 0)
        event_base_loopbreak(w->base);
}

void worker_free(struct worker *w)
{
    while (w->sessions)
        session_kill(w->sessions);
    if (w->pools)
        pools_free(w);
    for (int i = 0; i < w->nlev; i++)
        if (w->lev[i])
            evconnlistener_free(w->lev[i]);
    if (w->ctl)
        event_free(w->ctl);
    if (w->grace)
        event_free(w->grace);
    if (w->accept_retry)
        event_free(w->accept_retry);
    free(w->hdrs);
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

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct upconn *u = arg;
    (void)bev;
    (void)what;
    worker_pool_unlink(u->w, u);
    upconn_free(u);
}

static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    idle_event_cb(bev, 0, arg); /* an idle backend must not talk: drop the connection */
}

struct upconn *worker_pool_get(struct worker *w, struct backend *b)
{
    struct pool *p = &w->pools[b->index];
    struct upconn *u = p->head;
    if (!u)
        return NULL;
    worker_pool_unlink(w, u);
    bufferevent_set_timeouts(u->bev, NULL, NULL);
    return u;
}

void worker_pool_put(struct worker *w, struct upconn *u)
{
    struct pool *p = &w->pools[u->b->index];
    if (p->count >= u->b->conf->keepalive) {
        upconn_free(u);
        return;
    }
    u->reused = 0;
    u->prev = NULL;
    u->next = p->head;
    if (p->head)
        p->head->prev = u;
    p->head = u;
    p->count++;
    struct timeval tv;
    uint32_t ms = u->b->conf->idle_timeout_ms;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    bufferevent_setcb(u->bev, idle_read_cb, NULL, idle_event_cb, u);
    bufferevent_set_timeouts(u->bev, &tv, NULL);
    bufferevent_enable(u->bev, EV_READ);
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
    u->prev = u->next = NULL;
    p->count--;
}
