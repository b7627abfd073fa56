/*
 * The graph validator (nodes and links of CONTRACT §4), table-driven: each
 * case is the JSON of nodes and links, the expected status and a piece of
 * the message that must name the offence. Pure; no database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_fixture.h"

static const struct {
    const char *nodes, *links;
    tb_status want;
    const char *message; /* substring of err.message when want != TB_OK */
} cases[] = {
    {NULL, NULL, TB_OK, NULL},
    {"[]", "[]", TB_OK, NULL},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]", NULL, TB_OK, NULL},
    {"[{\"id\":\"a\",\"kind\":\"r\",\"label\":\"\",\"props\":{\"k\":[1,{}]}}]", "[]", TB_OK,
     NULL},
    {"[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"b\",\"kind\":\"r\"}]",
     "[{\"id\":\"a\",\"from\":\"a\",\"to\":\"b\",\"props\":{}}]", TB_OK, NULL},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]", "[{\"id\":\"self\",\"from\":\"a\",\"to\":\"a\"}]", TB_OK,
     NULL},
    {"{}", NULL, TB_EINVAL, "nodes must be an array"},
    {NULL, "7", TB_EINVAL, "links must be an array"},
    {"[1]", NULL, TB_EINVAL, "nodes[0] must be an object"},
    {"[{\"kind\":\"r\"}]", NULL, TB_EINVAL, "nodes[0].id is required"},
    {"[{\"id\":\"a\"}]", NULL, TB_EINVAL, "nodes[0].kind is required"},
    {"[{\"id\":\"a\",\"kind\":\"\"}]", NULL, TB_EINVAL, "nodes[0].kind"},
    {"[{\"id\":7,\"kind\":\"r\"}]", NULL, TB_EINVAL, "nodes[0].id must be a string"},
    {"[{\"id\":\"a.b\",\"kind\":\"r\"}]", NULL, TB_EINVAL, "nodes[0].id must be 1..64"},
    {"[{\"id\":\"\",\"kind\":\"r\"}]", NULL, TB_EINVAL, "nodes[0].id must be 1..64"},
    {"[{\"id\":\"a\\u0000b\",\"kind\":\"r\"}]", NULL, TB_EINVAL, "nodes[0].id"},
    {"[{\"id\":\"a\",\"kind\":\"r\\u0000\"}]", NULL, TB_EINVAL, "NUL"},
    {"[{\"id\":\"a\",\"kind\":\"r\",\"label\":5}]", NULL, TB_EINVAL,
     "nodes[0].label must be a string"},
    {"[{\"id\":\"a\",\"kind\":\"r\",\"props\":[]}]", NULL, TB_EINVAL,
     "nodes[0].props must be an object"},
    {"[{\"id\":\"a\",\"kind\":\"r\",\"colour\":\"red\"}]", NULL, TB_EINVAL, "unknown field"},
    {"[{\"id\":\"a\",\"kind\":\"r\"},{\"id\":\"a\",\"kind\":\"s\"}]", NULL, TB_EINVAL,
     "nodes[1].id duplicates"},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]", "[{\"id\":\"l\",\"from\":\"a\",\"to\":\"z\"}]", TB_EINVAL,
     "links[0].to names a node that does not exist"},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]", "[{\"id\":\"l\",\"from\":\"q\",\"to\":\"a\"}]", TB_EINVAL,
     "links[0].from"},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]",
     "[{\"id\":\"l\",\"from\":\"a\",\"to\":\"a\"},{\"id\":\"l\",\"from\":\"a\",\"to\":\"a\"}]",
     TB_EINVAL, "links[1].id duplicates"},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]", "[{\"id\":\"l\",\"from\":\"a\"}]", TB_EINVAL,
     "links[0].to is required"},
    {"[{\"id\":\"a\",\"kind\":\"r\"}]", "[{\"id\":\"l\",\"from\":\"a\",\"to\":\"a\",\"w\":1}]",
     TB_EINVAL, "links[0] has an unknown field"},
    {NULL, "[{\"id\":\"l\",\"from\":\"a\",\"to\":\"a\"}]", TB_EINVAL, "does not exist"},
};

static json_t *parse(const char *text)
{
    return text ? tb_test_json(text) : NULL;
}

static void test_validate_graph_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
        json_t *nodes = parse(cases[i].nodes), *links = parse(cases[i].links);
        tb_store_err_t err;
        tb_status st = tb_store_validate_graph(nodes, links, &err);
        if (st != cases[i].want)
            fail_msg("case %zu: want %s, got %s (%s)", i, tb_status_str(cases[i].want),
                     tb_status_str(st), err.message);
        if (cases[i].message && !strstr(err.message, cases[i].message))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.message, cases[i].message);
        if (st)
            assert_int_equal(err.reason, TB_STORE_R_INVALID);
        assert_int_equal(tb_store_validate_graph(nodes, links, NULL), st);
        json_decref(links);
        json_decref(nodes);
    }
}

static void test_validate_graph_text_bounds(void **state)
{
    (void)state;
    char text[TB_STORE_TEXT_MAX + 2];
    memset(text, 'k', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    json_t *nodes = json_pack("[{s:s, s:s}]", "id", "a", "kind", text);
    assert_int_equal(tb_store_validate_graph(nodes, NULL, NULL), TB_EINVAL);
    json_decref(nodes);
    text[TB_STORE_TEXT_MAX] = '\0';
    nodes = json_pack("[{s:s, s:s, s:s}]", "id", "a", "kind", text, "label", text);
    assert_int_equal(tb_store_validate_graph(nodes, NULL, NULL), TB_OK);
    json_decref(nodes);
}

static void test_validate_graph_many_nodes_is_linear(void **state)
{
    (void)state;
    /* 20,000 nodes and as many links: a quadratic uniqueness check would take seconds. */
    json_t *nodes = json_array(), *links = json_array();
    char id[32], lid[32], prev[32] = "n0";
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "n%d", i);
        json_array_append_new(nodes, json_pack("{s:s, s:s}", "id", id, "kind", "r"));
        snprintf(lid, sizeof lid, "l%d", i);
        json_array_append_new(links, json_pack("{s:s, s:s, s:s}", "id", lid, "from", prev, "to",
                                               id));
        memcpy(prev, id, sizeof prev);
    }
    assert_int_equal(tb_store_validate_graph(nodes, links, NULL), TB_OK);
    json_decref(links);
    json_decref(nodes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_graph_cases),
        cmocka_unit_test(test_validate_graph_text_bounds),
        cmocka_unit_test(test_validate_graph_many_nodes_is_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
