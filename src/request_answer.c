/* request_answer: what sluice answers by itself (errors, refusals with Retry-After, 429 with
 * RateLimit fields, https redirects): the status and fields handed to the codec, the
 * counter it goes to, the error-log line, whether the connection is kept; and the access
 * log line and the meter's series every request ends with. It does not decide when to
 * answer (request.c, request_admit.c, request_upstream.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sluice/meter.h>

#include <sluice/admit.h>
#include <sluice/listener.h>
#include <sluice/log.h>
#include <sluice/runtime.h>
#include <sluice/request-int.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

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

/* The counter an answer goes to: refusals by their reason (and their tenant's count),
 * errors by status. */
static enum stat_id answer_stat(struct request *r, int status, const char *code)
{
    static const enum stat_id by_reason[REJ_MAX] = {
        [REJ_rate] = STAT_rejected_rate,
        [REJ_tenant_queue] = STAT_rejected_tenant_queue,
        [REJ_queue_full] = STAT_rejected_queue_full,
        [REJ_queue_timeout] = STAT_rejected_queue_timeout,
        [REJ_shed] = STAT_rejected_shed,
        [REJ_limiter_down] = STAT_rejected_limiter_down,
    };
    int why = admit_reason_of(code);
    if (why < 0)
        return strcmp(code, "buffers-full") == 0 ? STAT_rejected_buffers : error_stat(status);
    if (r->tenant)
        admit_rejected(r->tenant, (enum reject_reason)why);
    return by_reason[why];
}

/* Answer a status the proxy produced (extra: more header lines, may be NULL), log it, and
 * end the request. */
void req_answer(struct request *r, int status, const char *code, const char *msg,
                const char *extra)
{
    struct worker *w = r->w;
    /* a refusal (429/503) of a request whose body was read keeps the connection, as NGINX
     * does after limit_req; every other error closes it */
    int keep = r->answer_keep && r->keep_alive && !w->draining && !r->resp_started;
    ups_drop(r);
    r->status = status;
    stats_add(&w->stats, answer_stat(r, status, code), 1);
    log_info("session", "error status=%d code=%s client=%s method=%s target=%s backend=%s rid=%s",
             status, code, r->c->peer, r->method[0] ? r->method : "-",
             r->target ? r->target : "-", r->backend ? r->backend->conf->name : "-",
             r->rid[0] ? r->rid : "-");
    r->keep_alive = keep;
    if (!r->resp_started) {
        char body[256];
        int blen = snprintf(body, sizeof body, "sluice: %s\n", msg);
        if (blen < 0 || (size_t)blen >= sizeof body)
            blen = (int)sizeof body - 1;
        req_codec(r)->answer(r, status, reason_phrase(status), code, extra, body, (size_t)blen);
        r->resp_started = 1;
    }
    req_finish(r);
}

void req_error(struct request *r, int status, const char *code, const char *msg)
{
    req_answer(r, status, code, msg, NULL);
}

/* redirect_http: a plain-HTTP request is sent to the same host and target over HTTPS. */
void req_send_redirect(struct request *r, const struct http1_msg *m)
{
    const char *h = m->authority;
    size_t hl = m->authority_len;
    if (!h && m->host >= 0) {
        h = m->headers[m->host].value;
        hl = m->headers[m->host].value_len;
    }
    if (!h || hl == 0) {
        req_error(r, 400, "no-host", "a Host is needed to redirect to https");
        return;
    }
    const char *colon = h[0] == '[' ? memchr(h, ']', hl) : memchr(h, ':', hl);
    if (colon && h[0] == '[')
        colon = (size_t)(colon - h) + 1 < hl ? colon + 1 : NULL;
    size_t name_len = colon ? (size_t)(colon - h) : hl;
    int port = listener_port(req_cfg(r)->proxy.tls_listen.v[0]);
    char loc[MAX_LOG_TARGET + 400], portbuf[16] = "";
    if (port != 443)
        snprintf(portbuf, sizeof portbuf, ":%d", port);
    snprintf(loc, sizeof loc, "Location: https://%.*s%s%s\r\n", (int)(name_len < 255 ? name_len : 255),
             h, portbuf, r->target ? r->target : "/");
    stats_add(&r->w->stats, STAT_redirects, 1);
    req_answer(r, 308, "redirect-https", "this service is served over https", loc);
}

/* 429 from the tenant's rate limit, with when to come back (RFC 6585 4, RFC 9110 10.2.3) and
 * the limit in the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers). */
void req_send_rate_limited(struct request *r, uint64_t wait_ns)
{
    const struct tenant_conf *tc = r->tenant->conf;
    uint64_t secs = (wait_ns + 999999999ULL) / 1000000000ULL;
    double window = (double)tc->burst / tc->rate;
    char extra[320];
    snprintf(extra, sizeof extra,
             "Retry-After: %" PRIu64 "\r\nX-Sluice-Reject: rate\r\n"
             "RateLimit-Policy: \"%s\";q=%d;w=%.0f\r\nRateLimit: \"%s\";r=0;t=%" PRIu64 "\r\n",
             secs, tc->name, tc->burst, window < 1 ? 1 : window, tc->name, secs);
    req_answer(r, 429, "rate", "this tenant is over its request rate; retry later", extra);
}

/* 503 from the queue (its tenant's queue stands, the queue is full, or it waited too
 * long): the backends are saturated. retry_s: when its tenant would be served (0: ask the
 * queue now). */
void req_send_queue_reject(struct request *r, const char *why, uint32_t retry_s)
{
    char extra[128];
    if (!retry_s)
        retry_s = r->tenant ? queue_retry_after(&r->w->px->queue, r->tenant->st) : 1;
    snprintf(extra, sizeof extra, "Retry-After: %u\r\nX-Sluice-Reject: %s\r\n", retry_s, why);
    r->answer_keep = r->req.done;
    req_answer(r, 503, why, "the backends are saturated; retry later", extra);
}

/* ---- access log ---- */

/* The finished request's times into the meter's series (meter.h): the pool's total,
 * queueing and upstream time, its backend's upstream time, its tenant's and route's
 * total time. */
static void measure(struct request *r)
{
    struct meter *m = r->w->px->meter;
    if (!m || !r->t_start_us)
        return;
    int th = r->w->id;
    uint64_t now = admit_now_ns() / 1000;
    uint64_t total = now - r->t_start_us;
    meter_record(m->pool, th, total, r->status);
    if (r->t_ready_us && !r->bypass)
        meter_record(m->queue, th, (r->t_slot_us ? r->t_slot_us : now) - r->t_ready_us, r->status);
    if (r->t_slot_us) {
        meter_record(m->upstream, th, now - r->t_slot_us, r->status);
        if (r->backend)
            meter_record(atomic_load_explicit(&r->backend->st->ser, memory_order_acquire), th,
                         now - r->t_slot_us, r->status);
    }
    if (r->tenant)
        meter_record(atomic_load_explicit(&r->tenant->st->ser, memory_order_acquire), th, total,
                     r->status);
    struct route_state *rs = admit_route_state(&r->rt->admit, req_cfg(r), r->route);
    if (rs)
        meter_record(atomic_load_explicit(&rs->ser, memory_order_acquire), th, total, r->status);
}

void req_access_log(struct request *r)
{
    measure(r);
    if (!log_access_enabled())
        return;
    char line[2048], ts[40];
    uint64_t now = up_now_ms();
    log_time(ts, sizeof ts);
    double total = (double)(now - r->t_start);
    double upt = r->t_up_start ? (double)((r->t_up_end ? r->t_up_end : now) - r->t_up_start) : -1;
    char upbuf[32];
    if (upt >= 0)
        snprintf(upbuf, sizeof upbuf, "%.0f", upt);
    else
        snprintf(upbuf, sizeof upbuf, "-");
    const char *proto = r->stream ? "HTTP/2" : r->minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    int n = snprintf(line, sizeof line, "%s %s %s %s %s %d %" PRIu64 " %" PRIu64 " %s %.0f %s %s %s\n",
                     ts, r->c->peer, r->tenant ? admit_label(r->tenant) : "-",
                     r->method[0] ? r->method : "-", r->target ? r->target : "-",
                     r->status, r->bytes_in, r->bytes_out,
                     r->backend ? r->backend->conf->name : "-", total, upbuf,
                     r->rid[0] ? r->rid : "-", proto);
    if (n > 0)
        log_access(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}
