/* session_answer: what a session answers by itself (errors, refusals with Retry-After,
 * 429 with RateLimit fields, https redirects): the head and body, the counter it goes to,
 * the error-log and access-log lines, and whether the connection is kept. It does not
 * decide when to answer (session.c, session_admit.c, session_upstream.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include <sluice/admit.h>
#include <sluice/listener.h>
#include <sluice/log.h>
#include <sluice/runtime.h>
#include <sluice/session-int.h>
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
        return strcmp(code, "buffers-full") == 0 ? STAT_rejected_buffers : error_stat(status);
    if (s->tenant)
        admit_rejected(s->tenant, (enum reject_reason)r);
    return by_reason[r];
}

/* Answer a status the proxy produced (extra: more header lines, may be NULL), log it,
 * and close the connection. */
void sess_send_answer(struct session *s, int status, const char *code, const char *msg,
                      const char *extra)
{
    struct worker *w = s->w;
    /* a refusal (429/503) of a request whose body was read keeps the connection, as NGINX
     * does after limit_req; every other error closes it */
    int keep = s->answer_keep && s->keep_alive && !w->draining && !s->resp_started;
    sess_drop_upstream(s);
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
    sess_access_log(s);
    sess_release_tenant(s);
    sess_release_backend(s);
    if (keep) {
        sess_flush_cli(s);
        sess_next_request(s);
        return;
    }
    sess_close_after_flush(s);
}

void sess_send_error(struct session *s, int status, const char *code, const char *msg)
{
    sess_send_answer(s, status, code, msg, NULL);
}

/* redirect_http: a plain-HTTP request is sent to the same host and target over HTTPS. */
void sess_send_redirect(struct session *s, const struct http1_msg *m)
{
    const char *h = m->authority;
    size_t hl = m->authority_len;
    if (!h && m->host >= 0) {
        h = m->headers[m->host].value;
        hl = m->headers[m->host].value_len;
    }
    if (!h || hl == 0) {
        sess_send_error(s, 400, "no-host", "a Host is needed to redirect to https");
        return;
    }
    const char *colon = h[0] == '[' ? memchr(h, ']', hl) : memchr(h, ':', hl);
    if (colon && h[0] == '[')
        colon = (size_t)(colon - h) + 1 < hl ? colon + 1 : NULL;
    size_t name_len = colon ? (size_t)(colon - h) : hl;
    int port = listener_port(sess_cfg_of(s)->proxy.tls_listen.v[0]);
    char loc[MAX_LOG_TARGET + 400], portbuf[16] = "";
    if (port != 443)
        snprintf(portbuf, sizeof portbuf, ":%d", port);
    snprintf(loc, sizeof loc, "Location: https://%.*s%s%s\r\n", (int)(name_len < 255 ? name_len : 255),
             h, portbuf, s->target ? s->target : "/");
    stats_add(&s->w->stats, STAT_redirects, 1);
    sess_send_answer(s, 308, "redirect-https", "this service is served over https", loc);
}

/* 429 from the tenant's rate limit, with when to come back (RFC 6585 4, RFC 9110 10.2.3) and
 * the limit in the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers). */
void sess_send_rate_limited(struct session *s, uint64_t wait_ns)
{
    const struct tenant_conf *tc = s->tenant->conf;
    uint64_t secs = (wait_ns + 999999999ULL) / 1000000000ULL;
    double window = (double)tc->burst / tc->rate;
    char extra[320];
    snprintf(extra, sizeof extra,
             "Retry-After: %" PRIu64 "\r\nX-Sluice-Reject: rate\r\n"
             "RateLimit-Policy: \"%s\";q=%d;w=%.0f\r\nRateLimit: \"%s\";r=0;t=%" PRIu64 "\r\n",
             secs, tc->name, tc->burst, window < 1 ? 1 : window, tc->name, secs);
    sess_send_answer(s, 429, "rate", "this tenant is over its request rate; retry later",
                     extra);
}
