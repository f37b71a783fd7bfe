/* Unit tests for bufmem's malloc set-up (include/sluice/bufmem.h): with it, memory freed at
 * the top of a thread's arena stays mapped for the next requests (no page faults on reuse);
 * with glibc's default threshold the same pattern faults every page in again (the control);
 * a threshold the user gave glibc is left alone. */
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <cmocka.h>

#include <sluice/bufmem.h>

#define CHUNKS 8
#define CHUNK (60 * 1024) /* a read's chain (sock.c READ_MORE) */

/* In a thread of its own (its own arena): take CHUNKS chunks, touch them, free them all
 * (the arena's top grows past 128 KiB), take and touch them again. The minor faults of the
 * second round. */
static void *second_round_faults(void *arg)
{
    long *faults = arg;
    char *p[CHUNKS];
    for (int round = 0; round < 2; round++) {
        struct rusage before, after;
        getrusage(RUSAGE_THREAD, &before);
        for (int i = 0; i < CHUNKS; i++) {
            p[i] = malloc(CHUNK);
            if (p[i])
                memset(p[i], round + 1, CHUNK);
        }
        getrusage(RUSAGE_THREAD, &after);
        for (int i = CHUNKS - 1; i >= 0; i--)
            free(p[i]);
        *faults = after.ru_minflt - before.ru_minflt;
    }
    return NULL;
}

static long faults_in_a_thread(void)
{
    long faults = -1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, second_round_faults, &faults), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    return faults;
}

/* The control: glibc's default threshold gives the freed top back, and the next round
 * faults its pages in again (if this fails, the test below proves nothing here). */
static void test_default_threshold_faults_the_freed_top_in_again(void **state)
{
    (void)state;
    assert_int_equal(mallopt(M_TRIM_THRESHOLD, 128 * 1024), 1);
    long faults = faults_in_a_thread();
    print_message("default threshold: %ld faults in the second round\n", faults);
    assert_true(faults >= CHUNKS * CHUNK / 4096 / 2);
}

static void test_setup_keeps_the_freed_top(void **state)
{
    (void)state;
    assert_int_equal(bufmem_malloc_setup(NULL, NULL), BUFMEM_KEEP_TOP);
    long faults = faults_in_a_thread();
    print_message("after bufmem_malloc_setup: %ld faults in the second round\n", faults);
    assert_true(faults <= 2);
}

static void test_a_users_glibc_threshold_is_left_alone(void **state)
{
    (void)state;
    assert_int_equal(bufmem_malloc_setup("glibc.malloc.trim_threshold=65536", NULL), 0);
    assert_int_equal(
        bufmem_malloc_setup("glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0", NULL), 0);
    assert_int_equal(bufmem_malloc_setup(NULL, "65536"), 0);
    assert_int_equal(bufmem_malloc_setup("glibc.malloc.arena_max=2", NULL), BUFMEM_KEEP_TOP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_threshold_faults_the_freed_top_in_again),
        cmocka_unit_test(test_setup_keeps_the_freed_top),
        cmocka_unit_test(test_a_users_glibc_threshold_is_left_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
