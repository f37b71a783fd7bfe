/* autoscale: the once-a-second scale controller on the main thread. It ticks the meter,
 * feeds the pool's measurements to the sizing rules (scale.h) and hands each decision to
 * the configured sinks: an exec hook (`on_scale`, never two at once, killed after
 * on_scale_timeout), a webhook (JSON POST with retries), Redis (SET + PUBLISH), and the
 * Gunicorn actuator (SIGTTIN/SIGTTOU to the master named by gunicorn_pidfile). /metrics and
 * /status.json read its last result. Nothing here blocks: children are reaped with
 * WNOHANG on the tick, HTTP goes through libevent's client. */
#ifndef SLUICE_AUTOSCALE_H
#define SLUICE_AUTOSCALE_H

#include <stdint.h>
#include <sys/types.h>

#include <sluice/cluster.h>
#include <sluice/scale.h>

struct event_base;
struct evbuffer;
struct proxy;
struct runtime;
struct rclient;

#define AUTOSCALE_HISTORY 90 /* points of 10 s: the last 15 minutes */

struct autoscale_point {
    int64_t t;                 /* wall clock, s */
    int required, supply, desired, queue;
};

struct autoscale {
    struct proxy *px;          /* borrowed */
    struct event_base *base;   /* borrowed */
    struct event *tick;        /* owned: every second */
    struct scale sc;
    struct scale_out out;      /* the last tick's */
    struct scale_input in;     /* what it was fed */
    uint32_t arrivals[HIST_WIN_MAX_S]; /* in.load's: the window's arrivals per second */
    struct hist_snap service;  /* in.load's: the window's upstream times */
    struct sizer *sizer;       /* owned: the model's thread (sizer.h) */
    int have;                  /* 1 after the first tick */
    int clustered;             /* the last tick sized the cluster (Redis heartbeat fresh) */
    struct cluster_view cv;    /* ... as it saw it; only the leader runs the sinks */
    uint64_t decisions;        /* UP/DOWN decisions made */
    /* exec hook */
    pid_t hook_pid;            /* running, or 0 */
    uint64_t hook_deadline_ms;
    int hook_pending;          /* a decision arrived while the hook ran: run it after */
    struct scale_out hook_out; /* that decision (the hook gets it, not a later tick's) */
    uint64_t hook_runs, hook_failures;
    /* webhook */
    struct evdns_base *dns;    /* owned */
    int web_attempt;           /* attempts of the current delivery, 0 = idle */
    struct event *web_retry;   /* owned */
    char web_body[1024];
    uint64_t web_sent, web_failures;
    /* Gunicorn actuator */
    int gunicorn_workers;      /* workers seen under the master, -1 = unknown */
    int gunicorn_target;       /* workers it is moving the master to, 0 = none */
    pid_t gunicorn_master;
    int master_missing;        /* "no running master" was logged (until one is seen) */
    int act_expect;            /* workers expected after the last signal, -1 = none */
    uint64_t act_deadline;     /* ms: stop waiting for it (a busy worker may take long) */
    /* history for the chart */
    struct autoscale_point hist[AUTOSCALE_HISTORY];
    int nhist, hist_next;
    uint64_t last_point_s;
};

/* Start the controller on base. NULL when out of memory. */
struct autoscale *autoscale_new(struct event_base *base, struct proxy *px);

/* A new generation: its [scale] rules from now on (the conditions start afresh when the
 * rules changed). */
void autoscale_set(struct autoscale *a, const struct runtime *rt);

void autoscale_free(struct autoscale *a);

/* The "scale" object of /status.json, and the sluice_scale_* lines of /metrics. */
void autoscale_json(const struct autoscale *a, struct evbuffer *out);
void autoscale_metrics(const struct autoscale *a, struct evbuffer *out);

#endif
