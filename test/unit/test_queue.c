/* Unit tests for the shared wait queue (include/sluice/queue.h). libevent's event_active is
 * replaced here (the executable's definition wins over the shared library's), so each
 * wake-up is recorded, and the woken waiter is then treated as its owner would: it may be
 * reused or freed at once. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <event2/event.h>

#include <sluice/admit.h>
#include <sluice/queue.h>

static struct waiter *woken[64];
static int nwoken;

/* A waiter's wake event is the waiter itself here. */
void event_active(struct event *ev, int res, short ncalls)
{
    (void)res;
    (void)ncalls;
    struct waiter *w = (struct waiter *)ev;
    woken[nwoken++] = w;
    /* its thread runs now, on another core: it reuses the waiter for its next request */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->since_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void waiter(struct waiter *w, struct tenant_state *t, int weight)
{
    memset(w, 0, sizeof *w);
    w->ts = t;
    w->weight = weight;
    w->wake = (struct event *)w;
    w->since_ms = now_ms();
}

static void setup(struct queue *q)
{
    queue_init(q);
    nwoken = 0;
}

/* Within a tenant: first in, first out; every kick wakes one; leaving from the middle. */
static void test_fifo_kick_and_leave(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    struct tenant_state a = {.name = "a"};
    struct waiter w[4];
    for (int i = 0; i < 4; i++) {
        waiter(&w[i], &a, 1);
        assert_int_equal(queue_push(&q, &w[i], 0, 100), 0);
    }
    assert_int_equal(queue_len(&q), 4);
    assert_int_equal(queue_leave(&q, &w[1]), W_QUEUED);
    assert_int_equal(queue_len(&q), 3);
    for (int i = 0; i < 3; i++)
        queue_kick(&q);
    assert_int_equal(nwoken, 3);
    assert_ptr_equal(woken[0], &w[0]);
    assert_ptr_equal(woken[1], &w[2]);
    assert_ptr_equal(woken[2], &w[3]);
    assert_int_equal(queue_len(&q), 0);
    queue_kick(&q); /* empty: nothing */
    assert_int_equal(nwoken, 3);
    /* a woken waiter leaving passes its wake-up on (nobody left here) */
    assert_int_equal(queue_leave(&q, &w[0]), W_WOKEN);
    assert_int_equal(queue_leave(&q, &w[0]), W_IDLE);
    queue_destroy(&q);
}

/* Limits: the queue's max and the tenant's max_queue refuse newcomers, not a waiter put
 * back in front. */
static void test_limits_refuse_newcomers_only(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    struct tenant_state a = {.name = "a"}, b = {.name = "b"};
    struct waiter w[4];
    waiter(&w[0], &a, 1);
    w[0].max_queue = 1;
    assert_int_equal(queue_push(&q, &w[0], 0, 2), 0);
    waiter(&w[1], &a, 1);
    w[1].max_queue = 1;
    assert_int_equal(queue_push(&q, &w[1], 0, 2), -2);
    waiter(&w[2], &b, 1);
    assert_int_equal(queue_push(&q, &w[2], 0, 2), 0);
    waiter(&w[3], &b, 1);
    assert_int_equal(queue_push(&q, &w[3], 0, 2), -1);
    assert_int_equal(queue_push(&q, &w[3], 1, 2), 0); /* front: it had its place */
    assert_int_equal(queue_len(&q), 3);
    queue_destroy(&q);
}

/* Shedding decides from the served waiter's wait before waking it: after the wake-up its
 * owner may reuse it at once (here: a fresh since_ms), which must not change the verdict.
 * Before the fix the queue read since_ms after event_active (a use-after-free when the
 * owner freed the session meanwhile, found by the soak). */
static void test_served_waiter_is_not_read_after_its_wake_up(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    queue_configure(&q, 100, 1000);
    struct tenant_state a = {.name = "a"};
    struct waiter w[2];
    for (int i = 0; i < 2; i++) {
        waiter(&w[i], &a, 1);
        w[i].since_ms = now_ms() - 1000; /* waited a second: over target */
        assert_int_equal(queue_push(&q, &w[i], 0, 100), 0);
    }
    queue_kick(&q);
    assert_int_equal(nwoken, 1);
    assert_true(q.above_since != 0); /* a standing queue began, judged by the real wait */
    queue_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_kick_and_leave),
        cmocka_unit_test(test_limits_refuse_newcomers_only),
        cmocka_unit_test(test_served_waiter_is_not_read_after_its_wake_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
