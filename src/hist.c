/* hist: log-linear latency histograms and their rolling windows (see include/sluice/hist.h).
 * A record is four relaxed load/store pairs on the owner's shard; everything else works on
 * plain copies. A window tick clears the slots that start afresh and adds to two. */
#include <sluice/hist.h>

#include <math.h>
#include <string.h>

_Static_assert(sizeof(struct hist_snap) == 6936, "the header states 6936 bytes");
_Static_assert(sizeof(struct hist) == 6936, "the header states 6936 bytes");
_Static_assert(sizeof(struct hist_window) == 284392, "the header states 284,392 bytes");
_Static_assert(sizeof(struct rate_window) == 344, "the header states 344 bytes");
_Static_assert(HIST_BUCKETS == (32 - HIST_SUB_BITS + 1) * HIST_SUB, "buckets reach 2^32");

#define TEN 10 /* seconds in a ten-second slot */

/* ------------------------------------------------------------------ buckets */

/* Octave e >= 7 (values [2^e, 2^(e+1))) has sub-buckets of width 2^shift, shift = e - 6, and
 * starts at index shift x 64 + 64; below 128 the index is the value (shift 0). */
static unsigned bucket_of(uint64_t us)
{
    uint64_t v = us < HIST_RANGE_US ? us : HIST_RANGE_US - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v | 1);
    unsigned shift = e > HIST_SUB_BITS ? e - HIST_SUB_BITS : 0;
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

static unsigned bucket_shift(unsigned i)
{
    unsigned k = i / HIST_SUB;
    return k ? k - 1 : 0;
}

static uint64_t bucket_lo(unsigned i)
{
    unsigned shift = bucket_shift(i);
    return (uint64_t)(i - shift * HIST_SUB) << shift;
}

void hist_bucket_range(unsigned i, uint64_t *lo, uint64_t *width)
{
    *lo = bucket_lo(i);
    *width = 1ULL << bucket_shift(i);
}

/* What bucket i reads as: its midpoint, or max when max lies in it below the midpoint (a
 * max from a snapshot caught mid-record may lag; it is only trusted inside its bucket). */
static uint64_t bucket_value(unsigned i, uint64_t max)
{
    uint64_t mid = bucket_lo(i) + ((1ULL << bucket_shift(i)) >> 1);
    return bucket_of(max) == i && max < mid ? max : mid;
}

/* ------------------------------------------------------------------ shard */

static uint64_t load64(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* The owner's add: no other thread writes c, so load + store is exact. */
static void add64(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, load64(c) + n, memory_order_relaxed);
}

void hist_init(struct hist *h)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        atomic_store_explicit(&h->b[i], 0, memory_order_relaxed);
    atomic_store_explicit(&h->count, 0, memory_order_relaxed);
    atomic_store_explicit(&h->sum_us, 0, memory_order_relaxed);
    atomic_store_explicit(&h->max_us, 0, memory_order_relaxed);
}

void hist_record(struct hist *h, uint64_t us)
{
    _Atomic uint32_t *b = &h->b[bucket_of(us)];
    atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    add64(&h->sum_us, us);
    add64(&h->count, 1);
    if (us > load64(&h->max_us))
        atomic_store_explicit(&h->max_us, us, memory_order_relaxed);
}

void hist_snapshot(struct hist_snap *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->b[i] = atomic_load_explicit(&src->b[i], memory_order_relaxed);
    dst->count = load64(&src->count);
    dst->sum_us = load64(&src->sum_us);
    dst->max_us = load64(&src->max_us);
}

/* ------------------------------------------------------------------ plain */

void hist_reset(struct hist_snap *h)
{
    memset(h, 0, sizeof *h);
}

void hist_merge(struct hist_snap *dst, const struct hist_snap *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum_us += src->sum_us;
    if (src->max_us > dst->max_us)
        dst->max_us = src->max_us;
}

/* The value of the highest non-empty bucket; 0 when all are empty. */
static uint64_t top_value(const struct hist_snap *h, uint64_t max)
{
    for (unsigned i = HIST_BUCKETS; i-- > 0;)
        if (h->b[i])
            return bucket_value(i, max);
    return 0;
}

void hist_delta(struct hist_snap *dst, const struct hist_snap *now,
                const struct hist_snap *before)
{
    uint64_t now_max = now->max_us, before_max = before->max_us;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->b[i] = now->b[i] - before->b[i]; /* modular: a wrapped bucket still subtracts */
    dst->count = now->count - before->count;
    dst->sum_us = now->sum_us - before->sum_us;
    dst->max_us = now_max > before_max ? now_max : top_value(dst, now_max);
}

uint64_t hist_count(const struct hist_snap *h)
{
    return h->count;
}

double hist_mean_us(const struct hist_snap *h)
{
    return h->count ? (double)h->sum_us / (double)h->count : 0.0;
}

uint64_t hist_max_us(const struct hist_snap *h)
{
    return h->max_us;
}

static uint64_t bucket_total(const struct hist_snap *h)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        n += h->b[i];
    return n;
}

/* ceil(q x n) within [1, n]; q outside [0, 1] (or NaN) is clamped. */
static uint64_t rank_of(double q, uint64_t n)
{
    double r = q > 0.0 ? ceil((q < 1.0 ? q : 1.0) * (double)n) : 1.0;
    uint64_t k = r < 1.0 ? 1 : (uint64_t)r;
    return k < n ? k : n;
}

uint64_t hist_quantile_us(const struct hist_snap *h, double q)
{
    uint64_t n = bucket_total(h), seen = 0;
    if (n == 0)
        return 0;
    uint64_t rank = rank_of(q, n);
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            return bucket_value(i, h->max_us);
    }
    return 0; /* not reached: seen ends at n >= rank */
}

/* ------------------------------------------------------------------ window clock */

static int sec_slot(uint64_t second)
{
    return (int)(second % HIST_WIN_SECS);
}

static int ten_slot(uint64_t ten)
{
    return HIST_WIN_SECS + (int)(ten % HIST_WIN_TENS);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* a - b, or 0 below 0. */
static uint64_t sub_floor0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* Move the clock to now_s and list the slots that start afresh (all of them at the first
 * tick): those of the seconds [end, now_s) and of the tens whose first second is among them,
 * only the last of each ring's worth. Returns how many; none if now_s is not ahead. */
static int clock_advance(struct hist_clock *c, uint64_t now_s, int fresh[HIST_WIN_SLOTS])
{
    int n = 0;
    now_s = now_s ? now_s : 1;
    if (c->end == 0) {
        c->first = now_s - 1;
        c->end = now_s;
        for (; n < HIST_WIN_SLOTS; n++)
            fresh[n] = n;
        return n;
    }
    if (now_s <= c->end)
        return 0;
    for (uint64_t d = max_u64(c->end, sub_floor0(now_s, HIST_WIN_SECS)); d < now_s; d++)
        fresh[n++] = sec_slot(d);
    uint64_t last_ten = (now_s - 1) / TEN;
    uint64_t k = max_u64((c->end + TEN - 1) / TEN, sub_floor0(last_ten, HIST_WIN_TENS - 1));
    for (; k <= last_ten; k++)
        fresh[n++] = ten_slot(k);
    c->end = now_s;
    return n;
}

/* The slots of the last second: its own and its ten's. */
static void clock_current(const struct hist_clock *c, int cur[2])
{
    cur[0] = sec_slot(c->end - 1);
    cur[1] = ten_slot((c->end - 1) / TEN);
}

/* The slots a span covers into slots[], their number into *n; returns the seconds covered
 * (see the header: exact up to 10 s, then whole tens overlapping the span). */
static uint64_t clock_cover(const struct hist_clock *c, uint64_t span_s,
                            int slots[HIST_WIN_SLOTS], int *n)
{
    uint64_t end = c->end, lo;
    *n = 0;
    if (end == 0 || span_s == 0)
        return 0;
    if (span_s <= HIST_WIN_SECS) {
        lo = max_u64(sub_floor0(end, span_s), c->first);
        for (uint64_t d = lo; d < end; d++)
            slots[(*n)++] = sec_slot(d);
        return end - lo;
    }
    uint64_t span = span_s < HIST_WIN_MAX_S ? (span_s + TEN - 1) / TEN * TEN : HIST_WIN_MAX_S;
    lo = max_u64(sub_floor0(end - end % TEN, span), c->first);
    for (uint64_t k = lo / TEN; k <= (end - 1) / TEN; k++)
        slots[(*n)++] = ten_slot(k);
    return end - lo;
}

/* ------------------------------------------------------------------ windows */

void hist_window_init(struct hist_window *w)
{
    memset(w, 0, sizeof *w);
}

void hist_window_tick(struct hist_window *w, uint64_t now_s, const struct hist_snap *last_second)
{
    int slots[HIST_WIN_SLOTS], cur[2];
    int n = clock_advance(&w->clock, now_s, slots);
    for (int i = 0; i < n; i++)
        hist_reset(&w->slot[slots[i]]);
    clock_current(&w->clock, cur);
    hist_merge(&w->slot[cur[0]], last_second);
    hist_merge(&w->slot[cur[1]], last_second);
}

uint64_t hist_window_get(const struct hist_window *w, uint64_t span_s, struct hist_snap *out)
{
    int slots[HIST_WIN_SLOTS], n;
    uint64_t covered = clock_cover(&w->clock, span_s, slots, &n);
    hist_reset(out);
    for (int i = 0; i < n; i++)
        hist_merge(out, &w->slot[slots[i]]);
    return covered;
}

void rate_window_init(struct rate_window *r)
{
    memset(r, 0, sizeof *r);
}

/* n arrived since the last tick, which was `from` seconds ago or more: a late tick (the
 * main loop busy) covers more than one second, and its count is spread over them. Put in
 * the last one alone, a window whose first second is that one counted a second too many
 * (seen: 110 req/s read for a steady 100). */
void rate_window_tick(struct rate_window *r, uint64_t now_s, uint64_t n)
{
    int slots[HIST_WIN_SLOTS], cur[2];
    uint64_t from = r->clock.end;
    int fresh = clock_advance(&r->clock, now_s, slots);
    for (int i = 0; i < fresh; i++)
        r->slot[slots[i]] = 0;
    uint64_t k = from && now_s > from ? now_s - from : 1;
    k = k < HIST_WIN_SECS ? k : HIST_WIN_SECS;
    if (k > 1) {
        for (uint64_t d = now_s - k; d < now_s; d++) {
            uint64_t part = n / k + (d == now_s - 1 ? n % k : 0);
            r->slot[sec_slot(d)] += part;
            r->slot[ten_slot(d / TEN)] += part;
        }
        return;
    }
    clock_current(&r->clock, cur);
    r->slot[cur[0]] += n;
    r->slot[cur[1]] += n;
}

uint64_t rate_window_get(const struct rate_window *r, uint64_t span_s, uint64_t *count)
{
    int slots[HIST_WIN_SLOTS], n;
    uint64_t covered = clock_cover(&r->clock, span_s, slots, &n);
    *count = 0;
    for (int i = 0; i < n; i++)
        *count += r->slot[slots[i]];
    return covered;
}

double rate_window_per_s(const struct rate_window *r, uint64_t span_s)
{
    uint64_t count, covered = rate_window_get(r, span_s, &count);
    return covered ? (double)count / (double)covered : 0.0;
}
