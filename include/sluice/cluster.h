/* cluster: this instance's presence among the sluice instances sharing one Redis. On the
 * main thread, every second, a heartbeat records this instance in Redis and reads how many
 * instances were alive in the last 5 s (proxy.redis_instances); [redis] on_failure = local
 * divides each tenant's limit by that count while Redis is away. Without [redis] it does
 * nothing. (The cluster-wide scale view builds on this.) */
#ifndef SLUICE_CLUSTER_H
#define SLUICE_CLUSTER_H

struct event_base;
struct proxy;
struct runtime;
struct cluster;

/* A heartbeat on base (the main thread's) for px. NULL when out of memory. */
struct cluster *cluster_new(struct event_base *base, struct proxy *px);

/* Follow generation rt's [redis] (a changed url reconnects; none stops the heartbeat). */
void cluster_set(struct cluster *c, const struct runtime *rt);

/* Publish a scale decision (JSON) for other instances and autoscalers: SET PREFIXscale and
 * PUBLISH on the channel PREFIXscale. 0, or -1 when Redis is not connected. */
int cluster_publish(struct cluster *c, const char *json);

/* Stop and free. */
void cluster_free(struct cluster *c);

#endif
