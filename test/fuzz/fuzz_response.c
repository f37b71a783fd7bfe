/* libFuzzer target: the response-head parser (http1_parse_response) on arbitrary bytes, as
 * sluice uses it for what a backend sends, with invariants on everything it returns.
 * `make fuzz` runs it on test/fuzz/corpus/response/ (seeds: raw responses, as Gunicorn,
 * Django/Flask and odd backends send them; no option bytes).
 *
 * For each input:
 *  1. parse with the limits sluice runs with by default (16k head, 8k line, 100 headers)
 *     and with small ones, for each request method that changes framing (GET, HEAD,
 *     CONNECT); every result is checked (check_result): length within the input and ending
 *     in the blank line, pointers inside the head, status 100..599, header names tokens,
 *     values trimmed and free of CTLs, framing consistent (no CL+TE, CL digits, bodyless
 *     statuses, close-delimited => no keep-alive), error => 502;
 *  2. streaming: an accepted head must be INCOMPLETE (never an error) for every prefix cut
 *     at a line boundary or at the line limit, and parse the same from exactly its n bytes
 *     (bytes after a head never change it); an incomplete input stays incomplete on its
 *     prefixes. A backend's bytes arrive split anywhere, so the answer may not depend on it;
 *  3. round trip: the head rebuilt from the parsed fields (as the proxy forwards it)
 *     parses again to the same fields;
 *  4. the proxy's read loop (request_upstream.c read_response_head): the head span
 *     (through the first CRLFCRLF, capped at max_head + 2), interim 1xx answers skipped,
 *     then the body after the head through body_pump, the code the proxy runs. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem; the Makefile's fuzz line does not pass -D_GNU_SOURCE */
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include <sluice/http1.h>
#include <sluice/body.h>

#include "fuzz_common.h"

#define MAXH 128

static const struct http1_limits lim_default = {.max_head = 16384, .max_line = 8192,
                                                .max_headers = 100};
static const struct http1_limits lim_small = {.max_head = 1024, .max_line = 256,
                                              .max_headers = 8};

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int ieq(const char *a, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n != l)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)lit[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

static size_t count_named(const struct http1_msg *m, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < m->num_headers; i++)
        c += ieq(m->headers[i].name, m->headers[i].name_len, name);
    return c;
}

/* Everything a successful or failed parse of buf[0..len) may claim. */
static void check_result(const char *buf, size_t len, int n, int st, const struct http1_msg *m,
                         const struct http1_limits *lim, size_t max_hdrs,
                         enum http1_method meth)
{
    FUZZ_CHECK(n == HTTP1_INCOMPLETE || n == HTTP1_ERROR || n > 0, "bad return %d", n);
    if (n == HTTP1_ERROR) {
        FUZZ_CHECK(st == 502, "error status %d, want 502", st);
        return;
    }
    if (n == HTTP1_INCOMPLETE) {
        FUZZ_CHECK(len <= lim->max_head, "INCOMPLETE with %zu bytes > max_head %zu", len,
                   lim->max_head);
        return;
    }
    size_t h = (size_t)n;
    FUZZ_CHECK(h <= len, "head length %zu > input %zu", h, len);
    FUZZ_CHECK(h <= lim->max_head, "head length %zu > max_head %zu", h, lim->max_head);
    FUZZ_CHECK(h >= 16 && memcmp(buf + h - 4, "\r\n\r\n", 4) == 0,
               "head of %zu bytes does not end with an empty line", h);
    /* the status line */
    FUZZ_CHECK(m->minor == 0 || m->minor == 1, "minor %d", m->minor);
    FUZZ_CHECK(m->status >= 100 && m->status <= 599, "status %d outside 100..599", m->status);
    FUZZ_CHECK(fuzz_within(m->reason, buf, buf + h) &&
                   fuzz_within(m->reason + m->reason_len, buf, buf + h),
               "reason outside the head");
    for (size_t i = 0; i < m->reason_len; i++) {
        unsigned char c = (unsigned char)m->reason[i];
        FUZZ_CHECK(c == '\t' || c == ' ' || (c > 0x20 && c != 0x7f), "CTL 0x%02x in reason", c);
    }
    /* headers */
    size_t cap = lim->max_headers < max_hdrs ? lim->max_headers : max_hdrs;
    FUZZ_CHECK(m->num_headers <= cap, "%zu headers > cap %zu", m->num_headers, cap);
    const char *prev_end = m->reason + m->reason_len;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *x = &m->headers[i];
        FUZZ_CHECK(x->name_len > 0, "empty header name");
        FUZZ_CHECK(fuzz_within(x->name, buf, buf + h) &&
                       fuzz_within(x->name + x->name_len, buf, buf + h) &&
                       fuzz_within(x->value, buf, buf + h) &&
                       fuzz_within(x->value + x->value_len, buf, buf + h),
                   "header %zu outside the head", i);
        FUZZ_CHECK(x->name >= prev_end && x->value >= x->name + x->name_len + 1,
                   "header %zu overlaps the one before", i);
        prev_end = x->value + x->value_len;
        for (size_t k = 0; k < x->name_len; k++)
            FUZZ_CHECK(is_tchar((unsigned char)x->name[k]), "non-token byte in header name");
        FUZZ_CHECK(x->name[x->name_len] == ':', "name not followed by ':'");
        for (size_t k = 0; k < x->value_len; k++) {
            unsigned char c = (unsigned char)x->value[k];
            FUZZ_CHECK(c == '\t' || c == ' ' || (c > 0x20 && c != 0x7f),
                       "CTL 0x%02x in a header value", c);
        }
        if (x->value_len) {
            FUZZ_CHECK(x->value[0] != ' ' && x->value[0] != '\t' &&
                           x->value[x->value_len - 1] != ' ' && x->value[x->value_len - 1] != '\t',
                       "header value not trimmed");
        }
        int is_cl = ieq(x->name, x->name_len, "content-length");
        int is_te = ieq(x->name, x->name_len, "transfer-encoding");
        int is_conn = ieq(x->name, x->name_len, "connection");
        FUZZ_CHECK(is_cl == (x->id == HTTP1_H_CONTENT_LENGTH), "Content-Length id mismatch");
        FUZZ_CHECK(is_te == (x->id == HTTP1_H_TRANSFER_ENCODING), "Transfer-Encoding id mismatch");
        FUZZ_CHECK(is_conn == (x->id == HTTP1_H_CONNECTION), "Connection id mismatch");
        if (is_cl || is_te || is_conn)
            FUZZ_CHECK(x->hop, "framing header not hop-by-hop");
    }
    /* framing */
    size_t ncl = count_named(m, "content-length"), nte = count_named(m, "transfer-encoding");
    FUZZ_CHECK(!(ncl && nte), "Content-Length and Transfer-Encoding both accepted");
    FUZZ_CHECK(ncl <= 1, "%zu Content-Length fields accepted", ncl);
    FUZZ_CHECK(!(nte && m->minor == 0), "Transfer-Encoding accepted in HTTP/1.0");
    if (ncl) {
        const struct http1_header *cl = http1_find(m, HTTP1_H_CONTENT_LENGTH);
        uint64_t v = 0;
        FUZZ_CHECK(cl && cl->value_len > 0 && cl->value_len <= 18, "odd Content-Length");
        for (size_t k = 0; k < cl->value_len; k++) {
            FUZZ_CHECK(cl->value[k] >= '0' && cl->value[k] <= '9', "non-digit Content-Length");
            v = v * 10 + (uint64_t)(cl->value[k] - '0');
        }
        if (m->body == HTTP1_BODY_LENGTH)
            FUZZ_CHECK(v == m->content_length, "content_length %llu != field %llu",
                       (unsigned long long)m->content_length, (unsigned long long)v);
    }
    int bodyless = meth == HTTP1_M_HEAD || m->status < 200 || m->status == 204 ||
                   m->status == 304 || (meth == HTTP1_M_CONNECT && m->status < 300);
    if (bodyless)
        FUZZ_CHECK(m->body == HTTP1_BODY_NONE, "status %d to method %d has body kind %d",
                   m->status, meth, m->body);
    else if (ncl)
        FUZZ_CHECK(m->body == HTTP1_BODY_LENGTH, "Content-Length but body kind %d", m->body);
    else if (nte)
        FUZZ_CHECK(m->body == HTTP1_BODY_CHUNKED || m->body == HTTP1_BODY_CLOSE,
                   "Transfer-Encoding but body kind %d", m->body);
    else
        FUZZ_CHECK(m->body == HTTP1_BODY_CLOSE, "no framing but body kind %d", m->body);
    if (m->body == HTTP1_BODY_CLOSE)
        FUZZ_CHECK(!m->keep_alive, "close-delimited body with keep_alive");
}

/* Same fields at the same offsets (bases a and b). */
static void same_msg(const char *a, const struct http1_msg *x, const char *b,
                     const struct http1_msg *y)
{
    FUZZ_CHECK(x->status == y->status && x->minor == y->minor && x->body == y->body &&
                   x->keep_alive == y->keep_alive && x->num_headers == y->num_headers &&
                   x->upgrade == y->upgrade &&
                   (x->body != HTTP1_BODY_LENGTH || x->content_length == y->content_length),
               "the same head parsed differently");
    FUZZ_CHECK(x->reason_len == y->reason_len && x->reason - a == y->reason - b,
               "reason differs");
    for (size_t i = 0; i < x->num_headers; i++)
        FUZZ_CHECK(x->headers[i].name - a == y->headers[i].name - b &&
                       x->headers[i].name_len == y->headers[i].name_len &&
                       x->headers[i].value - a == y->headers[i].value - b &&
                       x->headers[i].value_len == y->headers[i].value_len &&
                       x->headers[i].id == y->headers[i].id && x->headers[i].hop == y->headers[i].hop,
                   "header %zu differs", i);
}

static int parse(const char *buf, size_t len, const struct http1_limits *lim,
                 struct http1_header *hdrs, size_t max_hdrs, enum http1_method meth,
                 struct http1_msg *m, int *st)
{
    *st = 0;
    return http1_parse_response(buf, len, lim, hdrs, max_hdrs, meth, m, st);
}

/* Parse a fresh exact-size copy of buf[0..k) and expect INCOMPLETE. */
static void expect_incomplete(const char *buf, size_t k, const struct http1_limits *lim,
                              enum http1_method meth, size_t full, const char *whole)
{
    struct http1_header hdrs[MAXH];
    struct http1_msg m;
    int st;
    char *p = fuzz_dup(buf, k);
    int r = parse(p, k, lim, hdrs, MAXH, meth, &m, &st);
    free(p);
    FUZZ_CHECK(r == HTTP1_INCOMPLETE,
               "prefix of %zu bytes gives %d (status %d) but the whole %zu bytes %s: "
               "the result depends on how the bytes arrive", k, r, st, full, whole);
}

static void streaming(const char *buf, size_t len, int n, const struct http1_msg *m,
                      const struct http1_limits *lim, enum http1_method meth)
{
    if (n == HTTP1_INCOMPLETE) {
        if (len > 1)
            expect_incomplete(buf, len - 1, lim, meth, len, "are INCOMPLETE");
        if (len > 2)
            expect_incomplete(buf, len / 2, lim, meth, len, "are INCOMPLETE");
        return;
    }
    if (n <= 0)
        return;
    size_t h = (size_t)n;
    /* the same head from exactly its own bytes */
    struct http1_header hdrs[MAXH];
    struct http1_msg m2;
    int st;
    char *p = fuzz_dup(buf, h);
    int r = parse(p, h, lim, hdrs, MAXH, meth, &m2, &st);
    FUZZ_CHECK(r == n, "head alone gives %d, with what follows %d", r, n);
    same_msg(buf, m, p, &m2);
    free(p);
    /* every prefix cut at or inside a line end, and at the line limit */
    int checked = 0;
    for (size_t i = 0; i + 1 < h && checked < 48; i++)
        if (buf[i] == '\r') {
            expect_incomplete(buf, i, lim, meth, h, "parse as a head");
            expect_incomplete(buf, i + 1, lim, meth, h, "parse as a head");
            checked++;
        }
    size_t cuts[] = {h - 1, lim->max_line - 1, lim->max_line, lim->max_line + 1,
                     lim->max_line + 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        if (cuts[i] > 0 && cuts[i] < h)
            expect_incomplete(buf, cuts[i], lim, meth, h, "parse as a head");
}

/* Rebuild the head from its fields (what the proxy writes, less its own edits) and parse it
 * again: the fields must come back the same. */
static void round_trip(const struct http1_msg *m, enum http1_method meth)
{
    size_t cap = 64 + m->reason_len;
    for (size_t i = 0; i < m->num_headers; i++)
        cap += m->headers[i].name_len + m->headers[i].value_len + 4;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL, "oom");
    int o = snprintf(out, cap, "HTTP/1.%d %03d ", m->minor, m->status);
    size_t len = (size_t)o;
    memcpy(out + len, m->reason, m->reason_len);
    len += m->reason_len;
    memcpy(out + len, "\r\n", 2);
    len += 2;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *x = &m->headers[i];
        memcpy(out + len, x->name, x->name_len);
        len += x->name_len;
        memcpy(out + len, ": ", 2);
        len += 2;
        memcpy(out + len, x->value, x->value_len);
        len += x->value_len;
        memcpy(out + len, "\r\n", 2);
        len += 2;
    }
    memcpy(out + len, "\r\n", 2);
    len += 2;
    FUZZ_CHECK(len <= cap, "round trip buffer");
    char *p = fuzz_dup(out, len);
    free(out);
    struct http1_limits big = {.max_head = 1 << 20, .max_line = 1 << 20,
                               .max_headers = MAXH};
    struct http1_header hdrs[MAXH];
    struct http1_msg m2;
    int st;
    int r = parse(p, len, &big, hdrs, MAXH, meth, &m2, &st);
    FUZZ_CHECK(r == (int)len, "rebuilt head gives %d (status %d), want %zu", r, st, len);
    FUZZ_CHECK(m2.status == m->status && m2.minor == m->minor && m2.body == m->body &&
                   m2.keep_alive == m->keep_alive && m2.num_headers == m->num_headers &&
                   m2.reason_len == m->reason_len &&
                   memcmp(m2.reason, m->reason, m->reason_len) == 0 &&
                   (m->body != HTTP1_BODY_LENGTH || m2.content_length == m->content_length),
               "rebuilt head parses differently");
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *a = &m->headers[i], *b = &m2.headers[i];
        FUZZ_CHECK(a->name_len == b->name_len && a->value_len == b->value_len &&
                       memcmp(a->name, b->name, a->name_len) == 0 &&
                       memcmp(a->value, b->value, a->value_len) == 0 && a->id == b->id &&
                       a->hop == b->hop,
                   "rebuilt header %zu differs", i);
    }
    free(p);
}

/* evbuf_head_span without an evbuffer: through the first CRLFCRLF, else all; capped. */
static size_t head_span(const char *p, size_t len, size_t cap)
{
    const char *e = memmem(p, len, "\r\n\r\n", 4);
    size_t take = e ? (size_t)(e - p) + 4 : len;
    return take < cap ? take : cap;
}

/* What request_upstream.c does with a backend's bytes: skip interim answers, take the final
 * head, then pump the body that follows with the proxy's own code. */
static void proxy_read(const char *data, size_t len, enum http1_method meth, int upgrade)
{
    const struct http1_limits *lim = &lim_default;
    struct http1_header hdrs[100];
    size_t off = 0;
    while (off < len) {
        size_t take = head_span(data + off, len - off, lim->max_head + 2);
        char *p = fuzz_dup(data + off, take);
        struct http1_msg m;
        int st;
        int n = parse(p, take, lim, hdrs, 100, meth, &m, &st);
        check_result(p, take, n, st, &m, lim, 100, meth);
        if (n <= 0) {
            free(p);
            return;
        }
        if (m.status >= 100 && m.status < 200 && !(m.status == 101 && upgrade)) {
            free(p);
            off += (size_t)n;
            continue;
        }
        off += (size_t)n;
        enum http1_body kind = m.body;
        uint64_t cl = m.content_length;
        free(p);
        if (m.status == 101 && upgrade)
            return; /* a tunnel from here on */
        /* the body: out_chunked as for an HTTP/1.1 client when the source is not counted */
        int out_chunked = kind == HTTP1_BODY_CHUNKED || kind == HTTP1_BODY_CLOSE;
        struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
        FUZZ_CHECK(src && dst, "oom");
        evbuffer_add(src, data + off, len - off);
        struct body b;
        body_init(&b, kind, cl, out_chunked);
        int rc = body_pump(&b, src, dst, 1);
        size_t moved = len - off - evbuffer_get_length(src);
        FUZZ_CHECK(b.total <= moved, "body moved %llu payload bytes from %zu",
                   (unsigned long long)b.total, moved);
        if (kind == HTTP1_BODY_LENGTH) {
            FUZZ_CHECK((rc == 0) == (len - off >= cl), "length body: rc %d with %zu of %llu",
                       rc, len - off, (unsigned long long)cl);
            if (rc == 0)
                FUZZ_CHECK(b.done && b.total == cl && evbuffer_get_length(dst) == cl,
                           "length body not moved whole");
        } else if (kind == HTTP1_BODY_CLOSE) {
            FUZZ_CHECK(rc == 0 && b.done && b.total == len - off, "close body not moved whole");
        } else if (kind == HTTP1_BODY_NONE) {
            FUZZ_CHECK(rc == 0 && b.done && b.total == 0, "bodyless response moved a body");
        } else if (rc == 0) {
            FUZZ_CHECK(b.done, "chunked body: no error at eof but not done");
        }
        evbuffer_free(src);
        evbuffer_free(dst);
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    static const enum http1_method meths[] = {HTTP1_M_GET, HTTP1_M_HEAD, HTTP1_M_CONNECT};
    static const struct http1_limits *lims[] = {&lim_default, &lim_small};
    char *buf = fuzz_dup(data, len);
    struct http1_header hdrs[MAXH];
    for (size_t li = 0; li < 2; li++)
        for (size_t mi = 0; mi < 3; mi++) {
            struct http1_msg m;
            int st;
            /* a small caller array too: the parser must respect max_hdrs */
            size_t max_hdrs = mi == 2 ? 3 : MAXH;
            int n = parse(buf, len, lims[li], hdrs, max_hdrs, meths[mi], &m, &st);
            check_result(buf, len, n, st, &m, lims[li], max_hdrs, meths[mi]);
            if (mi == 0) {
                streaming(buf, len, n, &m, lims[li], meths[mi]);
                if (n > 0)
                    round_trip(&m, meths[mi]);
            }
        }
    free(buf);
    proxy_read((const char *)data, len, HTTP1_M_GET, 0);
    proxy_read((const char *)data, len, HTTP1_M_GET, 1);
    return 0;
}
