/*
 * Validation of what enters the store from outside, independent of any
 * backend: topology names, failure reasons and the nodes/links graph of
 * CONTRACT §4, its canonical serialisation, and the enqueue admission rule.
 * Pure functions; any thread.
 * Unique-id checks use a jansson object as a hash set, so a graph of tens of
 * thousands of nodes validates in linear time.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tb/envelope.h"
#include "tb/topic.h"

typedef struct field_rule {
    const char *key;
    int type;      /* JSON_STRING or JSON_OBJECT */
    bool required;
    bool token;    /* a string in the token grammar */
    size_t min, max; /* string length bounds in bytes */
} field_rule_t;

static const field_rule_t node_rules[] = {
    {"id", JSON_STRING, true, true, 1, TB_TOKEN_MAX_LEN},
    {"kind", JSON_STRING, true, false, 1, TB_STORE_TEXT_MAX},
    {"label", JSON_STRING, false, false, 0, TB_STORE_TEXT_MAX},
    {"props", JSON_OBJECT, false, false, 0, 0},
};

static const field_rule_t link_rules[] = {
    {"id", JSON_STRING, true, true, 1, TB_TOKEN_MAX_LEN},
    {"from", JSON_STRING, true, true, 1, TB_TOKEN_MAX_LEN},
    {"to", JSON_STRING, true, true, 1, TB_TOKEN_MAX_LEN},
    {"props", JSON_OBJECT, false, false, 0, 0},
};

/* "nodes[3].id must be ..." */
static tb_status invalid(tb_store_err_t *err, const char *what, size_t index, const char *key,
                         const char *problem)
{
    return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "%s[%zu]%s%s %s", what, index,
                          *key ? "." : "", key, problem);
}

static tb_status check_field(const json_t *v, const field_rule_t *r, const char *what,
                             size_t index, tb_store_err_t *err)
{
    if (!v) {
        if (r->required)
            return invalid(err, what, index, r->key, "is required");
        return TB_OK;
    }
    if (r->type == JSON_OBJECT) {
        if (!json_is_object(v))
            return invalid(err, what, index, r->key, "must be an object");
        return TB_OK;
    }
    if (!json_is_string(v))
        return invalid(err, what, index, r->key, "must be a string");
    size_t len = json_string_length(v);
    if (r->token && !tb_topology_id_valid_n(json_string_value(v), len))
        return invalid(err, what, index, r->key, "must be 1..64 bytes of [A-Za-z0-9_-]");
    if (len < r->min || len > r->max || memchr(json_string_value(v), '\0', len))
        return invalid(err, what, index, r->key, "is too long, empty or contains NUL");
    return TB_OK;
}

/* Checks one element against rules; unknown members are refused. */
static tb_status check_element(const json_t *el, const field_rule_t *rules, size_t nrules,
                               const char *what, size_t index, tb_store_err_t *err)
{
    if (!json_is_object(el))
        return invalid(err, what, index, "", "must be an object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)(uintptr_t)el, key, v) {
        bool known = false;
        for (size_t i = 0; i < nrules && !known; i++)
            known = strcmp(key, rules[i].key) == 0;
        if (!known)
            return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                                  "%s[%zu] has an unknown field (allowed: %s)", what, index,
                                  rules == node_rules ? "id, kind, label, props"
                                                      : "id, from, to, props");
    }
    for (size_t i = 0; i < nrules; i++) {
        tb_status st = check_field(json_object_get(el, rules[i].key), &rules[i], what, index, err);
        if (st)
            return st;
    }
    return TB_OK;
}

static tb_status check_nodes(const json_t *nodes, json_t *ids, tb_store_err_t *err)
{
    size_t i;
    const json_t *n;
    json_array_foreach(nodes, i, n) {
        tb_status st = check_element(n, node_rules, TB_ARRAY_LEN(node_rules), "nodes", i, err);
        if (st)
            return st;
        const char *id = json_string_value(json_object_get(n, "id"));
        if (json_object_get(ids, id))
            return invalid(err, "nodes", i, "id", "duplicates an earlier node id");
        json_object_set_new(ids, id, json_true());
    }
    return TB_OK;
}

static tb_status check_links(const json_t *links, const json_t *node_ids, json_t *ids,
                             tb_store_err_t *err)
{
    size_t i;
    const json_t *l;
    json_array_foreach(links, i, l) {
        tb_status st = check_element(l, link_rules, TB_ARRAY_LEN(link_rules), "links", i, err);
        if (st)
            return st;
        const char *id = json_string_value(json_object_get(l, "id"));
        if (json_object_get(ids, id))
            return invalid(err, "links", i, "id", "duplicates an earlier link id");
        json_object_set_new(ids, id, json_true());
        if (!json_object_get(node_ids, json_string_value(json_object_get(l, "from"))))
            return invalid(err, "links", i, "from", "names a node that does not exist");
        if (!json_object_get(node_ids, json_string_value(json_object_get(l, "to"))))
            return invalid(err, "links", i, "to", "names a node that does not exist");
    }
    return TB_OK;
}

tb_status tb_store_validate_graph(const json_t *nodes, const json_t *links, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    if (!err)
        err = &scratch;
    memset(err, 0, sizeof *err);
    if (nodes && !json_is_array(nodes))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "nodes must be an array");
    if (links && !json_is_array(links))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "links must be an array");
    json_t *node_ids = json_object();
    json_t *link_ids = json_object();
    tb_status st = nodes ? check_nodes(nodes, node_ids, err) : TB_OK;
    if (!st && links)
        st = check_links(links, node_ids, link_ids, err);
    json_decref(link_ids);
    json_decref(node_ids);
    return st;
}

tb_status tb__store_graph_text(const json_t *nodes, const json_t *links, char **text,
                               tb_store_err_t *err)
{
    *text = NULL;
    tb_status st = tb_store_validate_graph(nodes, links, err);
    if (st)
        return st;
    json_t *graph = json_object();
    json_object_set_new(graph, "nodes", nodes ? json_deep_copy(nodes) : json_array());
    json_object_set_new(graph, "links", links ? json_deep_copy(links) : json_array());
    char *out = json_dumps(graph, JSON_COMPACT);
    json_decref(graph);
    TB_ASSERT(out); /* jansson allocates through the aborting allocator or malloc */
    size_t len = strlen(out);
    if (len > TB_STORE_DOC_MAX) {
        free(out);
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "the document is %zu bytes; the limit is %d", len,
                              TB_STORE_DOC_MAX);
    }
    *text = out;
    return TB_OK;
}

tb_status tb__store_check_text(const char *s, size_t max, bool single_line, const char *what,
                               tb_store_err_t *err)
{
    if (!s || !*s)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "%s must not be empty", what);
    size_t len = strlen(s);
    if (len > max)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "%s is %zu bytes; the limit is %zu", what, len, max);
    if (!tb_utf8_valid(s, len))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "%s is not valid UTF-8", what);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 || c == 0x7f) && (single_line || (c != '\n' && c != '\t')))
            return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                                  "%s contains a control character", what);
    }
    return TB_OK;
}

tb_status tb__store_check_enqueue(tb_topology_status status, int64_t version, int64_t expected,
                                  tb_store_err_t *err)
{
    if (!tb_topology_status_mutable(status))
        return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_NOT_MUTABLE,
                              "a %s topology accepts no mutations",
                              tb_topology_status_name(status));
    if (expected != TB_STORE_NO_VERSION && expected != version) {
        err->current = version;
        err->expected = expected;
        return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_VERSION_CONFLICT,
                              "the topology is at version %lld, not %lld", (long long)version,
                              (long long)expected);
    }
    return TB_OK;
}
