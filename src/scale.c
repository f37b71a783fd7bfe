/* scale: worker sizing and the scaling decision (see include/sluice/scale.h). A tick does a
 * few multiplications, the Erlang B recursion up to the answer (about a + 3 sqrt(a) steps) and
 * a scan of 30 latency buckets; nothing is allocated. */
#include <sluice/scale.h>
#include <sluice/sizer.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TOLERANCE 1e-9      /* relative: a product this close to an integer is that integer */
#define RISE 1.5            /* Wq above RISE x its 5-minute low is "latency rising" */
#define SHALLOW 1           /* a queue at most this deep is shallow (reference: healthy 0-1) */
#define HIGH_UTIL 0.90      /* utilisation at or above this is high (reference: > 90% add) */
#define LOW_SLOT_MS 10000   /* one bucket of Wq lows */
#define EMERGENCY 2.0       /* a queue whose p95 wait over 10 s is EMERGENCY x target_wait */
#define MAX_MARGIN 3.0

static const char *const mode_names[] = {"little", "erlang", "model"};
static const char *const decision_names[] = {"hold", "up", "down"};
static const char *const why_names[] = {"steady",   "required", "queue",    "queue_deep",
                                        "idle",     "bound",    "cooldown", "at_limit",
                                        "no_supply"};

void scale_conf_defaults(struct scale_conf *c)
{
    *c = (struct scale_conf){
        .mode = SCALE_MODE_MODEL,
        .margin = 1.3,
        .quantile = 0.95,
        .target_wait_ms = 500,
        .epsilon = 0.05,
        .step = 0.25,
        .up_for_ms = 30000,
        .down_for_ms = 300000,
        .cooldown_ms = 60000,
        .min_workers = 1,
        .max_workers = 64,
        .queue_threshold = 5,
        .down_utilisation = 0.30,
        .db_max_connections = 0,
        .db_share = 0.65,
        .pool_size = 0,
    };
}

/* lo < v < hi (open) or lo <= v <= hi (closed); false for NaN either way. */
static int within(double v, double lo, double hi, int closed)
{
    return closed ? (v >= lo && v <= hi) : (v > lo && v < hi);
}

static const char *conf_problem(const struct scale_conf *c)
{
    if (c->mode != SCALE_MODE_LITTLE && c->mode != SCALE_MODE_ERLANG &&
        c->mode != SCALE_MODE_MODEL)
        return "mode must be model, erlang or little";
    if (!within(c->margin, 1.0, MAX_MARGIN, 1))
        return "margin must be between 1.0 and 3.0";
    if (!within(c->quantile, 0.0, 1.0, 0))
        return "quantile must be between 0 and 1";
    if (!within(c->epsilon, 0.0, 1.0, 0))
        return "epsilon must be between 0 and 1";
    if (c->slo_quantile != 0 && !within(c->slo_quantile, 0.0, 1.0, 0))
        return "slo_quantile must be between 0 and 1";
    if (!(c->step > 0 && c->step <= 1.0))
        return "step must be above 0 and at most 1";
    if (c->min_workers < 1 || c->max_workers < c->min_workers)
        return "need 1 <= min_workers <= max_workers";
    if (c->max_workers > SCALE_WORKERS_LIMIT)
        return "max_workers must be at most 100000";
    if (c->queue_threshold < 1 || c->queue_threshold > SCALE_WORKERS_LIMIT)
        return "queue_threshold must be between 1 and 100000";
    if (!within(c->down_utilisation, 0.0, 1.0, 1))
        return "down_utilisation must be between 0 and 1";
    if (c->db_max_connections < 0 || c->pool_size < 0)
        return "db_max_connections and pool_size must not be negative";
    if (!(c->db_share > 0 && c->db_share <= 1.0))
        return "db_share must be above 0 and at most 1";
    return NULL;
}

int scale_conf_check(const struct scale_conf *c, char *err, size_t errlen)
{
    const char *why = conf_problem(c);
    if (why)
        snprintf(err, errlen, "scale: %s", why);
    return why ? -1 : 0;
}

int scale_mode_parse(const char *s, enum scale_mode *mode)
{
    for (int m = SCALE_MODE_LITTLE; m <= SCALE_MODE_MODEL; m++)
        if (strcmp(s, mode_names[m]) == 0) {
            *mode = (enum scale_mode)m;
            return 0;
        }
    return -1;
}

const char *scale_mode_name(enum scale_mode m)
{
    return (unsigned)m <= SCALE_MODE_MODEL ? mode_names[m] : mode_names[0];
}

const char *scale_decision_name(enum scale_decision d)
{
    return (unsigned)d <= SCALE_DOWN ? decision_names[d] : "?";
}

const char *scale_why_name(enum scale_why w)
{
    return (unsigned)w <= SCALE_WHY_NO_SUPPLY ? why_names[w] : "?";
}

/* ------------------------------------------------------------------ arithmetic */

static double bigger(double a, double b)
{
    return a > b ? a : b;
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ceil(x) (or floor with down = 1), a value within TOLERANCE of an integer taken as it. */
static int round_tol(double x, int down)
{
    if (!(x > 0))
        return 0;
    if (x >= SCALE_WORKERS_LIMIT)
        return SCALE_WORKERS_LIMIT;
    double slack = TOLERANCE * bigger(x, 1.0);
    return down ? (int)floor(x + slack) : (int)ceil(x - slack);
}

int scale_required_little(double lambda, double wq_s, double margin)
{
    return round_tol(lambda * wq_s * margin, 0);
}

/* B(c, a) from B(c - 1, a): Erlang B, the recursion that never overflows. */
static double erlang_b_next(double b, int c, double a)
{
    return a * b / (c + a * b);
}

/* Erlang C from Erlang B, for c > a. */
static double erlang_c_of_b(double b, int c, double a)
{
    return c * b / (c - a * (1.0 - b));
}

double scale_erlang_c(int c, double a)
{
    if (!(a > 0))
        return 0.0;
    if (c <= a)
        return 1.0;
    double b = 1.0;
    for (int k = 1; k <= c; k++)
        b = erlang_b_next(b, k, a);
    return erlang_c_of_b(b, c, a);
}

int scale_required_erlang(double lambda, double service_s, double target_s, double epsilon)
{
    if (!(lambda > 0 && service_s > 0))
        return 0;
    double a = lambda * service_s;
    if (a >= SCALE_WORKERS_LIMIT)
        return SCALE_WORKERS_LIMIT;
    double b = 1.0, decay = bigger(target_s, 0.0) / service_s; /* the wait in service times */
    for (int c = 1; c < SCALE_WORKERS_LIMIT; c++) {
        b = erlang_b_next(b, c, a);
        if (c > a && erlang_c_of_b(b, c, a) * exp(-(c - a) * decay) <= epsilon)
            return c;
    }
    return SCALE_WORKERS_LIMIT;
}

int scale_db_cap(const struct scale_conf *c)
{
    if (c->db_max_connections <= 0 || c->pool_size <= 0 || !(c->db_share > 0))
        return 0;
    int cap = round_tol(c->db_max_connections * c->db_share / c->pool_size, 1);
    return cap > 0 ? cap : 1; /* a budget below one worker still runs one */
}

/* ------------------------------------------------------------------ state */

static struct scale_conf sanitise(const struct scale_conf *c)
{
    struct scale_conf s = *c;
    s.mode = (unsigned)s.mode <= SCALE_MODE_MODEL ? s.mode : SCALE_MODE_MODEL;
    s.margin = within(s.margin, 1.0, MAX_MARGIN, 1) ? s.margin : 1.0;
    if (within(s.slo_quantile, 0.0, 1.0, 0))
        s.epsilon = 1.0 - s.slo_quantile;
    s.epsilon = within(s.epsilon, 0.0, 1.0, 0) ? s.epsilon : 0.05;
    s.step = within(s.step, 0.0, 1.0, 1) ? s.step : 0.0; /* 0: steps of one worker */
    s.min_workers = clamp_int(s.min_workers, 1, SCALE_WORKERS_LIMIT);
    s.max_workers = clamp_int(s.max_workers, s.min_workers, SCALE_WORKERS_LIMIT);
    s.queue_threshold = clamp_int(s.queue_threshold, 1, SCALE_WORKERS_LIMIT);
    s.down_utilisation = within(s.down_utilisation, 0.0, 1.0, 1) ? s.down_utilisation : 0.0;
    return s;
}

void scale_init(struct scale *s, const struct scale_conf *c)
{
    memset(s, 0, sizeof *s);
    s->conf = sanitise(c);
    s->last_why = -1;
}

/* Follow one condition: it starts when first seen and ends at the first tick without it. */
static void timer_track(struct scale_timer *t, int cond, uint64_t now)
{
    if (cond && !t->on)
        t->since_ms = now;
    t->on = cond;
}

/* How long the condition has held; 0 when it does not hold now. */
static uint64_t held(const struct scale_timer *t, uint64_t now)
{
    return t->on ? now - t->since_ms : 0;
}

/* Record this tick's Wq in its 10 s bucket; return the lowest of the last 5 minutes. */
static double low_update(struct scale *s, double wq, uint64_t now)
{
    uint64_t slot = now / LOW_SLOT_MS + 1;
    size_t i = slot % SCALE_LOW_SLOTS;
    if (s->low[i].slot != slot || wq < s->low[i].low) {
        s->low[i].slot = slot;
        s->low[i].low = wq;
    }
    double low = wq;
    for (i = 0; i < SCALE_LOW_SLOTS; i++)
        if (s->low[i].slot + SCALE_LOW_SLOTS > slot && s->low[i].low < low)
            low = s->low[i].low;
    return low;
}

/* ------------------------------------------------------------------ one tick */

/* What the tick saw, worked out once. */
struct tick {
    const struct scale_input *in;
    struct scale_out *out;
    double low;   /* the 5-minute low of Wq */
    int bound;    /* backend or database bound */
};

static void reason_add(struct scale_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reason_add(struct scale_out *o, const char *fmt, ...)
{
    size_t len = strlen(o->reason);
    if (len + 1 >= sizeof o->reason)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->reason + len, sizeof o->reason - len, fmt, ap);
    va_end(ap);
}

static unsigned long long secs(uint64_t ms)
{
    return (unsigned long long)(ms / 1000);
}

/* "p95", "p99", "p99.9" from the configured quantile. */
static void quantile_label(const struct scale *s, char *buf, size_t n)
{
    snprintf(buf, n, "p%g", s->conf.quantile * 100.0);
}

/* Whether the model's figure is due: none yet, or SCALE_MODEL_EVERY_MS since the last one,
 * or SCALE_MODEL_DUTY times its cost when that is longer. */
static int model_due(const struct scale *s, uint64_t now_ms)
{
    if (!s->model_ms || s->model <= 0)
        return 1;
    double every = s->model_cost_ms * SCALE_MODEL_DUTY;
    if (every < SCALE_MODEL_EVERY_MS)
        every = SCALE_MODEL_EVERY_MS;
    return (double)(now_ms - s->model_ms) >= every;
}

/* The window as the model reads it. */
static struct sizing_load model_load(const struct scale_input *in)
{
    struct sizing_load l = in->load;
    l.headroom = l.headroom != 0 ? l.headroom : SIZING_HEADROOM_AUTO;
    return l;
}

static void model_store(struct scale *s, const struct sizer_result *r, uint64_t at_ms)
{
    s->model = r->model;
    s->model_ms = at_ms;
    s->model_requests = r->requests;
    s->model_headroom = r->headroom;
    s->model_cost_ms = r->cost_ms;
}

/* On the sizer's thread: the figure of the job asked on an earlier tick (a job asked
 * before scale_init is not waited for, and its figure is dropped); a new job when due. */
static int model_async(struct scale *s, const struct scale_input *in)
{
    const struct scale_conf *c = &s->conf;
    struct sizer_result r;
    if (sizer_take(in->sizer, &r) && s->model_job && r.id == s->model_job) {
        model_store(s, &r, s->model_job_ms);
        s->model_job = 0;
    }
    if (!s->model_job && model_due(s, in->now_ms)) {
        struct sizing_load l = model_load(in);
        s->model_job = sizer_submit(in->sizer, &l, c->target_wait_ms / 1000.0, 1 - c->epsilon,
                                    c->max_workers, s->model);
        s->model_job_ms = in->now_ms;
    }
    return s->model;
}

/* The model's figure, worked out again when due (model_due): in the tick, or on the
 * sizer's thread when the input names one. */
static int model_figure(struct scale *s, const struct scale_input *in)
{
    const struct scale_conf *c = &s->conf;
    if (in->sizer)
        return model_async(s, in);
    if (!model_due(s, in->now_ms))
        return s->model;
    struct sizing_load l = model_load(in);
    struct sizer_result r;
    sizer_run(&l, c->target_wait_ms / 1000.0, 1 - c->epsilon, c->max_workers, s->model, &r);
    model_store(s, &r, in->now_ms);
    return s->model;
}

static void size(struct scale *s, const struct scale_input *in, struct scale_out *o)
{
    const struct scale_conf *c = &s->conf;
    o->required_little = scale_required_little(in->lambda, in->wq_s, c->margin);
    o->required_erlang = scale_required_erlang(in->lambda, in->service_s,
                                               c->target_wait_ms / 1000.0, c->epsilon);
    o->required_model = model_figure(s, in);
    o->model_requests = s->model_requests;
    o->model_headroom = s->model_headroom;
    o->model_cost_ms = s->model_cost_ms;
    o->model_age_ms = s->model_ms ? in->now_ms - s->model_ms : 0;
    int req = c->mode == SCALE_MODE_LITTLE ? o->required_little : o->required_erlang;
    if (c->mode == SCALE_MODE_MODEL && o->required_model > 0)
        req = o->required_model;
    o->db_cap = scale_db_cap(c);
    o->db_capped = o->db_cap > 0 && req > o->db_cap;
    if (o->db_capped)
        req = o->db_cap;
    o->required = clamp_int(req, c->min_workers, c->max_workers);
    o->supply = in->supply;
    o->current = in->current > 0 ? in->current : in->supply;
    o->desired = o->current;
}

static void observe(struct scale *s, struct tick *t)
{
    const struct scale_input *in = t->in;
    int deepest = in->queue_max > in->queue_depth ? in->queue_max : in->queue_depth;
    int enough = in->wq_s > 0 && in->samples >= SCALE_MIN_SAMPLES;
    t->low = enough ? low_update(s, in->wq_s, in->now_ms) : 0.0;
    t->bound = t->low > 0 && in->wq_s > RISE * t->low && deepest <= SHALLOW &&
               in->utilisation < HIGH_UTIL;
    timer_track(&s->bound, t->bound, in->now_ms);
}

static void track_conditions(struct scale *s, const struct tick *t)
{
    const struct scale_input *in = t->in;
    const struct scale_out *o = t->out;
    int live = in->supply > 0, up_ok = live && !t->bound;
    timer_track(&s->need, up_ok && in->window_full && o->required > in->supply, in->now_ms);
    int modelled = s->conf.mode == SCALE_MODE_MODEL && o->required_model > 0;
    timer_track(&s->queue, up_ok && !modelled && in->queue_depth > s->conf.queue_threshold,
                in->now_ms);
    timer_track(&s->deep, up_ok && in->queue_depth > 2 * s->conf.queue_threshold &&
                              in->queue_wait_s * 1000 > EMERGENCY * s->conf.target_wait_ms,
                in->now_ms);
    int spare = in->utilisation < s->conf.down_utilisation || modelled;
    int was_idle = s->idle.on;
    timer_track(&s->idle, live && in->window_full && spare && o->required < in->supply,
                in->now_ms);
    if (s->idle.on && (!was_idle || o->required > s->idle_peak))
        s->idle_peak = o->required; /* the highest figure while the pool was over it */
}

/* The up condition that is due now, or SCALE_WHY_STEADY. */
static enum scale_why up_due(const struct scale *s, const struct scale_input *in)
{
    uint64_t now = in->now_ms;
    if (s->deep.on)
        return SCALE_WHY_QUEUE_DEEP;
    if (s->need.on && held(&s->need, now) >= s->conf.up_for_ms)
        return SCALE_WHY_REQUIRED;
    if (s->queue.on && held(&s->queue, now) >= s->conf.up_for_ms)
        return SCALE_WHY_QUEUE;
    return SCALE_WHY_STEADY;
}

/* The condition still gathering time, or SCALE_WHY_STEADY. */
static enum scale_why pending(const struct scale *s)
{
    return s->need.on ? SCALE_WHY_REQUIRED
         : s->queue.on ? SCALE_WHY_QUEUE
         : s->idle.on ? SCALE_WHY_IDLE
                      : SCALE_WHY_STEADY;
}

/* How long `why` needs to hold before it acts. */
static uint64_t wait_for(const struct scale *s, enum scale_why why)
{
    return why == SCALE_WHY_IDLE ? s->conf.down_for_ms : s->conf.up_for_ms;
}

/* The sentence for a timed condition; `need_ms` > 0 adds how long it must hold. */
static void say_condition(const struct scale *s, const struct tick *t, enum scale_why why,
                          uint64_t need_ms)
{
    const struct scale_input *in = t->in;
    struct scale_out *o = t->out;
    char q[16];
    quantile_label(s, q, sizeof q);
    if (why == SCALE_WHY_REQUIRED)
        reason_add(o, "required %d > supply %d for %llus", o->required, in->supply,
                   secs(held(&s->need, in->now_ms)));
    else if (why == SCALE_WHY_QUEUE)
        reason_add(o, "queue %d > %d for %llus", in->queue_depth, s->conf.queue_threshold,
                   secs(held(&s->queue, in->now_ms)));
    else if (why == SCALE_WHY_QUEUE_DEEP)
        reason_add(o, "queue %d > 2 x %d and its p95 wait %.2fs > %.0f x %.2fs: at once",
                   in->queue_depth, s->conf.queue_threshold, in->queue_wait_s, EMERGENCY,
                   s->conf.target_wait_ms / 1000.0);
    else if (why == SCALE_WHY_IDLE && in->utilisation >= s->conf.down_utilisation)
        reason_add(o, "required %d < supply %d (model; utilisation %.0f%%) for %llus",
                   o->required, in->supply, in->utilisation * 100,
                   secs(held(&s->idle, in->now_ms)));
    else if (why == SCALE_WHY_IDLE)
        reason_add(o, "utilisation %.0f%% < %.0f%% and required %d < supply %d for %llus",
                   in->utilisation * 100, s->conf.down_utilisation * 100, o->required,
                   in->supply, secs(held(&s->idle, in->now_ms)));
    if (need_ms)
        reason_add(o, " of %llus", secs(need_ms));
    if (why == SCALE_WHY_REQUIRED && s->conf.mode == SCALE_MODE_MODEL && o->required_model)
        reason_add(o, " (model: the last window replayed, P(wait > %.2fs) <= %.2f; rule of "
                      "thumb %d)", s->conf.target_wait_ms / 1000.0, s->conf.epsilon,
                   o->required_little);
    else if (why == SCALE_WHY_REQUIRED && s->conf.mode != SCALE_MODE_LITTLE)
        reason_add(o, " (Erlang C: lambda %.1f/s, S %.3fs, P(wait > %.2fs) <= %.2f)",
                   in->lambda, in->service_s, s->conf.target_wait_ms / 1000.0,
                   s->conf.epsilon);
    else if (why == SCALE_WHY_REQUIRED)
        reason_add(o, " (lambda %.1f/s x %s %.3fs x margin %.2f)", in->lambda, q, in->wq_s,
                   s->conf.margin);
}

static void say_bound(const struct scale *s, const struct tick *t)
{
    char q[16];
    quantile_label(s, q, sizeof q);
    reason_add(t->out, "backend or database bound: more workers will not help (%s %.3fs > "
                       "%.1f x %.3fs, its 5 min low; p50 %.3fs; queue %d; utilisation %.0f%%)",
               q, t->in->wq_s, RISE, t->low, t->in->p50_s, t->in->queue_depth,
               t->in->utilisation * 100);
}

static void say_steady(const struct tick *t)
{
    reason_add(t->out, "steady: required %d, supply %d, utilisation %.0f%%", t->out->required,
               t->in->supply, t->in->utilisation * 100);
}

static int in_cooldown(const struct scale *s, uint64_t now)
{
    return s->changed && now - s->changed_ms < s->conf.cooldown_ms;
}

/* The count one step up or down from current, within every bound; current if none allows.
 * Up for `required`: toward it, not past it. Down in mode model: to the highest figure of
 * the down_for period at once (the figure already holds the SLO with headroom; stepping
 * down 25 % per down_for took 15 minutes to come from 12 to 6). */
static int stepped(const struct scale *s, const struct scale_out *o, int dir, enum scale_why why)
{
    int n = round_tol(o->current * s->conf.step, 0);
    n = n < 1 ? 1 : n;
    if (dir < 0 && s->conf.mode == SCALE_MODE_MODEL && o->required_model > 0)
        n = o->current - (s->idle_peak > o->required ? s->idle_peak : o->required);
    if (dir > 0 && why == SCALE_WHY_REQUIRED && o->required - o->current < n)
        n = o->required - o->current > 1 ? o->required - o->current : 1;
    if (dir > 0) {
        int top = o->db_cap > 0 && o->db_cap < s->conf.max_workers ? o->db_cap
                                                                    : s->conf.max_workers;
        int want = o->current > top - n ? top : o->current + n;
        return want > o->current ? want : o->current;
    }
    int floor_ = o->required > s->conf.min_workers ? o->required : s->conf.min_workers;
    int want = o->current - n < floor_ ? floor_ : o->current - n;
    return want < o->current ? want : o->current;
}

static void say_limit(const struct scale *s, struct scale_out *o, int dir)
{
    if (dir > 0 && o->db_cap > 0 && o->db_cap < s->conf.max_workers)
        reason_add(o, "; at the database cap %d", o->db_cap);
    else if (dir > 0)
        reason_add(o, "; at max_workers %d", s->conf.max_workers);
    else
        reason_add(o, "; at the floor (min_workers %d, required %d)", s->conf.min_workers,
                   o->required);
}

/* A change is due for `why`: make it, or say what stops it. */
static enum scale_why change(struct scale *s, const struct tick *t, enum scale_why why, int dir)
{
    struct scale_out *o = t->out;
    uint64_t now = t->in->now_ms;
    say_condition(s, t, why, 0);
    if (in_cooldown(s, now)) {
        reason_add(o, "; cooldown: last change %llus ago, next in %llus",
                   secs(now - s->changed_ms), secs(s->changed_ms + s->conf.cooldown_ms - now));
        return SCALE_WHY_COOLDOWN;
    }
    o->desired = stepped(s, o, dir, why);
    if (o->desired == o->current) {
        say_limit(s, o, dir);
        return SCALE_WHY_AT_LIMIT;
    }
    o->decision = dir > 0 ? SCALE_UP : SCALE_DOWN;
    return why;
}

static enum scale_why decide(struct scale *s, const struct tick *t)
{
    uint64_t now = t->in->now_ms;
    if (t->in->supply <= 0) {
        reason_add(t->out, "no backend is up: nothing to size against");
        return SCALE_WHY_NO_SUPPLY;
    }
    if (t->bound) {
        say_bound(s, t);
        return SCALE_WHY_BOUND;
    }
    enum scale_why why = up_due(s, t->in);
    if (why != SCALE_WHY_STEADY)
        return change(s, t, why, +1);
    if (s->idle.on && held(&s->idle, now) >= s->conf.down_for_ms)
        return change(s, t, SCALE_WHY_IDLE, -1);
    why = pending(s);
    if (why == SCALE_WHY_STEADY)
        say_steady(t);
    else
        say_condition(s, t, why, wait_for(s, why));
    return why;
}

/* When the condition behind `why` began. */
static uint64_t since(struct scale *s, enum scale_why why, uint64_t now)
{
    if ((int)why != s->last_why) {
        s->last_why = (int)why;
        s->why_since_ms = now;
    }
    switch (why) {
    case SCALE_WHY_REQUIRED:
        return s->need.since_ms;
    case SCALE_WHY_QUEUE:
        return s->queue.since_ms;
    case SCALE_WHY_QUEUE_DEEP:
        return s->deep.since_ms;
    case SCALE_WHY_IDLE:
        return s->idle.since_ms;
    case SCALE_WHY_BOUND:
        return s->bound.since_ms;
    case SCALE_WHY_COOLDOWN:
        return s->changed_ms;
    default:
        return s->why_since_ms;
    }
}

/* A change was decided: the cooldown starts, the evidence starts again. */
static void committed(struct scale *s, uint64_t now)
{
    s->changed = 1;
    s->changed_ms = now;
    s->need.on = s->queue.on = s->deep.on = s->idle.on = 0;
}

void scale_tick(struct scale *s, const struct scale_input *in, struct scale_out *out)
{
    memset(out, 0, sizeof *out);
    struct tick t = {.in = in, .out = out};
    size(s, in, out);
    observe(s, &t);
    track_conditions(s, &t);
    out->why = decide(s, &t);
    out->since_ms = since(s, out->why, in->now_ms);
    if (out->db_capped)
        reason_add(out, " [database cap %d = %d x %.2f / pool %d]", out->db_cap,
                   s->conf.db_max_connections, s->conf.db_share, s->conf.pool_size);
    if (out->decision != SCALE_HOLD)
        committed(s, in->now_ms);
}
