/* Unit tests for the head writer (include/sluice/headw.h): what it writes is exactly the
 * pieces in order, whether they fit its buffer, fill it, or are longer than it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include <sluice/headw.h>

static char *contents(struct evbuffer *b, size_t *len)
{
    *len = evbuffer_get_length(b);
    char *s = malloc(*len + 1);
    evbuffer_copyout(b, s, *len);
    s[*len] = 0;
    return s;
}

static void test_a_short_head(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "before|", 7); /* what the output held stays first */
    struct headw h;
    headw_init(&h, b);
    headw_add(&h, "HTTP/1.1 ", 9);
    headw_u64(&h, 200);
    headw_str(&h, " OK\r\n");
    headw_field(&h, "Content-Length", 14, "0", 1);
    headw_add(&h, "X: ", 3);
    headw_u64(&h, 0);
    headw_add(&h, " ", 1);
    headw_u64(&h, UINT64_MAX);
    headw_add(&h, "\r\n\r\n", 4);
    assert_int_equal(evbuffer_get_length(b), 7); /* nothing before the end */
    const char *want = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: 0 18446744073709551615\r\n\r\n";
    assert_int_equal(headw_end(&h), strlen(want));
    size_t n;
    char *got = contents(b, &n);
    assert_string_equal(got, "before|HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                             "X: 0 18446744073709551615\r\n\r\n");
    free(got);
    evbuffer_free(b);
}

/* Pieces that fill the buffer many times, and values longer than it, keep their order. */
static void test_long_heads_keep_their_order(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    struct headw h;
    headw_init(&h, b);
    static char big[3 * HEADW_SIZE + 7], want[8 * HEADW_SIZE];
    memset(big, 'v', sizeof big);
    size_t w = 0;
    for (int i = 0; i < 300; i++) { /* ~9 KB of short fields */
        char name[16];
        int nl = snprintf(name, sizeof name, "F%d", i);
        headw_field(&h, name, (size_t)nl, "abc", 3);
        w += (size_t)sprintf(want + w, "F%d: abc\r\n", i);
        if (i == 100) { /* a value longer than the buffer, in the middle */
            headw_field(&h, "Big", 3, big, sizeof big);
            memcpy(want + w, "Big: ", 5);
            memcpy(want + w + 5, big, sizeof big);
            memcpy(want + w + 5 + sizeof big, "\r\n", 2);
            w += 5 + sizeof big + 2;
        }
    }
    assert_int_equal(headw_end(&h), w);
    size_t n;
    char *got = contents(b, &n);
    assert_int_equal(n, w);
    assert_memory_equal(got, want, w);
    free(got);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_short_head),
        cmocka_unit_test(test_long_heads_keep_their_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
