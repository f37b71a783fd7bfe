/* request_admit: whether and when a request may go upstream: its shared rate limit asked of
 * Redis (with the [redis] on_failure fallback), its tenant's and route's in-flight slots,
 * and its wait in the shared queue with the refusals that can end it. It does not read
 * heads or talk to backends (request.c, request_upstream.c). */
#include <stdio.h>

#include <event2/event.h>

#include <sluice/atomics.h>
#include <sluice/queue.h>
#include <sluice/redis.h>
#include <sluice/runtime.h>
#include <sluice/request-int.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

/* ---- tenant and route slots ---- */

static struct route_state *route_state_of(const struct request *r)
{
    return admit_route_state(&r->rt->admit, req_cfg(r), r->route);
}

/* Take one of the request's route's slots (1 without a route); 0 if the route is full. */
static int take_route(struct request *r)
{
    struct route_state *rs = route_state_of(r);
    return !rs || atomic_take_below(&rs->inflight, r->route->max_inflight);
}

int adm_take_slots(struct request *r)
{
    if (!r->tenant_slot && !(r->tenant_slot = admit_take(r->tenant)))
        return 0; /* the tenant is at its max_inflight */
    if (!r->route_slot && !(r->route_slot = take_route(r)))
        return 0; /* the route is at its max_inflight */
    return 1;
}

/* Give back the tenant's and the route's slots. Called just before the backend's is given
 * back, whose one kick then sees their waiters as eligible again: one freed slot, one
 * wake-up. */
void adm_release_slots(struct request *r)
{
    if (r->tenant_slot) {
        r->tenant_slot = 0;
        if (r->t_slot_us) /* the worker time it held is its tenant's, for fair sharing */
            queue_charge(&r->w->px->queue, r->tenant->st, r->tenant->conf->weight,
                         (int64_t)(admit_now_ns() / 1000 - r->t_slot_us), r->wt.charged_us);
        r->wt.charged_us = 0;
        admit_give(r->tenant);
    }
    if (r->route_slot) {
        struct route_state *rs = route_state_of(r);
        r->route_slot = 0;
        if (rs)
            atomic_fetch_sub_explicit(&rs->inflight, 1, memory_order_relaxed);
    }
}

void adm_release_backend(struct request *r)
{
    if (r->backend) {
        up_release(r->backend);
        r->backend = NULL;
        queue_kick(&r->w->px->queue);
    }
}

/* ---- shared rate limits ([redis]) ---- */

/* Redis did not decide: [redis] on_failure does. */
static void limiter_fallback(struct request *r)
{
    const struct config *c = req_cfg(r);
    stats_add(&r->w->stats, STAT_redis_fallbacks, 1);
    switch (c->redis.on_failure) {
    case RF_OPEN:
        admit_count(r->tenant);
        req_admitted(r, 0, 0);
        return;
    case RF_CLOSED:
        req_admitted(r, 0, 1);
        return;
    default: {
        int share = atomic_load_explicit(&r->w->px->redis_instances, memory_order_relaxed);
        req_admitted(r, admit_rate_share(r->tenant, admit_now_ns(), share), 0);
        return;
    }
    }
}

static void redis_answer(void *arg, int rc, long long wait_us, const char *str)
{
    if (str)
        rc = -1; /* the GCRA script answers an integer; anything else is an error */
    struct request *r = arg;
    r->rcall = NULL;
    req_timer_stop(r);
    if (rc < 0) {
        limiter_fallback(r);
        return;
    }
    if (wait_us == 0)
        admit_count(r->tenant);
    req_admitted(r, wait_us > 0 ? (uint64_t)wait_us * 1000 : 0, 0);
}

void adm_ask_redis(struct request *r)
{
    const struct config *c = req_cfg(r);
    struct tenant *t = r->tenant;
    r->rcall = redis_gcra(&r->w->redis, c->redis.prefix, t->st->name, t->interval_ns / 1000,
                          t->tau_ns / 1000, redis_answer, r);
    if (!r->rcall) {
        limiter_fallback(r); /* not connected: decide now, without waiting */
        return;
    }
    req_advance(r, RQ_ADMIT);
    if (req_timer_ms(r, c->redis.timeout_ms) < 0) {
        redis_cancel(&r->w->redis, r->rcall, 1);
        r->rcall = NULL;
        limiter_fallback(r);
    }
}

/* ---- the shared queue ---- */

/* A slot may be free with nobody sent to it (one freed while a request was deciding to
 * queue, or several at once): wake a waiter for it, unless a woken one is still on its way
 * to a free slot (it kicks when it has taken its own; two woken for one slot would race,
 * and the one the queue chose could lose). The kick skips tenants at max_inflight. */
static void kick_if_room(struct worker *w, struct runtime *rt)
{
    struct queue *q = &w->px->queue;
    if (queue_len(q) > 0 && atomic_load_explicit(&q->promised, memory_order_relaxed) == 0 &&
        up_has_slot(&rt->up, up_now_ms()))
        queue_kick(q);
}

/* A slot was freed for this waiter (on its own thread now). */
static void wake_cb(void *arg)
{
    struct request *r = arg;
    enum waiter_state st = r->wt.state;
    struct queue *q = &r->w->px->queue;
    if (st != W_WOKEN && st != W_SHED && st != W_DROPPED)
        return;
    r->wt.state = W_IDLE;
    if (r->state != RQ_QUEUED) { /* cannot happen: leaving the queue makes the waiter idle */
        if (st == W_WOKEN) {
            queue_promise_kept(q);
            kick_if_room(r->w, r->rt);
        }
        return;
    }
    req_timer_stop(r);
    if (st != W_WOKEN) { /* its tenant's queue stands, or it had the most of a full queue */
        req_send_queue_reject(r, st == W_SHED ? "shed" : "queue-full", r->wt.retry_s);
        return;
    }
    struct worker *w = r->w;
    struct runtime *rt = r->rt; /* the generation whose slots it tried for */
    runtime_ref(rt);
    req_advance(r, RQ_CONNECTING);
    ups_pick_and_connect(r, 1); /* may free r */
    queue_promise_kept(q);
    kick_if_room(w, rt);
    runtime_unref(rt);
}

/* All backends with a slot limit are full: wait in the shared queue (or 503). front: it
 * was woken but a newcomer took the slot, so it keeps its place and its deadline. */
void adm_wait_for_slot(struct request *r, int front)
{
    const struct config *c = req_cfg(r);
    struct queue *q = &r->w->px->queue;
    if (!r->wt.box) {
        r->wt.box = &r->w->box;
        mail_init(&r->wt.wake, wake_cb, r);
    }
    r->wt.ts = r->tenant->st;
    r->wt.weight = r->tenant->conf->weight;
    r->wt.max_inflight = r->tenant->conf->max_inflight;
    r->wt.max_queue = r->tenant->conf->max_queue;
    struct route_state *rs = route_state_of(r);
    r->wt.route_max = rs ? r->route->max_inflight : 0;
    r->wt.route_inflight = rs && r->wt.route_max > 0 ? &rs->inflight : NULL;
    uint64_t now = up_now_ms();
    if (!front)
        r->wt.since_ms = now; /* before queue_push: from then on other threads read it */
    uint32_t retry_s = 0;
    int rc = c->queue_max == 0 ? -1 : queue_push(q, &r->wt, front, c->queue_max, &retry_s);
    if (rc == -3) {
        req_send_queue_reject(r, "shed", retry_s);
        return;
    }
    if (rc == -2) {
        r->answer_keep = r->req.done;
        req_answer(r, 429, "tenant-queue", "this tenant has too many requests waiting",
                   "Retry-After: 1\r\nX-Sluice-Reject: tenant-queue\r\n");
        return;
    }
    if (rc < 0) { /* no queue ([queue] max = 0) */
        atomic_fetch_add(&q->full, 1);
        req_send_queue_reject(r, "queue-full", 0);
        return;
    }
    uint64_t waited = now - r->wt.since_ms;
    req_advance(r, RQ_QUEUED);
    if (req_timer_ms(r, waited < c->queue_timeout_ms ? (uint32_t)(c->queue_timeout_ms - waited)
                                                     : 0) < 0) {
        queue_leave(q, &r->wt);
        req_error(r, 503, "no-memory", "out of memory queueing the request");
        return;
    }
    kick_if_room(r->w, r->rt);
}

void adm_leave_queue(struct request *r)
{
    if (r->wt.box) {
        queue_leave(&r->w->px->queue, &r->wt);
        mailbox_cancel(r->wt.box, &r->wt.wake);
        r->wt.box = NULL;
    }
}

void adm_timer(struct request *r)
{
    switch (r->state) {
    case RQ_ADMIT: /* Redis did not answer in time */
        redis_cancel(&r->w->redis, r->rcall, 1);
        r->rcall = NULL;
        limiter_fallback(r);
        return;
    case RQ_QUEUED: /* waited queue timeout; a wake-up on its way is passed on */
        queue_leave(&r->w->px->queue, &r->wt);
        atomic_fetch_add(&r->w->px->queue.timeouts, 1);
        req_send_queue_reject(r, "queue-timeout", 0);
        return;
    default:
        return;
    }
}
