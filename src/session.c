/* session: the client connection's state machine. It reads and checks a request head,
 * picks a backend, streams the body both ways and keeps the connection alive; it does not
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

#include <errno.h>
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

#include <sluice/atomics.h>
#include <sluice/http1.h>
#include <sluice/log.h>
#include <sluice/listener.h>
#include <sluice/queue.h>
#include <sluice/redis.h>
#include <sluice/runtime.h>
#include <sluice/stats.h>
#include <sluice/tls.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

#define HIGH_WM (256 * 1024)
#define LOW_WM (64 * 1024)
#define LINGER_MS 2000
#define MAX_IO (128 * 1024) /* per read/write call; libevent's default is 16 KiB */
#define READ_MORE (60 * 1024) /* below glibc's mmap threshold: no mmap per read */
#define MAX_LOG_TARGET 1024

enum sess_state { S_READ_HEAD, S_ADMIT, S_READ_BODY, S_QUEUED, S_CONNECTING, S_FORWARD,
                  S_TUNNEL, S_CLOSING, S_LINGER };

/* A message body being moved from one buffer to another, re-framed if needed. */
struct body {
    enum http1_body kind; /* framing on the source side */
    uint64_t remaining;   /* LENGTH: bytes left */
    struct http1_chunked ch;
    int out_chunked;      /* write chunked framing on the destination side */
    int done;
    uint64_t total;       /* payload bytes moved */
};

struct session {
    struct worker *w;             /* borrowed */
    struct runtime *rt;           /* the generation of the current request (a reference) */
    struct session *prev, *next;  /* worker's list */
    struct bufferevent *cli;      /* owned */
    struct upconn *up;            /* owned while a request is forwarded */
    struct event *timer;          /* owned: header deadline, keep-alive idle, linger */
    struct evbuffer *reqhead;     /* owned: the head sent upstream, kept for a retry */
    struct evbuffer *bodybuf;     /* owned: request body read before a backend is chosen;
                                   * made for a request with a body, freed after it */
    enum sess_state state;
    char peer[64];
    int tls;                      /* accepted on an HTTPS listener */
    int nreq;                     /* requests served on this connection */
    /* the current request */
    enum http1_method meth;
    char method[16];
    char *target;                 /* owned: request target for logs, NULL before a head */
    char rid[129];
    int minor;
    int keep_alive;               /* client connection may persist after this response */
    int upgrade;
    int expect;                   /* 100-continue still to be sent when the body is wanted */
    int attempts;
    int cli_eof;                  /* client half-closed after sending its request */
    int resp_started;             /* response head sent to the client */
    int up_keep;                  /* the backend allows reuse of its connection */
    int status;
    struct backend *backend;      /* the one picked (inflight held) */
    struct tenant *tenant;        /* of the current request, from rt->admit */
    struct redis_call *rcall;     /* its rate limit being decided by Redis (S_ADMIT) */
    struct waiter wt;             /* its place in the shared queue while S_QUEUED */
    int tenant_slot;              /* holds one of its tenant's max_inflight slots */
    int route_slot;               /* holds one of its route's max_inflight slots */
    const struct route_conf *route; /* its [route], NULL = none (borrowed from rt) */
    int bypass;                   /* its route bypasses admission (health checks, assets) */
    int answer_keep;              /* a refusal may keep the connection (body fully read) */
    struct backend *last_failed;
    struct body req, resp;
    uint64_t bytes_in, bytes_out;
    uint64_t t_start, t_up_start, t_up_end;
    uint64_t t_sent_us;           /* when the request went upstream (latency samples) */
    int inflight_at_send;         /* its backend's in-flight count then, itself included */
};

static void cli_read_cb(struct bufferevent *bev, void *arg);
static void cli_write_cb(struct bufferevent *bev, void *arg);
static void cli_event_cb(struct bufferevent *bev, short what, void *arg);
static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void connect_upstream(struct session *s);
static void start_request(struct session *s);
static void buffer_body(struct session *s);
static void release_tenant(struct session *s);

static const struct config *cfg_of(const struct session *s)
{
    return s->rt->cfg;
}

static void ms_tv(struct timeval *tv, uint32_t ms)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

static void timer_ms(struct session *s, uint32_t ms)
{
    struct timeval tv;
    ms_tv(&tv, ms);
    evtimer_add(s->timer, &tv);
}

/* Write-through: send what bev's output holds now, and keep the write event armed only
 * while bytes remain. libevent arms and disarms it around every write, two epoll_ctl
 * calls each time; measured at 20 epoll_ctl per 64 KiB response before this. TLS
 * bufferevents keep libevent's own scheduling. */
static void flush_now(struct bufferevent *bev, int tls)
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
static void read_more(struct bufferevent *bev, int tls)
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

static void flush_cli(struct session *s)
{
    flush_now(s->cli, s->tls);
}

static void flush_up(struct session *s)
{
    flush_now(s->up->bev, s->up->b->tls != NULL);
}

/* Client socket timeouts: read_ms for reading (0 = none), send_timeout for writing. */
static void cli_timeouts(struct session *s, uint32_t read_ms)
{
    struct timeval rt, wt;
    ms_tv(&rt, read_ms);
    ms_tv(&wt, cfg_of(s)->proxy.send_timeout_ms);
    bufferevent_set_timeouts(s->cli, read_ms ? &rt : NULL, &wt);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* ---- lifetime ---- */

static void session_free(struct session *s)
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
    release_tenant(s);
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
    if (s->bodybuf)
        evbuffer_free(s->bodybuf);
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

void session_kill(struct session *s)
{
    session_free(s);
}

struct session *session_next(struct session *s)
{
    return s->next;
}

void upconn_free(struct upconn *u)
{
    if (u->bev)
        bufferevent_free(u->bev);
    free(u);
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
    bufferevent_setcb(s->cli, cli_read_cb, cli_write_cb, cli_event_cb, s);
    bufferevent_setwatermark(s->cli, EV_WRITE, LOW_WM, 0);
    bufferevent_setwatermark(s->cli, EV_READ, 0, HIGH_WM);
    bufferevent_set_max_single_read(s->cli, MAX_IO);
    bufferevent_set_max_single_write(s->cli, MAX_IO);
    cli_timeouts(s, 0);
    s->state = S_READ_HEAD;
    bufferevent_enable(s->cli, s->tls ? EV_READ | EV_WRITE : EV_READ);
    timer_ms(s, cfg_of(s)->proxy.client_header_timeout_ms);
}

/* ---- access log ---- */

static void access_log(struct session *s)
{
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
                     ts, s->peer, s->tenant ? s->tenant->conf->name : "-",
                     s->method[0] ? s->method : "-", s->target ? s->target : "-",
                     s->status, s->bytes_in, s->bytes_out,
                     s->backend ? s->backend->conf->name : "-", total, upbuf,
                     s->rid[0] ? s->rid : "-");
    if (n > 0)
        log_access(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* ---- closing and errors ---- */

/* Stop forwarding: drop the upstream connection and give back the backend slot. */
static void drop_upstream(struct session *s)
{
    if (s->up) {
        upconn_free(s->up);
        s->up = NULL;
    }
}

static struct route_state *route_state_of(const struct session *s)
{
    return admit_route_state(&s->rt->admit, cfg_of(s), s->route);
}

/* Take one of the request's route's slots (1 without a route); 0 if the route is full. */
static int take_route(struct session *s)
{
    struct route_state *rs = route_state_of(s);
    return !rs || atomic_take_below(&rs->inflight, s->route->max_inflight);
}

/* Give back the tenant's and the route's slots. Called just before release_backend(),
 * whose one kick then sees their waiters as eligible again: one freed slot, one wake-up. */
static void release_tenant(struct session *s)
{
    if (s->tenant_slot) {
        s->tenant_slot = 0;
        admit_give(s->tenant);
    }
    if (s->route_slot) {
        struct route_state *rs = route_state_of(s);
        s->route_slot = 0;
        if (rs)
            atomic_fetch_sub_explicit(&rs->inflight, 1, memory_order_relaxed);
    }
}

/* Give back the backend slot; a request waiting for one is woken. */
static void release_backend(struct session *s)
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
        timer_ms(s, 0);
        return;
    }
    shutdown(bufferevent_getfd(s->cli), SHUT_WR);
    bufferevent_disable(s->cli, EV_WRITE);
    bufferevent_set_timeouts(s->cli, NULL, NULL);
    bufferevent_enable(s->cli, EV_READ);
    timer_ms(s, LINGER_MS);
}

/* Close after what is queued for the client has been written. */
static void close_after_flush(struct session *s)
{
    s->state = S_CLOSING;
    bufferevent_disable(s->cli, EV_READ);
    evtimer_del(s->timer);
    flush_cli(s);
    if (evbuffer_get_length(bufferevent_get_output(s->cli)) == 0)
        start_linger(s);
    else
        timer_ms(s, cfg_of(s)->proxy.send_timeout_ms);
}

static enum stat_id error_stat(int status)
{
    switch (status) {
    case 400: return STAT_err_400;
    case 408: return STAT_err_408;
    case 413: return STAT_err_413;
    case 414: return STAT_err_414;
    case 431: return STAT_err_431;
    case 501: return STAT_err_501;
    case 503: return STAT_err_503;
    case 504: return STAT_err_504;
    default: return STAT_err_502;
    }
}

/* Answer a status the proxy produced (extra: more header lines, may be NULL), log it,
 * and close the connection. */
static void next_request(struct session *s);

/* The counter an answer goes to: refusals by their reason (and their tenant's count),
 * errors by status. */
static enum stat_id answer_stat(struct session *s, int status, const char *code)
{
    static const enum stat_id by_reason[REJ_MAX] = {
        [REJ_rate] = STAT_rejected_rate,
        [REJ_tenant_queue] = STAT_rejected_tenant_queue,
        [REJ_queue_full] = STAT_rejected_queue_full,
        [REJ_queue_timeout] = STAT_rejected_queue_timeout,
        [REJ_shed] = STAT_rejected_shed,
        [REJ_limiter_down] = STAT_rejected_limiter_down,
    };
    int r = admit_reason_of(code);
    if (r < 0)
        return error_stat(status);
    if (s->tenant)
        admit_rejected(s->tenant, (enum reject_reason)r);
    return by_reason[r];
}

static void send_answer(struct session *s, int status, const char *code, const char *msg,
                        const char *extra)
{
    struct worker *w = s->w;
    /* a refusal (429/503) of a request whose body was read keeps the connection, as NGINX
     * does after limit_req; every other error closes it */
    int keep = s->answer_keep && s->keep_alive && !w->draining && !s->resp_started;
    drop_upstream(s);
    s->status = status;
    stats_add(&w->stats, answer_stat(s, status, code), 1);
    log_info("session", "error status=%d code=%s client=%s method=%s target=%s backend=%s rid=%s",
             status, code, s->peer, s->method[0] ? s->method : "-",
             s->target ? s->target : "-", s->backend ? s->backend->conf->name : "-",
             s->rid[0] ? s->rid : "-");
    if (!s->resp_started) {
        char body[256];
        int blen = snprintf(body, sizeof body, "sluice: %s\n", msg);
        struct evbuffer *out = bufferevent_get_output(s->cli);
        evbuffer_add_printf(out,
                            "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                            "%sX-Sluice-Error: %s\r\n",
                            status, reason_phrase(status), blen,
                            keep ? "" : "Connection: close\r\n", code);
        if (s->rid[0])
            evbuffer_add_printf(out, "X-Request-ID: %s\r\n", s->rid);
        if (extra)
            evbuffer_add(out, extra, strlen(extra));
        evbuffer_add_printf(out, "\r\n");
        if (s->meth != HTTP1_M_HEAD)
            evbuffer_add(out, body, (size_t)blen);
        s->bytes_out += evbuffer_get_length(out);
        s->resp_started = 1;
    }
    access_log(s);
    release_tenant(s);
    release_backend(s);
    if (keep) {
        flush_cli(s);
        next_request(s);
        return;
    }
    close_after_flush(s);
}

static void send_error(struct session *s, int status, const char *code, const char *msg)
{
    send_answer(s, status, code, msg, NULL);
}

/* redirect_http: a plain-HTTP request is sent to the same host and target over HTTPS. */
static void send_redirect(struct session *s, const struct http1_msg *m)
{
    const char *h = m->authority;
    size_t hl = m->authority_len;
    if (!h && m->host >= 0) {
        h = m->headers[m->host].value;
        hl = m->headers[m->host].value_len;
    }
    if (!h || hl == 0) {
        send_error(s, 400, "no-host", "a Host is needed to redirect to https");
        return;
    }
    const char *colon = h[0] == '[' ? memchr(h, ']', hl) : memchr(h, ':', hl);
    if (colon && h[0] == '[')
        colon = (size_t)(colon - h) + 1 < hl ? colon + 1 : NULL;
    size_t name_len = colon ? (size_t)(colon - h) : hl;
    int port = listener_port(cfg_of(s)->proxy.tls_listen.v[0]);
    char loc[MAX_LOG_TARGET + 400], portbuf[16] = "";
    if (port != 443)
        snprintf(portbuf, sizeof portbuf, ":%d", port);
    snprintf(loc, sizeof loc, "Location: https://%.*s%s%s\r\n", (int)(name_len < 255 ? name_len : 255),
             h, portbuf, s->target ? s->target : "/");
    stats_add(&s->w->stats, STAT_redirects, 1);
    send_answer(s, 308, "redirect-https", "this service is served over https", loc);
}

/* 429 from the tenant's rate limit, with when to come back (RFC 6585 4, RFC 9110 10.2.3) and
 * the limit in the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers). */
static void send_rate_limited(struct session *s, uint64_t wait_ns)
{
    const struct tenant_conf *tc = s->tenant->conf;
    uint64_t secs = (wait_ns + 999999999ULL) / 1000000000ULL;
    double window = (double)tc->burst / tc->rate;
    char extra[320];
    snprintf(extra, sizeof extra,
             "Retry-After: %" PRIu64 "\r\nX-Sluice-Reject: rate\r\n"
             "RateLimit-Policy: \"%s\";q=%d;w=%.0f\r\nRateLimit: \"%s\";r=0;t=%" PRIu64 "\r\n",
             secs, tc->name, tc->burst, window < 1 ? 1 : window, tc->name, secs);
    send_answer(s, 429, "rate", "this tenant is over its request rate; retry later",
                extra);
}

/* 503 from the queue (full, or waited too long): the backends are saturated. */
static void send_queue_reject(struct session *s, const char *why)
{
    char extra[128];
    uint32_t t = cfg_of(s)->queue_timeout_ms;
    snprintf(extra, sizeof extra, "Retry-After: %u\r\nX-Sluice-Reject: %s\r\n",
             t < 2000 ? 1 : t / 2000, why);
    s->answer_keep = s->req.done;
    send_answer(s, 503, why, "the backends are saturated; retry later", extra);
}

/* The response had started when things went wrong: all we can do is close. */
static void abort_session(struct session *s, enum stat_id why)
{
    stats_add(&s->w->stats, why, 1);
    log_info("session", "aborted reason=%s client=%s target=%s backend=%s rid=%s",
             stats_name(why), s->peer, s->target ? s->target : "-", s->backend ? s->backend->conf->name : "-",
             s->rid);
    if (s->status == 0)
        s->status = 499;
    access_log(s);
    session_free(s);
}

/* ---- body pump ---- */

static void body_init(struct body *b, enum http1_body kind, uint64_t len, int out_chunked)
{
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->remaining = len;
    b->out_chunked = out_chunked;
    http1_chunked_init(&b->ch, 0);
    b->done = kind == HTTP1_BODY_NONE || (kind == HTTP1_BODY_LENGTH && len == 0);
}

static void move_data(struct body *b, struct evbuffer *src, struct evbuffer *dst, size_t n)
{
    if (n == 0)
        return;
    if (b->out_chunked)
        evbuffer_add_printf(dst, "%zx\r\n", n);
    evbuffer_remove_buffer(src, dst, n);
    if (b->out_chunked)
        evbuffer_add(dst, "\r\n", 2);
    b->total += n;
}

static void body_finish(struct body *b, struct evbuffer *dst)
{
    b->done = 1;
    if (b->out_chunked)
        evbuffer_add(dst, "0\r\n\r\n", 5);
}

/* Move what src holds of the body to dst. eof: the source closed. 0 ok, -1 malformed or
 * truncated. */
static int body_pump(struct body *b, struct evbuffer *src, struct evbuffer *dst, int eof)
{
    while (!b->done) {
        size_t avail = evbuffer_get_length(src);
        if (b->kind == HTTP1_BODY_LENGTH) {
            size_t n = avail < b->remaining ? avail : (size_t)b->remaining;
            move_data(b, src, dst, n);
            b->remaining -= n;
            if (b->remaining == 0)
                body_finish(b, dst);
            else if (eof)
                return -1;
            return 0;
        }
        if (b->kind == HTTP1_BODY_CLOSE) {
            move_data(b, src, dst, avail);
            if (eof)
                body_finish(b, dst);
            return 0;
        }
        /* chunked */
        if (b->ch.state == HTTP1_CH_DATA) {
            size_t n = avail < b->ch.remaining ? avail : (size_t)b->ch.remaining;
            if (n == 0)
                return eof ? -1 : 0;
            move_data(b, src, dst, n);
            http1_chunked_data(&b->ch, n);
            continue;
        }
        if (avail == 0)
            return eof ? -1 : 0;
        size_t take = avail < 8200 ? avail : 8200;
        const char *p = (const char *)evbuffer_pullup(src, (ssize_t)take);
        size_t used = http1_chunked_parse(&b->ch, p, take);
        evbuffer_drain(src, used);
        if (b->ch.state == HTTP1_CH_ERROR)
            return -1;
        if (b->ch.state == HTTP1_CH_DONE)
            body_finish(b, dst);
        else if (used == 0 && b->ch.state != HTTP1_CH_DATA)
            return eof ? -1 : 0;
    }
    return 0;
}

/* ---- request head ---- */

/* How many bytes of in to make contiguous for the head parser: through the blank line if
 * it is there (so a body behind the head is not copied), else all of it up to cap (the
 * parser then finds bare LFs and over-long heads without waiting). */
static size_t head_span(struct evbuffer *in, size_t len, size_t cap)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    size_t take = end.pos >= 0 ? (size_t)end.pos + 4 : len;
    return take < cap ? take : cap;
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

/* "ip:port" (or "[v6]:port") the client connected to. */
static void local_address(struct session *s, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "localhost";
    int port = 0;
    if (getsockname(bufferevent_getfd(s->cli), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            snprintf(buf, len, "[%s]:%d", ip, port);
            return;
        }
    }
    snprintf(buf, len, "%s:%d", ip, port);
}

/* Serialize the request head we send upstream into s->reqhead. */
static void build_upstream_head(struct session *s, const struct http1_msg *m)
{
    struct evbuffer *o = s->reqhead;
    const struct http1_header *xff = NULL, *host = m->host >= 0 ? &m->headers[m->host] : NULL;
    evbuffer_drain(o, evbuffer_get_length(o));
    evbuffer_add(o, m->method, m->method_len);
    evbuffer_add(o, " ", 1);
    evbuffer_add(o, m->target, m->target_len);
    evbuffer_add(o, " HTTP/1.1\r\n", 11);
    if (m->authority) { /* absolute-form: its authority replaces Host (RFC 9112 3.2.2) */
        evbuffer_add(o, "Host: ", 6);
        evbuffer_add(o, m->authority, m->authority_len);
        evbuffer_add(o, "\r\n", 2);
    } else if (!host) {
        /* HTTP/1.0 may omit Host; the HTTP/1.1 request we send must not (RFC 9112 3.2):
         * name the address the client connected to */
        char addr[80];
        local_address(s, addr, sizeof addr);
        evbuffer_add_printf(o, "Host: %s\r\n", addr);
    }
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h->hop || h->id == HTTP1_H_X_FORWARDED_PROTO || h->id == HTTP1_H_X_FORWARDED_HOST ||
            h->id == HTTP1_H_X_REQUEST_ID || (m->authority && h->id == HTTP1_H_HOST))
            continue;
        if (h->id == HTTP1_H_X_FORWARDED_FOR) {
            xff = h; /* appended below, all values joined in order */
            continue;
        }
        evbuffer_add(o, h->name, h->name_len);
        evbuffer_add(o, ": ", 2);
        evbuffer_add(o, h->value, h->value_len);
        evbuffer_add(o, "\r\n", 2);
    }
    evbuffer_add(o, "X-Forwarded-For: ", 17);
    if (xff) {
        for (size_t i = 0; i < m->num_headers; i++)
            if (m->headers[i].id == HTTP1_H_X_FORWARDED_FOR && m->headers[i].value_len) {
                evbuffer_add(o, m->headers[i].value, m->headers[i].value_len);
                evbuffer_add(o, ", ", 2);
            }
    }
    evbuffer_add_printf(o, "%s\r\nX-Forwarded-Proto: %s\r\n", s->peer, s->tls ? "https" : "http");
    const char *fh = m->authority ? m->authority : host ? host->value : NULL;
    size_t fhl = m->authority ? m->authority_len : host ? host->value_len : 0;
    if (fhl) {
        evbuffer_add(o, "X-Forwarded-Host: ", 18);
        evbuffer_add(o, fh, fhl);
        evbuffer_add(o, "\r\n", 2);
    }
    evbuffer_add_printf(o, "X-Request-ID: %s\r\n", s->rid);
    if (m->body == HTTP1_BODY_LENGTH)
        evbuffer_add_printf(o, "Content-Length: %" PRIu64 "\r\n", m->content_length);
    else if (m->body == HTTP1_BODY_CHUNKED)
        evbuffer_add(o, "Transfer-Encoding: chunked\r\n", 28);
    if (m->upgrade) {
        const struct http1_header *u = http1_find(m, HTTP1_H_UPGRADE);
        evbuffer_add(o, "Connection: upgrade\r\nUpgrade: ", 30);
        evbuffer_add(o, u->value, u->value_len);
        evbuffer_add(o, "\r\n", 2);
    }
    evbuffer_add(o, "\r\n", 2);
}

/* Remember what the access log and a retry need; the parsed head dies with the drain. */
static void note_request(struct session *s, const struct http1_msg *m)
{
    const struct http1_header *rid = http1_find(m, HTTP1_H_X_REQUEST_ID);
    copy_field(s->method, sizeof s->method, m->method, m->method_len);
    free(s->target);
    size_t tl = m->target_len < MAX_LOG_TARGET ? m->target_len : MAX_LOG_TARGET;
    s->target = malloc(tl + 1);
    if (s->target)
        copy_field(s->target, tl + 1, m->target, tl);
    if (rid && valid_request_id(rid))
        copy_field(s->rid, sizeof s->rid, rid->value, rid->value_len);
    else
        worker_request_id(s->w, s->rid);
    s->meth = m->meth;
    s->minor = m->minor;
    s->keep_alive = m->keep_alive && !s->w->draining && cfg_of(s)->proxy.keepalive_timeout_ms;
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
    if (s->bodybuf) {
        evbuffer_free(s->bodybuf);
        s->bodybuf = NULL;
    }
    s->status = 0;
    s->attempts = 0;
    s->resp_started = 0;
    s->last_failed = NULL;
    s->bytes_in = s->bytes_out = 0;
    s->t_up_start = s->t_up_end = s->t_sent_us = 0;
    s->upgrade = s->expect = 0;
    s->meth = HTTP1_M_OTHER;
    admit_done(s->tenant);
    s->tenant = NULL;
    s->route = NULL;
    s->bypass = 0;
    s->answer_keep = 0;
}

/* Parse the head at the front of the client's input: its length, HTTP1_INCOMPLETE or
 * HTTP1_ERROR (with *status); *take: the bytes looked at. */
static int parse_head(struct session *s, struct http1_msg *m, int *status, size_t *take)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    *take = head_span(in, evbuffer_get_length(in), s->rt->lim.max_head + 2);
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)*take);
    return http1_parse_request(p, *take, &s->rt->lim, s->w->hdrs, s->w->nhdrs, m, status);
}

static void admitted_head(struct session *s, const struct http1_msg *m, int n, uint64_t wait_ns);
static void ask_redis(struct session *s);

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
        timer_ms(s, cfg_of(s)->proxy.client_header_timeout_ms);
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
        send_error(s, status, status == 400 ? "bad-request" : status == 414 ? "uri-too-long"
                                : status == 431 ? "header-too-large" : "not-implemented",
                   "the request is malformed or over a limit and was not forwarded");
        return;
    }
    note_request(s, &m);
    s->bytes_in = (uint64_t)n;
    if (!s->tls && cfg_of(s)->proxy.redirect_http) {
        send_redirect(s, &m);
        return;
    }
    if (m.meth == HTTP1_M_CONNECT) {
        send_error(s, 501, "not-implemented", "CONNECT is not supported");
        return;
    }
    uint64_t maxb = cfg_of(s)->proxy.max_body_size;
    if (maxb && m.body == HTTP1_BODY_LENGTH && m.content_length > maxb) {
        send_error(s, 413, "body-too-large", "the request body is over max_body_size");
        return;
    }
    s->tenant = admit_classify(&s->rt->admit, &m, s->peer);
    s->route = admit_route(cfg_of(s), m.target, m.target_len);
    s->bypass = s->route && s->route->bypass;
    if (!s->bypass && s->tenant->interval_ns && cfg_of(s)->redis.url) {
        ask_redis(s); /* the head stays in the input buffer meanwhile */
        return;
    }
    admitted_head(s, &m, n, s->bypass ? 0 : admit_rate(s->tenant, admit_now_ns()));
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
        send_rate_limited(s, wait_ns);
        return;
    }
    build_upstream_head(s, m);
    body_init(&s->req, m->body, m->content_length, m->body == HTTP1_BODY_CHUNKED);
    evbuffer_drain(in, (size_t)n);
    if (s->req.done || cfg_of(s)->proxy.request_buffer == 0) {
        start_request(s);
        return;
    }
    if (!s->bodybuf && !(s->bodybuf = evbuffer_new())) {
        send_error(s, 503, "no-memory", "out of memory buffering the request body");
        return;
    }
    s->state = S_READ_BODY;
    evtimer_del(s->timer);
    if (s->expect) {
        evbuffer_add(bufferevent_get_output(s->cli), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        s->expect = 0;
    }
    cli_timeouts(s, cfg_of(s)->proxy.client_body_timeout_ms);
    buffer_body(s);
}

/* ---- shared rate limits ([redis]) ---- */

/* Redis or the failure policy decided (refuse_down: on_failure = closed): pick the head up
 * again where read_head left it. */
static void resume_head(struct session *s, uint64_t wait_ns, int refuse_down)
{
    struct http1_msg m;
    int status;
    size_t take;
    s->state = S_READ_HEAD;
    int n = parse_head(s, &m, &status, &take); /* it parsed before: it parses again */
    if (n <= 0) {
        send_error(s, 500, "internal", "the request head was lost while admitting it");
        return;
    }
    if (!refuse_down) {
        admitted_head(s, &m, n, wait_ns);
        return;
    }
    s->answer_keep = m.body == HTTP1_BODY_NONE ||
                     (m.body == HTTP1_BODY_LENGTH && m.content_length == 0);
    evbuffer_drain(bufferevent_get_input(s->cli), (size_t)n);
    send_answer(s, 503, "limiter-down", "the shared rate limiter is unavailable; retry later",
                "Retry-After: 1\r\nX-Sluice-Reject: limiter-down\r\n");
}

/* Redis did not decide: [redis] on_failure does. */
static void limiter_fallback(struct session *s)
{
    const struct config *c = cfg_of(s);
    stats_add(&s->w->stats, STAT_redis_fallbacks, 1);
    switch (c->redis.on_failure) {
    case RF_OPEN:
        admit_count(s->tenant);
        resume_head(s, 0, 0);
        return;
    case RF_CLOSED:
        resume_head(s, 0, 1);
        return;
    default: {
        int share = atomic_load_explicit(&s->w->px->redis_instances, memory_order_relaxed);
        resume_head(s, admit_rate_share(s->tenant, admit_now_ns(), share), 0);
        return;
    }
    }
}

static void redis_answer(void *arg, int rc, long long wait_us)
{
    struct session *s = arg;
    s->rcall = NULL;
    evtimer_del(s->timer);
    if (rc < 0) {
        limiter_fallback(s);
        return;
    }
    if (wait_us == 0)
        admit_count(s->tenant);
    resume_head(s, wait_us > 0 ? (uint64_t)wait_us * 1000 : 0, 0);
}

static void ask_redis(struct session *s)
{
    const struct config *c = cfg_of(s);
    struct tenant *t = s->tenant;
    s->rcall = redis_gcra(&s->w->redis, c->redis.prefix, t->st->name, t->interval_ns / 1000,
                          t->tau_ns / 1000, redis_answer, s);
    if (!s->rcall) {
        limiter_fallback(s); /* not connected: decide now, without waiting */
        return;
    }
    s->state = S_ADMIT;
    timer_ms(s, c->redis.timeout_ms);
}

/* Checks shared by buffering and streaming a request body; 0 to go on, -1 answered. */
static int body_checks(struct session *s, int rc, int eof)
{
    uint64_t maxb = cfg_of(s)->proxy.max_body_size;
    if (rc == 0 && maxb && s->req.total > maxb) {
        if (!s->resp_started)
            send_error(s, 413, "body-too-large", "the request body is over max_body_size");
        else
            abort_session(s, STAT_err_413);
        return -1;
    }
    if (rc < 0) {
        if (!s->resp_started && !eof)
            send_error(s, 400, "bad-body", "the request body framing is malformed");
        else
            abort_session(s, STAT_client_aborts);
        return -1;
    }
    return 0;
}

/* READ_BODY: collect the body; go upstream when it is complete or the buffer is full. */
static void buffer_body(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    size_t before = evbuffer_get_length(in);
    int rc = body_pump(&s->req, in, s->bodybuf, 0);
    s->bytes_in += before - evbuffer_get_length(in);
    if (body_checks(s, rc, 0) < 0)
        return;
    if (s->req.done || evbuffer_get_length(s->bodybuf) >= cfg_of(s)->proxy.request_buffer)
        start_request(s);
}

static void start_request(struct session *s)
{
    evtimer_del(s->timer);
    s->state = S_CONNECTING;
    s->nreq++;
    connect_upstream(s);
}

/* ---- upstream connection ---- */

static void up_timeouts(struct session *s, int reading)
{
    const struct backend_conf *bc = s->backend->conf;
    struct timeval rt, wt;
    ms_tv(&rt, bc->read_timeout_ms);
    ms_tv(&wt, bc->read_timeout_ms);
    bufferevent_set_timeouts(s->up->bev, reading ? &rt : NULL, &wt);
}

static void send_request_head(struct session *s)
{
    struct evbuffer *out = bufferevent_get_output(s->up->bev);
    size_t hl = evbuffer_get_length(s->reqhead);
    evbuffer_add(out, evbuffer_pullup(s->reqhead, -1), hl);
    if (s->bodybuf)
        evbuffer_add_buffer(out, s->bodybuf);
    s->state = S_FORWARD;
    s->t_up_start = up_now_ms();
    s->t_sent_us = admit_now_ns() / 1000;
    s->inflight_at_send = up_inflight(s->backend);
    up_timeouts(s, s->req.done);
    bufferevent_enable(s->up->bev, EV_READ);
    flush_up(s);
    if (!s->req.done) {
        if (s->expect) {
            evbuffer_add(bufferevent_get_output(s->cli), "HTTP/1.1 100 Continue\r\n\r\n", 25);
            s->expect = 0;
            flush_cli(s);
        }
        cli_timeouts(s, cfg_of(s)->proxy.client_body_timeout_ms);
        bufferevent_enable(s->cli, EV_READ);
        cli_read_cb(s->cli, s); /* body bytes that came with the head */
    }
}

static int new_upconn(struct session *s, struct backend *b)
{
    struct upconn *u = calloc(1, sizeof *u);
    if (!u)
        return -1;
    u->b = b;
    u->w = s->w;
    u->bev = up_bufferevent(b, s->w->base);
    if (!u->bev) {
        free(u);
        return -1;
    }
    s->up = u;
    bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, s);
    bufferevent_setwatermark(u->bev, EV_WRITE, LOW_WM, 0);
    bufferevent_set_max_single_read(u->bev, MAX_IO);
    bufferevent_set_max_single_write(u->bev, MAX_IO);
    struct timeval ct;
    ms_tv(&ct, b->conf->connect_timeout_ms);
    bufferevent_set_timeouts(u->bev, NULL, &ct);
    stats_add(&s->w->stats, STAT_upstream_connects, 1);
    if (bufferevent_socket_connect(u->bev, (struct sockaddr *)&b->addr, (int)b->addrlen) < 0)
        return -2;
    int one = 1;
    setsockopt(bufferevent_getfd(u->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void connect_failed(struct session *s);

static void pick_and_connect(struct session *s, int from_queue);

/* A slot was freed for this waiter (on its own thread now). */
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    if (s->state != S_QUEUED || (s->wt.state != W_WOKEN && s->wt.state != W_SHED))
        return;
    int shed = s->wt.state == W_SHED;
    s->wt.state = W_IDLE;
    evtimer_del(s->timer);
    if (shed) { /* a standing queue, and its tenant has the most waiting */
        send_queue_reject(s, "shed");
        return;
    }
    s->state = S_CONNECTING;
    pick_and_connect(s, 1);
}

/* All backends with a slot limit are full: wait in the shared queue (or 503). front: it
 * was woken but a newcomer took the slot, so it keeps its place and its deadline. */
static void wait_for_slot(struct session *s, int front)
{
    const struct config *c = cfg_of(s);
    struct queue *q = &s->w->px->queue;
    if (!s->wt.wake && !(s->wt.wake = event_new(s->w->base, -1, 0, wake_cb, s))) {
        send_error(s, 503, "no-memory", "out of memory queueing the request");
        return;
    }
    s->wt.ts = s->tenant->st;
    s->wt.weight = s->tenant->conf->weight;
    s->wt.max_inflight = s->tenant->conf->max_inflight;
    s->wt.max_queue = s->tenant->conf->max_queue;
    struct route_state *rs = route_state_of(s);
    s->wt.route_max = rs ? s->route->max_inflight : 0;
    s->wt.route_inflight = rs && s->wt.route_max > 0 ? &rs->inflight : NULL;
    int rc = c->queue_max == 0 ? -1 : queue_push(q, &s->wt, front, c->queue_max);
    if (rc == -2) {
        s->answer_keep = s->req.done;
        send_answer(s, 429, "tenant-queue", "this tenant has too many requests waiting",
                    "Retry-After: 1\r\nX-Sluice-Reject: tenant-queue\r\n");
        return;
    }
    if (rc < 0) {
        atomic_fetch_add(&q->full, 1);
        send_queue_reject(s, "queue-full");
        return;
    }
    uint64_t now = up_now_ms();
    if (!front)
        s->wt.since_ms = now;
    uint64_t waited = now - s->wt.since_ms;
    s->state = S_QUEUED;
    timer_ms(s, waited < c->queue_timeout_ms ? (uint32_t)(c->queue_timeout_ms - waited) : 0);
    if (up_has_slot(&s->rt->up, now))
        queue_kick(q); /* a slot freed while this one was deciding (the kick skips tenants
                        * at their max_inflight) */
}

static void connect_upstream(struct session *s)
{
    pick_and_connect(s, 0);
}

static void pick_and_connect(struct session *s, int from_queue)
{
    int full = 0;
    struct queue *q = &s->w->px->queue;
    s->attempts++;
    /* newcomers queue behind waiters, so a freed slot goes to the queue's choice */
    struct backend *b = NULL;
    if (s->bypass)
        b = up_pick_bypass(&s->rt->up, s->last_failed, up_now_ms());
    else if (!from_queue && s->attempts == 1 && queue_len(q) > 0)
        full = 1;
    else if (!s->tenant_slot && !(s->tenant_slot = admit_take(s->tenant)))
        full = 1; /* the tenant is at its max_inflight */
    else if (!s->route_slot && !(s->route_slot = take_route(s)))
        full = 1; /* the route is at its max_inflight */
    else
        b = up_pick_slot(&s->rt->up, s->last_failed, up_now_ms(), &full);
    if (!b && full) {
        release_tenant(s); /* waiting holds no tenant or route slot; no one to wake for it */
        s->attempts--;
        wait_for_slot(s, from_queue);
        return;
    }
    if (!b) {
        send_error(s, 502, "no-backend", "no backend can take requests (none, or all draining)");
        return;
    }
    s->backend = b;
    struct upconn *u = worker_pool_get(s->w, b);
    if (u) {
        u->reused = 1;
        s->up = u;
        bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, s);
        stats_add(&s->w->stats, STAT_upstream_reuses, 1);
        send_request_head(s);
        return;
    }
    int rc = new_upconn(s, b);
    if (rc == -1) {
        release_backend(s);
        send_error(s, 502, "no-memory", "out of memory connecting to the backend");
    } else if (rc == -2) {
        connect_failed(s);
    }
}

/* A connect to s->backend failed or timed out: mark it and try another once. */
static void connect_failed(struct session *s)
{
    struct backend *b = s->backend;
    up_fail(b, up_now_ms());
    unsigned long tls_err = s->up && b->tls ? bufferevent_get_openssl_error(s->up->bev) : 0;
    int sys_err = EVUTIL_SOCKET_ERROR();
    log_warn("upstream", "connect failed backend=%s address=%s attempt=%d reason=\"%s\" rid=%s",
             b->conf->name, b->conf->address, s->attempts,
             tls_err ? ERR_reason_error_string(tls_err) : strerror(sys_err), s->rid);
    drop_upstream(s);
    release_backend(s);
    s->last_failed = b;
    if (s->attempts <= cfg_of(s)->proxy.retries && s->rt->up.n > 1) {
        stats_add(&s->w->stats, STAT_retries, 1);
        connect_upstream(s);
        return;
    }
    s->backend = NULL;
    send_error(s, 502, "upstream-connect", "could not connect to a backend");
}

/* The pooled connection died before any response byte: try once more on a new one, only
 * where that is safe (idempotent and no body bytes sent). */
static int retry_fresh(struct session *s)
{
    if (!s->up->reused || s->resp_started || !http1_idempotent(s->meth) ||
        s->req.kind != HTTP1_BODY_NONE)
        return 0;
    struct backend *b = s->backend;
    drop_upstream(s);
    stats_add(&s->w->stats, STAT_retries, 1);
    s->state = S_CONNECTING;
    int rc = new_upconn(s, b);
    if (rc == -2) {
        connect_failed(s);
    } else if (rc == -1) {
        release_backend(s);
        send_error(s, 502, "no-memory", "out of memory connecting to the backend");
    }
    return 1;
}

/* ---- response ---- */

static void write_response_head(struct session *s, const struct http1_msg *m)
{
    struct evbuffer *o = bufferevent_get_output(s->cli);
    size_t before = evbuffer_get_length(o);
    int tunnel = m->status == 101 && s->upgrade;
    int chunk_out = 0;
    if (m->body == HTTP1_BODY_CHUNKED || m->body == HTTP1_BODY_CLOSE) {
        chunk_out = s->minor == 1;
        if (!chunk_out)
            s->keep_alive = 0;
    }
    if (!s->req.done || s->cli_eof)
        s->keep_alive = 0; /* the rest of the request body cannot be skipped safely */
    evbuffer_add_printf(o, "HTTP/1.1 %d ", m->status);
    evbuffer_add(o, m->reason, m->reason_len);
    evbuffer_add(o, "\r\n", 2);
    int has_rid = 0;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h->hop)
            continue;
        has_rid |= h->id == HTTP1_H_X_REQUEST_ID;
        evbuffer_add(o, h->name, h->name_len);
        evbuffer_add(o, ": ", 2);
        evbuffer_add(o, h->value, h->value_len);
        evbuffer_add(o, "\r\n", 2);
    }
    if (!has_rid)
        evbuffer_add_printf(o, "X-Request-ID: %s\r\n", s->rid);
    if (tunnel) {
        const struct http1_header *u = http1_find(m, HTTP1_H_UPGRADE);
        evbuffer_add(o, "Connection: upgrade\r\n", 21);
        if (u) {
            evbuffer_add(o, "Upgrade: ", 9);
            evbuffer_add(o, u->value, u->value_len);
            evbuffer_add(o, "\r\n", 2);
        }
    } else {
        if (m->body == HTTP1_BODY_LENGTH)
            evbuffer_add_printf(o, "Content-Length: %" PRIu64 "\r\n", m->content_length);
        else if (chunk_out)
            evbuffer_add(o, "Transfer-Encoding: chunked\r\n", 28);
        else if (m->body == HTTP1_BODY_NONE && m->status != 204 && m->status != 304) {
            const struct http1_header *cl = http1_find(m, HTTP1_H_CONTENT_LENGTH);
            if (cl) { /* a HEAD answer states the length of what GET would send */
                evbuffer_add(o, "Content-Length: ", 16);
                evbuffer_add(o, cl->value, cl->value_len);
                evbuffer_add(o, "\r\n", 2);
            }
        }
        if (!s->keep_alive)
            evbuffer_add(o, "Connection: close\r\n", 19);
        else if (s->minor == 0)
            evbuffer_add(o, "Connection: keep-alive\r\n", 24);
    }
    evbuffer_add(o, "\r\n", 2);
    s->bytes_out += evbuffer_get_length(o) - before;
    s->status = m->status;
    s->resp_started = 1;
    s->up_keep = m->keep_alive;
    body_init(&s->resp, m->body, m->content_length, chunk_out);
}

static void finish_response(struct session *s, int upstream_reusable);
static void tunnel_pump(struct bufferevent *from, struct bufferevent *to, int to_tls);

static void start_tunnel(struct session *s)
{
    s->state = S_TUNNEL;
    struct timeval t;
    ms_tv(&t, s->backend->conf->read_timeout_ms);
    bufferevent_set_timeouts(s->cli, &t, NULL);
    bufferevent_set_timeouts(s->up->bev, &t, NULL);
    bufferevent_enable(s->cli, EV_READ);
    bufferevent_enable(s->up->bev, EV_READ);
    s->req.done = 1;
    flush_cli(s); /* the 101 head */
    if (evbuffer_get_length(bufferevent_get_input(s->cli)) > 0) /* sent right after the head */
        tunnel_pump(s->cli, s->up->bev, s->up->b->tls != NULL);
}

/* Parse the backend's response head; 1 when it is done, 0 to wait, -1 after an error. */
static int read_response_head(struct session *s)
{
    struct worker *w = s->w;
    struct evbuffer *in = bufferevent_get_input(s->up->bev);
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return 0;
        size_t take = head_span(in, len, s->rt->lim.max_head + 2);
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)take);
        struct http1_msg m;
        int status = 0;
        int n = http1_parse_response(p, take, &s->rt->lim, w->hdrs, w->nhdrs, s->meth, &m,
                                     &status);
        if (n == HTTP1_INCOMPLETE)
            return 0;
        if (n == HTTP1_ERROR) {
            up_fail(s->backend, up_now_ms());
            send_error(s, 502, "bad-response", "the backend sent a malformed response");
            return -1;
        }
        if (m.status >= 100 && m.status < 200 && !(m.status == 101 && s->upgrade)) {
            evbuffer_drain(in, (size_t)n); /* interim answers: sluice sent its own 100 */
            continue;
        }
        s->t_up_end = up_now_ms();
        write_response_head(s, &m);
        evbuffer_drain(in, (size_t)n);
        if (m.status == 101 && s->upgrade)
            start_tunnel(s);
        return 1;
    }
}

/* Move response body bytes to the client; finish when complete. */
static void pump_response(struct session *s, int eof)
{
    struct evbuffer *in = bufferevent_get_input(s->up->bev);
    struct evbuffer *out = bufferevent_get_output(s->cli);
    size_t before = evbuffer_get_length(out);
    int rc = body_pump(&s->resp, in, out, eof);
    s->bytes_out += evbuffer_get_length(out) - before;
    flush_cli(s);
    if (rc < 0) {
        up_fail(s->backend, up_now_ms());
        abort_session(s, STAT_upstream_truncated);
        return;
    }
    if (s->resp.done) {
        int reusable = !eof && s->resp.kind != HTTP1_BODY_CLOSE && s->req.done && s->up_keep &&
                       evbuffer_get_length(in) == 0;
        finish_response(s, reusable);
        return;
    }
    if (evbuffer_get_length(out) > HIGH_WM)
        bufferevent_disable(s->up->bev, EV_READ);
}

/* The response is complete: pool or drop the upstream connection, log, and go on with the
 * next request on this client connection or close it. */
static void finish_response(struct session *s, int upstream_reusable)
{
    struct worker *w = s->w;
    if (s->up) {
        if (upstream_reusable && !w->draining && s->rt == w->rt) {
            bufferevent_setcb(s->up->bev, NULL, NULL, NULL, NULL);
            worker_pool_put(w, s->up);
        } else {
            upconn_free(s->up);
        }
        s->up = NULL;
    }
    up_ok(s->backend);
    if (!s->upgrade && s->t_sent_us)
        up_sample(s->backend, admit_now_ns() / 1000 - s->t_sent_us, s->inflight_at_send);
    stats_add(&w->stats, STAT_responses, 1);
    access_log(s);
    release_tenant(s);
    release_backend(s);
    if (!s->keep_alive || w->draining) {
        close_after_flush(s);
        return;
    }
    next_request(s);
}

/* Keep-alive: wait for (or parse the already pipelined) next request. */
static void next_request(struct session *s)
{
    reset_request(s);
    s->state = S_READ_HEAD;
    s->t_start = 0;
    cli_timeouts(s, 0);
    timer_ms(s, cfg_of(s)->proxy.keepalive_timeout_ms);
    if (evbuffer_get_length(bufferevent_get_output(s->cli)) > HIGH_WM)
        return; /* cli_write_cb resumes reading once the client has taken the response */
    bufferevent_enable(s->cli, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(s->cli)) > 0)
        read_head(s); /* pipelined request already here */
}

/* ---- callbacks ---- */

static void pump_request(struct session *s, int eof)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    struct evbuffer *out = bufferevent_get_output(s->up->bev);
    size_t before = evbuffer_get_length(in);
    int rc = body_pump(&s->req, in, out, eof);
    s->bytes_in += before - evbuffer_get_length(in);
    if (body_checks(s, rc, eof) < 0)
        return;
    flush_up(s);
    if (s->req.done) {
        cli_timeouts(s, 0);
        up_timeouts(s, 1);
        return;
    }
    if (evbuffer_get_length(out) > HIGH_WM)
        bufferevent_disable(s->cli, EV_READ);
}

static void tunnel_pump(struct bufferevent *from, struct bufferevent *to, int to_tls)
{
    evbuffer_add_buffer(bufferevent_get_output(to), bufferevent_get_input(from));
    flush_now(to, to_tls);
    if (evbuffer_get_length(bufferevent_get_output(to)) > HIGH_WM)
        bufferevent_disable(from, EV_READ);
}

static void cli_read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    read_more(bev, s->tls);
    switch (s->state) {
    case S_READ_HEAD:
        read_head(s);
        break;
    case S_READ_BODY:
        buffer_body(s);
        break;
    case S_FORWARD:
        if (!s->req.done)
            pump_request(s, 0);
        break;
    case S_TUNNEL: {
        size_t n = evbuffer_get_length(bufferevent_get_input(bev));
        s->bytes_in += n;
        tunnel_pump(bev, s->up->bev, s->up->b->tls != NULL);
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
                read_head(s);
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
            send_error(s, 408, "body-timeout", "the request body did not arrive in time");
            return;
        }
        abort_session(s, STAT_client_aborts);
        return;
    }
    if ((what & BEV_EVENT_EOF) &&
        (s->state == S_QUEUED || s->state == S_CONNECTING || s->state == S_FORWARD) &&
        s->req.done && !(what & BEV_EVENT_ERROR)) {
        s->cli_eof = 1; /* half-close after a complete request: still answer it */
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
    abort_session(s, STAT_client_aborts);
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    read_more(bev, s->up->b->tls != NULL);
    if (s->state == S_TUNNEL) {
        size_t n = evbuffer_get_length(bufferevent_get_input(bev));
        s->bytes_out += n;
        tunnel_pump(bev, s->cli, s->tls);
        return;
    }
    if (s->state != S_FORWARD)
        return;
    if (!s->resp_started) {
        int r = read_response_head(s);
        if (r <= 0 || s->state == S_TUNNEL) {
            if (r > 0)
                up_read_cb(bev, arg);
            return;
        }
    }
    pump_response(s, 0);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (s->state == S_FORWARD && !s->req.done)
        bufferevent_enable(s->cli, EV_READ);
    else if (s->state == S_TUNNEL)
        bufferevent_enable(s->cli, EV_READ);
}

/* The backend closed, failed or timed out. */
static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        send_request_head(s);
        return;
    }
    if (s->state == S_CONNECTING) {
        connect_failed(s);
        return;
    }
    if (s->state == S_TUNNEL) {
        evbuffer_add_buffer(bufferevent_get_output(s->cli), bufferevent_get_input(s->up->bev));
        drop_upstream(s);
        s->keep_alive = 0;
        access_log(s);
        release_tenant(s);
        release_backend(s);
        close_after_flush(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        up_fail(s->backend, up_now_ms());
        if (!s->resp_started)
            send_error(s, 504, "upstream-timeout", "the backend did not answer in time");
        else
            abort_session(s, STAT_upstream_truncated);
        return;
    }
    /* EOF or error */
    if (!s->resp_started) {
        if (read_response_head(s) != 0)
            goto eof_body;
        if (retry_fresh(s))
            return;
        up_fail(s->backend, up_now_ms());
        send_error(s, 502, "upstream-closed", "the backend closed the connection without answering");
        return;
    }
eof_body:
    if (s->resp_started && s->state == S_FORWARD)
        pump_response(s, 1);
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
        limiter_fallback(s);
        return;
    case S_QUEUED: /* waited queue timeout; a wake-up on its way is passed on */
        queue_leave(&s->w->px->queue, &s->wt);
        atomic_fetch_add(&s->w->px->queue.timeouts, 1);
        send_queue_reject(s, "queue-timeout");
        return;
    case S_READ_HEAD:
        if (s->t_start == 0 && evbuffer_get_length(bufferevent_get_input(s->cli)) == 0) {
            start_linger(s); /* idle keep-alive: close quietly, and without a reset */
            return;
        }
        send_error(s, 408, "header-timeout", "the request head did not arrive in time");
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
