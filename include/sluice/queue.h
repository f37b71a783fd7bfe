/* queue: requests waiting for a backend slot (a Gunicorn worker), shared by all threads.
 * When a slot frees, the next waiter is chosen fairly across tenants (weighted round robin
 * by tenant weight, FIFO within a tenant; a tenant that had nobody waiting goes next) and
 * woken on its own thread.
 *
 * Invariants (all under `lock`): a waiter is in at most one tenant FIFO and is in one iff
 * its state is W_QUEUED; a tenant is in the ring iff its FIFO is non-empty; `len` counts
 * W_QUEUED waiters. Only the waiter's own thread frees it, after queue_leave(). Another
 * thread never touches a waiter after waking it (event_active): the owner may be running
 * and may free it at once, and queue_leave() of a W_IDLE waiter takes no lock. A popped
 * waiter (W_WOKEN) has been sent one wake-up; if it goes away without using it, it must
 * pass it on with queue_kick() (queue_leave does). A shed waiter (W_SHED) was taken out
 * and woken to be refused: it holds nothing to pass on.
 *
 * Shedding (CoDel-like, [queue] target > 0): when every waiter served for `interval` has
 * waited longer than `target` (a standing queue, not a burst), each freed slot also sheds
 * the waiters of the tenant with the most requests waiting that have waited longer than
 * `target` (they would mostly time out anyway, and they are the ones overloading). A
 * waiter served within `target`, or an empty queue, ends the episode. */
#ifndef SLUICE_QUEUE_H
#define SLUICE_QUEUE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct event;
struct tenant_state;

enum waiter_state { W_IDLE = 0, W_QUEUED, W_WOKEN, W_SHED };

/* Embedded in a session. */
struct waiter {
    struct waiter *next;        /* in its tenant's FIFO */
    struct tenant_state *ts;    /* whose FIFO (shared across reloads) */
    int weight;                 /* the tenant's weight when it queued */
    int max_inflight;           /* the tenant's caps when it queued (0 = none) */
    int max_queue;
    atomic_int *route_inflight; /* its route's count when the route has a cap, else NULL */
    int route_max;
    struct event *wake;         /* owned by the session: activated when popped */
    _Atomic(enum waiter_state) state; /* read without the lock by its owner (queue_leave
                                * of an idle waiter, wake_cb): written under it */
    uint64_t since_ms;          /* when it queued */
};

struct queue {
    pthread_mutex_t lock;
    atomic_int len;             /* waiters queued */
    struct tenant_state *cur;   /* ring of tenants with waiters; the one whose turn it is */
    struct tenant_state *fresh_tail; /* the last tenant that joined and is not served yet */
    atomic_uint_fast64_t timeouts, full, shed;
    _Atomic uint32_t target_ms; /* shedding: 0 = off (from the current generation) */
    _Atomic uint32_t interval_ms;
    uint64_t above_since;       /* ms since when served waiters waited over target; 0 = not */
};

void queue_init(struct queue *q);
void queue_destroy(struct queue *q);

/* Queue w (front: ahead of its tenant's others, for a waiter that was woken but lost
 * the slot). Refused when not front: -1 if `max` are already waiting, -2 if its tenant
 * has max_queue waiting. */
int queue_push(struct queue *q, struct waiter *w, int front, int max);

/* Take w out: returns its state before (W_QUEUED: it was waiting; W_WOKEN: a wake-up is on
 * its way, which it passes on). Safe for a waiter that never queued. */
enum waiter_state queue_leave(struct queue *q, struct waiter *w);

/* A slot was freed: wake the next waiter, if any (skipping tenants at max_inflight, and
 * within a tenant the waiters whose route is at its max_inflight). */
void queue_kick(struct queue *q);

/* Shedding parameters ([queue] target, interval) from now on. */
void queue_configure(struct queue *q, uint32_t target_ms, uint32_t interval_ms);

/* Waiters now. */
int queue_len(struct queue *q);

#endif
