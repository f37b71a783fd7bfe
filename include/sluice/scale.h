/* scale: the worker-sizing arithmetic and the scaling decision for a Gunicorn pool, fed once
 * a second with what the proxy measured. It computes how many workers the load needs both ways,
 * always both, for display: Little's law with a margin (the operators' rule, workers = rate x
 * latency x 1.2..1.5) and Erlang C (the fewest servers of an M/M/c queue that keep
 * P(wait > target_wait) <= epsilon). `mode` picks the one that drives `required`, which is then
 * cut to the database's connection budget and clamped to [min_workers, max_workers]. From that
 * and the queue and utilisation it says SCALE_UP, SCALE_DOWN or HOLD with a desired worker count
 * and a reason a person can read. It does no I/O, no libevent, no threads and changes nothing:
 * the caller measures, calls scale_tick, shows the result and runs the sinks (and is assumed to
 * act on every UP/DOWN it is given: the cooldown starts at the decision). Not thread-safe.
 *
 * The rules ([scale] key defaults in brackets):
 * - Up when required > supply at every tick for up_for [30s] (counted only once the window
 *   holds its whole span: a figure from a few seconds is no evidence), or the queue depth was
 *   above queue_threshold [5] at every tick for up_for; at once when it is above 2 x
 *   queue_threshold AND requests are waiting past the SLO (the queue's p95 wait over
 *   target_wait: a real emergency, not a deep queue that drains in time). The step: toward
 *   `required`, at most ceil(current x step [0.25]) and at least 1 (issue 18: +25 % past the
 *   figure overshot it and ratcheted up); on queue evidence alone, the whole step. desired
 *   never passes max_workers or the database cap; when it cannot grow the decision is HOLD,
 *   saying so.
 * - Down by one step when required < supply at every tick for down_for [5m] and either
 *   utilisation < down_utilisation [0.30] or the mode is model with a figure (it does not
 *   grow with the queueing, so a pool over the figure is over-provisioned whatever its
 *   utilisation); desired = max(current - step, required, min_workers).
 * - No two changes within cooldown [60s]. A change restarts every condition timer, so the
 *   evidence for the next step is gathered at the new size. Up wins over down.
 * - Hysteresis: a condition counts only while it holds at every tick; one tick without it
 *   restarts its timer (seen at two ticks, it held between them: feed it every second).
 *   required == supply is neither up nor down, so a steady load holds.
 * - "backend or database bound: more workers will not help": Wq (the configured quantile, p95
 *   by default) is above 1.5 x its lowest value of the last 5 minutes (10 s buckets) while the
 *   queue is shallow (depth now and the last second's max both <= 1) and utilisation < 0.90:
 *   HOLD with a reason starting with exactly that text, whatever the other rules say, even
 *   required > supply. While it holds the up timers restart: their evidence came from the slow
 *   backend. A rise lasting 5 minutes becomes the new level and the hold ends. Only a Wq
 *   measured over SCALE_MIN_SAMPLES requests or more counts, as a low or as a rise.
 * - No backend up (supply <= 0): HOLD, timers restart; there is nothing to size against.
 * - The queue-deep rules read the depth now (one sample a tick), not the last second's max, so
 *   one burst does not count as deep; the shallow test reads both, so one burst is not shallow.
 *
 * The arithmetic: required_little = ceil(lambda x Wq x margin). A result within 1e-9
 * (relative) of an integer counts as that integer, for this ceil and for the cap's floor
 * (100 x 0.9 x 1.1 is 99.00000000000001 in binary, 700 x 0.7 / 10 is 48.99999999999999).
 * required_erlang uses the Erlang B recursion (no factorials, stable to any c); both saturate
 * at SCALE_WORKERS_LIMIT. cap = floor(db_max_connections x db_share / pool_size) when all three
 * are set; the cap applies before the clamp, so min_workers wins over a smaller cap. */
#ifndef SLUICE_SCALE_H
#define SLUICE_SCALE_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/sizing.h>

struct sizer;

#define SCALE_REASON_LEN 240      /* the reason buffer, NUL included */
#define SCALE_WORKERS_LIMIT 100000 /* required_little and required_erlang saturate here */
#define SCALE_LOW_SLOTS 30        /* Wq lows kept for the bound test: 30 x 10 s = 5 minutes */
/* The bound test reads a Wq only when it comes from this many requests: a p95 of a handful
 * (one readiness probe of 1 ms after a start) is no level to compare with (issue 14). */
#define SCALE_MIN_SAMPLES 200
/* The model's figure is worked out again this often (a replay costs ~10 ms at a few hundred
 * req/s; a window of a minute changes little in 5 s) ... */
#define SCALE_MODEL_EVERY_MS 5000
/* ... or, when a run took longer, after SCALE_MODEL_DUTY times what it took: the model
 * never takes more than 1 % of a core. Its cost grows with the window's requests: 504 ms
 * for 1.07 million at 30,000 req/s, where every 5 s was 10 % of a core; the figure is
 * then under a minute old, younger than the minute it reads. */
#define SCALE_MODEL_DUTY 100

enum scale_mode { SCALE_MODE_LITTLE = 0, SCALE_MODE_ERLANG, SCALE_MODE_MODEL };

enum scale_decision { SCALE_HOLD = 0, SCALE_UP, SCALE_DOWN };

/* What the reason is about; since_ms in the output says when it began. */
enum scale_why {
    SCALE_WHY_STEADY = 0, /* no condition holds */
    SCALE_WHY_REQUIRED,   /* required > supply (waiting for up_for, or acted on) */
    SCALE_WHY_QUEUE,      /* queue > queue_threshold (waiting for up_for, or acted on) */
    SCALE_WHY_QUEUE_DEEP, /* queue > 2 x queue_threshold: up at once */
    SCALE_WHY_IDLE,       /* utilisation < down_utilisation (waiting for down_for, or acted on) */
    SCALE_WHY_BOUND,      /* backend or database bound: more workers will not help */
    SCALE_WHY_COOLDOWN,   /* a change was due, but the last one is too recent */
    SCALE_WHY_AT_LIMIT,   /* a change was due, but max, min, the DB cap or required forbid it */
    SCALE_WHY_NO_SUPPLY,  /* no backend is up */
};

/* The [scale] section; each field is the key of the same name (durations in ms). */
struct scale_conf {
    enum scale_mode mode;     /* [model] which figure drives decisions; all are shown */
    double margin;            /* [1.3] Little's law margin, 1.0..3.0 (reference: 1.2-1.5) */
    double quantile;          /* [0.95] the latency quantile the caller measures Wq at (label) */
    uint32_t target_wait_ms;  /* [500] Erlang C: the wait to keep rare ... */
    double epsilon;           /* [0.05] ... P(wait > target_wait) <= epsilon, 0 < eps < 1 */
    double slo_quantile;      /* [0: unset] the same SLO as users say it: slo_quantile of
                               * requests wait at most target_wait (key slo_wait); when set,
                               * epsilon = 1 - slo_quantile */
    double step;              /* [0.25] a change is ceil(current x step) workers, at least 1 */
    uint32_t up_for_ms;       /* [30s] an up condition must hold this long */
    uint32_t down_for_ms;     /* [5m] the down condition must hold this long */
    uint32_t cooldown_ms;     /* [60s] no two changes within this */
    int min_workers;          /* [1] */
    int max_workers;          /* [64] */
    int queue_threshold;      /* [5] deeper for up_for: up; deeper than twice this: up at once */
    double down_utilisation;  /* [0.30] below this for down_for: down */
    int db_max_connections;   /* [0] the database's max_connections; 0 = unknown, no cap */
    double db_share;          /* [0.65] the part of it Superset may use, 0 < share <= 1 */
    int pool_size;            /* [0] SQLAlchemy connections per worker; 0 = unknown, no cap */
};

/* One tick's measurements. */
struct scale_input {
    uint64_t now_ms;     /* monotonic */
    double lambda;       /* arrival rate, req/s over the measurement window */
    double wq_s;         /* the configured quantile of upstream time, s; 0 = no data */
    double p50_s;        /* median upstream time, s (shown with the bound hold) */
    double service_s;    /* mean service time S, s (Erlang C) */
    int queue_depth;     /* requests waiting now */
    int queue_max;       /* the most waiting during the last second; 0 if not measured */
    int supply;          /* worker capacity of the backends that are up */
    int current;         /* workers the actuator knows; 0 = same as supply */
    double utilisation;  /* in-flight / supply, averaged over the window, 0..1 */
    uint64_t samples;    /* requests behind wq_s; fewer than SCALE_MIN_SAMPLES: no bound test */
    struct sizing_load load; /* the window replayed by mode model (arrays: the caller's) */
    struct sizer *sizer; /* works the model out off this thread (sizer.h); NULL: here, in
                          * the tick */
    int window_full;     /* the window holds its whole span: `required` may act */
    double queue_wait_s; /* p95 of the time requests waited in sluice's queue, last 10 s */
};

/* Everything the status page shows. */
struct scale_out {
    int required_little; /* ceil(lambda x Wq x margin), before cap and bounds */
    int required_erlang; /* fewest c with P(wait > target_wait) <= epsilon, before cap/bounds */
    int required_model;  /* the same SLO by replaying the window (sizing.h); 0 = too little
                          * data (then mode model sizes by Erlang C) ... */
    uint64_t model_requests; /* ... from this many requests in the window ... */
    double model_headroom;   /* ... their service times stretched by this ... */
    double model_cost_ms;    /* ... worked out in this much CPU time ... */
    uint64_t model_age_ms;   /* ... this long ago */
    int required;        /* mode's figure, cut to db_cap, clamped to [min, max workers] */
    int db_cap;          /* floor(db_max_connections x db_share / pool_size); 0 = unknown */
    int db_capped;       /* 1 if the cap cut required this tick */
    int supply;          /* as given */
    int current;         /* as given, or supply when given as 0 */
    int desired;         /* the count to run: current unless decision is UP or DOWN */
    enum scale_decision decision;
    enum scale_why why;
    uint64_t since_ms;   /* when the condition behind `why` began */
    char reason[SCALE_REASON_LEN];
};

/* A controller's memory between ticks. Initialise with scale_init; the caller owns it. */
struct scale_timer {
    int on;
    uint64_t since_ms;
};

struct scale {
    struct scale_conf conf;          /* a copy, sanitised */
    struct scale_timer need;         /* required > supply */
    struct scale_timer queue;        /* queue > queue_threshold (without a model figure) */
    struct scale_timer deep;         /* queue > 2 x threshold, p95 wait > 2 x target_wait */
    struct scale_timer idle;         /* utilisation low and required < supply ... */
    int idle_peak;                   /* ... the highest `required` while it held */
    struct scale_timer bound;        /* backend or database bound */
    int changed;                     /* 1 once a change was decided ... */
    uint64_t changed_ms;             /* ... at this time */
    int last_why;                    /* the last tick's `why` (-1 before the first) ... */
    uint64_t why_since_ms;           /* ... and since when */
    struct {
        uint64_t slot;               /* now_ms / 10000 + 1; 0 = empty */
        double low;                  /* the lowest Wq seen in that slot */
    } low[SCALE_LOW_SLOTS];
    int model;                       /* the model's last figure ... */
    uint64_t model_ms;               /* ... worked out at this time (0 = never) ... */
    double model_cost_ms;            /* ... in this much CPU time ... */
    uint64_t model_job;              /* the sizer's job being waited for (0 = none) ... */
    uint64_t model_job_ms;           /* ... asked at this time */
    uint64_t model_requests;         /* ... from this many requests ... */
    double model_headroom;           /* ... stretched by this */
};

/* Defaults for every field: the bracketed values above. */
void scale_conf_defaults(struct scale_conf *c);

/* 0 if c is usable, else -1 with a reason in err (for the configuration parser). */
int scale_conf_check(const struct scale_conf *c, char *err, size_t errlen);

/* "model", "erlang" or "little" to the mode: 0, or -1 if s is none of them. */
int scale_mode_parse(const char *s, enum scale_mode *mode);

const char *scale_mode_name(enum scale_mode m);
const char *scale_decision_name(enum scale_decision d); /* "hold", "up", "down" */
const char *scale_why_name(enum scale_why w);            /* "steady", "required", ... */

/* Start with no condition held and no change made. Out-of-range fields are made usable. */
void scale_init(struct scale *s, const struct scale_conf *c);

/* One tick: size, update the conditions, decide. Fills all of *out. */
void scale_tick(struct scale *s, const struct scale_input *in, struct scale_out *out);

/* ceil(lambda x wq_s x margin), 0 for no load, at most SCALE_WORKERS_LIMIT. */
int scale_required_little(double lambda, double wq_s, double margin);

/* The fewest c > a = lambda x service_s with C(c, a) x exp(-(c - a) x target_s / service_s)
 * <= epsilon; 0 for no load, at most SCALE_WORKERS_LIMIT. */
int scale_required_erlang(double lambda, double service_s, double target_s, double epsilon);

/* Erlang C: the probability that an arrival waits, c servers, offered load a Erlangs.
 * 1 when c <= a (the queue grows without bound), 0 when a <= 0. */
double scale_erlang_c(int c, double a);

/* floor(db_max_connections x db_share / pool_size), or 0 when any of them is unset. */
int scale_db_cap(const struct scale_conf *c);

#endif
