/* sock: a byte stream on one thread's libevent loop with an input and an output buffer:
 * the part of a bufferevent sluice uses, without its costs. A socket is a raw read event
 * (a write event only once it has had to wait to write) and two evbuffers that only its
 * thread touches: it reads into the input without asking FIONREAD first, writes what is
 * flushed at once (write-through), and keeps no deferred callbacks, rate limits or locks.
 * TLS is OpenSSL on the same socket (sock_tls): read-ahead (one read per wakeup), a small
 * response in one record and one write.
 *
 * Callbacks: on_read after bytes were added to the input; on_write after a write left the
 * output at or below LOW_WM (bevio.h); on_event with SOCK_* flags for a connect done or
 * failed, EOF, an error or a timeout (reading or writing stops for that direction). A
 * callback may close the socket; the socket touches nothing of itself after calling one. */
#ifndef SLUICE_SOCK_H
#define SLUICE_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/event_struct.h>

struct evbuffer;
struct ssl_st;
struct evbuffer_cb_entry;
struct sock;

/* on_event flags: the values of libevent's BEV_EVENT_* (a TLS socket passes them on). */
#define SOCK_READING 0x01
#define SOCK_WRITING 0x02
#define SOCK_EOF 0x10
#define SOCK_ERROR 0x20
#define SOCK_TIMEOUT 0x40
#define SOCK_CONNECTED 0x80

typedef void (*sock_data_cb)(struct sock *s, void *arg);
typedef void (*sock_event_cb)(struct sock *s, short what, void *arg);

struct sock {
    struct ssl_st *ssl;            /* TLS (owned); NULL for plain TCP */
    struct evbuffer *in, *out;     /* owned */
    struct event rev;              /* reading, assigned once fd is known */
    struct event *wev;             /* writing (owned), made when first needed: most
                                    * client sockets never wait to write (-128 bytes each) */
    struct event_base *base;       /* borrowed */
    struct evbuffer_cb_entry *hwm_cb; /* resumes reading when the input drains (made
                                       * the first time reading stops at read_hwm) */
    sock_data_cb on_read, on_write;
    sock_event_cb on_event;
    void *arg;
    uint32_t rto_ms, wto_ms;       /* read and write timeouts (valid when has_*) */
    uint32_t read_hwm;             /* input held at most before reading stops (0: no limit) */
    int fd;                        /* owned, -1 until connected */
    int conn_err;                  /* a connect refused at once, reported on the loop */
    unsigned long tls_err;         /* the OpenSSL error that broke it (for the log), or 0 */
    short enabled;                 /* EV_READ and EV_WRITE as asked (plain) */
    unsigned has_rto : 1, has_wto : 1;
    unsigned connecting : 1;       /* a connect is under way */
    unsigned held : 1;             /* reading stopped at read_hwm */
    unsigned handshaking : 1;      /* TLS: the handshake runs (it arms what it needs) */
    unsigned tls_dead : 1;         /* TLS: broken, no close_notify on close */
    unsigned failed : 1;           /* a write failed in sock_flush: told on the loop */
    unsigned read_wants_write : 1, write_wants_read : 1; /* TLS: a read waits to write,
                                                          * or a write to read */
    /* what libevent has, kept here so that a timeout change asks it nothing (event_pending
     * takes the loop's lock: ~5 times a request): rev or wev added, and maybe with a timer */
    unsigned rev_on : 1, rev_timed : 1, wev_on : 1, wev_timed : 1;
};

/* A plain TCP socket on non-blocking fd (-1 for one to sock_connect): 0, s owns fd from
 * now on; or -1 (no memory), fd is still the caller's. */
int sock_plain(struct sock *s, struct event_base *base, int fd);

/* Speak TLS on s (made by sock_plain) with ssl, owned by s from now on: as the server (the
 * handshake waits for the client; SOCK_CONNECTED when it is done), or as the client (the
 * handshake follows sock_connect; SOCK_CONNECTED after it). 0, or -1. */
int sock_tls(struct sock *s, struct ssl_st *ssl, int server);

/* Free what s owns and close its socket. s itself is the caller's. */
void sock_close(struct sock *s);

void sock_setcb(struct sock *s, sock_data_cb on_read, sock_data_cb on_write,
                sock_event_cb on_event, void *arg);

/* Connect to addr (non-blocking: SOCK_CONNECTED or an error comes to on_event; a refused
 * connect too). -1 with errno set when no socket could be made or the address is bad. */
int sock_connect(struct sock *s, const struct sockaddr *addr, socklen_t len);

/* Reading (EV_READ) on or off; EV_WRITE on writes what the output holds, off stops. */
void sock_enable(struct sock *s, short what);
void sock_disable(struct sock *s, short what);
short sock_enabled(const struct sock *s);

/* An idle socket changes hands (a pooled backend connection taken by a request): reading
 * stays armed (disarming and arming again costs an epoll_ctl each time) but its timeout
 * goes. -1 when that timeout already fired and waits to be run: do not reuse s then. */
int sock_handover(struct sock *s);

/* Timeouts for reading and writing (NULL: none); a running one starts again. */
void sock_set_timeouts(struct sock *s, const struct timeval *rd, const struct timeval *wr);

/* Hold at most max input bytes: reading stops there until the input drains below it. */
void sock_set_read_max(struct sock *s, size_t max);

/* Write what the output holds now; the write event stays armed only while bytes remain. */
void sock_flush(struct sock *s);

int sock_fd(const struct sock *s);

static inline struct evbuffer *sock_in(const struct sock *s)
{
    return s->in;
}

static inline struct evbuffer *sock_out(const struct sock *s)
{
    return s->out;
}

#endif
