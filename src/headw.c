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

void headw_add_long(struct headw *h, const char *p, size_t n)
{
    flush(h);
    if (n > sizeof h->buf) { /* a long value: straight through */
        h->total += n;
        evbuffer_add(h->out, p, n);
        return;
    }
    headw_add(h, p, n);
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
    if (nl + vl + 4 <= sizeof h->buf - h->len) { /* the usual case: one bound check */
        char *o = h->buf + h->len;
        memcpy(o, name, nl);
        o += nl;
        *o++ = ':';
        *o++ = ' ';
        memcpy(o, v, vl);
        o += vl;
        *o++ = '\r';
        *o++ = '\n';
        h->len += nl + vl + 4;
        h->total += nl + vl + 4;
        return;
    }
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
