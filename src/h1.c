/* h1: the HTTP/1.1 codec. It reads request heads from the connection's input in order, one
 * request at a time (a pipelined one waits in the input, bounded by its read watermark),
 * parses and frames them (http1.c) and hands each to a request (request.h); the request
 * takes its body from the same input with the head's framing. Responses are written back
 * as HTTP/1.1, re-framed chunked for a body without a length, and the connection is kept
 * alive or closed. Work per wakeup is bounded: HEADS_PER_WAKEUP heads, then the rest on the
 * next loop turn. */
#include <sluice/h1.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>

#include <sluice/h2.h>
#include <sluice/headw.h>
#include <sluice/http1.h>
#include <sluice/log.h>
#include <sluice/request.h>
#include <sluice/runtime.h>
#include <sluice/stats.h>
#include <sluice/worker.h>

/* Pipelined requests served per wakeup of one connection (answered by sluice, or started):
 * enough to keep a pipelining client fast, few enough (a few tens of microseconds) that the
 * other connections of the thread are not held up by a flood. */
#define HEADS_PER_WAKEUP 16

static const struct config *cfg_of(const struct conn *c)
{
    return c->rt->cfg;
}

static struct evbuffer *input_of(const struct conn *c)
{
    return sock_in(&c->sk);
}

static struct evbuffer *output_of(const struct conn *c)
{
    return sock_out(&c->sk);
}

/* ---- reading heads ---- */

/* The request whose head is arriving (made on its first byte, with the header deadline). */
static struct request *current(struct conn *c)
{
    if (c->req)
        return c->req;
    struct request *r = req_new(c);
    if (!r)
        return NULL;
    r->src = input_of(c);
    c->req = r;
    c->nheads++;
    r->scan = (struct head_scan){0, 0};
    conn_timer_ms(c, cfg_of(c)->proxy.client_header_timeout_ms);
    return r;
}

static const char *parse_error_code(int status)
{
    return status == 400 ? "bad-request" : status == 414 ? "uri-too-long"
           : status == 431 ? "header-too-large" : "not-implemented";
}

/* Parse the head at the front of the input and hand it to its request. */
static void read_head(struct conn *c)
{
    struct evbuffer *in = input_of(c);
    if (evbuffer_get_length(in) == 0)
        return;
    if (c->nheads == 0 && !c->tls && cfg_of(c)->proxy.h2c) {
        int pre = h2_preface(in); /* HTTP/2 with prior knowledge */
        if (pre < 0)
            return; /* its first bytes: wait for the rest */
        if (pre > 0) {
            if (h2_start(c) < 0)
                conn_free(c);
            return;
        }
    }
    struct request *r = current(c);
    if (!r) {
        conn_free(c); /* out of memory */
        return;
    }
    size_t take = evbuf_head_span(in, r->rt->lim.max_head + 2, &r->scan);
    if (take == 0)
        return;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)take);
    struct http1_msg m;
    int status = 0;
    struct worker *w = c->w;
    int n = http1_parse_request(p, take, &r->rt->lim, w->hdrs, w->nhdrs, &m, &status);
    if (n == HTTP1_INCOMPLETE)
        return;
    stats_add(&w->stats, STAT_requests, 1);
    conn_timer_off(c); /* the header deadline was met */
    r->scan = (struct head_scan){0, 0};
    if (n == HTTP1_ERROR) {
        r->bytes_in = take;
        req_error(r, status, parse_error_code(status),
                  "the request is malformed or over a limit and was not forwarded");
        return;
    }
    r->minor = m.minor;
    r->keep_alive = m.keep_alive && !w->draining && cfg_of(c)->proxy.keepalive_timeout_ms;
    /* RFC 9110 10.1.1: a server MUST ignore 100-continue from an HTTP/1.0 client */
    r->expect = m.expect_continue && m.body != HTTP1_BODY_NONE && m.minor == 1;
    req_head(r, &m, (size_t)n);
}

/* Serve the requests waiting in the input, in order: parse each and start it, and go on to
 * the next while sluice answers them itself (refusals, errors, redirects) without waiting.
 * A loop, never a recursion, and at most HEADS_PER_WAKEUP heads per wakeup: the rest are
 * served on the next loop turn (the timer, armed at 0), after the other connections. */
static void serve_heads(struct conn *c)
{
    int budget = HEADS_PER_WAKEUP;
    c->resume = 0;
    c->busy++;
    do {
        c->again = 0;
        read_head(c);
    } while (c->again && !c->dead && --budget > 0);
    c->busy--;
    if (c->dead) {
        if (!c->busy)
            conn_free(c);
        return;
    }
    if (c->again) {
        c->again = 0;
        c->resume = 1;
        conn_timer_ms(c, 0);
    }
}

/* ---- from the connection ---- */

static void h1_read(struct conn *c)
{
    struct request *r = c->req;
    if (!r || r->state == RQ_HEAD)
        serve_heads(c);
    else
        req_client_data(r); /* its body, or its tunnel; otherwise pipelined bytes wait */
}

static void h1_drained(struct conn *c)
{
    struct request *r = c->req;
    if (r && r->state != RQ_HEAD) {
        req_sink_drained(r);
        return;
    }
    if (!(sock_enabled(&c->sk) & EV_READ)) { /* paused after a large response */
        sock_enable(&c->sk, EV_READ);
        if (evbuffer_get_length(input_of(c)) > 0)
            serve_heads(c);
    }
}

static void h1_event(struct conn *c, short what)
{
    struct request *r = c->req;
    if (what & SOCK_TIMEOUT) {
        if (r && (r->state == RQ_BODY || r->state == RQ_SENDING) && !r->req.done &&
            !r->resp_started) {
            req_error(r, 408, "body-timeout", "the request body did not arrive in time");
            return;
        }
        if (r && r->state != RQ_HEAD) {
            req_abort(r, STAT_client_aborts);
            return;
        }
        stats_add(&c->w->stats, STAT_client_aborts, 1); /* it stopped taking what we sent */
        conn_free(c);
        return;
    }
    /* A client that ends its side once the response has begun (a download read to the
     * end after a half-close) is still sent the rest over plain TCP. Before that, EOF is a
     * client that gave up: 499, its slot and queue place freed at once, as NGINX does
     * (proxy_ignore_client_abort off). Not under TLS: the TLS layer stops
     * writing (and its write timeout) on the peer's EOF, so nothing more could leave. */
    if ((what & SOCK_EOF) && !c->tls && r && r->state == RQ_STREAMING && r->req.done &&
        !(what & SOCK_ERROR)) {
        r->cli_eof = 1;
        r->keep_alive = 0;
        return;
    }
    if (!r) {
        if (c->tls && c->nreq == 0 && (what & SOCK_ERROR)) {
            unsigned long e = c->sk.tls_err;
            stats_add(&c->w->stats, STAT_tls_handshake_errors, 1);
            log_debug("tls", "handshake failed client=%s reason=%s", c->peer,
                      e ? ERR_reason_error_string(e) : "closed");
        }
        conn_free(c); /* idle connection closed by the client: nothing lost */
        return;
    }
    if (r->state == RQ_HEAD) {
        conn_free(c); /* it closed in the middle of a head: nothing was asked */
        return;
    }
    req_abort(r, STAT_client_aborts);
}

/* Pipelined heads to serve, the header deadline, or the keep-alive idle limit. */
static void h1_timer(struct conn *c)
{
    if (c->resume) { /* pipelined requests left for this loop turn */
        serve_heads(c);
        return;
    }
    if (!c->req && evbuffer_get_length(input_of(c)) == 0) {
        conn_linger(c); /* idle keep-alive: close quietly, and without a reset */
        return;
    }
    struct request *r = current(c);
    if (!r) {
        conn_free(c);
        return;
    }
    req_error(r, 408, "header-timeout", "the request head did not arrive in time");
}

static void h1_drain(struct conn *c)
{
    int pending = 0; /* a request already in the socket is answered, not reset */
    if (!c->req && evbuffer_get_length(input_of(c)) == 0 &&
        evbuffer_get_length(output_of(c)) == 0 &&
        ioctl(sock_fd(&c->sk), FIONREAD, &pending) == 0 && pending == 0) {
        /* FIN, then read and drop: a request sent just now meets an orderly close (which
         * clients retry) rather than a reset */
        conn_timer_off(c);
        conn_linger(c);
    }
}

static void h1_free(struct conn *c)
{
    if (c->req) {
        req_free(c->req);
        c->req = NULL;
    }
}

/* ---- from the request ---- */

/* The framing fields of a response head (not a tunnel's). */
static void framing_fields(struct request *r, const struct http1_msg *m, int chunk_out,
                           struct headw *o)
{
    if (m->body == HTTP1_BODY_LENGTH) {
        headw_add(o, "Content-Length: ", 16);
        headw_u64(o, m->content_length);
        headw_add(o, "\r\n", 2);
    } else if (chunk_out) {
        headw_add(o, "Transfer-Encoding: chunked\r\n", 28);
    } else if (m->body == HTTP1_BODY_NONE && m->status != 204 && m->status != 304) {
        const struct http1_header *cl = http1_find(m, HTTP1_H_CONTENT_LENGTH);
        if (cl) /* a HEAD answer states the length of what GET would send */
            headw_field(o, "Content-Length", 14, cl->value, cl->value_len);
    }
    if (!r->keep_alive)
        headw_add(o, "Connection: close\r\n", 19);
    else if (r->minor == 0)
        headw_add(o, "Connection: keep-alive\r\n", 24);
}

static void status_line(struct headw *o, int status, const char *reason, size_t rlen)
{
    headw_add(o, "HTTP/1.1 ", 9);
    headw_u64(o, (uint64_t)status);
    headw_add(o, " ", 1);
    headw_add(o, reason, rlen);
    headw_add(o, "\r\n", 2);
}

static void rid_field(struct headw *o, const struct request *r)
{
    headw_field(o, "X-Request-ID", 12, r->rid, strlen(r->rid));
}

static int h1_resp_head(struct request *r, const struct http1_msg *m)
{
    struct headw o;
    headw_init(&o, output_of(r->c));
    int tunnel = m->status == 101 && r->upgrade;
    int chunk_out = 0;
    if (m->body == HTTP1_BODY_CHUNKED || m->body == HTTP1_BODY_CLOSE) {
        chunk_out = r->minor == 1;
        if (!chunk_out)
            r->keep_alive = 0;
    }
    if (!r->req.done || r->cli_eof)
        r->keep_alive = 0; /* the rest of the request body cannot be skipped safely */
    status_line(&o, m->status, m->reason, m->reason_len);
    int has_rid = 0;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h->hop)
            continue;
        has_rid |= h->id == HTTP1_H_X_REQUEST_ID;
        headw_field(&o, h->name, h->name_len, h->value, h->value_len);
    }
    if (!has_rid)
        rid_field(&o, r);
    if (tunnel) {
        const struct http1_header *u = http1_find(m, HTTP1_H_UPGRADE);
        headw_add(&o, "Connection: upgrade\r\n", 21);
        if (u)
            headw_field(&o, "Upgrade", 7, u->value, u->value_len);
    } else {
        framing_fields(r, m, chunk_out, &o);
    }
    headw_add(&o, "\r\n", 2);
    r->bytes_out += headw_end(&o);
    return chunk_out;
}

static void h1_answer(struct request *r, int status, const char *reason, const char *code,
                      const char *extra, const char *body, size_t blen)
{
    struct headw o;
    headw_init(&o, output_of(r->c));
    status_line(&o, status, reason, strlen(reason));
    headw_add(&o, "Content-Type: text/plain\r\nContent-Length: ", 42);
    headw_u64(&o, blen);
    headw_add(&o, "\r\n", 2);
    if (!r->keep_alive)
        headw_add(&o, "Connection: close\r\n", 19);
    headw_field(&o, "X-Sluice-Error", 14, code, strlen(code));
    if (r->rid[0])
        rid_field(&o, r);
    if (extra)
        headw_str(&o, extra);
    headw_add(&o, "\r\n", 2);
    if (r->meth != HTTP1_M_HEAD)
        headw_add(&o, body, blen);
    r->bytes_out += headw_end(&o);
}

static struct evbuffer *h1_sink(struct request *r)
{
    return output_of(r->c);
}

static void h1_flush(struct request *r)
{
    conn_flush(r->c);
}

static void h1_body_want(struct request *r, enum body_want want)
{
    struct conn *c = r->c;
    switch (want) {
    case BODY_WANT:
        if (r->expect) {
            evbuffer_add(output_of(c), "HTTP/1.1 100 Continue\r\n\r\n", 25);
            r->expect = 0;
            conn_flush(c);
        }
        conn_timeouts(c, cfg_of(c)->proxy.client_body_timeout_ms);
        sock_enable(&c->sk, EV_READ);
        return;
    case BODY_PAUSE:
        sock_disable(&c->sk, EV_READ);
        return;
    case BODY_DONE:
        conn_timeouts(c, 0); /* reading stays on: a close is seen, the next head waits */
        sock_enable(&c->sk, EV_READ);
        return;
    }
}

/* r is done: keep the connection for the next request (waiting for it, or serving the one
 * already pipelined) or close it. */
static void h1_end(struct request *r)
{
    struct conn *c = r->c;
    int keep = r->keep_alive && !c->w->draining;
    c->req = NULL;
    req_free(r);
    if (!keep) {
        conn_close_after_flush(c);
        return;
    }
    conn_flush(c);
    conn_timeouts(c, 0);
    conn_timer_ms(c, cfg_of(c)->proxy.keepalive_timeout_ms);
    if (evbuffer_get_length(output_of(c)) > HIGH_WM) {
        sock_disable(&c->sk, EV_READ); /* h1_drained reads again once it is taken */
        return;
    }
    sock_enable(&c->sk, EV_READ);
    if (evbuffer_get_length(input_of(c)) == 0)
        return;
    if (c->busy)
        c->again = 1; /* serve_heads() below on the stack goes on with it */
    else
        serve_heads(c); /* pipelined request already here */
}

static void h1_abort(struct request *r)
{
    conn_free(r->c); /* all a client can be told once its response began: a cut */
}

const struct codec h1_codec = {
    .proto = "HTTP/1.1",
    .read = h1_read,
    .drained = h1_drained,
    .event = h1_event,
    .timer = h1_timer,
    .drain = h1_drain,
    .free = h1_free,
    .resp_head = h1_resp_head,
    .answer = h1_answer,
    .sink = h1_sink,
    .flush = h1_flush,
    .body_want = h1_body_want,
    .end = h1_end,
    .abort = h1_abort,
};
