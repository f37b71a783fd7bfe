/* request_upstream: a request's backend side. It picks a backend and connects (or reuses a
 * pooled connection; a failed connect is retried once elsewhere), sends the request head
 * and streams the body up, reads the response head and streams the body back through the
 * codec, and runs 101 tunnels (HTTP/1.1). It does not read client heads, answer for itself
 * or decide admission (h1.c, request_answer.c, request_admit.c). */
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
#include <event2/event.h>
#include <openssl/err.h>

#include <sluice/headw.h>
#include <sluice/http1.h>
#include <sluice/log.h>
#include <sluice/queue.h>
#include <sluice/runtime.h>
#include <sluice/request-int.h>
#include <sluice/upconn.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

static void up_read_cb(struct sock *sk, void *arg);
static void up_write_cb(struct sock *sk, void *arg);
static void up_event_cb(struct sock *sk, short what, void *arg);

static void flush_up(struct request *r)
{
    sock_flush(&r->up->sk);
}

/* ---- the request head sent upstream ---- */

/* "ip:port" (or "[v6]:port") the client connected to. */
static void local_address(struct request *r, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "localhost";
    int port = 0;
    if (getsockname(sock_fd(&r->c->sk), (struct sockaddr *)&ss, &sl) == 0) {
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

/* Serialize the request head we send upstream into r->head_out. */
int ups_build_head(struct request *r, const struct http1_msg *m)
{
    if (!r->head_out && !(r->head_out = evbuffer_new()))
        return -1;
    evbuffer_drain(r->head_out, evbuffer_get_length(r->head_out));
    struct headw o;
    headw_init(&o, r->head_out);
    const struct http1_header *xff = NULL, *host = m->host >= 0 ? &m->headers[m->host] : NULL;
    headw_add(&o, m->method, m->method_len);
    headw_add(&o, m->slash_missing ? " /" : " ", m->slash_missing ? 2 : 1);
    headw_add(&o, m->target, m->target_len);
    headw_add(&o, " HTTP/1.1\r\n", 11);
    if (m->authority) { /* absolute-form: its authority replaces Host (RFC 9112 3.2.2) */
        headw_field(&o, "Host", 4, m->authority, m->authority_len);
    } else if (!host) {
        /* HTTP/1.0 may omit Host; the HTTP/1.1 request we send must not (RFC 9112 3.2):
         * name the address the client connected to */
        char addr[80];
        local_address(r, addr, sizeof addr);
        headw_field(&o, "Host", 4, addr, strlen(addr));
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
        headw_field(&o, h->name, h->name_len, h->value, h->value_len);
    }
    headw_add(&o, "X-Forwarded-For: ", 17);
    if (xff) {
        for (size_t i = 0; i < m->num_headers; i++)
            if (m->headers[i].id == HTTP1_H_X_FORWARDED_FOR && m->headers[i].value_len) {
                headw_add(&o, m->headers[i].value, m->headers[i].value_len);
                headw_add(&o, ", ", 2);
            }
    }
    headw_str(&o, r->c->peer);
    headw_add(&o, "\r\nX-Forwarded-Proto: ", 21);
    headw_str(&o, r->c->tls ? "https" : "http");
    headw_add(&o, "\r\n", 2);
    const char *fh = m->authority ? m->authority : host ? host->value : NULL;
    size_t fhl = m->authority ? m->authority_len : host ? host->value_len : 0;
    if (fhl)
        headw_field(&o, "X-Forwarded-Host", 16, fh, fhl);
    headw_field(&o, "X-Request-ID", 12, r->rid, strlen(r->rid));
    if (r->body_kind == HTTP1_BODY_LENGTH) {
        headw_add(&o, "Content-Length: ", 16);
        headw_u64(&o, r->body_len);
        headw_add(&o, "\r\n", 2);
    } else if (r->body_chunk_out) {
        headw_add(&o, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (m->upgrade) {
        const struct http1_header *u = http1_find(m, HTTP1_H_UPGRADE);
        headw_add(&o, "Connection: upgrade\r\nUpgrade: ", 30);
        headw_add(&o, u->value, u->value_len);
        headw_add(&o, "\r\n", 2);
    }
    headw_add(&o, "\r\n", 2);
    headw_end(&o);
    return 0;
}

/* ---- upstream connection ---- */

static void up_timeouts(struct request *r, int reading)
{
    const struct backend_conf *bc = r->backend->conf;
    struct timeval rt, wt;
    ms_tv(&rt, bc->read_timeout_ms);
    ms_tv(&wt, bc->read_timeout_ms);
    sock_set_timeouts(&r->up->sk, reading ? &rt : NULL, &wt);
}

static void send_request_head(struct request *r)
{
    struct evbuffer *out = sock_out(&r->up->sk);
    size_t hl = evbuffer_get_length(r->head_out);
    evbuffer_add(out, evbuffer_pullup(r->head_out, -1), hl);
    if (r->bodybuf)
        evbuffer_add_buffer(out, r->bodybuf);
    req_advance(r, r->req.done ? RQ_WAITING : RQ_SENDING);
    r->scan = (struct head_scan){0, 0};
    r->t_up_start = up_now_ms();
    r->t_sent_us = admit_now_ns() / 1000;
    r->inflight_at_send = up_inflight(r->backend);
    up_timeouts(r, r->req.done);
    sock_enable(&r->up->sk, EV_READ);
    flush_up(r);
    if (!r->req.done) {
        req_codec(r)->body_want(r, BODY_WANT);
        ups_pump_request(r); /* body bytes that came with the head */
    }
}

static int new_upconn(struct request *r, struct backend *b)
{
    struct upconn *u = calloc(1, sizeof *u);
    if (!u)
        return -1;
    u->b = b;
    u->w = r->w;
    if (up_sock(b, r->w->base, &u->sk) < 0) {
        free(u);
        return -1;
    }
    r->w->nupconns++;
    r->up = u;
    sock_setcb(&u->sk, up_read_cb, up_write_cb, up_event_cb, r);
    struct timeval ct;
    ms_tv(&ct, b->conf->connect_timeout_ms);
    sock_set_timeouts(&u->sk, NULL, &ct);
    stats_add(&r->w->stats, STAT_upstream_connects, 1);
    const struct sockaddr *sa = (const struct sockaddr *)&b->addr;
    if (sock_connect(&u->sk, sa, b->addrlen) < 0) {
        int e = EVUTIL_SOCKET_ERROR();
        if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
            return -2; /* the backend's */
        /* out of descriptors here, not the backend's fault: an idle pooled connection
         * gives its descriptor, once */
        if (!worker_pool_evict(r->w) ||
            sock_connect(&u->sk, sa, b->addrlen) < 0)
            return -3;
    }
    int one = 1;
    setsockopt(sock_fd(&u->sk), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void connect_failed(struct request *r);
static void upconn_failed(struct request *r, int rc);

void ups_pick_and_connect(struct request *r, int from_queue)
{
    int full = 0;
    struct queue *q = &r->w->px->queue;
    r->attempts++;
    /* newcomers queue behind waiters, and do not take a slot freed for one that waited
     * while its owner's thread wakes up: a freed slot goes to the queue's choice */
    struct backend *b = NULL;
    if (r->bypass)
        b = up_pick_bypass(&r->rt->up, r->last_failed, up_now_ms());
    else if (!from_queue && r->attempts == 1 && queue_busy(q))
        full = 1;
    else if (!adm_take_slots(r))
        full = 1; /* its tenant or its route is at its max_inflight */
    else
        b = up_pick_slot(&r->rt->up, r->last_failed, up_now_ms(), &full);
    if (!b && full) {
        adm_release_slots(r); /* waiting holds no tenant or route slot; no one to wake for it */
        r->attempts--;
        adm_wait_for_slot(r, from_queue);
        return;
    }
    if (!b) {
        req_error(r, 502, "no-backend", "no backend can take requests (none, or all draining)");
        return;
    }
    r->backend = b;
    if (!r->t_slot_us)
        r->t_slot_us = admit_now_ns() / 1000;
    struct upconn *u = worker_pool_get(r->w, b);
    if (u) {
        u->reused = 1;
        r->up = u;
        sock_setcb(&u->sk, up_read_cb, up_write_cb, up_event_cb, r);
        stats_add(&r->w->stats, STAT_upstream_reuses, 1);
        send_request_head(r);
        return;
    }
    int rc = new_upconn(r, b);
    if (rc < 0)
        upconn_failed(r, rc);
}

/* new_upconn() failed with rc: the backend's failure (-2: try another), or sluice's own. */
static void upconn_failed(struct request *r, int rc)
{
    if (rc == -2) {
        connect_failed(r);
        return;
    }
    ups_drop(r);
    adm_release_backend(r);
    if (rc == -3)
        req_answer(r, 503, "no-descriptors", "sluice is out of file descriptors; retry later",
                   "Retry-After: 1\r\n");
    else
        req_error(r, 503, "no-memory", "out of memory connecting to the backend");
}

/* A connect to r->backend failed or timed out: mark it and try another once. */
static void connect_failed(struct request *r)
{
    struct backend *b = r->backend;
    up_fail(b, up_now_ms());
    unsigned long tls_err = r->up && b->tls ? r->up->sk.tls_err : 0;
    int sys_err = EVUTIL_SOCKET_ERROR();
    log_warn("upstream", "connect failed backend=%s address=%s attempt=%d reason=\"%s\" rid=%s",
             b->conf->name, b->conf->address, r->attempts,
             tls_err ? ERR_reason_error_string(tls_err) : strerror(sys_err), r->rid);
    ups_drop(r);
    adm_release_backend(r);
    r->last_failed = b;
    if (r->attempts <= req_cfg(r)->proxy.retries && r->rt->up.n > 1) {
        stats_add(&r->w->stats, STAT_retries, 1);
        req_advance(r, RQ_CONNECTING);
        ups_pick_and_connect(r, 0);
        return;
    }
    req_error(r, 502, "upstream-connect", "could not connect to a backend");
}

/* The pooled connection died before any response byte: try once more on a new one, only
 * where that is safe (idempotent and no body bytes sent). */
static int retry_fresh(struct request *r)
{
    if (!r->up->reused || r->resp_started || !http1_idempotent(r->meth) ||
        r->req.kind != HTTP1_BODY_NONE)
        return 0;
    struct backend *b = r->backend;
    ups_drop(r);
    stats_add(&r->w->stats, STAT_retries, 1);
    req_advance(r, RQ_CONNECTING);
    int rc = new_upconn(r, b);
    if (rc < 0)
        upconn_failed(r, rc);
    return 1;
}

/* ---- response ---- */

/* The backend's response head goes to the client (through the codec). */
static void start_response(struct request *r, const struct http1_msg *m)
{
    r->status = m->status;
    r->up_keep = m->keep_alive;
    int chunk_out = req_codec(r)->resp_head(r, m);
    r->resp_started = 1;
    body_init(&r->resp, m->body, m->content_length, chunk_out);
}

static void finish_response(struct request *r, int upstream_reusable);

/* TUNNEL (HTTP/1.1 only: an HTTP/2 request cannot ask for an upgrade): move what from has
 * read to to, stopping from over the high watermark. */
static void tunnel_pump(struct sock *from, struct sock *to)
{
    evbuffer_add_buffer(sock_out(to), sock_in(from));
    sock_flush(to);
    if (evbuffer_get_length(sock_out(to)) > HIGH_WM)
        sock_disable(from, EV_READ);
}

void ups_tunnel_client(struct request *r)
{
    r->bytes_in += evbuffer_get_length(sock_in(&r->c->sk));
    tunnel_pump(&r->c->sk, &r->up->sk);
}

static void start_tunnel(struct request *r)
{
    struct sock *cli = &r->c->sk;
    req_advance(r, RQ_TUNNEL);
    struct timeval t;
    ms_tv(&t, r->backend->conf->read_timeout_ms);
    sock_set_timeouts(cli, &t, NULL);
    sock_set_timeouts(&r->up->sk, &t, NULL);
    sock_enable(cli, EV_READ);
    sock_enable(&r->up->sk, EV_READ);
    r->req.done = 1;
    req_codec(r)->flush(r); /* the 101 head */
    if (evbuffer_get_length(sock_in(cli)) > 0) /* sent right after the head */
        ups_tunnel_client(r);
}

/* Parse the backend's response head; 1 when it is done, 0 to wait, -1 after an error (r
 * was answered and is gone). */
static int read_response_head(struct request *r)
{
    struct worker *w = r->w;
    struct evbuffer *in = sock_in(&r->up->sk);
    for (;;) {
        size_t take = evbuf_head_span(in, r->rt->lim.max_head + 2, &r->scan);
        if (take == 0)
            return 0;
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)take);
        struct http1_msg m;
        int status = 0;
        int n = http1_parse_response(p, take, &r->rt->lim, w->hdrs, w->nhdrs, r->meth, &m,
                                     &status);
        if (n == HTTP1_INCOMPLETE)
            return 0;
        if (n == HTTP1_ERROR) {
            up_fail(r->backend, up_now_ms());
            req_error(r, 502, "bad-response", "the backend sent a malformed response");
            return -1;
        }
        r->up_tainted |= m.unsent_body;
        if (m.status >= 100 && m.status < 200 && !(m.status == 101 && r->upgrade)) {
            evbuffer_drain(in, (size_t)n); /* interim answers: sluice sent its own 100 */
            r->scan = (struct head_scan){0, 0};
            continue;
        }
        r->t_up_end = up_now_ms();
        start_response(r, &m);
        evbuffer_drain(in, (size_t)n);
        if (m.status == 101 && r->upgrade)
            start_tunnel(r);
        else
            req_advance(r, RQ_STREAMING);
        return 1;
    }
}

/* Move response body bytes to the client; finish when complete. */
static void pump_response(struct request *r, int eof)
{
    const struct codec *cd = req_codec(r);
    struct evbuffer *in = sock_in(&r->up->sk);
    struct evbuffer *out = cd->sink(r);
    size_t before = evbuffer_get_length(out);
    int rc = body_pump(&r->resp, in, out, eof);
    r->bytes_out += evbuffer_get_length(out) - before;
    if (rc < 0) {
        cd->flush(r); /* what came before the bad framing, then the cut */
        up_fail(r->backend, up_now_ms());
        req_abort(r, STAT_upstream_truncated);
        return;
    }
    if (r->resp.done) {
        /* reused only when nothing beyond this response's framing can come on it */
        int extra = evbuffer_get_length(in) > 0;
        if (extra)
            stats_add(&r->w->stats, STAT_upstream_dirty, 1);
        int reusable = !eof && r->resp.kind != HTTP1_BODY_CLOSE && r->req.done && r->up_keep &&
                       !r->up_tainted && !extra;
        finish_response(r, reusable); /* gives the slot back, then writes the last bytes */
        return;
    }
    cd->flush(r);
    if (evbuffer_get_length(out) > HIGH_WM)
        sock_disable(&r->up->sk, EV_READ); /* ups_sink_drained reads again */
}

/* The response is complete: pool or drop the backend connection, then end the request.
 * Its slots are given back before the client gets the response's last bytes (req_finish,
 * then the codec's end): a client that sends its next request the moment it has them (on
 * another connection, another thread) must find the slot free. Written before the release,
 * one client in a closed loop was seen with two requests in flight for a moment, and the
 * adaptive limit grew on it (CI on 8110658: test_an_app_limited_backend_is_not_given_a_
 * limit_it_never_used, limit 4 for one client). */
static void finish_response(struct request *r, int upstream_reusable)
{
    struct worker *w = r->w;
    if (r->up) {
        if (upstream_reusable && !w->draining) { /* worker_pool_put keeps only its generation's */
            sock_setcb(&r->up->sk, NULL, NULL, NULL, NULL);
            worker_pool_put(w, r->up);
        } else {
            upconn_free(r->up);
        }
        r->up = NULL;
    }
    up_ok(r->backend);
    if (!r->upgrade && r->t_sent_us)
        up_sample(r->backend, admit_now_ns() / 1000 - r->t_sent_us, r->inflight_at_send);
    stats_add(&w->stats, STAT_responses, 1);
    req_finish(r);
}

/* ---- the request body, upstream ---- */

void ups_pump_request(struct request *r)
{
    struct evbuffer *out = sock_out(&r->up->sk);
    size_t before = evbuffer_get_length(r->src);
    int rc = body_pump(&r->req, r->src, out, r->src_eof);
    r->bytes_in += before - evbuffer_get_length(r->src);
    if (req_body_checks(r, rc, r->src_eof) < 0)
        return;
    flush_up(r);
    if (r->req.done) {
        req_codec(r)->body_want(r, BODY_DONE);
        up_timeouts(r, 1);
        if (r->state == RQ_SENDING)
            req_advance(r, RQ_WAITING);
        return;
    }
    if (evbuffer_get_length(out) > HIGH_WM)
        req_codec(r)->body_want(r, BODY_PAUSE); /* up_write_cb wants it again */
}

void ups_sink_drained(struct request *r)
{
    if ((r->state == RQ_STREAMING && r->up && !r->resp.done) || r->state == RQ_TUNNEL)
        sock_enable(&r->up->sk, EV_READ);
}

void upconn_free(struct upconn *u)
{
    struct worker *w = u->w;
    sock_close(&u->sk);
    free(u);
    w->nupconns--;
    worker_fd_check(w);
}

void ups_drop(struct request *r)
{
    if (r->up) {
        upconn_free(r->up);
        r->up = NULL;
    }
}

/* ---- callbacks ---- */

static void up_read_cb(struct sock *sk, void *arg)
{
    struct request *r = arg;
    if (r->state == RQ_TUNNEL) {
        r->bytes_out += evbuffer_get_length(sock_in(sk));
        tunnel_pump(sk, &r->c->sk);
        return;
    }
    if (r->state != RQ_SENDING && r->state != RQ_WAITING && r->state != RQ_STREAMING)
        return;
    if (!r->resp_started) {
        int h = read_response_head(r);
        if (h <= 0)
            return; /* more to come, or r was answered */
        if (r->state == RQ_TUNNEL) {
            up_read_cb(sk, arg); /* what came after the 101 head */
            return;
        }
    }
    pump_response(r, 0);
}

static void up_write_cb(struct sock *sk, void *arg)
{
    struct request *r = arg;
    (void)sk;
    if ((r->state == RQ_SENDING || r->state == RQ_STREAMING) && !r->req.done)
        req_codec(r)->body_want(r, BODY_WANT);
    else if (r->state == RQ_TUNNEL)
        sock_enable(&r->c->sk, EV_READ);
}

/* The tunnel's backend closed: what it sent goes on, then the client connection closes. */
static void end_tunnel(struct request *r)
{
    evbuffer_add_buffer(req_codec(r)->sink(r), sock_in(&r->up->sk));
    ups_drop(r);
    r->keep_alive = 0;
    req_finish(r);
}

/* The backend closed, failed or timed out. */
static void up_event_cb(struct sock *sk, short what, void *arg)
{
    struct request *r = arg;
    (void)sk;
    if (what & SOCK_CONNECTED) {
        send_request_head(r);
        return;
    }
    if (r->state == RQ_CONNECTING) {
        connect_failed(r);
        return;
    }
    if (r->state == RQ_TUNNEL) {
        end_tunnel(r);
        return;
    }
    if (what & SOCK_TIMEOUT) {
        up_fail(r->backend, up_now_ms());
        if (!r->resp_started)
            req_error(r, 504, "upstream-timeout", "the backend did not answer in time");
        else
            req_abort(r, STAT_upstream_truncated);
        return;
    }
    /* EOF or error */
    if (!r->resp_started) {
        int h = read_response_head(r);
        if (h < 0)
            return; /* answered */
        if (h == 0) {
            if (retry_fresh(r))
                return;
            up_fail(r->backend, up_now_ms());
            req_error(r, 502, "upstream-closed",
                      "the backend closed the connection without answering");
            return;
        }
    }
    if (r->state != RQ_STREAMING)
        return;
    if ((what & SOCK_ERROR) && r->resp.kind == HTTP1_BODY_CLOSE && !r->resp.done) {
        /* a body that ends at close, ended by a reset: forward what came, then make the
         * client see a cut (no final chunk, no keep-alive), never a clean short answer */
        pump_response(r, 0);
        up_fail(r->backend, up_now_ms());
        req_abort(r, STAT_upstream_truncated);
        return;
    }
    pump_response(r, 1);
}
