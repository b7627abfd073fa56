/*
 * PostgreSQL schema migrations and the session's prepared statements,
 * against a private server (pg_server.h):
 *   - a migration waits for the advisory lock another opener holds, however
 *     long, and runs without the request timeouts: 004_claims builds its
 *     indexes on a big mutations table CONCURRENTLY while the store was
 *     opened with a 20 ms statement timeout, which is back once it is done;
 *   - an index left invalid by an interrupted CONCURRENTLY build is built
 *     again by the next opener;
 *   - a session that lost its prepared statements (SQLSTATE 26000, as after
 *     a pooler's DISCARD ALL) has them prepared again, the call retried once,
 *     inside a transaction or not.
 * The last test reaches the store's connection through the backend's
 * private header, as only a pooler could otherwise.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
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
#include "store_pg_int.h"
#include "vectors.h"

#define MIGRATION_LOCK "7370617" /* the key store_pg_migrate.c takes */
#define BIG_ROWS 200000
#define HOLD_MS 300

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

static void url_of(const char *db, char *out, size_t cap)
{
    snprintf(out, cap, "postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&gssencmode=disable",
             pg.port, db);
}

static PGconn *connect_to(const char *db)
{
    char url[400];
    url_of(db, url, sizeof url);
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
}

static long long query_int(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    long long v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

/* A new database `db` at schema version 3, as an older topobus left it, with rows settled
 * mutations. */
static void make_old_database(const char *db, int rows)
{
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    assert_true(tb_test_pg_exec(&pg, sql, NULL));
    PGconn *c = connect_to(db);
    exec_ok(c, "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
               "applied_at bigint NOT NULL)");
    static const char *const files[] = {"001_init", "002_work_indexes", "003_outbox"};
    for (size_t i = 0; i < TB_ARRAY_LEN(files); i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.sql", TB_STORE_SCHEMA_PG_DIR, files[i]);
        char *text = tb_test_read_file(path, NULL);
        assert_non_null(text);
        exec_ok(c, text);
        free(text);
        snprintf(sql, sizeof sql, "INSERT INTO schema_migrations VALUES (%zu, '%s', 0)", i + 1,
                 files[i]);
        exec_ok(c, sql);
    }
    exec_ok(c, "INSERT INTO topologies (id, name, status, version, doc, created_at, updated_at) "
               "VALUES ('t_old', 'old', 'active', 0, '{\"nodes\":[],\"links\":[]}', 0, 0)");
    snprintf(sql, sizeof sql,
             "INSERT INTO mutations (id, topology_id, op, payload, state, created_at, "
             "updated_at) SELECT 'm_' || g, 't_old', 'add_node', '{}', 'applied', g, g "
             "FROM generate_series(1, %d) g",
             rows);
    exec_ok(c, sql);
    PQfinish(c);
}

typedef struct opener {
    char url[400];
    tb_store_t *store;
    tb_status st;
    char message[256];
    long long took_ms;
} opener_t;

static void *opener_main(void *arg)
{
    opener_t *o = arg;
    /* Request timeouts far below what the migration needs. */
    tb_store_options_t opts = {.busy_timeout_ms = 20};
    tb_store_err_t err;
    long long t0 = tb_test_now_ms();
    o->st = tb_store_open(&o->store, o->url, &opts, &err);
    o->took_ms = tb_test_now_ms() - t0;
    snprintf(o->message, sizeof o->message, "%s", err.message);
    return NULL;
}

static bool opener_connected(void *ud)
{
    (void)ud;
    char *n = NULL;
    bool yes = tb_test_pg_exec(&pg,
                               "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mig' AND "
                               "application_name = 'topobus'",
                               &n) &&
               n && strcmp(n, "0") != 0;
    free(n);
    return yes;
}

/* The store's own session setting (through its private connection). */
static char *store_setting(tb_store_t *s, const char *name)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT current_setting('%s')", name);
    PGresult *res = PQexec(tb__pg_from(s)->conn, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    char *v = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static void test_pg_migration_waits_for_the_lock_and_runs_without_timeouts(void **state)
{
    (void)state;
    make_old_database("mig", BIG_ROWS);
    /* Another opener is migrating: it holds the lock. */
    PGconn *holder = connect_to("mig");
    exec_ok(holder, "SELECT pg_advisory_lock(" MIGRATION_LOCK ")");
    opener_t o = {0};
    url_of("mig", o.url, sizeof o.url);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, opener_main, &o), 0);
    assert_true(tb_test_wait_until(opener_connected, NULL, 10000));
    /* Held well past the opener's 20 ms timeouts: it must wait, not fail. */
    tb_test_sleep_ms(HOLD_MS);
    exec_ok(holder, "SELECT pg_advisory_unlock(" MIGRATION_LOCK ")");
    assert_int_equal(pthread_join(th, NULL), 0);
    if (o.st != TB_OK)
        fail_msg("open failed after %lld ms: %s", o.took_ms, o.message);
    assert_true(o.took_ms >= HOLD_MS);
    printf("# migrated %d rows' indexes after waiting for the lock: open took %lld ms\n",
           BIG_ROWS, o.took_ms);
    assert_int_equal(query_int(holder, "SELECT max(version) FROM schema_migrations"), 5);
    assert_int_equal(query_int(holder, "SELECT count(*) FROM pg_index i JOIN pg_class c ON "
                                       "c.oid = i.indexrelid WHERE c.relname IN "
                                       "('mutations_claimed_by', 'topologies_claimed', "
                                       "'mutations_settled') AND i.indisvalid"),
                     3);
    assert_int_equal(query_int(holder, "SELECT count(*) FROM mutations"), BIG_ROWS);
    /* The request timeouts are back for everything after the migration. */
    char *timeout = store_setting(o.store, "statement_timeout");
    assert_string_equal(timeout, "20ms");
    free(timeout);
    timeout = store_setting(o.store, "lock_timeout");
    assert_string_equal(timeout, "20ms");
    free(timeout);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(o.store, "t_old", &doc, NULL), TB_OK);
    json_decref(doc);
    tb_store_close(o.store);
    PQfinish(holder);
}

static void test_pg_index_left_invalid_is_built_again(void **state)
{
    (void)state;
    make_old_database("mig2", 10);
    PGconn *c = connect_to("mig2");
    /* A CONCURRENTLY build that failed half-way leaves an invalid index behind. */
    PGresult *res = PQexec(c, "CREATE INDEX CONCURRENTLY mutations_settled ON mutations "
                              "((1 / (seq - seq)))");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    assert_int_equal(query_int(c, "SELECT count(*) FROM pg_index i JOIN pg_class k ON k.oid = "
                                  "i.indexrelid WHERE k.relname = 'mutations_settled' AND NOT "
                                  "i.indisvalid"),
                     1);
    char url[400];
    url_of("mig2", url, sizeof url);
    tb_store_t *s = NULL;
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&s, url, NULL, &err), TB_OK);
    assert_int_equal(query_int(c, "SELECT count(*) FROM pg_index i JOIN pg_class k ON k.oid = "
                                  "i.indexrelid WHERE k.relname = 'mutations_settled' AND "
                                  "i.indisvalid"),
                     1);
    tb_store_close(s);
    PQfinish(c);
}

static void deallocate_all(tb_store_t *s)
{
    PGresult *res = PQexec(tb__pg_from(s)->conn, "DEALLOCATE ALL");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
}

static void test_pg_lost_prepared_statements_are_prepared_again(void **state)
{
    (void)state;
    tb_store_t *s = NULL;
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&s, pg.url, NULL, &err), TB_OK);
    char *tid = tb_test_create_topology(s, "pooled");
    /* A single statement. */
    deallocate_all(s);
    json_t *doc = NULL;
    if (tb_store_topology_get(s, tid, &doc, &err) != TB_OK)
        fail_msg("get after DEALLOCATE ALL: %s", err.message);
    json_decref(doc);
    /* A transaction (lock, check, insert, event). */
    deallocate_all(s);
    json_t *payload = tb_test_json("{\"id\":\"a\",\"kind\":\"k\"}");
    if (tb_store_mutation_enqueue(s, tid, "add_node", payload, TB_STORE_NO_VERSION, NULL, &err))
        fail_msg("enqueue after DEALLOCATE ALL: %s", err.message);
    json_decref(payload);
    assert_int_equal(tb_test_count_rows(s, tid), 1);
    free(tid);
    tb_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_migration_waits_for_the_lock_and_runs_without_timeouts),
        cmocka_unit_test(test_pg_index_left_invalid_is_built_again),
        cmocka_unit_test(test_pg_lost_prepared_statements_are_prepared_again),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
