/* stats: counters declared once in STATS_COUNTERS (name, help); per-thread shards of relaxed
 * atomics, summed on read. Latency histograms come with the measurement issue. */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define STATS_COUNTERS(X)                                                                  \
    X(connections, "client connections accepted")                                         \
    X(requests, "requests parsed from clients")                                           \
    X(admitted, "requests admitted past the rate limits (the load the pool is asked for)") \
    X(responses, "responses completed to clients")                                        \
    X(err_400, "requests refused as malformed (400)")                                    \
    X(err_408, "clients too slow to send a request head or body (408)")                  \
    X(err_413, "request bodies over max_body_size (413)")                                 \
    X(err_414, "request lines over max_line_size (414)")                                  \
    X(err_431, "request heads over max_header_size or max_headers (431)")                \
    X(err_501, "requests with an unsupported transfer coding or method (501)")           \
    X(err_502, "backend connect failures or bad backend responses answered 502")         \
    X(err_503, "requests refused for lack of memory or file descriptors (503)")                               \
    X(err_504, "backend read timeouts answered 504")                                      \
    X(rejected_rate, "requests refused by a tenant's rate limit (429)")                   \
    X(rejected_tenant_queue, "requests refused over a tenant's max_queue (429)")          \
    X(client_aborts, "clients that closed before their response was complete")           \
    X(upstream_truncated, "responses cut short by the backend after headers were sent")  \
    X(upstream_connects, "new backend connections opened")                               \
    X(upstream_reuses, "requests sent on a pooled backend connection")                   \
    X(upstream_dirty, "backend connections closed for bytes beyond a response's framing")  \
    X(retries, "requests retried on another backend or a fresh connection")             \
    X(accept_errors, "accept() failures (e.g. out of file descriptors)")                 \
    X(accept_pauses, "times accepting paused near the descriptor limit (RLIMIT_NOFILE)")  \
    X(tls_handshake_errors, "TLS handshakes that failed (protocol, cipher, or a closed peer)") \
    X(redirects, "plain-HTTP requests redirected to https (redirect_http)")                \
    X(rejected_shed, "requests shed from a standing queue (503)")                            \
    X(rejected_queue_full, "requests refused because the queue was full (503)")             \
    X(rejected_queue_timeout, "requests that waited [queue] timeout for a slot (503)")      \
    X(rejected_buffers, "request bodies refused: buffered bodies at [proxy] buffer_memory (503)") \
    X(redis_calls, "tenant-limit calls sent to Redis")                                      \
    X(redis_errors, "Redis connection failures and error replies")                         \
    X(redis_timeouts, "Redis calls not answered within [redis] timeout")                   \
    X(redis_fallbacks, "requests decided by [redis] on_failure instead of Redis")           \
    X(rejected_limiter_down, "requests refused because Redis was down (on_failure = closed)") \
    X(h2_connections, "client connections that speak HTTP/2")                              \
    X(h2_requests, "requests received over HTTP/2 (streams)")                              \
    X(h2_protocol_errors, "HTTP/2 connections closed for a protocol error or a flood")

enum stat_id {
#define STAT_ENUM(name, help) STAT_##name,
    STATS_COUNTERS(STAT_ENUM)
#undef STAT_ENUM
    STAT_MAX
};

/* One thread's shard. */
struct stats {
    _Atomic uint64_t c[STAT_MAX];
};

/* Add n to a counter of this thread's shard. Only the owning thread writes its shard, so a
 * relaxed load and store suffice (no locked read-modify-write on the hot path); readers on
 * other threads see whole values. */
static inline void stats_add(struct stats *s, enum stat_id id, uint64_t n)
{
    uint64_t v = atomic_load_explicit(&s->c[id], memory_order_relaxed);
    atomic_store_explicit(&s->c[id], v + n, memory_order_relaxed);
}

/* The counter's name and help text. */
const char *stats_name(enum stat_id id);
const char *stats_help(enum stat_id id);

/* Sum counter id over n shards. */
uint64_t stats_sum(const struct stats *shards, int n, size_t stride, enum stat_id id);

#endif
