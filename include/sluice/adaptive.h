/* adaptive: an adaptive concurrency limit for one backend (`workers = auto`), learned from
 * latency like Envoy's adaptive concurrency filter (a gradient controller). A sync Gunicorn
 * worker serves one request at a time, so with N workers and C > N requests in flight the
 * latency grows to about C/N x the service time; the limit settles just past that knee, at
 * floor(tolerance x N + 1): N + 1 for N <= 9 at the default 1.1, N + 2 for N = 10..19.
 *
 * How it moves: the first probe_samples samples (and those from every probe_interval_ms +-10%
 * on) are a probe: the limit is held at min and their mean latency becomes min_rtt, higher or
 * lower than before. The window right after a probe only lets the limit ramp back (no
 * verdict). Then each window (>= window_ms, >= 4 x min_rtt, >= window_samples samples) takes
 * its mean latency rtt and sets limit = floor(limit x g + 1), g = clamp(tolerance x min_rtt /
 * rtt, 0.5, 1), clamped to [min, max]. No +1 when the window was app-limited (the highest
 * in-flight it saw stayed below limit - 1). After a fall, growth needs 3 windows in a row
 * asking for it (no flapping between two values near the knee). A window that leaves the limit
 * at half its peak since the last probe starts a probe at once: the work may have got slower.
 *
 * Invariants: min <= limit <= max at all times, limit == min while `probing`. A sample whose
 * request was sent before the current probe began (or before the last one ended) is ignored,
 * so a probe sees only requests sent at concurrency min. Samples of requests sent under an
 * earlier limit otherwise count (a window just after a change may misjudge by a step:
 * accepted; the next window corrects it). Fixed memory; samples take `lock`, readers of
 * limit, min_rtt and probing take nothing. Pure logic: the caller supplies the clock
 * (monotonic ms) and owns the struct. */
#ifndef SLUICE_ADAPTIVE_H
#define SLUICE_ADAPTIVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct adaptive_conf {
    int min, max;               /* bounds of the limit, 1 <= min <= max */
    uint32_t window_ms;         /* a sample window lasts at least this long ... [100] */
    int window_samples;         /* ... and has at least this many samples [10] */
    double tolerance;           /* latency within tolerance x min_rtt is "not queueing" [1.1] */
    uint32_t probe_interval_ms; /* re-measure min_rtt this often, +-10% [30000] */
    int probe_samples;          /* samples taken at `min` to measure min_rtt [10] */
    uint64_t seed;              /* probe jitter source: give each process its own (the pid)
                                 * so proxies sharing a backend do not probe in step */
};

/* One backend's controller. Initialise with adaptive_init; the caller owns the memory. */
struct adaptive {
    pthread_mutex_t lock;
    atomic_int limit;                /* requests the backend may have in flight now */
    atomic_int probing;              /* 1 while min_rtt is being measured (limit == min) */
    atomic_uint_fast64_t min_rtt_us; /* mean latency at concurrency min; 0 = not measured */
    /* the rest under lock */
    struct adaptive_conf conf;       /* a copy, sanitised */
    uint64_t rng;                    /* jitter state */
    uint64_t next_probe_ms;          /* when the next probe is due */
    uint64_t valid_from_ms;          /* samples of requests started before this are ignored */
    int saved;                       /* the limit to restore when the probe ends */
    int peak;                        /* highest limit since the last probe ended */
    int settling;                    /* 1: the window after a probe, ramping back up: no verdict */
    int fallen;                      /* 1 if the last change was a fall */
    int grow_streak;                 /* windows in a row that asked to grow */
    uint64_t win_start_ms;           /* the current window (or probe): when it began, */
    uint64_t sum_us;                 /* its latencies added up, */
    int count;                       /* how many, */
    int max_inflight;                /* and the highest in-flight they saw */
};

/* Defaults for every field: min 1, max 64, then the bracketed values above, seed 0. */
void adaptive_conf_defaults(struct adaptive_conf *c);

/* 0 if c is usable, else -1 with a reason in err (for the configuration parser). */
int adaptive_conf_check(const struct adaptive_conf *c, char *err, size_t errlen);

/* Start at limit = min with a probe. Out-of-range fields are clamped to usable values. */
void adaptive_init(struct adaptive *a, const struct adaptive_conf *c, uint64_t now_ms);

void adaptive_destroy(struct adaptive *a);

/* One finished request: its upstream latency (send to response end, us) and the in-flight
 * count it saw when it was sent (including itself). Any thread. */
void adaptive_sample(struct adaptive *a, uint64_t rtt_us, int inflight, uint64_t now_ms);

/* The current limit, lock-free. */
int adaptive_limit(const struct adaptive *a);

/* The baseline latency, for display; 0 = not measured yet. */
uint64_t adaptive_min_rtt_us(const struct adaptive *a);

/* 1 while a probe holds the limit at min. */
int adaptive_probing(const struct adaptive *a);

#endif
