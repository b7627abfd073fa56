/*
 * The store conformance suite: every operation and its error paths against
 * the backend named by TB_STORE_TEST_URL (SQLite in a scratch file by
 * default), so a new backend runs the same suite unchanged. Each test gets a
 * fresh store; tests that list across topologies check membership, not
 * totals, so they also hold on a shared database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "store_fixture.h"
#include "tb/topic.h"

#define W "test-worker" /* the worker id these tests claim as */

static void assert_keys(const json_t *obj, const char *const *keys, size_t n)
{
    assert_true(json_is_object(obj));
    assert_int_equal(json_object_size(obj), n);
    for (size_t i = 0; i < n; i++) {
        if (!json_object_get(obj, keys[i]))
            fail_msg("missing key %s", keys[i]);
    }
}

static void assert_timestamp(const json_t *v)
{
    const char *s = json_string_value(v);
    assert_non_null(s);
    /* 2025-11-22T08:13:20.123Z */
    assert_int_equal(strlen(s), 24);
    assert_int_equal(s[4], '-');
    assert_int_equal(s[10], 'T');
    assert_int_equal(s[19], '.');
    assert_int_equal(s[23], 'Z');
}

static void assert_doc_shape(const json_t *doc)
{
    static const char *const keys[] = {"id",    "name",  "status",     "version",
                                       "nodes", "links", "created_at", "updated_at"};
    assert_keys(doc, keys, TB_ARRAY_LEN(keys));
    assert_true(json_is_array(json_object_get(doc, "nodes")));
    assert_true(json_is_array(json_object_get(doc, "links")));
    assert_timestamp(json_object_get(doc, "created_at"));
    assert_timestamp(json_object_get(doc, "updated_at"));
}

static void assert_row_shape(const json_t *row)
{
    static const char *const keys[] = {"id",       "topology_id", "op",
                                       "payload",  "state",       "error",
                                       "attempts", "created_at",  "updated_at"};
    assert_keys(row, keys, TB_ARRAY_LEN(keys));
    assert_true(tb_topology_id_valid(tb_store_row_id(row)));
    assert_non_null(tb_store_row_payload(row));
    assert_timestamp(json_object_get(row, "created_at"));
}

static json_t *enqueue(tb_store_t *s, const char *tid, const char *node)
{
    json_t *payload = json_pack("{s:s, s:s}", "id", node, "kind", "router");
    json_t *row = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_enqueue(s, tid, "add_node", payload, TB_STORE_NO_VERSION,
                                             &row, &err);
    if (st)
        fail_msg("enqueue: %s", err.message);
    json_decref(payload);
    return row;
}

static void test_store_open_bad_urls_einval(void **state)
{
    (void)state;
    static const char *const urls[] = {"",
                                       "mysql://x",
                                       "sqlite:",
                                       "postgres:x",
                                       "postgres://localhost/x?no_such_option=1",
                                       "SQLITE:x.db",
                                       "file:x.db"};
    for (size_t i = 0; i < TB_ARRAY_LEN(urls); i++) {
        tb_store_t *s = (tb_store_t *)(uintptr_t)1;
        tb_store_err_t err;
        assert_int_equal(tb_store_open(&s, urls[i], NULL, &err), TB_EINVAL);
        assert_null(s);
        assert_int_equal(err.reason, TB_STORE_R_INVALID);
        assert_true(strlen(err.message) > 0);
    }
    tb_store_t *s = NULL;
    assert_int_equal(tb_store_open(&s, NULL, NULL, NULL), TB_EINVAL);
    tb_store_options_t bad = {.lease_s = -1};
    assert_int_equal(tb_store_open(&s, "sqlite:/nonexistent/x.db", &bad, NULL), TB_EINVAL);
    tb_store_close(NULL);
}

static void test_store_topology_create_returns_contract_document(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    json_t *nodes = tb_test_json("[{\"id\":\"a\",\"kind\":\"router\",\"label\":\"A\","
                                 "\"props\":{\"x\":1}},{\"id\":\"b\",\"kind\":\"switch\"}]");
    json_t *links = tb_test_json("[{\"id\":\"l1\",\"from\":\"a\",\"to\":\"b\"}]");
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(s, "lab é", nodes, links, &doc, NULL), TB_OK);
    assert_doc_shape(doc);
    const char *id = tb_store_doc_id(doc);
    assert_int_equal(strlen(id), 18);
    assert_memory_equal(id, "t_", 2);
    assert_true(tb_topology_id_valid(id));
    assert_string_equal(tb_store_doc_status(doc), "pending");
    assert_int_equal(tb_store_doc_version(doc), 0);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "lab é");
    assert_true(json_equal(json_object_get(doc, "nodes"), nodes));
    assert_true(json_equal(json_object_get(doc, "links"), links));

    json_t *again = NULL;
    assert_int_equal(tb_store_topology_get(s, id, &again, NULL), TB_OK);
    assert_true(json_equal(doc, again));

    json_t *list = NULL;
    assert_int_equal(tb_store_topology_list(s, &list, NULL), TB_OK);
    bool seen = false;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        static const char *const keys[] = {"id", "name", "status", "version", "updated_at"};
        assert_keys(e, keys, TB_ARRAY_LEN(keys));
        if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
            seen = true;
    }
    assert_true(seen);
    json_decref(list);
    json_decref(again);
    json_decref(doc);
    json_decref(links);
    json_decref(nodes);
}

static void test_store_topology_create_defaults_to_empty_graph(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(s, "empty", NULL, NULL, &doc, NULL), TB_OK);
    assert_int_equal(json_array_size(json_object_get(doc, "nodes")), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "links")), 0);
    json_decref(doc);
}

static void test_store_topology_create_bad_input_einval_writes_nothing(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    json_t *before = NULL;
    assert_int_equal(tb_store_topology_list(s, &before, NULL), TB_OK);
    char long_name[TB_STORE_NAME_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    static const char *const names[] = {"", "bad\xff", "tab\there", "nl\n"};
    for (size_t i = 0; i < TB_ARRAY_LEN(names); i++) {
        json_t *doc = NULL;
        tb_store_err_t err;
        assert_int_equal(tb_store_topology_create(s, names[i], NULL, NULL, &doc, &err),
                         TB_EINVAL);
        assert_null(doc);
        assert_int_equal(err.reason, TB_STORE_R_INVALID);
    }
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(s, long_name, NULL, NULL, &doc, NULL), TB_EINVAL);
    assert_int_equal(tb_store_topology_create(s, NULL, NULL, NULL, &doc, NULL), TB_EINVAL);

    json_t *nodes = tb_test_json("{}");
    tb_store_err_t err;
    assert_int_equal(tb_store_topology_create(s, "x", nodes, NULL, &doc, &err), TB_EINVAL);
    assert_string_equal(err.message, "nodes must be an array");
    json_decref(nodes);

    /* A document just over the limit: one node with a large props string. */
    json_t *big = tb_test_json("[{\"id\":\"a\",\"kind\":\"k\",\"props\":{}}]");
    char *blob = malloc(TB_STORE_DOC_MAX);
    memset(blob, 'x', TB_STORE_DOC_MAX);
    json_object_set_new(json_object_get(json_array_get(big, 0), "props"), "blob",
                        json_stringn(blob, TB_STORE_DOC_MAX));
    free(blob);
    assert_int_equal(tb_store_topology_create(s, "x", big, NULL, &doc, &err), TB_EINVAL);
    assert_non_null(strstr(err.message, "limit"));
    json_decref(big);

    json_t *after = NULL;
    assert_int_equal(tb_store_topology_list(s, &after, NULL), TB_OK);
    assert_int_equal(json_array_size(after), json_array_size(before));
    json_decref(after);
    json_decref(before);
}

static void test_store_topology_get_unknown_or_malformed_enotfound(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char long_id[TB_TOKEN_MAX_LEN + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    static const char *const fixed[] = {"t_0000000000000000", "a.b", "*", ">", "%2e", "",
                                        "x' OR '1'='1"};
    for (size_t i = 0; i < TB_ARRAY_LEN(fixed) + 2; i++) {
        const char *id = i < TB_ARRAY_LEN(fixed) ? fixed[i] : i == TB_ARRAY_LEN(fixed) ? long_id
                                                                                      : NULL;
        json_t *doc = NULL;
        tb_store_err_t err;
        assert_int_equal(tb_store_topology_get(s, id, &doc, &err), TB_ENOTFOUND);
        assert_null(doc);
        assert_int_equal(err.reason, TB_STORE_R_NOT_FOUND);
    }
}

static void test_store_enqueue_returns_contract_row(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *payload = tb_test_json("{\"id\":\"n1\",\"kind\":\"router\"}");
    json_t *row = NULL;
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", payload, 0, &row, NULL),
                     TB_OK);
    assert_row_shape(row);
    assert_memory_equal(tb_store_row_id(row), "m_", 2);
    assert_int_equal(strlen(tb_store_row_id(row)), 18);
    assert_string_equal(tb_store_row_topology_id(row), tid);
    assert_string_equal(tb_store_row_op(row), "add_node");
    assert_string_equal(tb_store_row_state(row), "pending");
    assert_true(json_is_null(json_object_get(row, "error")));
    assert_int_equal(json_integer_value(json_object_get(row, "attempts")), 0);
    assert_true(json_equal(tb_store_row_payload(row), payload));

    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(s, tid, NULL, &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 1);
    assert_true(json_equal(json_array_get(rows, 0), row));
    /* A NULL row out-param is allowed. */
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "remove_node", payload,
                                               TB_STORE_NO_VERSION, NULL, NULL),
                     TB_OK);
    assert_int_equal(tb_test_count_rows(s, tid), 2);
    json_decref(rows);
    json_decref(row);
    json_decref(payload);
    free(tid);
}

static void test_store_enqueue_version_conflict_and_not_mutable_distinct(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *payload = tb_test_json("{\"id\":\"n1\"}");
    json_t *row = NULL;
    tb_store_err_t err;
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "remove_node", payload, 5, &row, &err),
                     TB_ECONFLICT);
    assert_null(row);
    assert_int_equal(err.reason, TB_STORE_R_VERSION_CONFLICT);
    assert_string_equal(tb_store_reason_code(err.reason), "version_conflict");
    assert_int_equal(err.current, 0);
    assert_int_equal(err.expected, 5);

    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_PENDING,
                                                  TB_TOPOLOGY_DEPLOYING, NULL, NULL, NULL),
                     TB_OK);
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "remove_node", payload, 0, &row, &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_NOT_MUTABLE);
    assert_string_equal(tb_store_reason_code(err.reason), "not_mutable");
    assert_int_equal(tb_test_count_rows(s, tid), 0);

    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_ACTIVE,
                                                  NULL, NULL, NULL),
                     TB_OK);
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "remove_node", payload, 0, NULL, &err),
                     TB_OK);
    json_decref(payload);
    free(tid);
}

static void test_store_enqueue_bad_input_rejected_writes_nothing(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *obj = tb_test_json("{\"id\":\"n1\"}");
    json_t *arr = tb_test_json("[1]");
    tb_store_err_t err;
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "drop_table", obj, -1, NULL, &err),
                     TB_EINVAL);
    assert_non_null(strstr(err.message, "add_node"));
    assert_int_equal(tb_store_mutation_enqueue(s, tid, NULL, obj, -1, NULL, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", arr, -1, NULL, &err),
                     TB_EINVAL);
    assert_string_equal(err.message, "payload must be an object");
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", NULL, -1, NULL, &err),
                     TB_EINVAL);
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", obj, -7, NULL, &err),
                     TB_EINVAL);
    char *blob = malloc(TB_STORE_PAYLOAD_MAX + 1);
    memset(blob, 'p', TB_STORE_PAYLOAD_MAX);
    blob[TB_STORE_PAYLOAD_MAX] = '\0';
    json_t *big = json_pack("{s:s}", "props", blob);
    free(blob);
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", big, -1, NULL, &err),
                     TB_EINVAL);
    assert_non_null(strstr(err.message, "limit"));
    assert_int_equal(tb_store_mutation_enqueue(s, "t_0000000000000000", "add_node", obj, -1,
                                               NULL, &err),
                     TB_ENOTFOUND);
    assert_int_equal(tb_store_mutation_enqueue(s, "a.b", "add_node", obj, -1, NULL, &err),
                     TB_ENOTFOUND);
    assert_int_equal(tb_test_count_rows(s, tid), 0);
    json_decref(big);
    json_decref(arr);
    json_decref(obj);
    free(tid);
}

static void test_store_mutation_list_filters_oldest_first(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *r[3];
    for (int i = 0; i < 3; i++)
        r[i] = enqueue(s, tid, i == 0 ? "a" : i == 1 ? "b" : "c");
    json_t *claimed = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &claimed, &c, NULL), TB_OK);
    assert_string_equal(tb_store_row_id(claimed), tb_store_row_id(r[0]));
    assert_string_equal(tb_store_row_state(claimed), "applying");

    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(s, tid, NULL, &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(tb_store_row_id(json_array_get(rows, (size_t)i)),
                            tb_store_row_id(r[i]));
    json_decref(rows);
    assert_int_equal(tb_store_mutation_list(s, tid, "pending", &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 2);
    assert_string_equal(tb_store_row_id(json_array_get(rows, 0)), tb_store_row_id(r[1]));
    json_decref(rows);
    assert_int_equal(tb_store_mutation_list(s, tid, "applying", &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    assert_int_equal(tb_store_mutation_list(s, tid, "applied", &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);

    tb_store_err_t err;
    static const char *const bad[] = {"done", "", "PENDING", "pending "};
    for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
        rows = NULL;
        assert_int_equal(tb_store_mutation_list(s, tid, bad[i], &rows, &err), TB_EINVAL);
        assert_null(rows);
        assert_non_null(strstr(err.message, "state must be one of"));
    }
    assert_int_equal(tb_store_mutation_list(s, "t_0000000000000000", NULL, &rows, &err),
                     TB_ENOTFOUND);
    json_decref(claimed);
    for (int i = 0; i < 3; i++)
        json_decref(r[i]);
    free(tid);
}

static void test_store_snapshot_and_in_flight_pending_applying_only(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *r1 = enqueue(s, tid, "a"), *r2 = enqueue(s, tid, "b"), *r3 = enqueue(s, tid, "c");
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, "boom", true, NULL, NULL), TB_OK);
    json_decref(row);
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    assert_string_equal(tb_store_row_id(row), tb_store_row_id(r2));

    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_in_flight(s, tid, &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 2);
    assert_string_equal(tb_store_row_state(json_array_get(rows, 0)), "applying");
    assert_string_equal(tb_store_row_id(json_array_get(rows, 1)), tb_store_row_id(r3));
    json_decref(rows);

    json_t *snap = NULL;
    assert_int_equal(tb_store_snapshot(s, tid, &snap, NULL), TB_OK);
    static const char *const keys[] = {"topology_id", "status", "version", "in_flight"};
    assert_keys(snap, keys, TB_ARRAY_LEN(keys));
    assert_string_equal(json_string_value(json_object_get(snap, "status")), "pending");
    assert_int_equal(json_array_size(json_object_get(snap, "in_flight")), 2);
    json_decref(snap);
    assert_int_equal(tb_store_snapshot(s, "nope", &snap, NULL), TB_ENOTFOUND);
    assert_int_equal(tb_store_mutation_in_flight(s, "a.b", &rows, NULL), TB_ENOTFOUND);
    assert_null(rows);
    json_decref(row);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    free(tid);
}

static bool contains_id(const json_t *ids, const char *id)
{
    size_t i;
    const json_t *v;
    json_array_foreach(ids, i, v) {
        if (strcmp(json_string_value(v), id) == 0)
            return true;
    }
    return false;
}

static void test_store_topologies_with_pending_lists_only_pending(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *busy = tb_test_create_topology(s, "busy");
    char *idle = tb_test_create_topology(s, "idle");
    json_decref(enqueue(s, busy, "a"));
    json_decref(enqueue(s, idle, "a"));
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, idle, W, &row, &c, NULL), TB_OK);
    json_t *ids = NULL;
    assert_int_equal(tb_store_topologies_with_pending(s, &ids, NULL), TB_OK);
    assert_true(contains_id(ids, busy));
    assert_false(contains_id(ids, idle));
    json_decref(ids);
    json_decref(row);
    free(idle);
    free(busy);
}

static void test_store_claim_serialises_a_topology_in_order(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    tb_store_err_t err;
    json_t *row = NULL;
    tb_store_claim_t c, c2;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, &err), TB_ENOTFOUND);
    assert_null(row);
    json_t *r1 = enqueue(s, tid, "a"), *r2 = enqueue(s, tid, "b");
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    assert_string_equal(tb_store_row_id(row), tb_store_row_id(r1));
    assert_string_equal(c.mutation_id, tb_store_row_id(r1));
    assert_string_equal(c.topology_id, tid);
    assert_string_equal(c.worker, W);
    assert_int_equal(c.kind, TB_CLAIM_MUTATION);
    assert_true(c.token > 0);
    assert_int_equal(c.expected_version, TB_STORE_NO_VERSION);
    json_t *second = NULL;
    /* r2 waits until r1 is settled: one topology's mutations apply in order. */
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &second, &c2, &err), TB_ENOTFOUND);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 1, NULL, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &second, &c2, NULL), TB_OK);
    assert_string_equal(tb_store_row_id(second), tb_store_row_id(r2));
    /* Every claim of a topology gets a larger fencing token. */
    assert_true(c2.token > c.token);
    json_decref(second);
    assert_int_equal(tb_store_mutation_claim(s, "x.y", W, &second, &c2, &err), TB_ENOTFOUND);
    assert_null(second);
    assert_int_equal(tb_store_mutation_claim(s, "t_0000000000000000", W, &second, &c2, &err),
                     TB_ENOTFOUND);
    assert_null(second);
    assert_int_equal(tb_store_mutation_claim(s, tid, "bad worker", &second, &c2, &err),
                     TB_EINVAL);
    assert_int_equal(tb_store_mutation_claim(s, tid, "", &second, &c2, &err), TB_EINVAL);
    json_decref(doc);
    json_decref(row);
    json_decref(r1);
    json_decref(r2);
    free(tid);
}

static void test_store_mark_applied_updates_document_and_version(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *pending = enqueue(s, tid, "a");
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    json_array_append_new(json_object_get(doc, "nodes"),
                          tb_test_json("{\"id\":\"a\",\"kind\":\"router\"}"));
    tb_store_err_t err;
    /* Not claimed yet: a forged claim is stale. */
    tb_store_claim_t forged = {.kind = TB_CLAIM_MUTATION, .token = 1, .worker = W};
    snprintf(forged.topology_id, sizeof forged.topology_id, "%s", tid);
    snprintf(forged.mutation_id, sizeof forged.mutation_id, "%s", tb_store_row_id(pending));
    assert_int_equal(tb_store_mutation_mark_applied(s, &forged, doc, 1, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 2, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_VERSION_CONFLICT);
    assert_int_equal(err.current, 0);
    json_t *bad = tb_test_json("{\"nodes\":[{\"id\":\"a\"}],\"links\":[]}");
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, bad, 1, NULL, &err), TB_EINVAL);
    json_decref(bad);
    bad = tb_test_json("{\"nodes\":[]}");
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, bad, 1, NULL, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 0, NULL, &err), TB_EINVAL);
    tb_store_claim_t other = c;
    snprintf(other.mutation_id, sizeof other.mutation_id, "m_0000000000000000");
    assert_int_equal(tb_store_mutation_mark_applied(s, &other, doc, 1, NULL, &err), TB_ENOTFOUND);
    snprintf(other.mutation_id, sizeof other.mutation_id, "m.x");
    assert_int_equal(tb_store_mutation_mark_applied(s, &other, doc, 1, NULL, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_mark_applied(s, NULL, doc, 1, NULL, &err), TB_EINVAL);
    /* Another worker, or an older token: refused, nothing written. */
    other = c;
    snprintf(other.worker, sizeof other.worker, "someone-else");
    assert_int_equal(tb_store_mutation_mark_applied(s, &other, doc, 1, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    other = c;
    other.token = c.token - 1 > 0 ? c.token - 1 : c.token + 1;
    assert_int_equal(tb_store_mutation_mark_applied(s, &other, doc, 1, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    json_decref(bad);

    json_t *applied = NULL;
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 1, &applied, &err), TB_OK);
    assert_string_equal(tb_store_row_state(applied), "applied");
    json_t *after = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &after, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(after), 1);
    assert_true(json_equal(json_object_get(after, "nodes"), json_object_get(doc, "nodes")));
    /* Applied once; a second mark is a stale claim and changes nothing. */
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 2, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    json_decref(after);
    json_decref(applied);
    json_decref(row);
    json_decref(doc);
    json_decref(pending);
    free(tid);
}

static void test_store_mark_failed_records_reason(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_t *pending = enqueue(s, tid, "a");
    tb_store_err_t err;
    tb_store_claim_t forged = {.kind = TB_CLAIM_MUTATION, .token = 1, .worker = W};
    snprintf(forged.topology_id, sizeof forged.topology_id, "%s", tid);
    snprintf(forged.mutation_id, sizeof forged.mutation_id, "%s", tb_store_row_id(pending));
    assert_int_equal(tb_store_mutation_mark_failed(s, &forged, "x", true, NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    char *long_reason = malloc(TB_STORE_REASON_MAX + 2);
    memset(long_reason, 'r', TB_STORE_REASON_MAX + 1);
    long_reason[TB_STORE_REASON_MAX + 1] = '\0';
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, long_reason, true, NULL, &err),
                     TB_EINVAL);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, "", true, NULL, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, NULL, true, NULL, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, "bad\xc3", true, NULL, &err),
                     TB_EINVAL);
    tb_store_claim_t other = c;
    snprintf(other.mutation_id, sizeof other.mutation_id, "m_0000000000000000");
    assert_int_equal(tb_store_mutation_mark_failed(s, &other, "x", true, NULL, &err),
                     TB_ENOTFOUND);
    free(long_reason);
    json_t *failed = NULL;
    assert_int_equal(
        tb_store_mutation_mark_failed(s, &c, "duplicate node id\nline 2", true, &failed, &err),
        TB_OK);
    assert_string_equal(tb_store_row_state(failed), "failed");
    assert_string_equal(json_string_value(json_object_get(failed, "error")),
                        "duplicate node id\nline 2");
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 0);
    json_decref(doc);
    json_decref(failed);
    json_decref(row);
    json_decref(pending);
    free(tid);
}

static void test_store_recover_stale_requeues_once_then_fails(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "q");
    json_decref(enqueue(s, tid, "a"));
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    tb_store_recovery_t out = {-1, -1};
    /* Within the lease, by the database's clock, nothing is touched. */
    assert_int_equal(tb_store_recover_stale(s, 0, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 0);
    assert_int_equal(out.failed, 0);
    int64_t later = (TB_STORE_LEASE_DEFAULT_S + 5) * 1000;
    assert_int_equal(tb_store_recover_stale(s, later, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    assert_int_equal(out.failed, 0);
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(s, tid, "pending", &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "attempts")), 1);
    json_decref(rows);
    json_decref(row);
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    assert_int_equal(tb_store_recover_stale(s, later, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 0);
    assert_int_equal(out.failed, 1);
    assert_int_equal(tb_store_mutation_list(s, tid, "failed", &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 1);
    json_t *failed = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(failed, "error")), "interrupted");
    assert_int_equal(json_integer_value(json_object_get(failed, "attempts")), 2);
    json_decref(rows);
    json_decref(row);
    assert_int_equal(tb_store_recover_stale(s, later, NULL, NULL), TB_OK);
    assert_int_equal(tb_store_recover_stale(s, -1, NULL, NULL), TB_EINVAL);
    free(tid);
}

static void test_store_names_and_codes_are_stable(void **state)
{
    (void)state;
    tb_topology_status st;
    assert_int_equal(tb_topology_status_parse("tearing_down", &st), TB_OK);
    assert_int_equal(st, TB_TOPOLOGY_TEARING_DOWN);
    assert_int_equal(tb_topology_status_parse("any", &st), TB_EINVAL);
    assert_int_equal(tb_topology_status_parse(NULL, &st), TB_EINVAL);
    assert_string_equal(tb_topology_status_name(TB_TOPOLOGY_TORN_DOWN), "torn_down");
    tb_mutation_state ms;
    assert_int_equal(tb_mutation_state_parse("applying", &ms), TB_OK);
    assert_int_equal(ms, TB_MUTATION_APPLYING);
    assert_int_equal(tb_mutation_state_parse("Applying", &ms), TB_EINVAL);
    assert_string_equal(tb_mutation_state_name(TB_MUTATION_FAILED), "failed");
    assert_true(tb_mutation_op_valid("remove_link"));
    assert_false(tb_mutation_op_valid("remove_links"));
    assert_string_equal(tb_store_reason_code(TB_STORE_R_SCHEMA_TOO_NEW), "schema_too_new");
    assert_non_null(tb_store_backend(tb_test_store_of(state)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_open_bad_urls_einval),
        cmocka_unit_test_setup_teardown(test_store_topology_create_returns_contract_document,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_topology_create_defaults_to_empty_graph,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(
            test_store_topology_create_bad_input_einval_writes_nothing, tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_topology_get_unknown_or_malformed_enotfound,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_enqueue_returns_contract_row, tb_test_store_setup,
                                        tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(
            test_store_enqueue_version_conflict_and_not_mutable_distinct, tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_enqueue_bad_input_rejected_writes_nothing,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_mutation_list_filters_oldest_first, tb_test_store_setup,
                                        tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_snapshot_and_in_flight_pending_applying_only,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_topologies_with_pending_lists_only_pending,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_claim_serialises_a_topology_in_order, tb_test_store_setup,
                                        tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_mark_applied_updates_document_and_version,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_mark_failed_records_reason, tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_recover_stale_requeues_once_then_fails, tb_test_store_setup,
                                        tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_store_names_and_codes_are_stable, tb_test_store_setup, tb_test_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
