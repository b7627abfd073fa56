/*
 * The SQLite backend's life cycle: open the file, configure the connection
 * (busy timeout first, then WAL, synchronous=FULL so an answered write survives
 * a power loss, foreign keys), run the
 * embedded forward migrations under BEGIN IMMEDIATE so concurrent openers
 * migrate once, then prepare every statement the backend will ever run.
 * Also the helpers shared by the backend files: error mapping (the one place
 * SQLite's text is logged), transactions and row decoding.
 *
 * Several processes may open one file: WAL lets readers run beside the one
 * writer, and the busy timeout makes writers queue instead of failing.
 */
#include <stdlib.h>
#include <string.h>

#include "store_sqlite_int.h"
#include "tb/alloc.h"
#include "tb/log.h"

#define PATH_MAX_LEN 4096

static const char *const stmt_sql[TB_SQ_COUNT] = {
    [TB_SQ_BEGIN] = "BEGIN",
    [TB_SQ_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [TB_SQ_COMMIT] = "COMMIT",
    [TB_SQ_ROLLBACK] = "ROLLBACK",
    [TB_SQ_TOPO_INSERT] = "INSERT INTO topologies (id, name, status, version, doc, created_at, "
                          "updated_at) VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?4)",
    [TB_SQ_TOPO_GET] = "SELECT id, name, status, version, doc, created_at, updated_at "
                       "FROM topologies WHERE id = ?1",
    [TB_SQ_TOPO_LIST] = "SELECT id, name, status, version, updated_at FROM topologies "
                        "ORDER BY created_at, id",
    [TB_SQ_TOPO_STATUS] = "SELECT status, version FROM topologies WHERE id = ?1",
    /* A status change is a new request: the claims of the one before are not counted. */
    [TB_SQ_TOPO_SET_STATUS] = "UPDATE topologies SET status = ?2, updated_at = ?3, "
                              "claim_attempts = 0 WHERE id = ?1",
    [TB_SQ_TOPO_SET_DOC] = "UPDATE topologies SET doc = ?2, version = ?3, updated_at = ?4 "
                           "WHERE id = ?1",
    [TB_SQ_MUT_INSERT] = "INSERT INTO mutations (id, topology_id, op, payload, state, "
                         "expected_version, created_at, updated_at) "
                         "VALUES (?1, ?2, ?3, ?4, 'pending', ?6, ?5, ?5) "
                         "RETURNING " TB_SQ_MUT_COLS,
    [TB_SQ_MUT_LIST] = "SELECT " TB_SQ_MUT_COLS " FROM mutations WHERE topology_id = ?1 "
                       "ORDER BY seq",
    [TB_SQ_MUT_LIST_STATE] = "SELECT " TB_SQ_MUT_COLS " FROM mutations "
                             "WHERE topology_id = ?1 AND state = ?2 ORDER BY seq",
    [TB_SQ_MUT_IN_FLIGHT] = "SELECT " TB_SQ_MUT_COLS " FROM mutations WHERE topology_id = ?1 "
                            "AND state IN ('pending', 'applying') ORDER BY seq",
    [TB_SQ_MUT_FIND] = "SELECT topology_id, state, claim_token, claimed_by, "
                       "effect_started_at IS NOT NULL, attempts, expected_version "
                       "FROM mutations WHERE id = ?1",
    /* The claim is one statement, so it is atomic under SQLite's single
     * writer: two claimers can never both see the same row pending. The
     * NOT EXISTS keeps one topology's mutations strictly in order; the
     * EXISTS makes them wait while the topology deploys or its deploy or
     * teardown is claimed. The token is the topology's next one
     * (TB_SQ_TOPO_SET_SEQ records it in the same transaction). */
    [TB_SQ_MUT_CLAIM] = "UPDATE mutations SET state = 'applying', claimed_at = ?2, "
                        "updated_at = ?2, claimed_by = ?3, effect_started_at = NULL, "
                        "claim_token = (SELECT claim_seq + 1 FROM topologies WHERE id = ?1) "
                        "WHERE state = 'pending' AND seq = "
                        "(SELECT seq FROM mutations WHERE topology_id = ?1 AND state = 'pending' "
                        "ORDER BY seq LIMIT 1) AND NOT EXISTS (SELECT 1 FROM mutations "
                        "WHERE topology_id = ?1 AND state = 'applying') AND EXISTS (SELECT 1 "
                        "FROM topologies WHERE id = ?1 AND status <> 'deploying' AND "
                        "claimed_by IS NULL) RETURNING " TB_SQ_MUT_COLS
                        ", claim_token, expected_version",
    [TB_SQ_MUT_START] = "UPDATE mutations SET effect_started_at = ?3 WHERE id = ?1 AND "
                        "state = 'applying' AND claim_token = ?2 AND claimed_by = ?4",
    [TB_SQ_MUT_SET_APPLIED] = "UPDATE mutations SET state = 'applied', error = NULL, "
                              "claimed_at = NULL, updated_at = ?2 "
                              "WHERE id = ?1 AND state = 'applying' RETURNING " TB_SQ_MUT_COLS,
    [TB_SQ_MUT_SET_FAILED] = "UPDATE mutations SET state = 'failed', error = ?2, "
                             "claimed_at = NULL, updated_at = ?3 "
                             "WHERE id = ?1 AND state = 'applying' RETURNING " TB_SQ_MUT_COLS,
    [TB_SQ_MUT_REQUEUE] = "UPDATE mutations SET state = 'pending', attempts = attempts + ?2, "
                          "claimed_at = NULL, claimed_by = NULL, effect_started_at = NULL, "
                          "updated_at = ?3 WHERE id = ?1 AND state = 'applying' "
                          "RETURNING " TB_SQ_MUT_COLS,
    [TB_SQ_MUT_INTERRUPT] = "UPDATE mutations SET state = 'failed', error = 'interrupted', "
                            "attempts = attempts + 1, claimed_at = NULL, updated_at = ?2 "
                            "WHERE id = ?1 AND state = 'applying' RETURNING " TB_SQ_MUT_COLS,
    [TB_SQ_MUT_STALE] = "SELECT id FROM mutations WHERE state = 'applying' AND claimed_at < ?1 "
                        "ORDER BY seq",
    [TB_SQ_MUT_OWNED] = "SELECT id FROM mutations WHERE state = 'applying' AND claimed_by = ?1 "
                        "ORDER BY seq",
    [TB_SQ_MUT_ANY_APPLYING] = "SELECT 1 FROM mutations WHERE topology_id = ?1 AND "
                               "state = 'applying' LIMIT 1",
    [TB_SQ_MUT_PRUNE] = "DELETE FROM mutations WHERE seq IN (SELECT seq FROM mutations WHERE "
                        "state IN ('applied', 'failed') AND updated_at < ?1 "
                        "ORDER BY updated_at LIMIT ?2)",
    [TB_SQ_PENDING_TOPOLOGIES] = "SELECT topology_id FROM mutations WHERE state = 'pending' "
                                 "GROUP BY topology_id ORDER BY MIN(seq)",
    [TB_SQ_TOPO_CLAIM_READ] = "SELECT status, version, claim_seq, claimed_by, claim_kind, "
                              "claim_token, effect_started_at IS NOT NULL, claim_attempts "
                              "FROM topologies WHERE id = ?1",
    [TB_SQ_TOPO_SET_SEQ] = "UPDATE topologies SET claim_seq = ?2 WHERE id = ?1",
    [TB_SQ_TOPO_SET_CLAIM] = "UPDATE topologies SET claim_seq = ?2, claim_token = ?2, "
                             "claim_kind = ?3, claimed_by = ?4, claimed_at = ?5, "
                             "effect_started_at = NULL WHERE id = ?1",
    [TB_SQ_TOPO_START] = "UPDATE topologies SET effect_started_at = ?3 WHERE id = ?1 AND "
                         "claim_token = ?2 AND claimed_by = ?4",
    [TB_SQ_TOPO_CLEAR_CLAIM] = "UPDATE topologies SET claim_kind = NULL, claimed_by = NULL, "
                               "claim_token = NULL, claimed_at = NULL, effect_started_at = NULL, "
                               "claim_attempts = ?2 WHERE id = ?1",
    [TB_SQ_TOPO_STALE] = "SELECT id FROM topologies WHERE claimed_by IS NOT NULL AND "
                         "claimed_at < ?1",
    [TB_SQ_TOPO_OWNED] = "SELECT id FROM topologies WHERE claimed_by IS NOT NULL AND "
                         "claimed_by = ?1",
    [TB_SQ_OUTBOX_INSERT] = "INSERT INTO outbox (topology_id, topic, msg_id, envelope, "
                            "created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    [TB_SQ_OUTBOX_READ] = "SELECT seq, topic, msg_id, envelope, ?2 - created_at FROM outbox "
                          "ORDER BY seq LIMIT ?1",
    [TB_SQ_OUTBOX_DELETE] = "DELETE FROM outbox WHERE seq = ?1",
    [TB_SQ_OUTBOX_SET_ASIDE] = "INSERT OR REPLACE INTO outbox_set_aside (seq, topology_id, topic, "
                               "msg_id, envelope, created_at, reason, set_aside_at) "
                               "SELECT seq, topology_id, topic, msg_id, envelope, created_at, ?2, "
                               "?3 FROM outbox WHERE seq = ?1",
    [TB_SQ_OUTBOX_STATS] = "SELECT count(*), coalesce(?1 - min(created_at), 0) FROM outbox",
    [TB_SQ_OUTBOX_SET_ASIDE_COUNT] = "SELECT count(*) FROM outbox_set_aside",
    /* One statement: the lease row is created, renewed by its holder, or
     * taken over once expired; RETURNING yields a row only when granted. */
    [TB_SQ_LEASE_TAKE] = "INSERT INTO outbox_lease (id, holder, expires_at) VALUES (1, ?1, ?2 + ?3) "
                         "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "
                         "expires_at = excluded.expires_at WHERE outbox_lease.holder = "
                         "excluded.holder OR outbox_lease.expires_at <= ?2 RETURNING holder",
    [TB_SQ_LEASE_RELEASE] = "UPDATE outbox_lease SET expires_at = 0 WHERE id = 1 AND holder = ?1",
};

tb_status tb__sq_error(tb_sq_store_t *q, int rc, const char *what, tb_store_err_t *err)
{
    int primary = rc & 0xff;
    const char *native = q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc);
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
        tb_log(TB_LOG_WARN, "store", "database busy past the timeout op=%s rc=%d path=%s", what,
               rc, q->path);
        return tb__store_fail(err, TB_ETIMEDOUT, TB_STORE_R_BUSY,
                              "the database stayed locked past the busy timeout");
    }
    tb_log(TB_LOG_ERR, "store", "sqlite error op=%s rc=%d msg=\"%s\" path=%s", what, rc, native,
           q->path);
    return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND, "database error during %s: %s",
                          what, sqlite3_errstr(rc));
}

tb_status tb__sq_corrupt(tb_sq_store_t *q, const char *what, const char *id, tb_store_err_t *err)
{
    tb_log(TB_LOG_ERR, "store", "undecodable row what=%s id=%s path=%s", what, id ? id : "?",
           q->path);
    return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND, "a stored %s cannot be decoded",
                          what);
}

sqlite3_stmt *tb__sq_stmt(tb_sq_store_t *q, tb_sq_stmt idx)
{
    sqlite3_stmt *st = q->stmt[idx];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static int run_simple(tb_sq_store_t *q, tb_sq_stmt idx)
{
    sqlite3_stmt *st = tb__sq_stmt(q, idx);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc;
}

tb_status tb__sq_begin(tb_sq_store_t *q, bool immediate, tb_store_err_t *err)
{
    if (q->wrapped)
        return TB_OK;
    int rc = run_simple(q, immediate ? TB_SQ_BEGIN_IMMEDIATE : TB_SQ_BEGIN);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, immediate ? "begin immediate" : "begin", err);
    return TB_OK;
}

void tb__sq_rollback(tb_sq_store_t *q)
{
    q->outbox_pending = false;
    if (!sqlite3_get_autocommit(q->db))
        run_simple(q, TB_SQ_ROLLBACK);
}

tb_status tb__sq_commit(tb_sq_store_t *q, tb_store_err_t *err)
{
    if (q->wrapped)
        return TB_OK; /* tb__sq_wrap_end commits, and tells the listener then */
    int rc = run_simple(q, TB_SQ_COMMIT);
    if (rc == SQLITE_DONE) {
        /* Only a committed outbox row is worth waking the relay for. */
        if (q->outbox_pending)
            q->base.outbox_written = true;
        q->outbox_pending = false;
        return TB_OK;
    }
    tb_status st = tb__sq_error(q, rc, "commit", err);
    tb__sq_rollback(q);
    return st;
}

tb_status tb__sq_row_json(tb_sq_store_t *q, sqlite3_stmt *st, json_t **row, tb_store_err_t *err)
{
    *row = NULL;
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *payload_text = (const char *)sqlite3_column_text(st, 3);
    json_t *payload = payload_text ? json_loads(payload_text, 0, NULL) : NULL;
    if (!id || !json_is_object(payload)) {
        json_decref(payload);
        return tb__sq_corrupt(q, "mutation", id, err);
    }
    json_t *r = json_object();
    json_object_set_new(r, "id", json_string(id));
    json_object_set_new(r, "topology_id", json_string((const char *)sqlite3_column_text(st, 1)));
    json_object_set_new(r, "op", json_string((const char *)sqlite3_column_text(st, 2)));
    json_object_set_new(r, "payload", payload);
    json_object_set_new(r, "state", json_string((const char *)sqlite3_column_text(st, 4)));
    const char *error = (const char *)sqlite3_column_text(st, 5);
    json_object_set_new(r, "error", error ? json_string(error) : json_null());
    json_object_set_new(r, "attempts", json_integer(sqlite3_column_int64(st, 6)));
    json_object_set_new(r, "created_at", tb__store_time_json(sqlite3_column_int64(st, 7)));
    json_object_set_new(r, "updated_at", tb__store_time_json(sqlite3_column_int64(st, 8)));
    *row = r;
    return TB_OK;
}

tb_status tb__sq_rows_json(tb_sq_store_t *q, sqlite3_stmt *st, json_t *arr, const char *what,
                           tb_store_err_t *err)
{
    int rc = SQLITE_DONE;
    tb_status status = TB_OK;
    while (status == TB_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = NULL;
        status = tb__sq_row_json(q, st, &row, err);
        if (!status)
            json_array_append_new(arr, row);
    }
    if (status == TB_OK && rc != SQLITE_DONE)
        status = tb__sq_error(q, rc, what, err);
    sqlite3_reset(st);
    return status;
}

/* Runs one statement that is only executed at open (pragmas, migrations). */
static tb_status exec_sql(tb_sq_store_t *q, const char *sql, const char *what,
                          tb_store_err_t *err)
{
    int rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? TB_OK : tb__sq_error(q, rc, what, err);
}

static tb_status read_int(tb_sq_store_t *q, const char *sql, sqlite3_int64 *out,
                          tb_store_err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *out = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? TB_OK : tb__sq_error(q, rc, "read schema version", err);
}

/* NNN of an embedded "NNN_name.sql" (the build checks the names). */
static int migration_version(const tb_embedded_file_t *m)
{
    return (m->name[0] - '0') * 100 + (m->name[1] - '0') * 10 + (m->name[2] - '0');
}

/* The name recorded and logged: the file name without ".sql". */
static int migration_name_len(const tb_embedded_file_t *m)
{
    return (int)strlen(m->name) - 4;
}

static tb_status record_migration(tb_sq_store_t *q, const tb_embedded_file_t *m,
                                  tb_store_err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db,
                                "INSERT INTO schema_migrations (version, name, applied_at) "
                                "VALUES (?1, ?2, ?3)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(st, 1, migration_version(m));
        sqlite3_bind_text(st, 2, m->name, migration_name_len(m), SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, tb__store_now_ms());
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? TB_OK : tb__sq_error(q, rc, "record migration", err);
}

/* Brings the schema up to the newest embedded migration, or refuses a file
 * written by a newer binary. BEGIN IMMEDIATE: two processes opening a fresh
 * file at once migrate it exactly once; the second sees the new version. */
/* True if the file is already at the newest version: a plain read, which never waits for
 * the writers of a busy file (the common case: every process but the first). */
static bool schema_current(tb_sq_store_t *q, int latest)
{
    sqlite3_int64 current = 0;
    tb_store_err_t scratch;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                  "name = 'schema_migrations'",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return false;
    }
    bool exists = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return exists &&
           read_int(q, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &current,
                    &scratch) == TB_OK &&
           current == latest;
}

static tb_status migrate(tb_sq_store_t *q, tb_store_err_t *err)
{
    TB_ASSERT(tb__store_schema_count > 0);
    const int latest = migration_version(&tb__store_schema[tb__store_schema_count - 1]);
    if (schema_current(q, latest))
        return TB_OK;
    tb_status st = exec_sql(q, "BEGIN IMMEDIATE", "begin migration", err);
    if (st)
        return st;
    st = exec_sql(q,
                  "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                  "name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT",
                  "create schema_migrations", err);
    sqlite3_int64 current = 0;
    if (!st)
        st = read_int(q, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &current, err);
    if (!st && current > latest) {
        tb_log(TB_LOG_ERR, "store", "schema too new version=%lld known=%d path=%s",
               (long long)current, latest, q->path);
        st = tb__store_fail(err, TB_EINVAL, TB_STORE_R_SCHEMA_TOO_NEW,
                            "the database schema is version %lld, newer than the %d this binary "
                            "knows; run a newer topobus",
                            (long long)current, latest);
    }
    for (size_t i = 0; !st && i < tb__store_schema_count; i++) {
        const tb_embedded_file_t *m = &tb__store_schema[i];
        if (migration_version(m) <= current)
            continue;
        st = exec_sql(q, (const char *)m->data, m->name, err);
        if (!st)
            st = record_migration(q, m, err);
        if (!st)
            tb_log(TB_LOG_NOTICE, "store", "applied schema migration name=%.*s path=%s",
                   migration_name_len(m), m->name, q->path);
    }
    if (st) {
        exec_sql(q, "ROLLBACK", "rollback migration", err);
        return st;
    }
    return exec_sql(q, "COMMIT", "commit migration", err);
}

static tb_status configure(tb_sq_store_t *q, const tb_store_options_t *o, const char *path,
                           tb_store_err_t *err)
{
    /* The busy timeout comes first: even the journal-mode switch and the
     * first read may meet another process's lock. */
    sqlite3_busy_timeout(q->db, o->busy_timeout_ms);
    sqlite3_stmt *st = NULL;
    int rc;
    bool wal = false;
    /* Two processes opening a fresh file at once: the switch to WAL can
     * report SQLITE_BUSY without consulting the busy handler, so retry it
     * ourselves within the same timeout. */
    for (int waited_ms = 0;; waited_ms += 10) {
        rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        wal = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        st = NULL;
        if ((rc & 0xff) != SQLITE_BUSY || waited_ms >= o->busy_timeout_ms)
            break;
        sqlite3_sleep(10);
    }
    if (rc != SQLITE_ROW)
        return tb__sq_error(q, rc, "set journal mode", err);
    if (!wal && strcmp(path, ":memory:") != 0)
        return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND,
                              "the database cannot use WAL mode");
    return exec_sql(q,
                    o->sqlite_normal_sync ? "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON"
                                          : "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON",
                    "set pragmas", err);
}

static tb_status prepare_all(tb_sq_store_t *q, tb_store_err_t *err)
{
    for (int i = 0; i < TB_SQ_COUNT; i++) {
        int rc = sqlite3_prepare_v3(q->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &q->stmt[i], NULL);
        if (rc != SQLITE_OK)
            return tb__sq_error(q, rc, "prepare", err);
    }
    return tb__sq_idem_prepare(q, err);
}

static void sq_close(tb_store_t *s)
{
    tb_sq_store_t *q = tb__sq_from(s);
    for (int i = 0; i < TB_SQ_COUNT; i++)
        sqlite3_finalize(q->stmt[i]);
    tb__sq_idem_finalize(q);
    sqlite3_close(q->db);
    free(q->path);
    free(q);
}

static tb_status sq_open(tb_store_t **out, const char *path, const tb_store_options_t *o,
                         tb_store_err_t *err)
{
    *out = NULL;
    size_t len = strlen(path);
    if (len == 0 || len > PATH_MAX_LEN)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "a sqlite URL needs a file path: sqlite:PATH");
    tb_sq_store_t *q = tb_xcalloc(1, sizeof *q);
    q->path = tb_xstrdup(path);
    tb_status st;
    int rc = sqlite3_open_v2(path, &q->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        st = tb__sq_error(q, rc, "open", err);
        goto fail;
    }
    st = configure(q, o, path, err);
    if (st)
        goto fail;
    st = migrate(q, err);
    if (st)
        goto fail;
    st = prepare_all(q, err);
    if (st)
        goto fail;
    *out = &q->base;
    return TB_OK;
fail:
    sq_close(&q->base);
    return st;
}

const struct tb_store_ops tb__store_sqlite_ops = {
    .name = "sqlite",
    .scheme = "sqlite:",
    .open = sq_open,
    .close = sq_close,
    .topology_create = tb__sq_topology_create,
    .topology_get = tb__sq_topology_get,
    .topology_list = tb__sq_topology_list,
    .topology_transition = tb__sq_topology_transition,
    .mutation_enqueue = tb__sq_mutation_enqueue,
    .mutation_list = tb__sq_mutation_list,
    .snapshot = tb__sq_snapshot,
    .topologies_with_pending = tb__sq_topologies_with_pending,
    .mutation_claim = tb__sq_mutation_claim,
    .transition_claim = tb__sq_transition_claim,
    .claim_start = tb__sq_claim_start,
    .claim_release = tb__sq_claim_release,
    .release_worker_claims = tb__sq_release_worker_claims,
    .mutation_mark_applied = tb__sq_mutation_mark_applied,
    .mutation_mark_failed = tb__sq_mutation_mark_failed,
    .transition_finish = tb__sq_transition_finish,
    .recover_stale = tb__sq_recover_stale,
    .mutation_prune = tb__sq_mutation_prune,
    .outbox_lease = tb__sq_outbox_lease,
    .outbox_release = tb__sq_outbox_release,
    .outbox_read = tb__sq_outbox_read,
    .outbox_delete = tb__sq_outbox_delete,
    .outbox_set_aside = tb__sq_outbox_set_aside,
    .outbox_stats = tb__sq_outbox_stats,
    .idem_reserve = tb__sq_idem_reserve,
    .idem_record = tb__sq_idem_record,
    .idem_release = tb__sq_idem_release,
    .idem_prune = tb__sq_idem_prune,
    .wrap_begin = tb__sq_wrap_begin,
    .wrap_end = tb__sq_wrap_end,
};
