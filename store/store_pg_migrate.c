/*
 * PostgreSQL schema migrations, run once at open on the store's fresh
 * connection. A database already at the newest version is seen with two
 * plain reads and no lock (every process but the first). Otherwise:
 *
 *   - the request timeouts are off for the session (statement_timeout and
 *     lock_timeout 0, no socket deadline), because a migration may rightly
 *     take long, e.g. an index on a big table; they are restored after;
 *   - concurrent openers queue on a session-level advisory lock, so the
 *     database is migrated exactly once; a waiter polls
 *     pg_try_advisory_lock, each try a short transaction of its own, because
 *     a session waiting inside pg_advisory_lock would hold a snapshot that
 *     CREATE INDEX CONCURRENTLY waits for (a deadlock);
 *   - each migration runs in its own transaction with its schema_migrations
 *     row, except a file whose first line is `-- topobus:no-transaction`:
 *     its statements (each ending with ';' at the end of a line) run one by
 *     one outside any transaction, as CREATE INDEX CONCURRENTLY needs, and
 *     must each be safe to run again; its row is written once all passed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_pg_int.h"
#include "tb/alloc.h"
#include "tb/buf.h"
#include "tb/log.h"

#define MIGRATION_LOCK_KEY "7370617" /* advisory lock key shared by every opener */
#define LOCK_POLL_MS 100
#define NO_TX_MARKER "-- topobus:no-transaction"

/* NNN of an embedded "NNN_name.sql" (the build checks the names). */
static int migration_version(const tb_embedded_file_t *m)
{
    return (m->name[0] - '0') * 100 + (m->name[1] - '0') * 10 + (m->name[2] - '0');
}

static bool no_transaction(const tb_embedded_file_t *m)
{
    return strncmp((const char *)m->data, NO_TX_MARKER, strlen(NO_TX_MARKER)) == 0;
}

/* One int64 from the first column of a query without parameters. */
static tb_status read_int(tb_pg_store_t *q, const char *sql, const char *what, int64_t *out,
                          tb_store_err_t *err)
{
    PGresult *res = NULL;
    tb_status st = tb__pg_exec(q, sql, 0, NULL, &res, what, err);
    if (st)
        return st;
    *out = PQntuples(res) > 0 ? tb__pg_int64(res, 0, 0) : 0;
    PQclear(res);
    return TB_OK;
}

/* The recorded schema version, 0 for a database never migrated. */
static tb_status current_version(tb_pg_store_t *q, int64_t *out, tb_store_err_t *err)
{
    int64_t exists = 0;
    tb_status st = read_int(q, "SELECT (to_regclass('schema_migrations') IS NOT NULL)::int",
                            "look for schema_migrations", &exists, err);
    *out = 0;
    if (!st && exists)
        st = read_int(q, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                      "read schema version", out, err);
    return st;
}

static tb_status too_new(tb_pg_store_t *q, int64_t current, int latest, tb_store_err_t *err)
{
    tb_log(TB_LOG_ERR, "store", "schema too new version=%lld known=%d where=%s",
           (long long)current, latest, q->where);
    return tb__store_fail(err, TB_EINVAL, TB_STORE_R_SCHEMA_TOO_NEW,
                          "the database schema is version %lld, newer than the %d this binary "
                          "knows; run a newer topobus",
                          (long long)current, latest);
}

/* Waits, however long, until this session holds the migration lock. */
static tb_status lock_migrations(tb_pg_store_t *q, tb_store_err_t *err)
{
    bool told = false;
    for (;;) {
        int64_t got = 0;
        tb_status st = read_int(q, "SELECT pg_try_advisory_lock(" MIGRATION_LOCK_KEY ")::int",
                                "take the migration lock", &got, err);
        if (st || got)
            return st;
        if (!told)
            tb_log(TB_LOG_NOTICE, "store",
                   "another process is migrating the schema; waiting for it where=%s", q->where);
        told = true;
        struct timespec ts = {0, LOCK_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static tb_status record(tb_pg_store_t *q, const tb_embedded_file_t *m, tb_store_err_t *err)
{
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strlen(m->name) - 4, m->name);
    tb_pg_int_t version = tb__pg_int(migration_version(m));
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    const char *values[] = {version.s, name, now.s};
    return tb__pg_exec(q,
                       "INSERT INTO schema_migrations (version, name, applied_at) "
                       "VALUES ($1, $2, $3)",
                       3, values, NULL, "record migration", err);
}

/* Runs the statements of a no-transaction file one at a time. */
static tb_status run_statements(tb_pg_store_t *q, const tb_embedded_file_t *m, tb_store_err_t *err)
{
    tb_buf_t stmt;
    tb_buf_init(&stmt);
    tb_status st = TB_OK;
    const char *p = (const char *)m->data;
    const char *end = p + m->len;
    while (!st && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;
        p += len + (nl ? 1 : 0);
        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\r'))
            len--;
        if (len == 0 || strncmp(line, "--", 2) == 0)
            continue;
        tb_buf_append(&stmt, line, len);
        tb_buf_append_str(&stmt, "\n");
        if (line[len - 1] == ';') {
            st = tb__pg_exec(q, stmt.data, 0, NULL, NULL, m->name, err);
            tb_buf_truncate(&stmt, 0);
        }
    }
    if (!st && stmt.len > 0)
        st = tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                            "migration %s ends inside a statement", m->name);
    tb_buf_cleanup(&stmt);
    return st;
}

static tb_status apply(tb_pg_store_t *q, const tb_embedded_file_t *m, tb_store_err_t *err)
{
    tb_status st;
    if (no_transaction(m)) {
        st = run_statements(q, m, err);
        if (!st)
            st = record(q, m, err);
    } else {
        st = tb__pg_exec(q, "BEGIN", 0, NULL, NULL, "begin migration", err);
        if (!st)
            st = tb__pg_exec(q, (const char *)m->data, 0, NULL, NULL, m->name, err);
        if (!st)
            st = record(q, m, err);
        if (!st)
            st = tb__pg_exec(q, "COMMIT", 0, NULL, NULL, "commit migration", err);
        if (st && q->conn && PQtransactionStatus(q->conn) != PQTRANS_IDLE) {
            tb_store_err_t scratch;
            tb__pg_exec(q, "ROLLBACK", 0, NULL, NULL, "rollback migration", &scratch);
        }
    }
    if (!st)
        tb_log(TB_LOG_NOTICE, "store", "applied schema migration name=%.*s where=%s",
               (int)strlen(m->name) - 4, m->name, q->where);
    return st;
}

/* Under the lock: what is missing now (another opener may have done it meanwhile). */
static tb_status migrate_locked(tb_pg_store_t *q, int latest, tb_store_err_t *err)
{
    tb_status st = tb__pg_exec(q,
                               "CREATE TABLE IF NOT EXISTS schema_migrations (version integer "
                               "PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)",
                               0, NULL, NULL, "create schema_migrations", err);
    int64_t current = 0;
    if (!st)
        st = current_version(q, &current, err);
    if (!st && current > latest)
        st = too_new(q, current, latest, err);
    for (size_t i = 0; !st && i < tb__store_schema_pg_count; i++) {
        if (migration_version(&tb__store_schema_pg[i]) > current)
            st = apply(q, &tb__store_schema_pg[i], err);
    }
    return st;
}

tb_status tb__pg_migrate(tb_pg_store_t *q, tb_store_err_t *err)
{
    TB_ASSERT(tb__store_schema_pg_count > 0);
    const int latest = migration_version(&tb__store_schema_pg[tb__store_schema_pg_count - 1]);
    int64_t current = 0;
    tb_status st = current_version(q, &current, err);
    if (st || current == latest)
        return st;
    if (current > latest)
        return too_new(q, current, latest, err);
    q->migrating = true;
    st = tb__pg_set_timeouts(q, 0, err);
    if (!st)
        st = lock_migrations(q, err);
    if (!st) {
        st = migrate_locked(q, latest, err);
        tb_store_err_t scratch;
        if (q->conn)
            tb__pg_exec(q, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")", 0, NULL, NULL,
                        "release the migration lock", &scratch);
    }
    q->migrating = false;
    if (!st && q->conn)
        st = tb__pg_set_timeouts(q, q->timeout_ms, err);
    return st;
}
