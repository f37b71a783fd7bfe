/* headw: a message head written into a buffer on the stack, then added to an evbuffer in
 * one call: no printf, and one evbuffer lock and copy per head instead of one per piece.
 * A head longer than the buffer goes out in several adds, in order. */
#ifndef SLUICE_HEADW_H
#define SLUICE_HEADW_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define HEADW_SIZE 2048

struct headw {
    struct evbuffer *out; /* borrowed: where the head goes */
    size_t len;           /* bytes in buf */
    size_t total;         /* bytes written so far, flushed or not */
    char buf[HEADW_SIZE];
};

void headw_init(struct headw *h, struct evbuffer *out);

void headw_add(struct headw *h, const char *p, size_t n);

/* A NUL-terminated string. */
void headw_str(struct headw *h, const char *s);

/* A number in decimal. */
void headw_u64(struct headw *h, uint64_t v);

/* "name: value\r\n" */
void headw_field(struct headw *h, const char *name, size_t nl, const char *v, size_t vl);

/* Everything written goes to out; returns the head's length. */
size_t headw_end(struct headw *h);

#endif
