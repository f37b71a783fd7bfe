/* admin: the operator's listener ([admin] listen, loopback by default) on the main thread:
 * GET /status (the self-contained status page), /status.json, /metrics (Prometheus text)
 * and token-protected POST actions (drain/undrain a backend, reset a tenant's limiter).
 * It reads shared state (atomics, the queue under its lock) and never blocks a worker.
 * libevent's evhttp parses these requests: the admin port is not the proxy's hot path. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stddef.h>

struct event_base;
struct proxy;
struct runtime;
struct admin;
struct evbuffer;

/* Listen on rt's [admin] listen (nothing if unset). NULL with err on failure to bind. */
struct admin *admin_new(struct event_base *base, struct proxy *px, const struct runtime *rt,
                        char *err, size_t errlen);

/* A reload: the new generation's token applies; a changed listen address is logged and
 * takes effect on restart. */
void admin_set(struct admin *a, const struct runtime *rt);

/* Close the listener and free. NULL is fine. */
void admin_free(struct admin *a);

/* The documents, for tests and for other sinks: /status.json and /metrics into out. */
void admin_status_json(struct admin *a, struct evbuffer *out);
void admin_metrics(struct admin *a, struct evbuffer *out);

#endif
