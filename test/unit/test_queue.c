/* Unit tests for the shared wait queue (include/sluice/queue.h). mailbox_post is wrapped
 * here (the Makefile links this test with -Wl,--wrap=mailbox_post), so each wake-up is
 * recorded, and the woken waiter is then treated as its owner would: it may be reused or
 * freed at once. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <sluice/admit.h>
#include <sluice/queue.h>

static struct waiter *woken[64];
static int nwoken;

/* A waiter's wake-up runs at once. */
void __wrap_mailbox_post(struct mailbox *mb, struct mail *m);
void __wrap_mailbox_post(struct mailbox *mb, struct mail *m)
{
    (void)mb;
    struct waiter *w = m->arg;
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
    mail_init(&w->wake, NULL, w);
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
        assert_int_equal(queue_push(&q, &w[i], 0, 100, NULL), 0);
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

/* Limits: a tenant's max_queue refuses its newcomers; a full queue makes room at the
 * oldest waiter of the tenant holding the most of it (by weight), and a newcomer of a
 * tenant under its share is never the one refused; a waiter put back in front passes. */
static void test_limits_and_drop_from_the_longest(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    struct tenant_state a = {.name = "a"}, b = {.name = "b"};
    struct waiter w[8];
    waiter(&w[0], &a, 1);
    w[0].max_queue = 1;
    assert_int_equal(queue_push(&q, &w[0], 0, 3, NULL), 0);
    waiter(&w[1], &a, 1);
    w[1].max_queue = 1;
    assert_int_equal(queue_push(&q, &w[1], 0, 3, NULL), -2);
    for (int i = 1; i < 3; i++) {
        waiter(&w[i], &a, 1);
        assert_int_equal(queue_push(&q, &w[i], 0, 3, NULL), 0); /* a: 3 waiting, full */
    }
    /* b has weight 4: its share of the queue is four times a's */
    waiter(&w[3], &b, 4);
    assert_int_equal(queue_push(&q, &w[3], 0, 3, NULL), 0); /* b is under its share */
    assert_int_equal(nwoken, 1);
    assert_ptr_equal(woken[0], &w[0]); /* a's oldest made room */
    assert_int_equal(w[0].state, W_DROPPED);
    assert_true(w[0].retry_s >= 1);
    waiter(&w[4], &b, 4);
    assert_int_equal(queue_push(&q, &w[4], 0, 3, NULL), 0); /* a 2/1 > b 2/4 */
    assert_ptr_equal(woken[1], &w[1]);
    waiter(&w[5], &b, 4);
    assert_int_equal(queue_push(&q, &w[5], 0, 3, NULL), 0); /* a 1/1 > b 3/4 */
    assert_ptr_equal(woken[2], &w[2]);
    assert_int_equal(a.queued, 0);
    assert_int_equal(b.queued, 3);
    /* b holds it all now: its own oldest makes room for its newcomer */
    waiter(&w[7], &b, 4);
    assert_int_equal(queue_push(&q, &w[7], 0, 3, NULL), 0);
    assert_ptr_equal(woken[3], &w[3]);
    assert_int_equal(b.queued, 3);
    waiter(&w[6], &a, 1);
    assert_int_equal(queue_push(&q, &w[6], 1, 3, NULL), 0); /* front: no room made */
    assert_int_equal(nwoken, 4);
    assert_int_equal(queue_len(&q), 4);
    queue_destroy(&q);
}

/* Worker time, not request count: two tenants of equal weight that are always waiting,
 * one whose requests hold a worker 1 s and one 100 ms, each get half the worker time
 * (charged at completion, as here right after the wake-up). */
static void test_fair_in_worker_time(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    struct tenant_state a = {.name = "slow"}, b = {.name = "fast"};
    static struct waiter w[2][40];
    for (int i = 0; i < 40; i++) {
        waiter(&w[0][i], &a, 1);
        waiter(&w[1][i], &b, 1);
        assert_int_equal(queue_push(&q, &w[0][i], 0, 1000, NULL), 0);
        assert_int_equal(queue_push(&q, &w[1][i], 0, 1000, NULL), 0);
    }
    int64_t used[2] = {0, 0};
    for (int k = 0; k < 40; k++) {
        queue_kick(&q);
        struct waiter *x = woken[--nwoken];
        int slow = x->ts == &a;
        int64_t us = slow ? 1000000 : 100000;
        used[!slow] += us;
        queue_charge(&q, x->ts, 1, us, x->charged_us);
        x->charged_us = 0;
    }
    double share = (double)used[0] / (double)(used[0] + used[1]);
    assert_true(share > 0.4 && share < 0.6);
    queue_destroy(&q);
}

/* Two levels: unnamed keys are flows of the default tenant's class, so ten keys sprayed
 * beside one named tenant of the same weight get half the worker time together, not ten
 * elevenths; within the class the keys take turns. */
static void test_unnamed_keys_share_the_default_class(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    struct tenant_state def = {.name = "default"}, named = {.name = "named"}, key[10];
    static struct waiter wk[10][3], wn[30];
    for (int k = 0; k < 10; k++) {
        memset(&key[k], 0, sizeof key[k]);
        key[k].group = &def;
        for (int i = 0; i < 3; i++) {
            waiter(&wk[k][i], &key[k], 1);
            assert_int_equal(queue_push(&q, &wk[k][i], 0, 1000, NULL), 0);
        }
    }
    for (int i = 0; i < 30; i++) {
        waiter(&wn[i], &named, 1);
        assert_int_equal(queue_push(&q, &wn[i], 0, 1000, NULL), 0);
    }
    int named_served = 0, per_key[10] = {0};
    for (int k = 0; k < 20; k++) {
        queue_kick(&q);
        struct waiter *x = woken[--nwoken];
        if (x->ts == &named)
            named_served++;
        else
            per_key[x->ts - key]++;
        queue_charge(&q, x->ts, 1, 100000, x->charged_us);
        x->charged_us = 0;
    }
    assert_true(named_served >= 9 && named_served <= 11);
    for (int k = 0; k < 10; k++)
        assert_true(per_key[k] <= 2); /* the keys took turns */
    assert_int_equal(def.class_queued, 30 - (20 - named_served));
    queue_destroy(&q);
}

/* A tenant's standing queue is judged on its own: another tenant's quick services do not
 * end it; while it stands, its newcomers that would wait over target are refused at once,
 * with a Retry-After from its service gap, and its waiters over twice the target are
 * shed. A newcomer of a tenant with nobody waiting is not refused. */
static void test_per_tenant_standing_queue(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    queue_configure(&q, 100, 0);
    struct tenant_state a = {.name = "a"}, b = {.name = "b"};
    struct waiter wa[6], wb[3];
    for (int i = 0; i < 6; i++) {
        waiter(&wa[i], &a, 1);
        wa[i].since_ms = now_ms() - (i < 4 ? 150 : 0); /* over target, not over twice */
        assert_int_equal(queue_push(&q, &wa[i], 0, 100, NULL), 0);
    }
    for (int i = 0; i < 2; i++) {
        waiter(&wb[i], &b, 1);
        assert_int_equal(queue_push(&q, &wb[i], 0, 100, NULL), 0);
    }
    for (int i = 0; i < 4; i++) /* a, b, a, b: b's are served at once */
        queue_kick(&q);
    assert_int_equal(a.standing, 1);
    assert_int_equal(b.standing, 0);
    assert_int_equal(a.queued, 4);
    a.gap_us = 50000; /* a is served every 50 ms: a 5th waiter would wait 250 ms */
    waiter(&wa[0], &a, 1);
    uint32_t retry = 0;
    assert_int_equal(queue_push(&q, &wa[0], 0, 100, &retry), -3);
    assert_int_equal(retry, 1);
    waiter(&wb[2], &b, 1); /* b is not standing: queued */
    assert_int_equal(queue_push(&q, &wb[2], 0, 100, &retry), 0);
    /* a's waiters that waited over twice the target are shed when a is next served */
    for (struct waiter *x = a.q_head; x; x = x->next)
        x->since_ms = now_ms() - 300;
    int before = nwoken;
    queue_kick(&q); /* b's turn or a's: kick until a's is served */
    queue_kick(&q);
    int shed = 0;
    for (int i = before; i < nwoken; i++)
        shed += woken[i]->state == W_SHED;
    assert_true(shed >= 2);
    assert_int_equal(a.queued, 0);
    queue_destroy(&q);
}

/* The default class's bound: 100 flooding keys that each keep a few waiting must not make
 * a class queue served seconds late. The class stands when its backlog (waiters x service
 * gap) stayed over target for an interval, whatever the wait of the one served; then a
 * newcomer of a key holding as many as any is refused, one of a lighter key queues and
 * the heaviest key's oldest waiter is shed instead. Before the class stands (a burst),
 * everyone queues. */
static void test_class_of_many_keys_is_bounded(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    queue_configure(&q, 100, 0);
    struct tenant_state def = {.name = "default"}, key[12];
    static struct waiter wk[12][3];
    for (int k = 0; k < 12; k++) {
        memset(&key[k], 0, sizeof key[k]);
        key[k].group = &def;
    }
    for (int k = 0; k < 10; k++)
        for (int i = 0; i < 2; i++) {
            waiter(&wk[k][i], &key[k], 1);
            assert_int_equal(queue_push(&q, &wk[k][i], 0, 1000, NULL), 0);
        }
    def.class_gap_us = 50000; /* the class is served every 50 ms: 21 x 50 ms > 100 ms */
    waiter(&wk[0][2], &key[0], 1);
    assert_int_equal(queue_push(&q, &wk[0][2], 0, 1000, NULL), 0); /* not standing yet */
    queue_kick(&q); /* key 0's first: the backlog is over target (interval 0 here) */
    queue_kick(&q); /* key 1's first: it stands */
    assert_int_equal(def.class_standing, 1);
    assert_int_equal(nwoken, 2);
    assert_int_equal(def.class_queued, 19);
    uint32_t retry = 0;
    waiter(&wk[1][2], &key[1], 1); /* key 1 would hold 2, as many as the heaviest */
    assert_int_equal(queue_push(&q, &wk[1][2], 0, 1000, &retry), -3);
    assert_int_equal(retry, (uint32_t)(20 * def.class_gap_us / 1000000 + 1));
    assert_int_equal(nwoken, 2);
    waiter(&wk[10][0], &key[10], 1); /* a light key: queued, key 0's oldest shed */
    assert_int_equal(queue_push(&q, &wk[10][0], 0, 1000, NULL), 0);
    assert_int_equal(nwoken, 3);
    assert_ptr_equal(woken[2], &wk[0][1]);
    assert_int_equal(wk[0][1].state, W_SHED);
    assert_int_equal(key[0].queued, 1);
    assert_int_equal(def.class_queued, 19);
    def.class_gap_us = 1000; /* served every ms: the class is within target, all queue */
    waiter(&wk[11][0], &key[11], 1);
    assert_int_equal(queue_push(&q, &wk[11][0], 0, 1000, NULL), 0);
    assert_int_equal(def.class_queued, 20);
    queue_destroy(&q);
}

/* A standing tenant's waiter that waited over twice the target is shed when its turn
 * comes, not served (as CoDel drops at the head), and the slot goes to the next one. */
static void test_stale_head_is_shed_not_served(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    queue_configure(&q, 100, 0);
    struct tenant_state a = {.name = "a"};
    struct waiter w[3];
    for (int i = 0; i < 3; i++) {
        waiter(&w[i], &a, 1);
        w[i].since_ms = now_ms() - (i < 2 ? 500 : 0);
        assert_int_equal(queue_push(&q, &w[i], 0, 100, NULL), 0);
    }
    a.standing = 1;
    queue_kick(&q);
    assert_int_equal(nwoken, 3);
    assert_int_equal(w[0].state, W_SHED);
    assert_int_equal(w[1].state, W_SHED);
    assert_int_equal(w[2].state, W_WOKEN);
    assert_int_equal(a.queued, 0);
    queue_destroy(&q);
}

/* A late head is shed only when one of its tenant's own takes the turn: the turn of a
 * standing tenant whose waiters are all late goes to its youngest, not to a tenant ahead
 * of it in virtual time (whose long requests would make its next waiters late in turn:
 * a tenant of 50 ms requests got no worker time for seconds beside one of 500 ms). */
static void test_late_tenant_keeps_its_turn(void **state)
{
    (void)state;
    struct queue q;
    setup(&q);
    queue_configure(&q, 100, 0);
    struct tenant_state a = {.name = "a"}, b = {.name = "b"};
    struct waiter wa[3], wb;
    for (int i = 0; i < 3; i++) {
        waiter(&wa[i], &a, 1);
        wa[i].since_ms = now_ms() - 300 + (uint64_t)i; /* all over twice the target */
        assert_int_equal(queue_push(&q, &wa[i], 0, 100, NULL), 0);
    }
    waiter(&wb, &b, 1);
    assert_int_equal(queue_push(&q, &wb, 0, 100, NULL), 0);
    a.standing = 1;
    atomic_store(&b.cvtime, 1000000); /* b is ahead: the turn is a's */
    queue_kick(&q);
    assert_int_equal(nwoken, 3);
    assert_int_equal(wa[0].state, W_SHED);
    assert_int_equal(wa[1].state, W_SHED);
    assert_ptr_equal(woken[2], &wa[2]);
    assert_int_equal(wa[2].state, W_WOKEN);
    assert_int_equal(wb.state, W_QUEUED);
    assert_int_equal(b.queued, 1);
    queue_destroy(&q);
}

/* Sojourn control decides from the served waiter's wait before waking it: after the
 * wake-up its owner may reuse it at once (here: a fresh since_ms), which must not change
 * the verdict. Before the fix the queue read since_ms after event_active (a use-after-free
 * when the owner freed the session meanwhile, found by the soak). */
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
        assert_int_equal(queue_push(&q, &w[i], 0, 100, NULL), 0);
    }
    queue_kick(&q);
    assert_int_equal(nwoken, 1);
    assert_true(a.above_since != 0); /* a standing queue began, judged by the real wait */
    queue_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_kick_and_leave),
        cmocka_unit_test(test_limits_and_drop_from_the_longest),
        cmocka_unit_test(test_fair_in_worker_time),
        cmocka_unit_test(test_per_tenant_standing_queue),
        cmocka_unit_test(test_class_of_many_keys_is_bounded),
        cmocka_unit_test(test_stale_head_is_shed_not_served),
        cmocka_unit_test(test_late_tenant_keeps_its_turn),
        cmocka_unit_test(test_unnamed_keys_share_the_default_class),
        cmocka_unit_test(test_served_waiter_is_not_read_after_its_wake_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
