/*
 * What only the PostgreSQL backend has, against a private server started
 * for this binary (pg_server.h): claims from two connections at once never
 * share a row and keep each topology's order; a claim skips a topology
 * locked elsewhere instead of waiting; a connection killed under the store
 * fails the next call at once and a later one reconnects; a stopped server
 * makes calls fail within the timeouts and a restarted one is used again
 * without reopening; a frozen server cannot make a call hang; a schema from
 * a newer binary is refused; JSON comes back byte for byte; every outbox
 * writer holds its topology's row lock before it draws its seq. The shared
 * conformance suite runs separately (tb_pg_run).
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "pg_server.h"
#include "proc.h"
#include "store_fixture.h"

#define TIMEOUT_MS 1000 /* the stores' statement timeout here: calls end within ~2 s */

static tb_test_pg_t pg;

static int group_setup(void **state)
{
    (void)state;
    return tb_test_pg_start(&pg) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tb_test_pg_stop(&pg);
    return 0;
}

static tb_store_t *open_store(void)
{
    tb_store_options_t opts = {.busy_timeout_ms = TIMEOUT_MS};
    tb_store_t *s = NULL;
    tb_store_err_t err;
    if (tb_store_open(&s, pg.url, &opts, &err) != TB_OK)
        fail_msg("open %s: %s", pg.url, err.message);
    assert_string_equal(tb_store_backend(s), "postgres");
    return s;
}

static json_t *enqueue(tb_store_t *s, const char *tid, int n)
{
    char text[64];
    snprintf(text, sizeof text, "{\"id\":\"n%d\",\"kind\":\"k\"}", n);
    json_t *payload = tb_test_json(text);
    json_t *row = NULL;
    assert_int_equal(
        tb_store_mutation_enqueue(s, tid, "add_node", payload, TB_STORE_NO_VERSION, &row, NULL),
        TB_OK);
    json_decref(payload);
    return row;
}

/* The PID of the one server session the store under test holds. */
static long store_backend_pid(void)
{
    char *pid = NULL;
    assert_true(tb_test_pg_exec(&pg,
                                "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                "'topobus' AND datname = 'topobus' ORDER BY backend_start DESC",
                                &pid));
    assert_non_null(pid);
    long v = atol(pid);
    free(pid);
    return v;
}

static bool session_gone(void *ud)
{
    char sql[160], *n = NULL;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %ld", *(long *)ud);
    bool gone = tb_test_pg_exec(&pg, sql, &n) && n && strcmp(n, "0") == 0;
    free(n);
    return gone;
}

/* ---- two connections claiming at once ---- */

#define N_TOPO 20
#define N_EACH 10

typedef struct claimer {
    char **tids;
    json_t *claims; /* mutation id -> claim sequence number (shared, under lock) */
    pthread_mutex_t *lock;
    long *next_seq;
    int applied;
    int errors;
} claimer_t;

static void *claimer_main(void *arg)
{
    claimer_t *c = arg;
    tb_store_t *s = open_store();
    long long deadline = tb_test_now_ms() + 20000;
    for (bool progress = true; progress && tb_test_now_ms() < deadline;) {
        progress = false;
        for (int i = 0; i < N_TOPO; i++) {
            json_t *row = NULL, *doc = NULL;
            tb_store_claim_t claim;
            tb_status st = tb_store_mutation_claim(s, c->tids[i], "claimer", &row, &claim, NULL);
            if (st == TB_ENOTFOUND)
                continue;
            progress = true;
            if (st != TB_OK) {
                c->errors++;
                continue;
            }
            pthread_mutex_lock(c->lock);
            bool twice = json_object_get(c->claims, tb_store_row_id(row)) != NULL;
            json_object_set_new(c->claims, tb_store_row_id(row), json_integer((*c->next_seq)++));
            pthread_mutex_unlock(c->lock);
            if (!twice)
                st = tb_store_topology_get(s, c->tids[i], &doc, NULL);
            if (st == TB_OK && !twice)
                st = tb_store_mutation_mark_applied(s, &claim, doc, tb_store_doc_version(doc) + 1,
                                                    NULL, NULL);
            if (st == TB_OK && !twice)
                c->applied++;
            else
                c->errors++;
            json_decref(doc);
            json_decref(row);
        }
        /* A pass that claimed nothing may have met only the other claimer's
         * locks: look again until nothing is pending. */
        json_t *pending = NULL;
        if (!progress && tb_store_topologies_with_pending(s, &pending, NULL) == TB_OK)
            progress = json_array_size(pending) > 0;
        json_decref(pending);
    }
    tb_store_close(s);
    return NULL;
}

static void test_pg_two_connections_claim_disjoint_rows_in_order(void **state)
{
    (void)state;
    tb_store_t *s = open_store();
    char *tids[N_TOPO];
    json_t *order[N_TOPO]; /* mutation ids of each topology in enqueue order */
    for (int i = 0; i < N_TOPO; i++) {
        tids[i] = tb_test_create_topology(s, "race");
        order[i] = json_array();
        for (int k = 0; k < N_EACH; k++) {
            json_t *row = enqueue(s, tids[i], k);
            json_array_append_new(order[i], json_string(tb_store_row_id(row)));
            json_decref(row);
        }
    }
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    long next_seq = 0;
    json_t *claims = json_object();
    claimer_t c[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        c[t] = (claimer_t){.tids = tids, .claims = claims, .lock = &lock, .next_seq = &next_seq};
        assert_int_equal(pthread_create(&th[t], NULL, claimer_main, &c[t]), 0);
    }
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    assert_int_equal(c[0].errors + c[1].errors, 0);
    assert_int_equal(c[0].applied + c[1].applied, N_TOPO * N_EACH);
    assert_int_equal(json_object_size(claims), N_TOPO * N_EACH);
    printf("# claims split %d/%d between the two connections\n", c[0].applied, c[1].applied);
    for (int i = 0; i < N_TOPO; i++) {
        /* Claimed in enqueue order: claim numbers rise along the queue. */
        json_int_t last = -1;
        for (size_t k = 0; k < json_array_size(order[i]); k++) {
            json_t *n = json_object_get(claims, json_string_value(json_array_get(order[i], k)));
            assert_non_null(n);
            assert_true(json_integer_value(n) > last);
            last = json_integer_value(n);
        }
        json_t *doc = NULL;
        assert_int_equal(tb_store_topology_get(s, tids[i], &doc, NULL), TB_OK);
        assert_int_equal(tb_store_doc_version(doc), N_EACH);
        json_decref(doc);
        json_decref(order[i]);
        free(tids[i]);
    }
    json_decref(claims);
    tb_store_close(s);
}

/* ---- SKIP LOCKED: a claim never waits for a lock held elsewhere ---- */

static void test_pg_claim_skips_locked_topology_without_waiting(void **state)
{
    (void)state;
    tb_store_t *s = open_store();
    char *tid = tb_test_create_topology(s, "held");
    json_decref(enqueue(s, tid, 1));
    PGconn *other = PQconnectdb(pg.url);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    const char *values[] = {tid};
    PGresult *res = PQexec(other, "BEGIN");
    PQclear(res);
    res = PQexecParams(other, "SELECT 1 FROM topologies WHERE id = $1 FOR UPDATE", 1, NULL, values,
                       NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);

    json_t *row = NULL;
    tb_store_claim_t claim;
    long long t0 = tb_test_now_ms();
    assert_int_equal(tb_store_mutation_claim(s, tid, "test", &row, &claim, NULL), TB_ENOTFOUND);
    long long waited = tb_test_now_ms() - t0;
    assert_null(row);
    /* Far below the 1 s lock timeout: it skipped, it did not wait. */
    assert_true(waited < TIMEOUT_MS / 2);

    res = PQexec(other, "COMMIT");
    PQclear(res);
    PQfinish(other);
    assert_int_equal(tb_store_mutation_claim(s, tid, "test", &row, &claim, NULL), TB_OK);
    json_decref(row);
    free(tid);
    tb_store_close(s);
}

/* ---- outbox order: each writer holds its topology's row lock before its seq ---- */

enum writer_op { W_ENQUEUE, W_MARK_APPLIED, W_MARK_FAILED, W_TRANSITION, W_COUNT };

typedef struct writer {
    tb_store_t *s;
    const char *tid;
    const tb_store_claim_t *claim; /* the applying row the marks finish */
    enum writer_op op;
    tb_status st;
    atomic_bool done;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    json_t *doc = NULL, *payload = tb_test_json("{\"id\":\"w\",\"kind\":\"k\"}");
    switch (w->op) {
    case W_ENQUEUE:
        w->st = tb_store_mutation_enqueue(w->s, w->tid, "add_node", payload, TB_STORE_NO_VERSION,
                                          NULL, NULL);
        break;
    case W_MARK_APPLIED:
        w->st = tb_store_topology_get(w->s, w->tid, &doc, NULL);
        if (w->st == TB_OK)
            w->st = tb_store_mutation_mark_applied(w->s, w->claim, doc,
                                                   tb_store_doc_version(doc) + 1, NULL, NULL);
        break;
    case W_MARK_FAILED:
        w->st = tb_store_mutation_mark_failed(w->s, w->claim, "no", true, NULL, NULL);
        break;
    case W_TRANSITION:
    case W_COUNT:
        w->st = tb_store_topology_transition(w->s, w->tid, TB_TOPOLOGY_ANY, TB_TOPOLOGY_DEPLOYING,
                                             "go", NULL, NULL);
        break;
    }
    json_decref(doc);
    json_decref(payload);
    atomic_store(&w->done, true);
    return NULL;
}

/* The writer finished, or its session waits for a lock. */
static bool writer_done_or_waiting(void *ud)
{
    writer_t *w = ud;
    if (atomic_load(&w->done))
        return true;
    char *n = NULL;
    bool waiting = tb_test_pg_exec(&pg,
                                   "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                   "= 'topobus' AND wait_event_type = 'Lock'",
                                   &n) &&
                   n && strcmp(n, "0") != 0;
    free(n);
    return waiting;
}

static long long outbox_max_seq(const char *tid, const char *topic_like)
{
    char sql[256], *v = NULL;
    snprintf(
        sql, sizeof sql,
        "SELECT coalesce(max(seq), 0) FROM outbox WHERE topology_id = '%s' AND topic LIKE '%s'",
        tid, topic_like);
    assert_true(tb_test_pg_exec(&pg, sql, &v));
    assert_non_null(v);
    long long seq = atoll(v);
    free(v);
    return seq;
}

/*
 * Sequence values are drawn at insert, not at commit. Another transaction
 * holds the topology's row lock and inserts an outbox row of that topology
 * meanwhile: each writer must wait for the lock before it draws its seq, so
 * its row comes after the other's, the order in which they commit. A writer
 * that inserted first (or never locked) would end with the lower seq.
 */
static void test_pg_outbox_writers_lock_topology_before_seq(void **state)
{
    (void)state;
    /* The writers wait for a lock here: give them more than TIMEOUT_MS. */
    tb_store_options_t opts = {.busy_timeout_ms = 10000};
    tb_store_t *s = NULL;
    assert_int_equal(tb_store_open(&s, pg.url, &opts, NULL), TB_OK);
    for (int op = W_ENQUEUE; op < W_COUNT; op++) {
        char *tid = tb_test_create_topology(s, "ordered");
        json_t *claimed = NULL;
        tb_store_claim_t claim;
        json_decref(enqueue(s, tid, 1));
        assert_int_equal(tb_store_mutation_claim(s, tid, "test", &claimed, &claim, NULL), TB_OK);
        writer_t w = {.s = s, .tid = tid, .claim = &claim, .op = (enum writer_op)op};
        atomic_init(&w.done, false);

        PGconn *other = PQconnectdb(pg.url);
        assert_int_equal(PQstatus(other), CONNECTION_OK);
        const char *values[] = {tid};
        PQclear(PQexec(other, "BEGIN"));
        PGresult *res =
            PQexecParams(other, "SELECT 1 FROM topologies WHERE id = $1 FOR NO KEY UPDATE", 1, NULL,
                         values, NULL, NULL, 0);
        assert_int_equal(PQntuples(res), 1);
        PQclear(res);
        /* The claim skips a locked topology: no claim, no event. */
        long long before = outbox_max_seq(tid, "%");
        json_t *none = NULL;
        tb_store_claim_t no_claim;
        assert_int_equal(tb_store_mutation_claim(s, tid, "test", &none, &no_claim, NULL),
                         TB_ENOTFOUND);
        assert_int_equal(outbox_max_seq(tid, "%"), before);

        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
        assert_true(tb_test_wait_until(writer_done_or_waiting, &w, 5000));
        bool waited = !atomic_load(&w.done);
        res = PQexecParams(other,
                           "INSERT INTO outbox (topology_id, topic, msg_id, envelope) VALUES ($1, "
                           "'topology.' || $1 || '.probe', repeat('0', 32), '{}') RETURNING seq",
                           1, NULL, values, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        long long probe = atoll(PQgetvalue(res, 0, 0));
        PQclear(res);
        PQclear(PQexec(other, "COMMIT"));
        PQfinish(other);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(w.st, TB_OK);
        if (!waited)
            fail_msg("writer %d did not wait for the topology's row lock", op);
        long long mine = outbox_max_seq(tid, "%.mutation.%");
        if (op == W_TRANSITION)
            mine = outbox_max_seq(tid, "%.status");
        if (mine <= probe)
            fail_msg("writer %d drew seq %lld before the lock holder's %lld", op, mine, probe);
        json_decref(claimed);
        free(tid);
    }
    assert_true(tb_test_pg_exec(&pg, "DELETE FROM outbox WHERE topic LIKE '%.probe'", NULL));
    tb_store_close(s);
}

/* ---- connection loss ---- */

static void test_pg_killed_connection_fails_fast_then_reconnects(void **state)
{
    (void)state;
    tb_store_t *s = open_store();
    char *tid = tb_test_create_topology(s, "survivor");
    long pid = store_backend_pid();
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%ld)", pid);
    assert_true(tb_test_pg_exec(&pg, sql, NULL));
    assert_true(tb_test_wait_until(session_gone, &pid, 5000));

    json_t *doc = NULL;
    tb_store_err_t err;
    long long t0 = tb_test_now_ms();
    tb_status st = tb_store_topology_get(s, tid, &doc, &err);
    long long failed_ms = tb_test_now_ms() - t0;
    assert_int_equal(st, TB_ECLOSED);
    assert_int_equal(err.reason, TB_STORE_R_BACKEND);
    assert_non_null(strstr(err.message, "unavailable"));
    assert_null(doc);
    assert_true(failed_ms < 500);

    t0 = tb_test_now_ms();
    assert_int_equal(tb_store_topology_get(s, tid, &doc, &err), TB_OK);
    printf("# killed session: the call failed in %lld ms, the next reconnected and answered in "
           "%lld ms\n",
           failed_ms, tb_test_now_ms() - t0);
    assert_string_equal(tb_store_doc_id(doc), tid);
    json_decref(doc);
    assert_true(store_backend_pid() != pid);
    free(tid);
    tb_store_close(s);
}

typedef struct answer {
    tb_store_t *s;
    const char *tid;
} answer_t;

static bool store_answers(void *ud)
{
    answer_t *a = ud;
    json_t *doc = NULL;
    bool ok = tb_store_topology_get(a->s, a->tid, &doc, NULL) == TB_OK;
    json_decref(doc);
    return ok;
}

static void test_pg_server_stopped_calls_fail_bounded_then_resume(void **state)
{
    (void)state;
    tb_store_t *s = open_store();
    char *tid = tb_test_create_topology(s, "outage");
    tb_test_pg_halt(&pg, SIGINT);

    /* During the outage every call fails at once with the unavailable
     * failure; none waits for a connect timeout or hangs. */
    long long worst = 0;
    for (int i = 0; i < 10; i++) {
        json_t *doc = NULL, *ids = NULL;
        tb_store_err_t err;
        long long t0 = tb_test_now_ms();
        tb_status st = i % 2 ? tb_store_topology_get(s, tid, &doc, &err)
                             : tb_store_topologies_with_pending(s, &ids, &err);
        long long took = tb_test_now_ms() - t0;
        worst = took > worst ? took : worst;
        assert_int_equal(st, TB_ECLOSED);
        assert_non_null(strstr(err.message, "unavailable"));
        assert_null(doc);
        assert_null(ids);
    }
    assert_true(worst < 1000);

    assert_true(tb_test_pg_restart(&pg));
    long long t0 = tb_test_now_ms();
    answer_t a = {s, tid};
    /* The same store, never reopened: at most one reconnect interval away. */
    assert_true(tb_test_wait_until(store_answers, &a, 5000));
    printf("# server stopped: worst failing call %lld ms; after restart the store answered "
           "again in %lld ms\n",
           worst, tb_test_now_ms() - t0);
    json_decref(enqueue(s, tid, 1));
    free(tid);
    tb_store_close(s);
}

static void test_pg_frozen_server_call_ends_by_deadline(void **state)
{
    (void)state;
    tb_store_t *s = open_store();
    char *tid = tb_test_create_topology(s, "frozen");
    long pid = store_backend_pid();
    assert_int_equal(kill((pid_t)pid, SIGSTOP), 0);
    json_t *doc = NULL;
    tb_store_err_t err;
    long long t0 = tb_test_now_ms();
    tb_status st = tb_store_topology_get(s, tid, &doc, &err);
    long long took = tb_test_now_ms() - t0;
    assert_int_equal(kill((pid_t)pid, SIGCONT), 0);
    assert_int_equal(st, TB_ECLOSED);
    assert_null(doc);
    /* The statement timeout plus the grace, not forever. */
    assert_true(took >= TIMEOUT_MS);
    assert_true(took < TIMEOUT_MS + 2000);
    printf("# frozen session: the call gave up after %lld ms\n", took);
    answer_t a = {s, tid};
    assert_true(tb_test_wait_until(store_answers, &a, 5000));
    free(tid);
    tb_store_close(s);
}

/* ---- schema and JSON ---- */

static void test_pg_newer_schema_refused(void **state)
{
    (void)state;
    tb_store_close(open_store());
    assert_true(
        tb_test_pg_exec(&pg, "INSERT INTO schema_migrations VALUES (999, '999_future', 0)", NULL));
    tb_store_t *s = (tb_store_t *)(uintptr_t)1;
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&s, pg.url, NULL, &err), TB_EINVAL);
    assert_null(s);
    assert_int_equal(err.reason, TB_STORE_R_SCHEMA_TOO_NEW);
    assert_non_null(strstr(err.message, "999"));
    char *tables = NULL;
    assert_true(tb_test_pg_exec(&pg, "SELECT count(*) FROM schema_migrations WHERE version < 999",
                                &tables));
    assert_non_null(tables);
    assert_true(atoi(tables) >= 2);
    free(tables);
    assert_true(tb_test_pg_exec(&pg, "DELETE FROM schema_migrations WHERE version = 999", NULL));
    tb_store_close(open_store());
}

static void test_pg_documents_and_payloads_round_trip_byte_for_byte(void **state)
{
    (void)state;
    tb_store_t *s = open_store();
    static const char nodes_text[] =
        "[{\"id\":\"r1\",\"kind\":\"router\",\"props\":{\"zeta\":1,\"alpha\":{\"y\":2,\"b\":"
        "[3,\"\\u00e9\"]},\"mid\":null}}]";
    json_t *nodes = tb_test_json(nodes_text);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(s, "keys", nodes, NULL, &doc, NULL), TB_OK);
    char *tid = strdup(tb_store_doc_id(doc));
    json_decref(doc);
    assert_int_equal(tb_store_topology_get(s, tid, &doc, NULL), TB_OK);
    char *back = json_dumps(json_object_get(doc, "nodes"), JSON_COMPACT);
    char *sent = json_dumps(nodes, JSON_COMPACT);
    assert_string_equal(back, sent);
    free(back);
    free(sent);
    json_decref(doc);
    json_t *row = enqueue(s, tid, 7);
    back = json_dumps(tb_store_row_payload(row), JSON_COMPACT);
    assert_string_equal(back, "{\"id\":\"n7\",\"kind\":\"k\"}");
    free(back);
    json_decref(row);
    json_decref(nodes);
    free(tid);
    tb_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_two_connections_claim_disjoint_rows_in_order),
        cmocka_unit_test(test_pg_claim_skips_locked_topology_without_waiting),
        cmocka_unit_test(test_pg_outbox_writers_lock_topology_before_seq),
        cmocka_unit_test(test_pg_killed_connection_fails_fast_then_reconnects),
        cmocka_unit_test(test_pg_server_stopped_calls_fail_bounded_then_resume),
        cmocka_unit_test(test_pg_frozen_server_call_ends_by_deadline),
        cmocka_unit_test(test_pg_newer_schema_refused),
        cmocka_unit_test(test_pg_documents_and_payloads_round_trip_byte_for_byte),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
