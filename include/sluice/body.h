/* body: a message body moved from one buffer to another, its framing checked on the way in
 * and re-framed on the way out (Content-Length, chunked, or ended by the source's end). Used
 * for request bodies (client to backend, and into the buffer held before a backend) and
 * response bodies (backend to client). No I/O: the caller says when the source ended. */
#ifndef SLUICE_BODY_H
#define SLUICE_BODY_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/http1.h>

struct evbuffer;

struct body {
    enum http1_body kind; /* framing on the source side (CLOSE: ends when the source ends) */
    uint64_t remaining;   /* LENGTH: bytes left */
    struct http1_chunked ch;
    int out_chunked;      /* write chunked framing on the destination side */
    int done;
    uint64_t total;       /* payload bytes moved */
    size_t cap;           /* stop once the destination holds this much (0: no cap) */
    int copy;             /* copy into the destination's own space (see body.c) */
};

/* Start moving a body of this framing (len: Content-Length), chunked on output or not. */
void body_init(struct body *b, enum http1_body kind, uint64_t len, int out_chunked);

/* Move what src holds of the body to dst (eof: the source ended). 0 ok, -1 malformed or
 * cut short. */
int body_pump(struct body *b, struct evbuffer *src, struct evbuffer *dst, int eof);

#endif
