/* headw: message heads without printf (see include/sluice/headw.h). */
#include <sluice/headw.h>

#include <string.h>

#include <event2/buffer.h>

void headw_init(struct headw *h, struct evbuffer *out)
{
    h->out = out;
    h->len = 0;
    h->total = 0;
}

static void flush(struct headw *h)
{
    if (h->len)
        evbuffer_add(h->out, h->buf, h->len);
    h->len = 0;
}

void headw_add(struct headw *h, const char *p, size_t n)
{
    h->total += n;
    if (n > sizeof h->buf - h->len) {
        flush(h);
        if (n > sizeof h->buf) { /* a long value: straight through */
            evbuffer_add(h->out, p, n);
            return;
        }
    }
    memcpy(h->buf + h->len, p, n);
    h->len += n;
}

void headw_str(struct headw *h, const char *s)
{
    headw_add(h, s, strlen(s));
}

void headw_u64(struct headw *h, uint64_t v)
{
    char d[20];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    headw_add(h, d + i, sizeof d - i);
}

void headw_field(struct headw *h, const char *name, size_t nl, const char *v, size_t vl)
{
    headw_add(h, name, nl);
    headw_add(h, ": ", 2);
    headw_add(h, v, vl);
    headw_add(h, "\r\n", 2);
}

size_t headw_end(struct headw *h)
{
    flush(h);
    return h->total;
}
