/* Unit tests for sockets (include/sluice/sock.h) on a real libevent loop and real socket
 * pairs: reading, the input limit and its resume, EOF, write-through and the write
 * callback, timeouts (one removed must not fire), connects (done, refused), and TLS (a
 * handshake, records OpenSSL read ahead, close_notify). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <sluice/bevio.h>
#include <sluice/sock.h>

struct seen {
    int reads, writes, events;
    short last;
    int err;
};

static void on_read(struct sock *s, void *arg)
{
    (void)s;
    ((struct seen *)arg)->reads++;
}

static void on_write(struct sock *s, void *arg)
{
    (void)s;
    ((struct seen *)arg)->writes++;
}

static void on_event(struct sock *s, short what, void *arg)
{
    struct seen *n = arg;
    (void)s;
    n->events++;
    n->last = what;
    n->err = errno;
}

/* A sock on one end of a non-blocking stream socketpair; *peer is the other end. */
static void pair(struct event_base *base, struct sock *s, struct seen *n, int *peer)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(sock_plain(s, base, sv[0]), 0);
    sock_setcb(s, on_read, on_write, on_event, n);
    *peer = sv[1];
}

static void unpair(struct event_base *base, struct sock *s, int peer)
{
    close(peer);
    sock_close(s);
    event_base_free(base);
}

/* Run the loop for ms milliseconds. */
static void run_ms(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void test_reads_what_arrives_then_sees_eof(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct sock s;
    struct seen n = {0};
    int peer;
    pair(base, &s, &n, &peer);
    sock_enable(&s, EV_READ);
    assert_int_equal(write(peer, "hello", 5), 5);
    event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(n.reads, 1);
    assert_int_equal(evbuffer_get_length(sock_in(&s)), 5);
    shutdown(peer, SHUT_WR);
    event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(n.events, 1);
    assert_int_equal(n.last, SOCK_EOF | SOCK_READING);
    assert_false(sock_enabled(&s) & EV_READ);
    unpair(base, &s, peer);
}

static void test_reading_stops_at_its_limit_and_goes_on_when_drained(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct sock s;
    struct seen n = {0};
    int peer;
    pair(base, &s, &n, &peer);
    sock_set_read_max(&s, 8);
    sock_enable(&s, EV_READ);
    assert_int_equal(write(peer, "0123456789abcdefghij", 20), 20);
    run_ms(base, 30);
    assert_int_equal(evbuffer_get_length(sock_in(&s)), 8); /* held: 12 bytes wait */
    assert_int_equal(n.reads, 1);
    evbuffer_drain(sock_in(&s), 8);
    run_ms(base, 30);
    assert_int_equal(evbuffer_get_length(sock_in(&s)), 8);
    char b[9] = {0};
    evbuffer_copyout(sock_in(&s), b, 8);
    assert_string_equal(b, "89abcdef");
    evbuffer_drain(sock_in(&s), 4); /* below the limit again: the last 4 come */
    run_ms(base, 30);
    assert_int_equal(evbuffer_get_length(sock_in(&s)), 8);
    unpair(base, &s, peer);
}

static void test_flush_writes_through_and_a_large_output_calls_back_when_drained(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct sock s;
    struct seen n = {0};
    int peer;
    pair(base, &s, &n, &peer);
    evbuffer_add(sock_out(&s), "ping", 4);
    sock_flush(&s); /* no loop turn: it is in the socket now */
    char b[8];
    assert_int_equal(read(peer, b, sizeof b), 4);
    assert_null(s.wev); /* nothing ever waited to be written: no write event was made */
    size_t big = 4 * 1024 * 1024;
    char *blob = calloc(1, big);
    evbuffer_add(sock_out(&s), blob, big);
    sock_flush(&s);
    assert_true(evbuffer_get_length(sock_out(&s)) > 0); /* the socket took only a part */
    assert_true(sock_enabled(&s) & EV_WRITE);
    size_t got = 0;
    char *sink = malloc(65536);
    for (int i = 0; i < 100000 && got < big; i++) {
        ssize_t r = read(peer, sink, 65536);
        if (r > 0)
            got += (size_t)r;
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    assert_int_equal(got, big);
    assert_int_equal(evbuffer_get_length(sock_out(&s)), 0);
    assert_true(n.writes >= 1);
    assert_false(sock_enabled(&s) & EV_WRITE);
    free(sink);
    free(blob);
    unpair(base, &s, peer);
}

static void test_a_read_timeout_fires_and_a_removed_one_does_not(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct sock s;
    struct seen n = {0};
    int peer;
    pair(base, &s, &n, &peer);
    struct timeval t = {0, 20 * 1000};
    sock_set_timeouts(&s, &t, NULL);
    sock_enable(&s, EV_READ);
    run_ms(base, 100);
    assert_int_equal(n.events, 1);
    assert_int_equal(n.last, SOCK_TIMEOUT | SOCK_READING);
    sock_enable(&s, EV_READ);
    sock_set_timeouts(&s, NULL, NULL); /* while reading is armed with its timeout */
    run_ms(base, 100);
    assert_int_equal(n.events, 1);
    unpair(base, &s, peer);
}

/* A TCP port on 127.0.0.1 that is bound but does not listen: connects are refused. */
static int refusing_port(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &al), 0);
    return ntohs(a.sin_port);
}

static void test_connects_are_told_on_the_loop_done_or_refused(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int lfd;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    a.sin_port = htons((uint16_t)refusing_port(&lfd));
    struct sock s;
    struct seen n = {0};
    assert_int_equal(sock_plain(&s, base, -1), 0);
    sock_setcb(&s, on_read, on_write, on_event, &n);
    assert_int_equal(sock_connect(&s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(n.events, 0); /* not from inside the call */
    run_ms(base, 50);
    assert_int_equal(n.events, 1);
    assert_int_equal(n.last, SOCK_ERROR | SOCK_WRITING);
    assert_int_equal(n.err, ECONNREFUSED);
    sock_close(&s);

    assert_int_equal(listen(lfd, 4), 0);
    n = (struct seen){0};
    assert_int_equal(sock_plain(&s, base, -1), 0);
    sock_setcb(&s, on_read, on_write, on_event, &n);
    assert_int_equal(sock_connect(&s, (struct sockaddr *)&a, sizeof a), 0);
    run_ms(base, 50);
    assert_int_equal(n.events, 1);
    assert_int_equal(n.last, SOCK_CONNECTED);
    assert_false(sock_enabled(&s) & EV_WRITE);
    sock_close(&s);
    close(lfd);
    event_base_free(base);
}


/* A server context with a fresh self-signed P-256 certificate. */
static SSL_CTX *server_ctx(void)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(pk);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, nm);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, pk), 1);
    X509_free(x);
    EVP_PKEY_free(pk);
    return ctx;
}

static void test_tls_reads_every_record_that_arrived_together_and_closes_with_notify(
    void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    SSL_CTX *sctx = server_ctx(), *cctx = SSL_CTX_new(TLS_client_method());
    struct sock s;
    struct seen n = {0};
    int peer;
    pair(base, &s, &n, &peer);
    assert_int_equal(sock_tls(&s, SSL_new(sctx), 1), 0);
    sock_enable(&s, EV_READ);
    SSL *c = SSL_new(cctx);
    SSL_set_fd(c, peer);
    SSL_set_connect_state(c);
    int done = 0;
    for (int i = 0; i < 1000 && !(done == 1 && n.events == 1); i++) {
        if (done != 1)
            done = SSL_do_handshake(c);
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    assert_int_equal(done, 1);
    assert_int_equal(n.events, 1);
    assert_int_equal(n.last, SOCK_CONNECTED);
    /* three records in the socket before sluice reads: OpenSSL reads them all ahead at
     * once, and epoll has nothing more to say about the two it holds */
    assert_int_equal(SSL_write(c, "one", 3), 3);
    assert_int_equal(SSL_write(c, "two", 3), 3);
    assert_int_equal(SSL_write(c, "three", 5), 5);
    run_ms(base, 50);
    char b[16] = {0};
    assert_int_equal(evbuffer_get_length(sock_in(&s)), 11);
    evbuffer_copyout(sock_in(&s), b, 11);
    assert_string_equal(b, "onetwothree");
    evbuffer_add(sock_out(&s), "pong", 4);
    sock_flush(&s);
    memset(b, 0, sizeof b);
    int r = -1;
    for (int i = 0; i < 1000 && r <= 0; i++)
        r = SSL_read(c, b, sizeof b - 1);
    assert_int_equal(r, 4);
    assert_string_equal(b, "pong");
    sock_close(&s); /* a close_notify: the client sees a clean end, not a cut */
    assert_int_equal(SSL_read(c, b, sizeof b), 0);
    assert_int_equal(SSL_get_error(c, 0), SSL_ERROR_ZERO_RETURN);
    SSL_free(c);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    close(peer);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_what_arrives_then_sees_eof),
        cmocka_unit_test(test_reading_stops_at_its_limit_and_goes_on_when_drained),
        cmocka_unit_test(test_flush_writes_through_and_a_large_output_calls_back_when_drained),
        cmocka_unit_test(test_a_read_timeout_fires_and_a_removed_one_does_not),
        cmocka_unit_test(test_connects_are_told_on_the_loop_done_or_refused),
        cmocka_unit_test(test_tls_reads_every_record_that_arrived_together_and_closes_with_notify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
