/*
 * The chunked request-body decoder: whole bodies, bodies split at every
 * byte, extensions and trailers, the size limit and malformed framing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw_chunked.h"

static const struct {
    const char *in;
    gw_chunked_result result;
    const char *body; /* decoded payload when DONE */
} cases[] = {
    {"c\r\n{\"name\":\"x\"}\r\n0\r\n\r\n", GW_CHUNKED_DONE, "{\"name\":\"x\"}"},
    {"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n", GW_CHUNKED_DONE, "abcde"},
    {"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n", GW_CHUNKED_DONE, "0123456789"},
    {"0\r\n\r\n", GW_CHUNKED_DONE, ""},
    {"3\r\nabc\r\n", GW_CHUNKED_MORE, NULL},
    {"\r\n", GW_CHUNKED_BAD, NULL},
    {"zz\r\n", GW_CHUNKED_BAD, NULL},
    {"3\r\nabcX", GW_CHUNKED_BAD, NULL},
    {"3\nabc", GW_CHUNKED_BAD, NULL},
    {"0\r\n\rX", GW_CHUNKED_BAD, NULL},
    {"11\r\n", GW_CHUNKED_TOO_LARGE, NULL},          /* 17 > 16 */
    {"8\r\n12345678\r\n9\r\n", GW_CHUNKED_TOO_LARGE, NULL}, /* 8 + 9 > 16 */
    {"123456789\r\n", GW_CHUNKED_TOO_LARGE, NULL},
};

enum { MAX = 16 };

static gw_chunked_result feed_split(const char *in, size_t step, tb_buf_t *out)
{
    gw_chunked_t c;
    gw_chunked_init(&c);
    size_t len = strlen(in);
    for (size_t i = 0; i < len; i += step) {
        size_t n = len - i < step ? len - i : step, used = 0;
        gw_chunked_result r = gw_chunked_feed(&c, in + i, n, out, MAX, &used);
        if (r != GW_CHUNKED_MORE) {
            assert_true(used <= n);
            return r;
        }
        assert_int_equal(used, n);
    }
    return GW_CHUNKED_MORE;
}

static void test_chunked_cases_decode_whole_and_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t step = 1; step <= strlen(cases[i].in); step++) {
            tb_buf_t out;
            tb_buf_init(&out);
            gw_chunked_result r = feed_split(cases[i].in, step, &out);
            if (r != cases[i].result)
                print_error("case %zu step %zu: %d\n", i, step, (int)r);
            assert_int_equal(r, cases[i].result);
            if (cases[i].body) {
                assert_int_equal(out.len, strlen(cases[i].body));
                assert_memory_equal(out.data ? out.data : "", cases[i].body, out.len);
            }
            tb_buf_cleanup(&out);
        }
    }
}

static void test_chunked_done_reports_bytes_of_the_body(void **state)
{
    (void)state;
    const char in[] = "1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    gw_chunked_t c;
    gw_chunked_init(&c);
    tb_buf_t out;
    tb_buf_init(&out);
    size_t used = 0;
    assert_int_equal(gw_chunked_feed(&c, in, sizeof in - 1, &out, MAX, &used), GW_CHUNKED_DONE);
    assert_int_equal(used, strlen("1\r\na\r\n0\r\n\r\n"));
    tb_buf_cleanup(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_cases_decode_whole_and_split),
        cmocka_unit_test(test_chunked_done_reports_bytes_of_the_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
