/* health: active health checks (HTTP GET of each backend's health_check path every
 * health_interval) on the main thread's event loop. Results go to the backend's shared
 * state (upstream.h), so they survive reloads and combine with passive health. */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

struct event_base;
struct runtime;
struct health;

/* A checker running on base (the main thread's). NULL when out of memory. */
struct health *health_new(struct event_base *base);

/* Check the backends of generation rt from now on (replaces the previous generation's
 * checks; a probe in flight finishes first). */
void health_set(struct health *h, struct runtime *rt);

/* Stop every check and free the checker. */
void health_free(struct health *h);

#endif
