/*
 * Schema migrations of the SQLite backend: a file left at an older schema
 * version is brought forward at open with its rows intact; a file from a
 * newer binary is refused with a clear error and left untouched; reopening
 * migrates nothing; a file that is not a database is a backend error; rows
 * damaged behind the store's back are reported, never passed on.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vectors.h"
#include <sqlite3.h>

#include "store_fixture.h"
#include "tb/buf.h"

typedef struct scratch {
    char dir[256];
    char path[300];
    char url[320];
} scratch_t;

static int setup(void **state)
{
    scratch_t *s = calloc(1, sizeof *s);
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/tb_migrate_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->path, sizeof s->path, "%s/old.db", s->dir);
    snprintf(s->url, sizeof s->url, "sqlite:%s", s->path);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    scratch_t *s = *state;
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char p[320];
    for (size_t i = 0; i < TB_ARRAY_LEN(suffixes); i++) {
        snprintf(p, sizeof p, "%s%s", s->path, suffixes[i]);
        unlink(p);
    }
    rmdir(s->dir);
    free(s);
    return 0;
}

static void exec_or_fail(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sql failed: %s\n", msg);
        sqlite3_free(msg);
        fail();
    }
}

static long long query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static char *read_schema(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", TB_STORE_SCHEMA_DIR, name);
    char *text = tb_test_read_file(path, NULL);
    assert_non_null(text);
    return text;
}

static void test_migrate_version_1_file_upgraded_rows_kept(void **state)
{
    scratch_t *s = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->path, &db), SQLITE_OK);
    char *v1 = read_schema("001_init.sql");
    exec_or_fail(db, v1);
    free(v1);
    exec_or_fail(db,
                 "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
                 "NULL, applied_at INTEGER NOT NULL) STRICT;"
                 "INSERT INTO schema_migrations VALUES (1, '001_init', 0);"
                 "INSERT INTO topologies VALUES ('t_old', 'old', 'active', 3, "
                 "'{\"nodes\":[],\"links\":[]}', 1000, 2500);"
                 "INSERT INTO mutations (id, topology_id, op, payload, state, created_at, "
                 "updated_at) VALUES ('m_old', 't_old', 'add_node', '{\"id\":\"a\"}', "
                 "'pending', 1000, 1000);");
    sqlite3_close(db);

    tb_store_t *store = NULL;
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&store, s->url, NULL, &err), TB_OK);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(store, "t_old", &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 3);
    assert_string_equal(tb_store_doc_status(doc), "active");
    assert_string_equal(json_string_value(json_object_get(doc, "created_at")),
                        "1970-01-01T00:00:01.000Z");
    assert_string_equal(json_string_value(json_object_get(doc, "updated_at")),
                        "1970-01-01T00:00:02.500Z");
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(store, "t_old", "test", &row, &c, NULL), TB_OK);
    assert_string_equal(tb_store_row_id(row), "m_old");
    json_decref(row);
    json_decref(doc);
    tb_store_close(store);

    assert_true(query_int(s->path, "SELECT MAX(version) FROM schema_migrations") >= 2);
    assert_int_equal(query_int(s->path, "SELECT count(*) FROM sqlite_master WHERE type = "
                                         "'index' AND name = 'mutations_state_claimed'"),
                     1);
    /* Reopening applies nothing twice. */
    long long rows = query_int(s->path, "SELECT count(*) FROM schema_migrations");
    assert_int_equal(tb_store_open(&store, s->url, NULL, NULL), TB_OK);
    tb_store_close(store);
    assert_int_equal(query_int(s->path, "SELECT count(*) FROM schema_migrations"), rows);
}

static void test_migrate_fresh_file_is_wal_at_latest(void **state)
{
    scratch_t *s = *state;
    tb_store_t *store = NULL;
    assert_int_equal(tb_store_open(&store, s->url, NULL, NULL), TB_OK);
    tb_store_close(store);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* Every migration file ran once, the last one last (numbers may have gaps while
     * branches that each add one are apart). */
    long long files = 0, newest = 0;
    DIR *dir = opendir(TB_STORE_SCHEMA_DIR);
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir));) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0) {
            files++;
            long long v = atoll(e->d_name);
            newest = v > newest ? v : newest;
        }
    }
    closedir(dir);
    assert_int_equal(query_int(s->path, "SELECT count(*) FROM schema_migrations"), files);
    assert_int_equal(query_int(s->path, "SELECT MAX(version) FROM schema_migrations"), newest);
}

static void test_migrate_newer_schema_refused_untouched(void **state)
{
    scratch_t *s = *state;
    tb_store_t *store = NULL;
    assert_int_equal(tb_store_open(&store, s->url, NULL, NULL), TB_OK);
    tb_store_close(store);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->path, &db), SQLITE_OK);
    exec_or_fail(db, "INSERT INTO schema_migrations VALUES (999, '999_future', 0)");
    sqlite3_close(db);
    long long before = query_int(s->path, "SELECT count(*) FROM sqlite_master");

    tb_store_err_t err;
    store = (tb_store_t *)(uintptr_t)1;
    assert_int_equal(tb_store_open(&store, s->url, NULL, &err), TB_EINVAL);
    assert_null(store);
    assert_int_equal(err.reason, TB_STORE_R_SCHEMA_TOO_NEW);
    assert_non_null(strstr(err.message, "999"));
    assert_non_null(strstr(err.message, "newer"));
    assert_int_equal(query_int(s->path, "SELECT count(*) FROM sqlite_master"), before);
    assert_int_equal(query_int(s->path, "SELECT MAX(version) FROM schema_migrations"), 999);
}

static void test_migrate_not_a_database_ebackend(void **state)
{
    scratch_t *s = *state;
    FILE *f = fopen(s->path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 64; i++)
        fputs("this is not a database file. ", f);
    fclose(f);
    tb_store_t *store = NULL;
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&store, s->url, NULL, &err), TB_EBACKEND);
    assert_null(store);
    assert_int_equal(err.reason, TB_STORE_R_BACKEND);
    assert_true(strlen(err.message) > 0);
    /* A directory that does not exist cannot hold the file. */
    assert_int_equal(tb_store_open(&store, "sqlite:/nonexistent-dir/x/y.db", NULL, &err),
                     TB_EBACKEND);
}

static void test_migrate_damaged_rows_ebackend(void **state)
{
    scratch_t *s = *state;
    tb_store_t *store = NULL;
    assert_int_equal(tb_store_open(&store, s->url, NULL, NULL), TB_OK);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(store, "victim", NULL, NULL, &doc, NULL), TB_OK);
    char *tid = strdup(tb_store_doc_id(doc));
    json_decref(doc);
    json_t *payload = json_object();
    assert_int_equal(tb_store_mutation_enqueue(store, tid, "add_node", payload, -1, NULL, NULL),
                     TB_OK);
    json_decref(payload);

    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->path, &db), SQLITE_OK);
    exec_or_fail(db, "UPDATE topologies SET doc = '{\"nodes\":' ;"
                     "UPDATE mutations SET payload = '[1]'");
    sqlite3_close(db);

    tb_store_err_t err;
    assert_int_equal(tb_store_topology_get(store, tid, &doc, &err), TB_EBACKEND);
    assert_null(doc);
    assert_non_null(strstr(err.message, "cannot be decoded"));
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(store, tid, NULL, &rows, &err), TB_EBACKEND);
    assert_null(rows);
    json_t *row = NULL;
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(store, tid, "test", &row, &c, &err), TB_EBACKEND);
    assert_null(row);
    free(tid);
    tb_store_close(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_version_1_file_upgraded_rows_kept, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_migrate_fresh_file_is_wal_at_latest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_migrate_newer_schema_refused_untouched, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_migrate_not_a_database_ebackend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_damaged_rows_ebackend, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
