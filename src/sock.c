/* sock: plain TCP streams on raw libevent events and evbuffers, and TLS ones through
 * libevent's OpenSSL bufferevent, behind one set of calls (sock.h). */
#include <sluice/sock.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

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

/* ---- TLS: the bufferevent's callbacks, passed on ---- */

static void tls_read(struct bufferevent *bev, void *arg)
{
    struct sock *s = arg;
    (void)bev;
    if (s->on_read)
        s->on_read(s, s->arg);
}

static void tls_write(struct bufferevent *bev, void *arg)
{
    struct sock *s = arg;
    (void)bev;
    if (s->on_write)
        s->on_write(s, s->arg);
}

static void tls_event(struct bufferevent *bev, short what, void *arg)
{
    struct sock *s = arg;
    (void)bev;
    if (s->on_event)
        s->on_event(s, what, s->arg);
}

void sock_tls(struct sock *s, struct bufferevent *bev)
{
    *s = (struct sock){.bev = bev, .fd = -1};
    s->in = bufferevent_get_input(bev);
    s->out = bufferevent_get_output(bev);
    bufferevent_setcb(bev, tls_read, tls_write, tls_event, s);
    bufferevent_setwatermark(bev, EV_WRITE, LOW_WM, 0);
    bufferevent_set_max_single_read(bev, MAX_IO);
    bufferevent_set_max_single_write(bev, MAX_IO);
}

/* ---- plain: reading ---- */

/* One readv into up to want bytes of fresh space at the input's end. */
static ssize_t read_into(struct evbuffer *in, int fd, size_t want)
{
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
    ssize_t r = readv(fd, iov, n);
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
    ssize_t r = read_into(s->in, s->fd, want);
    if (r <= 0)
        return r;
    size_t got = (size_t)r;
    while ((size_t)r == want && got < budget) { /* it filled what it had: more is likely */
        want = budget - got < READ_MORE ? budget - got : READ_MORE;
        r = read_into(s->in, s->fd, want);
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

static void arm_read(struct sock *s)
{
    struct timeval tv;
    event_add(&s->rev, tv_of(&tv, s->rto_ms, s->has_rto));
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
    event_del(&s->rev);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct sock *s = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        sock_disable(s, EV_READ);
        if (s->on_event)
            s->on_event(s, SOCK_TIMEOUT | SOCK_READING, s->arg);
        return;
    }
    if (s->read_hwm && evbuffer_get_length(s->in) >= s->read_hwm) {
        hold_reading(s); /* full already (its owner added to it): wait for it to drain */
        return;
    }
    ssize_t r = fill(s);
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
    if (s->on_read)
        s->on_read(s, s->arg);
}

/* ---- plain: writing and connecting ---- */

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Wait for the socket to take more. -1: no memory for the write event. */
static int arm_write(struct sock *s)
{
    if (!s->wev && !(s->wev = event_new(s->base, s->fd, EV_WRITE | EV_PERSIST, on_writable, s)))
        return -1;
    struct timeval tv;
    event_add(s->wev, tv_of(&tv, s->wto_ms, s->has_wto));
    return 0;
}

static void stop_writing(struct sock *s)
{
    if (s->wev)
        event_del(s->wev);
    s->enabled &= (short)~EV_WRITE;
}

/* The connect under way finished: tell how. */
static void connected(struct sock *s)
{
    int err = s->conn_err;
    socklen_t el = sizeof err;
    if (!err && getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    s->connecting = 0;
    s->conn_err = 0;
    if (evbuffer_get_length(s->out) == 0)
        stop_writing(s);
    if (s->enabled & EV_READ)
        arm_read(s);
    errno = err; /* for the caller's log */
    if (s->on_event)
        s->on_event(s, err ? SOCK_ERROR | SOCK_WRITING : SOCK_CONNECTED, s->arg);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct sock *s = arg;
    if (what & EV_TIMEOUT) {
        sock_disable(s, EV_WRITE);
        if (s->on_event)
            s->on_event(s, SOCK_TIMEOUT | SOCK_WRITING, s->arg);
        return;
    }
    if (s->connecting) {
        connected(s);
        return;
    }
    int n = evbuffer_write_atmost(s->out, fd, MAX_IO);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        sock_disable(s, EV_WRITE);
        if (s->on_event)
            s->on_event(s, SOCK_ERROR | SOCK_WRITING, s->arg);
        return;
    }
    size_t left = evbuffer_get_length(s->out);
    if (left == 0)
        stop_writing(s);
    if (n > 0 && left <= LOW_WM && s->on_write)
        s->on_write(s, s->arg);
}


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

int sock_connect(struct sock *s, const struct sockaddr *addr, socklen_t len)
{
    if (s->bev)
        return bufferevent_socket_connect(s->bev, (struct sockaddr *)addr, (int)len);
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
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
        return;
    }
    if (s->wev)
        event_free(s->wev);
    s->wev = NULL;
    if (s->fd >= 0) {
        event_del(&s->rev);
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
    if (s->bev || s->fd < 0) {
        sock_disable(s, EV_READ);
        sock_set_timeouts(s, NULL, NULL);
        return 0;
    }
    s->has_rto = 0;
    event_remove_timer(&s->rev); /* a timeout not yet due never fires now */
    /* with no timer left, EV_TIMEOUT here means it fired and its callback is queued */
    return event_pending(&s->rev, EV_TIMEOUT, NULL) ? -1 : 0;
}

void sock_enable(struct sock *s, short what)
{
    if (s->bev) {
        bufferevent_enable(s->bev, what);
        return;
    }
    short add = (short)(what & ~s->enabled);
    s->enabled |= what;
    if (s->fd < 0)
        return;
    if ((add & EV_READ) && !s->held && !s->connecting)
        arm_read(s);
    if ((add & EV_WRITE) && !s->connecting && evbuffer_get_length(s->out) > 0 &&
        arm_write(s) < 0)
        shutdown(s->fd, SHUT_RDWR); /* no memory to wait: the read event sees it closed */
}

void sock_disable(struct sock *s, short what)
{
    if (s->bev) {
        bufferevent_disable(s->bev, what);
        return;
    }
    s->enabled &= (short)~what;
    if (s->fd < 0)
        return;
    if (what & EV_READ)
        event_del(&s->rev);
    if ((what & EV_WRITE) && !s->connecting && s->wev)
        event_del(s->wev);
}

short sock_enabled(const struct sock *s)
{
    return s->bev ? bufferevent_get_enabled(s->bev) : s->enabled;
}

void sock_set_timeouts(struct sock *s, const struct timeval *rd, const struct timeval *wr)
{
    if (s->bev) {
        bufferevent_set_timeouts(s->bev, rd, wr);
        return;
    }
    s->has_rto = rd != NULL;
    s->has_wto = wr != NULL;
    s->rto_ms = rd ? (uint32_t)(rd->tv_sec * 1000 + rd->tv_usec / 1000) : 0;
    s->wto_ms = wr ? (uint32_t)(wr->tv_sec * 1000 + wr->tv_usec / 1000) : 0;
    if (s->fd < 0)
        return;
    /* re-adding a pending event with no timeout keeps its old one: remove it */
    if (event_pending(&s->rev, EV_READ, NULL)) {
        if (rd)
            arm_read(s);
        else
            event_remove_timer(&s->rev);
    }
    if (s->wev && event_pending(s->wev, EV_WRITE, NULL)) {
        if (wr)
            arm_write(s);
        else
            event_remove_timer(s->wev);
    }
}

void sock_set_read_max(struct sock *s, size_t max)
{
    if (s->bev) {
        bufferevent_setwatermark(s->bev, EV_READ, 0, max);
        return;
    }
    s->read_hwm = (uint32_t)max;
}

int sock_fd(const struct sock *s)
{
    return s->bev ? (int)bufferevent_getfd(s->bev) : s->fd;
}

/* Write-through: what the output holds leaves now, and the write event is armed only while
 * bytes remain (libevent's bufferevent arms and disarms it around every write: two
 * epoll_ctl calls each time, 20 per 64 KiB response as measured). */
void sock_flush(struct sock *s)
{
    if (s->bev) {
        /* libevent's TLS bufferevent makes one TLS record (and one write) per buffer chain:
         * join a small response's head and body so they leave in one record and one write */
        size_t len = evbuffer_get_length(s->out);
        if (len > 0 && len <= 16384)
            evbuffer_pullup(s->out, -1);
        return;
    }
    if (s->connecting || s->fd < 0)
        return; /* it is written once connected */
    if (evbuffer_get_length(s->out) > 0)
        evbuffer_write_atmost(s->out, s->fd, -1); /* errors surface on the write event */
    if (evbuffer_get_length(s->out) == 0) {
        if (s->enabled & EV_WRITE)
            stop_writing(s);
    } else if (!(s->enabled & EV_WRITE)) {
        s->enabled |= EV_WRITE;
        if (arm_write(s) < 0)
            shutdown(s->fd, SHUT_RDWR); /* no memory to wait: the read event sees it closed */
    }
}
