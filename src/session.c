/* session: a client connection and its state machine. It reads and checks a request head,
 * decides what the proxy answers itself (the answers are written by session_answer.c) and
 * keeps the connection alive; admission waits (Redis, the queue) are in session_admit.c and
 * the backend side (connect, send, stream back, tunnel) in session_upstream.c. It does not
 * parse bytes itself (http1.c) nor choose backends (upstream.c).
 *
 * States (struct session.state):
 *
 *   READ_HEAD --head ok--> READ_BODY --body complete, or over request_buffer--+
 *       |          \--no body--------------------------------------------------+
 *       |                                                                       v
 *       |   READ_HEAD <--response done-- FORWARD <--connected-- CONNECTING <----+
 *       |                                   |   \--connect failed: retry another or 502
 *       |                                   \--101 Switching--> TUNNEL
 *       \--malformed/timeout-> CLOSING (error answer flushed) --> LINGER --> freed
 *
 * ADMIT (not drawn): between READ_HEAD and READ_BODY while Redis decides a tenant's rate
 * limit ([redis]); the head stays in the input buffer and is parsed again after.
 *
 * READ_BODY buffers up to request_buffer bytes of the body before a backend is chosen, as
 * NGINX does: a slow upload never holds a Gunicorn worker, and a body with bad chunk
 * framing within that size is refused before any byte of its request reaches a backend.
 *
 * Backpressure, the one rule: when the peer's output buffer holds more than HIGH_WM bytes,
 * stop reading this side; the peer's write callback (fired when its output drains below
 * LOW_WM) starts reading again. No body is ever held whole in memory.
 */
#include <sluice/session.h>

#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <sluice/http1.h>
#include <sluice/log.h>
#include <sluice/meter.h>
#include <sluice/listener.h>
#include <sluice/queue.h>
#include <sluice/redis.h>
#include <sluice/runtime.h>
#include <sluice/session-int.h>
#include <sluice/stats.h>
#include <sluice/tls.h>
#include <sluice/upstream.h>
#include <sluice/uri.h>
#include <sluice/worker.h>

#define LINGER_MS 2000
#define READ_MORE (60 * 1024) /* below glibc's mmap threshold: no mmap per read */
/* Pipelined requests served per wakeup of one connection (answered by sluice, or started):
 * enough to keep a pipelining client fast, few enough (a few tens of microseconds) that the
 * other connections of the thread are not held up by a flood. */
#define HEADS_PER_WAKEUP 16

static void cli_write_cb(struct bufferevent *bev, void *arg);
static void cli_event_cb(struct bufferevent *bev, short what, void *arg);
static void start_request(struct session *s);
static void buffer_body(struct session *s);
static void release_body(struct session *s);
static void serve_heads(struct session *s);

void sess_timer_ms(struct session *s, uint32_t ms)
{
    struct timeval tv;
    sess_ms_tv(&tv, ms);
    evtimer_add(s->timer, &tv);
}

/* Write-through: send what bev's output holds now, and keep the write event armed only
 * while bytes remain. libevent arms and disarms it around every write, two epoll_ctl
 * calls each time; measured at 20 epoll_ctl per 64 KiB response before this. TLS
 * bufferevents keep libevent's own scheduling. */
void sess_flush_now(struct bufferevent *bev, int tls)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (tls) {
        /* libevent's TLS bufferevent makes one TLS record (and one write) per buffer chain:
         * join a small response's head and body so they leave in one record and one write */
        size_t len = evbuffer_get_length(out);
        if (len > 0 && len <= 16384)
            evbuffer_pullup(out, -1); /* (its output is not frozen, unlike a socket's) */
        return;
    }
    if (evbuffer_get_length(out) > 0) {
        /* bufferevents freeze their output's start so that only they drain it: thaw it
         * for this one write. Errors surface on the write event armed below. */
        evbuffer_unfreeze(out, 1);
        evbuffer_write(out, bufferevent_getfd(bev));
        evbuffer_freeze(out, 1);
    }
    if (evbuffer_get_length(out) == 0)
        bufferevent_disable(bev, EV_WRITE);
    else
        bufferevent_enable(bev, EV_WRITE);
}

/* libevent 2.1 reads at most 4 KiB per call (EVBUFFER_MAX_READ), one readv and one
 * FIONREAD each: 32 syscalls for a 64 KiB body. When a read filled those 4 KiB, take what
 * else the socket holds in one readv. EOF and errors are left for libevent's next read. */
void sess_read_more(struct bufferevent *bev, int tls)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (tls || len == 0 || len % 4096 != 0)
        return;
    struct evbuffer_iovec v[2];
    evbuffer_unfreeze(in, 0); /* bufferevents freeze their input's end: thaw it for this */
    int n = evbuffer_reserve_space(in, READ_MORE, v, 2);
    if (n > 0) {
        struct iovec iov[2];
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        ssize_t r = readv(bufferevent_getfd(bev), iov, n);
        size_t left = r > 0 ? (size_t)r : 0;
        int used = 0;
        for (int i = 0; i < n && left > 0; i++, used++) {
            if (v[i].iov_len > left)
                v[i].iov_len = left;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(in, v, used);
    }
    evbuffer_freeze(in, 0);
}

void sess_flush_cli(struct session *s)
{
    sess_flush_now(s->cli, s->tls);
}

/* Client socket timeouts: read_ms for reading (0 = none), send_timeout for writing. */
void sess_cli_timeouts(struct session *s, uint32_t read_ms)
{
    struct timeval rt, wt;
    sess_ms_tv(&rt, read_ms);
    sess_ms_tv(&wt, sess_cfg_of(s)->proxy.send_timeout_ms);
    bufferevent_set_timeouts(s->cli, read_ms ? &rt : NULL, &wt);
}

/* ---- lifetime ---- */

static void session_destroy(struct session *s);

/* Free s, or when serve_heads() is below on the stack, let it free s on its way out. */
static void session_free(struct session *s)
{
    if (s->busy) {
        s->dead = 1;
        return;
    }
    session_destroy(s);
}

static void session_destroy(struct session *s)
{
    if (s->rcall)
        redis_cancel(&s->w->redis, s->rcall, 0);
    if (s->up) {
        upconn_free(s->up);
        s->up = NULL;
    }
    if (s->wt.wake) {
        queue_leave(&s->w->px->queue, &s->wt);
        event_free(s->wt.wake);
    }
    int kick = s->backend || s->tenant_slot || s->route_slot;
    sess_release_tenant(s);
    if (s->backend) {
        up_release(s->backend);
        s->backend = NULL;
    }
    if (kick)
        queue_kick(&s->w->px->queue);
    if (s->timer)
        event_free(s->timer);
    if (s->reqhead)
        evbuffer_free(s->reqhead);
    release_body(s);
    admit_done(s->tenant); /* before the generation that owns it may go */
    runtime_unref(s->rt);
    free(s->target);
    if (s->cli)
        bufferevent_free(s->cli);
    struct worker *w = s->w;
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    free(s);
    worker_session_gone(w);
}

/* Closed when the shutdown grace ran out: say which request was cut, so that it is not
 * lost silently (an idle keep-alive connection is not worth a line). */
void session_kill(struct session *s)
{
    static const char *const names[] = {"read-head", "admit", "read-body", "queued",
                                        "connecting", "forward", "tunnel", "closing",
                                        "linger"};
    if (s->t_start != 0 && s->state != S_LINGER)
        log_warn("session", "closed at shutdown state=%s client=%s method=%s target=%s "
                 "backend=%s status=%d sent=%" PRIu64 " rid=%s",
                 names[s->state], s->peer, s->method[0] ? s->method : "-",
                 s->target ? s->target : "-", s->backend ? s->backend->conf->name : "-",
                 s->status, s->bytes_out, s->rid[0] ? s->rid : "-");
    session_free(s);
}

struct session *session_next(struct session *s)
{
    return s->next;
}

void upconn_free(struct upconn *u)
{
    struct worker *w = u->w;
    if (u->bev)
        bufferevent_free(u->bev);
    free(u);
    w->nupconns--;
    worker_fd_check(w);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg);

void session_accept(struct worker *w, int fd, const struct sockaddr *peer, int peerlen, int tls)
{
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    s->w = w;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    stats_add(&w->stats, STAT_connections, 1);
    if (peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, s->peer, sizeof s->peer);
    else if (peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, s->peer,
                  sizeof s->peer);
    else
        snprintf(s->peer, sizeof s->peer, "unix");
    (void)peerlen;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->rt = w->rt;
    runtime_ref(s->rt);
    s->tls = tls;
    if (tls) {
        SSL *ssl = tls_server_ssl(w->rt->tls);
        if (ssl) {
            s->cli = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
            if (s->cli)
                bufferevent_openssl_set_allow_dirty_shutdown(s->cli, 1);
            else
                SSL_free(ssl);
        }
    } else {
        s->cli = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    s->timer = evtimer_new(w->base, timer_cb, s);
    s->reqhead = evbuffer_new();
    if (!s->cli || !s->timer || !s->reqhead) {
        if (!s->cli)
            close(fd);
        session_free(s);
        return;
    }
    bufferevent_setcb(s->cli, sess_cli_read_cb, cli_write_cb, cli_event_cb, s);
    bufferevent_setwatermark(s->cli, EV_WRITE, LOW_WM, 0);
    /* input held per connection: enough for the largest head allowed, no more than
     * that (a pipelining client waits in its socket, not in sluice's memory) */
    size_t head = s->rt->lim.max_head + 4096;
    bufferevent_setwatermark(s->cli, EV_READ, 0, head > CLI_READ_WM ? head : CLI_READ_WM);
    bufferevent_set_max_single_read(s->cli, MAX_IO);
    bufferevent_set_max_single_write(s->cli, MAX_IO);
    sess_cli_timeouts(s, 0);
    s->state = S_READ_HEAD;
    bufferevent_enable(s->cli, s->tls ? EV_READ | EV_WRITE : EV_READ);
    sess_timer_ms(s, sess_cfg_of(s)->proxy.client_header_timeout_ms);
}

/* ---- access log ---- */

/* The finished request's times into the meter's series (meter.h): the pool's total,
 * queueing and upstream time, its backend's upstream time, its tenant's and route's
 * total time. */
static void measure(struct session *s)
{
    struct meter *m = s->w->px->meter;
    if (!m || !s->t_start_us)
        return;
    int th = s->w->id;
    uint64_t now = admit_now_ns() / 1000;
    uint64_t total = now - s->t_start_us;
    meter_record(m->pool, th, total, s->status);
    if (s->t_ready_us && !s->bypass)
        meter_record(m->queue, th, (s->t_slot_us ? s->t_slot_us : now) - s->t_ready_us, s->status);
    if (s->t_slot_us) {
        meter_record(m->upstream, th, now - s->t_slot_us, s->status);
        if (s->backend)
            meter_record(atomic_load_explicit(&s->backend->st->ser, memory_order_acquire), th,
                         now - s->t_slot_us, s->status);
    }
    if (s->tenant)
        meter_record(atomic_load_explicit(&s->tenant->st->ser, memory_order_acquire), th, total,
                     s->status);
    struct route_state *rs = admit_route_state(&s->rt->admit, sess_cfg_of(s), s->route);
    if (rs)
        meter_record(atomic_load_explicit(&rs->ser, memory_order_acquire), th, total, s->status);
}

void sess_access_log(struct session *s)
{
    measure(s);
    if (!log_access_enabled())
        return;
    char line[2048], ts[40];
    uint64_t now = up_now_ms();
    log_time(ts, sizeof ts);
    double total = (double)(now - s->t_start);
    double upt = s->t_up_start ? (double)((s->t_up_end ? s->t_up_end : now) - s->t_up_start) : -1;
    char upbuf[32];
    if (upt >= 0)
        snprintf(upbuf, sizeof upbuf, "%.0f", upt);
    else
        snprintf(upbuf, sizeof upbuf, "-");
    int n = snprintf(line, sizeof line, "%s %s %s %s %s %d %" PRIu64 " %" PRIu64 " %s %.0f %s %s\n",
                     ts, s->peer, s->tenant ? admit_label(s->tenant) : "-",
                     s->method[0] ? s->method : "-", s->target ? s->target : "-",
                     s->status, s->bytes_in, s->bytes_out,
                     s->backend ? s->backend->conf->name : "-", total, upbuf,
                     s->rid[0] ? s->rid : "-");
    if (n > 0)
        log_access(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* ---- closing and errors ---- */

/* Stop forwarding: drop the upstream connection and give back the backend slot. */
void sess_drop_upstream(struct session *s)
{
    if (s->up) {
        upconn_free(s->up);
        s->up = NULL;
    }
}

/* Give back the backend slot; a request waiting for one is woken. */
void sess_release_backend(struct session *s)
{
    if (s->backend) {
        up_release(s->backend);
        s->backend = NULL;
        queue_kick(&s->w->px->queue);
    }
}

/* After the last byte is flushed: half-close and read until EOF or LINGER_MS, so that a
 * client still sending does not get a reset that destroys our answer. */
static void start_linger(struct session *s)
{
    s->state = S_LINGER;
    if (s->tls) { /* no half-close under TLS: end on the next loop turn */
        bufferevent_disable(s->cli, EV_READ | EV_WRITE);
        sess_timer_ms(s, 0);
        return;
    }
    shutdown(bufferevent_getfd(s->cli), SHUT_WR);
    bufferevent_disable(s->cli, EV_WRITE);
    bufferevent_set_timeouts(s->cli, NULL, NULL);
    bufferevent_enable(s->cli, EV_READ);
    sess_timer_ms(s, LINGER_MS);
}

/* Close after what is queued for the client has been written. */
void sess_close_after_flush(struct session *s)
{
    s->state = S_CLOSING;
    bufferevent_disable(s->cli, EV_READ);
    evtimer_del(s->timer);
    sess_flush_cli(s);
    if (evbuffer_get_length(bufferevent_get_output(s->cli)) == 0)
        start_linger(s);
    else
        sess_timer_ms(s, sess_cfg_of(s)->proxy.send_timeout_ms);
}

/* The response had started when things went wrong: all we can do is close. */
void sess_abort_session(struct session *s, enum stat_id why)
{
    stats_add(&s->w->stats, why, 1);
    log_info("session", "aborted reason=%s client=%s target=%s backend=%s rid=%s",
             stats_name(why), s->peer, s->target ? s->target : "-", s->backend ? s->backend->conf->name : "-",
             s->rid);
    if (s->status == 0)
        s->status = 499;
    sess_access_log(s);
    session_free(s);
}

/* ---- request head ---- */

/* How many bytes of in to give the head parser now, 0 to wait for more: through the blank
 * line when it is there (a body behind the head is not copied); otherwise all of it up to
 * cap, so that bare LFs and over-long heads are found before the head ends, but only once
 * the input has doubled since the last try. Each byte is searched once and parsing costs
 * O(n) in all, however the head is cut into reads (one byte per write was O(n^2)). */
size_t sess_head_span(struct evbuffer *in, size_t cap, struct head_scan *hs)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return 0;
    if (hs->searched > len) /* not this input's (a new connection): start over */
        *hs = (struct head_scan){0, 0};
    struct evbuffer_ptr from;
    evbuffer_ptr_set(in, &from, hs->searched > 3 ? hs->searched - 3 : 0, EVBUFFER_PTR_SET);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, &from);
    if (end.pos >= 0)
        return (size_t)end.pos + 4 < cap ? (size_t)end.pos + 4 : cap;
    hs->searched = len;
    if (len < cap && hs->parsed && len < 2 * hs->parsed)
        return 0;
    hs->parsed = len;
    return len < cap ? len : cap;
}

static void copy_field(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int valid_request_id(const struct http1_header *h)
{
    if (h->value_len == 0 || h->value_len > 128)
        return 0;
    for (size_t i = 0; i < h->value_len; i++) {
        unsigned char c = (unsigned char)h->value[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* Remember what the access log and a retry need; the parsed head dies with the drain. */
static void note_request(struct session *s, const struct http1_msg *m)
{
    const struct http1_header *rid = http1_find(m, HTTP1_H_X_REQUEST_ID);
    copy_field(s->method, sizeof s->method, m->method, m->method_len);
    free(s->target);
    size_t tl = m->target_len < MAX_LOG_TARGET ? m->target_len : MAX_LOG_TARGET;
    size_t slash = m->slash_missing ? 1 : 0; /* "http://h?q" is "/?q" */
    s->target = malloc(tl + slash + 1);
    if (s->target) {
        s->target[0] = '/';
        copy_field(s->target + slash, tl + 1, m->target, tl);
    }
    if (rid && valid_request_id(rid))
        copy_field(s->rid, sizeof s->rid, rid->value, rid->value_len);
    else
        worker_request_id(s->w, s->rid);
    s->meth = m->meth;
    s->minor = m->minor;
    s->keep_alive = m->keep_alive && !s->w->draining && sess_cfg_of(s)->proxy.keepalive_timeout_ms;
    s->upgrade = m->upgrade;
    /* RFC 9110 10.1.1: a server MUST ignore 100-continue from an HTTP/1.0 client */
    s->expect = m->expect_continue && m->body != HTTP1_BODY_NONE && m->minor == 1;
}

static void reset_request(struct session *s)
{
    s->method[0] = s->rid[0] = '\0';
    free(s->target);
    s->target = NULL;
    /* an idle keep-alive connection keeps no buffers: memory per idle client is the point */
    evbuffer_drain(s->reqhead, evbuffer_get_length(s->reqhead));
    release_body(s);
    s->status = 0;
    s->attempts = 0;
    s->resp_started = 0;
    s->up_tainted = 0;
    s->last_failed = NULL;
    s->bytes_in = s->bytes_out = 0;
    s->t_up_start = s->t_up_end = s->t_sent_us = 0;
    s->t_start_us = s->t_ready_us = s->t_slot_us = 0;
    s->upgrade = s->expect = 0;
    s->meth = HTTP1_M_OTHER;
    admit_done(s->tenant);
    s->tenant = NULL;
    s->route = NULL;
    s->bypass = 0;
    s->answer_keep = 0;
    s->head_scan = (struct head_scan){0, 0};
    s->resp_scan = (struct head_scan){0, 0};
}

/* Parse the head at the front of the client's input: its length, HTTP1_INCOMPLETE or
 * HTTP1_ERROR (with *status); *take: the bytes looked at. */
static int parse_head(struct session *s, struct http1_msg *m, int *status, size_t *take)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    *take = sess_head_span(in, s->rt->lim.max_head + 2, &s->head_scan);
    if (*take == 0)
        return HTTP1_INCOMPLETE;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)*take);
    return http1_parse_request(p, *take, &s->rt->lim, s->w->hdrs, s->w->nhdrs, m, status);
}

static void admitted_head(struct session *s, const struct http1_msg *m, int n, uint64_t wait_ns);

static void read_head(struct session *s)
{
    struct worker *w = s->w;
    struct evbuffer *in = bufferevent_get_input(s->cli);
    if (evbuffer_get_length(in) == 0)
        return;
    if (s->t_start == 0) {
        if (s->rt != w->rt) { /* a reload happened: new requests use the new generation */
            admit_done(s->tenant); /* before the generation that owns it may go */
            s->tenant = NULL;
            runtime_unref(s->rt);
            s->rt = w->rt;
            runtime_ref(s->rt);
        }
        s->t_start = up_now_ms();
        s->t_start_us = admit_now_ns() / 1000;
        sess_timer_ms(s, sess_cfg_of(s)->proxy.client_header_timeout_ms);
    }
    struct http1_msg m;
    int status = 0;
    size_t take;
    int n = parse_head(s, &m, &status, &take);
    if (n == HTTP1_INCOMPLETE)
        return;
    stats_add(&w->stats, STAT_requests, 1);
    if (n == HTTP1_ERROR) {
        s->bytes_in = take;
        sess_send_error(s, status, status == 400 ? "bad-request" : status == 414 ? "uri-too-long"
                                     : status == 431 ? "header-too-large" : "not-implemented",
                        "the request is malformed or over a limit and was not forwarded");
        return;
    }
    note_request(s, &m);
    s->bytes_in = (uint64_t)n;
    if (!s->tls && sess_cfg_of(s)->proxy.redirect_http) {
        sess_send_redirect(s, &m);
        return;
    }
    if (m.meth == HTTP1_M_CONNECT) {
        sess_send_error(s, 501, "not-implemented", "CONNECT is not supported");
        return;
    }
    uint64_t maxb = sess_cfg_of(s)->proxy.max_body_size;
    if (maxb && m.body == HTTP1_BODY_LENGTH && m.content_length > maxb) {
        sess_send_error(s, 413, "body-too-large", "the request body is over max_body_size");
        return;
    }
    long pl = uri_normalize_path(m.target, m.target_len, w->path);
    if (pl < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request path has %s; it was not forwarded",
                 uri_strerror(pl));
        sess_send_error(s, 400, "bad-path", msg);
        return;
    }
    m.path = w->path; /* what routes, bypass and path_prefix keys see */
    m.path_len = (size_t)pl;
    s->tenant = admit_classify(&s->rt->admit, &m, s->peer);
    s->route = admit_route(sess_cfg_of(s), m.path, m.path_len);
    s->bypass = s->route && s->route->bypass;
    if (!s->bypass && s->tenant->interval_ns && sess_cfg_of(s)->redis.url) {
        sess_ask_redis(s); /* the head stays in the input buffer meanwhile */
        return;
    }
    admitted_head(s, &m, n, s->bypass ? 0 : admit_rate(s->tenant, admit_now_ns()));
}

/* ---- request bodies held in memory ([proxy] buffer_memory, bufmem.h) ---- */

#define BODY_STEP (64 * 1024) /* a chunked body's reservation grows by this much */

/* The most of a body buffered before a backend is chosen. */
static size_t body_limit(struct session *s)
{
    const struct proxy_conf *p = &sess_cfg_of(s)->proxy;
    return p->request_buffer < p->buffer_memory ? p->request_buffer : p->buffer_memory;
}

/* Grow s's reservation to `want` bytes. here: the bytes are already read in (held whatever
 * is decided), so they are counted even past the limit. 0, or -1: no room. */
static int reserve_body(struct session *s, size_t want, int here)
{
    if (want <= s->body_charge)
        return 0;
    if (bufmem_reserve(&s->w->px->bufmem, want - s->body_charge,
                       sess_cfg_of(s)->proxy.buffer_memory, here) < 0)
        return -1;
    s->body_charge = want;
    return 0;
}

/* The body held and its reservation go (the request ended, or the session). */
static void release_body(struct session *s)
{
    if (s->bodybuf) {
        evbuffer_free(s->bodybuf);
        s->bodybuf = NULL;
    }
    if (s->body_charge) {
        bufmem_release(&s->w->px->bufmem, s->body_charge);
        s->body_charge = 0;
    }
}

/* No room for the body: refused before any of it is read on, the connection closed after
 * the answer (the unread body is drained while lingering). */
static void refuse_body(struct session *s)
{
    s->answer_keep = 0;
    sess_send_answer(s, 503, "buffers-full",
                     "request bodies in memory are at buffer_memory; retry later",
                     "Retry-After: 1\r\nX-Sluice-Reject: buffers-full\r\n");
}

/* The rate limit has spoken (wait_ns 0: go on; else 429): prepare the upstream head and
 * read the body or go. */
static void admitted_head(struct session *s, const struct http1_msg *m, int n, uint64_t wait_ns)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    if (wait_ns) {
        s->answer_keep = m->body == HTTP1_BODY_NONE ||
                         (m->body == HTTP1_BODY_LENGTH && m->content_length == 0);
        evbuffer_drain(in, (size_t)n); /* this request is answered: the next one may follow */
        sess_send_rate_limited(s, wait_ns);
        return;
    }
    int has_body = m->body != HTTP1_BODY_NONE &&
                   !(m->body == HTTP1_BODY_LENGTH && m->content_length == 0);
    size_t limit = body_limit(s);
    if (has_body && limit) {
        /* room for the part of the body buffered here, before anything else is done */
        size_t need = m->body == HTTP1_BODY_LENGTH && m->content_length < limit
                          ? (size_t)m->content_length : limit;
        if (m->body == HTTP1_BODY_CHUNKED && need > BODY_STEP)
            need = BODY_STEP;
        int here = m->body == HTTP1_BODY_LENGTH && evbuffer_get_length(in) - (size_t)n >= need;
        if (reserve_body(s, need, here) < 0) {
            evbuffer_drain(in, (size_t)n);
            refuse_body(s);
            return;
        }
    }
    stats_add(&s->w->stats, STAT_admitted, 1);
    sess_build_upstream_head(s, m);
    sess_body_init(&s->req, m->body, m->content_length, m->body == HTTP1_BODY_CHUNKED);
    evbuffer_drain(in, (size_t)n);
    if (s->req.done || limit == 0) {
        start_request(s);
        return;
    }
    if (!s->bodybuf && !(s->bodybuf = evbuffer_new())) {
        sess_send_error(s, 503, "no-memory", "out of memory buffering the request body");
        return;
    }
    if (m->body == HTTP1_BODY_LENGTH)
        evbuffer_expand(s->bodybuf, s->body_charge); /* one allocation for all of it */
    s->req.copy = 1;
    s->state = S_READ_BODY;
    evtimer_del(s->timer);
    if (s->expect) {
        evbuffer_add(bufferevent_get_output(s->cli), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        s->expect = 0;
    }
    sess_cli_timeouts(s, sess_cfg_of(s)->proxy.client_body_timeout_ms);
    buffer_body(s);
}

/* Redis or the failure policy decided (refuse_down: on_failure = closed): pick the head up
 * again where read_head left it. */
void sess_resume_head(struct session *s, uint64_t wait_ns, int refuse_down)
{
    struct http1_msg m;
    int status;
    size_t take;
    s->state = S_READ_HEAD;
    int n = parse_head(s, &m, &status, &take); /* it parsed before: it parses again */
    if (n <= 0) {
        sess_send_error(s, 500, "internal", "the request head was lost while admitting it");
        return;
    }
    if (!refuse_down) {
        admitted_head(s, &m, n, wait_ns);
        return;
    }
    s->answer_keep = m.body == HTTP1_BODY_NONE ||
                     (m.body == HTTP1_BODY_LENGTH && m.content_length == 0);
    evbuffer_drain(bufferevent_get_input(s->cli), (size_t)n);
    sess_send_answer(s, 503, "limiter-down", "the shared rate limiter is unavailable; retry later",
                     "Retry-After: 1\r\nX-Sluice-Reject: limiter-down\r\n");
}

/* Checks shared by buffering and streaming a request body; 0 to go on, -1 answered. */
int sess_body_checks(struct session *s, int rc, int eof)
{
    uint64_t maxb = sess_cfg_of(s)->proxy.max_body_size;
    if (rc == 0 && maxb && s->req.total > maxb) {
        if (!s->resp_started)
            sess_send_error(s, 413, "body-too-large", "the request body is over max_body_size");
        else
            sess_abort_session(s, STAT_err_413);
        return -1;
    }
    if (rc < 0) {
        if (!s->resp_started && !eof)
            sess_send_error(s, 400, "bad-body", "the request body framing is malformed");
        else
            sess_abort_session(s, STAT_client_aborts);
        return -1;
    }
    return 0;
}

/* READ_BODY: collect the body within its reservation; go upstream when it is complete or
 * the buffer is full. A chunked body (its size unknown) reserves BODY_STEP at a time. */
static void buffer_body(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    size_t limit = body_limit(s);
    for (;;) {
        size_t before = evbuffer_get_length(in);
        s->req.cap = s->body_charge;
        int rc = sess_body_pump(&s->req, in, s->bodybuf, 0);
        s->bytes_in += before - evbuffer_get_length(in);
        if (sess_body_checks(s, rc, 0) < 0)
            return;
        size_t held = evbuffer_get_length(s->bodybuf);
        if (s->req.done || held >= limit) {
            start_request(s);
            return;
        }
        if (held < s->body_charge || evbuffer_get_length(in) == 0)
            return; /* more is to come */
        size_t want = s->body_charge + BODY_STEP < limit ? s->body_charge + BODY_STEP : limit;
        if (reserve_body(s, want, 0) < 0) {
            refuse_body(s);
            return;
        }
    }
}

static void start_request(struct session *s)
{
    s->req.cap = 0; /* the rest of the body, if any, streams under backpressure */
    s->req.copy = 0;
    s->t_ready_us = admit_now_ns() / 1000;
    evtimer_del(s->timer);
    s->state = S_CONNECTING;
    s->nreq++;
    sess_connect_upstream(s);
}

/* Serve the requests waiting in the client's input, in order: parse each and start it,
 * and go on to the next while sluice answers them itself (refusals, errors, redirects)
 * without waiting. A loop, never a recursion, and at most HEADS_PER_WAKEUP heads per
 * wakeup: the rest are served on the next loop turn (the timer, armed at 0), after the
 * other connections' events. */
static void serve_heads(struct session *s)
{
    int budget = HEADS_PER_WAKEUP;
    s->resume = 0;
    s->busy++;
    do {
        s->again = 0;
        read_head(s);
    } while (s->again && !s->dead && --budget > 0);
    s->busy--;
    if (s->dead) {
        if (!s->busy)
            session_destroy(s);
        return;
    }
    if (s->again) {
        s->again = 0;
        s->resume = 1;
        sess_timer_ms(s, 0);
    }
}

/* Keep-alive: wait for (or serve the already pipelined) next request. */
void sess_next_request(struct session *s)
{
    reset_request(s);
    s->state = S_READ_HEAD;
    s->t_start = 0;
    sess_cli_timeouts(s, 0);
    sess_timer_ms(s, sess_cfg_of(s)->proxy.keepalive_timeout_ms);
    if (evbuffer_get_length(bufferevent_get_output(s->cli)) > HIGH_WM)
        return; /* cli_write_cb resumes reading once the client has taken the response */
    bufferevent_enable(s->cli, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(s->cli)) == 0)
        return;
    if (s->busy)
        s->again = 1; /* serve_heads() below on the stack goes on with it */
    else
        serve_heads(s); /* pipelined request already here */
}

/* ---- callbacks ---- */

void sess_cli_read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    sess_read_more(bev, s->tls);
    switch (s->state) {
    case S_READ_HEAD:
        serve_heads(s);
        break;
    case S_READ_BODY:
        buffer_body(s);
        break;
    case S_FORWARD:
        if (!s->req.done)
            sess_pump_request(s, 0);
        break;
    case S_TUNNEL: {
        size_t n = evbuffer_get_length(bufferevent_get_input(bev));
        s->bytes_in += n;
        sess_tunnel_pump(bev, s->up->bev, s->up->b->tls != NULL);
        break;
    }
    case S_LINGER:
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        break;
    default:
        /* CONNECTING, or a complete request being answered: pipelined bytes wait in the
         * input buffer, bounded by its read watermark; reading stays on so that a close
         * is seen (and epoll is not touched twice per request) */
        break;
    }
}

static void cli_write_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    switch (s->state) {
    case S_CLOSING:
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            evtimer_del(s->timer);
            start_linger(s);
        }
        break;
    case S_FORWARD:
        if (s->up && s->resp_started && !s->resp.done)
            bufferevent_enable(s->up->bev, EV_READ);
        break;
    case S_TUNNEL:
        bufferevent_enable(s->up->bev, EV_READ);
        break;
    case S_READ_HEAD:
        if (!(bufferevent_get_enabled(bev) & EV_READ)) {
            bufferevent_enable(bev, EV_READ);
            if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
                serve_heads(s);
        }
        break;
    default:
        break;
    }
}

static void cli_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (what == BEV_EVENT_CONNECTED)
        return; /* TLS handshake done */
    if (s->state == S_LINGER) {
        session_free(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if ((s->state == S_FORWARD || s->state == S_READ_BODY) && !s->req.done &&
            !s->resp_started) {
            sess_send_error(s, 408, "body-timeout", "the request body did not arrive in time");
            return;
        }
        sess_abort_session(s, STAT_client_aborts);
        return;
    }
    /* A client that ends its side once the response has begun (a download read to the
     * end after a half-close) is still sent the rest over plain TCP. Before that, EOF is a
     * client that gave up: 499, its slot and queue place freed at once, as NGINX does
     * (proxy_ignore_client_abort off). Not under TLS: libevent's TLS bufferevent stops
     * writing (and its write timeout) on the peer's EOF, so nothing more could leave. */
    if ((what & BEV_EVENT_EOF) && !s->tls && s->state == S_FORWARD && s->resp_started &&
        s->req.done && !(what & BEV_EVENT_ERROR)) {
        s->cli_eof = 1;
        s->keep_alive = 0;
        return;
    }
    if (s->state == S_READ_HEAD && s->t_start == 0) {
        if (s->tls && s->nreq == 0 && (what & BEV_EVENT_ERROR)) {
            unsigned long e = bufferevent_get_openssl_error(s->cli);
            stats_add(&s->w->stats, STAT_tls_handshake_errors, 1);
            log_debug("tls", "handshake failed client=%s reason=%s", s->peer,
                      e ? ERR_reason_error_string(e) : "closed");
        }
        session_free(s); /* idle connection closed by the client: nothing lost */
        return;
    }
    if (s->state == S_READ_HEAD || s->state == S_CLOSING) {
        session_free(s);
        return;
    }
    sess_abort_session(s, STAT_client_aborts);
}

/* Header deadline, keep-alive idle limit, send deadline on close, or linger end. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    switch (s->state) {
    case S_ADMIT: /* Redis did not answer in time */
        redis_cancel(&s->w->redis, s->rcall, 1);
        s->rcall = NULL;
        sess_limiter_fallback(s);
        return;
    case S_QUEUED: /* waited queue timeout; a wake-up on its way is passed on */
        queue_leave(&s->w->px->queue, &s->wt);
        atomic_fetch_add(&s->w->px->queue.timeouts, 1);
        sess_send_queue_reject(s, "queue-timeout", 0);
        return;
    case S_READ_HEAD:
        if (s->resume) { /* pipelined requests left for this loop turn */
            serve_heads(s);
            return;
        }
        if (s->t_start == 0 && evbuffer_get_length(bufferevent_get_input(s->cli)) == 0) {
            start_linger(s); /* idle keep-alive: close quietly, and without a reset */
            return;
        }
        sess_send_error(s, 408, "header-timeout", "the request head did not arrive in time");
        return;
    default:
        session_free(s);
        return;
    }
}

void session_drain_idle(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        int pending = 0; /* a request already in the socket is answered, not reset */
        if (s->state == S_READ_HEAD && s->t_start == 0 &&
            evbuffer_get_length(bufferevent_get_input(s->cli)) == 0 &&
            evbuffer_get_length(bufferevent_get_output(s->cli)) == 0 &&
            ioctl(bufferevent_getfd(s->cli), FIONREAD, &pending) == 0 && pending == 0) {
            /* FIN, then read and drop: a request sent just now meets an orderly close
             * (which clients retry) rather than a reset */
            evtimer_del(s->timer);
            start_linger(s);
        }
        s = next;
    }
}
