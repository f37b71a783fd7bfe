/* Unit tests for worker sizing and the scaling decision (include/sluice/scale.h): the
 * arithmetic against values computed here by independent code (Erlang C as the direct sum of
 * a^k / k! in long double, not the Erlang B recursion the module uses) and against published
 * figures, then the decision rules on simulated time, one tick a second. Deterministic. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <sluice/scale.h>
#include <sluice/sizer.h>

#define T0 1000000ULL /* ms: a "now" well clear of 0 */

/* ------------------------------------------------------------------ independent reference */

/* Erlang C by the textbook formula: a^c/c! x c/(c-a) over (sum_{k<c} a^k/k! + that). Long
 * double holds a^k and k! up to about k = 1500, enough for a = 1000. */
static long double ref_erlang_c(int c, long double a)
{
    long double sum = 0, fact = 1;
    for (int k = 0; k < c; k++) {
        fact *= k > 0 ? k : 1;
        sum += powl(a, k) / fact;
    }
    fact *= c;
    long double top = powl(a, c) / fact * c / (c - a);
    return top / (sum + top);
}

/* P(wait > t) in an M/M/c queue, service time S; 1 when c <= a (it never settles). */
static long double ref_p_wait(int c, long double a, long double t, long double s)
{
    return c <= a ? 1.0L : ref_erlang_c(c, a) * expl(-(c - a) * t / s);
}

/* ------------------------------------------------------------------ a simulated controller */

struct run {
    struct scale s;
    struct scale_input in;
    struct scale_out out;
    int ups, downs;   /* decisions seen */
    int first_change; /* second of the first one; -1 = none */
    int last_change;  /* second of the last one */
};

/* Defaults, with a load that needs 26 workers by Little (100/s x 0.2 s x 1.3) against a
 * supply of 18: required > supply, queue empty, utilisation 60%. */
static void run_init(struct run *r, const struct scale_conf *c)
{
    memset(r, 0, sizeof *r);
    scale_init(&r->s, c);
    r->in = (struct scale_input){
        .lambda = 100, .wq_s = 0.2, .p50_s = 0.1, .service_s = 0.1,
        .supply = 18, .current = 18, .utilisation = 0.6, .samples = 6000,
        .window_full = 1, .queue_wait_s = 1.2,
    };
    r->first_change = -1;
}

static void run_std(struct run *r)
{
    struct scale_conf c;
    scale_conf_defaults(&c);
    c.mode = SCALE_MODE_LITTLE; /* the controller's rules, on figures easy to follow */
    run_init(r, &c);
}

/* A minute of `rate` req/s whose requests take 50-149 ms (rate / 10 erlangs); one window
 * per rate at a time. */
static struct sizing_load window_at(uint32_t rate)
{
    static struct hist h[2];
    static struct hist_snap svc[2];
    static uint32_t per_s[2][60];
    int k = rate > 40;
    hist_init(&h[k]);
    for (int s = 0; s < 60; s++) {
        per_s[k][s] = rate;
        for (uint32_t i = 0; i < rate; i++)
            hist_record(&h[k], 50000 + (uint64_t)(i % 10) * 10000 + (s % 7) * 1000);
    }
    hist_snapshot(&svc[k], &h[k]);
    return (struct sizing_load){.per_s = per_s[k], .seconds = 60, .service = &svc[k]};
}

/* A minute of 40 req/s whose requests take 50-149 ms (4 erlangs), for mode model. */
static struct sizing_load model_window(void)
{
    return window_at(40);
}

/* Mode model (the default), 40 req/s of ~100 ms, `workers` of them; no window yet. */
static void run_model(struct run *r, int workers)
{
    struct scale_conf c;
    scale_conf_defaults(&c);
    run_init(r, &c);
    r->in.lambda = 40;
    r->in.wq_s = 0.2;
    r->in.service_s = 0.1;
    r->in.supply = r->in.current = workers;
}

/* One tick at second t; an UP or DOWN is carried out at once (current follows desired). */
static void tick(struct run *r, int t)
{
    r->in.now_ms = T0 + (uint64_t)t * 1000;
    scale_tick(&r->s, &r->in, &r->out);
    if (r->out.decision == SCALE_HOLD)
        return;
    r->ups += r->out.decision == SCALE_UP;
    r->downs += r->out.decision == SCALE_DOWN;
    r->first_change = r->first_change < 0 ? t : r->first_change;
    r->last_change = t;
    r->in.current = r->out.desired;
}

/* Ticks at seconds from..to, both included. */
static void ticks(struct run *r, int from, int to)
{
    for (int t = from; t <= to; t++)
        tick(r, t);
}

/* |got - want| <= tol (cmocka's own float check works in float). */
static void assert_near(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%.15g is not within %g of %.15g", got, tol, want);
}

static void assert_reason_has(const struct scale_out *o, const char *needle)
{
    if (!strstr(o->reason, needle))
        fail_msg("reason \"%s\" lacks \"%s\"", o->reason, needle);
}

/* ------------------------------------------------------------------ configuration */

static void test_conf(void **state)
{
    (void)state;
    struct scale_conf c;
    char err[128] = "";
    scale_conf_defaults(&c);
    assert_int_equal(c.mode, SCALE_MODE_MODEL);
    assert_true(c.margin == 1.3 && c.quantile == 0.95 && c.epsilon == 0.05 && c.step == 0.25);
    assert_int_equal(c.target_wait_ms, 500);
    assert_int_equal(c.up_for_ms, 30000);
    assert_int_equal(c.down_for_ms, 300000);
    assert_int_equal(c.cooldown_ms, 60000);
    assert_int_equal(c.min_workers, 1);
    assert_int_equal(c.max_workers, 64);
    assert_int_equal(c.queue_threshold, 5);
    assert_true(c.down_utilisation == 0.30 && c.db_share == 0.65);
    assert_int_equal(c.db_max_connections, 0);
    assert_int_equal(c.pool_size, 0);
    assert_int_equal(scale_conf_check(&c, err, sizeof err), 0);

    c.margin = 0.9;
    assert_int_equal(scale_conf_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "margin"));
    scale_conf_defaults(&c);
    c.max_workers = 0;
    assert_int_equal(scale_conf_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "min_workers"));
    scale_conf_defaults(&c);
    c.epsilon = 0;
    assert_int_equal(scale_conf_check(&c, err, sizeof err), -1);

    enum scale_mode m = SCALE_MODE_LITTLE;
    assert_int_equal(scale_mode_parse("erlang", &m), 0);
    assert_int_equal(m, SCALE_MODE_ERLANG);
    assert_int_equal(scale_mode_parse("mean", &m), -1);
    assert_string_equal(scale_mode_name(m), "erlang");
    assert_string_equal(scale_decision_name(SCALE_UP), "up");
    assert_string_equal(scale_why_name(SCALE_WHY_BOUND), "bound");
}

/* ------------------------------------------------------------------ sizing arithmetic */

static void test_little(void **state)
{
    (void)state;
    assert_int_equal(scale_required_little(100, 0.2, 1.2), 24);
    assert_int_equal(scale_required_little(100, 0.2, 1.5), 30);
    assert_int_equal(scale_required_little(100, 0.2, 1.3), 26);
    assert_int_equal(scale_required_little(10, 0.21, 1.0), 3); /* 2.1 rounds up */
    /* 100 x 0.9 x 1.1 is 99.00000000000001 in binary: it must still be 99. */
    assert_int_equal(scale_required_little(100, 0.9, 1.1), 99);
    assert_int_equal(scale_required_little(0, 0.2, 1.3), 0);
    assert_int_equal(scale_required_little(1e12, 10, 1.5), SCALE_WORKERS_LIMIT);

    struct run r;
    struct scale_conf c;
    scale_conf_defaults(&c);
    c.min_workers = 3;
    run_init(&r, &c);
    r.in.lambda = 0;
    r.in.wq_s = 0;
    tick(&r, 0);
    assert_int_equal(r.out.required_little, 0);
    assert_int_equal(r.out.required_erlang, 0);
    assert_int_equal(r.out.required, 3); /* no load: min_workers */
}

/* a = 10 Erlangs: the module, the direct sum here, and the table to 4 places. */
static void test_erlang_c_table(void **state)
{
    (void)state;
    static const struct { int c; double table; } rows[] = {
        {11, 0.6821}, {12, 0.4494}, {13, 0.2853}, {14, 0.1741}, {15, 0.1020},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        double got = scale_erlang_c(rows[i].c, 10.0);
        assert_near(got, (double)ref_erlang_c(rows[i].c, 10.0L), 1e-12);
        assert_near(got, rows[i].table, 0.00005);
    }
    assert_true(scale_erlang_c(10, 10.0) == 1.0); /* c <= a: every arrival waits */
    assert_true(scale_erlang_c(5, 0.0) == 0.0);
}

/* Published: pyworkforce's ErlangC tutorial (docs/tutorials/erlangc_example.rst): 100 calls
 * in 30 minutes, 3 minutes each, answer within 20 s for 80% -> 14 positions, waiting
 * probability 0.174, service level 0.888. Here: the fewest c with P(wait > 20 s) <= 0.2. */
static void test_erlang_published(void **state)
{
    (void)state;
    double lambda = 100.0 / 1800, s = 180, a = lambda * s;
    assert_near(scale_erlang_c(14, a), 0.174, 0.0005);
    assert_int_equal(scale_required_erlang(lambda, s, 20, 0.2), 14);
    assert_near(1 - (double)ref_p_wait(14, a, 20, s), 0.888, 0.0005);
    assert_true(1 - ref_p_wait(13, a, 20, s) < 0.8); /* 13 misses the 80% */
}

/* a = 1000: no overflow, no NaN, the same as the direct sum; and far beyond. */
static void test_erlang_large(void **state)
{
    (void)state;
    for (int c = 1001; c <= 1120; c += 7) {
        double got = scale_erlang_c(c, 1000.0);
        assert_true(isfinite(got) && got > 0 && got < 1);
        assert_near(got / (double)ref_erlang_c(c, 1000.0L), 1.0, 1e-9);
    }
    int req = scale_required_erlang(1000, 1.0, 0.5, 0.05);
    assert_in_range(req, 1001, 1100);
    assert_true(ref_p_wait(req, 1000, 0.5, 1) <= 0.05L);
    assert_true(ref_p_wait(req - 1, 1000, 0.5, 1) > 0.05L);
    double huge = scale_erlang_c(60000, 59000.0);
    assert_true(isfinite(huge) && huge > 0 && huge < 1);
    assert_in_range(scale_required_erlang(59000, 1.0, 0.5, 0.05), 59001, 60000);
}

/* The answer is the fewest c: c passes, c - 1 fails, by the independent formula. */
static void test_erlang_fewest(void **state)
{
    (void)state;
    static const struct { double lambda, s, t, eps; } cases[] = {
        {100, 0.15, 0.5, 0.05}, {100, 0.15, 0.0, 0.05}, {3, 2.0, 0.5, 0.01},
        {40, 0.8, 2.0, 0.10},   {0.5, 0.3, 0.5, 0.05},  {250, 0.4, 0.25, 0.02},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long double a = (long double)cases[i].lambda * cases[i].s;
        int c = scale_required_erlang(cases[i].lambda, cases[i].s, cases[i].t, cases[i].eps);
        assert_true(c > a);
        assert_true(ref_p_wait(c, a, cases[i].t, cases[i].s) <= cases[i].eps);
        assert_true(ref_p_wait(c - 1, a, cases[i].t, cases[i].s) > cases[i].eps);
    }
}

static void test_erlang_monotone(void **state)
{
    (void)state;
    int prev = 0;
    for (double lambda = 1; lambda <= 300; lambda += 7) {
        int c = scale_required_erlang(lambda, 0.2, 0.5, 0.05);
        assert_true(c >= prev);
        prev = c;
    }
    assert_true(prev > scale_required_erlang(1, 0.2, 0.5, 0.05));
    prev = scale_required_erlang(100, 0.5, 0.0, 0.05);
    int first = prev;
    for (double t = 0.1; t <= 5.0; t += 0.1) {
        int c = scale_required_erlang(100, 0.5, t, 0.05);
        assert_true(c <= prev);
        prev = c;
    }
    assert_true(prev < first);
}

/* ------------------------------------------------------------------ the database cap */

static void test_db_cap(void **state)
{
    (void)state;
    struct scale_conf c;
    scale_conf_defaults(&c);
    assert_int_equal(scale_db_cap(&c), 0); /* unknown: no cap */
    c.db_max_connections = 500;
    assert_int_equal(scale_db_cap(&c), 0); /* pool size still unknown */
    c.pool_size = 10;
    assert_int_equal(scale_db_cap(&c), 32); /* 500 x 0.65 / 10 = 32.5 */
    struct scale_conf c2 = c;
    c2.db_max_connections = 700;
    c2.db_share = 0.7;
    assert_int_equal(scale_db_cap(&c2), 49); /* 48.99999999999999 in binary */

    struct run r;
    c.mode = SCALE_MODE_LITTLE;
    c.margin = 1.0;
    run_init(&r, &c);
    r.in.wq_s = 0.4; /* 100 x 0.4 x 1.0 = 40 */
    tick(&r, 0);
    assert_int_equal(r.out.required_little, 40);
    assert_int_equal(r.out.required, 32);
    assert_int_equal(r.out.db_cap, 32);
    assert_int_equal(r.out.db_capped, 1);
    assert_reason_has(&r.out, "database cap 32 = 500 x 0.65 / pool 10");

    r.in.wq_s = 0.2; /* 20: under the cap */
    tick(&r, 1);
    assert_int_equal(r.out.required, 20);
    assert_int_equal(r.out.db_capped, 0);
    assert_null(strstr(r.out.reason, "database"));
}

/* Growth stops at the cap and at max_workers: HOLD, saying which. */
static void test_up_bounded(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    r.in.supply = r.in.current = 62;
    r.in.queue_depth = 11;
    tick(&r, 0);
    assert_int_equal(r.out.decision, SCALE_UP);
    assert_int_equal(r.out.desired, 64);
    ticks(&r, 1, 100);
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.out.why, SCALE_WHY_AT_LIMIT);
    assert_reason_has(&r.out, "at max_workers 64");

    struct scale_conf c;
    scale_conf_defaults(&c);
    c.db_max_connections = 500;
    c.pool_size = 10;
    run_init(&r, &c);
    r.in.supply = r.in.current = 30;
    r.in.queue_depth = 11;
    ticks(&r, 0, 100);
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.in.current, 32);
    assert_reason_has(&r.out, "at the database cap 32");
}

/* ------------------------------------------------------------------ scaling up */

static void test_up_needs_up_for(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    ticks(&r, 0, 29); /* required 26 > supply 18 for 29 s ... */
    assert_int_equal(r.out.why, SCALE_WHY_REQUIRED);
    assert_reason_has(&r.out, "for 29s of 30s");
    r.in.lambda = 50; /* ... then 13: the condition breaks */
    ticks(&r, 30, 40);
    assert_int_equal(r.ups + r.downs, 0);

    run_std(&r);
    ticks(&r, 0, 30);
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.first_change, 30);
    assert_int_equal(r.out.desired, 18 + 5); /* ceil(18 x 0.25) = ceil(4.5) */
    assert_int_equal(r.out.since_ms, T0);
    assert_string_equal(r.out.reason,
                        "required 26 > supply 18 for 30s (lambda 100.0/s x p95 0.200s x "
                        "margin 1.30)");
}

/* Not continuous, so not acted on: above supply 20 s out of every 21, for ten minutes. */
static void test_up_interrupted(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    for (int t = 0; t < 600; t++) {
        r.in.lambda = t % 21 == 20 ? 50 : 100;
        tick(&r, t);
    }
    assert_int_equal(r.ups + r.downs, 0);
}

static void test_steady_no_flap(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    r.in.supply = r.in.current = 26; /* required 26 == supply */
    r.in.utilisation = 0.75;
    for (int t = 0; t < 600; t++) {
        r.in.queue_depth = t % 2;
        r.in.utilisation = t % 3 ? 0.75 : 0.8;
        tick(&r, t);
        assert_int_equal(r.out.decision, SCALE_HOLD);
    }
    assert_int_equal(r.out.why, SCALE_WHY_STEADY);
    assert_int_equal(r.out.since_ms, T0);
    assert_reason_has(&r.out, "steady: required 26, supply 26");
}

static void test_cooldown(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    ticks(&r, 0, 30);
    assert_int_equal(r.ups, 1);
    ticks(&r, 31, 60); /* the evidence starts again at the new size ... */
    assert_int_equal(r.out.why, SCALE_WHY_REQUIRED);
    tick(&r, 61); /* ... and is enough again at 61, but the cooldown runs to 90 */
    assert_int_equal(r.out.why, SCALE_WHY_COOLDOWN);
    assert_int_equal(r.out.since_ms, T0 + 30000);
    assert_reason_has(&r.out, "cooldown: last change 31s ago, next in 29s");
    ticks(&r, 62, 89);
    assert_int_equal(r.ups, 1);
    tick(&r, 90);
    assert_int_equal(r.ups, 2);
    assert_int_equal(r.out.desired, 26); /* toward required 26, not 23 + ceil(23 x 0.25) */
}

/* Required 13 (50/s x 0.2 s x 1.3) <= supply 18, so only the queue speaks: `depth` deep. */
static void run_queue(struct run *r, int depth)
{
    run_std(r);
    r->in.lambda = 50;
    r->in.queue_depth = depth;
}

static void test_queue_at_once(void **state)
{
    (void)state;
    struct run r;
    run_queue(&r, 11);
    tick(&r, 0);
    assert_int_equal(r.out.decision, SCALE_UP);
    assert_int_equal(r.out.why, SCALE_WHY_QUEUE_DEEP);
    assert_int_equal(r.out.desired, 23);

    run_queue(&r, 10);   /* = 2 x threshold: not "deeper than" */
    r.in.queue_max = 30; /* a burst within the second does not count */
    tick(&r, 0);
    assert_int_equal(r.out.decision, SCALE_HOLD);
    assert_int_equal(r.out.why, SCALE_WHY_QUEUE);
}

/* Issue 18: early in a run a deep queue that drains in time scaled up at once. At once
 * needs requests waiting far past the SLO (the queue's p95 wait over 2 x target_wait: a
 * pool at its true minimum has 10 s windows at 0.52 s for a 0.5 s SLO); a deep queue of
 * shorter waits is ordinary queue evidence, which must last up_for. */
static void test_deep_queue_needs_late_waits(void **state)
{
    (void)state;
    struct run r;
    run_queue(&r, 11);
    r.in.queue_wait_s = 0.9;
    ticks(&r, 0, 29);
    assert_int_equal(r.ups, 0);
    assert_int_equal(r.out.why, SCALE_WHY_QUEUE);
    tick(&r, 30);
    assert_int_equal(r.ups, 1);
}

/* Required counts only once the window holds its span: a few seconds are no evidence. */
static void test_required_waits_for_a_full_window(void **state)
{
    (void)state;
    struct run r;
    run_std(&r); /* required 26 > supply 18 */
    r.in.window_full = 0;
    ticks(&r, 0, 59);
    assert_int_equal(r.ups, 0);
    r.in.window_full = 1;
    ticks(&r, 60, 90);
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.first_change, 90);
}

/* Issue 18: the step goes to the figure, not 25 % past it; and in mode model a pool over the
 * figure for down_for comes down to it, busy or not (W1 went 5 -> 7 -> 9 -> 12 -> 15 and
 * never came down). Here the model's figure is what sizing.h gives for 40 req/s of ~100 ms:
 * from 12 workers (utilisation 37 %) the pool comes down to it and stays. */
static void test_model_converges_and_comes_down(void **state)
{
    (void)state;
    struct sizing_load window = model_window();
    struct run r;
    run_model(&r, 12);
    r.in.utilisation = 0.37;
    r.in.load = window;
    for (int t = 0; t <= 1800; t++) {
        r.in.supply = r.in.current;
        tick(&r, t);
    }
    int need = r.out.required_model;
    assert_true(need >= 5 && need <= 7);
    assert_int_equal(r.in.current, need);
    assert_int_equal(r.ups, 0);
    assert_int_equal(r.downs, 1); /* straight to the highest figure of down_for */
    int downs = r.downs;
    for (int t = 1801; t <= 3600; t++) { /* steady load at the figure: no flapping */
        r.in.supply = r.in.current;
        tick(&r, t);
    }
    assert_int_equal(r.downs, downs);
    assert_int_equal(r.ups, 0);
    assert_int_equal(r.in.current, need);

    run_model(&r, 4); /* from 4 workers (under the figure): up to it, never past */
    r.in.utilisation = 1.0;
    r.in.load = window;
    int most = 0;
    for (int t = 0; t <= 600; t++) {
        r.in.supply = r.in.current;
        tick(&r, t);
        most = r.in.current > most ? r.in.current : most;
    }
    assert_int_equal(r.in.current, need);
    assert_int_equal(most, need);
    assert_int_equal(r.downs, 0);
}

/* Issue 18: a pool at its true minimum runs busy, with a queue over the threshold for long
 * stretches; in mode model the replayed window is the evidence, not the queue's depth. At
 * the figure, a queue of 8 waiting 0.6 s (the SLO allows 5 % over 0.5 s) for ten minutes
 * changes nothing; a queue whose p95 wait is over twice the SLO's is still an emergency. */
static void test_model_ignores_an_ordinary_queue(void **state)
{
    (void)state;
    struct run r;
    run_model(&r, 6);
    r.in.load = model_window();
    tick(&r, 0);
    int need = r.out.required_model;
    r.in.supply = r.in.current = need;
    r.in.utilisation = 0.9;
    r.in.queue_depth = 8;
    r.in.queue_wait_s = 0.6;
    ticks(&r, 1, 600);
    assert_int_equal(r.ups + r.downs, 0);
    r.in.queue_depth = 11;
    r.in.queue_wait_s = 1.1;
    tick(&r, 601);
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.out.why, SCALE_WHY_QUEUE_DEEP);
    assert_reason_has(&r.out, "> 2 x 0.50s: at once");
}

static void test_queue_sustained(void **state)
{
    (void)state;
    struct run r;
    run_queue(&r, 6);
    ticks(&r, 0, 29);
    r.in.queue_depth = 5; /* not above the threshold: the timer restarts */
    ticks(&r, 30, 40);
    assert_int_equal(r.ups, 0);

    run_queue(&r, 6);
    ticks(&r, 0, 30);
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.first_change, 30);
    assert_string_equal(r.out.reason, "queue 6 > 5 for 30s");
}

/* ------------------------------------------------------------------ scaling down */

/* Utilisation 20% against a supply of 20 at `lambda` req/s (20: required 6 = ceil(5.2)). */
static void run_idle(struct run *r, int min_workers, double lambda)
{
    struct scale_conf c;
    scale_conf_defaults(&c);
    c.mode = SCALE_MODE_LITTLE;
    c.min_workers = min_workers;
    run_init(r, &c);
    r->in.lambda = lambda;
    r->in.supply = r->in.current = 20;
    r->in.utilisation = 0.2;
}

/* After down_for of idling: exactly one step down, to the count returned. */
static int idle_step(int min_workers, double lambda)
{
    struct run r;
    run_idle(&r, min_workers, lambda);
    ticks(&r, 0, 300);
    assert_int_equal(r.downs, 1);
    return r.out.desired;
}

static void test_down(void **state)
{
    (void)state;
    struct run r;
    run_idle(&r, 1, 20);
    ticks(&r, 0, 299);
    assert_int_equal(r.downs, 0);
    assert_int_equal(r.out.why, SCALE_WHY_IDLE);
    tick(&r, 300);
    assert_int_equal(r.downs, 1);
    assert_int_equal(r.out.desired, 15); /* 20 - ceil(20 x 0.25) */
    assert_reason_has(&r.out, "utilisation 20% < 30% and required 6 < supply 20 for 300s");

    assert_int_equal(idle_step(1, 70), 19);  /* not below required: 70 x 0.2 x 1.3 = 18.2 */
    assert_int_equal(idle_step(17, 20), 17); /* not below min_workers */
}

static void test_down_interrupted(void **state)
{
    (void)state;
    struct run r;
    run_idle(&r, 1, 20);
    ticks(&r, 0, 199);
    r.in.utilisation = 0.5; /* one busy second */
    tick(&r, 200);
    r.in.utilisation = 0.2;
    ticks(&r, 201, 500);
    assert_int_equal(r.downs, 0);
    tick(&r, 501);
    assert_int_equal(r.downs, 1);
}

/* ------------------------------------------------------------------ backend or DB bound */

/* A minute at p95 0.2 s with required < supply; from second 60 the backend slows to 0.5 s, so
 * required jumps to 33 > supply 20, but the queue stays at `depth`. */
static void run_slowdown(struct run *r, int depth, int to)
{
    run_std(r);
    r->in.lambda = 50;
    r->in.supply = r->in.current = 20;
    ticks(r, 0, 59);
    r->in.wq_s = 0.5;
    r->in.p50_s = 0.3;
    r->in.queue_depth = depth;
    ticks(r, 60, to);
}

static void test_bound_hold(void **state)
{
    (void)state;
    struct run r;
    run_slowdown(&r, 0, 240);
    assert_int_equal(r.out.required, 33);
    assert_int_equal(r.ups + r.downs, 0);
    assert_int_equal(r.out.decision, SCALE_HOLD);
    assert_int_equal(r.out.why, SCALE_WHY_BOUND);
    assert_int_equal(r.out.since_ms, T0 + 60000);
    const char *say = "backend or database bound: more workers will not help";
    assert_memory_equal(r.out.reason, say, strlen(say));
    assert_reason_has(&r.out, "p95 0.500s > 1.5 x 0.200s");

    run_slowdown(&r, 2, 100); /* the queue is not shallow: workers are short after all */
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.first_change, 90);
}

/* The rise is measured against the last 5 minutes: one that lasts longer is the new level. */
static void test_bound_ends(void **state)
{
    (void)state;
    struct run r;
    run_slowdown(&r, 0, 300);
    assert_int_equal(r.out.why, SCALE_WHY_BOUND);
    ticks(&r, 301, 420);
    assert_int_not_equal(r.out.why, SCALE_WHY_BOUND);
    assert_int_equal(r.ups, 1);
}

/* Lows older than 5 minutes are forgotten even when nothing replaced them: after a quiet spell
 * (no requests, no Wq) a slower level is not a "rise" against the day before. */
static void test_bound_forgets(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    r.in.supply = r.in.current = 40; /* required 26 < 40: no up either way */
    ticks(&r, 0, 59);
    r.in.lambda = r.in.wq_s = r.in.p50_s = r.in.utilisation = 0;
    ticks(&r, 60, 400);
    r.in.lambda = 100;
    r.in.wq_s = 0.5;
    r.in.utilisation = 0.6;
    tick(&r, 401);
    assert_int_not_equal(r.out.why, SCALE_WHY_BOUND);
    r.in.wq_s = 0.2; /* from this low, 0.5 is a rise again */
    tick(&r, 402);
    r.in.wq_s = 0.5;
    tick(&r, 403);
    assert_int_equal(r.out.why, SCALE_WHY_BOUND);
}

/* Issue 14: one fast request just after a start (a 1 ms readiness probe) was the "5-minute
 * low" of p95, and for 5 minutes every scale-up was held as bound. A Wq from fewer than
 * SCALE_MIN_SAMPLES requests is no level: the load that needs more workers gets them. */
static void test_bound_needs_samples(void **state)
{
    (void)state;
    struct run r;
    run_std(&r); /* required 26 > supply 18 */
    r.in.lambda = 0.1;
    r.in.wq_s = r.in.p50_s = 0.001;
    r.in.samples = 1;
    r.in.utilisation = 0.01;
    tick(&r, 0);
    r.in.lambda = 100;
    r.in.wq_s = 0.2;
    r.in.p50_s = 0.1;
    r.in.utilisation = 0.6;
    for (int t = 1; t <= 40; t++) {
        r.in.samples = (uint64_t)t * 100; /* the window fills */
        tick(&r, t);
        assert_int_not_equal(r.out.why, SCALE_WHY_BOUND);
    }
    assert_int_equal(r.ups, 1);
    assert_int_equal(r.first_change, 31); /* required > supply from second 1, for up_for */
}

/* The default mode sizes by the window replayed (sizing.h); the rule of thumb and Erlang C
 * are shown beside it. 40 req/s of 100 ms, 4 erlangs: the model needs 6 or so for
 * P(wait > 500 ms) <= 5 %, Little x 0.2 s x 1.3 says 11. Without a window (too few
 * requests) it sizes by Erlang C. */
static void test_model_mode(void **state)
{
    (void)state;
    struct sizing_load window = model_window();
    struct run r;
    run_model(&r, 4);
    tick(&r, 0);
    assert_int_equal(r.out.required_model, 0); /* no window yet */
    assert_int_equal(r.out.required, r.out.required_erlang);
    r.in.load = window;
    ticks(&r, 1, 31);
    assert_true(r.out.required_model >= 5 && r.out.required_model <= 7);
    assert_int_equal(r.out.required_little, 11);
    assert_int_equal(r.ups, 1);
    assert_reason_has(&r.out, "model: the last window replayed");
}

/* The model's figure is worked out again every 5 s, or after 100 times what the last run
 * cost when that is longer (it never takes more than 1 % of the main thread); the output
 * says how old the figure is and what it cost. */
static void test_model_cadence_follows_its_cost(void **state)
{
    (void)state;
    struct run r;
    run_model(&r, 4);
    r.in.load = window_at(40);
    tick(&r, 0);
    int light = r.out.required_model;
    assert_true(light >= 5 && light <= 7);
    assert_true(r.out.model_cost_ms >= 0 && r.out.model_cost_ms < 50);
    r.in.load = window_at(80); /* twice the load: more workers */
    tick(&r, 4);
    assert_int_equal(r.out.required_model, light); /* 4 s: not due */
    assert_int_equal(r.out.model_age_ms, 4000);
    tick(&r, 5);
    int heavy = r.out.required_model;
    assert_true(heavy > light);
    assert_int_equal(r.out.model_age_ms, 0);
    r.s.model_cost_ms = 120; /* as if that run had taken 120 ms: next in 12 s, not 5 */
    r.in.load = window_at(40);
    tick(&r, 10);
    tick(&r, 16);
    assert_int_equal(r.out.required_model, heavy);
    assert_int_equal(r.out.model_age_ms, 11000);
    tick(&r, 17);
    assert_int_equal(r.out.required_model, light);
}

/* Ticks at second t until the model's figure is not `from` (the sizer's thread has
 * answered), up to 30 s of real time. */
static void tick_until_figure_moves(struct run *r, int t, int from)
{
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 30000; i++) {
        tick(r, t);
        if (r->out.required_model != from)
            return;
        nanosleep(&ms, NULL);
    }
    fail_msg("no figure from the sizer's thread in 30 s");
}

/* With a sizer (as sluice runs), the figure is worked out on its thread and collected on a
 * later tick: the same figure as in the tick. A job asked before the configuration
 * changed (scale_init) is dropped, not shown. */
static void test_model_on_the_sizers_thread(void **state)
{
    (void)state;
    struct run sync, r;
    run_model(&sync, 4);
    sync.in.load = window_at(40);
    tick(&sync, 0);
    int light = sync.out.required_model;
    sync.in.load = window_at(80);
    tick(&sync, 5);
    int heavy = sync.out.required_model;
    assert_true(light > 0 && heavy > light);

    run_model(&r, 4);
    r.in.sizer = sizer_new();
    assert_non_null(r.in.sizer);
    r.in.load = window_at(40);
    tick(&r, 0);
    assert_int_equal(r.out.required_model, 0); /* asked, not answered */
    tick_until_figure_moves(&r, 0, 0);
    assert_int_equal(r.out.required_model, light);
    r.in.load = window_at(80);
    tick(&r, 5); /* the heavy window asked ... */
    struct scale_conf c = r.s.conf;
    scale_init(&r.s, &c); /* ... and the configuration reloaded before its answer */
    r.in.load = window_at(40);
    tick_until_figure_moves(&r, 6, 0);
    assert_int_equal(r.out.required_model, light); /* the heavy job's figure was dropped */
    sizer_free(r.in.sizer);
}

/* The SLO as users say it: 99 % of requests wait at most slo_wait is epsilon 0.01. */
static void test_slo_quantile(void **state)
{
    (void)state;
    struct scale_conf c;
    char err[128];
    scale_conf_defaults(&c);
    c.slo_quantile = 0.99;
    assert_int_equal(scale_conf_check(&c, err, sizeof err), 0);
    struct scale s;
    scale_init(&s, &c);
    assert_true(fabs(s.conf.epsilon - 0.01) < 1e-12);
    c.slo_quantile = 1.5;
    assert_int_equal(scale_conf_check(&c, err, sizeof err), -1);
    assert_string_equal(err, "scale: slo_quantile must be between 0 and 1");
}

static void test_erlang_mode(void **state)
{
    (void)state;
    struct run r;
    struct scale_conf c;
    scale_conf_defaults(&c);
    c.mode = SCALE_MODE_ERLANG;
    run_init(&r, &c);
    r.in.service_s = 0.2; /* a = 20 Erlangs: 22 servers keep P(wait > 0.5 s) <= 5% */
    ticks(&r, 0, 30);
    assert_int_equal(r.out.required_little, 26);
    assert_int_equal(r.out.required_erlang, 22);
    assert_int_equal(r.out.required, r.out.required_erlang);
    assert_int_equal(r.ups, 1);
    assert_reason_has(&r.out, "(Erlang C: lambda 100.0/s, S 0.200s, P(wait > 0.50s) <= 0.05)");
}

static void test_no_supply(void **state)
{
    (void)state;
    struct run r;
    run_std(&r);
    r.in.supply = 0;
    r.in.current = 0;
    r.in.queue_depth = 50;
    ticks(&r, 0, 100);
    assert_int_equal(r.ups + r.downs, 0);
    assert_int_equal(r.out.why, SCALE_WHY_NO_SUPPLY);
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf),
        cmocka_unit_test(test_little),
        cmocka_unit_test(test_erlang_c_table),
        cmocka_unit_test(test_erlang_published),
        cmocka_unit_test(test_erlang_large),
        cmocka_unit_test(test_erlang_fewest),
        cmocka_unit_test(test_erlang_monotone),
        cmocka_unit_test(test_db_cap),
        cmocka_unit_test(test_up_bounded),
        cmocka_unit_test(test_up_needs_up_for),
        cmocka_unit_test(test_up_interrupted),
        cmocka_unit_test(test_steady_no_flap),
        cmocka_unit_test(test_cooldown),
        cmocka_unit_test(test_queue_at_once),
        cmocka_unit_test(test_queue_sustained),
        cmocka_unit_test(test_down),
        cmocka_unit_test(test_down_interrupted),
        cmocka_unit_test(test_bound_hold),
        cmocka_unit_test(test_bound_ends),
        cmocka_unit_test(test_bound_forgets),
        cmocka_unit_test(test_bound_needs_samples),
        cmocka_unit_test(test_model_mode),
        cmocka_unit_test(test_model_cadence_follows_its_cost),
        cmocka_unit_test(test_model_on_the_sizers_thread),
        cmocka_unit_test(test_slo_quantile),
        cmocka_unit_test(test_deep_queue_needs_late_waits),
        cmocka_unit_test(test_required_waits_for_a_full_window),
        cmocka_unit_test(test_model_converges_and_comes_down),
        cmocka_unit_test(test_model_ignores_an_ordinary_queue),
        cmocka_unit_test(test_erlang_mode),
        cmocka_unit_test(test_no_supply),
    };
    return cmocka_run_group_tests_name("scale", tests, NULL, NULL);
}
