/*
 * The graph ops, table-driven: every op's success, every invariant it can
 * break, and on every failure a document that is byte-for-byte what it was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tb/alloc.h"
#include "tb/mutator.h"

#define BASE_DOC                                                                                  \
    "{\"id\":\"t_1\",\"status\":\"active\",\"version\":3,"                                       \
    "\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","     \
    "\"props\":{\"x\":1}},{\"id\":\"c\",\"kind\":\"s\"}],"                                       \
    "\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"},{\"id\":\"l2\",\"from\":\"b\","      \
    "\"to\":\"c\"}]}"

typedef struct op_case {
    const char *name;
    const char *op;
    const char *payload;
    const char *expect; /* success: the resulting {"nodes","links"}; failure: NULL */
    const char *reason; /* failure: a substring of the reason */
} op_case_t;

static const op_case_t cases[] = {
    /* add_node */
    {"add_node minimal", "add_node", "{\"id\":\"d\",\"kind\":\"h\"}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","
     "\"props\":{\"x\":1}},{\"id\":\"c\",\"kind\":\"s\"},{\"id\":\"d\",\"kind\":\"h\"}],"
     "\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"},{\"id\":\"l2\",\"from\":\"b\","
     "\"to\":\"c\"}]}", NULL},
    {"add_node full", "add_node", "{\"id\":\"d\",\"kind\":\"h\",\"label\":\"D\",\"props\":{\"k\":[1]}}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","
     "\"props\":{\"x\":1}},{\"id\":\"c\",\"kind\":\"s\"},{\"id\":\"d\",\"kind\":\"h\","
     "\"label\":\"D\",\"props\":{\"k\":[1]}}],"
     "\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"},{\"id\":\"l2\",\"from\":\"b\","
     "\"to\":\"c\"}]}", NULL},
    {"add_node duplicate id", "add_node", "{\"id\":\"a\",\"kind\":\"h\"}", NULL, "already exists"},
    {"add_node missing kind", "add_node", "{\"id\":\"d\"}", NULL, "kind is required"},
    {"add_node missing id", "add_node", "{\"kind\":\"h\"}", NULL, "id is required"},
    {"add_node kind not string", "add_node", "{\"id\":\"d\",\"kind\":7}", NULL, "kind must be a string"},
    {"add_node label not string", "add_node", "{\"id\":\"d\",\"kind\":\"h\",\"label\":true}", NULL,
     "label must be a string"},
    {"add_node props not object", "add_node", "{\"id\":\"d\",\"kind\":\"h\",\"props\":[]}", NULL,
     "props must be an object"},
    {"add_node bad id", "add_node", "{\"id\":\"a.b\",\"kind\":\"h\"}", NULL, "id must be 1..64"},
    {"add_node empty kind", "add_node", "{\"id\":\"d\",\"kind\":\"\"}", NULL, "would be invalid"},
    {"add_node unknown field", "add_node", "{\"id\":\"d\",\"kind\":\"h\",\"x\":1}", NULL,
     "unknown field 'x'"},
    /* update_node */
    {"update_node label", "update_node", "{\"id\":\"a\",\"label\":\"A\"}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\",\"label\":\"A\"},{\"id\":\"b\",\"kind\":\"r\","
     "\"label\":\"B\",\"props\":{\"x\":1}},{\"id\":\"c\",\"kind\":\"s\"}],"
     "\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"},{\"id\":\"l2\",\"from\":\"b\","
     "\"to\":\"c\"}]}", NULL},
    {"update_node props replaces", "update_node", "{\"id\":\"b\",\"props\":{\"y\":2}}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","
     "\"props\":{\"y\":2}},{\"id\":\"c\",\"kind\":\"s\"}],"
     "\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"},{\"id\":\"l2\",\"from\":\"b\","
     "\"to\":\"c\"}]}", NULL},
    {"update_node missing node", "update_node", "{\"id\":\"zz\",\"label\":\"A\"}", NULL,
     "no node with id 'zz'"},
    {"update_node nothing to change", "update_node", "{\"id\":\"a\"}", NULL, "label or props"},
    {"update_node kind is not updatable", "update_node", "{\"id\":\"a\",\"kind\":\"x\"}", NULL,
     "unknown field 'kind'"},
    {"update_node props not object", "update_node", "{\"id\":\"a\",\"props\":\"x\"}", NULL,
     "props must be an object"},
    /* remove_node */
    {"remove_node with its links", "remove_node", "{\"id\":\"b\"}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"c\",\"kind\":\"s\"}],\"links\":[]}",
     NULL},
    {"remove_node without links", "remove_node", "{\"id\":\"c\"}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","
     "\"props\":{\"x\":1}}],\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"}]}", NULL},
    {"remove_node missing", "remove_node", "{\"id\":\"zz\"}", NULL, "no node with id 'zz'"},
    {"remove_node id not string", "remove_node", "{\"id\":1}", NULL, "id must be a string"},
    /* add_link */
    {"add_link", "add_link", "{\"id\":\"l3\",\"from\":\"c\",\"to\":\"a\",\"props\":{}}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","
     "\"props\":{\"x\":1}},{\"id\":\"c\",\"kind\":\"s\"}],"
     "\"links\":[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"},{\"id\":\"l2\",\"from\":\"b\","
     "\"to\":\"c\"},{\"id\":\"l3\",\"from\":\"c\",\"to\":\"a\",\"props\":{}}]}", NULL},
    {"add_link duplicate id", "add_link", "{\"id\":\"l1\",\"from\":\"c\",\"to\":\"a\"}", NULL,
     "a link with id 'l1' already exists"},
    {"add_link from missing", "add_link", "{\"id\":\"l3\",\"from\":\"zz\",\"to\":\"a\"}", NULL,
     "from names node 'zz'"},
    {"add_link to missing", "add_link", "{\"id\":\"l3\",\"from\":\"a\",\"to\":\"zz\"}", NULL,
     "to names node 'zz'"},
    {"add_link missing to", "add_link", "{\"id\":\"l3\",\"from\":\"a\"}", NULL, "to is required"},
    {"add_link label not allowed", "add_link", "{\"id\":\"l3\",\"from\":\"a\",\"to\":\"b\",\"label\":\"x\"}",
     NULL, "unknown field 'label'"},
    /* remove_link */
    {"remove_link", "remove_link", "{\"id\":\"l1\"}",
     "{\"nodes\":[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\",\"label\":\"B\","
     "\"props\":{\"x\":1}},{\"id\":\"c\",\"kind\":\"s\"}],"
     "\"links\":[{\"id\":\"l2\",\"from\":\"b\",\"to\":\"c\"}]}", NULL},
    {"remove_link missing", "remove_link", "{\"id\":\"l9\"}", NULL, "no link with id 'l9'"},
    /* any op */
    {"unknown op", "rename_node", "{\"id\":\"a\"}", NULL, "unknown op 'rename_node'"},
    {"payload not an object", "add_node", "[1]", NULL, "payload must be an object"},
};

static void run_case(const op_case_t *c)
{
    json_t *doc = json_loads(BASE_DOC, 0, NULL);
    json_t *payload = json_loads(c->payload, JSON_DECODE_ANY, NULL);
    assert_non_null(doc);
    assert_non_null(payload);
    char *doc_before = json_dumps(doc, JSON_COMPACT);
    char *payload_before = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *out = NULL;
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    tb_status st = tb_mutator_apply_op(doc, c->op, payload, &out, reason);
    if (c->expect) {
        if (st != TB_OK)
            fail_msg("%s: failed with '%s'", c->name, reason);
        char *got = json_dumps(out, JSON_COMPACT);
        json_t *want_json = json_loads(c->expect, 0, NULL);
        char *want = json_dumps(want_json, JSON_COMPACT);
        if (strcmp(got, want) != 0)
            fail_msg("%s:\n got %s\nwant %s", c->name, got, want);
        free(got);
        free(want);
        json_decref(want_json);
    } else {
        if (st != TB_EINVAL || out != NULL)
            fail_msg("%s: expected a refusal, got %d", c->name, st);
        if (!strstr(reason, c->reason))
            fail_msg("%s: reason '%s' lacks '%s'", c->name, reason, c->reason);
    }
    /* Never modified, success or failure. */
    char *doc_after = json_dumps(doc, JSON_COMPACT);
    char *payload_after = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_string_equal(doc_before, doc_after);
    assert_string_equal(payload_before, payload_after);
    free(doc_before);
    free(doc_after);
    free(payload_before);
    free(payload_after);
    json_decref(out);
    json_decref(payload);
    json_decref(doc);
}

static void test_ops_table_matches_expectations(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

static void test_ops_result_shares_nothing_with_input(void **state)
{
    (void)state;
    json_t *doc = json_loads(BASE_DOC, 0, NULL);
    json_t *payload = json_pack("{s:s, s:{s:i}}", "id", "b", "props", "z", 1);
    json_t *out = NULL;
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_apply_op(doc, "update_node", payload, &out, reason), TB_OK);
    /* Changing the result must not reach the input or the payload. */
    json_t *props = json_object_get(json_array_get(json_object_get(out, "nodes"), 1), "props");
    json_object_set_new(props, "z", json_integer(99));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(payload, "props"), "z")),
                     1);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_array_get(json_object_get(doc, "nodes"), 1), "props"),
                         "x")),
                     1);
    json_decref(out);
    json_decref(payload);
    json_decref(doc);
}

static void test_ops_empty_document_accepts_first_node(void **state)
{
    (void)state;
    json_t *doc = json_object(); /* no nodes or links members yet */
    json_t *payload = json_pack("{s:s, s:s}", "id", "n1", "kind", "k");
    json_t *out = NULL;
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_apply_op(doc, "add_node", payload, &out, reason), TB_OK);
    assert_int_equal(json_array_size(json_object_get(out, "nodes")), 1);
    assert_int_equal(json_array_size(json_object_get(out, "links")), 0);
    json_decref(out);
    json_decref(payload);
    json_decref(doc);
}

static void test_ops_malformed_document_is_refused(void **state)
{
    (void)state;
    json_t *doc = json_pack("{s:i}", "nodes", 1);
    json_t *payload = json_pack("{s:s, s:s}", "id", "n1", "kind", "k");
    json_t *out = NULL;
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_apply_op(doc, "add_node", payload, &out, reason), TB_EINVAL);
    assert_null(out);
    assert_non_null(strstr(reason, "must be arrays"));
    assert_int_equal(tb_mutator_apply_op(doc, NULL, payload, &out, reason), TB_EINVAL);
    json_decref(payload);
    json_decref(doc);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_table_matches_expectations),
        cmocka_unit_test(test_ops_result_shares_nothing_with_input),
        cmocka_unit_test(test_ops_empty_document_accepts_first_node),
        cmocka_unit_test(test_ops_malformed_document_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
