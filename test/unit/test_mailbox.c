/* Unit tests for the mailbox (include/sluice/mailbox.h): other threads' posts run on the
 * owner's lock-free loop, each once; a mail posted twice runs once; a cancelled one never;
 * a wakeup runs a bounded number and leaves the rest for the next turn. */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <event2/event.h>

#include <sluice/mailbox.h>

#define THREADS 4
#define PER_THREAD 2000

struct item {
    struct mail m;
    int runs;
    int on_owner;          /* ran on the owner's thread */
    struct item *cancel;   /* cancelled by this one's run (NULL: none) */
};

static pthread_t owner;
static int ran;
static struct mailbox *box;

static void run_item(void *arg)
{
    struct item *it = arg;
    it->runs++;
    it->on_owner = pthread_equal(pthread_self(), owner);
    ran++;
    if (it->cancel)
        mailbox_cancel(box, &it->cancel->m);
}

static struct event_base *lockless_base(void)
{
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    struct event_base *b = event_base_new_with_config(ec);
    event_config_free(ec);
    assert_non_null(b);
    return b;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run the loop until `want` mails ran, or 10 s (a 20 ms timer keeps each turn short). */
static void run_until(struct event_base *b, int want)
{
    struct event *tick = event_new(b, -1, EV_PERSIST, tick_cb, NULL);
    struct timeval t = {0, 20000};
    event_add(tick, &t);
    time_t end = time(NULL) + 10;
    while (ran < want && time(NULL) < end)
        event_base_loop(b, EVLOOP_ONCE);
    event_free(tick);
}

/* One loop turn without waiting. */
static void one_turn(struct event_base *b)
{
    event_base_loop(b, EVLOOP_NONBLOCK);
}

static void setup(struct mailbox *mb, struct event_base **b, struct item *it, int n)
{
    *b = lockless_base();
    assert_int_equal(mailbox_init(mb, *b), 0);
    box = mb;
    owner = pthread_self();
    ran = 0;
    memset(it, 0, sizeof *it * (size_t)n);
    for (int i = 0; i < n; i++)
        mail_init(&it[i].m, run_item, &it[i]);
}

static void teardown(struct mailbox *mb, struct event_base *b)
{
    mailbox_free(mb);
    event_base_free(b);
}

static struct item many[THREADS * PER_THREAD];

static void *poster(void *arg)
{
    struct item *first = arg;
    for (int i = 0; i < PER_THREAD; i++)
        mailbox_post(box, &first[i].m);
    return NULL;
}

/* Four threads post 2,000 mails each while the owner runs its loop: every mail runs once,
 * on the owner's thread. */
static void test_posts_from_threads_run_once_on_the_owner(void **state)
{
    (void)state;
    struct mailbox mb;
    struct event_base *b;
    setup(&mb, &b, many, THREADS * PER_THREAD);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, poster, &many[i * PER_THREAD]), 0);
    run_until(b, THREADS * PER_THREAD);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    one_turn(b);
    assert_int_equal(ran, THREADS * PER_THREAD);
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        assert_int_equal(many[i].runs, 1);
        assert_true(many[i].on_owner);
    }
    teardown(&mb, b);
}

/* A mail posted again before it ran runs once; posted after it ran, it runs again. */
static void test_posting_twice_runs_once(void **state)
{
    (void)state;
    struct mailbox mb;
    struct event_base *b;
    struct item it[1];
    setup(&mb, &b, it, 1);
    mailbox_post(&mb, &it[0].m);
    mailbox_post(&mb, &it[0].m);
    run_until(b, 1);
    one_turn(b);
    assert_int_equal(it[0].runs, 1);
    mailbox_post(&mb, &it[0].m);
    run_until(b, 2);
    assert_int_equal(it[0].runs, 2);
    teardown(&mb, b);
}

/* Cancelled mails (in the middle, at the tail) never run; the list stays whole: a mail
 * posted after a cancelled tail runs; a run may cancel a mail behind it. */
static void test_cancelled_mails_never_run(void **state)
{
    (void)state;
    struct mailbox mb;
    struct event_base *b;
    struct item it[6];
    setup(&mb, &b, it, 6);
    for (int i = 0; i < 3; i++)
        mailbox_post(&mb, &it[i].m);
    mailbox_cancel(&mb, &it[1].m);
    mailbox_cancel(&mb, &it[2].m);
    mailbox_cancel(&mb, &it[5].m); /* never posted: nothing */
    mailbox_post(&mb, &it[3].m);
    it[3].cancel = &it[4];
    mailbox_post(&mb, &it[4].m);
    run_until(b, 2);
    one_turn(b);
    one_turn(b);
    assert_int_equal(it[0].runs, 1);
    assert_int_equal(it[1].runs, 0);
    assert_int_equal(it[2].runs, 0);
    assert_int_equal(it[3].runs, 1);
    assert_int_equal(it[4].runs, 0);
    assert_int_equal(ran, 2);
    mailbox_post(&mb, &it[2].m); /* a cancelled mail may be posted again */
    run_until(b, 3);
    assert_int_equal(it[2].runs, 1);
    teardown(&mb, b);
}

/* 200 mails waiting: one loop turn runs at most 64 of them, the next turns the rest. */
static void test_a_wakeup_runs_a_bounded_number(void **state)
{
    (void)state;
    struct mailbox mb;
    struct event_base *b;
    static struct item it[200];
    setup(&mb, &b, it, 200);
    for (int i = 0; i < 200; i++)
        mailbox_post(&mb, &it[i].m);
    event_base_loop(b, EVLOOP_ONCE);
    assert_true(ran > 0 && ran <= 64);
    run_until(b, 200);
    assert_int_equal(ran, 200);
    for (int i = 0; i < 200; i++)
        assert_int_equal(it[i].runs, 1);
    teardown(&mb, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posts_from_threads_run_once_on_the_owner),
        cmocka_unit_test(test_posting_twice_runs_once),
        cmocka_unit_test(test_cancelled_mails_never_run),
        cmocka_unit_test(test_a_wakeup_runs_a_bounded_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
