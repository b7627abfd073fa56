/* The nats URL list parser: accepted forms, normalisation, and rejections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus_int.h"

static void test_url_accepts_lists_and_normalises(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        size_t n;
        const char *first, *last;
    } ok[] = {
        {"nats://127.0.0.1:4222", 1, "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
        {"nats://localhost", 1, "nats://localhost:4222", "nats://localhost:4222"},
        {"nats://a:1,b:2,nats://c:65535", 3, "nats://a:1", "nats://c:65535"},
        {"nats://[::1]:4223", 1, "nats://[::1]:4223", "nats://[::1]:4223"},
        {"nats://nats-1.example.com:4222,[fe80::1]", 2, "nats://nats-1.example.com:4222",
         "nats://[fe80::1]:4222"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char **servers;
        size_t n;
        const char *why = NULL;
        assert_int_equal(tb__bus_url_parse(ok[i].url, &servers, &n, &why), TB_OK);
        assert_int_equal(n, ok[i].n);
        assert_string_equal(servers[0], ok[i].first);
        assert_string_equal(servers[n - 1], ok[i].last);
        tb__bus_url_free(servers, n);
    }
}

static void test_url_rejects_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "", "nats://", "nats:/a:1", "http://a:1", "nats://a:", "nats://a:0", "nats://a:65536",
        "nats://a:01", "nats://a:1x", "nats://a:1,", "nats://,a:1", "nats://a b:1",
        "nats://user:pw@a:1", "nats://a:1/path", "nats://[::1", "nats://[]:1", "nats://[::g]:1",
        "nats://a:99999999999999999999",
        ("nats://a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9,a:10,a:11,a:12,a:13,a:14,a:15,a:16,a:17"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char **servers = (char **)1;
        size_t n = 9;
        const char *why = NULL;
        if (tb__bus_url_parse(bad[i], &servers, &n, &why) != TB_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_null(servers);
        assert_int_equal(n, 0);
        assert_non_null(why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_accepts_lists_and_normalises),
        cmocka_unit_test(test_url_rejects_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
