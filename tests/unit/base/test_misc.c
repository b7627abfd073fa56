/* Status names, log levels and the log line format, randomness helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tb/base.h"
#include "tb/clock.h"
#include "tb/log.h"
#include "tb/random.h"

static void test_status_str_names_every_status(void **state)
{
    (void)state;
    for (int a = TB_OK; a <= TB_EBACKEND; a++) {
        assert_string_not_equal(tb_status_str((tb_status)a), "unknown");
        for (int b = a + 1; b <= TB_EBACKEND; b++)
            assert_string_not_equal(tb_status_str((tb_status)a), tb_status_str((tb_status)b));
    }
    assert_string_equal(tb_status_str(TB_OK), "ok");
    assert_string_equal(tb_status_str((tb_status)1000), "unknown");
}

static void test_log_level_parse_and_filtering(void **state)
{
    (void)state;
    tb_log_level level;
    assert_int_equal(tb_log_level_parse("DEBUG", &level), TB_OK);
    assert_int_equal(level, TB_LOG_DEBUG);
    assert_int_equal(tb_log_level_parse("warning", &level), TB_OK);
    assert_int_equal(level, TB_LOG_WARN);
    assert_int_equal(tb_log_level_parse("loud", &level), TB_EINVAL);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    tb_log_set_fd(fds[1]);
    tb_log_set_level(TB_LOG_WARN);
    tb_log(TB_LOG_INFO, "test", "hidden");
    tb_log(TB_LOG_WARN, "test", "two\nlines %d", 7);
    tb_log_set_fd(2);
    tb_log_set_level(TB_LOG_INFO);
    close(fds[1]);
    char out[512] = {0};
    ssize_t n = read(fds[0], out, sizeof out - 1);
    close(fds[0]);
    assert_true(n > 0);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, " WARN test: two lines 7\n"));
    assert_int_equal(strchr(out, '\n') - out, n - 1); /* exactly one line */
}

static void test_random_hex_and_range(void **state)
{
    (void)state;
    char a[33], b[33];
    tb_random_hex(a, 16);
    tb_random_hex(b, 16);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
    int seen[3] = {0};
    for (int i = 0; i < 300; i++) {
        uint64_t v = tb_random_range(2000, 2002);
        assert_true(v >= 2000 && v <= 2002);
        seen[v - 2000]++;
    }
    assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    assert_true(tb_random_range(5, 5) == 5);
    (void)tb_random_range(0, UINT64_MAX);
}

static void test_clock_values_are_plausible(void **state)
{
    (void)state;
    assert_true(tb_clock_wall() > 1.7e9);
    int64_t t0 = tb_clock_mono_ms();
    assert_true(tb_clock_mono_ms() >= t0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_str_names_every_status),
        cmocka_unit_test(test_log_level_parse_and_filtering),
        cmocka_unit_test(test_random_hex_and_range),
        cmocka_unit_test(test_clock_values_are_plausible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
