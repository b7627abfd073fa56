/*
 * Idempotency-Key (CONTRACT §4) over real HTTP against a real `topobus
 * gateway` process on SQLite: a retry gets the first answer (status, body,
 * ids) and changes nothing, on every route that takes a key; another body
 * with the same key is 422; a duplicate while the first is still being
 * processed is 409 (the first is held up deterministically: the test holds
 * the database's write lock while it waits); a restarted gateway still
 * answers with the first answer; a malformed key is 400; another user's
 * equal key is independent; answers older than 24 h are forgotten and
 * pruned (the test ages rows in the file rather than waiting a day). On
 * PostgreSQL, two gateways share the store: a duplicate sent to the other
 * gateway while the first is held up (the test holds the topology's row
 * lock) is 409 from the store's reservation, then gets the first answer.
 *
 * Each test starts its own gateway(s); the teardown stops every process by
 * PID, lets go of the lock and joins the request thread, however the test
 * ended.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "gw_test.h"
#include "pg_server.h"

#define OP_A "{\"op\":\"add_node\",\"payload\":{\"id\":\"a\",\"kind\":\"router\"}}"
#define OP_B "{\"op\":\"add_node\",\"payload\":{\"id\":\"b\",\"kind\":\"router\"}}"
#define DAY_MS (24LL * 3600 * 1000)

typedef struct slow_request {
    pthread_t thread;
    bool started;
    char url[512];
    const char *bearer;
    const char *key;
    const char *body;
    tb_http_response_t r;
} slow_request_t;

typedef struct fixture {
    tb_test_gateway_t g[2];
    bool running[2];
    sqlite3 *db; /* the test's own connection to the gateway's file */
    tb_test_pg_t pg;
    PGconn *pg_lock; /* the test's own PostgreSQL session, holding a row lock */
    slow_request_t slow;
    char *editor, *editor2, *publisher;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->editor = tb_test_token(NULL, "ed", "editor,viewer", 600);
    f->editor2 = tb_test_token(NULL, "ed2", "editor,viewer", 600);
    f->publisher = tb_test_token(NULL, "pu", "publisher", 600);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->db) {
        sqlite3_exec(f->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(f->db);
    }
    /* The request thread's transfer has a deadline; it ends once the lock is gone. */
    if (f->slow.started)
        pthread_join(f->slow.thread, NULL);
    tb_http_response_cleanup(&f->slow.r);
    PQfinish(f->pg_lock); /* its transaction ends with it */
    if (f->slow.started)
        pthread_join(f->slow.thread, NULL);
    f->slow.started = false;
    /* A gateway must end cleanly (exit 0: under ASan also free of leaks). */
    int result = 0;
    for (int i = 1; i >= 0; i--) {
        if (f->running[i]) {
            int status = tb_test_gateway_stop(&f->g[i], SIGTERM, 10000);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                char *log = tb_test_gateway_log(&f->g[i]);
                fprintf(stderr, "gateway %d ended with status %d:\n%s\n", i, status, log);
                free(log);
                result = -1;
            }
        }
        tb_test_gateway_cleanup(&f->g[i]);
    }
    tb_test_pg_stop(&f->pg);
    free(f->editor);
    free(f->editor2);
    free(f->publisher);
    free(f);
    return result;
}

/* Starts gateway i (on gateway 0's database when i is 1 and same_db is set; on the test's
 * PostgreSQL server once it runs). */
static tb_test_gateway_t *start(fixture_t *f, int i, const char *bus, bool same_db)
{
    tb_test_gateway_opts_t o = {.bus = bus, .db = same_db ? f->g[0].db_url : NULL};
    if (f->pg.pid > 0)
        o.db = f->pg.url;
    assert_true(tb_test_gateway_start(&f->g[i], &o));
    f->running[i] = true;
    return &f->g[i];
}

/* POSTs body to path with an Idempotency-Key (NULL: none); returns the status. */
static long post(const tb_test_gateway_t *g, const char *path, const char *bearer, const char *key,
                 const char *body, tb_http_response_t *r)
{
    char url[512], header[600];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof header, "Idempotency-Key: %s", key ? key : "");
    tb_http_request_t req = {.method = "POST",
                             .url = tb_test_gateway_url(g, path, url, sizeof url),
                             .bearer = bearer,
                             .headers = key ? headers : NULL,
                             .body = body ? body : ""};
    tb_http_do(&req, r);
    return r->status;
}

static bool replayed(const tb_http_response_t *r)
{
    char v[16];
    return tb_http_header(r, "idempotent-replayed", v, sizeof v) && strcmp(v, "true") == 0;
}

static void expect_error(const tb_http_response_t *r, long status, const char *code)
{
    char v[64];
    if (r->status != status || strcmp(gw_json_str(r, "error", v, sizeof v), code) != 0)
        fail_msg("expected %ld %s, got %ld %s", status, code, r->status, r->body);
}

/* Creates a topology (no key) and writes its mutations path into path. */
static void new_topology(const tb_test_gateway_t *g, const char *bearer, char *path, size_t cap)
{
    tb_http_response_t r;
    assert_int_equal(post(g, "/topologies", bearer, NULL, "{\"name\":\"idem\"}", &r), 201);
    char id[64];
    gw_json_str(&r, "id", id, sizeof id);
    tb_http_response_cleanup(&r);
    snprintf(path, cap, "/topologies/%s/mutations", id);
}

static size_t mutation_rows(const tb_test_gateway_t *g, const char *bearer, const char *path)
{
    tb_http_response_t r;
    assert_int_equal(gw_req(g, "GET", path, bearer, NULL, &r), 200);
    json_t *rows = json_loads(r.body, 0, NULL);
    size_t n = json_array_size(rows);
    json_decref(rows);
    tb_http_response_cleanup(&r);
    return n;
}

static void test_idem_retry_gets_the_first_answer_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160], first_id[64], again_id[64];
    new_topology(g, f->editor, path, sizeof path);
    tb_http_response_t first, again;
    assert_int_equal(post(g, path, f->editor, "retry-1", OP_A, &first), 202);
    assert_false(replayed(&first));
    assert_int_equal(post(g, path, f->editor, "retry-1", OP_A, &again), 202);
    assert_true(replayed(&again));
    assert_string_equal(again.body, first.body);
    assert_string_equal(gw_json_str(&again, "mutation_id", again_id, sizeof again_id),
                        gw_json_str(&first, "mutation_id", first_id, sizeof first_id));
    assert_int_equal(mutation_rows(g, f->editor, path), 1);
    tb_http_response_cleanup(&first);
    tb_http_response_cleanup(&again);

    /* Creating a topology: the same document, one topology. */
    const char *doc = "{\"name\":\"made-once\",\"nodes\":[{\"id\":\"r1\",\"kind\":\"router\"}]}";
    assert_int_equal(post(g, "/topologies", f->editor, "create-1", doc, &first), 201);
    assert_int_equal(post(g, "/topologies", f->editor, "create-1", doc, &again), 201);
    assert_true(replayed(&again));
    assert_string_equal(again.body, first.body);
    char id[64], deploy[160];
    gw_json_str(&first, "id", id, sizeof id);
    tb_http_response_cleanup(&first);
    tb_http_response_cleanup(&again);
    tb_http_response_t list;
    assert_int_equal(gw_req(g, "GET", "/topologies", f->editor, NULL, &list), 200);
    assert_non_null(strstr(list.body, "made-once"));
    assert_null(strstr(strstr(list.body, "made-once") + 1, "made-once"));
    tb_http_response_cleanup(&list);

    /* Deploy: a plain repeat would be 409 (deploying cannot go to deploying). */
    snprintf(deploy, sizeof deploy, "/topologies/%s/deploy", id);
    assert_int_equal(post(g, deploy, f->editor, "deploy-1", NULL, &first), 202);
    assert_int_equal(post(g, deploy, f->editor, "deploy-1", NULL, &again), 202);
    assert_true(replayed(&again));
    assert_string_equal(again.body, first.body);
    tb_http_response_cleanup(&first);
    tb_http_response_cleanup(&again);
    tb_http_response_t plain;
    assert_int_equal(post(g, deploy, f->editor, NULL, NULL, &plain), 409);
    tb_http_response_cleanup(&plain);

    /* A refusal is an answer too: replayed as it was. */
    const char *stale = "{\"op\":\"add_node\",\"payload\":{\"id\":\"c\",\"kind\":\"k\"},"
                        "\"expected_version\":5}";
    assert_int_equal(post(g, path, f->editor, "stale-1", stale, &first), 409);
    assert_int_equal(post(g, path, f->editor, "stale-1", stale, &again), 409);
    assert_true(replayed(&again));
    assert_string_equal(again.body, first.body);
    tb_http_response_cleanup(&first);
    tb_http_response_cleanup(&again);
}

static void test_idem_same_key_other_request_is_422(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160], other[160];
    new_topology(g, f->editor, path, sizeof path);
    new_topology(g, f->editor, other, sizeof other);
    tb_http_response_t r;
    assert_int_equal(post(g, path, f->editor, "reused", OP_A, &r), 202);
    tb_http_response_cleanup(&r);
    post(g, path, f->editor, "reused", OP_B, &r);
    expect_error(&r, 422, "idempotency_key_reused");
    tb_http_response_cleanup(&r);
    /* The same body on another topology is another request. */
    post(g, other, f->editor, "reused", OP_A, &r);
    expect_error(&r, 422, "idempotency_key_reused");
    tb_http_response_cleanup(&r);
    assert_int_equal(mutation_rows(g, f->editor, path), 1);
    assert_int_equal(mutation_rows(g, f->editor, other), 0);
    /* The first answer is still there for the first request. */
    assert_int_equal(post(g, path, f->editor, "reused", OP_A, &r), 202);
    assert_true(replayed(&r));
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_metric(g, "topobus_idempotency_answers_total{outcome=\"reused\"}"), 2);
}

static void *send_slow(void *arg)
{
    slow_request_t *s = arg;
    char header[300];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof header, "Idempotency-Key: %s", s->key);
    tb_http_request_t req = {.method = "POST",
                             .url = s->url,
                             .bearer = s->bearer,
                             .headers = headers,
                             .body = s->body,
                             .timeout_ms = 15000};
    tb_http_do(&req, &s->r);
    return NULL;
}

static void test_idem_duplicate_while_the_first_is_processed_is_409(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160];
    new_topology(g, f->editor, path, sizeof path);
    /* Hold the write lock: the first request waits for it inside the gateway. */
    assert_int_equal(sqlite3_open(g->db_url + strlen("sqlite:"), &f->db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    slow_request_t *s = &f->slow;
    tb_test_gateway_url(g, path, s->url, sizeof s->url);
    s->bearer = f->editor;
    s->key = "concurrent";
    s->body = OP_A;
    assert_int_equal(pthread_create(&s->thread, NULL, send_slow, s), 0);
    s->started = true;
    assert_true(gw_wait_metric_at_least(g, "topobus_idempotency_keys_in_flight", 1, 5000));
    tb_http_response_t r;
    post(g, path, f->editor, "concurrent", OP_A, &r);
    expect_error(&r, 409, "idempotency_key_in_flight");
    tb_http_response_cleanup(&r);
    post(g, path, f->editor, "concurrent", OP_B, &r);
    expect_error(&r, 422, "idempotency_key_reused");
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_metric(g, "topobus_idempotency_keys_in_flight"), 1);
    /* Let go: the first completes, and only then do repeats get its answer. */
    assert_int_equal(sqlite3_exec(f->db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    pthread_join(s->thread, NULL);
    s->started = false;
    assert_int_equal(s->r.status, 202);
    assert_int_equal(post(g, path, f->editor, "concurrent", OP_A, &r), 202);
    assert_true(replayed(&r));
    assert_string_equal(r.body, s->r.body);
    tb_http_response_cleanup(&r);
    assert_int_equal(mutation_rows(g, f->editor, path), 1);
    assert_int_equal(gw_metric(g, "topobus_idempotency_keys_in_flight"), 0);
    assert_int_equal(gw_metric(g, "topobus_idempotency_answers_total{outcome=\"in_flight\"}"), 1);
}

static void test_idem_a_restarted_gateway_still_gives_the_first_answer(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160];
    new_topology(g, f->editor, path, sizeof path);
    tb_http_response_t first, again;
    assert_int_equal(post(g, path, f->editor, "across-restart", OP_A, &first), 202);
    int status = tb_test_gateway_stop(g, SIGTERM, 10000);
    f->running[0] = false;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    tb_test_gateway_t *g2 = start(f, 1, NULL, true);
    assert_int_equal(post(g2, path, f->editor, "across-restart", OP_A, &again), 202);
    assert_true(replayed(&again));
    assert_string_equal(again.body, first.body);
    assert_int_equal(mutation_rows(g2, f->editor, path), 1);
    tb_http_response_cleanup(&first);
    tb_http_response_cleanup(&again);
}

static void test_idem_malformed_key_is_400_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160], longest[256], too_long[257];
    new_topology(g, f->editor, path, sizeof path);
    memset(longest, 'k', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    memset(too_long, 'k', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    const char *bad[] = {too_long, "caf\xc3\xa9", "\xff"};
    tb_http_response_t r;
    for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
        post(g, path, f->editor, bad[i], OP_A, &r);
        expect_error(&r, 400, "invalid_idempotency_key");
        tb_http_response_cleanup(&r);
    }
    /* An empty value (curl sends "Name;" as an empty header). */
    char url[512];
    const char *empty[] = {"Idempotency-Key;", NULL};
    tb_http_request_t req = {.method = "POST",
                             .url = tb_test_gateway_url(g, path, url, sizeof url),
                             .bearer = f->editor,
                             .headers = empty,
                             .body = OP_A};
    tb_http_do(&req, &r);
    expect_error(&r, 400, "invalid_idempotency_key");
    tb_http_response_cleanup(&r);
    assert_int_equal(mutation_rows(g, f->editor, path), 0);
    /* Authentication comes first: no token is 401 whatever the key. */
    post(g, path, NULL, too_long, OP_A, &r);
    expect_error(&r, 401, "unauthorized");
    tb_http_response_cleanup(&r);
    /* 255 printable bytes, spaces and quotes included, are a key. */
    assert_int_equal(post(g, path, f->editor, longest, OP_A, &r), 202);
    tb_http_response_cleanup(&r);
    assert_int_equal(post(g, path, f->editor, "\"a key\" with spaces", OP_B, &r), 202);
    tb_http_response_cleanup(&r);
    assert_int_equal(mutation_rows(g, f->editor, path), 2);
}

static void test_idem_another_users_equal_key_is_independent(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160], a_id[64], b_id[64];
    new_topology(g, f->editor, path, sizeof path);
    tb_http_response_t a, b;
    assert_int_equal(post(g, path, f->editor, "same-key", OP_A, &a), 202);
    assert_int_equal(post(g, path, f->editor2, "same-key", OP_A, &b), 202);
    assert_false(replayed(&b));
    assert_string_not_equal(gw_json_str(&a, "mutation_id", a_id, sizeof a_id),
                            gw_json_str(&b, "mutation_id", b_id, sizeof b_id));
    /* Each user's retry gets that user's own first answer. */
    tb_http_response_t a2, b2;
    assert_int_equal(post(g, path, f->editor, "same-key", OP_A, &a2), 202);
    assert_int_equal(post(g, path, f->editor2, "same-key", OP_A, &b2), 202);
    assert_true(replayed(&a2) && replayed(&b2));
    assert_string_equal(a2.body, a.body);
    assert_string_equal(b2.body, b.body);
    tb_http_response_cleanup(&a2);
    tb_http_response_cleanup(&b2);
    tb_http_response_cleanup(&a);
    tb_http_response_cleanup(&b);
    /* And the other user's different body is no reuse of the first user's key. */
    assert_int_equal(post(g, path, f->editor2, "other-key", OP_B, &b), 202);
    tb_http_response_cleanup(&b);
    assert_int_equal(post(g, path, f->editor, "other-key", OP_A, &a), 202);
    assert_false(replayed(&a));
    tb_http_response_cleanup(&a);
    assert_int_equal(mutation_rows(g, f->editor, path), 4);
}

static long long count_sql(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void test_idem_answers_older_than_a_day_are_forgotten_and_pruned(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, NULL, false);
    char path[160], first_id[64], later_id[64];
    new_topology(g, f->editor, path, sizeof path);
    tb_http_response_t first, later;
    assert_int_equal(post(g, path, f->editor, "day-old", OP_A, &first), 202);
    assert_int_equal(post(g, path, f->editor, "also-old", OP_B, &later), 202);
    tb_http_response_cleanup(&later);
    /* A day and a second pass (for the records; the rest of the file is left alone). */
    assert_int_equal(sqlite3_open(g->db_url + strlen("sqlite:"), &f->db), SQLITE_OK);
    sqlite3_busy_timeout(f->db, 5000);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE idempotency SET created_at = created_at - %lld",
             DAY_MS + 1000);
    assert_int_equal(sqlite3_exec(f->db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(count_sql(f->db, "SELECT count(*) FROM idempotency"), 2);
    /* Within a day it would be a replay; now it is a new request. */
    assert_int_equal(post(g, path, f->editor, "day-old", OP_A, &later), 202);
    assert_false(replayed(&later));
    assert_string_not_equal(gw_json_str(&later, "mutation_id", later_id, sizeof later_id),
                            gw_json_str(&first, "mutation_id", first_id, sizeof first_id));
    tb_http_response_cleanup(&first);
    tb_http_response_cleanup(&later);
    assert_int_equal(mutation_rows(g, f->editor, path), 3);
    /* Reserving a key anew took the other old record away; the fresh one stays. */
    assert_int_equal(count_sql(f->db, "SELECT count(*) FROM idempotency WHERE key = 'also-old'"),
                     0);
    assert_int_equal(count_sql(f->db, "SELECT count(*) FROM idempotency WHERE key = 'day-old'"), 1);
}

static void test_idem_publish_takes_a_key_and_tickets_ignore_it(void **state)
{
    fixture_t *f = *state;
    tb_test_gateway_t *g = start(f, 0, "mem://", false);
    const char *event = "{\"topic\":\"topology.t1.note\",\"payload\":{\"n\":1}}";
    const char *out = "topobus_bus_events_total{direction=\"out\"}";
    /* The gateway reaches its bus on a thread of its own: count from when it has. */
    assert_true(gw_wait_metric_at_least(g, "topobus_bus_up", 1, 10000));
    long long before = gw_metric(g, out);
    tb_http_response_t r;
    assert_int_equal(post(g, "/publish", f->publisher, "pub-1", event, &r), 202);
    tb_http_response_cleanup(&r);
    assert_int_equal(post(g, "/publish", f->publisher, "pub-1", event, &r), 202);
    assert_true(replayed(&r));
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_metric(g, out), before + 1);
    post(g, "/publish", f->publisher, "pub-1", "{\"topic\":\"topology.t1.note\",\"payload\":{}}",
         &r);
    expect_error(&r, 422, "idempotency_key_reused");
    tb_http_response_cleanup(&r);
    /* A ticket is a fresh credential each time: the header is not looked at. */
    char t1[128], t2[128];
    assert_int_equal(post(g, "/auth/sse-ticket", f->editor, "ticket-1", NULL, &r), 200);
    gw_json_str(&r, "ticket", t1, sizeof t1);
    tb_http_response_cleanup(&r);
    assert_int_equal(post(g, "/auth/sse-ticket", f->editor, "ticket-1", NULL, &r), 200);
    assert_false(replayed(&r));
    gw_json_str(&r, "ticket", t2, sizeof t2);
    tb_http_response_cleanup(&r);
    assert_string_not_equal(t1, t2);
}

static bool reservation_made(void *ud)
{
    fixture_t *f = ud;
    char *n = NULL;
    bool made = tb_test_pg_exec(&f->pg, "SELECT count(*) FROM idempotency WHERE key = 'across'",
                                &n) &&
                n && strcmp(n, "1") == 0;
    free(n);
    return made;
}

static void test_idem_duplicate_on_another_gateway_is_409_from_the_store_pg(void **state)
{
    fixture_t *f = *state;
    assert_true(tb_test_pg_start(&f->pg));
    tb_test_gateway_t *a = start(f, 0, NULL, false);
    tb_test_gateway_t *b = start(f, 1, NULL, false);
    char path[160], lock[256];
    new_topology(a, f->editor, path, sizeof path);
    /* Hold the topology's row: the enqueue waits for it, after its key was reserved. */
    f->pg_lock = PQconnectdb(f->pg.url);
    assert_int_equal(PQstatus(f->pg_lock), CONNECTION_OK);
    const char *id = path + strlen("/topologies/");
    snprintf(lock, sizeof lock, "BEGIN; SELECT 1 FROM topologies WHERE id = '%.*s' FOR UPDATE",
             (int)(strchr(id, '/') - id), id);
    PGresult *res = PQexec(f->pg_lock, lock);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    slow_request_t *s = &f->slow;
    tb_test_gateway_url(a, path, s->url, sizeof s->url);
    s->bearer = f->editor;
    s->key = "across";
    s->body = OP_A;
    assert_int_equal(pthread_create(&s->thread, NULL, send_slow, s), 0);
    s->started = true;
    assert_true(tb_test_wait_until(reservation_made, f, 5000));
    /* The other gateway has no entry of its own: the store says the key is in flight. */
    tb_http_response_t r;
    post(b, path, f->editor, "across", OP_A, &r);
    expect_error(&r, 409, "idempotency_key_in_flight");
    tb_http_response_cleanup(&r);
    post(b, path, f->editor, "across", OP_B, &r);
    expect_error(&r, 422, "idempotency_key_reused");
    tb_http_response_cleanup(&r);
    res = PQexec(f->pg_lock, "COMMIT");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    pthread_join(s->thread, NULL);
    s->started = false;
    assert_int_equal(s->r.status, 202);
    assert_int_equal(post(b, path, f->editor, "across", OP_A, &r), 202);
    assert_true(replayed(&r));
    assert_string_equal(r.body, s->r.body);
    tb_http_response_cleanup(&r);
    assert_int_equal(mutation_rows(b, f->editor, path), 1);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_idem_retry_gets_the_first_answer_and_changes_nothing),
        T(test_idem_same_key_other_request_is_422),
        T(test_idem_duplicate_while_the_first_is_processed_is_409),
        T(test_idem_a_restarted_gateway_still_gives_the_first_answer),
        T(test_idem_malformed_key_is_400_and_changes_nothing),
        T(test_idem_another_users_equal_key_is_independent),
        T(test_idem_answers_older_than_a_day_are_forgotten_and_pruned),
        T(test_idem_publish_takes_a_key_and_tickets_ignore_it),
        T(test_idem_duplicate_on_another_gateway_is_409_from_the_store_pg),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
