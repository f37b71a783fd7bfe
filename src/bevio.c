/* bevio: finding a head's end in an evbuffer in O(n) however it arrives (bevio.h). */
#include <sluice/bevio.h>

#include <string.h>
#include <sys/uio.h>

#include <event2/buffer.h>

/* The offset of the first CRLFCRLF in p[from..n), or -1: one memchr per line. */
static long blank_line(const char *p, size_t n, size_t from)
{
    while (from + 4 <= n) {
        const char *lf = memchr(p + from + 3, '\n', n - from - 3); /* the last LF */
        if (!lf)
            return -1;
        size_t j = (size_t)(lf - p);
        if (p[j - 1] == '\r' && p[j - 2] == '\n' && p[j - 3] == '\r')
            return (long)(j - 3);
        from = j - 2; /* a later match ends after j */
    }
    return -1;
}

/* evbuffer_search's answer for "\r\n\r\n" from `from`: in memory when the input is one
 * piece (nearly always: a head arrives in one read), otherwise libevent's search. */
static long head_end(struct evbuffer *in, size_t len, size_t from)
{
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) == 1 && v.iov_len >= len)
        return blank_line(v.iov_base, len, from);
    struct evbuffer_ptr start;
    evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET);
    return (long)evbuffer_search(in, "\r\n\r\n", 4, &start).pos;
}

/* How many bytes of in to give the head parser now, 0 to wait for more: through the blank
 * line when it is there (a body behind the head is not copied); otherwise all of it up to
 * cap, so that bare LFs and over-long heads are found before the head ends, but only once
 * the input has doubled since the last try. Each byte is searched once and parsing costs
 * O(n) in all, however the head is cut into reads (one byte per write was O(n^2)). */
size_t evbuf_head_span(struct evbuffer *in, size_t cap, struct head_scan *hs)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return 0;
    if (hs->searched > len) /* not this input's (a new connection): start over */
        *hs = (struct head_scan){0, 0};
    long end = head_end(in, len, hs->searched > 3 ? hs->searched - 3 : 0);
    if (end >= 0)
        return (size_t)end + 4 < cap ? (size_t)end + 4 : cap;
    hs->searched = len;
    if (len < cap && hs->parsed && len < 2 * hs->parsed)
        return 0;
    hs->parsed = len;
    return len < cap ? len : cap;
}
