/* Unit tests for evbuf_head_span (include/sluice/bevio.h): the head's end is found where a
 * plain search finds the first CRLFCRLF, whether the input is one piece (searched in
 * memory) or many (libevent's search), whole or arriving a byte at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include <sluice/bevio.h>

#define CAP 1000

/* The first CRLFCRLF's end in s[0..n) (capped), or -1. */
static long reference(const char *s, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(s + i, "\r\n\r\n", 4) == 0)
            return (long)(i + 4 < CAP ? i + 4 : CAP);
    return -1;
}

static void noop(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    (void)arg;
}

/* s, as one piece or as one chain per byte */
static struct evbuffer *input(const char *s, size_t n, int pieces)
{
    struct evbuffer *b = evbuffer_new();
    if (!pieces)
        evbuffer_add(b, s, n);
    else
        for (size_t i = 0; i < n; i++)
            evbuffer_add_reference(b, s + i, 1, noop, NULL);
    return b;
}

static void check(const char *s, size_t n)
{
    long want = reference(s, n);
    for (int pieces = 0; pieces < 2; pieces++) {
        struct head_scan hs = {0, 0};
        struct evbuffer *b = input(s, n, pieces);
        size_t got = evbuf_head_span(b, CAP, &hs);
        if (want >= 0)
            assert_int_equal(got, (size_t)want);
        else
            assert_true(got == 0 || got == n); /* no end: wait, or give it all to the parser */
        evbuffer_free(b);
    }
    /* a byte at a time, the scan state kept between tries: the end is found at the byte
     * that completes it, not before */
    struct head_scan hs = {0, 0};
    struct evbuffer *b = evbuffer_new();
    for (size_t i = 0; i < n; i++) {
        evbuffer_add(b, s + i, 1);
        long w = reference(s, i + 1);
        size_t got = evbuf_head_span(b, CAP, &hs);
        if (w >= 0) {
            assert_int_equal(got, (size_t)w);
            break;
        }
        assert_true(got == 0 || got == i + 1);
    }
    evbuffer_free(b);
}

/* 200,000 random strings of CR, LF and 'a' (up to 40 bytes): every place and overlap a
 * blank line can have. */
static void test_head_end_as_a_plain_search_finds_it(void **state)
{
    (void)state;
    static const char alpha[] = "\r\na";
    srand(7);
    char s[40];
    for (int t = 0; t < 200000; t++) {
        size_t n = 1 + (size_t)rand() % sizeof s;
        for (size_t i = 0; i < n; i++)
            s[i] = alpha[rand() % 3];
        check(s, n);
    }
    const char *fixed[] = {"\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", "\r\r\n\r\n",
                           "\n\r\n\r\n", "a\r\n\r\r\n\r\n", "\r\n\n\r\n\r\n"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check(fixed[i], strlen(fixed[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_end_as_a_plain_search_finds_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
