/* session: one client connection and its request/response state machine; one upstream
 * connection (struct upconn) at a time. */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct session;
struct backend;
struct bufferevent;

/* A connection to a backend; owned by a session while in use, by the worker's pool while
 * idle. */
struct upconn {
    struct bufferevent *bev; /* owned */
    struct backend *b;       /* borrowed */
    struct worker *w;        /* borrowed */
    struct upconn *prev, *next; /* pool links while idle */
    int reused;              /* taken from the pool for the current request */
    uint64_t idle_since_ms;  /* when it went into the pool */
};

/* Accepted client socket fd from peer: create its session (it owns fd from now on).
 * tls: accepted on an HTTPS listener (the handshake runs inside the bufferevent). */
void session_accept(struct worker *w, int fd, const struct sockaddr *peer, int peerlen, int tls);

/* Close sessions that are idle between requests (shutdown drain). */
void session_drain_idle(struct worker *w);

/* Free a session at forced shutdown, whatever its state. */
void session_kill(struct session *s);

/* Free an upstream connection. */
void upconn_free(struct upconn *u);

/* Next session in the worker's list (for iteration). */
struct session *session_next(struct session *s);

#endif
