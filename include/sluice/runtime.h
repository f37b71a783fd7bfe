/* runtime: one configuration generation and everything built from it (backend table,
 * parser limits). Immutable once published; refcounted so that requests in flight finish
 * on the generation they started with while new ones use the reloaded one. */
#ifndef SLUICE_RUNTIME_H
#define SLUICE_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>

#include <sluice/admit.h>
#include <sluice/config.h>
#include <sluice/http1.h>
#include <sluice/upstream.h>

struct tls_ctx;

struct runtime {
    struct config *cfg;      /* owned */
    struct upstream up;      /* owned */
    struct admit admit;      /* owned: tenants and their limits */
    struct http1_limits lim;
    struct tls_ctx *tls;     /* owned; NULL without tls_listen */
    char redis_ip[64];       /* [redis] host, resolved when the generation was built */
    unsigned generation;     /* 1 for the first load, +1 per successful reload */
    atomic_int refs;
};

/* Load and validate `path` and build a generation from it. Backends named as in `prev`
 * (may be NULL) keep their statistics and health. NULL with "file:line: reason" in err. */
struct runtime *runtime_load(const char *path, const struct runtime *prev, char *err,
                             size_t errlen);

/* Take a reference. */
void runtime_ref(struct runtime *rt);

/* Drop a reference; the last one frees the generation. */
void runtime_unref(struct runtime *rt);

#endif
