/* libFuzzer target: the chunked decoder (http1_chunked_*), differential over how the bytes
 * arrive. `make fuzz` runs it on test/fuzz/corpus/chunked/.
 *
 * Input layout:
 *   byte 0        bits 0-3: K, the number of split points (0..15)
 *                 bits 4-5: max_trailer: 0 (the default, 8192), 16, 64 or 1024
 *   bytes 1..2K   K split points, little-endian uint16, each taken modulo (body length + 1)
 *   the rest      the chunked body (what follows a response or request head)
 *
 * The body is decoded four ways, which must agree:
 *   A. one shot: all bytes at once;
 *   B. split: the same bytes in fragments cut at the split points, the unconsumed bytes kept
 *      and the next fragment appended, as a caller of http1_chunked_parse must;
 *   C. the proxy's own loop, body_pump() (body.c), fed the same fragments
 *      through an evbuffer;
 *   D. the body sluice re-chunks (body_pump with out_chunked) decodes back to the
 *      same payload.
 * Same final state (done / error / waiting), same payload bytes, same number of input
 * bytes consumed (the bytes after the last chunk belong to the next message). Every call
 * sees an exact-size heap copy of at most 8200 bytes (the proxy's window), so ASan flags a
 * read past the end; the payload never exceeds the input; nothing is consumed after the end
 * or an error. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include <sluice/http1.h>
#include <sluice/body.h>

#include "fuzz_common.h"

#define WINDOW 8200 /* body.c: bytes handed to http1_chunked_parse at once */

struct dec {
    struct http1_chunked c;
    char *pend;      /* received, not yet consumed */
    size_t plen;
    char *out;       /* payload decoded so far */
    size_t olen;
    size_t consumed; /* input bytes consumed: framing + payload */
};

static void dec_init(struct dec *d, size_t max_trailer, size_t cap)
{
    memset(d, 0, sizeof *d);
    http1_chunked_init(&d->c, max_trailer);
    d->pend = malloc(cap ? cap : 1);
    d->out = malloc(cap ? cap : 1);
    FUZZ_CHECK(d->pend && d->out, "oom");
}

static void dec_free(struct dec *d)
{
    free(d->pend);
    free(d->out);
}

static void drop(struct dec *d, size_t n)
{
    memmove(d->pend, d->pend + n, d->plen - n);
    d->plen -= n;
    d->consumed += n;
}

static int final_state(enum http1_chunk_state s)
{
    return s == HTTP1_CH_DONE ? 1 : s == HTTP1_CH_ERROR ? -1 : 0;
}

/* Append a fragment and decode as far as the bytes allow. */
static void dec_feed(struct dec *d, const char *frag, size_t n)
{
    memcpy(d->pend + d->plen, frag, n);
    d->plen += n;
    for (int guard = 0;; guard++) {
        FUZZ_CHECK(guard < 1 << 20, "decoder loops");
        FUZZ_CHECK(d->c.state <= HTTP1_CH_ERROR, "state %d", (int)d->c.state);
        FUZZ_CHECK(d->c.remaining <= (1ULL << 60), "chunk size %llu over 2^60",
                   (unsigned long long)d->c.remaining);
        if (d->c.state == HTTP1_CH_DATA) {
            FUZZ_CHECK(d->c.remaining > 0, "in chunk data with nothing remaining");
            size_t m = d->plen < d->c.remaining ? d->plen : (size_t)d->c.remaining;
            if (m == 0)
                return;
            memcpy(d->out + d->olen, d->pend, m);
            d->olen += m;
            drop(d, m);
            http1_chunked_data(&d->c, m);
            continue;
        }
        size_t take = d->plen < WINDOW ? d->plen : WINDOW;
        char *p = fuzz_dup(d->pend, take);
        enum http1_chunk_state before = d->c.state;
        size_t used = http1_chunked_parse(&d->c, p, take);
        free(p);
        FUZZ_CHECK(used <= take, "consumed %zu of %zu", used, take);
        if (before == HTTP1_CH_DONE || before == HTTP1_CH_ERROR)
            FUZZ_CHECK(used == 0 && d->c.state == before, "consumed after the end or an error");
        drop(d, used);
        if (d->c.state == HTTP1_CH_DONE || d->c.state == HTTP1_CH_ERROR)
            return;
        if (used == 0 && d->c.state != HTTP1_CH_DATA)
            return; /* needs more bytes */
    }
}

/* Fragment boundaries: 0 = c[0] <= ... <= c[nc-1] = len. */
static size_t cuts(const uint8_t *sp, size_t k, size_t len, size_t *c)
{
    size_t n = 0;
    c[n++] = 0;
    for (size_t i = 0; i < k; i++)
        c[n++] = (size_t)(sp[2 * i] | sp[2 * i + 1] << 8) % (len + 1);
    c[n++] = len;
    for (size_t i = 1; i < n; i++) /* insertion sort: n <= 17 */
        for (size_t j = i; j > 0 && c[j - 1] > c[j]; j--) {
            size_t t = c[j];
            c[j] = c[j - 1];
            c[j - 1] = t;
        }
    return n;
}

static void same(const struct dec *a, const struct dec *b, const char *what)
{
    FUZZ_CHECK(final_state(a->c.state) == final_state(b->c.state),
               "%s: final state %d vs one shot %d", what, (int)b->c.state, (int)a->c.state);
    FUZZ_CHECK(a->olen == b->olen && memcmp(a->out, b->out, a->olen) == 0,
               "%s: payload %zu bytes vs one shot %zu", what, b->olen, a->olen);
    FUZZ_CHECK(a->consumed == b->consumed, "%s: consumed %zu vs one shot %zu", what,
               b->consumed, a->consumed);
}

/* C: the proxy's loop, fragment by fragment; eof after the last. */
static void proxy_pump(const struct dec *a, const char *body, const size_t *c, size_t nc)
{
    struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
    FUZZ_CHECK(src && dst, "oom");
    struct body b;
    body_init(&b, HTTP1_BODY_CHUNKED, 0, 0);
    int rc = 0;
    size_t added = 0;
    for (size_t i = 0; i + 1 < nc && rc == 0 && !b.done; i++) {
        evbuffer_add(src, body + c[i], c[i + 1] - c[i]);
        added += c[i + 1] - c[i];
        rc = body_pump(&b, src, dst, 0);
    }
    int rc_eof = rc == 0 && !b.done ? body_pump(&b, src, dst, 1) : rc;
    size_t olen = evbuffer_get_length(dst);
    size_t consumed = added - evbuffer_get_length(src);
    int st = final_state(a->c.state);
    if (st == 1) {
        FUZZ_CHECK(rc == 0 && b.done, "proxy: rc %d done %d, one shot complete", rc, b.done);
        FUZZ_CHECK(consumed == a->consumed, "proxy consumed %zu, one shot %zu", consumed,
                   a->consumed);
    } else if (st == -1) {
        FUZZ_CHECK(rc == -1 && !b.done, "proxy: rc %d done %d, one shot error", rc, b.done);
    } else {
        FUZZ_CHECK(rc == 0 && rc_eof == -1 && !b.done,
                   "proxy: rc %d / at eof %d, done %d; one shot waits for more", rc, rc_eof,
                   b.done);
    }
    FUZZ_CHECK(b.total == olen, "proxy counted %llu, moved %zu", (unsigned long long)b.total,
               olen);
    FUZZ_CHECK(olen == a->olen, "proxy payload %zu bytes, one shot %zu", olen, a->olen);
    if (olen) {
        unsigned char *o = evbuffer_pullup(dst, -1);
        FUZZ_CHECK(memcmp(o, a->out, olen) == 0, "proxy payload differs");
    }
    evbuffer_free(src);
    evbuffer_free(dst);
}

/* D: what the proxy re-chunks from a complete body decodes back to the same payload. */
static void rechunk(const struct dec *a, const char *body, size_t len)
{
    struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
    FUZZ_CHECK(src && dst, "oom");
    evbuffer_add(src, body, len);
    struct body b;
    body_init(&b, HTTP1_BODY_CHUNKED, 0, 1);
    int rc = body_pump(&b, src, dst, 0);
    FUZZ_CHECK(rc == 0 && b.done, "re-chunk: rc %d done %d", rc, b.done);
    size_t n = evbuffer_get_length(dst);
    char *o = fuzz_dup(evbuffer_pullup(dst, -1), n);
    struct dec r;
    dec_init(&r, 0, n);
    dec_feed(&r, o, n);
    FUZZ_CHECK(r.c.state == HTTP1_CH_DONE && r.consumed == n,
               "re-chunked body: state %d, %zu of %zu bytes", (int)r.c.state, r.consumed, n);
    FUZZ_CHECK(r.olen == a->olen && memcmp(r.out, a->out, a->olen) == 0,
               "re-chunked payload differs");
    dec_free(&r);
    free(o);
    evbuffer_free(src);
    evbuffer_free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t trailer_max[] = {0, 16, 64, 1024};
    if (size < 1)
        return 0;
    size_t k = data[0] & 15;
    size_t max_trailer = trailer_max[(data[0] >> 4) & 3];
    if (size < 1 + 2 * k)
        return 0;
    const uint8_t *sp = data + 1;
    const char *body = (const char *)data + 1 + 2 * k;
    size_t len = size - 1 - 2 * k;

    struct dec a, b;
    dec_init(&a, max_trailer, len);
    dec_feed(&a, body, len);
    FUZZ_CHECK(a.olen <= len && a.consumed <= len, "payload %zu / consumed %zu > input %zu",
               a.olen, a.consumed, len);
    FUZZ_CHECK(a.consumed + a.plen == len, "bytes lost");

    size_t c[17];
    size_t nc = cuts(sp, k, len, c);
    dec_init(&b, max_trailer, len);
    for (size_t i = 0; i + 1 < nc; i++)
        dec_feed(&b, body + c[i], c[i + 1] - c[i]);
    same(&a, &b, "split");

    /* byte by byte: the hardest split (bounded so a long input stays fast) */
    if (len <= 512) {
        struct dec one;
        dec_init(&one, max_trailer, len);
        for (size_t i = 0; i < len; i++)
            dec_feed(&one, body + i, 1);
        same(&a, &one, "byte by byte");
        dec_free(&one);
    }

    if (max_trailer == 0) { /* the proxy's decoder has the default trailer limit */
        proxy_pump(&a, body, c, nc);
        if (a.c.state == HTTP1_CH_DONE)
            rechunk(&a, body, len);
    }
    dec_free(&a);
    dec_free(&b);
    return 0;
}
