/* h2: the HTTP/2 codec, on Debian's libnghttp2 (RFC 9113). nghttp2 parses and frames,
 * checks the protocol and HTTP messaging (pseudo-headers, connection-specific fields,
 * content-length against DATA), enforces flow control and the limits against known floods
 * (rapid reset, CONTINUATION, SETTINGS and PING floods). This file maps streams to requests:
 * each stream's header list becomes an HTTP/1.1 head that goes through the same parser and
 * checks as one read from the wire (http1.c), then the same request path (request.h) as an
 * HTTP/1.1 request, to HTTP/1.1 backends. Refusals are answers on their stream.
 *
 * Ownership: a request lives from its HEADERS to its stream's close. Its state on the
 * stream (struct h2s: the response body waiting for the window, its headers being
 * collected) is this file's. A request that is DONE stays until nghttp2 has sent the end
 * of its stream. nghttp2 is never re-entered: what a request asks (flush, end, abort) is
 * submitted and sent from this connection's own event, never from under a request.
 *
 * Flow control both ways: a request body is read into its stream's buffer only as far as
 * the stream's window (64 KiB) and the window is given back (WINDOW_UPDATE) only as its
 * bytes move on to the backend; a response body waits in its stream's buffer for the
 * client's window, and the backend is read again only once that buffer drained below
 * LOW_WM (bevio.h). */
#include <sluice/h2.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include <sluice/http1.h>
#include <sluice/log.h>
#include <sluice/request.h>
#include <sluice/runtime.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

#define H2_TICK_MS 1000          /* the connection's timer: deadlines are checked this often */
#define H2_CONN_WINDOW (1 << 20) /* the connection's receive window (streams: 64 KiB) */
#define H2_SLICE 16384           /* input given to nghttp2 at once */
#define STREAMS_PER_WAKEUP 32    /* new streams started per wakeup; the rest next turn */
#define MAX_FIELDS 16            /* fields of sluice's own answers */

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct h2 {
    nghttp2_session *ss;
    struct event *tick;           /* owned: go on (input left, frames to send) next turn */
    struct request *reqs;         /* its streams' requests (r->next) */
    int nstreams;
    int ever;                     /* a stream was ever opened */
    int started;                  /* new streams this wakeup */
    int goaway;                   /* GOAWAY submitted: no new streams; close when none */
    int peer_goaway;              /* the client sent GOAWAY (it is leaving) */
    int dying;                    /* the connection is being freed */
    uint64_t last_active_ms;      /* a stream was open, or a frame came */
    uint64_t last_sent_ms;        /* bytes were handed to the socket */
};

/* A request's state on its stream. */
struct h2s {
    struct evbuffer *fields;      /* regular header lines as "name: value\r\n" */
    struct evbuffer *cookie;      /* cookie fields joined with "; " (RFC 9113 8.2.3) */
    struct evbuffer *out;         /* response body for the client's window */
    char *method, *path, *authority, *host;
    size_t hdr_bytes;
    int nfields;
    int too_large;                /* its header list is over max_header_size/max_headers */
    int has_body;                 /* a data provider was submitted */
    int ended;                    /* the whole response is in `out` */
    int deferred;                 /* the data provider waits for `out` */
    int closed;                   /* nghttp2 closed the stream */
    int paused;                   /* the request body is not wanted now */
    uint64_t received;            /* DATA bytes put into the request's source */
    uint64_t last_data_ms;        /* when its body last moved (or was first wanted) */
    uint64_t consumed;            /* of them, given back as window */
};

static struct h2s *st_of(const struct request *r)
{
    return r->cs;
}

static const struct config *cfg_of(const struct conn *c)
{
    return c->rt->cfg;
}

/* ---- sending: from the connection's own event, never under a request ---- */

static void schedule(struct conn *c)
{
    event_active(c->h2->tick, EV_TIMEOUT, 0);
}

/* Give back the window of request body bytes that moved on (to the backend or into its
 * buffer); a DONE request's leftovers are dropped and given back at once. */
static void give_window(struct conn *c)
{
    for (struct request *r = c->h2->reqs; r; r = r->next) {
        struct h2s *st = st_of(r);
        if (r->state == RQ_DONE && r->src)
            evbuffer_drain(r->src, evbuffer_get_length(r->src));
        if (st->paused && r->state != RQ_DONE)
            continue;
        uint64_t moved = st->received - (r->src ? evbuffer_get_length(r->src) : 0);
        if (moved > st->consumed) {
            nghttp2_session_consume(c->h2->ss, r->stream, (size_t)(moved - st->consumed));
            st->consumed = moved;
        }
    }
}

static void close_if_done(struct conn *c)
{
    struct h2 *h = c->h2;
    if (!nghttp2_session_want_read(h->ss) && !nghttp2_session_want_write(h->ss)) {
        if (!h->goaway && !h->peer_goaway) /* nghttp2 ended it: an error or a flood */
            stats_add(&c->w->stats, STAT_h2_protocol_errors, 1);
        conn_close_after_flush(c);
        return;
    }
    if (h->goaway && h->nstreams == 0 && !nghttp2_session_want_write(h->ss))
        conn_close_after_flush(c);
}

/* Frames to the socket, as far as its output takes them (HIGH_WM). */
static void send_frames(struct conn *c)
{
    struct h2 *h = c->h2;
    give_window(c);
    int rv = nghttp2_session_send(h->ss);
    conn_flush(c);
    if (rv != 0) {
        log_info("http2", "closed client=%s reason=\"%s\"", c->peer, nghttp2_strerror(rv));
        stats_add(&c->w->stats, STAT_h2_protocol_errors, 1);
        conn_free(c);
        return;
    }
    close_if_done(c);
}

static ssize_t send_cb(nghttp2_session *ss, const uint8_t *data, size_t len, int flags, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *out = sock_out(&c->sk);
    (void)ss;
    (void)flags;
    if (evbuffer_get_length(out) > HIGH_WM)
        return NGHTTP2_ERR_WOULDBLOCK; /* the drained callback sends the rest */
    if (evbuffer_add(out, data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    c->h2->last_sent_ms = up_now_ms();
    return (ssize_t)len;
}

/* ---- streams ---- */

static void stream_free(struct conn *c, struct request *r)
{
    struct h2 *h = c->h2;
    for (struct request **p = &h->reqs; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    h->nstreams--;
    h->last_active_ms = up_now_ms();
    struct h2s *st = st_of(r);
    if (st) {
        if (st->fields)
            evbuffer_free(st->fields);
        if (st->cookie)
            evbuffer_free(st->cookie);
        if (st->out)
            evbuffer_free(st->out);
        free(st->method);
        free(st->path);
        free(st->authority);
        free(st->host);
        free(st);
    }
    struct evbuffer *src = r->src;
    req_free(r);
    if (src)
        evbuffer_free(src);
}

static int begin_headers_cb(nghttp2_session *ss, const nghttp2_frame *f, void *arg)
{
    struct conn *c = arg;
    struct h2 *h = c->h2;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct request *r = req_new(c);
    struct h2s *st = calloc(1, sizeof *st);
    if (r) {
        r->cs = st;
        r->src = evbuffer_new();
    }
    if (!r || !st || !r->src || !(st->fields = evbuffer_new()) || !(st->cookie = evbuffer_new())) {
        if (r) {
            r->next = h->reqs; /* freed as a stream, with what it has */
            h->reqs = r;
            h->nstreams++;
            stream_free(c, r);
        } else {
            free(st);
        }
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
    }
    r->stream = f->hd.stream_id;
    r->minor = 1;
    r->keep_alive = 1;
    r->next = h->reqs;
    h->reqs = r;
    h->nstreams++;
    h->started++;
    h->ever = 1;
    h->last_active_ms = st->last_data_ms = up_now_ms();
    nghttp2_session_set_stream_user_data(ss, r->stream, r);
    stats_add(&c->w->stats, STAT_requests, 1);
    stats_add(&c->w->stats, STAT_h2_requests, 1);
    return 0;
}

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int name_is(const uint8_t *name, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

/* One field of a request's header list (nghttp2 has checked its bytes and its place). */
static int header_cb(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *arg)
{
    (void)flags;
    (void)arg;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct request *r = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (!r || r->state != RQ_HEAD)
        return 0; /* trailers: dropped, as HTTP/1.1 chunked trailers are */
    struct h2s *st = st_of(r);
    /* the HPACK-decoded size counts (a bomb is small on the wire): 32 per field as in
     * SETTINGS_MAX_HEADER_LIST_SIZE */
    st->hdr_bytes += nl + vl + 32;
    if (st->too_large || st->hdr_bytes > r->rt->lim.max_head ||
        ++st->nfields > (int)r->rt->lim.max_headers) {
        st->too_large = 1;
        return 0; /* decoding goes on (HPACK state), the fields are dropped */
    }
    char **pseudo = name_is(name, nl, ":method") ? &st->method
                    : name_is(name, nl, ":path") ? &st->path
                    : name_is(name, nl, ":authority") ? &st->authority
                    : name_is(name, nl, "host") ? &st->host : NULL;
    if (pseudo) {
        free(*pseudo);
        *pseudo = dup_n(value, vl);
        return *pseudo ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (nl > 0 && name[0] == ':')
        return 0; /* :scheme: the listener says whether it is https */
    if (name_is(name, nl, "cookie")) {
        if (evbuffer_get_length(st->cookie))
            evbuffer_add(st->cookie, "; ", 2);
        evbuffer_add(st->cookie, value, vl);
        return 0;
    }
    evbuffer_add(st->fields, name, nl);
    evbuffer_add(st->fields, ": ", 2);
    evbuffer_add(st->fields, value, vl);
    evbuffer_add(st->fields, "\r\n", 2);
    return 0;
}

/* The header list as an HTTP/1.1 head in r->src (empty until now: DATA cannot come before
 * the end of the headers). */
static void build_head(struct request *r, struct h2s *st)
{
    struct evbuffer *o = r->src;
    evbuffer_add_printf(o, "%s %s HTTP/1.1\r\n", st->method, st->path);
    /* :authority wins over a Host field (RFC 9113 8.3.1: they must agree) */
    const char *host = st->authority ? st->authority : st->host;
    if (host)
        evbuffer_add_printf(o, "Host: %s\r\n", host);
    evbuffer_add_buffer(o, st->fields);
    if (evbuffer_get_length(st->cookie)) {
        evbuffer_add(o, "Cookie: ", 8);
        evbuffer_add_buffer(o, st->cookie);
        evbuffer_add(o, "\r\n", 2);
    }
    evbuffer_add(o, "\r\n", 2);
}

/* The request's header list is complete: check it as an HTTP/1.1 head and start it. */
static void headers_done(struct conn *c, struct request *r)
{
    struct h2s *st = st_of(r);
    struct worker *w = c->w;
    if (st->too_large) {
        req_error(r, 431, "header-too-large",
                  "the request is malformed or over a limit and was not forwarded");
        return;
    }
    if (st->method && strcmp(st->method, "CONNECT") == 0) {
        req_error(r, 501, "not-implemented", "CONNECT is not supported");
        return;
    }
    if (!st->method || !st->path) { /* nghttp2 refuses these; kept for safety */
        req_error(r, 400, "bad-request", "the request has no :method or :path");
        return;
    }
    build_head(r, st);
    size_t len = evbuffer_get_length(r->src);
    const char *p = (const char *)evbuffer_pullup(r->src, -1);
    struct http1_msg m;
    int status = 0;
    int n = http1_parse_request(p, len, &r->rt->lim, w->hdrs, w->nhdrs, &m, &status);
    if (n < 0) {
        r->bytes_in = len;
        req_error(r, n == HTTP1_INCOMPLETE ? 400 : status,
                  status == 414 ? "uri-too-long" : status == 431 ? "header-too-large"
                                                                 : "bad-request",
                  "the request is malformed or over a limit and was not forwarded");
        return;
    }
    if (m.body == HTTP1_BODY_NONE && !r->src_eof)
        m.body = HTTP1_BODY_CLOSE; /* DATA without a length: ends with the stream */
    req_head(r, &m, (size_t)n);
}

static int frame_recv_cb(nghttp2_session *ss, const nghttp2_frame *f, void *arg)
{
    struct conn *c = arg;
    c->h2->last_active_ms = up_now_ms();
    if (f->hd.type == NGHTTP2_GOAWAY)
        c->h2->peer_goaway = 1;
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct request *r = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (!r)
        return 0;
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
        r->src_eof = 1;
    if (r->state == RQ_HEAD && f->hd.type == NGHTTP2_HEADERS)
        headers_done(c, r);
    else if (r->state != RQ_DONE)
        req_client_data(r);
    return 0;
}

static int data_chunk_cb(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    (void)flags;
    (void)arg;
    struct request *r = nghttp2_session_get_stream_user_data(ss, id);
    if (!r || r->state == RQ_DONE) {
        nghttp2_session_consume(ss, id, len); /* nobody wants it: the window goes back */
        return 0;
    }
    evbuffer_add(r->src, data, len);
    st_of(r)->received += len;
    st_of(r)->last_data_ms = up_now_ms();
    return 0;
}

static int stream_close_cb(nghttp2_session *ss, int32_t id, uint32_t err, void *arg)
{
    struct conn *c = arg;
    (void)err;
    struct request *r = nghttp2_session_get_stream_user_data(ss, id);
    if (!r || c->h2->dying)
        return 0;
    st_of(r)->closed = 1;
    if (r->state != RQ_DONE)
        req_abort(r, STAT_client_aborts); /* reset by the client, or by nghttp2 */
    stream_free(c, r);
    return 0;
}

/* ---- the response, from the request ---- */

static ssize_t data_read_cb(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct request *r = src->ptr;
    struct h2s *st = st_of(r);
    (void)arg;
    int n = evbuffer_remove(st->out, buf, len);
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t left = evbuffer_get_length(st->out);
    if (left == 0 && st->ended) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!r->src_eof) /* the answer is complete, the body it did not wait for is not */
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
        return n;
    }
    if (n == 0) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (left < LOW_WM && (size_t)n + left >= LOW_WM && r->state == RQ_STREAMING)
        req_sink_drained(r); /* the backend is read again */
    return n;
}

static void resume(struct request *r)
{
    struct h2s *st = st_of(r);
    if (st->deferred && !st->closed) {
        st->deferred = 0;
        nghttp2_session_resume_data(r->c->h2->ss, r->stream);
    }
    schedule(r->c);
}

static void add_nv(nghttp2_nv *nv, size_t *n, const char *name, size_t nl, const char *v,
                   size_t vl)
{
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)v, nl, vl, NGHTTP2_NV_FLAG_NONE};
    (*n)++;
}

/* Submit the response head (and its body to come, if it has one). */
static void submit(struct request *r, nghttp2_nv *nv, size_t n, int has_body)
{
    struct h2s *st = st_of(r);
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = data_read_cb};
    if (has_body && !st->out && !(st->out = evbuffer_new()))
        has_body = 0;
    st->has_body = has_body;
    int rv = nghttp2_submit_response(r->c->h2->ss, r->stream, nv, n, has_body ? &prd : NULL);
    if (rv != 0)
        log_info("http2", "response not sent client=%s stream=%d reason=\"%s\"", r->c->peer,
                 (int)r->stream, nghttp2_strerror(rv));
    for (size_t i = 0; i < n; i++) /* a size is on the wire in the HPACK block */
        r->bytes_out += nv[i].namelen + nv[i].valuelen;
    schedule(r->c);
}

static int h2_resp_head(struct request *r, const struct http1_msg *m)
{
    /* one allocation: the field array and the names lowercased (HTTP/2 wants them so) */
    size_t names = 0, max = m->num_headers + 3;
    for (size_t i = 0; i < m->num_headers; i++)
        names += m->headers[i].name_len;
    nghttp2_nv *nv = malloc(max * sizeof *nv + names), few[3];
    char *low = nv ? (char *)(nv + max) : NULL, status[4], cl[24];
    size_t n = 0;
    if (!nv) { /* out of memory: the status and the framing only */
        nv = few;
        max = 0;
    }
    snprintf(status, sizeof status, "%03d", m->status);
    add_nv(nv, &n, ":status", 7, status, 3);
    int has_rid = 0;
    for (size_t i = 0; i < m->num_headers && max; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h->hop)
            continue;
        has_rid |= h->id == HTTP1_H_X_REQUEST_ID;
        for (size_t k = 0; k < h->name_len; k++)
            low[k] = (char)tolower((unsigned char)h->name[k]);
        add_nv(nv, &n, low, h->name_len, h->value, h->value_len);
        low += h->name_len;
    }
    if (m->body == HTTP1_BODY_LENGTH) {
        int l = snprintf(cl, sizeof cl, "%llu", (unsigned long long)m->content_length);
        add_nv(nv, &n, "content-length", 14, cl, (size_t)l);
    } else if (m->body == HTTP1_BODY_NONE) {
        const struct http1_header *h = http1_find(m, HTTP1_H_CONTENT_LENGTH);
        if (h && m->status != 204 && m->status != 304) /* a HEAD answer's length */
            add_nv(nv, &n, "content-length", 14, h->value, h->value_len);
    }
    if (!has_rid && max)
        add_nv(nv, &n, "x-request-id", 12, r->rid, strlen(r->rid));
    submit(r, nv, n, m->body != HTTP1_BODY_NONE); /* nghttp2 copies the fields */
    if (nv != few)
        free(nv);
    return 0;
}

/* Sluice's own answer: its fields ("Name: v\r\n" lines) lowercased, its body if not HEAD. */
static void h2_answer(struct request *r, int status, const char *reason, const char *code,
                      const char *extra, const char *body, size_t blen)
{
    nghttp2_nv nv[MAX_FIELDS];
    char st_buf[4], len_buf[24], fields[2048]; /* extra: a Location is at most ~1.4 KB */
    size_t n = 0;
    (void)reason;
    snprintf(st_buf, sizeof st_buf, "%03d", status);
    add_nv(nv, &n, ":status", 7, st_buf, 3);
    add_nv(nv, &n, "content-type", 12, "text/plain", 10);
    int l = snprintf(len_buf, sizeof len_buf, "%zu", blen);
    add_nv(nv, &n, "content-length", 14, len_buf, (size_t)l);
    add_nv(nv, &n, "x-sluice-error", 14, code, strlen(code));
    if (r->rid[0])
        add_nv(nv, &n, "x-request-id", 12, r->rid, strlen(r->rid));
    snprintf(fields, sizeof fields, "%s", extra ? extra : "");
    for (char *line = fields, *end; *line && n < MAX_FIELDS && (end = strstr(line, "\r\n"));
         line = end + 2) {
        *end = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        for (char *k = line; k < colon; k++)
            *k = (char)tolower((unsigned char)*k);
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        add_nv(nv, &n, line, (size_t)(colon - line), v, strlen(v));
    }
    int with_body = r->meth != HTTP1_M_HEAD && blen > 0;
    if (with_body) {
        struct h2s *st = st_of(r);
        if (!st->out)
            st->out = evbuffer_new();
        if (st->out)
            evbuffer_add(st->out, body, blen);
        r->bytes_out += blen;
    }
    submit(r, nv, n, with_body);
}

static struct evbuffer *h2_sink(struct request *r)
{
    struct h2s *st = st_of(r);
    if (!st->out)
        st->out = evbuffer_new(); /* (made with the head; kept for safety) */
    return st->out;
}

static void h2_flush(struct request *r)
{
    resume(r);
}

static void h2_body_want(struct request *r, enum body_want want)
{
    if (want == BODY_WANT) /* a wait before (queue, backend, a pause) was sluice's */
        st_of(r)->last_data_ms = up_now_ms();
    st_of(r)->paused = want == BODY_PAUSE;
    if (want != BODY_PAUSE)
        schedule(r->c); /* the window it frees goes out */
}

static void h2_end(struct request *r)
{
    struct h2s *st = st_of(r);
    st->ended = 1;
    if (!st->has_body && !r->src_eof && !st->closed)
        nghttp2_submit_rst_stream(r->c->h2->ss, NGHTTP2_FLAG_NONE, r->stream, NGHTTP2_NO_ERROR);
    resume(r); /* freed when nghttp2 closes the stream */
}

static void h2_abort(struct request *r)
{
    struct h2s *st = st_of(r);
    if (st->closed || r->c->h2->dying)
        return; /* the stream is gone already; it is freed with it */
    nghttp2_submit_rst_stream(r->c->h2->ss, NGHTTP2_FLAG_NONE, r->stream, NGHTTP2_INTERNAL_ERROR);
    schedule(r->c);
}

/* ---- from the connection ---- */

/* Give nghttp2 what the input holds, a slice at a time, at most STREAMS_PER_WAKEUP new
 * streams per wakeup (the rest on the next loop turn, after the other connections). */
static void h2_read(struct conn *c)
{
    struct h2 *h = c->h2;
    struct evbuffer *in = sock_in(&c->sk);
    h->started = 0;
    size_t len;
    while ((len = evbuffer_get_length(in)) > 0 && h->started < STREAMS_PER_WAKEUP) {
        size_t take = len < H2_SLICE ? len : H2_SLICE;
        const uint8_t *p = evbuffer_pullup(in, (ssize_t)take);
        ssize_t rv = nghttp2_session_mem_recv(h->ss, p, take);
        if (rv < 0) {
            log_info("http2", "closed client=%s reason=\"%s\"", c->peer, nghttp2_strerror((int)rv));
            stats_add(&c->w->stats, STAT_h2_protocol_errors, 1);
            nghttp2_session_send(h->ss); /* its GOAWAY, if nghttp2 made one */
            conn_close_after_flush(c);
            return;
        }
        evbuffer_drain(in, (size_t)rv);
    }
    if (evbuffer_get_length(in) > 0)
        schedule(c); /* the rest on the next loop turn */
    send_frames(c);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->state != C_OPEN)
        return;
    if (evbuffer_get_length(sock_in(&c->sk)) > 0) {
        h2_read(c); /* sends too */
        return;
    }
    send_frames(c);
}

static void h2_drained(struct conn *c)
{
    send_frames(c);
}

static void h2_event(struct conn *c, short what)
{
    (void)what;
    conn_free(c); /* closed, failed, or not reading: its unfinished streams are aborted */
}

/* Some stream's head has been arriving for too long (a CONTINUATION that never comes). */
static int head_late(struct conn *c, uint64_t now)
{
    for (struct request *r = c->h2->reqs; r; r = r->next)
        if (r->state == RQ_HEAD && now - r->t_start > cfg_of(c)->proxy.client_header_timeout_ms)
            return 1;
    return 0;
}

/* Streams whose body stopped coming for client_body_timeout (while sluice wanted it: a
 * slow upload must not hold a backend worker): 408, or a reset once the response began. */
static void body_timeouts(struct conn *c, uint64_t now)
{
    uint32_t limit = cfg_of(c)->proxy.client_body_timeout_ms;
    struct request *r = c->h2->reqs;
    while (r) {
        struct request *next = r->next; /* (r stays listed: it is freed at its close) */
        struct h2s *st = st_of(r);
        int reading = r->state == RQ_BODY || r->state == RQ_SENDING ||
                      (r->state == RQ_STREAMING && !r->req.done);
        if (reading && !st->paused && !r->src_eof && now - st->last_data_ms > limit) {
            if (!r->resp_started)
                req_error(r, 408, "body-timeout", "the request body did not arrive in time");
            else
                req_abort(r, STAT_client_aborts);
        }
        r = next;
    }
}

/* Some response waits for a client that takes nothing (its window stays shut). */
static int send_stalled(struct conn *c, uint64_t now)
{
    struct h2 *h = c->h2;
    if (now - h->last_sent_ms <= cfg_of(c)->proxy.send_timeout_ms)
        return 0;
    for (struct request *r = h->reqs; r; r = r->next)
        if (st_of(r)->out && evbuffer_get_length(st_of(r)->out) > 0)
            return 1;
    return evbuffer_get_length(sock_out(&c->sk)) > 0;
}

static void goaway(struct conn *c, uint32_t err)
{
    struct h2 *h = c->h2;
    if (h->goaway)
        return;
    h->goaway = 1;
    nghttp2_submit_goaway(h->ss, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->ss), err, NULL, 0);
}

static void h2_timer(struct conn *c)
{
    struct h2 *h = c->h2;
    uint64_t now = up_now_ms();
    const struct proxy_conf *p = &cfg_of(c)->proxy;
    if (head_late(c, now)) {
        stats_add(&c->w->stats, STAT_err_408, 1);
        goaway(c, NGHTTP2_PROTOCOL_ERROR);
        send_frames(c);
        if (c->state == C_OPEN)
            conn_close_after_flush(c);
        return;
    }
    body_timeouts(c, now);
    if (send_stalled(c, now)) {
        stats_add(&c->w->stats, STAT_client_aborts, 1);
        conn_free(c);
        return;
    }
    /* idle: keepalive_timeout, or client_header_timeout before its first stream */
    uint32_t idle = h->ever ? p->keepalive_timeout_ms : p->client_header_timeout_ms;
    if (h->nstreams == 0 && now - h->last_active_ms > (idle ? idle : 1)) {
        goaway(c, NGHTTP2_NO_ERROR); /* idle: closed quietly */
        send_frames(c);
        if (c->state == C_OPEN)
            conn_close_after_flush(c);
        return;
    }
    conn_timer_ms(c, H2_TICK_MS);
}

static void h2_drain(struct conn *c)
{
    goaway(c, NGHTTP2_NO_ERROR); /* the streams it has finish; no new ones */
    send_frames(c);
}

static void h2_free(struct conn *c)
{
    struct h2 *h = c->h2;
    if (!h)
        return;
    h->dying = 1;
    while (h->reqs) {
        struct request *r = h->reqs;
        if (r->state != RQ_DONE && !c->killed)
            req_abort(r, STAT_client_aborts);
        stream_free(c, r);
    }
    nghttp2_session_del(h->ss);
    if (h->tick)
        event_free(h->tick);
    free(h);
    c->h2 = NULL;
}

const struct codec h2_codec = {
    .proto = "HTTP/2",
    .read = h2_read,
    .drained = h2_drained,
    .event = h2_event,
    .timer = h2_timer,
    .drain = h2_drain,
    .free = h2_free,
    .resp_head = h2_resp_head,
    .answer = h2_answer,
    .sink = h2_sink,
    .flush = h2_flush,
    .body_want = h2_body_want,
    .end = h2_end,
    .abort = h2_abort,
};

/* ---- starting ---- */

int h2_preface(struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in), n = len < sizeof preface - 1 ? len : sizeof preface - 1;
    char buf[sizeof preface];
    if (evbuffer_copyout(in, buf, n) != (ev_ssize_t)n || memcmp(buf, preface, n) != 0)
        return 0;
    return n == sizeof preface - 1 ? 1 : -1;
}

static nghttp2_session_callbacks *callbacks(void)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, begin_headers_cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, header_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, frame_recv_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, data_chunk_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, stream_close_cb);
    return cb;
}

static nghttp2_session *new_session(struct conn *c)
{
    nghttp2_session_callbacks *cb = callbacks();
    nghttp2_option *opt = NULL;
    nghttp2_session *ss = NULL;
    if (cb && nghttp2_option_new(&opt) == 0) {
        nghttp2_option_set_no_auto_window_update(opt, 1); /* the window follows the body */
        /* the defaults of Debian's 1.52.0-1+deb12u3, stated: rapid reset (CVE-2023-44487)
         * 1000 resets then 33/s; CONTINUATION flood (CVE-2024-28182) 8 frames; SETTINGS
         * and PING floods: 1000 acknowledgements queued for a client that does not read */
        nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
        nghttp2_option_set_max_continuations(opt, 8);
        nghttp2_option_set_max_outbound_ack(opt, 1000);
        nghttp2_option_set_max_settings(opt, 32);
        if (nghttp2_session_server_new2(&ss, cb, c, opt) != 0)
            ss = NULL;
    }
    if (opt)
        nghttp2_option_del(opt);
    if (cb)
        nghttp2_session_callbacks_del(cb);
    return ss;
}

int h2_start(struct conn *c)
{
    struct h2 *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    c->h2 = h;
    h->ss = new_session(c);
    h->tick = event_new(c->w->base, -1, 0, tick_cb, c);
    const struct proxy_conf *p = &cfg_of(c)->proxy;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)p->http2_max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->rt->lim.max_head},
    };
    if (!h->ss || !h->tick ||
        nghttp2_submit_settings(h->ss, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        nghttp2_session_set_local_window_size(h->ss, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0) {
        h2_free(c);
        return -1;
    }
    c->codec = &h2_codec;
    h->last_active_ms = h->last_sent_ms = up_now_ms();
    stats_add(&c->w->stats, STAT_h2_connections, 1);
    conn_timeouts(c, 0);
    conn_timer_ms(c, H2_TICK_MS);
    h2_read(c);
    return 0;
}
