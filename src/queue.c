/* queue: the shared wait queue for backend slots; see queue.h for its rules and invariants.
 * One mutex. A push is O(1) (O(tenants waiting) when the queue is full); a pop scans the
 * tenants waiting for the least virtual time, which is few in practice (a heap is the
 * step after); leaving from the middle scans one tenant's FIFO. */
#include <sluice/queue.h>

#include <time.h>

#include <event2/event.h>

#include <sluice/admit.h>

#ifdef SLUICE_QUEUE_CHECK
#include <stdio.h>
#include <stdlib.h>

/* Soak builds (-DSLUICE_QUEUE_CHECK): verify the invariants of queue.h under the lock after
 * every change, and stop with a report at the first broken one. O(waiters). */
static void broken(const char *where, const char *what, const void *p)
{
    fprintf(stderr, "queue invariant broken in %s: %s (%p)\n", where, what, p);
    abort();
}

static void check(const struct queue *q, const char *where, const struct waiter *not_in)
{
    int total = 0;
    const struct tenant_state *t = q->cur;
    if (t) {
        do {
            int n = 0;
            const struct waiter *last = NULL;
            if (!t->q_head)
                broken(where, "a tenant in the ring has no waiter", t);
            for (const struct waiter *w = t->q_head; w; w = w->next) {
                if (w->state != W_QUEUED)
                    broken(where, "a linked waiter is not W_QUEUED", w);
                if (w->ts != t)
                    broken(where, "a waiter is linked under another tenant", w);
                if (w == not_in)
                    broken(where, "a waiter being queued is already linked", w);
                if (++n > 1000000)
                    broken(where, "a tenant's FIFO loops", t);
                last = w;
            }
            if (last != t->q_tail)
                broken(where, "q_tail is not the last waiter", t);
            if (n != t->queued)
                broken(where, "queued differs from the FIFO's length", t);
            if (t->ring_next->ring_prev != t)
                broken(where, "the ring's links disagree", t);
            total += n;
            t = t->ring_next;
        } while (t != q->cur);
    }
    if (total != atomic_load(&q->len))
        broken(where, "len differs from the waiters linked", q);
}
#define CHECK(q, where, w) check(q, where, w)
#else
#define CHECK(q, where, w) ((void)0)
#endif

void queue_init(struct queue *q)
{
    pthread_mutex_init(&q->lock, NULL);
    atomic_init(&q->len, 0);
    atomic_init(&q->promised, 0);
    q->cur = NULL;
    q->vnow = 0;
}

void queue_destroy(struct queue *q)
{
    pthread_mutex_destroy(&q->lock);
}

#define DEFAULT_COST_US 100000      /* a request's worker time before any was measured */
#define MAX_DEBT_US 1000000         /* worker time used while others were idle, owed at most */
#define AUTO_TARGET_MIN_MS 100      /* auto target: the tenant's mean cost, at least this */
#define AUTO_INTERVAL_MIN_MS 1000   /* auto interval: 10 x its mean cost, at least this */
/* A standing tenant keeps at least this many waiting: with fewer, a freed slot often finds
 * its queue empty between two arrivals and goes to another tenant, its measured service
 * gap grows, and the gap-based bound shrinks its queue further (measured: a tenant of
 * 100 ms requests beside one of 1 s requests got 29 % of the worker time, not 50 %). */
#define BACKLOG_MIN 4

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_ms(void)
{
    return now_us() / 1000;
}

/* A request's expected worker time from a moving average (the queue's, then a default,
 * until it has one). */
static int64_t cost_from(struct queue *q, _Atomic int64_t *avg)
{
    int64_t c = atomic_load_explicit(avg, memory_order_relaxed);
    if (c <= 0)
        c = atomic_load_explicit(&q->mean_cost_us, memory_order_relaxed);
    return c > 0 ? c : DEFAULT_COST_US;
}

/* What one of t's requests is expected to hold a worker for. */
static int64_t cost_of(struct queue *q, struct tenant_state *t)
{
    return cost_from(q, &t->cost_us);
}

/* The sojourn target for requests expected to cost cost_us, ms. */
static uint32_t target_for(struct queue *q, int64_t cost_us)
{
    uint32_t v = atomic_load_explicit(&q->target_ms, memory_order_relaxed);
    if (v != QUEUE_AUTO)
        return v;
    int64_t c = cost_us / 1000;
    return c > AUTO_TARGET_MIN_MS ? (uint32_t)(c < 600000 ? c : 600000) : AUTO_TARGET_MIN_MS;
}

uint32_t queue_target_of(struct queue *q, struct tenant_state *t)
{
    return target_for(q, cost_of(q, t));
}

/* The sojourn target of class c's requests, ms. */
static int64_t class_target(struct queue *q, struct tenant_state *c)
{
    return target_for(q, cost_from(q, &c->class_cost_us));
}

/* The sojourn interval for requests expected to cost cost_us, ms. */
static uint32_t interval_for(struct queue *q, int64_t cost_us)
{
    uint32_t v = atomic_load_explicit(&q->interval_ms, memory_order_relaxed);
    if (v != QUEUE_AUTO)
        return v;
    int64_t c = cost_us / 100; /* 10 x the cost, in ms */
    return c > AUTO_INTERVAL_MIN_MS ? (uint32_t)(c < 600000 ? c : 600000) : AUTO_INTERVAL_MIN_MS;
}

uint32_t queue_interval_of(struct queue *q, struct tenant_state *t)
{
    return interval_for(q, cost_of(q, t));
}

static int64_t per_weight(int64_t us, int weight)
{
    return us / (weight > 0 ? weight : 1);
}

/* The class t is scheduled in: two levels, as Kubernetes APF's priority levels and
 * flows. A named tenant is a class of its own; every unnamed key is a flow in the default
 * tenant's class, so that keys sprayed by one client share one tenant's weight. */
static struct tenant_state *class_of(struct tenant_state *t)
{
    return t->group ? t->group : t;
}

/* Virtual time v joins at `now`: no credit for having been idle, at most MAX_DEBT_US owed
 * for work done while nobody waited. */
static void join_at(_Atomic int64_t *v, int64_t now, int weight)
{
    int64_t x = atomic_load_explicit(v, memory_order_relaxed);
    int64_t most = now + per_weight(MAX_DEBT_US, weight);
    atomic_store_explicit(v, x < now ? now : x > most ? most : x, memory_order_relaxed);
}

/* t has waiters again: its class joins at the queue's virtual time if nobody of the class
 * was waiting (so it is served next, or with those due now), t at its class's flow time;
 * last in the scan (ties go in the order tenants came). */
static void ring_add(struct queue *q, struct tenant_state *t, int weight, int class_joins)
{
    if (t->standing && t->calm_since && now_ms() - t->calm_since >= queue_interval_of(q, t))
        t->standing = 0, t->above_since = 0, t->calm_since = 0; /* it was idle long enough */
    struct tenant_state *c = class_of(t);
    if (class_joins && c->class_standing && c->class_calm_since &&
        now_ms() - c->class_calm_since >= interval_for(q, cost_from(q, &c->class_cost_us)))
        c->class_standing = 0, c->class_above_since = 0, c->class_calm_since = 0;
    if (class_joins)
        join_at(&c->cvtime, q->vnow, weight);
    c->class_flows++;
    join_at(&t->vtime, c->fvnow, weight);
    if (!q->cur) {
        t->ring_prev = t->ring_next = t;
    } else {
        t->ring_next = q->cur;
        t->ring_prev = q->cur->ring_prev;
        q->cur->ring_prev->ring_next = t;
        q->cur->ring_prev = t;
        return;
    }
    q->cur = t;
}

static void ring_remove(struct queue *q, struct tenant_state *t)
{
    if (t->ring_next == t) {
        q->cur = NULL;
    } else {
        t->ring_prev->ring_next = t->ring_next;
        t->ring_next->ring_prev = t->ring_prev;
        if (q->cur == t)
            q->cur = t->ring_next;
    }
    t->ring_prev = t->ring_next = NULL;
    class_of(t)->class_flows--;
    t->last_pop_us = 0;
    if (!t->standing)
        t->above_since = 0; /* it drained: no standing queue */
    else if (!t->calm_since)
        t->calm_since = now_ms(); /* an empty queue is a calm one */
}

/* Unlink w from t's FIFO (prev: the waiter before it, or NULL) and count it out. */
static void unlink_waiter(struct queue *q, struct tenant_state *t, struct waiter *w,
                          struct waiter *prev)
{
    if (prev)
        prev->next = w->next;
    else
        t->q_head = w->next;
    if (t->q_tail == w)
        t->q_tail = prev;
    w->next = NULL;
    t->queued--;
    struct tenant_state *c = class_of(t);
    if (--c->class_queued == 0) {
        c->class_last_pop_us = 0; /* the class drained: no backlog to time, and calm */
        if (!c->class_standing)
            c->class_above_since = 0;
        else if (!c->class_calm_since)
            c->class_calm_since = now_ms();
    }
    if (!t->q_head)
        ring_remove(q, t);
    atomic_fetch_sub(&q->len, 1);
}

/* Seconds until `queued` waiters served one per gap_us would all have been, at least 1. */
static uint32_t drain_s(int queued, int64_t gap_us)
{
    return gap_us > 0 ? (uint32_t)((int64_t)(queued + 1) * gap_us / 1000000 + 1) : 1;
}

/* Seconds until t's waiters now would all have been served, at least 1 (under lock). */
static uint32_t retry_of(const struct tenant_state *t)
{
    return drain_s(t->queued, t->gap_us);
}

uint32_t queue_retry_after(struct queue *q, struct tenant_state *t)
{
    pthread_mutex_lock(&q->lock);
    uint32_t r = retry_of(t);
    pthread_mutex_unlock(&q->lock);
    return r;
}

/* Take w (after prev in t's FIFO, NULL: the first) out and wake it to be refused
 * (W_SHED or W_DROPPED). */
static void refuse(struct queue *q, struct tenant_state *t, struct waiter *w,
                   struct waiter *prev, enum waiter_state why)
{
    unlink_waiter(q, t, w, prev);
    w->retry_s = retry_of(t);
    w->state = why;
    atomic_fetch_add_explicit(why == W_SHED ? &q->shed : &q->full, 1, memory_order_relaxed);
    mailbox_post(w->box, &w->wake);
}

/* The flow to make room at: in the class holding the most of the queue by weight
 * (waiters / weight), its flow with the most waiting. nt, the newcomer's flow, counts with
 * the newcomer. NULL when nobody waits. */
static struct tenant_state *heaviest(struct queue *q, struct tenant_state *nt)
{
    struct tenant_state *t = q->cur, *hc = NULL, *hf = NULL;
    int64_t hq = 0, fq = 0;
    int hw = 1;
    if (!t)
        return NULL;
    do {
        struct tenant_state *c = class_of(t);
        int64_t n = c->class_queued + (c == class_of(nt));
        int w = t->q_head->weight > 0 ? t->q_head->weight : 1;
        if (!hc || n * hw > hq * w)
            hc = c, hq = n, hw = w;
        t = t->ring_next;
    } while (t != q->cur);
    do {
        int64_t n = t->queued + (t == nt);
        if (class_of(t) == hc && (!hf || n > fq))
            hf = t, fq = n;
        t = t->ring_next;
    } while (t != q->cur);
    return hf;
}

/* t's queue stands and w would wait over target: *retry_s is when t's waiters now would
 * all have been served. */
static int would_wait_too_long(struct queue *q, struct tenant_state *t, uint32_t *retry_s)
{
    uint32_t target = atomic_load_explicit(&q->target_ms, memory_order_relaxed);
    if (!target || !t->standing || t->queued < BACKLOG_MIN || t->gap_us <= 0)
        return 0;
    int64_t wait_us = (int64_t)(t->queued + 1) * t->gap_us;
    if (wait_us <= (int64_t)queue_target_of(q, t) * 1000)
        return 0;
    if (retry_s)
        *retry_s = retry_of(t);
    return 1;
}

/* The class's bound, for classes of many flows (the unnamed keys in default's): each flow's
 * bound alone lets 100 flows that each keep a few waiting make a class queue of hundreds,
 * served seconds late. When t's class stands (class_episode) and its waiters would not all
 * be served within the class's target, room is made at its heaviest flow: the newcomer is
 * refused (1) if its flow holds as many as any, else that flow's oldest waiter is shed and
 * the newcomer queues (0). For a class of one flow (a named tenant) this is the flow's own
 * bound again. */
static int class_full(struct queue *q, struct tenant_state *t, uint32_t *retry_s)
{
    struct tenant_state *c = class_of(t), *x = q->cur, *heavy = NULL;
    if (!atomic_load_explicit(&q->target_ms, memory_order_relaxed) || !x ||
        !c->class_standing || c->class_queued < BACKLOG_MIN ||
        (int64_t)(c->class_queued + 1) * c->class_gap_us <= class_target(q, c) * 1000)
        return 0;
    do {
        if (class_of(x) == c && (!heavy || x->queued > heavy->queued))
            heavy = x;
        x = x->ring_next;
    } while (x != q->cur);
    if (!heavy)
        return 0;
    if (t->queued + 1 >= heavy->queued) {
        if (retry_s)
            *retry_s = drain_s(c->class_queued, c->class_gap_us);
        return 1;
    }
    refuse(q, heavy, heavy->q_head, NULL, W_SHED);
    return 0;
}

int queue_push(struct queue *q, struct waiter *w, int front, int max, uint32_t *retry_s)
{
    struct tenant_state *t = w->ts;
    pthread_mutex_lock(&q->lock);
    CHECK(q, "push (before)", w);
#ifdef SLUICE_QUEUE_CHECK
    if (w->state == W_QUEUED)
        broken("push", "the waiter is W_QUEUED already", w);
#endif
    if (!front && w->max_queue > 0 && t->queued >= w->max_queue) {
        pthread_mutex_unlock(&q->lock);
        return -2;
    }
    if (!front && (would_wait_too_long(q, t, retry_s) || class_full(q, t, retry_s))) {
        atomic_fetch_add_explicit(&q->shed, 1, memory_order_relaxed);
        pthread_mutex_unlock(&q->lock);
        return -3;
    }
    if (!front && atomic_load(&q->len) >= max) {
        /* room is made at the heaviest tenant's oldest waiter; w's tenant counts with w */
        struct tenant_state *heavy = heaviest(q, t);
        if (heavy && heavy->q_head)
            refuse(q, heavy, heavy->q_head, NULL, W_DROPPED);
    }
    int class_joins = class_of(t)->class_queued == 0;
    t->queued++;
    class_of(t)->class_queued++;
    int was_empty = t->q_head == NULL;
    if (front) {
        w->next = t->q_head;
        t->q_head = w;
        if (!t->q_tail)
            t->q_tail = w;
    } else {
        w->next = NULL;
        if (t->q_tail)
            t->q_tail->next = w;
        else
            t->q_head = w;
        t->q_tail = w;
    }
    if (was_empty)
        ring_add(q, t, w->weight, class_joins);
    w->state = W_QUEUED;
    atomic_fetch_add(&q->len, 1);
    CHECK(q, "push", NULL);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

static int route_room(const struct waiter *w)
{
    return !w->route_inflight ||
           atomic_load_explicit(w->route_inflight, memory_order_relaxed) < w->route_max;
}

/* The link to t's first waiter that may take a slot now (FIFO, but a waiter whose route
 * is full does not block the tenant's other requests); NULL if none. *prev: the waiter
 * before it. */
static struct waiter **ready(struct tenant_state *t, struct waiter **prev)
{
    int cap = t->q_head->max_inflight;
    if (cap > 0 && atomic_load_explicit(&t->inflight, memory_order_relaxed) >= cap)
        return NULL;
    *prev = NULL;
    for (struct waiter **pp = &t->q_head; *pp; pp = &(*pp)->next) {
        if (route_room(*pp))
            return pp;
        *prev = *pp;
    }
    return NULL;
}

/* Whether t has a waiter after w that may take a slot now. The slot is t's turn by
 * virtual time: a late head is shed only when one of t's own takes the turn. Shedding
 * t's last gave the worker to a tenant ahead of it, whose long requests then made every
 * later waiter of t late in turn, and t was shed at each of its turns from then on (seen:
 * a tenant of 50 ms requests beside one of 500 ms got no worker time for 6 s after one
 * of its requests stalled; test_fair_queue's stalled_once test). */
static int another_ready(const struct waiter *w)
{
    for (const struct waiter *x = w->next; x; x = x->next)
        if (route_room(x))
            return 1;
    return 0;
}

/* One step of a standing-queue episode (a flow's or a class's), from x, what is judged
 * against the target (a served waiter's wait, a class's backlog), ms. x over target for
 * an interval: it stands; it stands until x has been under half the target for an
 * interval (its load fell: the refusals keep x near the target, so not at the first low
 * one). */
static void episode(uint64_t *above_since, int *standing, uint64_t *calm_since, int64_t x,
                    int64_t target, uint32_t interval, uint64_t now)
{
    if (*standing) {
        if (x > target / 2)
            *calm_since = 0;
        else if (!*calm_since)
            *calm_since = now;
        else if (now - *calm_since >= interval)
            *standing = 0, *above_since = 0, *calm_since = 0;
    } else if (x <= target) {
        *above_since = 0;
    } else if (!*above_since) {
        *above_since = now;
    } else if (now - *above_since >= interval) {
        *standing = 1;
        *calm_since = 0;
    }
}

/* Sojourn control for t, whose waiter leaves the queue after waiting `waited` ms: its
 * episode goes on. Returns whether that waiter is to be shed (t stands and it waited over
 * twice the target), as CoDel drops at the head. */
static int sojourn(struct queue *q, struct tenant_state *t, uint64_t waited, uint64_t now)
{
    if (!atomic_load_explicit(&q->target_ms, memory_order_relaxed))
        return 0;
    uint32_t target = queue_target_of(q, t);
    episode(&t->above_since, &t->standing, &t->calm_since, (int64_t)waited, target,
            queue_interval_of(q, t), now);
    return t->standing && waited > 2 * (uint64_t)target;
}

/* Time the services of a backlogged flow or class: *gap, the moving average between them. */
static void note_gap(uint64_t *last_us, int64_t *gap, uint64_t now)
{
    if (*last_us) {
        int64_t g = (int64_t)(now - *last_us);
        *gap = *gap ? *gap + (g - *gap) / 8 : g;
    }
    *last_us = now;
}

/* The flow to serve next: among the tenants that may take a slot now (not at
 * max_inflight, a waiter's route has room), of the class with the least virtual time, its
 * flow with the least. *prev: the waiter before the one to serve (NULL: the first). */
static struct tenant_state *pick(struct queue *q, struct waiter **prev)
{
    struct tenant_state *t = q->cur, *best = NULL;
    int64_t bcv = 0, bv = 0;
    if (!t)
        return NULL;
    do {
        struct waiter *p;
        struct waiter **pp = ready(t, &p);
        int64_t cv = atomic_load_explicit(&class_of(t)->cvtime, memory_order_relaxed);
        int64_t v = atomic_load_explicit(&t->vtime, memory_order_relaxed);
        if (pp && (!best || cv < bcv || (cv == bcv && v < bv)))
            best = t, bcv = cv, bv = v, *prev = p;
        t = t->ring_next;
    } while (t != q->cur);
    return best;
}

/* Sojourn control for class c at one of its services, judged by its backlog (its waiters
 * times its service gap: how long the last of them will wait), not by the served one's
 * wait, which a light flow served first within the class keeps short while the flows
 * that flood it wait long (an idle class ends its episode too, see ring_add). Only while
 * it has several flows waiting: a class of one flow is judged by that flow's episode,
 * which lets a burst through for an interval (a burst's backlog is over target from its
 * first service on; found by test_paths: 9 requests of a route capped at 1 were shed). */
static void class_episode(struct queue *q, struct tenant_state *c, uint64_t now)
{
    if (!atomic_load_explicit(&q->target_ms, memory_order_relaxed))
        return;
    if (c->class_flows < 2) { /* one flow (a named tenant, one key): its own episode does */
        c->class_standing = 0, c->class_above_since = 0, c->class_calm_since = 0;
        return;
    }
    episode(&c->class_above_since, &c->class_standing, &c->class_calm_since,
            (int64_t)c->class_queued * c->class_gap_us / 1000, class_target(q, c),
            interval_for(q, cost_from(q, &c->class_cost_us)), now);
}

/* Serve w (after prev in t's FIFO): the virtual times move on, its class and flow are
 * charged with the flow's expected cost, and their service gaps are timed. */
static void take(struct queue *q, struct tenant_state *t, struct waiter *w,
                 struct waiter *prev)
{
    struct tenant_state *c = class_of(t);
    int64_t cv = atomic_load_explicit(&c->cvtime, memory_order_relaxed);
    int64_t v = atomic_load_explicit(&t->vtime, memory_order_relaxed);
    if (cv > q->vnow)
        q->vnow = cv;
    if (v > c->fvnow)
        c->fvnow = v;
    int64_t cost = cost_of(q, t);
    w->charged_us += cost; /* a waiter served twice (it lost the slot) pays twice */
    atomic_fetch_add_explicit(&t->vtime, per_weight(cost, w->weight), memory_order_relaxed);
    atomic_fetch_add_explicit(&c->cvtime, per_weight(cost, w->weight), memory_order_relaxed);
    int more = t->queued > 1, class_more = c->class_queued > 1;
    class_episode(q, c, now_ms());
    unlink_waiter(q, t, w, prev);
    uint64_t now = now_us();
    if (more)
        note_gap(&t->last_pop_us, &t->gap_us, now);
    if (class_more)
        note_gap(&c->class_last_pop_us, &c->class_gap_us, now);
}

void queue_configure(struct queue *q, uint32_t target_ms, uint32_t interval_ms)
{
    atomic_store(&q->target_ms, target_ms);
    atomic_store(&q->interval_ms, interval_ms);
}

/* Moving average (1/8); a lost update between threads only delays it a little. */
static void average(_Atomic int64_t *avg, int64_t x)
{
    int64_t a = atomic_load_explicit(avg, memory_order_relaxed);
    atomic_store_explicit(avg, a ? a + (x - a) / 8 : x, memory_order_relaxed);
}

void queue_charge(struct queue *q, struct tenant_state *t, int weight, int64_t used_us,
                  int64_t charged_us)
{
    if (used_us < 0)
        used_us = 0;
    atomic_fetch_add_explicit(&t->vtime, per_weight(used_us - charged_us, weight),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&class_of(t)->cvtime, per_weight(used_us - charged_us, weight),
                              memory_order_relaxed);
    average(&t->cost_us, used_us);
    average(&class_of(t)->class_cost_us, used_us);
    average(&q->mean_cost_us, used_us);
}

void queue_kick(struct queue *q)
{
    if (atomic_load_explicit(&q->len, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&q->lock);
    struct waiter *prev = NULL;
    struct tenant_state *t;
    while ((t = pick(q, &prev)) != NULL) {
        struct waiter *w = prev ? prev->next : t->q_head;
        /* judged before the wake-up: once woken, its own thread may use and free it (and
         * its tenant's last reference) at once, without taking the lock (queue_leave of a
         * W_IDLE waiter does not) */
        uint64_t now = now_ms(), waited = now > w->since_ms ? now - w->since_ms : 0;
        struct tenant_state *c = class_of(t);
        int late = sojourn(q, t, waited, now) ||
                   (c->class_standing && waited > 2 * (uint64_t)class_target(q, c));
        if (late && another_ready(w)) {
            refuse(q, t, w, prev, W_SHED); /* too late to be worth serving: the next */
            continue;
        }
        take(q, t, w, prev);
        w->state = W_WOKEN;
        atomic_fetch_add(&q->promised, 1); /* until its owner tried for the slot */
        mailbox_post(w->box, &w->wake); /* the last touch */
        break;
    }
    CHECK(q, "kick", NULL);
    pthread_mutex_unlock(&q->lock);
}

enum waiter_state queue_leave(struct queue *q, struct waiter *w)
{
    if (w->state == W_IDLE)
        return W_IDLE;
    pthread_mutex_lock(&q->lock);
    enum waiter_state was = w->state;
    if (was == W_QUEUED) {
        struct tenant_state *t = w->ts;
        struct waiter *prev = NULL, *x = t->q_head;
        while (x && x != w) {
            prev = x;
            x = x->next;
        }
        if (x)
            unlink_waiter(q, t, w, prev);
#ifdef SLUICE_QUEUE_CHECK
        else
            broken("leave", "a W_QUEUED waiter is not in its tenant's FIFO", w);
#endif
    }
    w->state = W_IDLE;
    w->next = NULL;
    CHECK(q, "leave", w);
    pthread_mutex_unlock(&q->lock);
    if (was == W_WOKEN) {
        queue_promise_kept(q);
        queue_kick(q); /* the wake-up it will not use goes to the next waiter */
    }
    return was;
}

void queue_promise_kept(struct queue *q)
{
    atomic_fetch_sub(&q->promised, 1);
}

int queue_busy(struct queue *q)
{
    return atomic_load_explicit(&q->len, memory_order_relaxed) > 0 ||
           atomic_load_explicit(&q->promised, memory_order_relaxed) > 0;
}

int queue_len(struct queue *q)
{
    return atomic_load_explicit(&q->len, memory_order_relaxed);
}
