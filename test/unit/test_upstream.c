/* Unit tests for the least-connections balancer and passive health (include/sluice/upstream.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include <sluice/config.h>
#include <sluice/upstream.h>

#define MAXB 8
#define BASE_PORT 18080
#define T0 1000000ULL /* a "now" well clear of 0, which means "never down" */

/* One balancer built from up to MAXB backend configs. */
struct fx {
    struct backend_conf conf[MAXB];
    char names[MAXB][16];
    char addrs[MAXB][32];
    int n;
    int started;
    struct upstream up;
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    if (f->started)
        up_free(&f->up);
    free(f);
    return 0;
}

/* Add a backend b<i> at 127.0.0.1:BASE_PORT+i, every field set explicitly. */
static void fx_add(struct fx *f, int weight, int max_fails, uint32_t fail_timeout_ms)
{
    int i = f->n++;
    struct backend_conf *c = &f->conf[i];
    assert_true(i < MAXB);
    snprintf(f->names[i], sizeof f->names[i], "b%d", i);
    snprintf(f->addrs[i], sizeof f->addrs[i], "127.0.0.1:%d", BASE_PORT + i);
    memset(c, 0, sizeof *c);
    c->name = f->names[i];
    c->address = f->addrs[i];
    c->weight = weight;
    c->workers = 0;
    c->max_fails = max_fails;
    c->fail_timeout_ms = fail_timeout_ms;
    c->connect_timeout_ms = 5000;
    c->read_timeout_ms = 60000;
    c->keepalive = 32;
    c->idle_timeout_ms = 1000;
    c->line = 10 * (i + 1);
}

/* n identical backends. */
static void fx_add_n(struct fx *f, int n, int weight, int max_fails, uint32_t fail_timeout_ms)
{
    int i;
    for (i = 0; i < n; i++)
        fx_add(f, weight, max_fails, fail_timeout_ms);
}

static struct upstream *fx_start(struct fx *f)
{
    char err[256] = "";
    if (up_init(&f->up, f->conf, f->n, NULL, err, sizeof err) != 0)
        fail_msg("up_init failed: %s", err);
    f->started = 1;
    return &f->up;
}

static int inflight(const struct upstream *u, int i)
{
    return atomic_load(&u->b[i].st->inflight);
}

static void set_inflight(struct upstream *u, int i, int v)
{
    atomic_store(&u->b[i].st->inflight, v);
}

/* Pick and fail unless the winner is backend `want`. */
static void pick_is(struct upstream *u, const struct backend *avoid, uint64_t now, int want)
{
    struct backend *b = up_pick(u, avoid, now);
    if (b == NULL)
        fail_msg("up_pick returned NULL, want b%d", want);
    if (b->index != want)
        fail_msg("up_pick chose b%d (inflight %d), want b%d (inflight %d)", b->index,
                 inflight(u, b->index), want, inflight(u, want));
}

/* Fail b `times` times, `gap` ms apart from `start`. */
static void fail_n(struct backend *b, int times, uint64_t start, uint64_t gap)
{
    int i;
    for (i = 0; i < times; i++)
        up_fail(b, start + (uint64_t)i * gap);
}

/* ------------------------------------------------------------------ tests */

static void test_init_builds_table(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    int i;
    fx_add_n(f, 3, 1, 1, 10000);
    u = fx_start(f);
    assert_int_equal(u->n, 3);
    assert_non_null(u->b);
    for (i = 0; i < 3; i++) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&u->b[i].addr;
        assert_int_equal(u->b[i].index, i);
        assert_ptr_equal(u->b[i].conf, &f->conf[i]);
        assert_int_equal(sin->sin_family, AF_INET);
        assert_int_equal(ntohs(sin->sin_port), BASE_PORT + i);
        assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
        assert_int_equal(u->b[i].addrlen, sizeof(struct sockaddr_in));
        assert_int_equal(inflight(u, i), 0);
        assert_true(up_is_up(&u->b[i], T0));
    }
}

static void test_init_rejects_address_without_port(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    fx_add(f, 1, 1, 10000);
    snprintf(f->addrs[0], sizeof f->addrs[0], "127.0.0.1");
    if (up_init(&f->up, f->conf, f->n, NULL, err, sizeof err) == 0) {
        f->started = 1;
        fail_msg("up_init accepted address \"127.0.0.1\" (no port)");
    }
    assert_true(err[0] != '\0');
}

static void test_pick_lowest_inflight(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add_n(f, 3, 1, 1, 10000);
    u = fx_start(f);
    set_inflight(u, 0, 3);
    set_inflight(u, 1, 1);
    set_inflight(u, 2, 2);
    pick_is(u, NULL, T0, 1);
    set_inflight(u, 0, 0);
    pick_is(u, NULL, T0, 0);
    set_inflight(u, 0, 9);
    set_inflight(u, 1, 9);
    pick_is(u, NULL, T0, 2);
}

static void test_pick_and_release_count_inflight(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    struct backend *a, *b, *c;
    fx_add(f, 1, 1, 10000);
    u = fx_start(f);
    a = up_pick(u, NULL, T0);
    assert_ptr_equal(a, &u->b[0]);
    assert_int_equal(inflight(u, 0), 1);
    b = up_pick(u, NULL, T0);
    c = up_pick(u, NULL, T0);
    assert_ptr_equal(b, a);
    assert_ptr_equal(c, a);
    assert_int_equal(inflight(u, 0), 3);
    up_release(a);
    assert_int_equal(inflight(u, 0), 2);
    up_release(b);
    up_release(c);
    assert_int_equal(inflight(u, 0), 0);
}

/* Lowest inflight/weight wins: 2/3 < 1/1, but 4/3 > 1/1. */
static void test_weights(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add(f, 3, 1, 10000);
    fx_add(f, 1, 1, 10000);
    u = fx_start(f);
    set_inflight(u, 0, 2);
    set_inflight(u, 1, 1);
    pick_is(u, NULL, T0, 0);
    assert_int_equal(inflight(u, 0), 3);
    set_inflight(u, 0, 4);
    pick_is(u, NULL, T0, 1);
    assert_int_equal(inflight(u, 1), 2);
}

/* Held picks spread 3:1 across weights 3 and 1. */
static void test_weights_spread(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    int i;
    fx_add(f, 3, 1, 10000);
    fx_add(f, 1, 1, 10000);
    u = fx_start(f);
    for (i = 0; i < 8; i++)
        assert_non_null(up_pick(u, NULL, T0));
    assert_int_equal(inflight(u, 0), 6);
    assert_int_equal(inflight(u, 1), 2);
}

/* Equal candidates rotate: pick-and-release cycles over all of them. */
static void test_ties_rotate(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    int count[MAXB] = { 0 };
    int seen_first[MAXB] = { 0 };
    int i;
    fx_add_n(f, 4, 1, 1, 10000);
    u = fx_start(f);
    for (i = 0; i < 40; i++) {
        struct backend *b = up_pick(u, NULL, T0);
        assert_non_null(b);
        if (i < 4) {
            if (seen_first[b->index])
                fail_msg("pick %d repeated b%d before visiting every backend", i, b->index);
            seen_first[b->index] = 1;
        }
        count[b->index]++;
        up_release(b);
    }
    for (i = 0; i < 4; i++)
        if (count[i] != 10)
            fail_msg("b%d picked %d times of 40, want 10", i, count[i]);
}

static void test_avoid_is_skipped(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add_n(f, 2, 1, 1, 10000);
    u = fx_start(f);
    set_inflight(u, 0, 0);
    set_inflight(u, 1, 5);
    pick_is(u, &u->b[0], T0, 1);
    assert_int_equal(inflight(u, 0), 0);
    assert_int_equal(inflight(u, 1), 6);
}

/* `avoid` is still returned when it is the only backend up. */
static void test_avoid_when_only_one_up(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add_n(f, 2, 1, 1, 10000);
    u = fx_start(f);
    up_fail(&u->b[1], T0);
    assert_false(up_is_up(&u->b[1], T0 + 1));
    pick_is(u, &u->b[0], T0 + 1, 0);
    assert_int_equal(inflight(u, 0), 1);
}

static void test_avoid_single_backend(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add(f, 1, 1, 10000);
    u = fx_start(f);
    pick_is(u, &u->b[0], T0, 0);
}

/* max_fails failures within fail_timeout mark a backend down until fail_timeout passes. */
static void test_max_fails_marks_down_then_back(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    uint64_t last = T0 + 200;
    int i;
    fx_add(f, 1, 3, 10000);
    fx_add(f, 1, 3, 10000);
    u = fx_start(f);

    fail_n(&u->b[0], 2, T0, 100);
    assert_true(up_is_up(&u->b[0], T0 + 150));
    up_fail(&u->b[0], last);
    assert_false(up_is_up(&u->b[0], last));
    assert_false(up_is_up(&u->b[0], last + 5000));
    assert_false(up_is_up(&u->b[0], last + 9999));
    assert_true(up_is_up(&u->b[1], last));

    /* never picked while down, even when idle and the other is busy */
    set_inflight(u, 1, 50);
    for (i = 0; i < 10; i++) {
        pick_is(u, NULL, last + 1 + (uint64_t)i, 1);
        up_release(&u->b[1]);
    }

    /* back after fail_timeout */
    assert_true(up_is_up(&u->b[0], last + 10001));
    pick_is(u, NULL, last + 10001, 0);
}

static void test_single_failure_with_max_fails_1(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add_n(f, 2, 1, 1, 5000);
    u = fx_start(f);
    up_fail(&u->b[0], T0);
    assert_false(up_is_up(&u->b[0], T0 + 1));
    pick_is(u, NULL, T0 + 1, 1);
    assert_true(up_is_up(&u->b[0], T0 + 5001));
}

/* Failures further apart than fail_timeout do not accumulate. */
static void test_spread_failures_stay_up(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add(f, 1, 2, 1000);
    u = fx_start(f);
    up_fail(&u->b[0], T0);
    up_fail(&u->b[0], T0 + 1500); /* the first one's window is over: a new window */
    assert_true(up_is_up(&u->b[0], T0 + 1500));
    up_fail(&u->b[0], T0 + 3000);
    assert_true(up_is_up(&u->b[0], T0 + 3000));
    up_fail(&u->b[0], T0 + 3100); /* two within 1000 ms: down */
    assert_false(up_is_up(&u->b[0], T0 + 3100));
}

static void test_up_ok_resets_failures(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add(f, 1, 2, 10000);
    u = fx_start(f);
    up_fail(&u->b[0], T0);
    up_ok(&u->b[0]);
    up_fail(&u->b[0], T0 + 10);
    assert_true(up_is_up(&u->b[0], T0 + 10));
    up_fail(&u->b[0], T0 + 20);
    assert_false(up_is_up(&u->b[0], T0 + 20));
}

/* max_fails = 0 disables passive health. */
static void test_max_fails_zero_never_down(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add(f, 1, 0, 10000);
    u = fx_start(f);
    fail_n(&u->b[0], 50, T0, 1);
    assert_true(up_is_up(&u->b[0], T0 + 50));
}

/* All down: the one whose down period ends first is still returned. */
static void test_all_down_picks_earliest_back(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add_n(f, 3, 1, 1, 10000);
    u = fx_start(f);
    up_fail(&u->b[0], T0 + 100);
    up_fail(&u->b[1], T0);
    up_fail(&u->b[2], T0 + 200);
    assert_false(up_is_up(&u->b[0], T0 + 300));
    assert_false(up_is_up(&u->b[1], T0 + 300));
    assert_false(up_is_up(&u->b[2], T0 + 300));
    pick_is(u, NULL, T0 + 300, 1);
    assert_int_equal(inflight(u, 1), 1);
}

/* Earliest back is about the end of the down period, not the time of failure. */
static void test_all_down_differing_timeouts(void **state)
{
    struct fx *f = *state;
    struct upstream *u;
    fx_add(f, 1, 1, 1000); /* down T0 .. T0+1000 */
    fx_add(f, 1, 1, 500);  /* down T0+200 .. T0+700 */
    u = fx_start(f);
    up_fail(&u->b[0], T0);
    up_fail(&u->b[1], T0 + 200);
    pick_is(u, NULL, T0 + 300, 1);
}

static void test_now_ms_monotonic(void **state)
{
    uint64_t a = up_now_ms(), b = up_now_ms();
    assert_true(a > 0);
    assert_true(b >= a);
}

#define FX_TEST(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    static const struct CMUnitTest tests[] = {
        FX_TEST(test_init_builds_table),
        FX_TEST(test_init_rejects_address_without_port),
        FX_TEST(test_pick_lowest_inflight),
        FX_TEST(test_pick_and_release_count_inflight),
        FX_TEST(test_weights),
        FX_TEST(test_weights_spread),
        FX_TEST(test_ties_rotate),
        FX_TEST(test_avoid_is_skipped),
        FX_TEST(test_avoid_when_only_one_up),
        FX_TEST(test_avoid_single_backend),
        FX_TEST(test_max_fails_marks_down_then_back),
        FX_TEST(test_single_failure_with_max_fails_1),
        FX_TEST(test_spread_failures_stay_up),
        FX_TEST(test_up_ok_resets_failures),
        FX_TEST(test_max_fails_zero_never_down),
        FX_TEST(test_all_down_picks_earliest_back),
        FX_TEST(test_all_down_differing_timeouts),
        cmocka_unit_test(test_now_ms_monotonic),
    };
    return cmocka_run_group_tests_name("upstream", tests, NULL, NULL);
}
