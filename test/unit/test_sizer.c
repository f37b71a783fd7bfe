/* Unit tests for the sizer (include/sluice/sizer.h): the model on its own nice-19 thread
 * gives the figure sizing.h gives here, one job at a time, and is cut short when stopped. */
#include <dirent.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <sluice/hist.h>
#include <sluice/sizer.h>
#include <sluice/sizing.h>

#define WINDOW 60

static uint32_t per_s[WINDOW];
static struct hist_snap svc;

/* A minute of `rate` req/s of 50-149 ms (the histogram: 100 a second, its shape). */
static struct sizing_load window_at(uint32_t rate)
{
    static struct hist h;
    hist_init(&h);
    for (int s = 0; s < WINDOW; s++) {
        per_s[s] = rate;
        for (uint32_t i = 0; i < 100; i++)
            hist_record(&h, 50000 + (uint64_t)(i % 100) * 1000);
    }
    hist_snapshot(&svc, &h);
    return (struct sizing_load){.per_s = per_s, .seconds = WINDOW, .service = &svc,
                                .headroom = SIZING_HEADROOM_AUTO};
}

/* The job's result, waiting on it up to 30 s (1 ms apart). */
static void wait_result(struct sizer *z, struct sizer_result *r)
{
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 30000; i++) {
        if (sizer_take(z, r))
            return;
        nanosleep(&ms, NULL);
    }
    fail_msg("the sizer gave no result in 30 s");
}

/* The thread's answer is sizing.h's, the job's id comes back with it, a second job is
 * refused while one runs, and a result is taken once. */
static void test_the_thread_gives_the_models_figure(void **state)
{
    (void)state;
    struct sizing_load l = window_at(60); /* 6 erlangs */
    int want = sizing_required_near(&l, 0.5, 0.95, 100, 0);
    assert_int_equal(want, 7); /* 6 erlangs */
    struct sizer *z = sizer_new();
    assert_non_null(z);
    uint64_t id = sizer_submit(z, &l, 0.5, 0.95, 100, 0);
    assert_true(id > 0);
    assert_int_equal(sizer_submit(z, &l, 0.5, 0.95, 100, 0), 0); /* one at a time */
    memset(per_s, 0, sizeof per_s); /* the job has its own copy */
    struct sizer_result r;
    wait_result(z, &r);
    assert_int_equal(r.id, id);
    assert_int_equal(r.model, want);
    assert_int_equal(r.requests, 60 * WINDOW);
    assert_true(r.headroom > 1 && r.headroom < 1.5);
    assert_true(r.cost_ms >= 0);
    assert_int_equal(sizer_take(z, &r), 0); /* taken once */
    l = window_at(120); /* the next job: twice the load */
    uint64_t id2 = sizer_submit(z, &l, 0.5, 0.95, 100, want);
    assert_true(id2 > id);
    wait_result(z, &r);
    assert_int_equal(r.id, id2);
    assert_int_equal(r.model, sizing_required(&l, 0.5, 0.95, 100));
    assert_true(r.model > want);
    sizer_free(z);
}

/* The signals a thread of this process blocks (SigBlk in /proc/self/task/TID/status). */
static unsigned long long blocked_of(const char *tid)
{
    char path[300], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    FILE *f = fopen(path, "r");
    unsigned long long mask = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "SigBlk:", 7) == 0)
            mask = strtoull(line + 7, NULL, 16);
    if (f)
        fclose(f);
    return mask;
}

/* This process's threads at nice 19: how many; the last one's id (tid, 256 bytes) and
 * scheduling policy (fields 19 and 41 of /proc/self/task/ID/stat). */
static int nice19_threads(char *tid, long *policy)
{
    DIR *d = opendir("/proc/self/task");
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        int field = 2;
        long nice = 0, pol = -1;
        for (char *t = p ? strtok(p + 1, " ") : NULL; t; t = strtok(NULL, " ")) {
            if (++field == 19)
                nice = strtol(t, NULL, 10);
            if (field == 41)
                pol = strtol(t, NULL, 10);
        }
        if (nice == 19) {
            found++;
            snprintf(tid, 256, "%s", e->d_name);
            *policy = pol;
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* The thread runs at nice 19 under SCHED_IDLE (one thread of this process has both in
 * /proc: a proxy thread that wakes takes the core back at once) and blocks the
 * process's signals (a SIGHUP is the main loop's: under TSan one given to this thread while
 * it slept was never handled, and a reload was lost). */
static void test_the_thread_is_nice_19_and_idle(void **state)
{
    (void)state;
    struct sizer *z = sizer_new();
    struct sizing_load l = window_at(10);
    struct sizer_result r;
    sizer_submit(z, &l, 0.5, 0.95, 100, 0);
    wait_result(z, &r); /* the thread has set its priority before its first job */
    char tid[256];
    long policy = -1;
    assert_int_equal(nice19_threads(tid, &policy), 1);
    assert_int_equal(policy, SCHED_IDLE);
    unsigned long long m = blocked_of(tid);
    assert_true(m & (1ULL << (SIGHUP - 1)));
    assert_true(m & (1ULL << (SIGTERM - 1)));
    assert_true(m & (1ULL << (SIGUSR1 - 1)));
    sizer_free(z);
}

/* A job still running past the idle limit (0 s here) is raised out of SCHED_IDLE by the
 * caller's next sizer_take (SCHED_OTHER, still nice 19): never starved by busy cores. */
static void test_a_late_job_leaves_sched_idle(void **state)
{
    (void)state;
    struct sizer *z = sizer_new();
    sizer_idle_max(z, 0);
    struct sizing_load l = window_at(20000); /* 2,000 erlangs: a search of seconds */
    sizer_submit(z, &l, 0.5, 0.95, 100000, 0);
    struct sizer_result r;
    long policy = -1;
    for (int i = 0; i < 2000 && policy != SCHED_OTHER; i++) { /* up to 2 s */
        assert_false(sizer_take(z, &r)); /* still running */
        char tid[256];
        nice19_threads(tid, &policy);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    assert_int_equal(policy, SCHED_OTHER);
    sizer_free(z); /* cuts the job short */
}

/* A model given a stop flag that is set gives up at once: a window that would take
 * seconds costs next to nothing (sizer_free cuts a running job short this way). */
static void test_a_stopped_model_gives_up(void **state)
{
    (void)state;
    struct sizing_load l = window_at(20000); /* 1.2 million requests: ~0.1 s a replay */
    static _Atomic int stop = 1;
    l.stop = &stop;
    struct sizer_result r;
    sizer_run(&l, 0.5, 0.95, 100000, 0, &r); /* 2,000 erlangs: a search of seconds */
    assert_true(r.cost_ms < 20);
    struct sizer *z = sizer_new();
    l.stop = NULL;
    assert_true(sizer_submit(z, &l, 0.5, 0.95, 100000, 0) > 0); /* a search of seconds */
    sizer_free(z); /* returns once the job is cut short */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_thread_gives_the_models_figure),
        cmocka_unit_test(test_the_thread_is_nice_19_and_idle),
        cmocka_unit_test(test_a_late_job_leaves_sched_idle),
        cmocka_unit_test(test_a_stopped_model_gives_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
