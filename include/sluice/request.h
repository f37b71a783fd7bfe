/* request: one HTTP request, from the first byte of its head to the last byte of its
 * response, apart from the client connection it came on (conn.h). An HTTP/1.1 connection
 * carries one at a time; an HTTP/2 connection one per stream. The request owns what it holds
 * in sluice's shared state (its tenant's, route's and backend's slots, its place in the
 * queue, its Redis call, its buffered body, its backend connection) and gives all of it back
 * in one function, req_release(). docs/architecture.md has its way through.
 *
 * Its life is one enum, set only by req_advance(), which checks every move against this:
 *
 *   HEAD ----> ADMIT ----> BODY ----> CONNECTING <-----> QUEUED
 *     | head read,  | Redis    | buffer  ^  |  |  ^      no slot free: the fair queue;
 *     | checked,    | decides  | up to   |  |  |  |      woken: CONNECTING again
 *     | classified  | the rate | request_|  |  |  +--- retry elsewhere (a connect failed),
 *     +-------------+----------+--buffer-+  |  |       or once on a new connection (a
 *       (no Redis, no body: straight on)    |  |       pooled one died before answering)
 *                                           v  v
 *                    body still to send  SENDING --> WAITING --101--> TUNNEL
 *                                              \      /   whole request sent
 *                                              STREAMING  the response head came (from
 *                                                         SENDING: the backend answered
 *                                                         before the whole body)
 *
 * Every state ends in DONE: answered by the backend, answered by sluice (4xx, 429, 503,
 * 502, 504), or cut (the client or the backend went away; the reason counted). At DONE the
 * request is logged and has given everything back; its codec then frees it. The table
 * moves[] in request.c is this drawing.
 *
 * The request never touches a client socket: its codec (HTTP/1.1 or HTTP/2) fills its body
 * source and takes its response through struct codec (conn.h). Modules call downward:
 * conn -> codec -> request -> admission, queue, upstream; the request's parts report back
 * only through req_advance() and the functions below, the codec only through its table. */
#ifndef SLUICE_REQUEST_H
#define SLUICE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/bevio.h>
#include <sluice/body.h>
#include <sluice/http1.h>
#include <sluice/queue.h>
#include <sluice/stats.h>

struct backend;
struct conn;
struct event;
struct evbuffer;
struct redis_call;
struct route_conf;
struct runtime;
struct tenant;
struct upconn;
struct worker;

#define MAX_LOG_TARGET 1024 /* the request target as kept for logs and redirects */

enum req_state {
    RQ_HEAD,       /* its head is arriving (HTTP/1.1) or was just decoded; checked */
    RQ_ADMIT,      /* Redis decides its tenant's shared rate limit */
    RQ_BODY,       /* its body is buffered (up to request_buffer) before a backend */
    RQ_QUEUED,     /* no slot free: waiting in the fair queue */
    RQ_CONNECTING, /* a backend slot held; its connection is being made */
    RQ_SENDING,    /* the head went upstream, the body is still going */
    RQ_WAITING,    /* the whole request went; its response head has not come */
    RQ_STREAMING,  /* the response goes to the client */
    RQ_TUNNEL,     /* 101: bytes both ways until either side closes */
    RQ_DONE,       /* ended: logged, everything given back; the codec frees it */
    RQ_NSTATES
};

struct request {
    struct conn *c;               /* borrowed: the connection it came on (outlives it) */
    struct worker *w;             /* borrowed */
    struct runtime *rt;           /* the generation it runs on (a reference) */
    struct request *next;         /* the codec's list (HTTP/2 streams) */
    void *cs;                     /* the codec's state for it (HTTP/2: its stream's) */
    enum req_state state;
    int32_t stream;               /* HTTP/2 stream id; 0 on HTTP/1.1 */
    /* the body source the codec fills: the connection's input (HTTP/1.1), or the stream's
     * DATA (HTTP/2); src_eof: nothing more will come */
    struct evbuffer *src;
    int src_eof;
    /* its head, as the access log, answers and a retry need it */
    enum http1_method meth;
    char method[16];
    char *target;                 /* owned: NULL before a head */
    char rid[129];
    int minor;                    /* HTTP/1.minor (0 or 1); 1 for HTTP/2 */
    int keep_alive;               /* HTTP/1.1: the connection may persist after it */
    int upgrade;
    int expect;                   /* 100-continue still to be sent when the body is wanted */
    int cli_eof;                  /* the client half-closed after sending it */
    int answer_keep;              /* a refusal may keep the connection (no body unread) */
    enum http1_body body_kind;    /* the request body's framing from the client */
    uint64_t body_len;            /* its Content-Length */
    int body_chunk_out;           /* sent upstream chunked */
    /* admission */
    struct tenant *tenant;        /* from rt->admit */
    const struct route_conf *route; /* its [route], NULL = none (borrowed from rt) */
    int bypass;                   /* its route bypasses admission (health checks, assets) */
    struct redis_call *rcall;     /* ADMIT: the Redis call deciding its rate */
    struct event *timer;          /* owned, made when needed: Redis and queue deadlines */
    struct waiter wt;             /* its place in the shared queue while QUEUED */
    int tenant_slot;              /* holds one of its tenant's max_inflight slots */
    int route_slot;               /* holds one of its route's max_inflight slots */
    /* upstream */
    struct backend *backend;      /* the one picked (in flight held) */
    struct backend *last_failed;
    struct upconn *up;            /* owned while forwarding */
    struct evbuffer *head_out;    /* owned: the head sent upstream, kept for a retry */
    struct evbuffer *bodybuf;     /* owned: the body read before a backend is chosen */
    size_t body_charge;           /* bytes bodybuf has reserved in the proxy's bufmem */
    int attempts;
    int up_keep;                  /* the backend allows reuse of its connection */
    int up_tainted;               /* a head on it announced a body it must not carry */
    struct head_scan scan;        /* the head being read: the request's (HTTP/1.1, in HEAD),
                                   * then the backend's response's */
    struct body req, resp;
    /* response */
    int status;
    int resp_started;             /* the response head went to the codec */
    uint64_t bytes_in, bytes_out;
    uint64_t t_start;             /* ms: its head began (access log) */
    uint64_t t_up_start, t_up_end;
    uint64_t t_sent_us;           /* when it went upstream (latency samples) */
    uint64_t t_start_us;          /* its head began to arrive (meter: total time) */
    uint64_t t_ready_us;          /* it was ready for a backend slot (meter: queueing) */
    uint64_t t_slot_us;           /* it got one */
    int inflight_at_send;         /* its backend's in-flight count then, itself included */
};

/* ---- for codecs ---- */

/* A new request on connection c, in HEAD (its generation: the worker's current one). */
struct request *req_new(struct conn *c);

/* Free r: req_release() first if it did not end. The codec's, after end() or abort(), or
 * when its connection goes. */
void req_free(struct request *r);

/* Its head has been read and parsed (m, valid only during the call; its first n bytes of
 * r->src are the head, dropped here): check it, classify it, and start admitting it. The
 * codec has set minor, keep_alive and expect. */
void req_head(struct request *r, const struct http1_msg *m, size_t n);

/* Body bytes arrived in r->src (or it ended: r->src_eof), or the tunnel's client side has
 * bytes: move them on as its state allows. */
void req_client_data(struct request *r);

/* What the codec holds for the client drained below LOW_WM: read the backend again. */
void req_sink_drained(struct request *r);

/* The client went away or timed out (why: the counter) before r ended. */
void req_abort(struct request *r, enum stat_id why);

/* Sluice answers r by itself and ends it (extra: more header lines "Name: v\r\n", or NULL). */
void req_answer(struct request *r, int status, const char *code, const char *msg,
                const char *extra);
/* req_answer() without extra header lines. */
void req_error(struct request *r, int status, const char *code, const char *msg);

/* Free the requests kept for reuse on worker w (at its end). */
void req_pool_free(struct worker *w);

/* ---- for the request's parts (request*.c) ---- */

/* Move r to `to`: the one place its state is set. A move not drawn above (the table moves[]
 * in request.c) is a bug: it is logged as one ("bug: a request moved from X to Y"), and the
 * integration tests fail on such a line. */
void req_advance(struct request *r, enum req_state to);

/* Give back every slot, token, count and buffer r holds: its Redis call, its queue place,
 * its tenant's and route's slots (the worker time charged to the tenant), its backend slot
 * (a waiter woken), its backend connection, its buffered body's reservation. Safe to call
 * twice. */
void req_release(struct request *r);

/* r ended normally (the backend's response is complete, or sluice's answer was written):
 * logged, released, DONE, and handed to its codec's end(). */
void req_finish(struct request *r);

/* The name of a state, for logs. */
const char *req_state_name(enum req_state s);

#endif
