/* session_admit: whether and when a session's request may go upstream: its shared rate limit
 * asked of Redis (with the [redis] on_failure fallback), its tenant's and route's in-flight
 * slots, and its wait in the shared queue with the refusals that can end it. It does not
 * parse heads or talk to backends (session.c, session_upstream.c). */
#include <stdio.h>

#include <event2/event.h>

#include <sluice/atomics.h>
#include <sluice/queue.h>
#include <sluice/redis.h>
#include <sluice/runtime.h>
#include <sluice/session-int.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>
#include <sluice/worker.h>

/* ---- tenant and route slots ---- */

static struct route_state *route_state_of(const struct session *s)
{
    return admit_route_state(&s->rt->admit, sess_cfg_of(s), s->route);
}

/* Take one of the request's route's slots (1 without a route); 0 if the route is full. */
int sess_take_route(struct session *s)
{
    struct route_state *rs = route_state_of(s);
    return !rs || atomic_take_below(&rs->inflight, s->route->max_inflight);
}

/* Give back the tenant's and the route's slots. Called just before sess_release_backend(),
 * whose one kick then sees their waiters as eligible again: one freed slot, one wake-up. */
void sess_release_tenant(struct session *s)
{
    if (s->tenant_slot) {
        s->tenant_slot = 0;
        if (s->t_slot_us) /* the worker time it held is its tenant's, for fair sharing */
            queue_charge(&s->w->px->queue, s->tenant->st, s->tenant->conf->weight,
                         (int64_t)(admit_now_ns() / 1000 - s->t_slot_us), s->wt.charged_us);
        s->wt.charged_us = 0;
        admit_give(s->tenant);
    }
    if (s->route_slot) {
        struct route_state *rs = route_state_of(s);
        s->route_slot = 0;
        if (rs)
            atomic_fetch_sub_explicit(&rs->inflight, 1, memory_order_relaxed);
    }
}

/* ---- shared rate limits ([redis]) ---- */

/* Redis did not decide: [redis] on_failure does. */
void sess_limiter_fallback(struct session *s)
{
    const struct config *c = sess_cfg_of(s);
    stats_add(&s->w->stats, STAT_redis_fallbacks, 1);
    switch (c->redis.on_failure) {
    case RF_OPEN:
        admit_count(s->tenant);
        sess_resume_head(s, 0, 0);
        return;
    case RF_CLOSED:
        sess_resume_head(s, 0, 1);
        return;
    default: {
        int share = atomic_load_explicit(&s->w->px->redis_instances, memory_order_relaxed);
        sess_resume_head(s, admit_rate_share(s->tenant, admit_now_ns(), share), 0);
        return;
    }
    }
}

static void redis_answer(void *arg, int rc, long long wait_us, const char *str)
{
    if (str)
        rc = -1; /* the GCRA script answers an integer; anything else is an error */
    struct session *s = arg;
    s->rcall = NULL;
    evtimer_del(s->timer);
    if (rc < 0) {
        sess_limiter_fallback(s);
        return;
    }
    if (wait_us == 0)
        admit_count(s->tenant);
    sess_resume_head(s, wait_us > 0 ? (uint64_t)wait_us * 1000 : 0, 0);
}

void sess_ask_redis(struct session *s)
{
    const struct config *c = sess_cfg_of(s);
    struct tenant *t = s->tenant;
    s->rcall = redis_gcra(&s->w->redis, c->redis.prefix, t->st->name, t->interval_ns / 1000,
                          t->tau_ns / 1000, redis_answer, s);
    if (!s->rcall) {
        sess_limiter_fallback(s); /* not connected: decide now, without waiting */
        return;
    }
    s->state = S_ADMIT;
    sess_timer_ms(s, c->redis.timeout_ms);
}

/* ---- the shared queue ---- */

/* 503 from the queue (its tenant's queue stands, the queue is full, or it waited too
 * long): the backends are saturated. retry_s: when its tenant would be served (0: ask the
 * queue now). */
void sess_send_queue_reject(struct session *s, const char *why, uint32_t retry_s)
{
    char extra[128];
    if (!retry_s)
        retry_s = s->tenant ? queue_retry_after(&s->w->px->queue, s->tenant->st) : 1;
    snprintf(extra, sizeof extra, "Retry-After: %u\r\nX-Sluice-Reject: %s\r\n", retry_s, why);
    s->answer_keep = s->req.done;
    sess_send_answer(s, 503, why, "the backends are saturated; retry later", extra);
}

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
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    enum waiter_state st = s->wt.state;
    struct queue *q = &s->w->px->queue;
    if (st != W_WOKEN && st != W_SHED && st != W_DROPPED)
        return;
    s->wt.state = W_IDLE;
    if (s->state != S_QUEUED) { /* cannot happen: leaving the queue makes the waiter idle */
        if (st == W_WOKEN) {
            queue_promise_kept(q);
            kick_if_room(s->w, s->rt);
        }
        return;
    }
    evtimer_del(s->timer);
    if (st != W_WOKEN) { /* its tenant's queue stands, or it had the most of a full queue */
        sess_send_queue_reject(s, st == W_SHED ? "shed" : "queue-full", s->wt.retry_s);
        return;
    }
    struct worker *w = s->w;
    struct runtime *rt = s->rt; /* the generation whose slots it tried for */
    runtime_ref(rt);
    s->state = S_CONNECTING;
    sess_pick_and_connect(s, 1); /* may free s */
    queue_promise_kept(q);
    kick_if_room(w, rt);
    runtime_unref(rt);
}

/* All backends with a slot limit are full: wait in the shared queue (or 503). front: it
 * was woken but a newcomer took the slot, so it keeps its place and its deadline. */
void sess_wait_for_slot(struct session *s, int front)
{
    const struct config *c = sess_cfg_of(s);
    struct queue *q = &s->w->px->queue;
    if (!s->wt.wake && !(s->wt.wake = event_new(s->w->base, -1, 0, wake_cb, s))) {
        sess_send_error(s, 503, "no-memory", "out of memory queueing the request");
        return;
    }
    s->wt.ts = s->tenant->st;
    s->wt.weight = s->tenant->conf->weight;
    s->wt.max_inflight = s->tenant->conf->max_inflight;
    s->wt.max_queue = s->tenant->conf->max_queue;
    struct route_state *rs = route_state_of(s);
    s->wt.route_max = rs ? s->route->max_inflight : 0;
    s->wt.route_inflight = rs && s->wt.route_max > 0 ? &rs->inflight : NULL;
    uint64_t now = up_now_ms();
    if (!front)
        s->wt.since_ms = now; /* before queue_push: from then on other threads read it */
    uint32_t retry_s = 0;
    int rc = c->queue_max == 0 ? -1 : queue_push(q, &s->wt, front, c->queue_max, &retry_s);
    if (rc == -3) {
        sess_send_queue_reject(s, "shed", retry_s);
        return;
    }
    if (rc == -2) {
        s->answer_keep = s->req.done;
        sess_send_answer(s, 429, "tenant-queue", "this tenant has too many requests waiting",
                         "Retry-After: 1\r\nX-Sluice-Reject: tenant-queue\r\n");
        return;
    }
    if (rc < 0) { /* no queue ([queue] max = 0) */
        atomic_fetch_add(&q->full, 1);
        sess_send_queue_reject(s, "queue-full", 0);
        return;
    }
    uint64_t waited = now - s->wt.since_ms;
    s->state = S_QUEUED;
    sess_timer_ms(s, waited < c->queue_timeout_ms ? (uint32_t)(c->queue_timeout_ms - waited) : 0);
    kick_if_room(s->w, s->rt);
}
