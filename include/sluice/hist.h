/* hist: latency histograms in microseconds (per backend, tenant and route: total, queueing and
 * upstream time), and rolling windows over them for p50/p95/p99/max/mean and arrival rates
 * over the last 10 s, 1 min and 5 min.
 *
 * Buckets are log-linear, like HdrHistogram: values below 2 x HIST_SUB (128 us) are exact;
 * above, each octave [2^e, 2^(e+1)) is cut into HIST_SUB = 64 equal sub-buckets of width
 * 2^(e-6). A quantile reads as its bucket's midpoint, so its relative error is at most
 * half a width over the octave's floor: 2^(e-7) / 2^e = 1/128 (0.79%); reading the max
 * instead, when it lies in that bucket below the midpoint, only comes closer. 27 x 64 = 1728
 * buckets reach 2^32 us (71.6 min, past the hour asked for); larger values count in the last
 * bucket (their quantiles read low, about 71.3 min) while sum and max keep the true value.
 *
 * Two types. struct hist is a shard, cumulative for its life: ONE thread records into it
 * (hist_record: relaxed load + store of each field, no lock, no locked read-modify-write,
 * like stats_add) while any other thread may copy it out with hist_snapshot (relaxed loads:
 * whole values, but a record in flight may show in some fields and not yet in others; it
 * shows in full in the next snapshot, so deltas of successive snapshots lose nothing).
 * struct hist_snap is plain memory owned by one thread: snapshots, deltas, merges, windows.
 * Keeping them apart lets the compiler hold the atomic discipline on the shared shard and
 * leaves the plain loops (merge, delta, quantile) free of atomics.
 *
 * Counting limits: bucket counts are 32-bit and wrap. hist_delta is modular, so the delta of
 * two snapshots of one shard is exact while fewer than 2^32 values land in one bucket
 * between them (a snapshot of a shard that wrapped is good for hist_delta only). count and
 * sum_us are 64-bit. A hist_snap must hold < 2^32 values per bucket for its quantiles.
 *
 * Sizes (static asserts in hist.c hold them): struct hist and struct hist_snap 6936 bytes
 * each (1728 x 4 + 3 x 8); struct hist_window 284,392 bytes (41 slots); struct rate_window
 * 344 bytes. Nothing is allocated; the caller owns every struct. A window belongs to one
 * thread (the main thread ticks and reads it).
 *
 * Use: each worker thread records into its own shards. Once a second the main thread
 * snapshots every shard and merges the snapshots, takes hist_delta against the previous
 * merge and ticks the window with the result; the status page and /metrics read
 * hist_window_get. */
#ifndef SLUICE_HIST_H
#define SLUICE_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)                 /* linear sub-buckets per octave */
#define HIST_BUCKETS (27u * HIST_SUB)                  /* 1728 */
#define HIST_RANGE_US (1ULL << 32)                     /* values from here on clamp */

/* A shard: one writer thread, any number of readers. Zero it with hist_init before it is
 * shared (a zero-filled static or calloc'd one is ready as it is). */
struct hist {
    _Atomic uint32_t b[HIST_BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
    _Atomic uint64_t max_us; /* the true largest value recorded, clamped or not */
};

/* A plain histogram (a snapshot, a delta, a merge). Zero-filled is empty. */
struct hist_snap {
    uint32_t b[HIST_BUCKETS];
    uint64_t count;
    uint64_t sum_us;
    uint64_t max_us;
};

/* Empty a shard. Only while no other thread uses it. */
void hist_init(struct hist *h);

/* Record one value. Only the shard's owning thread. */
void hist_record(struct hist *h, uint64_t us);

/* Copy a shard into plain memory. Any thread. */
void hist_snapshot(struct hist_snap *dst, const struct hist *src);

void hist_reset(struct hist_snap *h);

/* dst += src. The max is the larger of the two. */
void hist_merge(struct hist_snap *dst, const struct hist_snap *src);

/* dst = now - before, two snapshots of one shard taken in that order (or two merges of
 * snapshots of the same shards): what was recorded in between. dst may be now. The max is
 * exact when the period set a new max (now's max is above before's); else it is the
 * midpoint of the highest bucket the period used (within 0.79%, exact below 128 us); 0 when
 * the period recorded nothing. */
void hist_delta(struct hist_snap *dst, const struct hist_snap *now,
                const struct hist_snap *before);

uint64_t hist_count(const struct hist_snap *h);

/* sum / count; 0 when empty. */
double hist_mean_us(const struct hist_snap *h);

uint64_t hist_max_us(const struct hist_snap *h);

/* The value at rank ceil(q x n) (at least 1) among the n values held, q clamped to [0, 1]:
 * its bucket's midpoint, or the max when that is in the same bucket and smaller. 0 when
 * empty. n is the sum of the buckets, so a snapshot caught mid-record stays consistent. */
uint64_t hist_quantile_us(const struct hist_snap *h, double q);

/* Bucket i's values: [*lo, *lo + *width) us (the last bucket also holds every clamped
 * value). For sampling from a histogram (sizing.c). */
void hist_bucket_range(unsigned i, uint64_t *lo, uint64_t *width);

/* ------------------------------------------------------------------ rolling windows
 *
 * Fed once a second by one thread: tick(now_s, x) adds x as the data of the second
 * [now_s - 1, now_s), i.e. what was recorded since the previous tick; now_s is a monotonic
 * clock in whole seconds, >= 1. After a tick at t, a window of span S covers:
 *   S <= 10:  exactly [t - S, t), from ten 1-second slots;
 *   S > 10:   S rounded up to a multiple of 10, capped at 300, then every whole 10-second slot
 *             [10k, 10k + 10) that overlaps [t - S, t): [floor10(t) - S, t), which is S to
 *             S + 9 seconds (never less than the last S seconds, at most one slot more).
 * So data of second 3 (ticked at 4) is in the 10 s window after ticks 4..13 and gone from
 * tick 14 on; in the 60 s window through tick 69, in the 300 s window through tick 309 (an
 * exact 300 s would drop it at 304: the 10-second slot is the granularity there).
 * A tick that skips seconds clears the slots of the seconds it skipped (they read as empty;
 * a gap longer than the whole window clears everything). A tick at or before the last one
 * (a repeated second) adds to the last second. Each get returns the seconds it actually
 * covers: the span above, cut to the time since the first tick (its second included), so
 * count / covered is a rate; 0 before the first tick. */
#define HIST_WIN_SECS 10 /* 1-second slots */
#define HIST_WIN_TENS 31 /* 10-second slots: 30 whole ones and the one filling */
#define HIST_WIN_SLOTS (HIST_WIN_SECS + HIST_WIN_TENS)
#define HIST_WIN_MAX_S 300 /* the longest span */

/* Internal: which seconds a window holds. */
struct hist_clock {
    uint64_t first; /* the first second with data */
    uint64_t end;   /* the last tick's now_s: data reaches [end - 1, end); 0 = no tick yet */
};

/* Slots 0..9 hold seconds (by second % 10), 10..40 ten-second spans (by (second/10) % 31);
 * every tick adds to one of each. */
struct hist_window {
    struct hist_clock clock;
    struct hist_snap slot[HIST_WIN_SLOTS];
};

/* Counts per second with the same slots and spans, for arrival rates (lambda). */
struct rate_window {
    struct hist_clock clock;
    uint64_t slot[HIST_WIN_SLOTS];
};

void hist_window_init(struct hist_window *w);

void hist_window_tick(struct hist_window *w, uint64_t now_s, const struct hist_snap *last_second);

/* Merge the span into out (overwritten); returns the seconds covered (see above). */
uint64_t hist_window_get(const struct hist_window *w, uint64_t span_s, struct hist_snap *out);

void rate_window_init(struct rate_window *r);

/* n events in the second [now_s - 1, now_s). */
void rate_window_tick(struct rate_window *r, uint64_t now_s, uint64_t n);

/* Events over the span into *count; returns the seconds covered. */
uint64_t rate_window_get(const struct rate_window *r, uint64_t span_s, uint64_t *count);

/* Events per second over the span: count / covered, 0 before the first tick. */
double rate_window_per_s(const struct rate_window *r, uint64_t span_s);

#endif
