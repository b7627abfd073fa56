/* Cursor format and strict parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tb/cursor.h"

static void test_cursor_format_parse_round_trip(void **state)
{
    (void)state;
    const tb_cursor_t cases[] = {
        {0, 0}, {1, 1}, {0xdeadbeefcafef00dULL, 42}, {UINT64_MAX, UINT64_MAX}, {0x10, 1000000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[TB_CURSOR_BUF_SIZE];
        tb_cursor_format(&cases[i], text);
        tb_cursor_t back = {7, 7};
        assert_int_equal(tb_cursor_parse(text, strlen(text), &back), TB_OK);
        assert_true(back.epoch == cases[i].epoch);
        assert_true(back.seq == cases[i].seq);
    }
    char text[TB_CURSOR_BUF_SIZE];
    tb_cursor_format(&(tb_cursor_t){0xab, 5}, text);
    assert_string_equal(text, "00000000000000ab-5");
    tb_cursor_format(&(tb_cursor_t){UINT64_MAX, UINT64_MAX}, text);
    assert_string_equal(text, "ffffffffffffffff-18446744073709551615");
}

static void test_cursor_parse_rejects_garbage_overflow_negative_empty(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "-",
        "0000000000000001",
        "0000000000000001-",
        "0000000000000001--5",
        "0000000000000001-+5",
        "0000000000000001- 5",
        "0000000000000001-5 ",
        "0000000000000001-05",
        "0000000000000001-18446744073709551616",
        "0000000000000001-99999999999999999999",
        "0000000000000001-123456789012345678901",
        "000000000000001-5",
        "00000000000000001-5",
        "000000000000000G-5",
        "000000000000000A-5",
        "0000000000000001_5",
        "0000000000000001-5x",
        "garbage",
        "0000000000000001-0x5",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tb_cursor_t c = {9, 9};
        if (tb_cursor_parse(bad[i], strlen(bad[i]), &c) != TB_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(c.epoch == 9 && c.seq == 9); /* untouched on failure */
    }
    tb_cursor_t c;
    assert_int_equal(tb_cursor_parse(NULL, 0, &c), TB_EINVAL);
    /* Length is honoured: a valid prefix followed by more bytes is judged by len. */
    assert_int_equal(tb_cursor_parse("0000000000000001-5junk", 18, &c), TB_OK);
    assert_true(c.seq == 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cursor_format_parse_round_trip),
        cmocka_unit_test(test_cursor_parse_rejects_garbage_overflow_negative_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
