/* The envelope: building, encoding, decoding and every rejection reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tb/clock.h"
#include "tb/envelope.h"

static tb_event_t *decode_ok(const char *subject, const char *text)
{
    tb_event_t *ev = NULL;
    tb_envelope_error why = TB_ENVELOPE_BAD_JSON;
    tb_status st = tb_envelope_decode(subject, text, strlen(text), 42.5, &ev, &why);
    if (st != TB_OK)
        fail_msg("decode of %s failed: %s", text, tb_envelope_error_str(why));
    assert_int_equal(why, TB_ENVELOPE_OK);
    return ev;
}

static void expect_reject(const char *subject, const char *data, size_t len,
                          tb_envelope_error expected)
{
    tb_event_t *ev = (tb_event_t *)0x1;
    tb_envelope_error why = TB_ENVELOPE_OK;
    assert_int_equal(tb_envelope_decode(subject, data, len, 1.0, &ev, &why), TB_EINVAL);
    assert_null(ev);
    if (why != expected)
        fail_msg("expected %s, got %s", tb_envelope_error_str(expected),
                 tb_envelope_error_str(why));
}

static void test_event_create_fills_id_ts_type_and_compact_payload(void **state)
{
    (void)state;
    tb_event_t *ev = NULL;
    const char *payload = "{ \"mutation_id\" : \"m1\",\n \"version\": 3 }";
    double before = tb_clock_wall();
    assert_int_equal(tb_event_create(&ev, "topology.t42.mutation.applied", NULL, payload,
                                     strlen(payload), NULL),
                     TB_OK);
    assert_string_equal(ev->topic, "topology.t42.mutation.applied");
    assert_string_equal(ev->type, "mutation.applied");
    assert_string_equal(ev->payload, "{\"mutation_id\":\"m1\",\"version\":3}");
    assert_int_equal(ev->payload_len, strlen(ev->payload));
    assert_int_equal(strlen(ev->id), 32);
    assert_int_equal(strspn(ev->id, "0123456789abcdef"), 32);
    assert_true(ev->ts >= before && ev->ts <= tb_clock_wall());
    assert_int_equal(ev->seq, 0);

    tb_event_t *other = NULL;
    assert_int_equal(tb_event_create(&other, "system.mutator.health", "custom.type", "{}", 2, NULL),
                     TB_OK);
    assert_string_equal(other->type, "custom.type");
    assert_string_not_equal(other->id, ev->id);
    tb_event_unref(other);
    tb_event_unref(ev);
}

static void test_event_create_rejects_bad_topic_type_and_payload(void **state)
{
    (void)state;
    const struct {
        const char *topic, *type, *payload;
    } cases[] = {
        {"topology.*.status", NULL, "{}"},
        {"topology..status", NULL, "{}"},
        {"", NULL, "{}"},
        {"topology.t1.status", "bad type", "{}"},
        {"topology.t1.status", "", "{}"},
        {"topology.t1.status", NULL, "[]"},
        {"topology.t1.status", NULL, "\"x\""},
        {"topology.t1.status", NULL, "{"},
        {"topology.t1.status", NULL, "{\"a\":1,\"a\":2}"},
        {"topology.t1.status", NULL, "{\"a\":\"\xff\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tb_event_t *ev = (tb_event_t *)0x1;
        const char *why = NULL;
        tb_status st = tb_event_create(&ev, cases[i].topic, cases[i].type, cases[i].payload,
                                       strlen(cases[i].payload), &why);
        if (st != TB_EINVAL)
            fail_msg("case %zu was accepted", i);
        assert_null(ev);
        assert_non_null(why);
    }
    json_t *arr = json_array();
    tb_event_t *ev = NULL;
    assert_int_equal(tb_event_create_json(&ev, "topology.t1.status", NULL, arr, NULL), TB_EINVAL);
    json_decref(arr);
}

static void test_envelope_round_trip_preserves_fields(void **state)
{
    (void)state;
    json_t *payload = json_pack("{s:s, s:s, s:i}", "state", "active", "previous", "deploying",
                                "n", 7);
    tb_event_t *ev = NULL;
    assert_int_equal(tb_event_create_json(&ev, "topology.t42.status", NULL, payload, NULL), TB_OK);
    json_decref(payload);
    tb_buf_t out;
    tb_buf_init(&out);
    assert_int_equal(tb_envelope_encode(ev, &out), TB_OK);
    assert_null(strchr(out.data, '\n'));

    json_t *root = json_loads(out.data, 0, NULL);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(root, "id")), ev->id);
    assert_string_equal(json_string_value(json_object_get(root, "topic")), ev->topic);
    assert_string_equal(json_string_value(json_object_get(root, "type")), "status");
    json_decref(root);

    tb_event_t *back = decode_ok("topology.t42.status", out.data);
    assert_string_equal(back->id, ev->id);
    assert_string_equal(back->topic, ev->topic);
    assert_string_equal(back->type, ev->type);
    assert_string_equal(back->payload, ev->payload);
    assert_true(back->ts > ev->ts - 1e-5 && back->ts < ev->ts + 1e-5);
    tb_event_unref(back);

    char small[20];
    tb_buf_t fixed;
    tb_buf_init_fixed(&fixed, small, sizeof small);
    assert_int_equal(tb_envelope_encode(ev, &fixed), TB_EFULL);
    assert_int_equal(fixed.len, 0);
    tb_buf_cleanup(&out);
    tb_event_unref(ev);
}

static void test_envelope_decode_trusts_subject_not_topic_field(void **state)
{
    (void)state;
    tb_event_t *ev = decode_ok("topology.t1.status",
                               "{\"v\":1,\"topic\":\"topology.t2.status\",\"payload\":{}}");
    assert_string_equal(ev->topic, "topology.t1.status");
    assert_string_equal(ev->type, "status");
    tb_event_unref(ev);
}

static void test_envelope_decode_fills_missing_optional_fields(void **state)
{
    (void)state;
    tb_event_t *ev = decode_ok("topology.t1.mutation.failed", "{\"payload\":{\"reason\":\"x\"}}");
    assert_string_equal(ev->id, "");
    assert_true(ev->ts == 42.5);
    assert_string_equal(ev->type, "mutation.failed");
    assert_string_equal(ev->payload, "{\"reason\":\"x\"}");
    tb_event_unref(ev);

    ev = decode_ok("topology.t1.x", "{\"ts\":1763800000,\"type\":\"custom\",\"payload\":{}}");
    assert_true(ev->ts == 1763800000.0);
    assert_string_equal(ev->type, "custom");
    tb_event_unref(ev);
}

static void test_envelope_decode_rejects_each_reason_distinctly(void **state)
{
    (void)state;
    const char *s = "topology.t1.status";
    expect_reject(s, "[1,2]", 5, TB_ENVELOPE_NOT_OBJECT);
    expect_reject(s, "\"text\"", 6, TB_ENVELOPE_NOT_OBJECT);
    expect_reject(s, "42", 2, TB_ENVELOPE_NOT_OBJECT);
    expect_reject(s, "{\"payload\":", 11, TB_ENVELOPE_BAD_JSON);
    expect_reject(s, "", 0, TB_ENVELOPE_BAD_JSON);
    expect_reject(s, "{\"payload\":{},\"payload\":{}}", 27, TB_ENVELOPE_BAD_JSON);
    expect_reject(s, "{\"payload\":{\"a\":\"\\u0000\"}}", 25, TB_ENVELOPE_BAD_JSON);
    expect_reject(s, "{\"payload\":{\"a\":\"\xc3\x28\"}}", 22, TB_ENVELOPE_BAD_UTF8);
    expect_reject(s, "{\"payload\":{\"a\":\"\xed\xa0\x80\"}}", 23, TB_ENVELOPE_BAD_UTF8);
    expect_reject(s, "{}", 2, TB_ENVELOPE_BAD_PAYLOAD);
    expect_reject(s, "{\"payload\":[]}", 14, TB_ENVELOPE_BAD_PAYLOAD);
    expect_reject(s, "{\"payload\":null}", 16, TB_ENVELOPE_BAD_PAYLOAD);
    expect_reject(s, "{\"payload\":\"{}\"}", 16, TB_ENVELOPE_BAD_PAYLOAD);
    expect_reject(s, "{\"v\":2,\"payload\":{}}", 20, TB_ENVELOPE_BAD_VERSION);
    expect_reject(s, "{\"v\":\"1\",\"payload\":{}}", 22, TB_ENVELOPE_BAD_FIELD);
    expect_reject(s, "{\"id\":\"ABC\",\"payload\":{}}", 25, TB_ENVELOPE_BAD_FIELD);
    expect_reject(s, "{\"id\":7,\"payload\":{}}", 21, TB_ENVELOPE_BAD_FIELD);
    expect_reject(s, "{\"ts\":\"now\",\"payload\":{}}", 25, TB_ENVELOPE_BAD_FIELD);
    expect_reject(s, "{\"ts\":-1,\"payload\":{}}", 22, TB_ENVELOPE_BAD_FIELD);
    expect_reject(s, "{\"type\":\"a b\",\"payload\":{}}", 27, TB_ENVELOPE_BAD_FIELD);
    expect_reject(s, "{\"type\":3,\"payload\":{}}", 23, TB_ENVELOPE_BAD_FIELD);
    expect_reject("topology.*.status", "{\"payload\":{}}", 14, TB_ENVELOPE_BAD_SUBJECT);
    expect_reject("", "{\"payload\":{}}", 14, TB_ENVELOPE_BAD_SUBJECT);

    /* Over 1 MiB is refused before any parsing, whatever the content. */
    size_t big = TB_ENVELOPE_MAX_BYTES + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    expect_reject(s, huge, big, TB_ENVELOPE_TOO_LARGE);
    free(huge);
}

static void test_envelope_decode_accepts_exactly_one_mib(void **state)
{
    (void)state;
    size_t len = TB_ENVELOPE_MAX_BYTES;
    char *text = malloc(len + 1);
    const char *head = "{\"payload\":{\"blob\":\"";
    const char *tail = "\"}}";
    size_t fill = len - strlen(head) - strlen(tail);
    memcpy(text, head, strlen(head));
    memset(text + strlen(head), 'x', fill);
    memcpy(text + strlen(head) + fill, tail, strlen(tail) + 1);
    tb_event_t *ev = NULL;
    tb_envelope_error why;
    assert_int_equal(tb_envelope_decode("topology.t1.big", text, len, 0, &ev, &why), TB_OK);
    tb_event_unref(ev);
    free(text);
}

static void test_envelope_error_names_are_distinct(void **state)
{
    (void)state;
    for (int a = 0; a < TB_ENVELOPE_ERROR_COUNT; a++) {
        for (int b = a + 1; b < TB_ENVELOPE_ERROR_COUNT; b++)
            assert_string_not_equal(tb_envelope_error_str((tb_envelope_error)a),
                                    tb_envelope_error_str((tb_envelope_error)b));
    }
    assert_string_equal(tb_envelope_error_str((tb_envelope_error)99), "unknown");
}

static void test_utf8_valid_strict(void **state)
{
    (void)state;
    const struct {
        const char *s;
        size_t len;
        bool ok;
    } cases[] = {
        {"", 0, true},
        {"plain", 5, true},
        {"\xc3\xa9", 2, true},            /* é */
        {"\xe2\x82\xac", 3, true},        /* € */
        {"\xf0\x9f\x98\x80", 4, true},    /* emoji */
        {"\xf4\x8f\xbf\xbf", 4, true},    /* U+10FFFF */
        {"\xc3", 1, false},               /* truncated */
        {"\xe2\x82", 2, false},           /* truncated */
        {"\x80", 1, false},               /* lone continuation */
        {"\xc0\xaf", 2, false},           /* overlong */
        {"\xe0\x80\xaf", 3, false},       /* overlong */
        {"\xf0\x80\x80\xaf", 4, false},   /* overlong */
        {"\xed\xa0\x80", 3, false},       /* surrogate */
        {"\xf4\x90\x80\x80", 4, false},   /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 4, false},   /* invalid lead */
        {"\xff", 1, false},
        {"\xc3\x28", 2, false},           /* bad continuation */
        {"\xe2\x28\xa1", 3, false},
        {"a\0b", 3, true},                /* NUL is valid UTF-8; JSON rules reject it elsewhere */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (tb_utf8_valid(cases[i].s, cases[i].len) != cases[i].ok)
            fail_msg("utf8 case %zu: expected %d", i, cases[i].ok);
    }
}

static void test_event_refcount_frees_on_last_unref(void **state)
{
    (void)state;
    tb_event_t *ev = NULL;
    assert_int_equal(tb_event_create(&ev, "a.b", NULL, "{}", 2, NULL), TB_OK);
    assert_ptr_equal(tb_event_ref(ev), ev);
    assert_int_equal(atomic_load(&ev->refs), 2);
    tb_event_unref(ev);
    assert_int_equal(atomic_load(&ev->refs), 1);
    tb_event_unref(ev); /* LeakSanitizer/valgrind prove the free */
    tb_event_unref(NULL);
}

int main(void)
{
    json_set_alloc_funcs(malloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_create_fills_id_ts_type_and_compact_payload),
        cmocka_unit_test(test_event_create_rejects_bad_topic_type_and_payload),
        cmocka_unit_test(test_envelope_round_trip_preserves_fields),
        cmocka_unit_test(test_envelope_decode_trusts_subject_not_topic_field),
        cmocka_unit_test(test_envelope_decode_fills_missing_optional_fields),
        cmocka_unit_test(test_envelope_decode_rejects_each_reason_distinctly),
        cmocka_unit_test(test_envelope_decode_accepts_exactly_one_mib),
        cmocka_unit_test(test_envelope_error_names_are_distinct),
        cmocka_unit_test(test_utf8_valid_strict),
        cmocka_unit_test(test_event_refcount_frees_on_last_unref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
