/* worker: one thread with its own event_base, SO_REUSEPORT listeners, client sessions,
 * upstream connection pools and stats shard; and the shared proxy context. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <sluice/config.h>
#include <sluice/http1.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>

struct event_base;
struct event;
struct evconnlistener;
struct session;
struct upconn;

/* Idle pooled connections to one backend, on one thread. */
struct pool {
    struct upconn *head; /* doubly linked through upconn.prev/next */
    int count;
};

/* Everything the threads share; owned by main. */
struct proxy {
    struct config *cfg;          /* owned */
    struct upstream up;          /* owned */
    struct http1_limits lim;
    struct worker *workers;      /* owned array of nworkers */
    int nworkers;
    atomic_int stopping;         /* set once on SIGTERM */
};

struct worker {
    int id;
    struct proxy *px;                  /* borrowed */
    pthread_t thread;
    struct event_base *base;           /* owned */
    struct evconnlistener *lev[CONFIG_MAX_LISTEN]; /* owned */
    int nlev;
    struct event *ctl;                 /* owned: woken by main for shutdown */
    struct event *grace;               /* owned: forced stop after shutdown_grace */
    struct event *accept_retry;        /* owned: re-enables accept after EMFILE */
    struct session *sessions;          /* all live client sessions (list) */
    int nsessions;
    struct pool *pools;                /* owned array, one per backend */
    struct http1_header *hdrs;         /* owned scratch for parsing, max_headers entries */
    size_t nhdrs;
    int draining;
    uint64_t rng[2];                   /* xorshift128+ state for request ids */
    struct stats stats;
};

/* Create worker w's base and listeners (bound here, so errors show before threads start).
 * 0 or -1 with err filled. */
int worker_init(struct worker *w, struct proxy *px, int id, char *err, size_t errlen);

/* Run w's loop in a new thread. */
int worker_start(struct worker *w);

/* Ask w to stop accepting, finish in-flight requests and exit its loop (any thread). */
void worker_stop(struct worker *w);

/* Free what worker_init made (after the thread has been joined). */
void worker_free(struct worker *w);

/* Fill out with 32 lowercase hex characters and a NUL. */
void worker_request_id(struct worker *w, char out[33]);

/* A session ended (already unlinked); exits the loop when draining and none are left. */
void worker_session_gone(struct worker *w);

/* Take an idle pooled connection to backend b, or NULL. */
struct upconn *worker_pool_get(struct worker *w, struct backend *b);

/* Put a connection back into its backend's idle pool, or free it if the pool is full. */
void worker_pool_put(struct worker *w, struct upconn *u);

/* Unlink a pooled connection (it died while idle). */
void worker_pool_unlink(struct worker *w, struct upconn *u);

#endif
