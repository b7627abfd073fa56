/* Cursor format and strict parsing, table-driven: the three-part form, the old two-part form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tb/cursor.h"

#define NOV TB_CURSOR_NO_VERSION

typedef struct {
    tb_cursor_t cursor;
    const char *text;
} golden_t;

/* Each cursor formats to exactly this text, and the text parses back to it. */
static const golden_t goldens[] = {
    {{0xab, 5, NOV}, "00000000000000ab-5"},
    {{0, 0, NOV}, "0000000000000000-0"},
    {{UINT64_MAX, UINT64_MAX, NOV}, "ffffffffffffffff-18446744073709551615"},
    {{0xab, 5, 0}, "00000000000000ab-5-0"},
    {{0xab, 5, 3}, "00000000000000ab-5-3"},
    {{1, 1, 1000000}, "0000000000000001-1-1000000"},
    {{0xdeadbeefcafef00dULL, 42, 7}, "deadbeefcafef00d-42-7"},
    {{UINT64_MAX, UINT64_MAX, INT64_MAX},
     "ffffffffffffffff-18446744073709551615-9223372036854775807"},
};

static void test_cursor_format_parse_goldens_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof goldens / sizeof goldens[0]; i++) {
        const golden_t *g = &goldens[i];
        char text[TB_CURSOR_BUF_SIZE];
        tb_cursor_format(&g->cursor, text);
        if (strcmp(text, g->text) != 0)
            fail_msg("case %zu formats to '%s', want '%s'", i, text, g->text);
        tb_cursor_t back = {7, 7, 7};
        assert_int_equal(tb_cursor_parse(g->text, strlen(g->text), &back), TB_OK);
        if (back.epoch != g->cursor.epoch || back.seq != g->cursor.seq ||
            back.version != g->cursor.version)
            fail_msg("'%s' parses to a different cursor", g->text);
    }
    /* The largest cursor fills the buffer exactly. */
    assert_int_equal(strlen(goldens[sizeof goldens / sizeof goldens[0] - 1].text),
                     TB_CURSOR_BUF_SIZE - 1);
}

static void test_cursor_unknown_version_formats_two_part(void **state)
{
    (void)state;
    const int64_t unknown[] = {TB_CURSOR_NO_VERSION, -2, INT64_MIN};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        char text[TB_CURSOR_BUF_SIZE];
        tb_cursor_format(&(tb_cursor_t){0x10, 9, unknown[i]}, text);
        assert_string_equal(text, "0000000000000010-9");
    }
}

static void test_cursor_parse_old_two_part_form_is_unknown_version(void **state)
{
    (void)state;
    const char *old[] = {"0000000000000001-5", "0123456789abcdef-0",
                         "ffffffffffffffff-18446744073709551615"};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
        tb_cursor_t c = {9, 9, 9};
        assert_int_equal(tb_cursor_parse(old[i], strlen(old[i]), &c), TB_OK);
        assert_true(c.version == TB_CURSOR_NO_VERSION);
    }
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
        /* The version part. */
        "0000000000000001-5-",
        "0000000000000001-5--1",
        "0000000000000001-5-+1",
        "0000000000000001-5-01",
        "0000000000000001-5-00",
        "0000000000000001-5- 1",
        "0000000000000001-5-1 ",
        "0000000000000001-5-1x",
        "0000000000000001-5-0x1",
        "0000000000000001-5-9223372036854775808",
        "0000000000000001-5-18446744073709551615",
        "0000000000000001-5-1-2",
        "0000000000000001--5-1",
        "0000000000000001-05-1",
        "0000000000000001-5-1.0",
        "ffffffffffffffff-18446744073709551615-9223372036854775807-",
        "ffffffffffffffff-18446744073709551615-99999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tb_cursor_t c = {9, 9, 9};
        if (tb_cursor_parse(bad[i], strlen(bad[i]), &c) != TB_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(c.epoch == 9 && c.seq == 9 && c.version == 9); /* untouched on failure */
    }
    tb_cursor_t c;
    assert_int_equal(tb_cursor_parse(NULL, 0, &c), TB_EINVAL);
    /* Length is honoured: a valid prefix followed by more bytes is judged by len. */
    assert_int_equal(tb_cursor_parse("0000000000000001-5junk", 18, &c), TB_OK);
    assert_true(c.seq == 5 && c.version == TB_CURSOR_NO_VERSION);
    assert_int_equal(tb_cursor_parse("0000000000000001-5-3-junk", 20, &c), TB_OK);
    assert_true(c.seq == 5 && c.version == 3);
    /* A NUL inside len is not a digit. */
    assert_int_equal(tb_cursor_parse("0000000000000001-5-\0", 20, &c), TB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cursor_format_parse_goldens_round_trip),
        cmocka_unit_test(test_cursor_unknown_version_formats_two_part),
        cmocka_unit_test(test_cursor_parse_old_two_part_form_is_unknown_version),
        cmocka_unit_test(test_cursor_parse_rejects_garbage_overflow_negative_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
