/* libFuzzer target: whole client connections (HTTP/1.1, and HTTP/2 by h2c prior knowledge
 * when the input opens with the client preface), driven through a real worker loop. A client
 * (one end of a socketpair handed to conn_accept) sends the input's first part, often
 * several pipelined requests; a fake keep-alive backend on 127.0.0.1 (on the same loop)
 * answers each request head it receives with the next response of the input's second part.
 * The loop runs a bounded number of turns after each step.
 *
 * Input: client bytes, then the separator "\n~~\n", then backend responses separated by
 * "\n~~\n" (a missing one closes the backend connection).
 * Invariants: no crash, leak or sanitizer report; what the
 * client receives is a sequence of responses that each begin with "HTTP/1.1 " (sluice
 * never passes a backend's bytes through unframed); every session and backend connection
 * is gone once the client has closed and sluice was stopped (conn_kill). */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include <sluice/log.h>
#include <sluice/meter.h>
#include <sluice/queue.h>
#include <sluice/runtime.h>
#include <sluice/conn.h>
#include <sluice/worker.h>

#include "fuzz_common.h"

#define SEP "\n~~\n"
#define TURNS 40 /* loop turns per settle(): a request's way through takes a handful */

static struct proxy px;
static struct worker *w;
static struct evconnlistener *backend;

/* The backend's script for the current input. */
static const uint8_t *script;
static size_t script_len, script_pos;

/* The next response of the script (NULL: none left), advancing past it. */
static const uint8_t *next_response(size_t *len)
{
    if (script_pos > script_len || !script)
        return NULL;
    const uint8_t *p = script + script_pos;
    size_t left = script_len - script_pos;
    const uint8_t *sep = memmem(p, left, SEP, 4);
    *len = sep ? (size_t)(sep - p) : left;
    script_pos += *len + 4;
    return p;
}

static void backend_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) { /* each request head (bodies are read as heads' noise: fine for a fake) */
        struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (e.pos < 0)
            return;
        evbuffer_drain(in, (size_t)e.pos + 4);
        size_t n;
        const uint8_t *r = next_response(&n);
        if (!r) {
            bufferevent_free(bev);
            return;
        }
        bufferevent_write(bev, r, n);
    }
}

static void backend_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void backend_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    (void)arg;
    struct bufferevent *bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    FUZZ_CHECK(bev, "backend bufferevent");
    bufferevent_setcb(bev, backend_read, NULL, backend_event, NULL);
    bufferevent_enable(bev, EV_READ);
}

/* A config naming the fake backend, in /dev/shm (or /tmp). */
static void write_config(const char *path, int port)
{
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "[proxy]\nlisten = 127.0.0.1:1\nthreads = 1\nclient_header_timeout = 1s\n"
               "keepalive_timeout = 1s\nmax_body_size = 64k\nrequest_buffer = 4k\nh2c = yes\n"
               "error_log = /dev/null\n"
               "[backend a]\naddress = 127.0.0.1:%d\nworkers = 2\nread_timeout = 1s\n"
               "max_fails = 0\n"
               "[tenants]\nkey = header:X-Tenant\n[tenant t]\nrate = 1\nburst = 2\n"
               "[route h]\nprefix = /health\nbypass = yes\n",
            port);
    fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    FUZZ_CHECK(log_open("/dev/null", NULL, LOG_DEBUG) == 0, "log_open"); /* every line built */
    static struct worker worker;
    w = &worker;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/sluice-fuzz-session-%ld.ini",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (long)getpid());
    /* the backend's port first: bind, learn it, write the config */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t sl = sizeof sin;
    FUZZ_CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
                   getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0 && listen(lfd, 64) == 0,
               "backend listener: %s", strerror(errno));
    evutil_make_socket_nonblocking(lfd);
    write_config(path, ntohs(sin.sin_port));
    struct runtime *rt = runtime_load(path, NULL, err, sizeof err);
    FUZZ_CHECK(rt, "config: %s", err);
    unlink(path);
    atomic_store(&px.rt, rt);
    px.nworkers = 1;
    queue_init(&px.queue);
    px.meter = meter_new(1);
    FUZZ_CHECK(px.meter && meter_attach(px.meter, rt) == 0, "meter");
    px.workers = w;
    FUZZ_CHECK(worker_init(w, &px, 0, err, sizeof err) == 0, "worker_init: %s", err);
    FUZZ_CHECK(worker_adopt(w) == 0, "worker_adopt");
    backend = evconnlistener_new(w->base, backend_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, lfd);
    FUZZ_CHECK(backend, "evconnlistener_new");
    return 0;
}

/* Run the loop for TURNS turns without waiting: whatever is ready moves on. */
static void settle(void)
{
    for (int i = 0; i < TURNS; i++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
}

/* Read what the client has been sent so far (non-blocking). */
static void client_take(int fd, struct evbuffer *got)
{
    char buf[65536];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        evbuffer_add(got, buf, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    const uint8_t *sep = memmem(data, len, SEP, 4);
    size_t clen = sep ? (size_t)(sep - data) : len;
    script = sep ? sep + 4 : NULL;
    script_len = sep ? len - clen - 4 : 0;
    script_pos = 0;
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    evutil_make_socket_nonblocking(sv[0]);
    evutil_make_socket_nonblocking(sv[1]);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002)};
    conn_accept(w, sv[1], (struct sockaddr *)&peer, sizeof peer, 0);
    struct evbuffer *got = evbuffer_new();
    size_t off = 0;
    while (off < clen) { /* in pieces, as a socket buffer allows */
        ssize_t n = send(sv[0], data + off, clen - off, MSG_DONTWAIT);
        if (n > 0)
            off += (size_t)n;
        settle();
        client_take(sv[0], got);
        if (n <= 0 && errno != EAGAIN)
            break;
    }
    settle();
    client_take(sv[0], got);
    shutdown(sv[0], SHUT_WR);
    settle();
    client_take(sv[0], got);
    close(sv[0]);
    settle();
    size_t glen = evbuffer_get_length(got);
    if (getenv("FUZZ_SESSION_SHOW")) /* to see what a saved input does */
        fprintf(stderr, "client got %zu bytes:\n%.*s\n", glen, (int)glen,
                (const char *)evbuffer_pullup(got, -1));
    /* HTTP/2 (h2c: the input opens with the client preface): the server's first frame is
     * its SETTINGS (type 4, stream 0); otherwise HTTP/1.1 responses */
    int h2 = clen >= 24 && memcmp(data, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) == 0;
    if (glen > 0 && h2) {
        const unsigned char *g = evbuffer_pullup(got, 9 < glen ? 9 : (ssize_t)glen);
        FUZZ_CHECK(glen >= 9 && g[3] == 4 && g[5] == 0 && g[6] == 0 && g[7] == 0 && g[8] == 0,
                   "the HTTP/2 client did not get SETTINGS first (%zu bytes)", glen);
    } else if (glen > 0) {
        const char *g = (const char *)evbuffer_pullup(got, 9 < glen ? 9 : (ssize_t)glen);
        FUZZ_CHECK(memcmp(g, "HTTP/1.1 ", glen < 9 ? glen : 9) == 0,
                   "the client got bytes that are not a response: %.40s", g);
    }
    evbuffer_free(got);
    /* what shutdown does: every session that is left is closed, then the pools */
    while (w->conns)
        conn_kill(w->conns);
    while (worker_pool_evict(w))
        ;
    settle();
    FUZZ_CHECK(w->nconns == 0, "%d connections left", w->nconns);
    return 0;
}
