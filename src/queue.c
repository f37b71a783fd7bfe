/* queue: the shared wait queue for backend slots; see queue.h for its invariants. One
 * mutex, O(1) per push and pop (leaving from the middle scans one tenant's FIFO). */
#include <sluice/queue.h>

#include <event2/event.h>

#include <sluice/admit.h>

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
        return;
    }
    /* join just before cur: it gets its turn after every tenant already waiting */
    t->ring_next = q->cur;
    t->ring_prev = q->cur->ring_prev;
    q->cur->ring_prev->ring_next = t;
    q->cur->ring_prev = t;
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
}

int queue_push(struct queue *q, struct waiter *w, int front, int max)
{
    struct tenant_state *t = w->ts;
    pthread_mutex_lock(&q->lock);
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
    pthread_mutex_unlock(&q->lock);
    return 0;
}

static int eligible(const struct tenant_state *t)
{
    int cap = t->q_head->max_inflight;
    return cap <= 0 || atomic_load_explicit(&t->inflight, memory_order_relaxed) < cap;
}

/* Weighted round robin: the tenant whose turn it is serves up to `weight` waiters; a
 * tenant at its max_inflight is passed over until one of its requests ends. */
static struct waiter *pop(struct queue *q)
{
    struct tenant_state *t = q->cur;
    if (!t)
        return NULL;
    for (struct tenant_state *first = t; !eligible(t);) {
        t->deficit = 0;
        t = q->cur = t->ring_next;
        if (t == first)
            return NULL;
    }
    struct waiter *w = t->q_head;
    if (t->deficit <= 0)
        t->deficit = w->weight > 0 ? w->weight : 1;
    t->q_head = w->next;
    if (!t->q_head)
        t->q_tail = NULL;
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

void queue_kick(struct queue *q)
{
    if (atomic_load_explicit(&q->len, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&q->lock);
    struct waiter *w = pop(q);
    if (w) {
        w->state = W_WOKEN;
        event_active(w->wake, EV_READ, 0); /* under the lock: w cannot be freed meanwhile */
    }
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
    }
    w->state = W_IDLE;
    w->next = NULL;
    pthread_mutex_unlock(&q->lock);
    if (was == W_WOKEN)
        queue_kick(q); /* the wake-up it will not use goes to the next waiter */
    return was;
}

int queue_len(struct queue *q)
{
    return atomic_load_explicit(&q->len, memory_order_relaxed);
}
