/* admit: tenants and their admission limits. This step has the tenant key (header, host,
 * cookie, client address or path prefix), the [tenant NAME] table with `default` for
 * unknown keys, and the per-tenant rate limit (GCRA). Tenant state survives reloads by
 * name. The fair queue, concurrency caps and Redis sharing come next (issue 4). */
#ifndef SLUICE_ADMIT_H
#define SLUICE_ADMIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct http1_msg;
struct waiter;
struct tenant_conf;
struct tenants_conf;
struct route_conf;
struct config;
struct series;

/* Why a request was refused before reaching a backend: the value of its X-Sluice-Reject
 * header, and the per-tenant and global counters. */
#define REJECT_REASONS(X)                                                                   \
    X(rate, "rate", "over the tenant's rate (429)")                                        \
    X(tenant_queue, "tenant-queue", "over the tenant's max_queue (429)")                  \
    X(queue_full, "queue-full", "dropped from the heaviest tenant of a full queue (503)") \
    X(queue_timeout, "queue-timeout", "waited [queue] timeout for a slot (503)")         \
    X(shed, "shed", "its tenant's queue stands: refused or shed (503)")                \
    X(limiter_down, "limiter-down", "Redis unavailable with on_failure = closed (503)")

enum reject_reason {
#define REJ_ENUM(id, name, help) REJ_##id,
    REJECT_REASONS(REJ_ENUM)
#undef REJ_ENUM
    REJ_MAX
};

/* "rate", "queue-full", ...; and back (-1 if code is no reason). */
const char *admit_reason_name(enum reject_reason r);
int admit_reason_of(const char *code);

/* Shared by every generation that names the tenant (refcounted). */
struct tenant_state {
    char name[64];
    atomic_int refs;
    _Atomic uint64_t tat;          /* GCRA theoretical arrival time, ns (monotonic) */
    atomic_uint_fast64_t admitted;
    atomic_uint_fast64_t rejected[REJ_MAX]; /* by reason */
    atomic_int inflight;                   /* its requests holding a backend slot */
    int queued;                            /* its waiters, under queue.lock */
    /* its place in the shared queue, under queue.lock unless atomic (queue.c) */
    struct waiter *q_head, *q_tail;
    struct tenant_state *ring_prev, *ring_next;
    struct tenant_state *group;            /* its class in the queue: an unnamed key's is
                                            * the default tenant's state (all unnamed keys
                                            * share default's weight); NULL = its own */
    _Atomic int64_t vtime;                 /* as a flow: worker time / weight, us (virtual) */
    _Atomic int64_t cvtime;                /* as a class: the same for all its flows */
    int64_t fvnow;                         /* as a class: flow time of the last served */
    int class_queued;                      /* as a class: waiters of all its flows */
    _Atomic int64_t class_cost_us;         /* as a class: its flows' worker time (average) */
    uint64_t class_last_pop_us;            /* as a class: last_pop_us and gap_us below */
    int64_t class_gap_us;
    int class_flows;                       /* as a class: its flows with waiters */
    int class_standing;                    /* as a class of several flows: its backlog
                                            * stands (queue.c) */
    uint64_t class_above_since, class_calm_since; /* as a class, ms; 0 = not */
    _Atomic int64_t cost_us;               /* its requests' worker time (moving average) */
    uint64_t above_since;                  /* ms since its served waiters waited over
                                            * target; 0 = not */
    int standing;                          /* its queue stands: see queue.h */
    uint64_t calm_since;                   /* ms since its served waiters, standing, all
                                            * waited under half the target; 0 = not */
    uint64_t last_pop_us;                  /* when a waiter of its was last served, while
                                            * it had more waiting; 0 = not backlogged */
    int64_t gap_us;                        /* time between its services (moving average) */
    struct series *_Atomic ser;            /* its measurements (meter.h); set once by main,
                                            * NULL for unnamed keys */
};

struct tenant {
    const struct tenant_conf *conf; /* borrowed from the generation's config */
    struct tenant_state *st;        /* shared */
    uint64_t interval_ns;           /* 1/rate; 0 = no rate limit */
    uint64_t tau_ns;                /* (burst - 1) x interval: how far ahead tat may run */
    struct tracked *tracked;        /* set for an unnamed key's own entry, else NULL */
};

/* The limiter of one unnamed tenant key (default's limits, its own state). */
struct tracked {
    struct tenant t;
    struct tenant_state st;
    char key[64];
    char label[64];                 /* the key as logs and metrics show it (see admit_label) */
    int used;
    atomic_int active;              /* requests holding it: not reusable while > 0 */
};

/* Unnamed keys, bounded by [tenants] max_tracked: open addressing, one lock. An idle entry
 * (no request, bucket full again) is reused for a new key, which loses nothing: a full
 * GCRA bucket is the same as a new one. Beyond that, keys share `default`. */
struct keytable {
    pthread_mutex_t lock;
    struct tracked *slots;          /* owned: 2 x max_tracked */
    size_t cap;
    size_t used;
    size_t max;
};

/* A [route NAME] class's counters, shared across reloads by name (refcounted). */
struct route_state {
    char name[64];
    atomic_int refs;
    atomic_int inflight;                   /* its requests holding a backend slot */
    struct series *_Atomic ser;            /* its measurements (meter.h); set once by main */
};

/* A generation's tenant table. */
struct admit {
    const struct tenants_conf *conf; /* borrowed */
    struct tenant *t;                /* owned array; t[def] is the default */
    int n;
    int def;
    struct keytable keys;            /* per generation: unnamed keys restart on reload */
    struct route_state **rs;         /* owned array (states shared): one per [route] */
    atomic_uint_fast64_t bad_signatures; /* keys refused by [tenants] hmac_key */
    int nr;
};

/* Build the table; states of tenants named in prev (may be NULL) carry over. 0 or -1. */
int admit_init(struct admit *a, const struct tenants_conf *tc, const struct tenant_conf *confs,
               int n, const struct admit *prev);

/* The route states of a generation's [route] sections, in their order; states of routes
 * named in prev (may be NULL) carry over. 0 or -1. */
int admit_routes_init(struct admit *a, const struct route_conf *routes, int n,
                      const struct admit *prev);

/* Free the table (and states no other table holds). */
void admit_free(struct admit *a);

/* The tenant a request belongs to, by the configured key; the default if the key is
 * missing or names no [tenant], or (with [tenants] hmac_key) is not NAME.HEXSIG with a
 * valid HMAC-SHA256 signature of NAME. peer: the client address. */
struct tenant *admit_classify(struct admit *a, const struct http1_msg *m, const char *peer);

/* The request that classified into t is over (releases an unnamed key's entry). */
void admit_done(struct tenant *t);

/* GCRA: 0 if t may send a request now (and it is counted), else the nanoseconds until it
 * may (the request is refused and counted). */
uint64_t admit_rate(struct tenant *t, uint64_t now_ns);

/* The same with the limit divided among `share` instances (rate / share, burst / share,
 * at least 1): [redis] on_failure = local while Redis is away. */
uint64_t admit_rate_share(struct tenant *t, uint64_t now_ns, int share);

/* Count a request admitted by a decision made elsewhere (Redis, on_failure = open). */
void admit_count(struct tenant *t);

/* Count a refusal of t's (any reason; the rate limit counts its own). */
void admit_rejected(struct tenant *t, enum reject_reason r);

/* How t is named in the access log, /status.json and /metrics: its [tenant NAME], or for
 * an unnamed key its own entry's key with every byte outside A-Z a-z 0-9 . _ - : @ / +
 * = ~ shown as '_' (the first 63 bytes). */
const char *admit_label(const struct tenant *t);

/* One unnamed key's entry as the status readers see it (copied under the table's lock). */
struct tracked_view {
    char label[64];
    struct tenant *t;               /* its entry (may be given to another key meanwhile) */
    uint64_t requests;              /* admitted + refused since it was tracked */
    uint64_t admitted, rejected[REJ_MAX];
    int inflight;
};

/* The `max` unnamed keys with the most requests since they were tracked, most first, into
 * out; the rest summed into *rest (label "(other)", t NULL). Returns how many are in out. */
int admit_tracked_top(struct admit *a, struct tracked_view *out, int max,
                      struct tracked_view *rest);

/* Take one of t's max_inflight slots (always succeeds without a cap); 0 if at the cap. */
int admit_take(struct tenant *t);

/* Give it back. */
void admit_give(struct tenant *t);

/* The [route NAME] whose prefix is the longest whole-segment match of the normalized path
 * (uri.h: "/health" takes "/health/x", not "/healthX"), or NULL. */
const struct route_conf *admit_route(const struct config *cfg, const char *path, size_t len);

/* The state of route r (one of cfg's routes); NULL for NULL. */
struct route_state *admit_route_state(const struct admit *a, const struct config *cfg,
                                      const struct route_conf *r);

/* Monotonic nanoseconds. */
uint64_t admit_now_ns(void);

#endif
