/* bevio: write-through flushing and larger reads on libevent bufferevents (bevio.h). */
#include <sluice/bevio.h>

#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define READ_MORE (60 * 1024) /* below glibc's mmap threshold: no mmap per read */

/* Write-through: send what bev's output holds now, and keep the write event armed only
 * while bytes remain. libevent arms and disarms it around every write, two epoll_ctl
 * calls each time; measured at 20 epoll_ctl per 64 KiB response before this. TLS
 * bufferevents keep libevent's own scheduling. */
void bev_flush_now(struct bufferevent *bev, int tls)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (tls) {
        /* libevent's TLS bufferevent makes one TLS record (and one write) per buffer chain:
         * join a small response's head and body so they leave in one record and one write */
        size_t len = evbuffer_get_length(out);
        if (len > 0 && len <= 16384)
            evbuffer_pullup(out, -1); /* (its output is not frozen, unlike a socket's) */
        return;
    }
    if (evbuffer_get_length(out) > 0) {
        /* bufferevents freeze their output's start so that only they drain it: thaw it
         * for this one write. Errors surface on the write event armed below. */
        evbuffer_unfreeze(out, 1);
        evbuffer_write(out, bufferevent_getfd(bev));
        evbuffer_freeze(out, 1);
    }
    if (evbuffer_get_length(out) == 0)
        bufferevent_disable(bev, EV_WRITE);
    else
        bufferevent_enable(bev, EV_WRITE);
}

/* libevent 2.1 reads at most 4 KiB per call (EVBUFFER_MAX_READ), one readv and one
 * FIONREAD each: 32 syscalls for a 64 KiB body. When a read filled those 4 KiB, take what
 * else the socket holds in one readv. EOF and errors are left for libevent's next read. */
void bev_read_more(struct bufferevent *bev, int tls)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (tls || len == 0 || len % 4096 != 0)
        return;
    struct evbuffer_iovec v[2];
    evbuffer_unfreeze(in, 0); /* bufferevents freeze their input's end: thaw it for this */
    int n = evbuffer_reserve_space(in, READ_MORE, v, 2);
    if (n > 0) {
        struct iovec iov[2];
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        ssize_t r = readv(bufferevent_getfd(bev), iov, n);
        size_t left = r > 0 ? (size_t)r : 0;
        int used = 0;
        for (int i = 0; i < n && left > 0; i++, used++) {
            if (v[i].iov_len > left)
                v[i].iov_len = left;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(in, v, used);
    }
    evbuffer_freeze(in, 0);
}

/* How many bytes of in to give the head parser now, 0 to wait for more: through the blank
 * line when it is there (a body behind the head is not copied); otherwise all of it up to
 * cap, so that bare LFs and over-long heads are found before the head ends, but only once
 * the input has doubled since the last try. Each byte is searched once and parsing costs
 * O(n) in all, however the head is cut into reads (one byte per write was O(n^2)). */
size_t evbuf_head_span(struct evbuffer *in, size_t cap, struct head_scan *hs)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return 0;
    if (hs->searched > len) /* not this input's (a new connection): start over */
        *hs = (struct head_scan){0, 0};
    struct evbuffer_ptr from;
    evbuffer_ptr_set(in, &from, hs->searched > 3 ? hs->searched - 3 : 0, EVBUFFER_PTR_SET);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, &from);
    if (end.pos >= 0)
        return (size_t)end.pos + 4 < cap ? (size_t)end.pos + 4 : cap;
    hs->searched = len;
    if (len < cap && hs->parsed && len < 2 * hs->parsed)
        return 0;
    hs->parsed = len;
    return len < cap ? len : cap;
}
