/* sizing: the fewest workers for a wait SLO, by replaying the measured window through a
 * simulated pool (see include/sluice/sizing.h). One call simulates about
 * SIZING_MIN_SIMULATED requests per c tried (a binary search: log2(most) tries), each a
 * heap operation over c free times: milliseconds to a few hundred, every 5 s or less often,
 * on the sizer's thread (sizer.h). */
#include <sluice/sizing.h>

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SEED 0x9e3779b97f4a7c15ULL

/* xorshift64*: small, fast, and the same stream on every machine. */
struct rng {
    uint64_t s;
};

static double unit(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (double)((r->s * 0x2545f4914f6cdd1dULL) >> 11) * 0x1.0p-53; /* [0, 1) */
}

/* Service times drawn from a histogram: its non-empty buckets and their running counts. */
struct sampler {
    unsigned idx[HIST_BUCKETS];
    uint64_t cum[HIST_BUCKETS];
    unsigned n;
    double mean_s;
    double stretch; /* the load's headroom */
};

static int sampler_init(struct sampler *sm, const struct hist_snap *h)
{
    uint64_t total = 0;
    sm->n = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        if (h->b[i]) {
            total += h->b[i];
            sm->idx[sm->n] = i;
            sm->cum[sm->n++] = total;
        }
    sm->mean_s = hist_mean_us(h) / 1e6 * sm->stretch;
    return sm->n > 0 ? 0 : -1;
}

static double sample_s(const struct sampler *sm, struct rng *r)
{
    uint64_t u = (uint64_t)(unit(r) * (double)sm->cum[sm->n - 1]);
    unsigned lo = 0, hi = sm->n - 1; /* the first running count above u */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (sm->cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    uint64_t b0, width;
    hist_bucket_range(sm->idx[lo], &b0, &width);
    return ((double)b0 + unit(r) * (double)width) / 1e6 * sm->stretch;
}

/* The pool: the times its c workers are free again, a min-heap. */
static void sift_down(double *heap, int c, double v)
{
    int i = 0;
    for (;;) {
        int k = 2 * i + 1;
        if (k >= c)
            break;
        if (k + 1 < c && heap[k + 1] < heap[k])
            k++;
        if (heap[k] >= v)
            break;
        heap[i] = heap[k];
        i = k;
    }
    heap[i] = v;
}

static uint64_t arrivals_of(const struct sizing_load *l)
{
    uint64_t n = 0;
    for (int s = 0; s < l->seconds; s++)
        n += l->per_s[s];
    return n;
}

/* A simulated pool of c workers: the times they are free again (a min-heap), and how many
 * arrivals waited over the limit. */
struct simpool {
    double *heap;
    int c;
    uint64_t late;
};

/* One second's k arrivals, in order, from `at`: each the least of the uniforms left after
 * the one before (order statistics drawn one by one, no array); into each of the np pools.
 * The draws do not depend on the pools: one pass serves several sizes exactly as separate
 * passes would (the drawing, pow() above all, is most of a pass's cost). */
static inline __attribute__((always_inline)) void
second(double at, uint32_t k, const struct sampler *sm, struct rng *r, struct simpool *p, int np,
       double wait_s)
{
    double x = 0, *h0 = p[0].heap, *h1 = np > 1 ? p[1].heap : NULL;
    int c0 = p[0].c, c1 = np > 1 ? p[1].c : 0;
    uint64_t late0 = 0, late1 = 0;
    for (uint32_t i = 0; i < k; i++) {
        x += (1 - x) * (1 - pow(unit(r), 1.0 / (double)(k - i)));
        double arrive = at + x, service = sample_s(sm, r);
        double start = h0[0] > arrive ? h0[0] : arrive;
        late0 += start - arrive > wait_s;
        sift_down(h0, c0, start + service);
        if (np > 1) {
            start = h1[0] > arrive ? h1[0] : arrive;
            late1 += start - arrive > wait_s;
            sift_down(h1, c1, start + service);
        }
    }
    p[0].late += late0;
    if (np > 1)
        p[1].late += late1;
}

static int stopped(const struct sizing_load *l)
{
    return l->stop && atomic_load_explicit(l->stop, memory_order_relaxed);
}

/* The share waiting over wait_s in each of the np (1 or 2) pools (tail[j]); heaps: room for
 * each c. */
static void simulate(const struct sizing_load *l, const struct sampler *sm, struct simpool *p,
                     int np, double wait_s, double *tail)
{
    struct rng r = {SEED};
    uint64_t per_pass = arrivals_of(l), n = 0;
    for (int j = 0; j < np; j++) {
        p[j].late = 0;
        for (int i = 0; i < p[j].c; i++)
            p[j].heap[i] = 0;
    }
    for (double t0 = 0; n < SIZING_MIN_SIMULATED && !stopped(l); t0 += l->seconds, n += per_pass)
        for (int s = 0; s < l->seconds && !stopped(l); s++) {
            if (np == 1) /* (each np its own copy of the loop: as fast as before for one) */
                second(t0 + s, l->per_s[s], sm, &r, p, 1, wait_s);
            else
                second(t0 + s, l->per_s[s], sm, &r, p, 2, wait_s);
        }
    for (int j = 0; j < np; j++)
        tail[j] = n ? (double)p[j].late / (double)n : 1;
}

/* 1 + SIZING_Z x sqrt(2 x E[S^2] / E[S]^2 / N): see SIZING_HEADROOM_AUTO. Moments from
 * the buckets (a bucket's midpoint and its own spread, width^2 / 12). */
static double sampling_headroom(const struct sizing_load *l)
{
    double n = 0, s1 = 0, s2 = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        if (!l->service->b[i])
            continue;
        uint64_t b0, width;
        hist_bucket_range(i, &b0, &width);
        double k = l->service->b[i], mid = (double)b0 + (double)width / 2;
        n += k;
        s1 += k * mid;
        s2 += k * (mid * mid + (double)width * (double)width / 12);
    }
    double h = s1 > 0 ? 1 + SIZING_Z * sqrt(2 * s2 * n / (s1 * s1) / (double)arrivals_of(l))
                      : 1;
    return h < SIZING_MAX_HEADROOM ? h : SIZING_MAX_HEADROOM;
}

static int usable(const struct sizing_load *l, struct sampler *sm)
{
    if (!l || !l->per_s || l->seconds <= 0 || !l->service ||
        arrivals_of(l) < SIZING_MIN_ARRIVALS)
        return 0;
    sm->stretch = l->headroom == SIZING_HEADROOM_AUTO ? sampling_headroom(l)
                : l->headroom > 1                     ? l->headroom
                                                      : 1;
    return sampler_init(sm, l->service) == 0;
}

double sizing_headroom(const struct sizing_load *l)
{
    struct sampler sm;
    return usable(l, &sm) ? sm.stretch : 1;
}

uint64_t sizing_requests(const struct sizing_load *l)
{
    return l && l->per_s ? arrivals_of(l) : 0;
}

double sizing_tail(const struct sizing_load *l, int c, double wait_s)
{
    struct sampler *sm = malloc(sizeof *sm);
    double *heap = c > 0 ? malloc((size_t)c * sizeof *heap) : NULL;
    double tail = -1;
    if (sm && heap && usable(l, sm))
        simulate(l, sm, &(struct simpool){heap, c, 0}, 1, wait_s, &tail);
    free(heap);
    free(sm);
    return tail;
}

/* One simulation's verdict for c workers: the share late is within eps. */
struct trial {
    const struct sizing_load *l;
    const struct sampler *sm;
    double wait_s, eps, *heap;
};

static int fits(const struct trial *t, int c)
{
    double tail;
    simulate(t->l, t->sm, &(struct simpool){t->heap, c, 0}, 1, t->wait_s, &tail);
    return tail <= t->eps;
}

/* fits() for c and c - 1 in one pass (heap has room for both). */
static void fits_pair(const struct trial *t, int c, int *fit, int *fit_below)
{
    struct simpool p[2] = {{t->heap, c, 0}, {t->heap + c, c - 1, 0}};
    double tail[2];
    simulate(t->l, t->sm, p, 2, t->wait_s, tail);
    *fit = tail[0] <= t->eps;
    *fit_below = tail[1] <= t->eps;
}

/* From a hint (the last answer, which the load seldom moves far from): bad < good found by
 * steps doubling away from it, in one pass for hint and hint - 1 when it still holds,
 * instead of a search of the whole range (each pass replays the whole window: ~120 ms at
 * 25,000 req/s). *good stays most + 1 when nothing at most was tried. */
static void bracket(const struct trial *t, int hint, int most, int *bad, int *good)
{
    if (hint <= *bad || hint > most)
        return;
    int fit, below = 0, paired = hint - 1 > *bad; /* hint - 1: the first step down */
    if (paired)
        fits_pair(t, hint, &fit, &below);
    else
        fit = fits(t, hint);
    if (fit) {
        *good = hint;
        int step = 1;
        if (paired) {
            if (!below) {
                *bad = hint - 1;
                return;
            }
            *good = hint - 1;
            step = 2;
        }
        for (; *good - step > *bad; step *= 2) {
            if (!fits(t, *good - step)) {
                *bad = *good - step;
                return;
            }
            *good -= step;
        }
        return;
    }
    *bad = hint;
    for (int step = 1; *bad < most; step *= 2) {
        int c = *bad + step < most ? *bad + step : most;
        if (fits(t, c)) {
            *good = c;
            return;
        }
        *bad = c;
    }
}

int sizing_required(const struct sizing_load *l, double wait_s, double quantile, int most)
{
    return sizing_required_near(l, wait_s, quantile, most, 0);
}

int sizing_required_near(const struct sizing_load *l, double wait_s, double quantile, int most,
                         int hint)
{
    if (most < 1)
        most = 1;
    if (most > SIZING_MAX_WORKERS)
        most = SIZING_MAX_WORKERS;
    struct sampler *sm = malloc(sizeof *sm);
    double *heap = malloc(2 * (size_t)most * sizeof *heap); /* two pools: fits_pair() */
    int answer = 0;
    if (!sm || !heap || !usable(l, sm))
        goto out;
    struct trial t = {l, sm, wait_s, 1 - quantile, heap};
    double a = (double)arrivals_of(l) / l->seconds * sm->mean_s;
    /* bad < good: fewer than the offered load (a, in erlangs) never keep up */
    int bad = (int)ceil(a) - 1, good = most + 1;
    if (bad >= most)
        bad = most - 1;
    if (bad < 0)
        bad = 0;
    bracket(&t, hint, most, &bad, &good);
    if (good > most) {
        if (bad >= most || !fits(&t, most)) {
            answer = most + 1;
            goto out;
        }
        good = most;
    }
    while (good - bad > 1) {
        int mid = bad + (good - bad) / 2;
        if (fits(&t, mid))
            good = mid;
        else
            bad = mid;
    }
    answer = good;
out:
    free(heap);
    free(sm);
    return answer;
}
