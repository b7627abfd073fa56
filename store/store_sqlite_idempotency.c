/*
 * SQLite backend: Idempotency-Key records and the wrapping transaction of
 * the *_answered calls. A reservation first reads without a transaction
 * (WAL readers never wait), so a replay, a mismatch or a key in flight is
 * answered without the write lock, even while another process holds it;
 * only a key to take runs BEGIN IMMEDIATE, reads again and writes. The
 * database's clock is this host's (a SQLite file is shared only by
 * processes on one host), so times come from tb__store_now_ms. store.c's
 * mutex serialises calls; nothing here locks.
 */
#include <stdlib.h>
#include <string.h>

#include "store_sqlite_int.h"
#include "tb/alloc.h"

static const char *const idem_sql[TB_SQ_IDEM_COUNT] = {
    [TB_SQ_IDEM_GET] = "SELECT request_hash, status, response, created_at, lease_until "
                       "FROM idempotency WHERE sub = ?1 AND key = ?2",
    /* Only after TB_SQ_IDEM_GET found no row that holds the key, in one transaction. */
    [TB_SQ_IDEM_PUT] = "INSERT OR REPLACE INTO idempotency (sub, key, request_hash, token, "
                       "status, response, created_at, lease_until) "
                       "VALUES (?1, ?2, ?3, ?4, NULL, NULL, ?5, ?5 + ?6)",
    /* The token fences: an owner whose reservation was taken over changes nothing. */
    [TB_SQ_IDEM_ANSWER] = "UPDATE idempotency SET status = ?4, response = ?5, lease_until = NULL "
                          "WHERE sub = ?1 AND key = ?2 AND token = ?3 AND status IS NULL",
    [TB_SQ_IDEM_RELEASE] = "DELETE FROM idempotency "
                           "WHERE sub = ?1 AND key = ?2 AND token = ?3 AND status IS NULL",
    [TB_SQ_IDEM_PRUNE] = "DELETE FROM idempotency WHERE (sub, key) IN (SELECT sub, key "
                         "FROM idempotency WHERE created_at <= ?1 ORDER BY created_at LIMIT ?2)",
};

tb_status tb__sq_idem_prepare(tb_sq_store_t *q, tb_store_err_t *err)
{
    for (int i = 0; i < TB_SQ_IDEM_COUNT; i++) {
        int rc = sqlite3_prepare_v3(q->db, idem_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &q->idem_stmt[i], NULL);
        if (rc != SQLITE_OK)
            return tb__sq_error(q, rc, "prepare", err);
    }
    return TB_OK;
}

void tb__sq_idem_finalize(tb_sq_store_t *q)
{
    for (int i = 0; i < TB_SQ_IDEM_COUNT; i++)
        sqlite3_finalize(q->idem_stmt[i]);
}

/* The statement idx, reset, unbound, with (sub, key) bound as ?1 and ?2. */
static sqlite3_stmt *stmt_for(tb_sq_store_t *q, tb_sq_idem_stmt idx, const tb_store_idem_t *rec)
{
    sqlite3_stmt *st = q->idem_stmt[idx];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_text(st, 1, rec->user, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, rec->key, -1, SQLITE_STATIC);
    return st;
}

/*
 * Reads rec's row as of now_ms: *holds says whether a row holds the key;
 * if so rec->outcome is set (with the answer for a replay).
 */
static tb_status read_row(tb_sq_store_t *q, tb_store_idem_t *rec, int64_t now_ms, bool *holds,
                          tb_store_err_t *err)
{
    *holds = false;
    sqlite3_stmt *st = stmt_for(q, TB_SQ_IDEM_GET, rec);
    int rc = sqlite3_step(st);
    tb_status result = TB_OK;
    if (rc == SQLITE_ROW) {
        const char *hash = (const char *)sqlite3_column_text(st, 0);
        bool answered = sqlite3_column_type(st, 1) != SQLITE_NULL;
        const char *body = (const char *)sqlite3_column_text(st, 2);
        *holds = tb__store_idem_row_holds(&q->base, answered, sqlite3_column_int64(st, 3),
                                          sqlite3_column_int64(st, 4), now_ms);
        if (!hash || (answered && !body)) {
            result = tb__sq_corrupt(q, "idempotency record", rec->key, err);
        } else if (!*holds) {
            /* Expired or lapsed: as if absent. */
        } else if (strcmp(hash, rec->hash) != 0) {
            rec->outcome = TB_IDEM_MISMATCH;
        } else if (!answered) {
            rec->outcome = TB_IDEM_IN_FLIGHT;
        } else {
            rec->outcome = TB_IDEM_REPLAY;
            rec->status = sqlite3_column_int(st, 1);
            rec->body = tb_xstrdup(body);
        }
    } else if (rc != SQLITE_DONE) {
        result = tb__sq_error(q, rc, "read idempotency record", err);
    }
    sqlite3_reset(st);
    return result;
}

tb_status tb__sq_idem_reserve(tb_store_t *s, tb_store_idem_t *rec, const char *token,
                              tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    bool holds;
    tb_status result = read_row(q, rec, tb__store_now_ms(), &holds, err);
    if (result || holds)
        return result;
    /* Free to take: again under the write lock, which another writer may have beaten us to. */
    result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    int64_t now = tb__store_now_ms();
    result = read_row(q, rec, now, &holds, err);
    if (!result && !holds) {
        sqlite3_stmt *st = stmt_for(q, TB_SQ_IDEM_PUT, rec);
        sqlite3_bind_text(st, 3, rec->hash, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, token, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        sqlite3_bind_int64(st, 6, s->idem_lease_ms);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            result = tb__sq_error(q, rc, "reserve idempotency key", err);
    }
    if (!result)
        result = tb__sq_commit(q, err);
    if (result) {
        tb__sq_rollback(q);
        return result;
    }
    if (!holds) {
        rec->outcome = TB_IDEM_RESERVED;
        memcpy(rec->token, token, TB_STORE_IDEM_TOKEN_LEN + 1);
    }
    return TB_OK;
}

tb_status tb__sq_idem_record(tb_store_t *s, const tb_store_idem_t *rec, int status,
                             const char *body, bool *lost, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    /* One statement: its own transaction, or part of the wrapping one. */
    sqlite3_stmt *st = stmt_for(q, TB_SQ_IDEM_ANSWER, rec);
    sqlite3_bind_text(st, 3, rec->token, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, status);
    sqlite3_bind_text(st, 5, body, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "record idempotency answer", err);
    *lost = sqlite3_changes(q->db) == 0;
    return TB_OK;
}

tb_status tb__sq_idem_release(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = stmt_for(q, TB_SQ_IDEM_RELEASE, rec);
    sqlite3_bind_text(st, 3, rec->token, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "release idempotency key", err);
    return TB_OK;
}

tb_status tb__sq_idem_prune(tb_store_t *s, int max, int *pruned, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = q->idem_stmt[TB_SQ_IDEM_PRUNE];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, tb__store_now_ms() - s->idem_ttl_ms);
    sqlite3_bind_int(st, 2, max);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "prune idempotency records", err);
    *pruned = sqlite3_changes(q->db);
    return TB_OK;
}

tb_status tb__sq_wrap_begin(tb_store_t *s, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    TB_ASSERT(!q->wrapped);
    tb_status result = tb__sq_begin(q, true, err);
    if (!result)
        q->wrapped = true;
    return result;
}

tb_status tb__sq_wrap_end(tb_store_t *s, bool commit, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    q->wrapped = false;
    if (commit && sqlite3_get_autocommit(q->db)) {
        /* A call inside rolled the transaction back yet reported success: never commit
         * half of it. No call does that; this is the guard. */
        tb__sq_rollback(q);
        return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND,
                              "the transaction ended before its commit");
    }
    if (commit)
        return tb__sq_commit(q, err);
    tb__sq_rollback(q);
    return TB_OK;
}
