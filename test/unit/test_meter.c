/* Unit tests for the meter's per-second arrivals (include/sluice/meter.h), which the sizing
 * model replays: second by second, oldest first, skipped seconds empty, at most 300. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sluice/meter.h>

static void test_arrivals_second_by_second(void **state)
{
    (void)state;
    struct meter *m = meter_new(1);
    assert_non_null(m);
    uint32_t out[HIST_WIN_MAX_S];
    assert_int_equal(meter_arrivals(m, 60, out), 0);
    uint64_t total = 0;
    for (uint64_t s = 1; s <= 5; s++) /* 1, 2, 3, 4, 5 in seconds 0..4 */
        meter_tick(m, s, total += s);
    assert_int_equal(meter_arrivals(m, 60, out), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(out[i], (uint32_t)i + 1);
    assert_int_equal(meter_arrivals(m, 2, out), 2);
    assert_int_equal(out[0], 4);
    assert_int_equal(out[1], 5);
    meter_tick(m, 8, total += 7); /* seconds 5 and 6 were skipped: none seen there */
    assert_int_equal(meter_arrivals(m, 4, out), 4);
    assert_int_equal(out[0], 5);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 0);
    assert_int_equal(out[3], 7);
    for (uint64_t s = 9; s <= 400; s++) /* the ring wraps: the last 300 seconds */
        meter_tick(m, s, total += 2);
    assert_int_equal(meter_arrivals(m, 1000, out), HIST_WIN_MAX_S);
    for (int i = 0; i < HIST_WIN_MAX_S; i++)
        assert_int_equal(out[i], 2);
    meter_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arrivals_second_by_second),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
