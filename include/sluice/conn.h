/* conn: one client connection: its socket (sock.h: plain TCP or TLS), its peer,
 * its timer (header deadline, keep-alive idle, linger), its place in the worker's list, and
 * the codec that speaks its protocol (HTTP/1.1 in h1.c). The codec turns bytes into requests
 * (request.h) and their responses back into bytes; the connection knows nothing of HTTP.
 *
 * A connection is OPEN while its codec runs, CLOSING while the last bytes are written, and
 * LINGER after a half-close while what the client still sends is read and dropped (so that
 * a client still sending does not get a reset that destroys the answer). */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdint.h>
#include <sys/socket.h>

#include <sluice/bevio.h>
#include <sluice/sock.h>

struct conn;
struct event;
struct evbuffer;
struct h2;
struct http1_msg;
struct request;
struct runtime;
struct worker;

enum conn_state { C_OPEN, C_CLOSING, C_LINGER };

/* What a request tells its codec (request.h: body_want). */
enum body_want {
    BODY_WANT,  /* it takes body bytes now (HTTP/1.1: a 100 Continue first if asked) */
    BODY_PAUSE, /* the backend's side is full: stop reading the body for now */
    BODY_DONE   /* the whole body arrived */
};

/* A protocol on a connection. The first group is called by conn.c, the second by a request:
 * it is the request's only way up to its client. */
struct codec {
    const char *proto; /* as logged: "HTTP/1.1", "HTTP/2" */
    /* bytes arrived (a TLS handshake may be under way) */
    void (*read)(struct conn *c);
    /* the output drained below LOW_WM */
    void (*drained)(struct conn *c);
    /* the connection closed, failed, or its read/write timeout fired (OPEN only) */
    void (*event)(struct conn *c, short what);
    /* the connection's timer fired (OPEN only) */
    void (*timer)(struct conn *c);
    /* stop: end the connection if nothing is in progress, or let what is finish */
    void (*drain)(struct conn *c);
    /* the connection goes: free its requests (each req_free) */
    void (*free)(struct conn *c);

    /* the backend's response head m (r->status set): write it; 1 if the body is to be
     * chunked on the way out (HTTP/1.1 only) */
    int (*resp_head)(struct request *r, const struct http1_msg *m);
    /* sluice's own answer: status, its reason phrase, extra header lines ("Name: v\r\n"
     * each), code for X-Sluice-Error, and the body (not sent for HEAD) */
    void (*answer)(struct request *r, int status, const char *reason, const char *code,
                   const char *extra, const char *body, size_t blen);
    /* where the response body goes (the request moves bytes there, then calls flush) */
    struct evbuffer *(*sink)(struct request *r);
    void (*flush)(struct request *r);
    /* the request's body: read more, pause, or it is complete */
    void (*body_want)(struct request *r, enum body_want w);
    /* r is DONE (released, logged): send what is left, free r, go on with the connection */
    void (*end)(struct request *r);
    /* r was cut (the response cannot be completed): reset its stream or close; frees r */
    void (*abort)(struct request *r);
};

struct conn {
    struct worker *w;             /* borrowed */
    struct runtime *rt;           /* the generation its next request starts on (a reference) */
    struct conn *prev, *next;     /* the worker's list */
    struct sock sk;               /* the client socket */
    struct event timer;           /* header deadline, keep-alive idle, linger: armed lazily */
    uint64_t deadline_ms;         /* when the timer's work is due (up_now_ms), 0: none */
    uint64_t timer_at_ms;         /* when the armed timer fires, 0: not armed */
    const struct codec *codec;
    struct request *req;          /* HTTP/1.1: the current request (owned) */
    struct h2 *h2;                /* HTTP/2: the session and its streams (owned, h2.c) */
    enum conn_state state;
    unsigned busy;                /* codec frames on the stack: freeing waits for them */
    unsigned dead : 1;            /* freed while busy: freed on the way out */
    unsigned again : 1;           /* HTTP/1.1: a request ended while serving heads: next */
    unsigned resume : 1;          /* HTTP/1.1: the timer serves heads on the next turn */
    unsigned killed : 1;          /* closed at forced shutdown (its requests are logged) */
    unsigned proto_known : 1;     /* TLS: ALPN looked at */
    int tls;                      /* accepted on an HTTPS listener */
    int nreq;                     /* requests started on it */
    int nheads;                   /* HTTP/1.1: request heads begun on it */
    char peer[46];                /* INET6_ADDRSTRLEN */
};

/* Accepted client socket fd from peer: make its connection (it owns fd from now on).
 * tls: accepted on an HTTPS listener (the handshake runs inside its socket). */
void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, int peerlen, int tls);

/* Shutdown drain: idle connections close, busy ones finish what they do. */
void conn_drain_idle(struct worker *w);

/* Free a connection at forced shutdown, whatever it does (a request cut is logged). */
void conn_kill(struct conn *c);

/* Free c now, or once the codec frames on the stack have returned (c->busy). */
void conn_free(struct conn *c);

/* The codec's timer (or the close) runs in ms. Lazily: a timer armed to fire sooner is
 * kept and, when it fires, waits on for the rest (requests set and meet their deadlines
 * several times each; libevent's timer heap is touched about once per timeout). */
void conn_timer_ms(struct conn *c, uint32_t ms);

/* No deadline: the timer's work will not run (an armed timer fires and finds nothing). */
void conn_timer_off(struct conn *c);

/* Client socket timeouts: read_ms for reading (0 = none), send_timeout for writing. */
void conn_timeouts(struct conn *c, uint32_t read_ms);

/* Write what the output holds now. */
void conn_flush(struct conn *c);

/* Close after what is queued for the client has been written (then linger). */
void conn_close_after_flush(struct conn *c);

/* Half-close and read until EOF or the linger time (or end now under TLS). */
void conn_linger(struct conn *c);

#endif
