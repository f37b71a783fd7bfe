/* upconn: a connection to a backend; owned by a request while in use, by the worker's pool
 * (worker.c) while idle. Made and driven by request_upstream.c. */
#ifndef SLUICE_UPCONN_H
#define SLUICE_UPCONN_H

#include <stdint.h>

#include <sluice/sock.h>

struct backend;
struct worker;

struct upconn {
    struct sock sk;          /* the backend socket */
    struct backend *b;       /* borrowed */
    struct worker *w;        /* borrowed */
    struct upconn *prev, *next; /* pool links while idle */
    int reused;              /* taken from the pool for the current request */
    uint64_t idle_since_ms;  /* when it went into the pool */
};

/* Free an upstream connection. */
void upconn_free(struct upconn *u);

#endif
