/*
 * PostgreSQL backend: Idempotency-Key records. A reservation is one
 * statement (INSERT … ON CONFLICT DO UPDATE … WHERE the row no longer holds
 * the key), so two gateways reserving one key at once never both get it:
 * the second waits on the row lock the first took, then sees its row. When
 * the key is held, a second statement reads what holds it. An answer
 * recorded by an *_answered call is written in the change's transaction
 * (the wrap, store_pg.c), whose row lock a concurrent reservation of the
 * same key waits for: it then sees the committed answer. Every time here is
 * the server's clock, like the outbox's (store_pg_outbox.c). store.c's
 * mutex serialises calls; nothing here locks.
 */
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"
#include "tb/alloc.h"

/* The database's clock in epoch ms (as DB_NOW_MS in store_pg.c). */
#define NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

enum { TAKE_ATTEMPTS = 3 };

const char *const tb__pg_idem_sql[TB_PG_IDEM_COUNT] = {
    /* $1 sub, $2 key, $3 hash, $4 token, $5 TTL ms, $6 lease ms. A row is taken over only
     * when it no longer holds the key (tb__store_idem_row_holds, negated); RETURNING
     * yields a row exactly when the key is now $4's. */
    [TB_PG_IDEM_TAKE] =
        "WITH clock AS (SELECT " NOW_MS " AS ms) "
        "INSERT INTO idempotency AS i (sub, key, request_hash, token, created_at, "
        "lease_until) SELECT $1, $2, $3, $4, clock.ms, clock.ms + $6::bigint FROM clock "
        "ON CONFLICT (sub, key) DO UPDATE SET request_hash = excluded.request_hash, "
        "token = excluded.token, status = NULL, response = NULL, "
        "created_at = excluded.created_at, lease_until = excluded.lease_until "
        "WHERE i.created_at <= excluded.created_at - $5::bigint "
        "OR (i.status IS NULL AND i.lease_until <= excluded.created_at) "
        "RETURNING i.token",
    [TB_PG_IDEM_GET] = "SELECT request_hash, status, response FROM idempotency "
                       "WHERE sub = $1 AND key = $2",
    /* The token fences: an owner whose reservation was taken over changes nothing. */
    [TB_PG_IDEM_ANSWER] = "UPDATE idempotency SET status = $4::integer, response = $5, "
                          "lease_until = NULL "
                          "WHERE sub = $1 AND key = $2 AND token = $3 AND status IS NULL",
    [TB_PG_IDEM_RELEASE] = "DELETE FROM idempotency "
                           "WHERE sub = $1 AND key = $2 AND token = $3 AND status IS NULL",
    /* SKIP LOCKED: rows a reservation is taking over right now are left to it. */
    [TB_PG_IDEM_PRUNE] = "DELETE FROM idempotency WHERE (sub, key) IN (SELECT sub, key "
                         "FROM idempotency WHERE created_at <= " NOW_MS " - $1::bigint "
                         "ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
};

/* Reads what holds rec's key into rec->outcome; *gone if no row is there any more. */
static tb_status read_holder(tb_pg_store_t *q, tb_store_idem_t *rec, bool *gone,
                             tb_store_err_t *err)
{
    const char *values[] = {rec->user, rec->key};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_IDEM_STMT(TB_PG_IDEM_GET), 2, values, &res,
                                "read idempotency record", err);
    if (st)
        return st;
    *gone = PQntuples(res) == 0;
    if (!*gone) {
        const char *hash = tb__pg_text(res, 0, 0);
        bool answered = !PQgetisnull(res, 0, 1);
        const char *body = tb__pg_text(res, 0, 2);
        if (!hash || (answered && !body)) {
            st = tb__pg_corrupt(q, "idempotency record", rec->key, err);
        } else if (strcmp(hash, rec->hash) != 0) {
            rec->outcome = TB_IDEM_MISMATCH;
        } else if (!answered) {
            rec->outcome = TB_IDEM_IN_FLIGHT;
        } else {
            rec->outcome = TB_IDEM_REPLAY;
            rec->status = (int)tb__pg_int64(res, 0, 1);
            rec->body = tb_xstrdup(body);
        }
    }
    PQclear(res);
    return st;
}

tb_status tb__pg_idem_reserve(tb_store_t *s, tb_store_idem_t *rec, const char *token,
                              tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    tb_pg_int_t ttl = tb__pg_int(s->idem_ttl_ms);
    tb_pg_int_t lease = tb__pg_int(s->idem_lease_ms);
    const char *values[] = {rec->user, rec->key, rec->hash, token, ttl.s, lease.s};
    for (int attempt = 0; attempt < TAKE_ATTEMPTS; attempt++) {
        PGresult *res = NULL;
        tb_status st = tb__pg_query(q, TB_PG_IDEM_STMT(TB_PG_IDEM_TAKE), 6, values, &res,
                                    "reserve idempotency key", err);
        if (st)
            return st;
        bool taken = PQntuples(res) == 1;
        PQclear(res);
        if (taken) {
            rec->outcome = TB_IDEM_RESERVED;
            memcpy(rec->token, token, TB_STORE_IDEM_TOKEN_LEN + 1);
            return TB_OK;
        }
        bool gone = false;
        st = read_holder(q, rec, &gone, err);
        if (st || !gone)
            return st;
        /* The row that held the key expired and was pruned in between: take it again. */
    }
    return tb__store_fail(err, TB_ETIMEDOUT, TB_STORE_R_BUSY,
                          "the Idempotency-Key kept changing hands; retry shortly");
}

tb_status tb__pg_idem_record(tb_store_t *s, const tb_store_idem_t *rec, int status,
                             const char *body, bool *lost, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    tb_pg_int_t code = tb__pg_int(status);
    const char *values[] = {rec->user, rec->key, rec->token, code.s, body};
    PGresult *res = NULL;
    /* One statement: its own transaction, or part of the wrapping one. */
    tb_status st = tb__pg_query(q, TB_PG_IDEM_STMT(TB_PG_IDEM_ANSWER), 5, values, &res,
                                "record idempotency answer", err);
    if (st)
        return st;
    *lost = atoi(PQcmdTuples(res)) == 0;
    PQclear(res);
    return TB_OK;
}

tb_status tb__pg_idem_release(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err)
{
    const char *values[] = {rec->user, rec->key, rec->token};
    return tb__pg_command(tb__pg_from(s), TB_PG_IDEM_STMT(TB_PG_IDEM_RELEASE), 3, values,
                          "release idempotency key", err);
}

tb_status tb__pg_idem_prune(tb_store_t *s, int max, int *pruned, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    tb_pg_int_t ttl = tb__pg_int(s->idem_ttl_ms);
    tb_pg_int_t limit = tb__pg_int(max);
    const char *values[] = {ttl.s, limit.s};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_IDEM_STMT(TB_PG_IDEM_PRUNE), 2, values, &res,
                                "prune idempotency records", err);
    if (st)
        return st;
    *pruned = atoi(PQcmdTuples(res));
    PQclear(res);
    return TB_OK;
}
