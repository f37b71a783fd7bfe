/* session_upstream: a session's backend side. It picks a backend and connects (or reuses a
 * pooled connection; a failed connect is retried once elsewhere), sends the request, streams
 * the response back, runs 101 tunnels, and holds the body pump both directions use. It does
 * not read client heads, answer for itself or decide admission (session.c, session_admit.c). */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include <sluice/http1.h>
#include <sluice/log.h>
#include <sluice/queue.h>
#include <sluice/runtime.h>
#include <sluice/session-int.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);

static void flush_up(struct session *s)
{
    sess_flush_now(s->up->bev, s->up->b->tls != NULL);
}

/* ---- body pump ---- */

void sess_body_init(struct body *b, enum http1_body kind, uint64_t len, int out_chunked)
{
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->remaining = len;
    b->out_chunked = out_chunked;
    http1_chunked_init(&b->ch, 0);
    b->done = kind == HTTP1_BODY_NONE || (kind == HTTP1_BODY_LENGTH && len == 0);
}

/* Copy n bytes of src into dst's own free space (one copy), then drop them from src. */
static void copy_data(struct evbuffer *src, struct evbuffer *dst, size_t n)
{
    while (n > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(dst, (ev_ssize_t)n, &v, 1) < 1)
            return; /* out of memory: what is left stays in src */
        size_t c = v.iov_len < n ? v.iov_len : n;
        int got = evbuffer_remove(src, v.iov_base, c);
        if (got <= 0)
            return;
        v.iov_len = (size_t)got;
        evbuffer_commit_space(dst, &v, 1);
        n -= (size_t)got;
    }
}

/* Moving chains is free, but a chain is as large as the read that filled it wanted: a peer
 * sending a byte per packet fills one chain of about a kilobyte per byte. Small pieces are
 * copied instead, so that memory held follows the bytes held; a buffered body is always
 * copied (into the room reserved for it). */
#define MOVE_MIN 4096

static void move_data(struct body *b, struct evbuffer *src, struct evbuffer *dst, size_t n)
{
    if (n == 0)
        return;
    if (b->out_chunked)
        evbuffer_add_printf(dst, "%zx\r\n", n);
    if (b->copy || n < MOVE_MIN)
        copy_data(src, dst, n);
    else
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
int sess_body_pump(struct body *b, struct evbuffer *src, struct evbuffer *dst, int eof)
{
    while (!b->done) {
        size_t avail = evbuffer_get_length(src);
        /* payload moved now: what src has, at most what dst may still take (its cap;
         * chunked framing may pass the cap by a few bytes) */
        size_t room = avail;
        if (b->cap) {
            size_t held = evbuffer_get_length(dst);
            room = held >= b->cap ? 0 : b->cap - held < avail ? b->cap - held : avail;
        }
        if (b->kind == HTTP1_BODY_LENGTH) {
            size_t n = room < b->remaining ? room : (size_t)b->remaining;
            move_data(b, src, dst, n);
            b->remaining -= n;
            if (b->remaining == 0)
                body_finish(b, dst);
            else if (eof && n == avail)
                return -1;
            return 0;
        }
        if (b->kind == HTTP1_BODY_CLOSE) {
            move_data(b, src, dst, room);
            if (eof && room == avail)
                body_finish(b, dst);
            return 0;
        }
        /* chunked */
        if (b->ch.state == HTTP1_CH_DATA) {
            size_t n = room < b->ch.remaining ? room : (size_t)b->ch.remaining;
            if (n == 0)
                return eof && avail == 0 ? -1 : 0;
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

/* ---- the request head sent upstream ---- */

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
void sess_build_upstream_head(struct session *s, const struct http1_msg *m)
{
    struct evbuffer *o = s->reqhead;
    const struct http1_header *xff = NULL, *host = m->host >= 0 ? &m->headers[m->host] : NULL;
    evbuffer_drain(o, evbuffer_get_length(o));
    evbuffer_add(o, m->method, m->method_len);
    evbuffer_add(o, m->slash_missing ? " /" : " ", m->slash_missing ? 2 : 1);
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
            h->id == HTTP1_H_X_REQUEST_ID || (m->authority && h->id == HTTP1_H_HOST) ||
            memchr(h->name, '_', h->name_len))
            continue; /* `_` names are dropped, as NGINX does (underscores_in_headers off):
                       * WSGI servers read X_Forwarded_Host as X-Forwarded-Host, and
                       * SCRIPT_NAME as the mount point, which would bypass our routing */
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

/* ---- upstream connection ---- */

static void up_timeouts(struct session *s, int reading)
{
    const struct backend_conf *bc = s->backend->conf;
    struct timeval rt, wt;
    sess_ms_tv(&rt, bc->read_timeout_ms);
    sess_ms_tv(&wt, bc->read_timeout_ms);
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
    s->resp_scan = (struct head_scan){0, 0};
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
            sess_flush_cli(s);
        }
        sess_cli_timeouts(s, sess_cfg_of(s)->proxy.client_body_timeout_ms);
        bufferevent_enable(s->cli, EV_READ);
        sess_cli_read_cb(s->cli, s); /* body bytes that came with the head */
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
    s->w->nupconns++;
    s->up = u;
    bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, s);
    bufferevent_setwatermark(u->bev, EV_WRITE, LOW_WM, 0);
    bufferevent_set_max_single_read(u->bev, MAX_IO);
    bufferevent_set_max_single_write(u->bev, MAX_IO);
    struct timeval ct;
    sess_ms_tv(&ct, b->conf->connect_timeout_ms);
    bufferevent_set_timeouts(u->bev, NULL, &ct);
    stats_add(&s->w->stats, STAT_upstream_connects, 1);
    if (bufferevent_socket_connect(u->bev, (struct sockaddr *)&b->addr, (int)b->addrlen) < 0) {
        int e = EVUTIL_SOCKET_ERROR();
        if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
            return -2; /* the backend's */
        /* out of descriptors here, not the backend's fault: an idle pooled connection
         * gives its descriptor, once */
        if (!worker_pool_evict(s->w) ||
            bufferevent_socket_connect(u->bev, (struct sockaddr *)&b->addr, (int)b->addrlen) < 0)
            return -3;
    }
    int one = 1;
    setsockopt(bufferevent_getfd(u->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void connect_failed(struct session *s);
static void upconn_failed(struct session *s, int rc);

void sess_connect_upstream(struct session *s)
{
    sess_pick_and_connect(s, 0);
}

void sess_pick_and_connect(struct session *s, int from_queue)
{
    int full = 0;
    struct queue *q = &s->w->px->queue;
    s->attempts++;
    /* newcomers queue behind waiters, and do not take a slot freed for one that waited
     * while its owner's thread wakes up: a freed slot goes to the queue's choice */
    struct backend *b = NULL;
    if (s->bypass)
        b = up_pick_bypass(&s->rt->up, s->last_failed, up_now_ms());
    else if (!from_queue && s->attempts == 1 && queue_busy(q))
        full = 1;
    else if (!s->tenant_slot && !(s->tenant_slot = admit_take(s->tenant)))
        full = 1; /* the tenant is at its max_inflight */
    else if (!s->route_slot && !(s->route_slot = sess_take_route(s)))
        full = 1; /* the route is at its max_inflight */
    else
        b = up_pick_slot(&s->rt->up, s->last_failed, up_now_ms(), &full);
    if (!b && full) {
        sess_release_tenant(s); /* waiting holds no tenant or route slot; no one to wake for it */
        s->attempts--;
        sess_wait_for_slot(s, from_queue);
        return;
    }
    if (!b) {
        sess_send_error(s, 502, "no-backend",
                        "no backend can take requests (none, or all draining)");
        return;
    }
    s->backend = b;
    if (!s->t_slot_us)
        s->t_slot_us = admit_now_ns() / 1000;
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
    if (rc < 0)
        upconn_failed(s, rc);
}

/* new_upconn() failed with rc: the backend's failure (-2: try another), or sluice's own. */
static void upconn_failed(struct session *s, int rc)
{
    if (rc == -2) {
        connect_failed(s);
        return;
    }
    sess_drop_upstream(s);
    sess_release_backend(s);
    if (rc == -3)
        sess_send_answer(s, 503, "no-descriptors", "sluice is out of file descriptors; "
                         "retry later", "Retry-After: 1\r\n");
    else
        sess_send_error(s, 503, "no-memory", "out of memory connecting to the backend");
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
    sess_drop_upstream(s);
    sess_release_backend(s);
    s->last_failed = b;
    if (s->attempts <= sess_cfg_of(s)->proxy.retries && s->rt->up.n > 1) {
        stats_add(&s->w->stats, STAT_retries, 1);
        sess_connect_upstream(s);
        return;
    }
    s->backend = NULL;
    sess_send_error(s, 502, "upstream-connect", "could not connect to a backend");
}

/* The pooled connection died before any response byte: try once more on a new one, only
 * where that is safe (idempotent and no body bytes sent). */
static int retry_fresh(struct session *s)
{
    if (!s->up->reused || s->resp_started || !http1_idempotent(s->meth) ||
        s->req.kind != HTTP1_BODY_NONE)
        return 0;
    struct backend *b = s->backend;
    sess_drop_upstream(s);
    stats_add(&s->w->stats, STAT_retries, 1);
    s->state = S_CONNECTING;
    int rc = new_upconn(s, b);
    if (rc < 0)
        upconn_failed(s, rc);
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
    sess_body_init(&s->resp, m->body, m->content_length, chunk_out);
}

static void finish_response(struct session *s, int upstream_reusable);

static void start_tunnel(struct session *s)
{
    s->state = S_TUNNEL;
    struct timeval t;
    sess_ms_tv(&t, s->backend->conf->read_timeout_ms);
    bufferevent_set_timeouts(s->cli, &t, NULL);
    bufferevent_set_timeouts(s->up->bev, &t, NULL);
    bufferevent_enable(s->cli, EV_READ);
    bufferevent_enable(s->up->bev, EV_READ);
    s->req.done = 1;
    sess_flush_cli(s); /* the 101 head */
    if (evbuffer_get_length(bufferevent_get_input(s->cli)) > 0) /* sent right after the head */
        sess_tunnel_pump(s->cli, s->up->bev, s->up->b->tls != NULL);
}

/* Parse the backend's response head; 1 when it is done, 0 to wait, -1 after an error. */
static int read_response_head(struct session *s)
{
    struct worker *w = s->w;
    struct evbuffer *in = bufferevent_get_input(s->up->bev);
    for (;;) {
        size_t take = sess_head_span(in, s->rt->lim.max_head + 2, &s->resp_scan);
        if (take == 0)
            return 0;
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)take);
        struct http1_msg m;
        int status = 0;
        int n = http1_parse_response(p, take, &s->rt->lim, w->hdrs, w->nhdrs, s->meth, &m,
                                     &status);
        if (n == HTTP1_INCOMPLETE)
            return 0;
        if (n == HTTP1_ERROR) {
            up_fail(s->backend, up_now_ms());
            sess_send_error(s, 502, "bad-response", "the backend sent a malformed response");
            return -1;
        }
        s->up_tainted |= m.unsent_body;
        if (m.status >= 100 && m.status < 200 && !(m.status == 101 && s->upgrade)) {
            evbuffer_drain(in, (size_t)n); /* interim answers: sluice sent its own 100 */
            s->resp_scan = (struct head_scan){0, 0};
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
    int rc = sess_body_pump(&s->resp, in, out, eof);
    s->bytes_out += evbuffer_get_length(out) - before;
    if (rc < 0) {
        sess_flush_cli(s); /* what came before the bad framing, then the cut */
        up_fail(s->backend, up_now_ms());
        sess_abort_session(s, STAT_upstream_truncated);
        return;
    }
    if (s->resp.done) {
        /* reused only when nothing beyond this response's framing can come on it */
        int extra = evbuffer_get_length(in) > 0;
        if (extra)
            stats_add(&s->w->stats, STAT_upstream_dirty, 1);
        int reusable = !eof && s->resp.kind != HTTP1_BODY_CLOSE && s->req.done && s->up_keep &&
                       !s->up_tainted && !extra;
        finish_response(s, reusable); /* gives the slot back, then writes the last bytes */
        return;
    }
    sess_flush_cli(s);
    if (evbuffer_get_length(out) > HIGH_WM)
        bufferevent_disable(s->up->bev, EV_READ);
}

/* The response is complete: pool or drop the upstream connection, log, and go on with the
 * next request on this client connection or close it. */
static void finish_response(struct session *s, int upstream_reusable)
{
    struct worker *w = s->w;
    if (s->up) {
        if (upstream_reusable && !w->draining) { /* worker_pool_put keeps only its generation's */
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
    sess_access_log(s);
    sess_release_tenant(s);
    sess_release_backend(s);
    /* Only now the client gets the response's last bytes: a client that sends its next
     * request the moment it has them (on another connection, another thread) must find the
     * slot free. Written before the release, one client in a closed loop was seen with two
     * requests in flight for a moment, and the adaptive limit grew on it (CI on 8110658:
     * test_an_app_limited_backend_is_not_given_a_limit_it_never_used, limit 4 for one
     * client). */
    if (!s->keep_alive || w->draining) {
        sess_close_after_flush(s);
        return;
    }
    sess_flush_cli(s);
    sess_next_request(s);
}

/* ---- callbacks ---- */

void sess_pump_request(struct session *s, int eof)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    struct evbuffer *out = bufferevent_get_output(s->up->bev);
    size_t before = evbuffer_get_length(in);
    int rc = sess_body_pump(&s->req, in, out, eof);
    s->bytes_in += before - evbuffer_get_length(in);
    if (sess_body_checks(s, rc, eof) < 0)
        return;
    flush_up(s);
    if (s->req.done) {
        sess_cli_timeouts(s, 0);
        up_timeouts(s, 1);
        return;
    }
    if (evbuffer_get_length(out) > HIGH_WM)
        bufferevent_disable(s->cli, EV_READ);
}

void sess_tunnel_pump(struct bufferevent *from, struct bufferevent *to, int to_tls)
{
    evbuffer_add_buffer(bufferevent_get_output(to), bufferevent_get_input(from));
    sess_flush_now(to, to_tls);
    if (evbuffer_get_length(bufferevent_get_output(to)) > HIGH_WM)
        bufferevent_disable(from, EV_READ);
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    sess_read_more(bev, s->up->b->tls != NULL);
    if (s->state == S_TUNNEL) {
        size_t n = evbuffer_get_length(bufferevent_get_input(bev));
        s->bytes_out += n;
        sess_tunnel_pump(bev, s->cli, s->tls);
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
        sess_drop_upstream(s);
        s->keep_alive = 0;
        sess_access_log(s);
        sess_release_tenant(s);
        sess_release_backend(s);
        sess_close_after_flush(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        up_fail(s->backend, up_now_ms());
        if (!s->resp_started)
            sess_send_error(s, 504, "upstream-timeout", "the backend did not answer in time");
        else
            sess_abort_session(s, STAT_upstream_truncated);
        return;
    }
    /* EOF or error */
    if (!s->resp_started) {
        if (read_response_head(s) != 0)
            goto eof_body;
        if (retry_fresh(s))
            return;
        up_fail(s->backend, up_now_ms());
        sess_send_error(s, 502, "upstream-closed", "the backend closed the connection without answering");
        return;
    }
eof_body:
    if (!s->resp_started || s->state != S_FORWARD)
        return;
    if ((what & BEV_EVENT_ERROR) && s->resp.kind == HTTP1_BODY_CLOSE && !s->resp.done) {
        /* a body that ends at close, ended by a reset: forward what came, then make the
         * client see a cut (no final chunk, no keep-alive), never a clean short answer */
        pump_response(s, 0);
        up_fail(s->backend, up_now_ms());
        sess_abort_session(s, STAT_upstream_truncated);
        return;
    }
    pump_response(s, 1);
}
