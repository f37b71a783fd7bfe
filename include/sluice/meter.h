/* meter: the measurements behind the status page, /metrics and the scale controller.
 * A series is one subject's latency histogram and completions by status class: each
 * backend (upstream time: what its workers spend), each named tenant and each route (total
 * time: what the client waits), and the pool as a whole (total, queueing and upstream time
 * apart). Workers record into their own shard of a series (hist.h: one writer, no lock);
 * the main thread ticks once a second, folding what the shards recorded into rolling
 * windows (10 s, 1 min, 5 min) that only it reads.
 *
 * Ownership: the meter owns every series and keeps it for its whole life (a backend that
 * leaves the configuration keeps its series until exit: bounded by the names ever
 * configured). States shared across reloads (backend_state, tenant_state, route_state)
 * point at their series; workers record through that pointer, which the main thread sets
 * once (meter_attach) and never changes. Unnamed tenant keys have no series of their own. */
#ifndef SLUICE_METER_H
#define SLUICE_METER_H

#include <stdatomic.h>
#include <stdint.h>

#include <sluice/hist.h>

struct runtime;

enum series_kind { SER_POOL = 0, SER_POOL_QUEUE, SER_POOL_UPSTREAM, SER_BACKEND, SER_TENANT,
                   SER_ROUTE };

#define METER_CLASSES 6 /* index 0: no status (client gone); 1..5: 1xx..5xx */

/* One worker thread's part of a series. */
struct series_shard {
    struct hist lat;
    _Atomic uint64_t status[METER_CLASSES];
};

struct series {
    enum series_kind kind;
    char name[64];
    int nshards;
    struct series_shard *shard;         /* owned: one per worker thread */
    /* main thread only */
    struct hist_snap cum, prev;         /* all shards merged now / at the last tick */
    uint64_t st_prev[METER_CLASSES];
    struct hist_window win;
    struct rate_window st[METER_CLASSES];
    struct series *next;                /* in the meter's list */
};

struct meter {
    int nthreads;
    struct series *pool, *queue, *upstream; /* the pool's series (owned through `all`) */
    struct series *all;                 /* every series, owned */
    struct rate_window admitted;        /* requests admitted (passed the rate limits) */
    uint64_t admitted_prev;
    uint32_t arrivals[HIST_WIN_MAX_S];  /* admitted in each second, by second % 300 (sizing:
                                         * the window's bursts, second by second) */
    uint64_t first_s;                   /* the first tick's second; 0 = none yet */
    uint64_t last_s;                    /* the last tick's second */
};

/* One window of one series, for display and sizing. */
struct meter_win {
    uint64_t covered_s;                 /* seconds the window holds (0: none yet) */
    uint64_t requests;                  /* completions */
    double rate;                        /* completions per second */
    uint64_t p50_us, p95_us, p99_us, max_us;
    double mean_us;
    double busy_s;                      /* summed latency: / covered_s = mean in flight */
    uint64_t status[METER_CLASSES];
};

/* A meter for nthreads workers. NULL when out of memory. */
struct meter *meter_new(int nthreads);

void meter_free(struct meter *m);

/* Main thread: give every backend, named tenant and route of rt a series (those that
 * have one keep it). 0, or -1 when out of memory (those without stay unmeasured). */
int meter_attach(struct meter *m, const struct runtime *rt);

/* Series kept (each ~280 KB): one per name ever configured, reused when a name returns. */
int meter_series_count(const struct meter *m);

/* Main thread, once a second: now_s monotonic seconds; admitted: the running total of
 * requests admitted (all threads). */
void meter_tick(struct meter *m, uint64_t now_s, uint64_t admitted);

/* Worker `thread`: one finished request of series s (NULL is ignored): latency in us, the
 * status sent (0 if none). */
void meter_record(struct series *s, int thread, uint64_t us, int status);

/* Main thread: the last span_s seconds of s (10, 60, 300). */
void meter_window(const struct series *s, uint64_t span_s, struct meter_win *out);

/* Main thread: the q quantile (0..1) of s over the last span_s seconds, us. */
uint64_t meter_quantile_us(const struct series *s, uint64_t span_s, double q);

/* Main thread: requests admitted in each of the last span_s seconds (at most 300),
 * oldest first, into out; returns how many seconds that is (fewer just after a start). */
int meter_arrivals(const struct meter *m, uint64_t span_s, uint32_t *out);

/* Main thread: the latency histogram of s over the last span_s seconds into out; returns
 * the seconds it covers (see hist_window_get). */
uint64_t meter_hist(const struct series *s, uint64_t span_s, struct hist_snap *out);

/* Main thread: admitted requests per second over the last span_s seconds. */
double meter_admitted_rate(const struct meter *m, uint64_t span_s);

#endif
