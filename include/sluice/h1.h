/* h1: the HTTP/1.1 codec (conn.h's struct codec): request heads read and parsed in order
 * from the connection's input (pipelined ones served a bounded number per wakeup), one
 * request at a time, bodies left in the input for the request to take with their framing,
 * responses written as HTTP/1.1 (re-framed chunked when needed), keep-alive. */
#ifndef SLUICE_H1_H
#define SLUICE_H1_H

#include <sluice/conn.h>

extern const struct codec h1_codec;

#endif
