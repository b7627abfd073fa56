/* SSE framing: golden vectors (tests/vectors/sse), rejection paths, read-back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "sse_reader.h"
#include "tb/envelope.h"
#include "tb/sse.h"
#include "vectors.h"

static char *vector_path(const char *name, const char *file)
{
    size_t n = strlen(name) + strlen(file) + 8;
    char *p = malloc(n);
    snprintf(p, n, "sse/%s/%s", name, file);
    return p;
}

static void check_vector(const char *name)
{
    char *in_path = vector_path(name, "input.json");
    char *exp_path = vector_path(name, "expected.txt");
    size_t in_len, exp_len;
    char *in_text = tb_test_read_vector(in_path, &in_len);
    char *expected = tb_test_read_vector(exp_path, &exp_len);
    assert_non_null(in_text);
    assert_non_null(expected);
    json_t *in = json_loads(in_text, 0, NULL);
    assert_non_null(in);
    const char *id = json_string_value(json_object_get(in, "id"));
    const char *event = json_string_value(json_object_get(in, "event"));
    const json_t *data = json_object_get(in, "data");
    tb_buf_t out;
    tb_buf_init(&out);
    assert_int_equal(tb_sse_format_event(&out, id, event, json_string_value(data),
                                         json_string_length(data)),
                     TB_OK);
    if (out.len != exp_len || memcmp(out.data, expected, exp_len) != 0)
        fail_msg("vector %s: got\n%s\nexpected\n%s", name, out.data, expected);

    /* The frame reads back with the same id and event, and data with LF line breaks. */
    tb_sse_frame_t frame;
    assert_int_equal(tb_sse_read_frame(out.data, out.len, &frame), out.len);
    if (id)
        assert_string_equal(frame.id, id);
    else
        assert_null(frame.id);
    if (event)
        assert_string_equal(frame.event, event);
    tb_sse_frame_cleanup(&frame);

    tb_buf_cleanup(&out);
    json_decref(in);
    free(in_text);
    free(expected);
    free(in_path);
    free(exp_path);
}

static void test_sse_format_event_matches_golden_vectors(void **state)
{
    (void)state;
    size_t len;
    char *list = tb_test_read_vector("sse/CASES", &len);
    assert_non_null(list);
    int cases = 0;
    char *save = NULL;
    for (char *name = strtok_r(list, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
        check_vector(name);
        cases++;
    }
    assert_true(cases >= 8);
    free(list);
}

static void test_sse_format_event_refuses_line_breaks_in_id_and_event(void **state)
{
    (void)state;
    tb_buf_t out;
    tb_buf_init(&out);
    tb_buf_append_str(&out, "prefix");
    assert_int_equal(tb_sse_format_event(&out, "1\n2", "e", "d", 1), TB_EINVAL);
    assert_int_equal(tb_sse_format_event(&out, "1\r", "e", "d", 1), TB_EINVAL);
    assert_int_equal(tb_sse_format_event(&out, "1", "e\nvil", "d", 1), TB_EINVAL);
    assert_int_equal(tb_sse_format_event(&out, "1", "e\r\n", "d", 1), TB_EINVAL);
    assert_int_equal(tb_sse_format_event(&out, "1", "", "d", 1), TB_EINVAL);
    assert_int_equal(tb_sse_format_event(&out, "1", "e", "a\0b", 3), TB_EINVAL);
    assert_string_equal(out.data, "prefix");
    assert_int_equal(out.len, 6);
    tb_buf_cleanup(&out);
}

static void test_sse_format_into_fixed_buffer_fits_or_leaves_it_untouched(void **state)
{
    (void)state;
    char mem[32];
    tb_buf_t out;
    tb_buf_init_fixed(&out, mem, sizeof mem);
    assert_int_equal(tb_sse_format_comment(&out, "keepalive"), TB_OK);
    assert_string_equal(mem, ": keepalive\n\n");
    size_t before = out.len;
    assert_int_equal(tb_sse_format_event(&out, "0123456789abcdef-1", "status", "{}", 2), TB_EFULL);
    assert_int_equal(out.len, before);
    assert_string_equal(mem, ": keepalive\n\n");
    /* After a refused frame the buffer still takes frames that fit. */
    assert_int_equal(tb_sse_format_retry(&out, 2500), TB_OK);
    assert_string_equal(mem, ": keepalive\n\nretry: 2500\n\n");
    assert_int_equal(tb_sse_format_comment(&out, "this comment does not fit"), TB_EFULL);
    assert_int_equal(tb_sse_format_retry(&out, 4294967295u), TB_EFULL);
    assert_string_equal(mem, ": keepalive\n\nretry: 2500\n\n");
    char tiny[1];
    tb_buf_init_fixed(&out, tiny, 0);
    assert_int_equal(tb_sse_format_retry(&out, 1), TB_EFULL);
}

static void test_sse_comment_refuses_line_breaks(void **state)
{
    (void)state;
    tb_buf_t out;
    tb_buf_init(&out);
    assert_int_equal(tb_sse_format_comment(&out, "a\nb"), TB_EINVAL);
    assert_int_equal(tb_sse_format_comment(&out, "a\rb"), TB_EINVAL);
    assert_int_equal(out.len, 0);
    assert_int_equal(tb_sse_format_comment(&out, ""), TB_OK);
    assert_string_equal(out.data, ": \n\n");
    tb_buf_cleanup(&out);
}

static void test_sse_event_data_is_one_json_line_with_contract_fields(void **state)
{
    (void)state;
    tb_event_t *ev = NULL;
    const char *payload = "{\"state\":\"active\",\"note\":\"line1\\nline2\"}";
    assert_int_equal(tb_event_create(&ev, "topology.t1.status", NULL, payload, strlen(payload),
                                     NULL),
                     TB_OK);
    tb_buf_t out;
    tb_buf_init(&out);
    assert_int_equal(tb_sse_event_data(&out, ev), TB_OK);
    assert_null(strpbrk(out.data, "\r\n"));
    json_t *parsed = json_loads(out.data, 0, NULL);
    assert_non_null(parsed);
    assert_int_equal(json_object_size(parsed), 4);
    assert_string_equal(json_string_value(json_object_get(parsed, "topic")), "topology.t1.status");
    assert_string_equal(json_string_value(json_object_get(parsed, "type")), "status");
    assert_true(json_number_value(json_object_get(parsed, "ts")) > 1.7e9);
    const json_t *p = json_object_get(parsed, "payload");
    assert_string_equal(json_string_value(json_object_get(p, "note")), "line1\nline2");
    json_decref(parsed);

    char mem[16];
    tb_buf_t fixed;
    tb_buf_init_fixed(&fixed, mem, sizeof mem);
    assert_int_equal(tb_sse_event_data(&fixed, ev), TB_EFULL);
    assert_int_equal(fixed.len, 0);
    tb_buf_cleanup(&out);
    tb_event_unref(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_format_event_matches_golden_vectors),
        cmocka_unit_test(test_sse_format_event_refuses_line_breaks_in_id_and_event),
        cmocka_unit_test(test_sse_format_into_fixed_buffer_fits_or_leaves_it_untouched),
        cmocka_unit_test(test_sse_comment_refuses_line_breaks),
        cmocka_unit_test(test_sse_event_data_is_one_json_line_with_contract_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
