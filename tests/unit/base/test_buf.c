/* tb_buf_t: growable and fixed modes, truncation, stealing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tb/buf.h"

static void test_buf_growable_appends_and_grows(void **state)
{
    (void)state;
    tb_buf_t b;
    tb_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        tb_buf_appendf(&b, "%d,", i % 10);
    assert_int_equal(b.len, 2000);
    assert_int_equal(strlen(b.data), 2000);
    assert_int_equal(tb_buf_status(&b), TB_OK);
    tb_buf_truncate(&b, 3);
    assert_string_equal(b.data, "0,1");
    tb_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    tb_buf_append(&b, "xyz", 3);
    size_t len = 0;
    char *s = tb_buf_steal(&b, &len);
    assert_string_equal(s, "xyz");
    assert_int_equal(len, 3);
    assert_null(b.data);
    free(s);
    s = tb_buf_steal(&b, NULL); /* empty buffer yields "" */
    assert_string_equal(s, "");
    free(s);
    tb_buf_cleanup(&b);
    tb_buf_cleanup(NULL);
}

static void test_buf_fixed_overflows_without_writing_past_end(void **state)
{
    (void)state;
    char mem[8];
    memset(mem, 'Z', sizeof mem);
    tb_buf_t b;
    tb_buf_init_fixed(&b, mem, 6);
    tb_buf_append_str(&b, "abc");
    assert_int_equal(tb_buf_status(&b), TB_OK);
    tb_buf_append_str(&b, "def"); /* needs 7 bytes with the NUL */
    assert_int_equal(tb_buf_status(&b), TB_EFULL);
    assert_string_equal(mem, "abc");
    tb_buf_append_str(&b, "d"); /* ignored after overflow until reset */
    assert_string_equal(mem, "abc");
    assert_int_equal(mem[6], 'Z');
    tb_buf_truncate(&b, 3);
    assert_int_equal(tb_buf_status(&b), TB_OK);
    tb_buf_appendf(&b, "%s", "de");
    assert_string_equal(mem, "abcde");
    tb_buf_cleanup(&b); /* the caller's memory is untouched */
    assert_string_equal(mem, "abcde");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_growable_appends_and_grows),
        cmocka_unit_test(test_buf_fixed_overflows_without_writing_past_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
