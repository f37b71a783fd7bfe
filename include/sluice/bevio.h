/* bevio: what client and backend connections share about their buffers: the backpressure
 * watermarks, finding a head's end in an evbuffer, millisecond timevals. The sockets
 * themselves are sock.h's. */
#ifndef SLUICE_BEVIO_H
#define SLUICE_BEVIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

struct evbuffer;

/* How far a head being read was looked at (evbuf_head_span): bytes searched for its end,
 * and the input's length when it was last parsed. Zero for a new head. */
struct head_scan {
    size_t searched;
    size_t parsed;
};

/* Backpressure, the one rule both directions and both protocols follow: when what is
 * buffered for a peer passes HIGH_WM, stop reading the side that feeds it; once it drains
 * below LOW_WM, read again. No body is ever held whole in memory. */
#define HIGH_WM (256 * 1024)
#define LOW_WM (64 * 1024)
#define MAX_IO (128 * 1024) /* per read/write call; libevent's default is 16 KiB */

/* ms milliseconds as a timeval. */
static inline void ms_tv(struct timeval *tv, uint32_t ms)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

/* Bytes of in to give a head parser now (through the blank line, at most cap), or 0 to
 * wait: a head cut into many reads is searched and parsed in O(n) overall (hs: its state). */
size_t evbuf_head_span(struct evbuffer *in, size_t cap, struct head_scan *hs);

#endif
