/*
 * The outbox conformance suite (CONTRACT §2, store.h "The outbox") against
 * the backend named by TB_STORE_TEST_URL (SQLite in a scratch file by
 * default; tb_pg_run runs it again against PostgreSQL): every write records
 * exactly its event, in its transaction, with the CONTRACT topic and
 * payload; failed writes record nothing; the relay's read, delete, set-aside
 * and stats calls; the listener; and the store-wide lease by the
 * database's clock. Commit order across connections: test_outbox_race.c.
 *
 * On a shared database the outbox is shared too: each test first drains
 * what earlier tests left, and the lease tests release what they took.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "store_fixture.h"
#include "tb/clock.h"
#include "tb/topic.h"

#define W "test-worker" /* the worker id these tests claim as */
#define READ_MAX 10000
#define LEASE_TTL_MS 200

static size_t count_events(tb_store_t *s, const char *tid)
{
    json_t *evs = tb_test_outbox_events(s, tid);
    size_t n = json_array_size(evs);
    json_decref(evs);
    return n;
}

/* Asserts that obj has exactly the n keys listed. */
static void assert_keys(const json_t *obj, const char *const *keys, size_t n)
{
    assert_true(json_is_object(obj));
    if (json_object_size(obj) != n)
        fail_msg("expected %zu keys, got %s", n, json_dumps(obj, JSON_COMPACT));
    for (size_t i = 0; i < n; i++) {
        if (!json_object_get(obj, keys[i]))
            fail_msg("missing key %s", keys[i]);
    }
}

static int64_t int_of(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static const char *str_of(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    assert_non_null(v);
    return v;
}

/* The last event of tid: exactly one more than `before`, of type `type`. Borrowed from evs. */
static const json_t *one_more(json_t *evs, size_t before, const char *type)
{
    assert_int_equal(json_array_size(evs), before + 1);
    const json_t *e = json_array_get(evs, before);
    assert_string_equal(str_of(e, "type"), type);
    return json_object_get(e, "payload");
}

static void assert_mutation_event(json_t *evs, size_t before, const char *type, const json_t *row,
                                  int64_t version)
{
    const json_t *p = one_more(evs, before, type);
    assert_string_equal(str_of(p, "mutation_id"), tb_store_row_id(row));
    assert_string_equal(str_of(p, "op"), tb_store_row_op(row));
    assert_int_equal(int_of(p, "version"), version);
    if (strcmp(type, "mutation.applied") == 0) {
        static const char *const keys[] = {"mutation_id", "op", "version"};
        assert_keys(p, keys, TB_ARRAY_LEN(keys));
    } else if (strcmp(type, "mutation.failed") == 0) {
        static const char *const keys[] = {"mutation_id", "op", "reason", "version"};
        assert_keys(p, keys, TB_ARRAY_LEN(keys));
    } else {
        static const char *const keys[] = {"mutation_id", "op", "payload", "version"};
        assert_keys(p, keys, TB_ARRAY_LEN(keys));
        assert_true(json_equal(json_object_get(p, "payload"), tb_store_row_payload(row)));
    }
}

static json_t *enqueue_node(tb_store_t *s, const char *tid, const char *node)
{
    json_t *payload = json_pack("{s:s, s:s}", "id", node, "kind", "router");
    json_t *row = NULL;
    tb_store_err_t err;
    tb_status st =
        tb_store_mutation_enqueue(s, tid, "add_node", payload, TB_STORE_NO_VERSION, &row, &err);
    json_decref(payload);
    if (st)
        fail_msg("enqueue: %s", err.message);
    return row;
}

/* Claims the next row of tid and applies it as version current + 1. */
static json_t *claim_and_apply(tb_store_t *s, const char *tid, int64_t new_version)
{
    json_t *claimed = NULL, *doc = NULL, *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &claimed, &c, NULL), TB_OK);
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, new_version, &row, NULL), TB_OK);
    json_decref(doc);
    json_decref(claimed);
    return row;
}

static void test_outbox_each_write_records_its_event(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "events");
    /* Creating a topology is no change event. */
    assert_int_equal(count_events(s, tid), 0);

    json_t *row = enqueue_node(s, tid, "a");
    json_t *evs = tb_test_outbox_events(s, tid);
    assert_mutation_event(evs, 0, "mutation.enqueued", row, 0);
    json_decref(evs);
    json_decref(row);

    row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    evs = tb_test_outbox_events(s, tid);
    assert_mutation_event(evs, 1, "mutation.applying", row, 0);
    json_decref(evs);

    json_t *doc = NULL, *applied = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 1, &applied, NULL), TB_OK);
    evs = tb_test_outbox_events(s, tid);
    assert_mutation_event(evs, 2, "mutation.applied", applied, 1);
    json_decref(evs);
    json_decref(applied);
    json_decref(doc);
    json_decref(row);

    json_t *second = enqueue_node(s, tid, "b");
    json_decref(second);
    row = NULL;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    json_t *failed = NULL;
    assert_int_equal(
        tb_store_mutation_mark_failed(s, &c, "duplicate node id b", true, &failed, NULL), TB_OK);
    evs = tb_test_outbox_events(s, tid);
    assert_string_equal(str_of(json_object_get(json_array_get(evs, 3), "payload"), "mutation_id"),
                        tb_store_row_id(row));
    assert_int_equal(int_of(json_object_get(json_array_get(evs, 3), "payload"), "version"), 1);
    assert_mutation_event(evs, 5, "mutation.failed", failed, 1);
    assert_string_equal(str_of(json_object_get(json_array_get(evs, 5), "payload"), "reason"),
                        "duplicate node id b");
    json_decref(evs);
    json_decref(failed);
    json_decref(row);

    /* A transition with a reason, then one without: "reason" is optional. */
    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_PENDING,
                                                  TB_TOPOLOGY_DEPLOYING, "deploy requested by u1",
                                                  NULL, NULL),
                     TB_OK);
    evs = tb_test_outbox_events(s, tid);
    const json_t *p = one_more(evs, 6, "status");
    static const char *const with_reason[] = {"state", "previous", "version", "reason"};
    assert_keys(p, with_reason, TB_ARRAY_LEN(with_reason));
    assert_string_equal(str_of(p, "state"), "deploying");
    assert_string_equal(str_of(p, "previous"), "pending");
    assert_int_equal(int_of(p, "version"), 1);
    assert_string_equal(str_of(p, "reason"), "deploy requested by u1");
    json_decref(evs);
    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_ACTIVE,
                                                  NULL, NULL, NULL),
                     TB_OK);
    evs = tb_test_outbox_events(s, tid);
    p = one_more(evs, 7, "status");
    static const char *const no_reason[] = {"state", "previous", "version"};
    assert_keys(p, no_reason, TB_ARRAY_LEN(no_reason));
    assert_string_equal(str_of(p, "state"), "active");
    assert_string_equal(str_of(p, "previous"), "deploying");
    /* Every event has its own id. */
    for (size_t i = 0; i < json_array_size(evs); i++)
        for (size_t k = i + 1; k < json_array_size(evs); k++)
            assert_string_not_equal(str_of(json_array_get(evs, i), "id"),
                                    str_of(json_array_get(evs, k), "id"));
    json_decref(evs);
    free(tid);
}

static void test_outbox_failed_write_records_nothing(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *tid = tb_test_create_topology(s, "refusals");
    json_t *payload = tb_test_json("{\"id\":\"n\",\"kind\":\"k\"}");
    tb_store_err_t err;
    /* Stale expected version. */
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", payload, 5, NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_VERSION_CONFLICT);
    /* Nothing to claim. */
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_ENOTFOUND);
    assert_int_equal(count_events(s, tid), 0);

    /* Mark a pending (not applying) row; apply with a version that cannot follow. */
    row = enqueue_node(s, tid, "a");
    tb_store_claim_t forged = {.kind = TB_CLAIM_MUTATION, .token = 1, .worker = W};
    snprintf(forged.topology_id, sizeof forged.topology_id, "%s", tid);
    snprintf(forged.mutation_id, sizeof forged.mutation_id, "%s", tb_store_row_id(row));
    assert_int_equal(tb_store_mutation_mark_failed(s, &forged, "x", true, NULL, &err),
                     TB_ECONFLICT);
    json_decref(row);
    row = NULL;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, 7, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_VERSION_CONFLICT);
    json_decref(doc);
    json_decref(row);
    assert_int_equal(count_events(s, tid), 2); /* enqueued, applying */

    /* Illegal and mismatched transitions. */
    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_TORN_DOWN,
                                                  "no", NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_ACTIVE,
                                                  TB_TOPOLOGY_TEARING_DOWN, NULL, NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(count_events(s, tid), 2);

    /* A torn-down topology takes no mutation. */
    static const tb_topology_status walk[] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_TEARING_DOWN,
                                              TB_TOPOLOGY_TORN_DOWN};
    for (size_t i = 0; i < TB_ARRAY_LEN(walk); i++)
        assert_int_equal(
            tb_store_topology_transition(s, tid, TB_TOPOLOGY_ANY, walk[i], NULL, NULL, NULL),
            TB_OK);
    assert_int_equal(count_events(s, tid), 5);
    assert_int_equal(
        tb_store_mutation_enqueue(s, tid, "add_node", payload, TB_STORE_NO_VERSION, NULL, &err),
        TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_NOT_MUTABLE);
    assert_int_equal(count_events(s, tid), 5);
    json_decref(payload);
    free(tid);
}

static void test_outbox_rows_in_commit_order_deleted_and_set_aside(void **state)
{
    tb_store_t *s = tb_test_store_of(state);
    char *a = tb_test_create_topology(s, "a");
    char *b = tb_test_create_topology(s, "b");
    /* Interleaved writes on two topologies, one thread: commit order is call order. */
    json_decref(enqueue_node(s, a, "a1"));
    json_decref(enqueue_node(s, b, "b1"));
    assert_int_equal(tb_store_topology_transition(s, b, TB_TOPOLOGY_ANY, TB_TOPOLOGY_DEPLOYING,
                                                  NULL, NULL, NULL),
                     TB_OK);
    json_decref(enqueue_node(s, a, "a2"));
    json_decref(claim_and_apply(s, a, 1));
    static const char *const topics[] = {
        "a.mutation.enqueued", "b.mutation.enqueued", "b.status",
        "a.mutation.enqueued", "a.mutation.applying", "a.mutation.applied"};
    enum { N = TB_ARRAY_LEN(topics) };
    tb_outbox_row_t *rows = NULL;
    size_t n = 0;
    assert_int_equal(tb_store_outbox_read(s, READ_MAX, &rows, &n, NULL), TB_OK);
    assert_int_equal(n, N);
    int64_t seqs[N];
    for (size_t i = 0; i < n; i++) {
        char want[TB_TOPIC_BUF_SIZE];
        snprintf(want, sizeof want, "topology.%s.%s", topics[i][0] == 'a' ? a : b, topics[i] + 2);
        assert_string_equal(rows[i].topic, want);
        seqs[i] = rows[i].seq;
        if (i > 0)
            assert_true(seqs[i] > seqs[i - 1]);
    }
    tb_store_outbox_rows_free(rows, n);
    /* A short read returns the oldest rows. */
    assert_int_equal(tb_store_outbox_read(s, 2, &rows, &n, NULL), TB_OK);
    assert_int_equal(n, 2);
    assert_true(rows[0].seq == seqs[0] && rows[1].seq == seqs[1]);
    tb_store_outbox_rows_free(rows, n);

    int64_t depth = -1, age = -1, aside0 = -1, aside = -1;
    assert_int_equal(tb_store_outbox_stats(s, &depth, &age, &aside0, NULL), TB_OK);
    assert_int_equal(depth, N);
    assert_true(age >= 0 && age < 60000);

    /* Delete exactly rows 0 and 2 (and a seq that never existed). */
    int64_t gone[] = {seqs[0], seqs[2], seqs[N - 1] + 1000};
    assert_int_equal(tb_store_outbox_delete(s, gone, TB_ARRAY_LEN(gone), NULL), TB_OK);
    assert_int_equal(tb_store_outbox_read(s, READ_MAX, &rows, &n, NULL), TB_OK);
    assert_int_equal(n, N - 2);
    assert_true(rows[0].seq == seqs[1] && rows[1].seq == seqs[3] && rows[2].seq == seqs[4] &&
                rows[3].seq == seqs[5]);
    tb_store_outbox_rows_free(rows, n);

    /* Set the oldest remaining row aside: the next read starts behind it. */
    tb_store_err_t err;
    assert_int_equal(tb_store_outbox_set_aside(s, seqs[1], "invalid_envelope", &err), TB_OK);
    assert_int_equal(tb_store_outbox_stats(s, &depth, &age, &aside, NULL), TB_OK);
    assert_int_equal(depth, N - 3);
    assert_int_equal(aside, aside0 + 1);
    assert_int_equal(tb_store_outbox_read(s, READ_MAX, &rows, &n, NULL), TB_OK);
    assert_int_equal(n, N - 3);
    assert_int_equal(rows[0].seq, seqs[3]);
    tb_store_outbox_rows_free(rows, n);
    /* Again, or a row that is gone: nothing changes. */
    assert_int_equal(tb_store_outbox_set_aside(s, seqs[1], "invalid_envelope", NULL), TB_OK);
    assert_int_equal(tb_store_outbox_set_aside(s, seqs[0], "invalid_envelope", NULL), TB_OK);
    assert_int_equal(tb_store_outbox_stats(s, &depth, &age, &aside, NULL), TB_OK);
    assert_int_equal(depth, N - 3);
    assert_int_equal(aside, aside0 + 1);

    /* The caller's mistakes. */
    assert_int_equal(tb_store_outbox_set_aside(s, seqs[3], "", &err), TB_EINVAL);
    assert_int_equal(tb_store_outbox_set_aside(s, seqs[3], "two\nlines", &err), TB_EINVAL);
    assert_int_equal(tb_store_outbox_read(s, 0, &rows, &n, &err), TB_EINVAL);
    assert_null(rows);
    assert_int_equal(tb_store_outbox_delete(s, NULL, 0, NULL), TB_OK);

    tb_test_outbox_drain(s);
    assert_int_equal(tb_store_outbox_stats(s, &depth, &age, &aside, NULL), TB_OK);
    assert_int_equal(depth, 0);
    assert_int_equal(age, 0);
    free(a);
    free(b);
}

static void test_outbox_no_outbox_option_records_nothing(void **state)
{
    tb_test_store_t *t = *state;
    tb_store_t *quiet = tb_test_store_open_with(t, true);
    char *tid = tb_test_create_topology(quiet, "quiet");
    json_decref(enqueue_node(quiet, tid, "a"));
    json_decref(claim_and_apply(quiet, tid, 1));
    assert_int_equal(tb_store_topology_transition(quiet, tid, TB_TOPOLOGY_ANY,
                                                  TB_TOPOLOGY_DEPLOYING, "r", NULL, NULL),
                     TB_OK);
    assert_int_equal(tb_store_topology_transition(quiet, tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_ACTIVE,
                                                  NULL, NULL, NULL),
                     TB_OK);
    assert_int_equal(count_events(t->store, tid), 0);
    int64_t depth = -1, age = -1, aside = -1;
    assert_int_equal(tb_store_outbox_stats(quiet, &depth, &age, &aside, NULL), TB_OK);
    assert_int_equal(depth, 0);
    /* The same database through a store that writes events: it records them. */
    json_decref(enqueue_node(t->store, tid, "b"));
    assert_int_equal(count_events(t->store, tid), 1);
    tb_store_close(quiet);
    free(tid);
}

static void count_call(void *ud)
{
    (*(int *)ud)++;
}

static void test_outbox_listener_once_per_committed_write(void **state)
{
    tb_test_store_t *t = *state;
    tb_store_t *s = t->store;
    int calls = 0;
    tb_store_set_outbox_listener(s, count_call, &calls);
    char *tid = tb_test_create_topology(s, "heard");
    assert_int_equal(calls, 0);
    json_t *row = enqueue_node(s, tid, "a");
    assert_int_equal(calls, 1);
    json_decref(row);
    json_decref(claim_and_apply(s, tid, 1)); /* claim, mark applied */
    assert_int_equal(calls, 3);
    row = enqueue_node(s, tid, "b");
    json_decref(row);
    row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, "no", true, NULL, NULL), TB_OK);
    json_decref(row);
    assert_int_equal(calls, 6);
    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_DEPLOYING,
                                                  NULL, NULL, NULL),
                     TB_OK);
    assert_int_equal(calls, 7);

    /* Reads and relay calls are not writes of change events. */
    json_t *v = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &v, NULL), TB_OK);
    json_decref(v);
    assert_int_equal(tb_store_topology_list(s, &v, NULL), TB_OK);
    json_decref(v);
    assert_int_equal(tb_store_mutation_list(s, tid, NULL, &v, NULL), TB_OK);
    json_decref(v);
    assert_int_equal(tb_store_snapshot(s, tid, &v, NULL), TB_OK);
    json_decref(v);
    assert_int_equal(count_events(s, tid), 7);
    tb_test_outbox_drain(s);
    assert_int_equal(calls, 7);

    /* Failed writes. */
    json_t *payload = tb_test_json("{\"id\":\"n\",\"kind\":\"k\"}");
    assert_int_equal(tb_store_mutation_enqueue(s, tid, "add_node", payload, 0, NULL, NULL),
                     TB_ECONFLICT);
    assert_int_equal(tb_store_mutation_claim(s, tid, W, &row, &c, NULL), TB_ENOTFOUND);
    assert_int_equal(tb_store_topology_transition(s, tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_PENDING,
                                                  NULL, NULL, NULL),
                     TB_ECONFLICT);
    assert_int_equal(calls, 7);

    /* Writes through a store without outbox wake nobody. */
    tb_store_t *quiet = tb_test_store_open_with(t, true);
    int quiet_calls = 0;
    tb_store_set_outbox_listener(quiet, count_call, &quiet_calls);
    assert_int_equal(tb_store_topology_transition(quiet, tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_ACTIVE,
                                                  NULL, NULL, NULL),
                     TB_OK);
    assert_int_equal(
        tb_store_mutation_enqueue(quiet, tid, "add_node", payload, TB_STORE_NO_VERSION, NULL, NULL),
        TB_OK);
    assert_int_equal(quiet_calls, 0);
    tb_store_close(quiet);
    json_decref(payload);

    /* Cleared: no more calls. */
    tb_store_set_outbox_listener(s, NULL, NULL);
    json_decref(enqueue_node(s, tid, "c"));
    assert_int_equal(calls, 7);
    free(tid);
}

static bool lease(tb_store_t *s, const char *holder, int64_t ttl_ms)
{
    bool held = true;
    tb_store_err_t err;
    if (tb_store_outbox_lease(s, holder, ttl_ms, &held, &err) != TB_OK)
        fail_msg("lease %s: %s", holder, err.message);
    return held;
}

static void test_outbox_lease_one_holder_at_a_time(void **state)
{
    tb_test_store_t *t = *state;
    tb_store_t *sa = t->store;
    tb_store_t *sb = tb_test_store_open_with(t, false); /* another relay: its own connection */
    const char *a = "relay-a:1", *b = "relay-b:2";

    assert_true(lease(sa, a, 60000));
    assert_false(lease(sb, b, 60000));
    assert_true(lease(sa, a, 60000)); /* renewal */
    assert_false(lease(sb, b, 60000));
    /* Only the holder's release counts. */
    assert_int_equal(tb_store_outbox_release(sb, b, NULL), TB_OK);
    assert_false(lease(sb, b, 60000));
    assert_int_equal(tb_store_outbox_release(sa, a, NULL), TB_OK);
    assert_true(lease(sb, b, 60000));
    assert_false(lease(sa, a, 60000));

    /* Expiry: b renews for a short ttl and stops; a takes over once it ran out. */
    int64_t t0 = tb_clock_mono_ms();
    assert_true(lease(sb, b, LEASE_TTL_MS));
    assert_false(lease(sa, a, LEASE_TTL_MS));
    bool took = false;
    int64_t waited = 0;
    while (!took && (waited = tb_clock_mono_ms() - t0) < 5000) {
        took = lease(sa, a, LEASE_TTL_MS);
        if (!took)
            tb_test_store_nap_ms(10);
    }
    assert_true(took);
    waited = tb_clock_mono_ms() - t0;
    if (waited < LEASE_TTL_MS - 50)
        fail_msg("the lease changed hands after %lld ms, before its %d ms ran out",
                 (long long)waited, LEASE_TTL_MS);
    /* The old holder cannot renew what it lost. */
    assert_false(lease(sb, b, LEASE_TTL_MS));

    tb_store_err_t err;
    bool held = true;
    assert_int_equal(tb_store_outbox_lease(sa, "", 1000, &held, &err), TB_EINVAL);
    assert_false(held);
    assert_int_equal(tb_store_outbox_lease(sa, "a b", 1000, &held, &err), TB_EINVAL);
    assert_int_equal(tb_store_outbox_lease(sa, a, 50, &held, &err), TB_EINVAL);
    assert_int_equal(tb_store_outbox_lease(sa, a, 600001, &held, &err), TB_EINVAL);
    assert_int_equal(tb_store_outbox_release(sa, "", &err), TB_EINVAL);

    assert_int_equal(tb_store_outbox_release(sa, a, NULL), TB_OK);
    tb_store_close(sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, tb_test_store_setup, tb_test_store_teardown)
        T(test_outbox_each_write_records_its_event),
        T(test_outbox_failed_write_records_nothing),
        T(test_outbox_rows_in_commit_order_deleted_and_set_aside),
        T(test_outbox_no_outbox_option_records_nothing),
        T(test_outbox_listener_once_per_committed_write),
        T(test_outbox_lease_one_holder_at_a_time),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
