/* cluster: this instance's presence among the sluice instances sharing one Redis. On the
 * main thread, every second, a heartbeat records this instance and its load (arrival rate,
 * worker supply, mean in flight) in Redis and reads back how many instances were alive in
 * the last 5 s (proxy.redis_instances: [redis] on_failure = local divides each tenant's
 * limit by it), the cluster's summed load, and which instance leads (the lowest live id):
 * the scale controller sizes the whole pool from the summed load, once, on the leader.
 * Without [redis] it does nothing. */
#ifndef SLUICE_CLUSTER_H
#define SLUICE_CLUSTER_H

#include <stdint.h>

struct event_base;
struct proxy;
struct runtime;
struct cluster;

/* A heartbeat on base (the main thread's) for px. NULL when out of memory. */
struct cluster *cluster_new(struct event_base *base, struct proxy *px);

/* Follow generation rt's [redis] (a changed url reconnects; none stops the heartbeat). */
void cluster_set(struct cluster *c, const struct runtime *rt);

/* The cluster as the last heartbeat saw it. */
struct cluster_view {
    int instances;
    double lambda;      /* summed arrival rates, req/s */
    int supply;         /* summed worker supply */
    int supply_max;     /* the largest one instance reports */
    double busy;        /* summed mean in flight */
    int leader;         /* 1 if this instance decides for the cluster */
    char leader_id[80];
};

/* This instance's load for the next heartbeats (main thread, once a tick). */
void cluster_set_load(struct cluster *c, double lambda, int supply, double busy);

/* The latest view: 1 if it is fresh (a heartbeat answered within the last 3 s), else 0
 * (no Redis, or Redis away: size from this instance alone). */
int cluster_view(const struct cluster *c, struct cluster_view *out);

/* This instance's id (host:pid:random). */
const char *cluster_id(const struct cluster *c);

/* Publish a scale decision (JSON) for other instances and autoscalers: SET PREFIXscale and
 * PUBLISH on the channel PREFIXscale. 0, or -1 when Redis is not connected. */
int cluster_publish(struct cluster *c, const char *json);

/* Stop and free. */
void cluster_free(struct cluster *c);

#endif
