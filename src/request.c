/* request: a request's state machine (request.h): its head checked and classified, the
 * admission decision acted on, its body buffered before a backend is chosen, its moves
 * between states, and the one release of everything it holds. Admission waits are in
 * request_admit.c, the backend side in request_upstream.c, sluice's own answers in
 * request_answer.c; the bytes to and from the client are its codec's (conn.h).
 *
 * BODY buffers up to request_buffer bytes of the body before a backend is chosen, as NGINX
 * does: a slow upload never holds a Gunicorn worker, and a body with bad chunk framing
 * within that size is refused before any byte of its request reaches a backend. */
#include <sluice/request.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <sluice/bufmem.h>
#include <sluice/log.h>
#include <sluice/queue.h>
#include <sluice/redis.h>
#include <sluice/request-int.h>
#include <sluice/upconn.h>
#include <sluice/upstream.h>
#include <sluice/uri.h>
#include <sluice/worker.h>

#define BODY_STEP (64 * 1024) /* a chunked body's reservation grows by this much */

/* ---- states ---- */

static const char *const state_names[RQ_NSTATES] = {
    [RQ_HEAD] = "head", [RQ_ADMIT] = "admit", [RQ_BODY] = "body", [RQ_QUEUED] = "queued",
    [RQ_CONNECTING] = "connecting", [RQ_SENDING] = "sending", [RQ_WAITING] = "waiting",
    [RQ_STREAMING] = "streaming", [RQ_TUNNEL] = "tunnel", [RQ_DONE] = "done",
};

#define TO(s) (1u << (s))
/* The moves drawn in request.h: moves[from] has a bit for each state it may go to. */
static const unsigned moves[RQ_NSTATES] = {
    [RQ_HEAD] = TO(RQ_ADMIT) | TO(RQ_BODY) | TO(RQ_CONNECTING) | TO(RQ_DONE),
    [RQ_ADMIT] = TO(RQ_BODY) | TO(RQ_CONNECTING) | TO(RQ_DONE),
    [RQ_BODY] = TO(RQ_CONNECTING) | TO(RQ_DONE),
    [RQ_QUEUED] = TO(RQ_CONNECTING) | TO(RQ_DONE),
    [RQ_CONNECTING] = TO(RQ_CONNECTING) | TO(RQ_QUEUED) | TO(RQ_SENDING) | TO(RQ_WAITING) |
                      TO(RQ_DONE),
    [RQ_SENDING] = TO(RQ_WAITING) | TO(RQ_STREAMING) | TO(RQ_TUNNEL) | TO(RQ_DONE),
    [RQ_WAITING] = TO(RQ_CONNECTING) | TO(RQ_STREAMING) | TO(RQ_TUNNEL) | TO(RQ_DONE),
    [RQ_STREAMING] = TO(RQ_DONE),
    [RQ_TUNNEL] = TO(RQ_DONE),
    [RQ_DONE] = 0,
};

const char *req_state_name(enum req_state s)
{
    return s < RQ_NSTATES ? state_names[s] : "?";
}

void req_advance(struct request *r, enum req_state to)
{
    if (!(moves[r->state] & TO(to)))
        log_error("request", "bug: a request moved from %s to %s rid=%s",
                  req_state_name(r->state), req_state_name(to), r->rid[0] ? r->rid : "-");
    r->state = to;
}

/* ---- lifetime ---- */

/* Requests freed on a worker are kept for its next ones (at most REQ_POOL_MAX, with their
 * upstream head buffer): no allocation per request for them. */
#define REQ_POOL_MAX 256

struct request *req_new(struct conn *c)
{
    struct worker *w = c->w;
    struct request *r = w->req_pool;
    if (r) {
        struct evbuffer *head_out = r->head_out;
        w->req_pool = r->next;
        w->req_pooled--;
        memset(r, 0, sizeof *r);
        r->head_out = head_out;
    } else if (!(r = calloc(1, sizeof *r))) {
        return NULL;
    }
    if (c->rt != w->rt) { /* a reload happened: new requests use the new generation */
        runtime_unref(c->rt);
        c->rt = w->rt;
        runtime_ref(c->rt);
    }
    r->c = c;
    r->w = w;
    r->rt = c->rt;
    runtime_ref(r->rt);
    r->state = RQ_HEAD;
    r->meth = HTTP1_M_OTHER;
    r->minor = 1;
    r->t_start = up_now_ms();
    r->t_start_us = admit_now_ns() / 1000;
    return r;
}

/* The body held and its reservation go. */
static void release_body(struct request *r)
{
    if (r->bodybuf) {
        evbuffer_free(r->bodybuf);
        r->bodybuf = NULL;
    }
    if (r->body_charge) {
        bufmem_release(&r->w->px->bufmem, r->body_charge);
        r->body_charge = 0;
    }
}

void req_release(struct request *r)
{
    if (r->rcall) {
        redis_cancel(&r->w->redis, r->rcall, 0);
        r->rcall = NULL;
    }
    req_timer_stop(r);
    adm_leave_queue(r);
    int kick = r->backend || r->tenant_slot || r->route_slot;
    adm_release_slots(r); /* before the backend's: its one kick sees their waiters too */
    if (r->backend) {
        up_release(r->backend);
        r->backend = NULL;
    }
    if (kick)
        queue_kick(&r->w->px->queue);
    ups_drop(r);
    release_body(r);
}

void req_free(struct request *r)
{
    if (r->state != RQ_DONE) {
        if (r->c->killed)
            log_warn("session", "closed at shutdown state=%s client=%s method=%s target=%s "
                     "backend=%s status=%d rid=%s", req_state_name(r->state), r->c->peer,
                     r->method[0] ? r->method : "-", r->target ? r->target : "-",
                     r->backend ? r->backend->conf->name : "-", r->status,
                     r->rid[0] ? r->rid : "-");
        req_release(r);
    }
    admit_done(r->tenant); /* before the generation that owns it may go */
    runtime_unref(r->rt);
    if (r->timer)
        event_free(r->timer);
    free(r->target);
    struct worker *w = r->w;
    if (w->req_pooled < REQ_POOL_MAX) {
        if (r->head_out)
            evbuffer_drain(r->head_out, evbuffer_get_length(r->head_out));
        r->next = w->req_pool;
        w->req_pool = r;
        w->req_pooled++;
        return;
    }
    if (r->head_out)
        evbuffer_free(r->head_out);
    free(r);
}

void req_pool_free(struct worker *w)
{
    while (w->req_pool) {
        struct request *r = w->req_pool;
        w->req_pool = r->next;
        if (r->head_out)
            evbuffer_free(r->head_out);
        free(r);
    }
    w->req_pooled = 0;
}

void req_finish(struct request *r)
{
    req_access_log(r);
    req_release(r);
    req_advance(r, RQ_DONE);
    req_codec(r)->end(r); /* frees r */
}

void req_abort(struct request *r, enum stat_id why)
{
    stats_add(&r->w->stats, why, 1);
    /* an HTTP/2 client resets streams in normal use (a page left): not worth a line each */
    log_msg(r->stream && why == STAT_client_aborts ? LOG_DEBUG : LOG_INFO, "session",
            "aborted reason=%s client=%s target=%s backend=%s rid=%s", stats_name(why),
            r->c->peer, r->target ? r->target : "-", r->backend ? r->backend->conf->name : "-",
            r->rid);
    if (r->status == 0)
        r->status = 499;
    req_access_log(r);
    req_release(r);
    req_advance(r, RQ_DONE);
    req_codec(r)->abort(r); /* frees r */
}

/* ---- its own timer ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    adm_timer(arg);
}

int req_timer_ms(struct request *r, uint32_t ms)
{
    if (!r->timer && !(r->timer = evtimer_new(r->w->base, timer_cb, r)))
        return -1;
    struct timeval tv;
    ms_tv(&tv, ms);
    evtimer_add(r->timer, &tv);
    return 0;
}

void req_timer_stop(struct request *r)
{
    if (r->timer)
        evtimer_del(r->timer);
}

/* ---- the head ---- */

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
        unsigned char ch = (unsigned char)h->value[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return 0;
    }
    return 1;
}

/* Remember what the access log, answers and a retry need; the parsed head is gone after. */
static void note_head(struct request *r, const struct http1_msg *m)
{
    const struct http1_header *rid = http1_find(m, HTTP1_H_X_REQUEST_ID);
    copy_field(r->method, sizeof r->method, m->method, m->method_len);
    size_t tl = m->target_len < MAX_LOG_TARGET ? m->target_len : MAX_LOG_TARGET;
    size_t slash = m->slash_missing ? 1 : 0; /* "http://h?q" is "/?q" */
    r->target = malloc(tl + slash + 1);
    if (r->target) {
        r->target[0] = '/';
        copy_field(r->target + slash, tl + 1, m->target, tl);
    }
    if (rid && valid_request_id(rid))
        copy_field(r->rid, sizeof r->rid, rid->value, rid->value_len);
    else
        worker_request_id(r->w, r->rid);
    r->meth = m->meth;
    r->upgrade = m->upgrade;
    r->body_kind = m->body;
    r->body_len = m->content_length;
    /* a body without a length (HTTP/2 DATA to the end of the stream) goes up chunked */
    r->body_chunk_out = m->body == HTTP1_BODY_CHUNKED || m->body == HTTP1_BODY_CLOSE;
}

/* The checks a head must pass before anything else is done; 0, or -1 answered. */
static int check_head(struct request *r, struct http1_msg *m)
{
    const struct config *cfg = req_cfg(r);
    if (!r->c->tls && cfg->proxy.redirect_http) {
        req_send_redirect(r, m);
        return -1;
    }
    if (m->meth == HTTP1_M_CONNECT) {
        req_error(r, 501, "not-implemented", "CONNECT is not supported");
        return -1;
    }
    uint64_t maxb = cfg->proxy.max_body_size;
    if (maxb && m->body == HTTP1_BODY_LENGTH && m->content_length > maxb) {
        req_error(r, 413, "body-too-large", "the request body is over max_body_size");
        return -1;
    }
    long pl = uri_normalize_path(m->target, m->target_len, r->w->path);
    if (pl < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request path has %s; it was not forwarded",
                 uri_strerror(pl));
        req_error(r, 400, "bad-path", msg);
        return -1;
    }
    m->path = r->w->path; /* what routes, bypass and path_prefix keys see */
    m->path_len = (size_t)pl;
    return 0;
}

void req_head(struct request *r, const struct http1_msg *msg, size_t n)
{
    struct http1_msg m = *msg;
    note_head(r, &m);
    r->bytes_in = n;
    if (check_head(r, &m) < 0)
        return;
    r->tenant = admit_classify(&r->rt->admit, &m, r->c->peer);
    r->route = admit_route(req_cfg(r), m.path, m.path_len);
    r->bypass = r->route && r->route->bypass;
    if (ups_build_head(r, &m) < 0) {
        req_error(r, 503, "no-memory", "out of memory reading the request");
        return;
    }
    evbuffer_drain(r->src, n); /* the head is taken: what follows is its body, or the next */
    if (!r->bypass && r->tenant->interval_ns && req_cfg(r)->redis.url) {
        adm_ask_redis(r);
        return;
    }
    req_admitted(r, r->bypass ? 0 : admit_rate(r->tenant, admit_now_ns()), 0);
}

/* ---- the body held in memory before a backend ([proxy] buffer_memory, bufmem.h) ---- */

/* The most of a body buffered before a backend is chosen. */
static size_t body_limit(const struct request *r)
{
    const struct proxy_conf *p = &req_cfg(r)->proxy;
    return p->request_buffer < p->buffer_memory ? p->request_buffer : p->buffer_memory;
}

/* Grow r's reservation to `want` bytes. here: the bytes are already read in (held whatever
 * is decided), so they are counted even past the limit. 0, or -1: no room. */
static int reserve_body(struct request *r, size_t want, int here)
{
    if (want <= r->body_charge)
        return 0;
    if (bufmem_reserve(&r->w->px->bufmem, want - r->body_charge,
                       req_cfg(r)->proxy.buffer_memory, here) < 0)
        return -1;
    r->body_charge = want;
    return 0;
}

/* No room for the body: refused before any of it is read on, the connection closed after
 * the answer (the unread body is drained while lingering). */
static void refuse_body(struct request *r)
{
    r->answer_keep = 0;
    req_answer(r, 503, "buffers-full", "request bodies in memory are at buffer_memory; retry later",
               "Retry-After: 1\r\nX-Sluice-Reject: buffers-full\r\n");
}

int req_body_checks(struct request *r, int rc, int eof)
{
    uint64_t maxb = req_cfg(r)->proxy.max_body_size;
    if (rc == 0 && maxb && r->req.total > maxb) {
        if (!r->resp_started)
            req_error(r, 413, "body-too-large", "the request body is over max_body_size");
        else
            req_abort(r, STAT_err_413);
        return -1;
    }
    if (rc < 0) {
        if (!r->resp_started && !eof)
            req_error(r, 400, "bad-body", "the request body framing is malformed");
        else
            req_abort(r, STAT_client_aborts);
        return -1;
    }
    return 0;
}

/* Ready for a backend: the whole body is here, or all that is held before one. */
static void start_upstream(struct request *r)
{
    r->req.cap = 0; /* the rest of the body, if any, streams under backpressure */
    r->req.copy = 0;
    r->t_ready_us = admit_now_ns() / 1000;
    req_advance(r, RQ_CONNECTING);
    r->c->nreq++;
    ups_pick_and_connect(r, 0);
}

/* BODY: collect the body within its reservation; go upstream when it is complete or the
 * buffer is full. A chunked body (its size unknown) reserves BODY_STEP at a time. */
static void buffer_body(struct request *r)
{
    size_t limit = body_limit(r);
    for (;;) {
        size_t before = evbuffer_get_length(r->src);
        r->req.cap = r->body_charge;
        int rc = body_pump(&r->req, r->src, r->bodybuf, r->src_eof);
        r->bytes_in += before - evbuffer_get_length(r->src);
        if (req_body_checks(r, rc, r->src_eof) < 0)
            return;
        size_t held = evbuffer_get_length(r->bodybuf);
        if (r->req.done || held >= limit) {
            if (r->req.done)
                req_codec(r)->body_want(r, BODY_DONE);
            start_upstream(r);
            return;
        }
        if (held < r->body_charge || evbuffer_get_length(r->src) == 0)
            return; /* more is to come */
        size_t want = r->body_charge + BODY_STEP < limit ? r->body_charge + BODY_STEP : limit;
        if (reserve_body(r, want, 0) < 0) {
            refuse_body(r);
            return;
        }
    }
}

static int has_body(const struct request *r)
{
    return r->body_kind != HTTP1_BODY_NONE &&
           !(r->body_kind == HTTP1_BODY_LENGTH && r->body_len == 0);
}

void req_admitted(struct request *r, uint64_t wait_ns, int refuse_down)
{
    if (refuse_down || wait_ns) {
        r->answer_keep = !has_body(r); /* a body left unread would be taken for a head */
        if (refuse_down)
            req_answer(r, 503, "limiter-down", "the shared rate limiter is unavailable; retry later",
                       "Retry-After: 1\r\nX-Sluice-Reject: limiter-down\r\n");
        else
            req_send_rate_limited(r, wait_ns);
        return;
    }
    size_t limit = body_limit(r);
    if (has_body(r) && limit) {
        /* room for the part of the body buffered here, before anything else is done */
        size_t need = r->body_kind == HTTP1_BODY_LENGTH && r->body_len < limit
                          ? (size_t)r->body_len : limit;
        if (r->body_kind != HTTP1_BODY_LENGTH && need > BODY_STEP)
            need = BODY_STEP;
        int here = r->body_kind == HTTP1_BODY_LENGTH && evbuffer_get_length(r->src) >= need;
        if (reserve_body(r, need, here) < 0) {
            refuse_body(r);
            return;
        }
    }
    stats_add(&r->w->stats, STAT_admitted, 1);
    body_init(&r->req, r->body_kind, r->body_len, r->body_chunk_out);
    if (r->req.done || limit == 0) {
        start_upstream(r);
        return;
    }
    if (!(r->bodybuf = evbuffer_new())) {
        req_error(r, 503, "no-memory", "out of memory buffering the request body");
        return;
    }
    if (r->body_kind == HTTP1_BODY_LENGTH)
        evbuffer_expand(r->bodybuf, r->body_charge); /* one allocation for all of it */
    r->req.copy = 1;
    req_advance(r, RQ_BODY);
    req_codec(r)->body_want(r, BODY_WANT);
    buffer_body(r);
}

/* ---- from the codec ---- */

void req_client_data(struct request *r)
{
    switch (r->state) {
    case RQ_BODY:
        buffer_body(r);
        return;
    case RQ_SENDING:
    case RQ_STREAMING:
        if (!r->req.done)
            ups_pump_request(r);
        return;
    case RQ_TUNNEL:
        ups_tunnel_client(r);
        return;
    default:
        return; /* not wanted yet (or any more): it waits in the source */
    }
}

void req_sink_drained(struct request *r)
{
    ups_sink_drained(r);
}
