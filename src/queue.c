/* queue: the shared wait queue for backend slots; see queue.h for its invariants. One
 * mutex, O(1) per push and pop (leaving from the middle scans one tenant's FIFO). */
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
    q->cur = NULL;
}

void queue_destroy(struct queue *q)
{
    pthread_mutex_destroy(&q->lock);
}

static void ring_add(struct queue *q, struct tenant_state *t)
{
    if (!q->cur) {
        t->ring_prev = t->ring_next = t;
        q->cur = t;
        t->fresh = 1;
        q->fresh_tail = t;
        return;
    }
    /* A tenant that had nobody waiting is served next (as FQ-CoDel serves new flows
     * first): a light tenant's occasional request waits for one freed slot, not for a
     * turn of every heavy tenant. New tenants go in the order they came, before cur;
     * cur keeps what is left of its turn for when the ring comes back to it. A tenant
     * always backlogged never rejoins, so it cannot use this to jump the ring. */
    struct tenant_state *fresh = q->fresh_tail && q->fresh_tail->fresh ? q->fresh_tail : NULL;
    struct tenant_state *before = fresh ? fresh->ring_next : q->cur; /* new ones keep order */
    t->ring_next = before;
    t->ring_prev = before->ring_prev;
    before->ring_prev->ring_next = t;
    before->ring_prev = t;
    if (!fresh)
        q->cur = t;
    t->fresh = 1;
    q->fresh_tail = t;
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
    t->deficit = 0;
    t->fresh = 0;
    if (q->fresh_tail == t)
        q->fresh_tail = NULL;
}

int queue_push(struct queue *q, struct waiter *w, int front, int max)
{
    struct tenant_state *t = w->ts;
    pthread_mutex_lock(&q->lock);
    CHECK(q, "push (before)", w);
#ifdef SLUICE_QUEUE_CHECK
    if (w->state == W_QUEUED)
        broken("push", "the waiter is W_QUEUED already", w);
#endif
    if (!front && atomic_load(&q->len) >= max) {
        pthread_mutex_unlock(&q->lock);
        return -1;
    }
    if (!front && w->max_queue > 0 && t->queued >= w->max_queue) {
        pthread_mutex_unlock(&q->lock);
        return -2;
    }
    t->queued++;
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
        ring_add(q, t);
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

/* Weighted round robin: the tenant whose turn it is serves up to `weight` waiters; a
 * tenant at its max_inflight (or whose waiters' routes are all full) is passed over. */
static struct waiter *pop(struct queue *q)
{
    struct tenant_state *t = q->cur;
    if (!t)
        return NULL;
    struct waiter *prev = NULL, **pp;
    for (struct tenant_state *first = t; !(pp = ready(t, &prev));) {
        t->deficit = 0;
        t = q->cur = t->ring_next;
        if (t == first)
            return NULL;
    }
    struct waiter *w = *pp;
    t->fresh = 0; /* served once: an old tenant from now on */
    if (t->deficit <= 0)
        t->deficit = w->weight > 0 ? w->weight : 1;
    *pp = w->next;
    if (t->q_tail == w)
        t->q_tail = prev;
    w->next = NULL;
    t->deficit--;
    t->queued--;
    if (!t->q_head)
        ring_remove(q, t);
    else if (t->deficit <= 0)
        q->cur = t->ring_next;
    atomic_fetch_sub(&q->len, 1);
    return w;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void queue_configure(struct queue *q, uint32_t target_ms, uint32_t interval_ms)
{
    atomic_store(&q->target_ms, target_ms);
    atomic_store(&q->interval_ms, interval_ms);
}

/* Take t's first waiter out of the queue (it is woken by the caller). */
static struct waiter *take_head(struct queue *q, struct tenant_state *t)
{
    struct waiter *w = t->q_head;
    t->q_head = w->next;
    if (!t->q_head)
        t->q_tail = NULL;
    w->next = NULL;
    t->queued--;
    if (!t->q_head)
        ring_remove(q, t);
    atomic_fetch_sub(&q->len, 1);
    return w;
}

/* Shed the waiters of the tenant with most waiting that waited over target. */
static void shed_heaviest(struct queue *q, uint64_t now, uint32_t target)
{
    struct tenant_state *t = q->cur, *heavy = NULL;
    if (!t)
        return;
    do {
        if (!heavy || t->queued > heavy->queued)
            heavy = t;
        t = t->ring_next;
    } while (t != q->cur);
    while (heavy->q_head && now - heavy->q_head->since_ms > target) {
        int last = heavy->q_head->next == NULL; /* take_head may unlink heavy */
        struct waiter *w = take_head(q, heavy);
        w->state = W_SHED;
        atomic_fetch_add_explicit(&q->shed, 1, memory_order_relaxed);
        event_active(w->wake, EV_READ, 0);
        if (last)
            break;
    }
}

/* CoDel-like: a waiter (served: 1) is being served after waiting since `since`. */
static void codel(struct queue *q, int served, uint64_t since)
{
    uint32_t target = atomic_load_explicit(&q->target_ms, memory_order_relaxed);
    if (!target)
        return;
    uint64_t now = now_ms();
    if (!served || now - since <= target || !q->cur) {
        q->above_since = 0; /* a quick one, or an empty queue: no standing queue */
        return;
    }
    if (!q->above_since)
        q->above_since = now;
    else if (now - q->above_since >= atomic_load_explicit(&q->interval_ms, memory_order_relaxed))
        shed_heaviest(q, now, target);
}

void queue_kick(struct queue *q)
{
    if (atomic_load_explicit(&q->len, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&q->lock);
    struct waiter *w = pop(q);
    codel(q, w != NULL, w ? w->since_ms : 0);
    if (w) {
        /* the last touch: once woken, its own thread may use and free it at once, without
         * taking the lock (queue_leave of a W_IDLE waiter does not) */
        w->state = W_WOKEN;
        event_active(w->wake, EV_READ, 0);
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
        struct waiter **pp = &t->q_head, *prev = NULL;
        while (*pp && *pp != w) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = w->next;
            if (t->q_tail == w)
                t->q_tail = prev;
            t->queued--;
            if (!t->q_head)
                ring_remove(q, t);
            atomic_fetch_sub(&q->len, 1);
        }
#ifdef SLUICE_QUEUE_CHECK
        else
            broken("leave", "a W_QUEUED waiter is not in its tenant's FIFO", w);
#endif
    }
    w->state = W_IDLE;
    w->next = NULL;
    CHECK(q, "leave", w);
    pthread_mutex_unlock(&q->lock);
    if (was == W_WOKEN)
        queue_kick(q); /* the wake-up it will not use goes to the next waiter */
    return was;
}

int queue_len(struct queue *q)
{
    return atomic_load_explicit(&q->len, memory_order_relaxed);
}
