/* queue: requests waiting for a backend slot (a Gunicorn worker), shared by all threads.
 * Tenants are its flows, as in FQ-CoDel (RFC 8290): one FIFO per tenant, and
 *
 * - fair in worker time: a freed slot goes to the tenant with the least virtual time, the
 *   worker time its requests held divided by its weight (charged with the tenant's mean
 *   cost when a waiter is served, corrected with the real time at completion, as
 *   Kubernetes API Priority and Fairness charges seats). A tenant that had nobody waiting
 *   joins at the queue's current virtual time, so it is served next and cannot bank credit
 *   while idle; one that used much while others were idle owes at most a second for it.
 * - two levels: a named tenant is a class of its own; every unnamed key is a flow in the
 *   default tenant's class (one weight for all the keys a client may spray); classes share
 *   by virtual time, and flows within a class by their own.
 * - per-tenant sojourn control: when every waiter of a tenant served for `interval` had
 *   waited over `target`, that tenant's queue is standing (it sends more than its share
 *   finishes), whatever the other tenants' requests do. While it stands, its newcomers are
 *   refused at once when they would wait over target (their place times the gap between
 *   its services; at least BACKLOG_MIN wait), and its waiters that waited over twice the
 *   target are shed when their turn comes (but for its last ready one, which is served:
 *   its turn is not given to a tenant ahead of it). It stands
 *   until, for an interval, its queue was empty or its waiters were served within half the
 *   target (its load fell).
 * - per-class sojourn control, for the default class of many unnamed keys (100 keys that
 *   each keep a few waiting are a class queue of hundreds): the class stands when its
 *   backlog (waiters x its service gap) stayed over its target for an interval; then a
 *   newcomer of a key holding as many waiting as any is refused, one of a lighter key
 *   queues and the heaviest key's oldest waiter is shed, and the class's waiters over
 *   twice its target are shed when their turn comes.
 * - drop from the longest queue: when `max` are waiting, the oldest waiter of the tenant
 *   holding the most of the queue by weight is refused, never a newcomer of a tenant under
 *   its share.
 *
 * Invariants (all under `lock`): a waiter is in at most one tenant FIFO and is in one iff
 * its state is W_QUEUED; a tenant is in the ring iff its FIFO is non-empty; `len` counts
 * W_QUEUED waiters. Only the waiter's own thread frees it, after queue_leave(). Another
 * thread never touches a waiter after waking it (event_active): the owner may be running
 * and may free it at once, and queue_leave() of a W_IDLE waiter takes no lock. A popped
 * waiter (W_WOKEN) has been sent one wake-up; if it goes away without using it, it must
 * pass it on with queue_kick() (queue_leave does). A shed or dropped waiter (W_SHED,
 * W_DROPPED) was taken out and woken to be refused: it holds nothing to pass on. */
#ifndef SLUICE_QUEUE_H
#define SLUICE_QUEUE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <sluice/mailbox.h>

struct tenant_state;

enum waiter_state { W_IDLE = 0, W_QUEUED, W_WOKEN, W_SHED, W_DROPPED };

#define QUEUE_AUTO UINT32_MAX /* [queue] target/interval = auto: from the tenant's cost */

/* Embedded in a request. */
struct waiter {
    struct waiter *next;        /* in its tenant's FIFO */
    struct tenant_state *ts;    /* whose FIFO (shared across reloads) */
    int weight;                 /* the tenant's weight when it queued */
    int max_inflight;           /* the tenant's caps when it queued (0 = none) */
    int max_queue;
    atomic_int *route_inflight; /* its route's count when the route has a cap, else NULL */
    int route_max;
    struct mailbox *box;        /* its worker's: NULL until it first queues */
    struct mail wake;           /* posted to box when popped (W_WOKEN, W_SHED, W_DROPPED) */
    _Atomic(enum waiter_state) state; /* read without the lock by its owner (queue_leave
                                * of an idle waiter, wake_cb): written under it */
    uint64_t since_ms;          /* when it queued */
    int64_t charged_us;         /* worker time charged when it was served (an estimate) */
    uint32_t retry_s;           /* W_SHED, W_DROPPED: when its tenant would be served, s */
};

struct queue {
    pthread_mutex_t lock;
    atomic_int len;             /* waiters queued */
    atomic_int promised;        /* waiters woken for a freed slot that have not taken it yet:
                                 * newcomers do not take slots meanwhile */
    struct tenant_state *cur;   /* ring of tenants with waiters (the scan starts here) */
    int64_t vnow;               /* virtual time of the last tenant served */
    atomic_uint_fast64_t timeouts, full, shed;
    _Atomic uint32_t target_ms; /* sojourn target: 0 = off, QUEUE_AUTO (current generation) */
    _Atomic uint32_t interval_ms;
    _Atomic int64_t mean_cost_us; /* worker time per request, all tenants (moving average) */
};

void queue_init(struct queue *q);
void queue_destroy(struct queue *q);

/* Queue w (front: ahead of its tenant's others, for a waiter that was woken but lost
 * the slot). When `max` are waiting, the oldest waiter of the heaviest tenant is dropped
 * (woken as W_DROPPED) to make room. Refused when not front: -2 if its tenant has
 * max_queue waiting, -3 if its tenant's queue stands and it would wait over target
 * (*retry_s: when the tenant's waiters now would all be served, at least 1). */
int queue_push(struct queue *q, struct waiter *w, int front, int max, uint32_t *retry_s);

/* Take w out: returns its state before (W_QUEUED: it was waiting; W_WOKEN: a wake-up is on
 * its way, which it passes on). Safe for a waiter that never queued. */
enum waiter_state queue_leave(struct queue *q, struct waiter *w);

/* A slot was freed: wake the next waiter, if any (skipping tenants at max_inflight, and
 * within a tenant the waiters whose route is at its max_inflight). */
void queue_kick(struct queue *q);

/* A request of t's that held a backend slot for used_us is over; charged_us of it was
 * charged when it left the queue (0 if it never queued). weight: t's. */
void queue_charge(struct queue *q, struct tenant_state *t, int weight, int64_t used_us,
                  int64_t charged_us);

/* Sojourn control ([queue] target, interval; 0 target = off, QUEUE_AUTO) from now on. */
void queue_configure(struct queue *q, uint32_t target_ms, uint32_t interval_ms);

/* The target and interval that apply to t now, ms (resolving auto). */
uint32_t queue_target_of(struct queue *q, struct tenant_state *t);
uint32_t queue_interval_of(struct queue *q, struct tenant_state *t);

/* When t's requests waiting now would all have been served, in seconds (at least 1): the
 * Retry-After of its refusals. */
uint32_t queue_retry_after(struct queue *q, struct tenant_state *t);

/* A woken waiter (W_WOKEN) has tried for its slot: taken, or queued again in front. */
void queue_promise_kept(struct queue *q);

/* Whether a newcomer must queue rather than take a free slot: requests are waiting, or a
 * freed slot is on its way to one that waited. */
int queue_busy(struct queue *q);

/* Waiters now. */
int queue_len(struct queue *q);

#endif
