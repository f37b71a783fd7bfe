/* headw: a message head written into a buffer on the stack, then added to an evbuffer in
 * one call: no printf, and one evbuffer lock and copy per head instead of one per piece.
 * A head longer than the buffer goes out in several adds, in order. */
#ifndef SLUICE_HEADW_H
#define SLUICE_HEADW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct evbuffer;

#define HEADW_SIZE 2048

struct headw {
    struct evbuffer *out; /* borrowed: where the head goes */
    size_t len;           /* bytes in buf */
    size_t total;         /* bytes written so far, flushed or not */
    char buf[HEADW_SIZE];
};

void headw_init(struct headw *h, struct evbuffer *out);

/* What does not fit in buf (headw_add's slow path). */
void headw_add_long(struct headw *h, const char *p, size_t n);

static inline void headw_add(struct headw *h, const char *p, size_t n)
{
    if (n > sizeof h->buf - h->len) {
        headw_add_long(h, p, n);
        return;
    }
    memcpy(h->buf + h->len, p, n);
    h->len += n;
    h->total += n;
}

/* A NUL-terminated string. */
void headw_str(struct headw *h, const char *s);

/* A number in decimal. */
void headw_u64(struct headw *h, uint64_t v);

/* "name: value\r\n" */
void headw_field(struct headw *h, const char *name, size_t nl, const char *v, size_t vl);

/* Everything written goes to out; returns the head's length. */
size_t headw_end(struct headw *h);

#endif
