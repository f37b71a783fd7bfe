/* conn: a client connection: accept (TLS or plain), its timer, its timeouts, closing with a
 * linger, the shutdown drain. Everything about HTTP is its codec's (h1.c); the codec is
 * called for reads, drains, events and the timer while the connection is OPEN. */
#include <sluice/conn.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include <sluice/h1.h>
#include <sluice/h2.h>
#include <sluice/runtime.h>
#include <sluice/stats.h>
#include <sluice/tls.h>
#include <sluice/worker.h>

#define LINGER_MS 2000
#define CLI_READ_WM (64 * 1024) /* a client's input held at most (more for larger heads) */

static const struct config *cfg_of(const struct conn *c)
{
    return c->rt->cfg;
}

static void timer_arm(struct conn *c, uint64_t now)
{
    struct timeval tv;
    ms_tv(&tv, (uint32_t)(c->deadline_ms > now ? c->deadline_ms - now : 0));
    evtimer_add(&c->timer, &tv);
    c->timer_at_ms = c->deadline_ms;
}

void conn_timer_ms(struct conn *c, uint32_t ms)
{
    uint64_t now = up_now_ms();
    c->deadline_ms = now + ms;
    if (c->timer_at_ms && c->timer_at_ms <= c->deadline_ms)
        return; /* it fires first and waits on */
    timer_arm(c, now);
}

void conn_timer_off(struct conn *c)
{
    c->deadline_ms = 0;
}

void conn_timeouts(struct conn *c, uint32_t read_ms)
{
    struct timeval rt, wt;
    ms_tv(&rt, read_ms);
    ms_tv(&wt, cfg_of(c)->proxy.send_timeout_ms);
    sock_set_timeouts(&c->sk, read_ms ? &rt : NULL, &wt);
}

void conn_flush(struct conn *c)
{
    sock_flush(&c->sk);
}

/* ---- lifetime ---- */

static void conn_destroy(struct conn *c)
{
    if (c->codec)
        c->codec->free(c); /* its requests first: they may log with the connection's peer */
    if (event_initialized(&c->timer))
        event_del(&c->timer);
    runtime_unref(c->rt);
    sock_close(&c->sk);
    struct worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    free(c);
    worker_conn_gone(w);
}

void conn_free(struct conn *c)
{
    if (c->busy) {
        c->dead = 1;
        return;
    }
    conn_destroy(c);
}

void conn_kill(struct conn *c)
{
    c->killed = 1;
    c->busy = 0;
    conn_destroy(c);
}

/* ---- closing ---- */

void conn_linger(struct conn *c)
{
    c->state = C_LINGER;
    if (c->tls) { /* no half-close under TLS: end on the next loop turn */
        sock_disable(&c->sk, EV_READ | EV_WRITE);
        conn_timer_ms(c, 0);
        return;
    }
    shutdown(sock_fd(&c->sk), SHUT_WR);
    sock_disable(&c->sk, EV_WRITE);
    sock_set_timeouts(&c->sk, NULL, NULL);
    sock_enable(&c->sk, EV_READ);
    conn_timer_ms(c, LINGER_MS);
}

void conn_close_after_flush(struct conn *c)
{
    c->state = C_CLOSING;
    sock_disable(&c->sk, EV_READ);
    conn_timer_off(c);
    conn_flush(c);
    if (evbuffer_get_length(sock_out(&c->sk)) == 0)
        conn_linger(c);
    else
        conn_timer_ms(c, cfg_of(c)->proxy.send_timeout_ms);
}

/* ---- callbacks: the connection's own states, the rest to the codec ---- */

/* TLS: the protocol ALPN chose (HTTP/1.1 unless it is h2). 0, or -1: c was freed. */
static int choose_protocol(struct conn *c)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    c->proto_known = 1;
    if (c->sk.ssl)
        SSL_get0_alpn_selected(c->sk.ssl, &p, &len);
    if (len == 2 && memcmp(p, "h2", 2) == 0 && h2_start(c) < 0) {
        conn_free(c);
        return -1;
    }
    return 0;
}

static void read_cb(struct sock *sk, void *arg)
{
    struct conn *c = arg;
    if (c->tls && !c->proto_known) {
        if (choose_protocol(c) < 0 || c->codec != &h1_codec)
            return; /* HTTP/2 has read what came */
    }
    if (c->state == C_OPEN) {
        c->codec->read(c);
        return;
    }
    struct evbuffer *in = sock_in(sk);
    evbuffer_drain(in, evbuffer_get_length(in)); /* lingering: read and drop */
}

static void write_cb(struct sock *sk, void *arg)
{
    struct conn *c = arg;
    if (c->state == C_OPEN) {
        c->codec->drained(c);
        return;
    }
    if (c->state == C_CLOSING && evbuffer_get_length(sock_out(sk)) == 0) {
        conn_timer_off(c);
        conn_linger(c);
    }
}

static void event_cb(struct sock *sk, short what, void *arg)
{
    struct conn *c = arg;
    (void)sk;
    if (what == SOCK_CONNECTED) { /* TLS handshake done */
        if (!c->proto_known)
            choose_protocol(c);
        return;
    }
    if (c->state == C_OPEN) {
        c->codec->event(c, what);
        return;
    }
    if (c->state == C_CLOSING && (what & SOCK_TIMEOUT))
        stats_add(&c->w->stats, STAT_client_aborts, 1); /* it never took the answer */
    conn_free(c);
}

/* Header deadline, keep-alive idle limit, send deadline on close, or linger end. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    c->timer_at_ms = 0;
    if (!c->deadline_ms)
        return; /* turned off since it was armed */
    uint64_t now = up_now_ms();
    if (now < c->deadline_ms) { /* armed for an earlier deadline: wait for this one */
        timer_arm(c, now);
        return;
    }
    c->deadline_ms = 0;
    if (c->state == C_OPEN) {
        c->codec->timer(c);
        return;
    }
    conn_free(c);
}

/* ---- accept ---- */

static void peer_name(struct conn *c, const struct sockaddr *peer)
{
    if (peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->peer, sizeof c->peer);
    else if (peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->peer,
                  sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "unix");
}

/* c's socket on fd (it owns fd from now on, even when this fails). 0, or -1. */
static int client_sock(struct conn *c, int fd)
{
    if (!c->tls)
        return sock_plain(&c->sk, c->w->base, fd) < 0 ? (close(fd), -1) : 0;
    if (sock_plain(&c->sk, c->w->base, fd) < 0) {
        close(fd);
        return -1;
    }
    SSL *ssl = tls_server_ssl(c->w->rt->tls);
    if (!ssl || sock_tls(&c->sk, ssl, 1) < 0) {
        if (ssl)
            SSL_free(ssl);
        return -1; /* (the socket goes with the connection) */
    }
    return 0;
}

void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, int peerlen, int tls)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    (void)peerlen;
    c->w = w;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    stats_add(&w->stats, STAT_connections, 1);
    peer_name(c, peer);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->rt = w->rt;
    runtime_ref(c->rt);
    c->tls = tls;
    c->sk.fd = -1;
    if (client_sock(c, fd) < 0) {
        conn_free(c);
        return;
    }
    evtimer_assign(&c->timer, w->base, timer_cb, c);
    c->codec = &h1_codec;
    sock_setcb(&c->sk, read_cb, write_cb, event_cb, c);
    /* input held per connection: enough for the largest head allowed, no more than
     * that (a pipelining client waits in its socket, not in sluice's memory) */
    size_t head = c->rt->lim.max_head + 4096;
    sock_set_read_max(&c->sk, head > CLI_READ_WM ? head : CLI_READ_WM);
    conn_timeouts(c, 0);
    c->state = C_OPEN;
    sock_enable(&c->sk, EV_READ); /* (a TLS handshake runs first, inside the socket) */
    conn_timer_ms(c, cfg_of(c)->proxy.client_header_timeout_ms);
}

void conn_drain_idle(struct worker *w)
{
    struct conn *c = w->conns;
    while (c) {
        struct conn *next = c->next;
        if (c->state == C_OPEN)
            c->codec->drain(c);
        c = next;
    }
}
