/* sock: TCP streams, plain or TLS (OpenSSL on the socket itself), on raw libevent events
 * and evbuffers that one thread owns (sock.h). */
#include <sluice/sock.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h> /* BEV_EVENT_* */
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <sluice/bevio.h>

_Static_assert(SOCK_READING == BEV_EVENT_READING && SOCK_WRITING == BEV_EVENT_WRITING &&
                   SOCK_EOF == BEV_EVENT_EOF && SOCK_ERROR == BEV_EVENT_ERROR &&
                   SOCK_TIMEOUT == BEV_EVENT_TIMEOUT && SOCK_CONNECTED == BEV_EVENT_CONNECTED,
               "SOCK_* are libevent's BEV_EVENT_*");

/* The first read of a wakeup takes up to READ_FIRST bytes (a request head, a small response:
 * a chain of this size per read); while reads fill what they were given, READ_MORE each,
 * up to MAX_IO. READ_MORE stays below glibc's mmap threshold: no mmap per read. */
#define READ_FIRST 4096
#define READ_MORE (60 * 1024)
#define TLS_RECORD 16384 /* the most plaintext one TLS record carries */
#define WRITE_VECS 64    /* pieces of the output one writev takes */

/* ---- reading ---- */

/* An empty input's first read goes to the stack, then into a chain of its size: most are
 * heads of a few hundred bytes, and a chain under 1 KiB comes from glibc's per-thread cache
 * where reading in place took a fresh 4 KiB chain (the bins, and freed at once: two a
 * proxied request). Plain and TLS reads alike. */
static int read_to_stack(struct evbuffer *in, size_t want)
{
    return want <= READ_FIRST && evbuffer_get_length(in) == 0;
}

static ssize_t read_small(struct evbuffer *in, int fd, size_t want)
{
    char buf[READ_FIRST];
    ssize_t r = recv(fd, buf, want < sizeof buf ? want : sizeof buf, 0);
    if (r > 0 && evbuffer_add(in, buf, (size_t)r) < 0) {
        errno = ENOMEM; /* the bytes are lost with the connection: it is closed */
        return -1;
    }
    return r;
}

/* One read into up to want bytes of fresh space at the input's end: recv() into one piece
 * of space (the usual case: the kernel then copies no iovec array in and looks the file up
 * without its position lock, ~2 % of a pinned core), readv() into two. */
static ssize_t read_into(struct evbuffer *in, int fd, size_t want)
{
    if (read_to_stack(in, want))
        return read_small(in, fd, want);
    struct evbuffer_iovec v[2];
    int n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
    if (n <= 0) {
        errno = ENOMEM;
        return -1;
    }
    struct iovec iov[2];
    size_t room = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        room += v[i].iov_len;
    }
    if (room > want) { /* reserve may offer more than asked: read only what was */
        size_t over = room - want;
        for (int i = n - 1; i >= 0 && over > 0; i--) {
            size_t cut = iov[i].iov_len < over ? iov[i].iov_len : over;
            iov[i].iov_len -= cut;
            over -= cut;
        }
    }
    while (n > 1 && iov[n - 1].iov_len == 0)
        n--;
    ssize_t r = n == 1 ? recv(fd, iov[0].iov_base, iov[0].iov_len, 0) : readv(fd, iov, n);
    if (r <= 0)
        return r;
    size_t left = (size_t)r;
    int used = 0;
    for (int i = 0; i < n && left > 0; i++, used++) {
        v[i].iov_len = iov[i].iov_len < left ? iov[i].iov_len : left;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(in, v, used);
    return r;
}

/* A TLS read or write that failed for good: remember why (for the log), and never send a
 * close_notify on it. */
static void tls_broken(struct sock *s)
{
    s->tls_err = ERR_peek_last_error();
    s->tls_dead = 1;
    ERR_clear_error();
}

/* One SSL_read into up to want bytes of fresh space: as read_into, with errno EAGAIN
 * for "nothing yet" and 0 for the peer's close_notify or a close without one. */
static ssize_t tls_read_into(struct sock *s, size_t want)
{
    char small[READ_FIRST];
    int to_stack = read_to_stack(s->in, want);
    struct evbuffer_iovec v;
    if (to_stack) {
        v.iov_base = small;
        v.iov_len = want;
    } else if (evbuffer_reserve_space(s->in, (ev_ssize_t)want, &v, 1) != 1) {
        errno = ENOMEM;
        return -1;
    }
    if (v.iov_len > want)
        v.iov_len = want;
    ERR_clear_error();
    int r = SSL_read(s->ssl, v.iov_base, (int)v.iov_len);
    if (r > 0) {
        v.iov_len = (size_t)r;
        if (!to_stack)
            evbuffer_commit_space(s->in, &v, 1);
        else if (evbuffer_add(s->in, small, (size_t)r) < 0) {
            errno = ENOMEM;
            return -1;
        }
        return r;
    }
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_WRITE: /* it has to send first (a key update): when it can */
        s->read_wants_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL: /* errno 0: an EOF OpenSSL did not classify */
        r = errno == 0 ? 0 : -1;
        tls_broken(s);
        return r;
    default:
        tls_broken(s);
        errno = EPROTO;
        return -1;
    }
}

static ssize_t read_some(struct sock *s, size_t want)
{
    return s->ssl ? tls_read_into(s, want) : read_into(s->in, s->fd, want);
}

/* Read what the socket holds, up to MAX_IO and the input's limit: >0 bytes read, 0 EOF,
 * -1 with errno (EAGAIN: nothing yet). */
static ssize_t fill(struct sock *s)
{
    size_t budget = MAX_IO;
    if (s->read_hwm) {
        size_t len = evbuffer_get_length(s->in);
        budget = len < s->read_hwm ? s->read_hwm - len : READ_FIRST; /* READ_FIRST: see
                                                                        hold_reading() */
        if (budget > MAX_IO)
            budget = MAX_IO;
    }
    size_t want = budget < READ_FIRST ? budget : READ_FIRST;
    ssize_t r = read_some(s, want);
    if (r <= 0)
        return r;
    size_t got = (size_t)r;
    /* it filled what it had (or OpenSSL holds more records it read ahead): more is likely */
    while (((size_t)r == want || (s->ssl && SSL_has_pending(s->ssl))) && got < budget) {
        want = budget - got < READ_MORE ? budget - got : READ_MORE;
        r = read_some(s, want);
        if (r <= 0)
            break; /* EOF or an error: the next wakeup reads it */
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static const struct timeval *tv_of(struct timeval *tv, uint32_t ms, int has)
{
    if (!has)
        return NULL;
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* event_add and event_del of rev and wev, keeping rev_on/rev_timed and wev_on/wev_timed.
 * Re-adding an added event without a timeout keeps its timer: "timed" then stays. */
static void rev_add(struct sock *s, uint32_t ms, int has)
{
    struct timeval tv;
    event_add(&s->rev, tv_of(&tv, ms, has));
    s->rev_timed = has || (s->rev_on && s->rev_timed);
    s->rev_on = 1;
}

static void wev_add(struct sock *s)
{
    struct timeval tv;
    event_add(s->wev, tv_of(&tv, s->wto_ms, s->has_wto));
    s->wev_timed = s->has_wto || (s->wev_on && s->wev_timed);
    s->wev_on = 1;
}

static void rev_del(struct sock *s)
{
    event_del(&s->rev);
    s->rev_on = s->rev_timed = 0;
}

static void wev_del(struct sock *s)
{
    if (s->wev)
        event_del(s->wev);
    s->wev_on = s->wev_timed = 0;
}

static void arm_read(struct sock *s)
{
    rev_add(s, s->rto_ms, s->has_rto);
    /* bytes OpenSSL read ahead and holds are no event for epoll: run the read now */
    if (s->ssl && !s->handshaking && SSL_has_pending(s->ssl))
        event_active(&s->rev, EV_READ, 1);
}

/* The input drained: reading held at read_hwm goes on. */
static void input_changed(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct sock *s = arg;
    (void)info;
    if (s->held && evbuffer_get_length(in) < s->read_hwm) {
        s->held = 0;
        if (s->enabled & EV_READ)
            arm_read(s);
    }
}

static void hold_reading(struct sock *s)
{
    if (!s->hwm_cb && !(s->hwm_cb = evbuffer_add_cb(s->in, input_changed, s)))
        return; /* no memory for it: read on past the limit (fill() reads a little) */
    s->held = 1;
    rev_del(s);
}

static void handshake(struct sock *s);
static int arm_write(struct sock *s);

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct sock *s = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        sock_disable(s, EV_READ);
        rev_del(s); /* (a handshake's too) */
        if (s->on_event)
            s->on_event(s, SOCK_TIMEOUT | SOCK_READING, s->arg);
        return;
    }
    if (s->handshaking) {
        handshake(s);
        return;
    }
    if (s->write_wants_read) { /* an SSL_write waited for this */
        s->write_wants_read = 0;
        sock_flush(s);
    }
    if (s->read_hwm && evbuffer_get_length(s->in) >= s->read_hwm) {
        hold_reading(s); /* full already (its owner added to it): wait for it to drain */
        return;
    }
    ssize_t r = fill(s);
    if (s->read_wants_write && arm_write(s) < 0)
        s->read_wants_write = 0;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r <= 0) {
        sock_disable(s, EV_READ);
        if (s->on_event)
            s->on_event(s, (short)((r == 0 ? SOCK_EOF : SOCK_ERROR) | SOCK_READING), s->arg);
        return;
    }
    if (s->read_hwm && evbuffer_get_length(s->in) >= s->read_hwm)
        hold_reading(s);
    else if (s->ssl && SSL_has_pending(s->ssl))
        event_active(&s->rev, EV_READ, 1); /* records read ahead, past the budget: no
                                            * event for epoll, so read on next turn */
    if (s->on_read)
        s->on_read(s, s->arg);
}

/* ---- writing ---- */

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Wait for the socket to take more. -1: no memory for the write event. */
static int arm_write(struct sock *s)
{
    if (!s->wev && !(s->wev = event_new(s->base, s->fd, EV_WRITE | EV_PERSIST, on_writable, s)))
        return -1;
    wev_add(s);
    return 0;
}

static void stop_writing(struct sock *s)
{
    wev_del(s);
    s->enabled &= (short)~EV_WRITE;
}

/* SSL_write what the output holds, at most max bytes: bytes written, or -1 (errno EAGAIN:
 * the socket is full or the TLS layer waits to read). A small response's head and body go
 * in one record (one write) rather than one per buffer chain. */
static int tls_write_out(struct sock *s, size_t max)
{
    size_t done = 0, len;
    while ((len = evbuffer_get_length(s->out)) > 0 && done < max) {
        size_t n = len < TLS_RECORD ? len : TLS_RECORD;
        const unsigned char *p = evbuffer_pullup(s->out, (ev_ssize_t)n);
        if (!p) {
            errno = ENOMEM;
            return -1;
        }
        ERR_clear_error();
        int r = SSL_write(s->ssl, p, (int)n);
        if (r > 0) {
            evbuffer_drain(s->out, (size_t)r);
            done += (size_t)r;
            continue;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            s->write_wants_read = 1;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            break;
        }
        tls_broken(s);
        errno = EPIPE;
        return -1;
    }
    return done > 0 ? (int)done : len == 0 ? 0 : -1;
}

/* Up to max bytes of the output written: send() for one piece (a small response, a request
 * head: the usual case), writev() for several (at most WRITE_VECS at a time). */
static int plain_write_out(struct sock *s, size_t max)
{
    struct evbuffer_iovec v[WRITE_VECS];
    ev_ssize_t want = max > (size_t)EV_SSIZE_MAX ? -1 : (ev_ssize_t)max;
    int n = evbuffer_peek(s->out, want, NULL, v, WRITE_VECS);
    if (n > WRITE_VECS)
        n = WRITE_VECS;
    if (n <= 0)
        return 0;
    struct iovec iov[WRITE_VECS];
    size_t left = max;
    int used = 0;
    for (; used < n && left > 0; used++) {
        iov[used].iov_base = v[used].iov_base;
        iov[used].iov_len = v[used].iov_len < left ? v[used].iov_len : left;
        left -= iov[used].iov_len;
    }
    ssize_t r = used == 1 ? send(s->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                          : writev(s->fd, iov, used);
    if (r > 0)
        evbuffer_drain(s->out, (size_t)r);
    return (int)r;
}

static int write_out(struct sock *s, size_t max)
{
    return s->ssl ? tls_write_out(s, max) : plain_write_out(s, max);
}

/* ---- connecting and the TLS handshake ---- */

static void tell(struct sock *s, short what)
{
    if (s->on_event)
        s->on_event(s, what, s->arg);
}

/* A TLS handshake step (either side): on its end SOCK_CONNECTED, or SOCK_ERROR. */
static void handshake(struct sock *s)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        s->handshaking = 0;
        if ((s->enabled & EV_READ) && !s->held)
            arm_read(s); /* and what came behind the handshake, held inside OpenSSL */
        else
            rev_del(s);
        wev_del(s);
        s->enabled &= (short)~EV_WRITE;
        sock_flush(s); /* what the owner wrote meanwhile */
        tell(s, SOCK_CONNECTED);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { /* a handshake gets the write (or connect) timeout */
        rev_add(s, s->wto_ms, s->has_wto);
        wev_del(s);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE && arm_write(s) == 0) {
        rev_del(s);
        return;
    }
    tls_broken(s);
    s->handshaking = 0;
    sock_disable(s, EV_READ | EV_WRITE);
    tell(s, SOCK_ERROR | SOCK_READING);
}

/* The connect under way finished: tell how (over TLS, once the handshake is done). */
static void connected(struct sock *s)
{
    int err = s->conn_err;
    socklen_t el = sizeof err;
    if (!err && getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    s->connecting = 0;
    s->conn_err = 0;
    if (!err && s->ssl) {
        if (SSL_set_fd(s->ssl, s->fd) == 1) {
            s->handshaking = 1;
            handshake(s);
            return;
        }
        err = ENOMEM;
    }
    if (evbuffer_get_length(s->out) == 0)
        stop_writing(s);
    if (s->enabled & EV_READ)
        arm_read(s);
    errno = err; /* for the caller's log */
    tell(s, err ? SOCK_ERROR | SOCK_WRITING : SOCK_CONNECTED);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct sock *s = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        sock_disable(s, EV_WRITE);
        tell(s, SOCK_TIMEOUT | SOCK_WRITING);
        return;
    }
    if (s->connecting) {
        connected(s);
        return;
    }
    if (s->handshaking) {
        handshake(s);
        return;
    }
    if (s->read_wants_write) { /* an SSL_read waited for this: read on the next turn */
        s->read_wants_write = 0;
        event_active(&s->rev, EV_READ, 1);
    }
    int n = s->failed ? -1 : write_out(s, MAX_IO);
    if (n < 0 && (s->failed || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))) {
        sock_disable(s, EV_WRITE);
        tell(s, SOCK_ERROR | SOCK_WRITING);
        return;
    }
    size_t left = evbuffer_get_length(s->out);
    if (left == 0)
        stop_writing(s);
    if (n > 0 && left <= LOW_WM && s->on_write)
        s->on_write(s, s->arg);
}

/* ---- making and closing ---- */

int sock_plain(struct sock *s, struct event_base *base, int fd)
{
    *s = (struct sock){.base = base, .fd = -1};
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (!s->in || !s->out) {
        sock_close(s); /* fd is the caller's still */
        return -1;
    }
    s->fd = fd;
    if (fd >= 0)
        event_assign(&s->rev, base, fd, EV_READ | EV_PERSIST, on_readable, s);
    return 0;
}

int sock_tls(struct sock *s, SSL *ssl, int server)
{
    /* write whatever part of a record the socket takes, from a buffer that may move between
     * tries (evbuffer_pullup); read ahead: one read per wakeup, not a header and a record;
     * a peer that closes without close_notify is an EOF (as libevent's dirty shutdown) */
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_set_read_ahead(ssl, 1);
    if (server) {
        if (SSL_set_fd(ssl, s->fd) != 1)
            return -1;
        SSL_set_accept_state(ssl);
        s->handshaking = 1;
        rev_add(s, 0, 0); /* the client speaks first */
    } else {
        SSL_set_connect_state(ssl);
    }
    s->ssl = ssl;
    return 0;
}

int sock_connect(struct sock *s, const struct sockaddr *addr, socklen_t len)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, addr, len) < 0 && errno != EINPROGRESS) {
        if (errno != ECONNREFUSED) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        s->conn_err = ECONNREFUSED; /* told on the loop, as a connect that fails later */
    }
    s->fd = fd;
    event_assign(&s->rev, s->base, fd, EV_READ | EV_PERSIST, on_readable, s);
    if (arm_write(s) < 0) {
        close(fd);
        s->fd = -1;
        errno = ENOMEM;
        return -1;
    }
    s->connecting = 1;
    s->enabled |= EV_WRITE;
    if (s->conn_err)
        event_active(s->wev, EV_WRITE, 1);
    return 0;
}

void sock_close(struct sock *s)
{
    if (s->wev)
        event_free(s->wev);
    s->wev = NULL;
    s->wev_on = s->wev_timed = 0;
    if (s->ssl) {
        if (!s->tls_dead && !s->handshaking && !s->connecting)
            SSL_shutdown(s->ssl); /* a close_notify, if the socket takes it now */
        SSL_free(s->ssl);
        s->ssl = NULL;
        ERR_clear_error();
    }
    if (s->fd >= 0) {
        rev_del(s);
        close(s->fd);
        s->fd = -1;
    }
    if (s->hwm_cb)
        evbuffer_remove_cb_entry(s->in, s->hwm_cb);
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    s->in = s->out = NULL;
    s->hwm_cb = NULL;
}

void sock_setcb(struct sock *s, sock_data_cb on_read, sock_data_cb on_write,
                sock_event_cb on_event, void *arg)
{
    s->on_read = on_read;
    s->on_write = on_write;
    s->on_event = on_event;
    s->arg = arg;
}

/* ---- switches ---- */

int sock_handover(struct sock *s)
{
    s->has_rto = 0;
    if (s->fd < 0 || !s->rev_timed)
        return 0; /* no timer: no timeout can be waiting to run */
    event_remove_timer(&s->rev); /* a timeout not yet due never fires now */
    s->rev_timed = 0;
    /* with no timer left, EV_TIMEOUT here means it fired and its callback is queued */
    return event_pending(&s->rev, EV_TIMEOUT, NULL) ? -1 : 0;
}

void sock_enable(struct sock *s, short what)
{
    short add = (short)(what & ~s->enabled);
    s->enabled |= what;
    if (s->fd < 0 || s->connecting || s->handshaking)
        return; /* the handshake reads and writes as it needs, then arms what is enabled */
    if ((add & EV_READ) && !s->held)
        arm_read(s);
    if ((add & EV_WRITE) && evbuffer_get_length(s->out) > 0 && arm_write(s) < 0)
        shutdown(s->fd, SHUT_RDWR); /* no memory to wait: the read event sees it closed */
}

void sock_disable(struct sock *s, short what)
{
    s->enabled &= (short)~what;
    if (s->fd < 0 || s->connecting || s->handshaking)
        return;
    if (what & EV_READ)
        rev_del(s);
    if (what & EV_WRITE)
        wev_del(s);
}

short sock_enabled(const struct sock *s)
{
    return s->enabled;
}

void sock_set_timeouts(struct sock *s, const struct timeval *rd, const struct timeval *wr)
{
    s->has_rto = rd != NULL;
    s->has_wto = wr != NULL;
    s->rto_ms = rd ? (uint32_t)(rd->tv_sec * 1000 + rd->tv_usec / 1000) : 0;
    s->wto_ms = wr ? (uint32_t)(wr->tv_sec * 1000 + wr->tv_usec / 1000) : 0;
    if (s->fd < 0)
        return;
    /* re-adding a pending event with no timeout keeps its old one: remove it */
    if (s->rev_on) {
        if (rd)
            arm_read(s);
        else if (s->rev_timed) {
            event_remove_timer(&s->rev);
            s->rev_timed = 0;
        }
    }
    if (s->wev_on) {
        if (wr)
            arm_write(s);
        else if (s->wev_timed) {
            event_remove_timer(s->wev);
            s->wev_timed = 0;
        }
    }
}

void sock_set_read_max(struct sock *s, size_t max)
{
    s->read_hwm = (uint32_t)max;
}

int sock_fd(const struct sock *s)
{
    return s->fd;
}

/* Write-through: what the output holds leaves now, and the write event is armed only while
 * bytes remain (libevent's bufferevent arms and disarms it around every write: two
 * epoll_ctl calls each time, 20 per 64 KiB response as measured). */
void sock_flush(struct sock *s)
{
    if (s->connecting || s->handshaking || s->fd < 0 || s->failed)
        return; /* it is written once connected; a failure is told on the write event */
    if (evbuffer_get_length(s->out) > 0 && write_out(s, SIZE_MAX) < 0 && s->tls_dead)
        s->failed = 1; /* (a plain socket's error comes again on the write event) */
    if (evbuffer_get_length(s->out) == 0 && !s->failed) {
        if (s->enabled & EV_WRITE)
            stop_writing(s);
    } else if (!(s->enabled & EV_WRITE) || s->failed) {
        s->enabled |= EV_WRITE;
        if (arm_write(s) < 0)
            shutdown(s->fd, SHUT_RDWR); /* no memory to wait: the read event sees it closed */
        else if (s->failed)
            event_active(s->wev, EV_WRITE, 1);
    }
}
