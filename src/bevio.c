/* bevio: finding a head's end in an evbuffer in O(n) however it arrives (bevio.h). */
#include <sluice/bevio.h>

#include <event2/buffer.h>

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
    struct evbuffer_ptr from;
    evbuffer_ptr_set(in, &from, hs->searched > 3 ? hs->searched - 3 : 0, EVBUFFER_PTR_SET);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, &from);
    if (end.pos >= 0)
        return (size_t)end.pos + 4 < cap ? (size_t)end.pos + 4 : cap;
    hs->searched = len;
    if (len < cap && hs->parsed && len < 2 * hs->parsed)
        return 0;
    hs->parsed = len;
    return len < cap ? len : cap;
}
