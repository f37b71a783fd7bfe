/* sizer: the sizing model (sizing.h) worked out on a thread of its own, at the lowest CPU
 * priority (nice 19 and SCHED_IDLE).
 *
 * A run replays the whole measured window: its cost grows with the requests in it (about
 * 100 ms for 180,000 requests, 500 ms for a million on this 2-core machine). On the main
 * thread that stalled the status page, health checks and Redis for as long, and where the
 * proxy shares its core with the main thread (a pinned or a one-core deployment) it took
 * that core from the requests in bursts: p99 1.3-2x higher while it ran. On its own
 * thread the scheduler gives it only what the proxy leaves: SCHED_IDLE, so that a proxy
 * thread that wakes takes the core back at once (at nice 19 alone the model kept it for
 * its time slice: pinned /small p99 about 1 ms higher, 4.0-4.1 against 2.8-3.0 ms).
 *
 * One job at a time: the caller hands over a copy of the window (sizer_submit: refused
 * while a job runs) and collects the figure on a later tick (sizer_take). A job carries an
 * id; the caller keeps the id it is waiting for and drops any other (a job asked under an
 * older configuration). Thread-safe between one caller thread and the sizer's thread. */
#ifndef SLUICE_SIZER_H
#define SLUICE_SIZER_H

#include <stdint.h>

#include <sluice/sizing.h>

struct sizer;

/* What a job found. */
struct sizer_result {
    uint64_t id;          /* sizer_submit's */
    int model;            /* sizing_required_near's answer */
    uint64_t requests;    /* sizing_requests of the window */
    double headroom;      /* sizing_headroom of the window (0 without a figure) */
    double cost_ms;       /* the CPU time the job took */
};

/* The job itself, on this thread: r's all but id. */
void sizer_run(const struct sizing_load *l, double wait_s, double quantile, int most,
               int hint, struct sizer_result *r);

/* A sizer with its thread started; NULL when the thread cannot be made. */
struct sizer *sizer_new(void);

/* Asks for sizing_required_near(l, wait_s, quantile, most, hint) on a copy of l (at most
 * HIST_WIN_MAX_S seconds: the newest are kept). Returns the job's id (> 0), or 0 while
 * another job runs or its result waits to be taken. */
uint64_t sizer_submit(struct sizer *z, const struct sizing_load *l, double wait_s,
                      double quantile, int most, int hint);

/* 1 with the finished job's result in *r (once per job), else 0. */
int sizer_take(struct sizer *z, struct sizer_result *r);

/* A job still running this many seconds after it was asked (10 by default: other work
 * kept every core busy and SCHED_IDLE gave it none) leaves SCHED_IDLE for plain nice 19,
 * where the scheduler owes it a share; sizer_take checks, on the caller's tick. */
void sizer_idle_max(struct sizer *z, int seconds);

/* Stops the thread (a job running is cut short) and frees z. NULL is fine. */
void sizer_free(struct sizer *z);

#endif
