/* adaptive: the gradient controller behind `workers = auto` (see include/sluice/adaptive.h).
 * Every sample takes the lock for a few additions; a window's end does a handful of floating
 * point operations. limit, probing and min_rtt are atomics so the request path reads them
 * without the lock. Nothing is allocated after init. */
#include <sluice/adaptive.h>

#include <math.h>
#include <stdio.h>

#define GRADIENT_FLOOR 0.5 /* a window shrinks the limit by at most half */
#define HEADROOM 1.0       /* a whole worker: Gunicorn concurrency is integral */
#define JITTER_DIV 10      /* probes come every interval +- interval/JITTER_DIV */
#define WINDOW_RTTS 4      /* a window also spans this many min_rtt (see window_full) */
#define CONFIRM 3          /* windows in a row that must ask to grow after a fall */

void adaptive_conf_defaults(struct adaptive_conf *c)
{
    *c = (struct adaptive_conf){
        .min = 1,
        .max = 64,
        .window_ms = 100,
        .window_samples = 10,
        .tolerance = 1.1,
        .probe_interval_ms = 30000,
        .probe_samples = 10,
        .seed = 0,
    };
}

int adaptive_conf_check(const struct adaptive_conf *c, char *err, size_t errlen)
{
    const char *why = NULL;
    if (c->min < 1 || c->max < c->min)
        why = "need 1 <= min <= max";
    else if (c->window_samples < 1 || c->probe_samples < 1)
        why = "window and probe need at least one sample";
    else if (!(c->tolerance >= 1.0 && c->tolerance <= 10.0))
        why = "tolerance must be between 1.0 and 10";
    else if (c->probe_interval_ms == 0)
        why = "probe interval must be positive";
    if (why)
        snprintf(err, errlen, "adaptive concurrency: %s", why);
    return why ? -1 : 0;
}

/* splitmix64: a fixed sequence per seed, so tests see the same jitter every run. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static struct adaptive_conf sanitise(const struct adaptive_conf *c)
{
    struct adaptive_conf s = *c;
    s.min = s.min < 1 ? 1 : s.min;
    s.max = s.max < s.min ? s.min : s.max;
    s.window_samples = s.window_samples < 1 ? 1 : s.window_samples;
    s.probe_samples = s.probe_samples < 1 ? 1 : s.probe_samples;
    s.tolerance = s.tolerance >= 1.0 ? s.tolerance : 1.0; /* also catches NaN */
    s.probe_interval_ms = s.probe_interval_ms ? s.probe_interval_ms : 1;
    return s;
}

static void set_limit(struct adaptive *a, int v)
{
    atomic_store_explicit(&a->limit, v, memory_order_relaxed);
}

static int probing(const struct adaptive *a)
{
    return atomic_load_explicit(&a->probing, memory_order_relaxed);
}

/* Start a new window (or probe) at now with nothing in it. */
static void window_reset(struct adaptive *a, uint64_t now_ms)
{
    a->win_start_ms = now_ms;
    a->sum_us = 0;
    a->count = 0;
    a->max_inflight = 0;
}

static void window_add(struct adaptive *a, uint64_t rtt_us, int inflight)
{
    a->sum_us += rtt_us;
    a->count++;
    if (inflight > a->max_inflight)
        a->max_inflight = inflight;
}

/* Whether the request was certainly sent at or after from_ms. now_ms is truncated, so the
 * send time is known only to be >= now_ms - rtt: a request sent in the same millisecond as
 * from_ms may be wrongly dropped, never wrongly kept. */
static int sent_since(uint64_t rtt_us, uint64_t now_ms, uint64_t from_ms)
{
    return now_ms * 1000 >= rtt_us && now_ms * 1000 - rtt_us >= from_ms * 1000;
}

static void schedule_probe(struct adaptive *a, uint64_t now_ms)
{
    uint64_t interval = a->conf.probe_interval_ms, jitter = interval / JITTER_DIV;
    a->next_probe_ms = now_ms + interval - jitter + rng_next(&a->rng) % (2 * jitter + 1);
}

/* Hold the limit at min; only requests sent from the next millisecond on will count. */
static void probe_begin(struct adaptive *a, uint64_t now_ms)
{
    a->saved = atomic_load_explicit(&a->limit, memory_order_relaxed);
    set_limit(a, a->conf.min);
    atomic_store_explicit(&a->probing, 1, memory_order_relaxed);
    a->valid_from_ms = now_ms + 1;
    window_reset(a, now_ms);
}

/* The probe's mean is the new min_rtt, higher or lower than before: the baseline follows
 * the work. Requests sent during the probe are kept out of the next window. */
static void probe_end(struct adaptive *a, uint64_t now_ms)
{
    uint64_t mean = a->sum_us / (uint64_t)a->count;
    atomic_store_explicit(&a->min_rtt_us, mean ? mean : 1, memory_order_relaxed);
    set_limit(a, a->saved);
    a->peak = a->saved;
    atomic_store_explicit(&a->probing, 0, memory_order_relaxed);
    a->valid_from_ms = now_ms + 1;
    a->settling = 1;
    window_reset(a, now_ms);
    schedule_probe(a, now_ms);
}

/* tolerance x min_rtt / rtt, within [GRADIENT_FLOOR, 1]. */
static double gradient(const struct adaptive *a, double rtt_us)
{
    double min_rtt = (double)atomic_load_explicit(&a->min_rtt_us, memory_order_relaxed);
    if (rtt_us <= 0.0)
        return 1.0;
    double g = a->conf.tolerance * min_rtt / rtt_us;
    return g < GRADIENT_FLOOR ? GRADIENT_FLOOR : g > 1.0 ? 1.0 : g;
}

/* The limit the window just closed asks for. App-limited (the backend never got within one
 * of the limit) means no evidence it could take more: no headroom, so no growth. */
static int next_limit(const struct adaptive *a, int limit)
{
    double rtt = (double)a->sum_us / (double)a->count;
    double headroom = a->max_inflight < limit - 1 ? 0.0 : HEADROOM;
    double v = floor((double)limit * gradient(a, rtt) + headroom);
    return clamp_int((int)v, a->conf.min, a->conf.max);
}

/* After a fall, growth waits for CONFIRM windows in a row that ask for it: near the knee one
 * noisy window would otherwise undo the fall, and the limit would flap between two values. */
static int damp(struct adaptive *a, int cur, int v)
{
    a->grow_streak = v > cur ? a->grow_streak + 1 : 0;
    if (v > cur && a->fallen && a->grow_streak < CONFIRM)
        return cur;
    if (v != cur)
        a->fallen = v < cur;
    return v;
}

/* Close the window. Halving from the peak since the last probe suggests the work got slower
 * rather than the backend smaller: re-measure min_rtt now instead of at the next probe. */
static void window_end(struct adaptive *a, uint64_t now_ms)
{
    if (a->settling) {
        a->settling = 0;
        window_reset(a, now_ms);
        return;
    }
    int cur = atomic_load_explicit(&a->limit, memory_order_relaxed);
    int v = damp(a, cur, next_limit(a, cur));
    set_limit(a, v);
    if (v > a->peak)
        a->peak = v;
    window_reset(a, now_ms);
    if (2 * v <= a->peak)
        probe_begin(a, now_ms);
}

void adaptive_init(struct adaptive *a, const struct adaptive_conf *c, uint64_t now_ms)
{
    pthread_mutex_init(&a->lock, NULL);
    a->conf = sanitise(c);
    a->rng = a->conf.seed;
    atomic_init(&a->limit, a->conf.min);
    atomic_init(&a->probing, 0);
    atomic_init(&a->min_rtt_us, 0);
    a->peak = a->conf.min;
    a->grow_streak = 0;
    a->fallen = 0;
    a->settling = 0;
    probe_begin(a, now_ms);
    a->next_probe_ms = now_ms; /* unused until the first probe ends */
}

void adaptive_destroy(struct adaptive *a)
{
    pthread_mutex_destroy(&a->lock);
}

/* A window's mean latency stands for in-flight / throughput (Little's law) only over spans
 * long against the latency itself: shorter, it catches a burst of responses that started
 * together. So a window lasts window_ms or WINDOW_RTTS x min_rtt, whichever is longer. */
static uint64_t window_span_ms(const struct adaptive *a)
{
    uint64_t rtts = WINDOW_RTTS * atomic_load_explicit(&a->min_rtt_us, memory_order_relaxed) / 1000;
    return rtts > a->conf.window_ms ? rtts : a->conf.window_ms;
}

static int window_full(const struct adaptive *a, uint64_t now_ms)
{
    if (probing(a))
        return a->count >= a->conf.probe_samples;
    return a->count >= a->conf.window_samples && now_ms >= a->win_start_ms &&
           now_ms - a->win_start_ms >= window_span_ms(a);
}

void adaptive_sample(struct adaptive *a, uint64_t rtt_us, int inflight, uint64_t now_ms)
{
    pthread_mutex_lock(&a->lock);
    if (!probing(a) && now_ms >= a->next_probe_ms)
        probe_begin(a, now_ms);
    if (sent_since(rtt_us, now_ms, a->valid_from_ms)) {
        window_add(a, rtt_us, inflight);
        if (window_full(a, now_ms)) {
            if (probing(a))
                probe_end(a, now_ms);
            else
                window_end(a, now_ms);
        }
    }
    pthread_mutex_unlock(&a->lock);
}

int adaptive_limit(const struct adaptive *a)
{
    return atomic_load_explicit(&a->limit, memory_order_relaxed);
}

uint64_t adaptive_min_rtt_us(const struct adaptive *a)
{
    return atomic_load_explicit(&a->min_rtt_us, memory_order_relaxed);
}

int adaptive_probing(const struct adaptive *a)
{
    return probing(a);
}
