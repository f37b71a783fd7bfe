/* h2: the HTTP/2 codec (conn.h's struct codec), on libnghttp2: each stream a request
 * (request.h), through the same checks and admission as an HTTP/1.1 one. */
#ifndef SLUICE_H2_H
#define SLUICE_H2_H

#include <sluice/conn.h>

struct evbuffer;

extern const struct codec h2_codec;

/* Switch connection c to HTTP/2 (after ALPN h2, or the client preface on a plain listener
 * with h2c) and process what its input holds. 0, or -1 (out of memory: c was left as is). */
int h2_start(struct conn *c);

/* Whether in starts with the HTTP/2 client preface: 1 yes, 0 no, -1 not enough bytes yet. */
int h2_preface(struct evbuffer *in);

#endif
