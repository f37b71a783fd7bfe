/* libFuzzer target: request and response head parsing and chunked decoding must never
 * crash, read out of bounds or accept inconsistent framing. `make fuzz` runs it. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/http1.h>

static void check_msg(const struct http1_msg *m, size_t head, size_t len)
{
    if (head > len)
        abort();
    if (m->body == HTTP1_BODY_LENGTH && http1_find(m, HTTP1_H_TRANSFER_ENCODING))
        abort(); /* CL and TE together must never pass */
    for (size_t i = 0; i < m->num_headers; i++)
        if (m->headers[i].name_len == 0)
            abort();
}

static void chunked(const uint8_t *data, size_t len)
{
    struct http1_chunked c;
    http1_chunked_init(&c, 1024);
    size_t pos = 0;
    while (pos < len && c.state != HTTP1_CH_DONE && c.state != HTTP1_CH_ERROR) {
        if (c.state == HTTP1_CH_DATA) {
            size_t n = len - pos < c.remaining ? len - pos : (size_t)c.remaining;
            http1_chunked_data(&c, n);
            pos += n;
            continue;
        }
        size_t used = http1_chunked_parse(&c, (const char *)data + pos, len - pos);
        if (used > len - pos)
            abort();
        if (used == 0 && c.state != HTTP1_CH_DATA)
            break;
        pos += used;
    }
}

/* Streaming: an accepted head must be INCOMPLETE (never an error) on every prefix cut at a
 * line end or at the request-line limit, since a client's bytes arrive split anywhere. */
static void prefixes(const char *buf, size_t n, const struct http1_limits *lim)
{
    struct http1_header hdrs[64];
    struct http1_msg m;
    size_t cuts[2 * 48 + 4], nc = 0;
    for (size_t i = 0; i + 1 < n && nc < 2 * 48; i++)
        if (buf[i] == '\r') {
            cuts[nc++] = i;
            cuts[nc++] = i + 1;
        }
    cuts[nc++] = n - 1;
    cuts[nc++] = lim->max_line;
    cuts[nc++] = lim->max_line + 1;
    cuts[nc++] = lim->max_line + 2;
    for (size_t i = 0; i < nc; i++) {
        size_t k = cuts[i];
        if (k == 0 || k >= n)
            continue;
        char *p = malloc(k);
        if (!p)
            return;
        memcpy(p, buf, k);
        int status = 0;
        int r = http1_parse_request(p, k, lim, hdrs, 64, &m, &status);
        free(p);
        if (r != HTTP1_INCOMPLETE) {
            fprintf(stderr, "prefix of %zu bytes of an accepted %zu-byte head gives %d (%d)\n",
                    k, n, r, status);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct http1_header hdrs[64];
    struct http1_msg m;
    struct http1_limits lim = {.max_head = 4096, .max_line = 1024, .max_headers = 64};
    int status = 0;
    /* copy to an exact-size heap buffer so ASan sees any read past the end */
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, len);
    int n = http1_parse_request(buf, len, &lim, hdrs, 64, &m, &status);
    if (n > 0) {
        check_msg(&m, (size_t)n, len);
        prefixes(buf, (size_t)n, &lim);
    } else if (n == HTTP1_ERROR && status != 400 && status != 414 && status != 431 && status != 501)
        abort();
    n = http1_parse_response(buf, len, &lim, hdrs, 64, HTTP1_M_GET, &m, &status);
    if (n > 0)
        check_msg(&m, (size_t)n, len);
    chunked((const uint8_t *)buf, len);
    free(buf);
    return 0;
}
