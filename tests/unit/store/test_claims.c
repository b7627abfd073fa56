/*
 * The claims conformance suite (tb/store.h "Claims") against the backend
 * named by TB_STORE_TEST_URL (SQLite in a scratch file by default; tb_pg_run
 * runs it again against PostgreSQL): fencing tokens refuse a worker whose
 * claim was taken back, and its refused verdict writes nothing; deploys and
 * teardowns are claimed once, wait for the mutation in flight and hold the
 * queue back while deploying; claims that end without a verdict tell
 * clients (mutation.enqueued again, mutation.failed, status → degraded) and
 * follow the retry policy (given back: attempts kept; lost by the lease:
 * requeued once; started: interrupted at once); a restarted worker's claims
 * are given back at once; expected_version is checked again at apply; and
 * retention prunes settled rows only. Leases are judged by the database's
 * clock, looked ahead by tb_store_recover_stale's ahead_ms.
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
#include "tb/topic.h"

#define A "worker-a"
#define B "worker-b"
#define PAST_LEASE_MS ((TB_STORE_LEASE_DEFAULT_S + 5) * 1000)

static int setup(void **state)
{
    tb_test_store_t *t = malloc(sizeof *t);
    tb_test_store_init(t, 0);
    tb_test_outbox_drain(t->store);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tb_test_store_t *t = *state;
    tb_test_store_cleanup(t);
    free(t);
    return 0;
}

static tb_store_t *store_of(void **state)
{
    return ((tb_test_store_t *)*state)->store;
}

static char *enqueue(tb_store_t *s, const char *tid, const char *node, int64_t expected)
{
    json_t *payload = json_pack("{s:s, s:s}", "id", node, "kind", "router");
    json_t *row = NULL;
    tb_store_err_t err;
    if (tb_store_mutation_enqueue(s, tid, "add_node", payload, expected, &row, &err))
        fail_msg("enqueue: %s", err.message);
    json_decref(payload);
    char *id = strdup(tb_store_row_id(row));
    json_decref(row);
    return id;
}

static void move(tb_store_t *s, const char *tid, tb_topology_status to)
{
    tb_store_err_t err;
    if (tb_store_topology_transition(s, tid, TB_TOPOLOGY_ANY, to, NULL, NULL, &err))
        fail_msg("transition to %s: %s", tb_topology_status_name(to), err.message);
}

static char *active_topology(tb_store_t *s, const char *name)
{
    char *tid = tb_test_create_topology(s, name);
    move(s, tid, TB_TOPOLOGY_DEPLOYING);
    move(s, tid, TB_TOPOLOGY_ACTIVE);
    return tid;
}

static void claim_ok(tb_store_t *s, const char *tid, const char *worker, tb_store_claim_t *c)
{
    json_t *row = NULL;
    tb_store_err_t err;
    if (tb_store_mutation_claim(s, tid, worker, &row, c, &err))
        fail_msg("claim: %s", err.message);
    json_decref(row);
}

/* The state, error and attempts of one row. */
static json_t *row_of(tb_store_t *s, const char *tid, const char *mid)
{
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(s, tid, NULL, &rows, NULL), TB_OK);
    json_t *found = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        if (strcmp(tb_store_row_id(r), mid) == 0)
            found = json_incref(r);
    }
    json_decref(rows);
    assert_non_null(found);
    return found;
}

static void assert_row(tb_store_t *s, const char *tid, const char *mid, const char *state,
                       int64_t attempts, const char *error)
{
    json_t *r = row_of(s, tid, mid);
    assert_string_equal(tb_store_row_state(r), state);
    assert_int_equal(json_integer_value(json_object_get(r, "attempts")), attempts);
    const char *e = json_string_value(json_object_get(r, "error"));
    if (error)
        assert_string_equal(e ? e : "(null)", error);
    json_decref(r);
}

static const char *status_of(tb_store_t *s, const char *tid)
{
    static char buf[32];
    return tb_test_status(s, tid, buf, sizeof buf);
}

/* The types of tid's outbox events from index `from`, comma-separated (status:STATE). */
static char *types_from(tb_store_t *s, const char *tid, size_t from)
{
    json_t *evs = tb_test_outbox_events(s, tid);
    char buf[1024] = "";
    for (size_t i = from; i < json_array_size(evs); i++) {
        const json_t *e = json_array_get(evs, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s", len ? "," : "", type);
        if (strcmp(type, "status") == 0) {
            len = strlen(buf);
            snprintf(buf + len, sizeof buf - len, ":%s",
                     json_string_value(json_object_get(json_object_get(e, "payload"), "state")));
        }
    }
    json_decref(evs);
    return strdup(buf);
}

static void assert_types(tb_store_t *s, const char *tid, size_t from, const char *want)
{
    char *got = types_from(s, tid, from);
    if (strcmp(got, want) != 0)
        fail_msg("events: got %s, want %s", got, want);
    free(got);
}

static size_t count_events(tb_store_t *s, const char *tid)
{
    json_t *evs = tb_test_outbox_events(s, tid);
    size_t n = json_array_size(evs);
    json_decref(evs);
    return n;
}

/* The payload of tid's event number i (new reference). */
static json_t *event_payload(tb_store_t *s, const char *tid, size_t i)
{
    json_t *evs = tb_test_outbox_events(s, tid);
    json_t *p = json_incref(json_object_get(json_array_get(evs, i), "payload"));
    json_decref(evs);
    assert_non_null(p);
    return p;
}

static void test_claims_stale_worker_is_refused_and_writes_nothing(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = active_topology(s, "fenced");
    char *mid = enqueue(s, tid, "a", TB_STORE_NO_VERSION);
    tb_store_claim_t a, b;
    claim_ok(s, tid, A, &a);
    /* A's lease runs out (a paused VM, a stopped process): the row goes to B. */
    tb_store_recovery_t out;
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    claim_ok(s, tid, B, &b);
    assert_true(b.token > a.token);
    assert_string_equal(b.mutation_id, mid);
    size_t events = count_events(s, tid);

    /* A comes back: every finish of its old claim is refused. */
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    tb_store_err_t err;
    assert_int_equal(tb_store_claim_start(s, &a, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    assert_string_equal(tb_store_reason_code(err.reason), "stale_claim");
    assert_int_equal(tb_store_mutation_mark_applied(s, &a, doc, 1, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    assert_int_equal(tb_store_mutation_mark_failed(s, &a, "late", true, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    assert_int_equal(tb_store_claim_release(s, &a, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    /* Nothing of it was written: no event, no status change, the row still B's. */
    assert_int_equal(count_events(s, tid), events);
    assert_string_equal(status_of(s, tid), "active");
    assert_row(s, tid, mid, "applying", 1, NULL);

    /* B finishes. Then A is refused again: its token is older. */
    assert_int_equal(tb_store_claim_start(s, &b, NULL), TB_OK);
    json_array_append_new(json_object_get(doc, "nodes"), json_pack("{s:s, s:s}", "id", "a",
                                                                   "kind", "router"));
    assert_int_equal(tb_store_mutation_mark_applied(s, &b, doc, 1, NULL, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_applied(s, &a, doc, 2, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    assert_row(s, tid, mid, "applied", 1, NULL);
    json_decref(doc);
    assert_int_equal(tb_store_claim_start(s, NULL, &err), TB_EINVAL);
    free(mid);
    free(tid);
}

static void test_claims_lost_claims_tell_clients_and_follow_the_retry_policy(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = active_topology(s, "told");
    char *mid = enqueue(s, tid, "a", TB_STORE_NO_VERSION);
    size_t base = count_events(s, tid);
    tb_store_claim_t c;

    /* Given back before its hook: queued again, attempts kept, and clients hear of it. */
    claim_ok(s, tid, A, &c);
    tb_store_recovery_t out;
    assert_int_equal(tb_store_claim_release(s, &c, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    assert_int_equal(out.failed, 0);
    assert_row(s, tid, mid, "pending", 0, NULL);
    assert_types(s, tid, base, "mutation.applying,mutation.enqueued");
    json_t *p = event_payload(s, tid, base + 1);
    assert_string_equal(json_string_value(json_object_get(p, "mutation_id")), mid);
    assert_string_equal(json_string_value(json_object_get(p, "op")), "add_node");
    assert_true(json_is_object(json_object_get(p, "payload")));
    assert_int_equal(json_integer_value(json_object_get(p, "attempts")), 0);
    assert_true(json_is_true(json_object_get(p, "requeued")));
    assert_int_equal(json_integer_value(json_object_get(p, "version")), 0);
    json_decref(p);

    /* Lost by the lease before its hook: queued again once, attempts 1. */
    claim_ok(s, tid, A, &c);
    assert_int_equal(tb_store_recover_stale(s, 0, &out, NULL), TB_OK);
    assert_int_equal(out.requeued + out.failed, 0);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    assert_row(s, tid, mid, "pending", 1, NULL);
    p = event_payload(s, tid, base + 3);
    assert_int_equal(json_integer_value(json_object_get(p, "attempts")), 1);
    json_decref(p);

    /* Lost after its hook started: never run again. It fails as interrupted and the
     * active topology becomes degraded, the status event first. */
    claim_ok(s, tid, B, &c);
    assert_int_equal(tb_store_claim_start(s, &c, NULL), TB_OK);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 0);
    assert_int_equal(out.failed, 1);
    assert_row(s, tid, mid, "failed", 2, "interrupted");
    assert_string_equal(status_of(s, tid), "degraded");
    assert_types(s, tid, base + 4, "mutation.applying,status:degraded,mutation.failed");
    p = event_payload(s, tid, base + 5);
    assert_string_equal(json_string_value(json_object_get(p, "previous")), "active");
    assert_string_equal(json_string_value(json_object_get(p, "reason")), "interrupted");
    json_decref(p);
    p = event_payload(s, tid, base + 6);
    assert_string_equal(json_string_value(json_object_get(p, "mutation_id")), mid);
    assert_string_equal(json_string_value(json_object_get(p, "reason")), "interrupted");
    json_decref(p);
    free(mid);

    /* Lost twice before its hook: the second time it is not worth another try. */
    mid = enqueue(s, tid, "b", TB_STORE_NO_VERSION);
    claim_ok(s, tid, A, &c);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    claim_ok(s, tid, A, &c);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.failed, 1);
    assert_row(s, tid, mid, "failed", 2, "interrupted");
    assert_string_equal(status_of(s, tid), "degraded");
    free(mid);

    /* Given back after its hook started: ended as interrupted, not run again. */
    mid = enqueue(s, tid, "c", TB_STORE_NO_VERSION);
    claim_ok(s, tid, A, &c);
    assert_int_equal(tb_store_claim_start(s, &c, NULL), TB_OK);
    assert_int_equal(tb_store_claim_release(s, &c, &out, NULL), TB_OK);
    assert_int_equal(out.failed, 1);
    assert_row(s, tid, mid, "failed", 1, "interrupted");
    free(mid);
    free(tid);
}

static void test_claims_restarted_worker_gives_its_claims_back_at_once(void **state)
{
    tb_store_t *s = store_of(state);
    char *t1 = active_topology(s, "mine");
    char *t2 = tb_test_create_topology(s, "deploying");
    char *t3 = active_topology(s, "theirs");
    char *m1 = enqueue(s, t1, "a", TB_STORE_NO_VERSION);
    char *m3 = enqueue(s, t3, "a", TB_STORE_NO_VERSION);
    tb_store_claim_t c1, c2, c3;
    claim_ok(s, t1, A, &c1);
    move(s, t2, TB_TOPOLOGY_DEPLOYING);
    json_t *doc = NULL;
    assert_int_equal(tb_store_transition_claim(s, t2, A, &doc, &c2, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(tb_store_claim_start(s, &c2, NULL), TB_OK);
    claim_ok(s, t3, B, &c3);
    /* A restarts under the same id: not a second of lease is waited for. */
    tb_store_recovery_t out;
    assert_int_equal(tb_store_release_worker_claims(s, A, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    assert_int_equal(out.failed, 1);
    assert_row(s, t1, m1, "pending", 0, NULL);
    assert_string_equal(status_of(s, t2), "failed"); /* its deploy hook had started */
    assert_row(s, t3, m3, "applying", 0, NULL);      /* B's claim is B's */
    assert_int_equal(tb_store_release_worker_claims(s, A, &out, NULL), TB_OK);
    assert_int_equal(out.requeued + out.failed, 0);
    assert_int_equal(tb_store_release_worker_claims(s, "not a worker", &out, NULL), TB_EINVAL);
    free(m1);
    free(m3);
    free(t1);
    free(t2);
    free(t3);
}

static void test_claims_deploy_and_teardown_are_claimed_once(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = tb_test_create_topology(s, "deploy");
    json_t *doc = NULL;
    tb_store_claim_t a, b;
    tb_store_err_t err;
    /* Nothing to claim while pending. */
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &a, &err), TB_ENOTFOUND);
    assert_null(doc);
    move(s, tid, TB_TOPOLOGY_DEPLOYING);
    size_t base = count_events(s, tid);
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &a, NULL), TB_OK);
    assert_int_equal(a.kind, TB_CLAIM_DEPLOY);
    assert_string_equal(a.topology_id, tid);
    assert_string_equal(a.mutation_id, "");
    assert_string_equal(tb_store_doc_id(doc), tid);
    assert_string_equal(tb_store_doc_status(doc), "deploying");
    json_decref(doc);
    /* Every other worker, and A again, finds nothing: one hook run per transition. */
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &b, NULL), TB_ENOTFOUND);
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &b, NULL), TB_ENOTFOUND);
    assert_int_equal(count_events(s, tid), base); /* a claim records no event */
    /* B cannot finish A's claim. */
    tb_store_claim_t forged = a;
    snprintf(forged.worker, sizeof forged.worker, B);
    assert_int_equal(tb_store_transition_finish(s, &forged, false, "no", NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    tb_topology_status now = TB_TOPOLOGY_ANY;
    assert_int_equal(tb_store_transition_finish(s, &a, true, NULL, &now, NULL), TB_OK);
    assert_int_equal(now, TB_TOPOLOGY_ACTIVE);
    assert_types(s, tid, base, "status:active");
    assert_int_equal(tb_store_transition_finish(s, &a, true, NULL, &now, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &b, NULL), TB_ENOTFOUND);

    /* A teardown is claimed likewise; a failed teardown hook still ends torn down, with
     * the reason for whoever looks. */
    move(s, tid, TB_TOPOLOGY_TEARING_DOWN);
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &b, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(b.kind, TB_CLAIM_TEARDOWN);
    assert_true(b.token > a.token);
    assert_int_equal(tb_store_transition_finish(s, &b, false, "teardown hook failed: busy", &now,
                                                NULL),
                     TB_OK);
    assert_int_equal(now, TB_TOPOLOGY_TORN_DOWN);
    json_t *p = event_payload(s, tid, count_events(s, tid) - 1);
    assert_string_equal(json_string_value(json_object_get(p, "state")), "torn_down");
    assert_string_equal(json_string_value(json_object_get(p, "reason")),
                        "teardown hook failed: busy");
    json_decref(p);
    /* A mutation's claim is no transition's, and back. */
    assert_int_equal(tb_store_transition_finish(s, NULL, true, NULL, NULL, &err), TB_EINVAL);
    free(tid);
}

static void test_claims_deploy_waits_for_the_mutation_in_flight_and_holds_the_queue(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = tb_test_create_topology(s, "ordered");
    char *m1 = enqueue(s, tid, "a", TB_STORE_NO_VERSION);
    char *m2 = enqueue(s, tid, "b", TB_STORE_NO_VERSION);
    tb_store_claim_t c1, c2, d;
    claim_ok(s, tid, A, &c1);
    move(s, tid, TB_TOPOLOGY_DEPLOYING);
    json_t *doc = NULL, *row = NULL;
    /* m1 is applying: the deploy hook must see the document after it. */
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &d, NULL), TB_ENOTFOUND);
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    json_array_append_new(json_object_get(doc, "nodes"), json_pack("{s:s, s:s}", "id", "a",
                                                                   "kind", "router"));
    assert_int_equal(tb_store_mutation_mark_applied(s, &c1, doc, 1, NULL, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &d, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 1);
    json_decref(doc);
    /* While it deploys, the queue waits. */
    assert_int_equal(tb_store_mutation_claim(s, tid, A, &row, &c2, NULL), TB_ENOTFOUND);
    assert_int_equal(tb_store_transition_finish(s, &d, true, NULL, NULL, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_claim(s, tid, A, &row, &c2, NULL), TB_OK);
    assert_string_equal(tb_store_row_id(row), m2);
    assert_true(c2.token > d.token && d.token > c1.token);
    json_decref(row);
    free(m1);
    free(m2);
    free(tid);
}

static void test_claims_teardown_requested_during_a_deploy(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = tb_test_create_topology(s, "changed");
    move(s, tid, TB_TOPOLOGY_DEPLOYING);
    json_t *doc = NULL;
    tb_store_claim_t d, t;
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &d, NULL), TB_OK);
    json_decref(doc);
    move(s, tid, TB_TOPOLOGY_TEARING_DOWN);
    /* The teardown waits for the deploy's hook; the deploy's outcome no longer moves the
     * status, and its end lets the teardown go. */
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &t, NULL), TB_ENOTFOUND);
    tb_topology_status now = TB_TOPOLOGY_ANY;
    assert_int_equal(tb_store_transition_finish(s, &d, true, NULL, &now, NULL), TB_OK);
    assert_int_equal(now, TB_TOPOLOGY_TEARING_DOWN);
    assert_string_equal(status_of(s, tid), "tearing_down");
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &t, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(t.kind, TB_CLAIM_TEARDOWN);
    assert_int_equal(tb_store_transition_finish(s, &t, true, NULL, &now, NULL), TB_OK);
    assert_int_equal(now, TB_TOPOLOGY_TORN_DOWN);
    free(tid);
}

static void test_claims_lost_transition_claims(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = tb_test_create_topology(s, "lost");
    move(s, tid, TB_TOPOLOGY_DEPLOYING);
    json_t *doc = NULL;
    tb_store_claim_t c;
    tb_store_recovery_t out;
    /* Not started: claimable again once, then the deploy fails as interrupted. */
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &c, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(tb_store_recover_stale(s, 0, &out, NULL), TB_OK);
    assert_int_equal(out.requeued + out.failed, 0);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    assert_string_equal(status_of(s, tid), "deploying");
    assert_int_equal(tb_store_transition_claim(s, tid, B, &doc, &c, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.failed, 1);
    assert_string_equal(status_of(s, tid), "failed");
    json_t *p = event_payload(s, tid, count_events(s, tid) - 1);
    assert_string_equal(json_string_value(json_object_get(p, "state")), "failed");
    assert_string_equal(json_string_value(json_object_get(p, "reason")), "interrupted");
    json_decref(p);
    assert_int_equal(tb_store_transition_finish(s, &c, true, NULL, NULL, NULL), TB_ECONFLICT);

    /* Started: a teardown whose hook may have run ends torn down at once, interrupted. */
    move(s, tid, TB_TOPOLOGY_TEARING_DOWN);
    assert_int_equal(tb_store_transition_claim(s, tid, A, &doc, &c, NULL), TB_OK);
    json_decref(doc);
    assert_int_equal(tb_store_claim_start(s, &c, NULL), TB_OK);
    assert_int_equal(tb_store_recover_stale(s, PAST_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.failed, 1);
    assert_string_equal(status_of(s, tid), "torn_down");
    free(tid);
}

static void test_claims_expected_version_is_checked_at_apply(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = tb_test_create_topology(s, "cas");
    char *m1 = enqueue(s, tid, "a", TB_STORE_NO_VERSION);
    char *m2 = enqueue(s, tid, "b", 0); /* the client saw version 0 */
    tb_store_claim_t c1, c2;
    claim_ok(s, tid, A, &c1);
    assert_int_equal(c1.expected_version, TB_STORE_NO_VERSION);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    json_array_append_new(json_object_get(doc, "nodes"), json_pack("{s:s, s:s}", "id", "a",
                                                                   "kind", "router"));
    assert_int_equal(tb_store_mutation_mark_applied(s, &c1, doc, 1, NULL, NULL), TB_OK);
    /* m1 moved the topology to version 1 first: m2 would apply to what its client never saw. */
    claim_ok(s, tid, A, &c2);
    assert_int_equal(c2.expected_version, 0);
    tb_store_err_t err;
    assert_int_equal(tb_store_mutation_mark_applied(s, &c2, doc, 2, NULL, &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_VERSION_CONFLICT);
    assert_int_equal(err.current, 1);
    assert_int_equal(err.expected, 0);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c2, "version_conflict", false, NULL, NULL),
                     TB_OK);
    assert_row(s, tid, m2, "failed", 0, "version_conflict");
    /* At the version it names, it applies. */
    char *m3 = enqueue(s, tid, "c", 1);
    claim_ok(s, tid, A, &c2);
    assert_int_equal(c2.expected_version, 1);
    json_array_append_new(json_object_get(doc, "nodes"), json_pack("{s:s, s:s}", "id", "c",
                                                                   "kind", "router"));
    assert_int_equal(tb_store_mutation_mark_applied(s, &c2, doc, 2, NULL, NULL), TB_OK);
    json_decref(doc);
    free(m1);
    free(m2);
    free(m3);
    free(tid);
}

typedef struct prune_wait {
    tb_store_t *s;
    const char *tid;
} prune_wait_t;

/* Prunes one row at a time with no retention until tid keeps two rows (a row settled in
 * this very millisecond is not older than "now" yet). On a shared database other tests'
 * settled rows go too: only tid's are counted. */
static bool pruned_to_two(void *ud)
{
    prune_wait_t *w = ud;
    int n = 0;
    assert_int_equal(tb_store_mutation_prune(w->s, 0, 1, &n, NULL), TB_OK);
    assert_true(n <= 1); /* at most the batch asked for */
    return tb_test_count_rows(w->s, w->tid) <= 2;
}

static bool wait_until(bool (*cond)(void *), void *ud, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited++) {
        if (cond(ud))
            return true;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    return cond(ud);
}

static void test_claims_retention_prunes_settled_rows_only(void **state)
{
    tb_store_t *s = store_of(state);
    char *tid = tb_test_create_topology(s, "pruned");
    char *ids[5];
    for (int i = 0; i < 5; i++) {
        char node[8];
        snprintf(node, sizeof node, "n%d", i);
        ids[i] = enqueue(s, tid, node, TB_STORE_NO_VERSION);
    }
    /* Two applied, one failed, one applying, one pending. */
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    tb_store_claim_t c;
    for (int i = 0; i < 2; i++) {
        claim_ok(s, tid, A, &c);
        assert_int_equal(tb_store_mutation_mark_applied(s, &c, doc, i + 1, NULL, NULL), TB_OK);
    }
    claim_ok(s, tid, A, &c);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, "no", false, NULL, NULL), TB_OK);
    claim_ok(s, tid, A, &c);
    json_decref(doc);
    /* Kept while younger than the retention. */
    int n = -1;
    assert_int_equal(tb_store_mutation_prune(s, 24LL * 3600 * 1000, 500, &n, NULL), TB_OK);
    assert_int_equal(tb_test_count_rows(s, tid), 5);
    prune_wait_t w = {s, tid};
    assert_true(wait_until(pruned_to_two, &w, 5000));
    assert_int_equal(tb_store_mutation_prune(s, 0, 500, &n, NULL), TB_OK);
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(s, tid, NULL, &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 2);
    assert_string_equal(tb_store_row_id(json_array_get(rows, 0)), ids[3]);
    assert_string_equal(tb_store_row_state(json_array_get(rows, 0)), "applying");
    assert_string_equal(tb_store_row_state(json_array_get(rows, 1)), "pending");
    json_decref(rows);
    tb_store_err_t err;
    assert_int_equal(tb_store_mutation_prune(s, -1, 500, &n, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_prune(s, 0, 0, &n, &err), TB_EINVAL);
    assert_int_equal(tb_store_mutation_prune(s, 0, TB_STORE_PRUNE_MAX + 1, &n, &err), TB_EINVAL);
    for (int i = 0; i < 5; i++)
        free(ids[i]);
    free(tid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_claims_stale_worker_is_refused_and_writes_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_claims_lost_claims_tell_clients_and_follow_the_retry_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_restarted_worker_gives_its_claims_back_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_deploy_and_teardown_are_claimed_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_claims_deploy_waits_for_the_mutation_in_flight_and_holds_the_queue, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_claims_teardown_requested_during_a_deploy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claims_lost_transition_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_expected_version_is_checked_at_apply, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claims_retention_prunes_settled_rows_only, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
