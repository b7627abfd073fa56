/*
 * The Idempotency-Key conformance suite (CONTRACT §4, store.h
 * "Idempotency-Key records") against the backend named by
 * TB_STORE_TEST_URL (SQLite in a scratch file by default; tb_pg_run runs it
 * again against PostgreSQL): reservations, replays, mismatches and keys in
 * flight; answers recorded with their change in one transaction (and
 * nothing recorded, or changed, when either fails); fencing tokens; lapsed
 * leases and expired answers (with a short TTL and lease, by the database's
 * clock); pruning in batches; records surviving a reopen; bad input.
 *
 * On a shared database every test uses its own user names, so the records
 * of one test never answer another's.
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
#include "tb/random.h"

#define SHORT_LEASE_MS 300
#define SHORT_TTL_MS 1500

typedef struct fixture {
    tb_test_store_t t;
    char user[40]; /* unique per test: "u-<hex>" */
    int notified;  /* outbox listener calls */
} fixture_t;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void on_outbox(void *ud)
{
    ((fixture_t *)ud)->notified++;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    tb_test_store_init(&f->t, 0);
    tb_test_outbox_drain(f->t.store);
    char hex[17];
    tb_random_hex(hex, 8);
    snprintf(f->user, sizeof f->user, "u-%s", hex);
    tb_store_set_outbox_listener(f->t.store, on_outbox, f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tb_store_set_outbox_listener(f->t.store, NULL, NULL);
    tb_test_store_cleanup(&f->t);
    free(f);
    return 0;
}

/* A request hash made of one repeated hex digit. */
static const char *hash_of(char digit, char buf[TB_STORE_IDEM_HASH_LEN + 1])
{
    memset(buf, digit, TB_STORE_IDEM_HASH_LEN);
    buf[TB_STORE_IDEM_HASH_LEN] = '\0';
    return buf;
}

/* Reserves and checks the outcome; rec is the caller's (clean it up). */
static void reserve_expect(tb_store_t *s, const char *user, const char *key, char digit,
                           tb_idem_outcome want, tb_store_idem_t *rec)
{
    char h[TB_STORE_IDEM_HASH_LEN + 1];
    tb_store_err_t err;
    tb_status st = tb_store_idem_reserve(s, user, key, hash_of(digit, h), rec, &err);
    if (st != TB_OK)
        fail_msg("reserve %s/%s: %s (%s)", user, key, tb_status_str(st), err.message);
    if (rec->outcome != want)
        fail_msg("reserve %s/%s: outcome %d, expected %d", user, key, rec->outcome, want);
}

/* The outcome of one more reservation attempt (nothing kept). */
static tb_idem_outcome outcome_of(tb_store_t *s, const char *user, const char *key, char digit)
{
    char h[TB_STORE_IDEM_HASH_LEN + 1];
    tb_store_idem_t rec;
    assert_int_equal(tb_store_idem_reserve(s, user, key, hash_of(digit, h), &rec, NULL), TB_OK);
    tb_store_idem_cleanup(&rec);
    return rec.outcome;
}

static tb_store_t *open_short(const fixture_t *f)
{
    tb_store_options_t o = {.idempotency_ttl_ms = SHORT_TTL_MS,
                            .idempotency_lease_ms = SHORT_LEASE_MS};
    tb_store_t *s = NULL;
    tb_store_err_t err;
    if (tb_store_open(&s, f->t.url, &o, &err) != TB_OK)
        fail_msg("open with a short TTL: %s", err.message);
    return s;
}

static void test_idem_reserve_in_flight_mismatch_then_replay(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    tb_store_idem_t rec, again;
    reserve_expect(s, f->user, "k1", 'a', TB_IDEM_RESERVED, &rec);
    assert_int_equal(strlen(rec.token), TB_STORE_IDEM_TOKEN_LEN);
    assert_null(rec.body);
    assert_int_equal(outcome_of(s, f->user, "k1", 'a'), TB_IDEM_IN_FLIGHT);
    assert_int_equal(outcome_of(s, f->user, "k1", 'b'), TB_IDEM_MISMATCH);
    /* Asking again with a record's own fields (they are read before it is rewritten). */
    tb_store_idem_t self = rec;
    assert_int_equal(tb_store_idem_reserve(s, self.user, self.key, self.hash, &self, NULL), TB_OK);
    assert_int_equal(self.outcome, TB_IDEM_IN_FLIGHT);
    assert_string_equal(self.user, f->user);
    const char *body = "{\"error\":\"not_mutable\",\"message\":\"ünïcode\"}";
    assert_int_equal(tb_store_idem_record(s, &rec, 409, body, NULL), TB_OK);
    reserve_expect(s, f->user, "k1", 'a', TB_IDEM_REPLAY, &again);
    assert_int_equal(again.status, 409);
    assert_string_equal(again.body, body);
    tb_store_idem_cleanup(&again);
    assert_null(again.body);
    assert_int_equal(outcome_of(s, f->user, "k1", 'b'), TB_IDEM_MISMATCH);
    /* Answered once: a second answer is refused and the first one stays. */
    tb_store_err_t err;
    assert_int_equal(tb_store_idem_record(s, &rec, 200, "{}", &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_WRONG_STATE);
    reserve_expect(s, f->user, "k1", 'a', TB_IDEM_REPLAY, &again);
    assert_string_equal(again.body, body);
    tb_store_idem_cleanup(&again);
    /* Releasing an answered key keeps its answer. */
    assert_int_equal(tb_store_idem_release(s, &rec, NULL), TB_OK);
    assert_int_equal(outcome_of(s, f->user, "k1", 'a'), TB_IDEM_REPLAY);
}

static void test_idem_users_and_keys_are_independent(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    char other[48];
    snprintf(other, sizeof other, "%s-other", f->user);
    tb_store_idem_t a, b, c;
    reserve_expect(s, f->user, "shared", 'a', TB_IDEM_RESERVED, &a);
    reserve_expect(s, other, "shared", 'b', TB_IDEM_RESERVED, &b);
    reserve_expect(s, f->user, "shared-2", 'a', TB_IDEM_RESERVED, &c);
    assert_int_equal(tb_store_idem_record(s, &b, 202, "{\"b\":1}", NULL), TB_OK);
    assert_int_equal(outcome_of(s, f->user, "shared", 'a'), TB_IDEM_IN_FLIGHT);
    assert_int_equal(outcome_of(s, other, "shared", 'b'), TB_IDEM_REPLAY);
    /* Keys are compared exactly: case and spaces count. */
    assert_int_equal(outcome_of(s, f->user, "Shared", 'a'), TB_IDEM_RESERVED);
    assert_int_equal(outcome_of(s, f->user, "shared ", 'a'), TB_IDEM_RESERVED);
}

static void test_idem_release_frees_the_key_and_fences_the_old_token(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    tb_store_idem_t first, second;
    reserve_expect(s, f->user, "k", 'a', TB_IDEM_RESERVED, &first);
    assert_int_equal(tb_store_idem_release(s, &first, NULL), TB_OK);
    /* Free again, also for another request. */
    reserve_expect(s, f->user, "k", 'c', TB_IDEM_RESERVED, &second);
    assert_string_not_equal(second.token, first.token);
    tb_store_err_t err;
    assert_int_equal(tb_store_idem_record(s, &first, 200, "{}", &err), TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_WRONG_STATE);
    /* The old owner's release is a no-op: the new reservation stays. */
    assert_int_equal(tb_store_idem_release(s, &first, NULL), TB_OK);
    assert_int_equal(outcome_of(s, f->user, "k", 'c'), TB_IDEM_IN_FLIGHT);
    assert_int_equal(tb_store_idem_record(s, &second, 201, "{\"ok\":true}", NULL), TB_OK);
    assert_int_equal(outcome_of(s, f->user, "k", 'c'), TB_IDEM_REPLAY);
}

/* The answer builders of the tests: what a gateway would send. */
static char *build_enqueue(const json_t *row, void *ud)
{
    (void)ud;
    json_t *o = json_pack("{s:s, s:s}", "mutation_id", tb_store_row_id(row), "state", "pending");
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static char *build_dump(const json_t *result, void *ud)
{
    (void)ud;
    return json_dumps(result, JSON_COMPACT);
}

static char *build_nothing(const json_t *result, void *ud)
{
    (void)result;
    (void)ud;
    return NULL;
}

static size_t count_events(tb_store_t *s, const char *tid)
{
    json_t *evs = tb_test_outbox_events(s, tid);
    size_t n = json_array_size(evs);
    json_decref(evs);
    return n;
}

static void test_idem_answered_enqueue_commits_row_event_and_answer_together(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    char *tid = tb_test_create_topology(s, "answered");
    tb_store_idem_t rec, replay;
    reserve_expect(s, f->user, "enqueue", 'a', TB_IDEM_RESERVED, &rec);
    json_t *payload = tb_test_json("{\"id\":\"n1\",\"kind\":\"router\"}");
    tb_store_answer_t a = {.rec = &rec, .status = 202, .build = build_enqueue};
    json_t *row = NULL;
    f->notified = 0;
    assert_int_equal(
        tb_store_mutation_enqueue_answered(s, tid, "add_node", payload, 0, &a, &row, NULL), TB_OK);
    assert_non_null(row);
    assert_false(a.lost);
    assert_non_null(strstr(a.body, tb_store_row_id(row)));
    /* The listener hears of the commit once, after it. */
    assert_int_equal(f->notified, 1);
    assert_int_equal(tb_test_count_rows(s, tid), 1);
    assert_int_equal(count_events(s, tid), 1);
    reserve_expect(s, f->user, "enqueue", 'a', TB_IDEM_REPLAY, &replay);
    assert_int_equal(replay.status, 202);
    assert_string_equal(replay.body, a.body);
    tb_store_idem_cleanup(&replay);
    /* The reservation is answered: answering it again with a change changes nothing. */
    tb_store_answer_t twice = {.rec = &rec, .status = 202, .build = build_enqueue};
    json_t *row2 = NULL;
    assert_int_equal(
        tb_store_mutation_enqueue_answered(s, tid, "add_node", payload, 0, &twice, &row2, NULL),
        TB_ECONFLICT);
    assert_true(twice.lost);
    assert_null(twice.body);
    assert_null(row2);
    assert_int_equal(tb_test_count_rows(s, tid), 1);
    assert_int_equal(count_events(s, tid), 1);
    assert_int_equal(f->notified, 1);
    free(a.body);
    json_decref(row);
    json_decref(payload);
    free(tid);
}

static void test_idem_answered_change_that_fails_records_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    char *tid = tb_test_create_topology(s, "failing");
    json_t *payload = tb_test_json("{\"id\":\"n1\",\"kind\":\"router\"}");
    tb_store_idem_t rec;
    reserve_expect(s, f->user, "stale", 'a', TB_IDEM_RESERVED, &rec);
    tb_store_answer_t a = {.rec = &rec, .status = 202, .build = build_enqueue};
    json_t *row = NULL;
    tb_store_err_t err;
    /* A stale expected version: the store's own refusal. */
    assert_int_equal(
        tb_store_mutation_enqueue_answered(s, tid, "add_node", payload, 7, &a, &row, &err),
        TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_VERSION_CONFLICT);
    assert_int_equal(err.current, 0);
    assert_false(a.lost);
    assert_null(a.body);
    assert_null(row);
    /* A builder that fails rolls the change back too. */
    tb_store_answer_t broken = {.rec = &rec, .status = 202, .build = build_nothing};
    assert_int_equal(
        tb_store_mutation_enqueue_answered(s, tid, "add_node", payload, 0, &broken, &row, NULL),
        TB_EINVAL);
    assert_int_equal(tb_test_count_rows(s, tid), 0);
    assert_int_equal(count_events(s, tid), 0);
    /* Still reserved: the caller records what it answered. */
    assert_int_equal(outcome_of(s, f->user, "stale", 'a'), TB_IDEM_IN_FLIGHT);
    assert_int_equal(tb_store_idem_record(s, &rec, 409, "{\"error\":\"version_conflict\"}", NULL),
                     TB_OK);
    assert_int_equal(outcome_of(s, f->user, "stale", 'a'), TB_IDEM_REPLAY);
    json_decref(payload);
    free(tid);
}

static void test_idem_answered_create_and_transition(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    tb_store_idem_t rec, replay;
    reserve_expect(s, f->user, "create", 'd', TB_IDEM_RESERVED, &rec);
    json_t *nodes = tb_test_json("[{\"id\":\"r1\",\"kind\":\"router\"}]");
    tb_store_answer_t a = {.rec = &rec, .status = 201, .build = build_dump};
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create_answered(s, "made once", nodes, NULL, &a, &doc, NULL),
                     TB_OK);
    char *dumped = json_dumps(doc, JSON_COMPACT);
    assert_string_equal(a.body, dumped);
    reserve_expect(s, f->user, "create", 'd', TB_IDEM_REPLAY, &replay);
    assert_int_equal(replay.status, 201);
    assert_string_equal(replay.body, dumped);
    tb_store_idem_cleanup(&replay);
    free(dumped);
    free(a.body);

    /* A name the store refuses: nothing created, nothing recorded. */
    tb_store_idem_t bad;
    reserve_expect(s, f->user, "create-bad", 'd', TB_IDEM_RESERVED, &bad);
    tb_store_answer_t refused = {.rec = &bad, .status = 201, .build = build_dump};
    json_t *none = NULL;
    assert_int_equal(tb_store_topology_create_answered(s, "", NULL, NULL, &refused, &none, NULL),
                     TB_EINVAL);
    assert_null(none);
    assert_int_equal(outcome_of(s, f->user, "create-bad", 'd'), TB_IDEM_IN_FLIGHT);

    tb_store_idem_t dep;
    reserve_expect(s, f->user, "deploy", 'e', TB_IDEM_RESERVED, &dep);
    tb_store_answer_t d = {.rec = &dep, .status = 202, .build = build_dump};
    tb_topology_status previous = TB_TOPOLOGY_ANY;
    assert_int_equal(tb_store_topology_transition_answered(s, tb_store_doc_id(doc), TB_TOPOLOGY_ANY,
                                                           TB_TOPOLOGY_DEPLOYING, NULL, &d,
                                                           &previous, NULL),
                     TB_OK);
    assert_int_equal(previous, TB_TOPOLOGY_PENDING);
    json_t *body = tb_test_json(d.body);
    assert_string_equal(json_string_value(json_object_get(body, "id")), tb_store_doc_id(doc));
    assert_string_equal(json_string_value(json_object_get(body, "status")), "deploying");
    assert_string_equal(json_string_value(json_object_get(body, "previous")), "pending");
    json_decref(body);
    char st[32];
    assert_string_equal(tb_test_status(s, tb_store_doc_id(doc), st, sizeof st), "deploying");
    reserve_expect(s, f->user, "deploy", 'e', TB_IDEM_REPLAY, &replay);
    assert_string_equal(replay.body, d.body);
    tb_store_idem_cleanup(&replay);
    free(d.body);

    /* An illegal transition: refused, nothing recorded, the status unchanged. */
    tb_store_idem_t again;
    reserve_expect(s, f->user, "deploy-again", 'e', TB_IDEM_RESERVED, &again);
    tb_store_answer_t x = {.rec = &again, .status = 202, .build = build_dump};
    tb_store_err_t err;
    assert_int_equal(tb_store_topology_transition_answered(s, tb_store_doc_id(doc), TB_TOPOLOGY_ANY,
                                                           TB_TOPOLOGY_PENDING, NULL, &x, NULL,
                                                           &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_ILLEGAL_TRANSITION);
    assert_null(x.body);
    assert_string_equal(tb_test_status(s, tb_store_doc_id(doc), st, sizeof st), "deploying");
    json_decref(doc);
    json_decref(nodes);
}

static void test_idem_lapsed_lease_frees_the_key_and_fences_its_owner(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = open_short(f);
    char *tid = tb_test_create_topology(s, "lapsed");
    tb_store_idem_t first, second;
    reserve_expect(s, f->user, "slow", 'a', TB_IDEM_RESERVED, &first);
    assert_int_equal(outcome_of(s, f->user, "slow", 'a'), TB_IDEM_IN_FLIGHT);
    /* The owner "crashed": after the lease the key is free again, with a new token. */
    sleep_ms(SHORT_LEASE_MS + 200);
    reserve_expect(s, f->user, "slow", 'a', TB_IDEM_RESERVED, &second);
    assert_string_not_equal(second.token, first.token);
    /* The first owner comes back: its change is refused and rolled back. */
    json_t *payload = tb_test_json("{\"id\":\"n1\",\"kind\":\"router\"}");
    tb_store_answer_t a = {.rec = &first, .status = 202, .build = build_enqueue};
    json_t *row = NULL;
    tb_store_err_t err;
    assert_int_equal(
        tb_store_mutation_enqueue_answered(s, tid, "add_node", payload, 0, &a, &row, &err),
        TB_ECONFLICT);
    assert_true(a.lost);
    assert_int_equal(err.reason, TB_STORE_R_WRONG_STATE);
    assert_int_equal(tb_test_count_rows(s, tid), 0);
    assert_int_equal(tb_store_idem_record(s, &first, 409, "{}", NULL), TB_ECONFLICT);
    /* The new owner's change goes through. */
    tb_store_answer_t b = {.rec = &second, .status = 202, .build = build_enqueue};
    assert_int_equal(
        tb_store_mutation_enqueue_answered(s, tid, "add_node", payload, 0, &b, &row, NULL), TB_OK);
    assert_int_equal(tb_test_count_rows(s, tid), 1);
    /* An answer is not subject to the lease. */
    sleep_ms(SHORT_LEASE_MS + 200);
    assert_int_equal(outcome_of(s, f->user, "slow", 'a'), TB_IDEM_REPLAY);
    free(b.body);
    json_decref(row);
    json_decref(payload);
    free(tid);
    tb_store_close(s);
}

static void test_idem_answers_expire_after_the_ttl_and_are_pruned_in_batches(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = open_short(f);
    sleep_ms(SHORT_TTL_MS + 100);
    int pruned = 0;
    /* Whatever earlier tests left on a shared database is older than this TTL. */
    do
        assert_int_equal(tb_store_idem_prune(s, TB_STORE_IDEM_PRUNE_MAX, &pruned, NULL), TB_OK);
    while (pruned > 0);
    const char *keys[] = {"e1", "e2", "e3"};
    for (size_t i = 0; i < TB_ARRAY_LEN(keys); i++) {
        tb_store_idem_t rec;
        reserve_expect(s, f->user, keys[i], 'a', TB_IDEM_RESERVED, &rec);
        assert_int_equal(tb_store_idem_record(s, &rec, 201, "{\"n\":1}", NULL), TB_OK);
    }
    assert_int_equal(outcome_of(s, f->user, "e1", 'a'), TB_IDEM_REPLAY);
    assert_int_equal(outcome_of(s, f->user, "e1", 'b'), TB_IDEM_MISMATCH);
    assert_int_equal(tb_store_idem_prune(s, 10, &pruned, NULL), TB_OK);
    assert_int_equal(pruned, 0); /* nothing is old yet */
    sleep_ms(SHORT_TTL_MS + 100);
    /* In batches of the size asked, oldest first: one of the three is left. */
    assert_int_equal(tb_store_idem_prune(s, 1, &pruned, NULL), TB_OK);
    assert_int_equal(pruned, 1);
    assert_int_equal(tb_store_idem_prune(s, 1, &pruned, NULL), TB_OK);
    assert_int_equal(pruned, 1);
    /* An expired answer is forgotten whether or not it was pruned yet. */
    for (size_t i = 0; i < TB_ARRAY_LEN(keys); i++)
        assert_int_equal(outcome_of(s, f->user, keys[i], 'a'), TB_IDEM_RESERVED);
    assert_int_equal(tb_store_idem_prune(s, 10, &pruned, NULL), TB_OK);
    assert_int_equal(pruned, 0); /* the three rows are new reservations now */
    tb_store_close(s);
}

static void test_idem_reserving_anew_prunes_expired_rows(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = open_short(f);
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof key, "old-%d", i);
        tb_store_idem_t rec;
        reserve_expect(s, f->user, key, 'a', TB_IDEM_RESERVED, &rec);
        assert_int_equal(tb_store_idem_record(s, &rec, 201, "{}", NULL), TB_OK);
    }
    sleep_ms(SHORT_TTL_MS + 100);
    tb_store_idem_t fresh;
    reserve_expect(s, f->user, "fresh", 'a', TB_IDEM_RESERVED, &fresh);
    int pruned = -1;
    assert_int_equal(tb_store_idem_prune(s, 10, &pruned, NULL), TB_OK);
    assert_int_equal(pruned, 0); /* the reservation took them away already */
    tb_store_close(s);
}

static void test_idem_records_survive_a_reopen(void **state)
{
    fixture_t *f = *state;
    tb_store_idem_t rec, replay;
    reserve_expect(f->t.store, f->user, "durable", 'f', TB_IDEM_RESERVED, &rec);
    assert_int_equal(tb_store_idem_record(f->t.store, &rec, 202, "{\"kept\":true}", NULL), TB_OK);
    tb_store_idem_t pending;
    reserve_expect(f->t.store, f->user, "pending", 'f', TB_IDEM_RESERVED, &pending);
    tb_store_set_outbox_listener(f->t.store, NULL, NULL);
    tb_store_close(f->t.store);
    f->t.store = tb_test_store_reopen(&f->t, 0);
    reserve_expect(f->t.store, f->user, "durable", 'f', TB_IDEM_REPLAY, &replay);
    assert_string_equal(replay.body, "{\"kept\":true}");
    tb_store_idem_cleanup(&replay);
    /* A reservation held when the process stopped still holds until its lease lapses. */
    assert_int_equal(outcome_of(f->t.store, f->user, "pending", 'f'), TB_IDEM_IN_FLIGHT);
}

static void test_idem_rejects_bad_input(void **state)
{
    fixture_t *f = *state;
    tb_store_t *s = f->t.store;
    char h[TB_STORE_IDEM_HASH_LEN + 1], long_key[TB_STORE_IDEM_KEY_MAX + 2],
        long_user[TB_STORE_IDEM_USER_MAX + 2];
    hash_of('a', h);
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    memset(long_user, 'u', sizeof long_user - 1);
    long_user[sizeof long_user - 1] = '\0';
    tb_store_idem_t rec;
    const char *bad_keys[] = {"", long_key, "tab\tkey", "caf\xc3\xa9", "del\x7f"};
    for (size_t i = 0; i < TB_ARRAY_LEN(bad_keys); i++)
        assert_int_equal(tb_store_idem_reserve(s, f->user, bad_keys[i], h, &rec, NULL), TB_EINVAL);
    long_key[TB_STORE_IDEM_KEY_MAX] = '\0'; /* 255 bytes: the longest key */
    assert_int_equal(tb_store_idem_reserve(s, f->user, long_key, h, &rec, NULL), TB_OK);
    assert_int_equal(rec.outcome, TB_IDEM_RESERVED);
    assert_int_equal(tb_store_idem_reserve(s, "", "k", h, &rec, NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_reserve(s, long_user, "k", h, &rec, NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_reserve(s, "bad\xff", "k", h, &rec, NULL), TB_EINVAL);
    char upper[TB_STORE_IDEM_HASH_LEN + 1];
    hash_of('A', upper);
    assert_int_equal(tb_store_idem_reserve(s, f->user, "k", upper, &rec, NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_reserve(s, f->user, "k", "abc", &rec, NULL), TB_EINVAL);

    tb_store_idem_t ok;
    reserve_expect(s, f->user, "valid", 'a', TB_IDEM_RESERVED, &ok);
    assert_int_equal(tb_store_idem_record(s, &ok, 99, "{}", NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_record(s, &ok, 600, "{}", NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_record(s, &ok, 200, NULL, NULL), TB_EINVAL);
    tb_store_idem_t replayed = ok;
    replayed.outcome = TB_IDEM_REPLAY;
    assert_int_equal(tb_store_idem_record(s, &replayed, 200, "{}", NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_release(s, &replayed, NULL), TB_EINVAL);
    tb_store_answer_t no_builder = {.rec = &ok, .status = 202};
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create_answered(s, "x", NULL, NULL, &no_builder, &doc, NULL),
                     TB_EINVAL);
    assert_int_equal(tb_store_topology_create_answered(s, "x", NULL, NULL, NULL, &doc, NULL),
                     TB_EINVAL);
    assert_int_equal(tb_store_idem_prune(s, 0, NULL, NULL), TB_EINVAL);
    assert_int_equal(tb_store_idem_prune(s, TB_STORE_IDEM_PRUNE_MAX + 1, NULL, NULL), TB_EINVAL);
    /* Nothing above touched the valid reservation. */
    assert_int_equal(outcome_of(s, f->user, "valid", 'a'), TB_IDEM_IN_FLIGHT);

    tb_store_options_t o = {.idempotency_ttl_ms = 1000, .idempotency_lease_ms = 1000};
    tb_store_t *t = NULL;
    assert_int_equal(tb_store_open(&t, f->t.url, &o, NULL), TB_EINVAL);
    o.idempotency_ttl_ms = -1;
    assert_int_equal(tb_store_open(&t, f->t.url, &o, NULL), TB_EINVAL);
    assert_null(t);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_idem_reserve_in_flight_mismatch_then_replay),
        T(test_idem_users_and_keys_are_independent),
        T(test_idem_release_frees_the_key_and_fences_the_old_token),
        T(test_idem_answered_enqueue_commits_row_event_and_answer_together),
        T(test_idem_answered_change_that_fails_records_and_changes_nothing),
        T(test_idem_answered_create_and_transition),
        T(test_idem_lapsed_lease_frees_the_key_and_fences_its_owner),
        T(test_idem_answers_expire_after_the_ttl_and_are_pruned_in_batches),
        T(test_idem_reserving_anew_prunes_expired_rows),
        T(test_idem_records_survive_a_reopen),
        T(test_idem_rejects_bad_input),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
