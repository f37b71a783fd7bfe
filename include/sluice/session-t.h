/* session-t: the types of a client session (the state enum, struct session, struct body)
 * and the buffer sizes its parts share. Internal: included only by src/session*.c; the
 * session API for the rest of sluice is session.h. The functions are in session-int.h. */
#ifndef SLUICE_SESSION_T_H
#define SLUICE_SESSION_T_H

#include <stdint.h>

#include <sluice/http1.h>
#include <sluice/queue.h>
#include <sluice/session.h>

struct bufferevent;
struct event;
struct evbuffer;
struct redis_call;
struct route_conf;
struct runtime;
struct tenant;

/* Backpressure watermarks (the rule is stated at the top of session.c). */
#define HIGH_WM (256 * 1024)
#define LOW_WM (64 * 1024)
#define CLI_READ_WM (64 * 1024) /* a client's input held at most (more for larger heads) */
#define MAX_IO (128 * 1024) /* per read/write call; libevent's default is 16 KiB */
#define MAX_LOG_TARGET 1024 /* the request target as kept for logs and redirects */

enum sess_state { S_READ_HEAD, S_ADMIT, S_READ_BODY, S_QUEUED, S_CONNECTING, S_FORWARD,
                  S_TUNNEL, S_CLOSING, S_LINGER };

/* How far a head being read was looked at (sess_head_span): bytes searched for its end,
 * and the input's length when it was last parsed. Zero for a new head. */
struct head_scan {
    size_t searched;
    size_t parsed;
};

/* A message body being moved from one buffer to another, re-framed if needed. */
struct body {
    enum http1_body kind; /* framing on the source side */
    uint64_t remaining;   /* LENGTH: bytes left */
    struct http1_chunked ch;
    int out_chunked;      /* write chunked framing on the destination side */
    int done;
    uint64_t total;       /* payload bytes moved */
    size_t cap;           /* stop once the destination holds this much (0: no cap) */
    int copy;             /* copy into the destination's own space (see move_data) */
};

struct session {
    struct worker *w;             /* borrowed */
    struct runtime *rt;           /* the generation of the current request (a reference) */
    struct session *prev, *next;  /* worker's list */
    struct bufferevent *cli;      /* owned */
    struct upconn *up;            /* owned while a request is forwarded */
    struct event *timer;          /* owned: header deadline, keep-alive idle, linger */
    struct evbuffer *reqhead;     /* owned: the head sent upstream, kept for a retry */
    size_t body_charge;           /* bytes bodybuf has reserved in the proxy's bufmem */
    struct evbuffer *bodybuf;     /* owned: request body read before a backend is chosen;
                                   * made for a request with a body, freed after it */
    enum sess_state state;
    unsigned busy;                /* serve_heads() frames on the stack: freeing waits */
    unsigned dead : 1;            /* freed while busy: serve_heads() frees it on the way out */
    unsigned again : 1;           /* a request was answered while serving heads: next one */
    unsigned resume : 1;          /* the timer is armed to serve heads on the next loop turn */
    char peer[64];
    int tls;                      /* accepted on an HTTPS listener */
    int nreq;                     /* requests served on this connection */
    /* the current request */
    enum http1_method meth;
    char method[16];
    char *target;                 /* owned: request target for logs, NULL before a head */
    char rid[129];
    int minor;
    int keep_alive;               /* client connection may persist after this response */
    int upgrade;
    int expect;                   /* 100-continue still to be sent when the body is wanted */
    int attempts;
    int cli_eof;                  /* client half-closed after sending its request */
    int resp_started;             /* response head sent to the client */
    int up_keep;                  /* the backend allows reuse of its connection */
    int up_tainted;               /* a head on it announced a body it must not carry: the
                                   * backend may still send one, so never pool it */
    int status;
    struct backend *backend;      /* the one picked (inflight held) */
    struct tenant *tenant;        /* of the current request, from rt->admit */
    struct redis_call *rcall;     /* its rate limit being decided by Redis (S_ADMIT) */
    struct waiter wt;             /* its place in the shared queue while S_QUEUED */
    int tenant_slot;              /* holds one of its tenant's max_inflight slots */
    int route_slot;               /* holds one of its route's max_inflight slots */
    const struct route_conf *route; /* its [route], NULL = none (borrowed from rt) */
    int bypass;                   /* its route bypasses admission (health checks, assets) */
    int answer_keep;              /* a refusal may keep the connection (body fully read) */
    struct backend *last_failed;
    struct body req, resp;
    struct head_scan head_scan;   /* the client's request head being read */
    struct head_scan resp_scan;   /* the backend's response head being read */
    uint64_t bytes_in, bytes_out;
    uint64_t t_start, t_up_start, t_up_end;
    uint64_t t_sent_us;           /* when the request went upstream (latency samples) */
    uint64_t t_start_us;          /* its head began to arrive (meter: total time) */
    uint64_t t_ready_us;          /* it was ready for a backend slot (meter: queueing) */
    uint64_t t_slot_us;           /* it got one */
    int inflight_at_send;         /* its backend's in-flight count then, itself included */
};


#endif
