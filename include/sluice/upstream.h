/* upstream: the backends, least-connections pick across all threads, and passive health.
 * A backend's counters and health (struct backend_state) outlive configuration reloads
 * while the backend keeps its name; the rest (address, weight, timeouts) comes from the
 * configuration generation that built the table. Connection pools live in worker.c. */
#ifndef SLUICE_UPSTREAM_H
#define SLUICE_UPSTREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>

struct adaptive;
struct backend_conf;
struct series;
struct bufferevent;
struct sock;
struct event_base;

/* What a backend keeps across reloads; shared by every table that names it (refcounted). */
struct backend_state {
    char name[64];
    atomic_int refs;                   /* tables holding it */
    atomic_int inflight;               /* requests being served now, all threads */
    atomic_uint_fast64_t requests;     /* requests sent */
    atomic_uint_fast64_t failures;     /* connect/read failures */
    atomic_uint_fast64_t down_until;   /* ms (monotonic); 0 or past = up */
    pthread_mutex_t lock;              /* guards fails and fail_start */
    atomic_int fails;                  /* failures in the current window (written under lock) */
    uint64_t fail_start;               /* ms when the current window began */
    /* active health, written by the checker on the main thread only */
    atomic_int hc_down;                /* 1 while active checks say down */
    atomic_uint_fast64_t up_since;     /* ms when it last came back (slow start), 0 = never down */
    atomic_int hc_last_status;         /* last check's status, 0 = no answer */
    int hc_pass, hc_fail;              /* consecutive passes and failures */
    atomic_int admin_drain;            /* set by the admin API: 0 = as configured,
                                        * 1 = drained, 2 = not drained */
    struct series *_Atomic ser;        /* its measurements (meter.h); set once by main */
    atomic_int workers_seen;           /* Gunicorn workers the actuator counts under this
                                        * backend's master (0 = not watched): its capacity */
};

/* A backend as one configuration generation sees it. Owned by struct upstream. */
struct backend {
    const struct backend_conf *conf;   /* borrowed from the config that outlives the table */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int index;                         /* position in upstream.b */
    struct backend_state *st;          /* shared, refcounted */
    struct ssl_ctx_st *tls;            /* owned: client context when conf->tls, else NULL */
    char host[256];                    /* host part of the address: default SNI/verify name */
    struct adaptive *ad;               /* owned: the learned limit when workers = auto, else
                                        * NULL (per generation: a reload learns afresh) */
};

struct upstream {
    struct backend *b;  /* owned array */
    int n;
    atomic_uint rr;     /* rotation start for ties */
};

/* Resolve every backend's address and build the table. Backends whose name is in `prev`
 * (may be NULL) share its state: counters and health survive a reload. 0 or -1 with err. */
int up_init(struct upstream *u, const struct backend_conf *confs, int n,
            const struct upstream *prev, char *err, size_t errlen);

/* Free the table (and each state no other table holds). */
void up_free(struct upstream *u);

/* Least connections: the up backend with the lowest inflight/weight (compared by
 * cross-multiplying), ties in rotation; `avoid` (may be NULL) is skipped unless it is the
 * only one up. If every backend is down, the one whose down period ends first is tried.
 * Returns NULL only when there are no backends. Increments the winner's inflight. */
struct backend *up_pick(struct upstream *u, const struct backend *avoid, uint64_t now_ms);

/* Like up_pick, but a backend with `workers` set takes at most that many requests at once
 * (a sync Gunicorn worker serves one at a time: HAProxy's maxconn). NULL with *full = 1
 * when every usable backend is at its limit (the request should wait for a slot). */
struct backend *up_pick_slot(struct upstream *u, const struct backend *avoid, uint64_t now_ms,
                             int *full);

/* Like up_pick_slot but over every backend's `workers` limit: for route classes with
 * `bypass = yes` (health checks, static assets), which must not wait behind the queue. */
struct backend *up_pick_bypass(struct upstream *u, const struct backend *avoid, uint64_t now_ms);

/* 1 if some usable backend has a free slot now. */
int up_has_slot(struct upstream *u, uint64_t now_ms);

/* The request on b finished (whatever its outcome): decrement inflight. */
void up_release(struct backend *b);

/* A connect failure or timeout on b: counts toward max_fails within fail_timeout. */
void up_fail(struct backend *b, uint64_t now_ms);

/* A successful response from b: resets the failure window. */
void up_ok(struct backend *b);

/* 1 if b takes no new requests: `drain = yes`, unless the admin API says otherwise. */
int up_draining(const struct backend *b);

/* 1 if b may be picked now. */
int up_is_up(const struct backend *b, uint64_t now_ms);

/* Weight in thousandths, ramped by slow_start after a recovery. */
long up_effective_weight(const struct backend *b, uint64_t now_ms);

/* Active check result for b: counts toward rise/fall; returns +1 when b just came back,
 * -1 when it just went down, 0 otherwise. */
int up_check_result(struct backend *b, int pass, int status, uint64_t now_ms);

/* An unconnected bufferevent for b on base: TLS (verified as configured) when b speaks
 * TLS. NULL when out of memory. */
struct bufferevent *up_bufferevent(struct backend *b, struct event_base *base);

/* s, a socket to b not yet connected: plain, or TLS as b speaks it (verified as
 * configured). 0, or -1. */
int up_sock(struct backend *b, struct event_base *base, struct sock *s);

/* A request to b finished with a response: its latency (sent to complete, us) and b's
 * in-flight count when it was sent (itself included). Feeds workers = auto. */
void up_sample(struct backend *b, uint64_t rtt_us, int inflight_at_send);

/* b's concurrency limit now: workers (or the workers the Gunicorn actuator sees), the
 * learned limit (auto), or 0 = none. */
int up_capacity(const struct backend *b);

/* Requests in flight to b now. */
int up_inflight(const struct backend *b);

/* Monotonic milliseconds. */
uint64_t up_now_ms(void);

#endif
