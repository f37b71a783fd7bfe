/* worker: one thread with its own event_base, SO_REUSEPORT listeners, client connections,
 * upstream connection pools and stats shard; and the shared proxy context. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <sluice/bufmem.h>
#include <sluice/config.h>
#include <sluice/http1.h>
#include <sluice/mailbox.h>
#include <sluice/queue.h>
#include <sluice/redis.h>
#include <sluice/runtime.h>
#include <sluice/stats.h>
#include <sluice/upstream.h>

struct event_base;
struct event;
struct evconnlistener;
struct conn;
struct request;
struct upconn;

/* Idle pooled connections to one backend, on one thread. */
struct pool {
    struct upconn *head; /* doubly linked through upconn.prev/next, newest first */
    struct upconn *tail; /* the oldest: the first whose idle_timeout comes */
    int count;
    int peak;            /* keepalive = auto: the most requests the backend had in flight
                          * when this thread sent one, since peak_ms */
    uint64_t peak_ms;
};

#define WORKER_MAX_LISTEN (2 * CONFIG_MAX_LIST)

/* Everything the threads share; owned by main. */
struct proxy {
    const char *config_path;
    struct runtime *_Atomic rt;  /* current generation (a reference); written by main only */
    struct worker *workers;      /* owned array of nworkers */
    int nworkers;
    atomic_int stopping;         /* set once on SIGTERM */
    atomic_uint_fast64_t reloads, reload_failures;
    struct queue queue;          /* requests waiting for a backend slot, all threads */
    struct bufmem bufmem;        /* memory of buffered request bodies, all threads */
    atomic_int redis_instances;  /* live sluice instances last seen in Redis (0 = unknown) */
    struct meter *meter;         /* measurements: set before the workers start (main) */
    struct cluster *cluster;     /* main thread's Redis heartbeat and publisher, or NULL */
    struct autoscale *scaler;    /* main thread's scale controller, or NULL */
};

/* One listening socket of a worker. */
struct wlistener {
    struct worker *w;             /* borrowed */
    char *spec;                   /* owned */
    int tls;                      /* an HTTPS listener */
    struct evconnlistener *lev;   /* owned */
};

struct worker {
    int id;
    struct proxy *px;                  /* borrowed */
    pthread_t thread;
    struct event_base *base;           /* owned; no lock: only w's thread touches it */
    struct runtime *rt;                /* generation for new requests (a reference) */
    struct wlistener lst[WORKER_MAX_LISTEN];
    int nlst;
    int pending_fd[WORKER_MAX_LISTEN]; /* from main for px->rt's specs; -1 = keep ours */
    atomic_uint adopted;               /* generation this thread has adopted */
    struct mailbox box;                /* other threads' wake-ups (the base has no lock) */
    struct mail stop_mail;             /* posted by main for shutdown */
    struct mail reload_mail;           /* posted by main to adopt px->rt */
    struct event *grace;               /* owned: forced stop after shutdown_grace */
    struct event *accept_retry;        /* owned: re-enables accept after EMFILE */
    struct event *pool_sweep;          /* owned: closes idle backend connections whose
                                        * idle_timeout is up (one timer for all pools) */
    uint64_t sweep_due;                /* when pool_sweep runs (up_now_ms), 0: not armed */
    struct conn *conns;                /* all live client connections (list) */
    int nconns;
    struct request *req_pool;          /* owned: freed requests kept for reuse (request.c) */
    int req_pooled;
    struct pool *pools;                /* owned array, one per backend of rt */
    struct http1_header *hdrs;         /* owned scratch for parsing, max_headers entries */
    size_t nhdrs;
    char *path;                        /* owned scratch: a request's normalized path
                                        * (max_line_size + 2 bytes) */
    int draining;
    int nupconns;                      /* backend connections, in use and pooled */
    int fd_share;                      /* descriptors its connections may use */
    int fd_paused;                     /* accepting paused: too near fd_share */
    uint64_t rng[2];                   /* xorshift128+ state for request ids */
    struct rclient redis;              /* this thread's Redis client (off without [redis]) */
    char name[16];                     /* "worker N", for log lines */
    struct stats stats;
};

/* Create worker w's base and events. 0 or -1 with err filled. */
int worker_init(struct worker *w, struct proxy *px, int id, char *err, size_t errlen);

/* Main thread: bind the sockets `next` needs that w does not have yet (pending_fd).
 * 0, or -1 with err filled and nothing left open. */
int worker_prepare(struct worker *w, const struct runtime *next, char *err, size_t errlen);

/* Main thread: close what worker_prepare opened (the reload was abandoned). */
void worker_unprepare(struct worker *w);

/* Adopt px->rt: listeners, pools and scratch space follow it. On w's thread, or on main
 * before the thread starts. 0, or -1 (out of memory: w keeps its generation). */
int worker_adopt(struct worker *w);

/* Main thread: ask w to adopt px->rt (after worker_prepare). */
void worker_reload(struct worker *w);

/* Run w's loop in a new thread. */
int worker_start(struct worker *w);

/* Ask w to stop accepting, finish in-flight requests and exit its loop (any thread). */
void worker_stop(struct worker *w);

/* Free what worker_init made (after the thread has been joined). */
void worker_free(struct worker *w);

/* Fill out with 32 lowercase hex characters and a NUL. */
void worker_request_id(struct worker *w, char out[33]);

/* A client connection ended (already unlinked); exits the loop when draining and none are left. */
void worker_conn_gone(struct worker *w);

/* Its connections (client and backend connections) changed: pause accepting when they come
 * near its share of RLIMIT_NOFILE, resume once they are well below it. */
void worker_fd_check(struct worker *w);

/* Close one idle pooled connection (any backend) to free a descriptor; 0 if there was none. */
int worker_pool_evict(struct worker *w);

/* Take an idle pooled connection to backend b, or NULL. */
struct upconn *worker_pool_get(struct worker *w, struct backend *b);

/* Put a connection back into its backend's idle pool, or free it if the pool is full. */
void worker_pool_put(struct worker *w, struct upconn *u);

/* Unlink a pooled connection (it died while idle). */
void worker_pool_unlink(struct worker *w, struct upconn *u);

#endif
