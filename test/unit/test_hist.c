/* Unit tests for latency histograms and their windows (include/sluice/hist.h): bucket
 * arithmetic on exact and known values, the quantile error bound on seeded random values and
 * on every bucket edge, merge and delta, the window boundaries (when a second's data enters
 * and leaves each span), gaps, and one writer racing one reader. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sluice/hist.h>

#define HOUR_US 3600000000ULL
#define BOUND (1.0 / 128) /* the proven relative error: half a sub-bucket over an octave */

/* xorshift64: seeded, so every run sees the same values. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A value between 1 us and 1 h, log-uniform: every octave gets its share. */
static uint64_t rng_latency(uint64_t *s)
{
    double u = (double)(rng_next(s) >> 11) / 9007199254740992.0; /* [0, 1) */
    return (uint64_t)exp(u * log((double)HOUR_US));
}

static struct hist *shard_new(void)
{
    struct hist *h = calloc(1, sizeof *h);
    assert_non_null(h);
    hist_init(h);
    return h;
}

/* A snapshot of a shard that recorded v[0..n). */
static void snap_of(struct hist_snap *out, const uint64_t *v, size_t n)
{
    struct hist *h = shard_new();
    for (size_t i = 0; i < n; i++)
        hist_record(h, v[i]);
    hist_snapshot(out, h);
    free(h);
}

static void snap_one(struct hist_snap *out, uint64_t v)
{
    snap_of(out, &v, 1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The true value at rank ceil(q x n) (at least 1) of sorted v, as hist_quantile_us ranks. */
static uint64_t exact_quantile(const uint64_t *sorted, size_t n, double q)
{
    double r = ceil(q * (double)n);
    size_t k = r < 1.0 ? 1 : (size_t)r;
    return sorted[(k < n ? k : n) - 1];
}

static double rel_error(uint64_t got, uint64_t want)
{
    if (want == 0)
        return got == 0 ? 0.0 : INFINITY;
    return fabs((double)got - (double)want) / (double)want;
}

/* Fail unless every rank's quantile of h is within BOUND of the sorted values; returns the
 * largest error seen. Queries q = (r - 0.5) / n, which ranks exactly r. */
static double check_every_rank(const struct hist_snap *h, uint64_t *sorted, size_t n)
{
    double worst = 0.0;
    for (size_t r = 1; r <= n; r++) {
        double q = ((double)r - 0.5) / (double)n;
        uint64_t want = exact_quantile(sorted, n, q), got = hist_quantile_us(h, q);
        double e = rel_error(got, want);
        if (e > BOUND)
            fail_msg("rank %zu of %zu: got %llu for %llu (%.4f%%)", r, n,
                     (unsigned long long)got, (unsigned long long)want, 100 * e);
        worst = e > worst ? e : worst;
    }
    return worst;
}

/* ------------------------------------------------------------------ one histogram */

/* Below 128 us every value has a bucket of its own and reads back exactly. */
static void test_exact_small_values(void **state)
{
    (void)state;
    uint64_t v[128];
    struct hist_snap h;
    for (uint64_t i = 0; i < 128; i++) {
        v[i] = i;
        snap_one(&h, i);
        assert_int_equal(hist_quantile_us(&h, 0.5), i);
        assert_int_equal(hist_count(&h), 1);
        assert_int_equal(hist_max_us(&h), i);
    }
    snap_of(&h, v, 128);
    for (uint64_t i = 0; i < 128; i++)
        assert_int_equal(hist_quantile_us(&h, ((double)i + 0.5) / 128), i);
    assert_int_equal(hist_quantile_us(&h, 0.0), 0);
    assert_int_equal(hist_quantile_us(&h, 1.0), 127);
}

/* Seeded random values from 1 us to 1 h: every quantile within 1/128. */
static void test_quantile_error_random(void **state)
{
    (void)state;
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof *v), seed = 0x9E3779B97F4A7C15ULL;
    struct hist_snap h;
    assert_non_null(v);
    for (size_t i = 0; i < N; i++)
        v[i] = rng_latency(&seed);
    snap_of(&h, v, N);
    qsort(v, N, sizeof *v, cmp_u64);
    double worst = 0.0;
    for (int i = 0; i <= 10000; i++) {
        double q = i / 10000.0, e = rel_error(hist_quantile_us(&h, q), exact_quantile(v, N, q));
        assert_true(e <= BOUND);
        worst = e > worst ? e : worst;
    }
    print_message("  random 1 us..1 h, %d values, 10001 quantiles: max error %.4f%%\n", N,
                  100 * worst);
    assert_true(worst > 0.005); /* the values do reach into wide buckets */
    free(v);
}

/* Adversarial: both edges of every bucket (the first and last value it holds), every rank
 * queried. The worst case, a lowest edge read as the midpoint, is exactly 1/128. */
static void test_quantile_error_bucket_edges(void **state)
{
    (void)state;
    enum { N = 2 * HIST_BUCKETS };
    uint64_t v[N];
    struct hist_snap h;
    size_t n = 0;
    for (uint64_t lo = 0; lo < HIST_RANGE_US;) {
        uint64_t width = lo < 128 ? 1 : (1ULL << (63 - __builtin_clzll(lo))) / HIST_SUB;
        v[n++] = lo;
        v[n++] = lo + width - 1;
        lo += width;
    }
    assert_int_equal(n, N);
    snap_of(&h, v, n);
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        assert_int_equal(h.b[i], 2); /* the edges found their buckets */
    double worst = check_every_rank(&h, v, n);
    print_message("  both edges of all %u buckets, every rank: max error %.4f%%\n",
                  HIST_BUCKETS, 100 * worst);
    assert_true(fabs(worst - BOUND) < 1e-9);
}

/* 1..10000 us once each: p50/p95/p99 are 5000/9500/9900, read as their buckets' midpoints
 * (widths 64, 128, 128); p100 is the max itself, which sits below its bucket's midpoint. */
static void test_known_distribution(void **state)
{
    (void)state;
    enum { N = 10000 };
    static uint64_t v[N];
    struct hist_snap h;
    for (uint64_t i = 0; i < N; i++)
        v[i] = i + 1;
    snap_of(&h, v, N);
    assert_int_equal(hist_quantile_us(&h, 0.50), 4992 + 32);
    assert_int_equal(hist_quantile_us(&h, 0.95), 9472 + 64);
    assert_int_equal(hist_quantile_us(&h, 0.99), 9856 + 64);
    assert_int_equal(hist_quantile_us(&h, 1.0), 10000);
    assert_int_equal(hist_quantile_us(&h, 0.0), 1);
    assert_true(rel_error(hist_quantile_us(&h, 0.99), 9900) <= 0.01);
    assert_int_equal(hist_count(&h), N);
    assert_true(hist_mean_us(&h) == 5000.5);
    assert_int_equal(hist_max_us(&h), N);
    check_every_rank(&h, v, N);
}

/* Mean is sum / count; a value past the range counts in the last bucket, the max keeps it. */
static void test_mean_max_and_clamp(void **state)
{
    (void)state;
    uint64_t v[] = {10, 20, 30}, five_h = 5 * HOUR_US;
    struct hist_snap h;
    snap_of(&h, v, 3);
    assert_true(hist_mean_us(&h) == 20.0);
    assert_int_equal(hist_max_us(&h), 30);
    snap_one(&h, five_h);
    assert_int_equal(h.b[HIST_BUCKETS - 1], 1);
    assert_int_equal(hist_max_us(&h), five_h);
    assert_true(hist_mean_us(&h) == (double)five_h);
    uint64_t top = hist_quantile_us(&h, 0.5); /* the last bucket's midpoint, about 70.5 min */
    assert_in_range(top, HIST_RANGE_US - (HIST_RANGE_US >> 7), HIST_RANGE_US - 1);
}

static void test_empty(void **state)
{
    (void)state;
    struct hist_snap h;
    hist_reset(&h);
    assert_int_equal(hist_count(&h), 0);
    assert_true(hist_mean_us(&h) == 0.0);
    assert_int_equal(hist_max_us(&h), 0);
    assert_int_equal(hist_quantile_us(&h, 0.0), 0);
    assert_int_equal(hist_quantile_us(&h, 0.99), 0);
    assert_int_equal(hist_quantile_us(&h, 1.0), 0);
}

/* q outside [0, 1], or NaN, is clamped. */
static void test_quantile_clamps_q(void **state)
{
    (void)state;
    uint64_t v[] = {5, 50, 100};
    struct hist_snap h;
    snap_of(&h, v, 3);
    assert_int_equal(hist_quantile_us(&h, -1.0), 5);
    assert_int_equal(hist_quantile_us(&h, NAN), 5);
    assert_int_equal(hist_quantile_us(&h, 7.0), 100);
}

/* Merging two histograms is recording everything into one. */
static void test_merge(void **state)
{
    (void)state;
    enum { N = 5000 };
    static uint64_t v[2 * N];
    struct hist_snap a, b, all;
    uint64_t seed = 42;
    for (size_t i = 0; i < 2 * N; i++)
        v[i] = rng_latency(&seed);
    snap_of(&a, v, N);
    snap_of(&b, v + N, N);
    snap_of(&all, v, 2 * N);
    hist_merge(&a, &b);
    assert_memory_equal(&a, &all, sizeof a);
    hist_reset(&b);
    hist_merge(&b, &all); /* into an empty one: a copy */
    assert_memory_equal(&b, &all, sizeof b);
}

/* A delta holds what the shard recorded between the snapshots; its max is exact when the
 * period set a new max, else its highest bucket's value. */
static void test_delta(void **state)
{
    (void)state;
    uint64_t early[] = {7, 900, 50000}, later[] = {3, 12345, 400, 12345};
    struct hist *s = shard_new();
    struct hist_snap before, now, d, want;
    for (size_t i = 0; i < 3; i++)
        hist_record(s, early[i]);
    hist_snapshot(&before, s);
    for (size_t i = 0; i < 4; i++)
        hist_record(s, later[i]);
    hist_snapshot(&now, s);
    hist_delta(&d, &now, &before);
    snap_of(&want, later, 4);
    assert_memory_equal(d.b, want.b, sizeof d.b);
    assert_int_equal(hist_count(&d), 4);
    assert_int_equal(d.sum_us, 3 + 12345 + 400 + 12345);
    assert_int_equal(hist_max_us(&d), 12288 + 64); /* 12345's bucket, width 128 */
    hist_record(s, 70000);
    before = now;
    hist_snapshot(&now, s);
    hist_delta(&now, &now, &before); /* in place */
    assert_int_equal(hist_count(&now), 1);
    assert_int_equal(hist_max_us(&now), 70000);
    assert_int_equal(hist_quantile_us(&now, 0.5), 70000);
    hist_delta(&d, &before, &before);
    assert_int_equal(hist_count(&d), 0);
    assert_int_equal(hist_max_us(&d), 0);
    free(s);
}

/* Bucket counts wrap at 2^32; the delta across the wrap is still right. */
static void test_delta_across_wrap(void **state)
{
    (void)state;
    struct hist_snap before, now, d;
    hist_reset(&before);
    hist_reset(&now);
    before.b[300] = UINT32_MAX - 2;
    before.count = UINT32_MAX - 2;
    now.b[300] = 4; /* seven more */
    now.count = (uint64_t)UINT32_MAX + 5;
    hist_delta(&d, &now, &before);
    assert_int_equal(d.b[300], 7);
    assert_int_equal(hist_count(&d), 7);
}

/* ------------------------------------------------------------------ windows */

static struct hist_window *window_new(void)
{
    struct hist_window *w = malloc(sizeof *w);
    assert_non_null(w);
    memset(w, 0xA5, sizeof *w); /* init must not rely on zeroed memory */
    hist_window_init(w);
    return w;
}

/* Tick second [t - 1, t) with one value v, or nothing when v is 0. */
static void tick_one(struct hist_window *w, uint64_t t, uint64_t v)
{
    struct hist_snap h;
    if (v)
        snap_one(&h, v);
    else
        hist_reset(&h);
    hist_window_tick(w, t, &h);
}

static uint64_t win_count(const struct hist_window *w, uint64_t span_s)
{
    struct hist_snap out;
    hist_window_get(w, span_s, &out);
    return hist_count(&out);
}

static uint64_t win_covered(const struct hist_window *w, uint64_t span_s)
{
    struct hist_snap out;
    return hist_window_get(w, span_s, &out);
}

/* Data of second 3 (ticked at 4): in the 10 s window through tick 13, the 60 s one through
 * 69 and the 300 s one through 309 (whole 10-second slots), gone after. */
static void test_window_boundaries(void **state)
{
    (void)state;
    struct hist_window *w = window_new();
    struct hist_snap out;
    for (uint64_t t = 1; t <= 320; t++) {
        tick_one(w, t, t == 4 ? 777 : 0);
        assert_int_equal(win_count(w, 10), t >= 4 && t <= 13);
        assert_int_equal(win_count(w, 60), t >= 4 && t <= 69);
        assert_int_equal(win_count(w, 300), t >= 4 && t <= 309);
        assert_int_equal(win_covered(w, 10), t < 10 ? t : 10);
        uint64_t floor10 = t - t % 10;
        assert_int_equal(win_covered(w, 60), t - (floor10 > 60 ? floor10 - 60 : 0));
        if (t == 13 || t == 309) {
            hist_window_get(w, 300, &out);
            assert_int_equal(hist_max_us(&out), 777);
            assert_int_equal(hist_quantile_us(&out, 0.99), 777);
            assert_true(hist_mean_us(&out) == 777.0);
        }
    }
    free(w);
}

static void test_window_empty(void **state)
{
    (void)state;
    struct hist_window *w = window_new();
    struct hist_snap out;
    memset(&out, 0x5A, sizeof out);
    assert_int_equal(hist_window_get(w, 60, &out), 0); /* never ticked */
    assert_int_equal(hist_count(&out), 0);
    assert_int_equal(hist_quantile_us(&out, 0.99), 0);
    assert_int_equal(hist_max_us(&out), 0);
    for (uint64_t t = 100; t < 120; t++)
        tick_one(w, t, 0);
    memset(&out, 0x5A, sizeof out);
    assert_int_equal(hist_window_get(w, 10, &out), 10);
    assert_int_equal(hist_count(&out), 0);
    assert_int_equal(hist_quantile_us(&out, 0.5), 0);
    assert_true(hist_mean_us(&out) == 0.0);
    assert_int_equal(hist_window_get(w, 0, &out), 0);
    free(w);
}

/* A scripted step: tick t with one value v (nothing when v is 0; no tick when t is 0), then
 * the window of span seconds must hold count values. */
struct step {
    uint64_t t, v, span, count;
};

static void run_steps(struct hist_window *w, const struct step *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i].t)
            tick_one(w, s[i].t, s[i].v);
        uint64_t got = win_count(w, s[i].span);
        if (got != s[i].count)
            fail_msg("step %zu: %llu s window holds %llu, want %llu", i,
                     (unsigned long long)s[i].span, (unsigned long long)got,
                     (unsigned long long)s[i].count);
    }
}

/* Skipped ticks clear the slots of the seconds skipped: 1-second ones, 10-second ones as the
 * ring wraps, and all of them after a jump longer than the window. */
static void test_window_gaps(void **state)
{
    (void)state;
    static const struct step steps[] = {
        {43, 500, 10, 3},    /* 35..41 skipped: 33, 34, 42 */
        {0, 0, 60, 36},      /* [0, 43) */
        {243, 500, 10, 1},   /* all ten 1-second slots skipped */
        {0, 0, 300, 37},     /* [0, 243): tens 0..4 kept */
        {330, 500, 300, 8},  /* [30, 330): 30..34, 42, 242, 329; tens 0, 1 reused, cleared */
        {1330, 500, 300, 1}, /* past the whole window */
        {0, 0, 10, 1},
    };
    struct hist_window *w = window_new();
    for (uint64_t t = 1; t <= 35; t++) /* seconds 0..34, one value each */
        tick_one(w, t, 100 + t);
    run_steps(w, steps, sizeof steps / sizeof *steps);
    assert_int_equal(win_covered(w, 300), 300);
    free(w);
}

/* A repeated second (or the clock going back) adds to the last second. */
static void test_window_repeated_second(void **state)
{
    (void)state;
    static const struct step steps[] = {
        {5, 10, 1, 1}, {5, 20, 1, 2}, {4, 30, 1, 3}, {6, 0, 1, 0}, {0, 0, 2, 3},
    };
    struct hist_window *w = window_new();
    run_steps(w, steps, sizeof steps / sizeof *steps);
    assert_int_equal(win_covered(w, 10), 2);
    free(w);
}

/* Spans up to 10 are exact; longer ones round up to tens and cap at 300; all are cut to the
 * time since the first tick. */
static void test_window_spans(void **state)
{
    (void)state;
    struct hist_window *w = window_new();
    for (uint64_t t = 1; t <= 100; t++)
        tick_one(w, t, t);
    assert_int_equal(win_count(w, 1), 1);
    assert_int_equal(win_count(w, 7), 7);
    assert_int_equal(win_covered(w, 15), 20);
    assert_int_equal(win_count(w, 15), 20);
    assert_int_equal(win_covered(w, 1000), 100); /* 300, but only 100 s so far */
    for (uint64_t t = 101; t <= 105; t++)
        tick_one(w, t, t);
    assert_int_equal(win_count(w, 15), 25); /* [80, 105) */
    assert_int_equal(win_covered(w, 15), 25);
    for (uint64_t t = 106; t <= 500; t++)
        tick_one(w, t, t);
    assert_int_equal(win_covered(w, 1000), 300);
    struct hist_snap out;
    hist_window_get(w, 10, &out);
    assert_int_equal(hist_max_us(&out), 500);
    assert_true(hist_mean_us(&out) == 495.5); /* 491..500 */
    free(w);
}

static void test_rate_window(void **state)
{
    (void)state;
    struct rate_window r;
    uint64_t count;
    memset(&r, 0xA5, sizeof r);
    rate_window_init(&r);
    assert_true(rate_window_per_s(&r, 10) == 0.0);
    for (uint64_t t = 1; t <= 3; t++)
        rate_window_tick(&r, t, 5);
    assert_true(rate_window_per_s(&r, 60) == 5.0); /* 15 over the 3 s seen */
    for (uint64_t t = 4; t <= 400; t++)
        rate_window_tick(&r, t, t % 2 ? 4 : 6);
    assert_true(rate_window_per_s(&r, 10) == 5.0);
    assert_true(rate_window_per_s(&r, 60) == 5.0);
    assert_true(rate_window_per_s(&r, 300) == 5.0);
    assert_int_equal(rate_window_get(&r, 300, &count), 300);
    assert_int_equal(count, 1500);
    rate_window_tick(&r, 405, 5); /* 400..403 skipped: the 5 are spread over 400..404 */
    assert_int_equal(rate_window_get(&r, 10, &count), 10);
    assert_int_equal(count, 6 + 4 + 6 + 4 + 6 + 5); /* 395..399 and 400..404 */
    assert_int_equal(rate_window_get(&r, 5, &count), 5);
    assert_int_equal(count, 5);
    assert_int_equal(rate_window_get(&r, 60, &count), 65); /* [340, 405) */
    assert_int_equal(count, 300 + 5);
}

/* A steady 100/s whose tick came a second late once (the main loop busy): every 10 s
 * window read after a tick reads 100/s. With the late tick's 200 in its last second alone,
 * the window that began at that second read 110 (test_scale's database-cap test did). */
static void test_a_late_tick_is_spread_over_its_seconds(void **state)
{
    (void)state;
    struct rate_window r;
    rate_window_init(&r);
    for (uint64_t t = 1; t <= 30; t++)
        rate_window_tick(&r, t, 100);
    rate_window_tick(&r, 32, 200); /* no tick in second 31 */
    for (uint64_t t = 33; t <= 60; t++) {
        rate_window_tick(&r, t, 100);
        assert_true(rate_window_per_s(&r, 10) == 100.0);
        assert_true(rate_window_per_s(&r, 60) == 100.0);
    }
}

/* ------------------------------------------------------------------ threads */

#define RACE_N 400000

struct race {
    struct hist *h;
    atomic_int done;
};

static uint64_t race_value(uint64_t i)
{
    return (i * 2654435761u) % 3000000;
}

static void *race_writer(void *arg)
{
    struct race *r = arg;
    for (uint64_t i = 0; i < RACE_N; i++)
        hist_record(r->h, race_value(i));
    atomic_store(&r->done, 1);
    return NULL;
}

/* Every count only grows from one snapshot to the next; returns the buckets' total. */
static uint64_t check_grows(const struct hist_snap *prev, const struct hist_snap *cur)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        assert_true(cur->b[i] >= prev->b[i]);
        n += cur->b[i];
    }
    assert_true(cur->count >= prev->count);
    assert_true(cur->sum_us >= prev->sum_us);
    assert_true(cur->max_us >= prev->max_us);
    return n;
}

/* One thread records while this one snapshots: whole, growing values; exact at the end. */
static void test_one_writer_one_reader(void **state)
{
    (void)state;
    struct race r = {.h = shard_new()};
    struct hist_snap *s = calloc(2, sizeof *s);
    pthread_t t;
    int snaps = 0;
    assert_non_null(s);
    assert_int_equal(pthread_create(&t, NULL, race_writer, &r), 0);
    while (!atomic_load(&r.done)) {
        hist_snapshot(&s[(snaps + 1) % 2], r.h);
        check_grows(&s[snaps % 2], &s[(snaps + 1) % 2]);
        snaps++;
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    hist_snapshot(&s[(snaps + 1) % 2], r.h);
    uint64_t total = check_grows(&s[snaps % 2], &s[(snaps + 1) % 2]), sum = 0;
    for (uint64_t i = 0; i < RACE_N; i++)
        sum += race_value(i);
    print_message("  %d snapshots taken while %d values were recorded\n", snaps, RACE_N);
    assert_int_equal(total, RACE_N);
    assert_int_equal(s[(snaps + 1) % 2].count, RACE_N);
    assert_int_equal(s[(snaps + 1) % 2].sum_us, sum);
    free(s);
    free(r.h);
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_small_values),
        cmocka_unit_test(test_quantile_error_random),
        cmocka_unit_test(test_quantile_error_bucket_edges),
        cmocka_unit_test(test_known_distribution),
        cmocka_unit_test(test_mean_max_and_clamp),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_quantile_clamps_q),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_delta),
        cmocka_unit_test(test_delta_across_wrap),
        cmocka_unit_test(test_window_boundaries),
        cmocka_unit_test(test_window_empty),
        cmocka_unit_test(test_window_gaps),
        cmocka_unit_test(test_window_repeated_second),
        cmocka_unit_test(test_window_spans),
        cmocka_unit_test(test_rate_window),
        cmocka_unit_test(test_a_late_tick_is_spread_over_its_seconds),
        cmocka_unit_test(test_one_writer_one_reader),
    };
    return cmocka_run_group_tests_name("hist", tests, NULL, NULL);
}
