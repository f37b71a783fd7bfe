/* body: a message body moved between buffers, framing checked and re-framed (body.h). */
#include <sluice/body.h>

#include <string.h>

#include <event2/buffer.h>

void body_init(struct body *b, enum http1_body kind, uint64_t len, int out_chunked)
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
int body_pump(struct body *b, struct evbuffer *src, struct evbuffer *dst, int eof)
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
