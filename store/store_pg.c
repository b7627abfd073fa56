/*
 * The PostgreSQL backend's life cycle and plumbing: parse the URL, connect
 * with a connect timeout, bound every statement (statement_timeout and
 * lock_timeout on the server, a deadline on the socket here), run the
 * embedded migrations under an advisory lock so concurrent openers migrate
 * once, prepare every statement on each connection, and map libpq's
 * failures to tb_status in one place (the only place its text is logged).
 *
 * Connection loss: a call that finds the connection broken drops it and
 * fails at once with TB_ECLOSED; the next call reconnects (at most one
 * attempt per RECONNECT_MS, so an outage never makes every call wait for a
 * connect timeout) and prepares the statements again. A transaction never
 * continues on a new connection. One connection per store; store.c's mutex
 * serialises every call, so nothing here locks.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

#define CONNECT_TIMEOUT_S "3" /* libpq's connect_timeout; a URL may set its own */
#define RECONNECT_MS 500      /* at most one connect attempt per interval */
#define SQLSTATE_NO_STATEMENT "26000" /* invalid_sql_statement_name: not prepared here */
#define GRACE_MS 1000         /* past the server's statement timeout, the socket deadline */
#define TX_ATTEMPTS 3         /* runs of a transaction that meets 40001/40P01 */
#define URL_MAX_LEN 4096
/* The database's clock in epoch ms: clock_timestamp() is the statement's
 * moment, not the transaction's start (now()). Outbox ages and the relay
 * lease use it, so every process sharing the database agrees on time. */
#define DB_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

static const char *const stmt_sql[TB_PG_COUNT] = {
    [TB_PG_TOPO_INSERT] = "INSERT INTO topologies (id, name, status, version, doc, created_at, "
                          "updated_at) VALUES ($1, $2, 'pending', 0, $3, $4, $4) "
                          "RETURNING id, name, status, version, doc, created_at, updated_at",
    [TB_PG_TOPO_GET] = "SELECT id, name, status, version, doc, created_at, updated_at "
                       "FROM topologies WHERE id = $1",
    [TB_PG_TOPO_LIST] = "SELECT id, name, status, version, updated_at FROM topologies "
                        "ORDER BY created_at, id",
    [TB_PG_TOPO_STATUS] = "SELECT status, version FROM topologies WHERE id = $1",
    /* Writers that read the status or version first lock the row, so the
     * check and the write see the same state. NO KEY UPDATE does not block
     * the foreign-key checks of concurrent mutation inserts. */
    [TB_PG_TOPO_LOCK] = "SELECT status, version FROM topologies WHERE id = $1 "
                        "FOR NO KEY UPDATE",
    [TB_PG_TOPO_TRY_LOCK] = "SELECT version, status, claim_seq, claimed_by IS NOT NULL "
                            "FROM topologies WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
    /* A status change is a new request: the claims of the one before are not counted. */
    [TB_PG_TOPO_SET_STATUS] = "UPDATE topologies SET status = $2, updated_at = $3, "
                              "claim_attempts = 0 WHERE id = $1",
    [TB_PG_TOPO_SET_DOC] = "UPDATE topologies SET doc = $2, version = $3, updated_at = $4 "
                           "WHERE id = $1",
    [TB_PG_MUT_INSERT] = "INSERT INTO mutations (id, topology_id, op, payload, state, "
                         "expected_version, created_at, updated_at) "
                         "VALUES ($1, $2, $3, $4, 'pending', $6, $5, $5) "
                         "RETURNING " TB_PG_MUT_COLS,
    [TB_PG_MUT_LIST] = "SELECT " TB_PG_MUT_COLS " FROM mutations WHERE topology_id = $1 "
                       "ORDER BY seq",
    [TB_PG_MUT_LIST_STATE] = "SELECT " TB_PG_MUT_COLS " FROM mutations "
                             "WHERE topology_id = $1 AND state = $2 ORDER BY seq",
    [TB_PG_MUT_IN_FLIGHT] = "SELECT " TB_PG_MUT_COLS " FROM mutations WHERE topology_id = $1 "
                            "AND state IN ('pending', 'applying') ORDER BY seq",
    [TB_PG_MUT_FIND_LOCK] = "SELECT topology_id, state, claim_token, claimed_by, "
                            "effect_started_at IS NOT NULL, attempts, expected_version "
                            "FROM mutations WHERE id = $1 FOR UPDATE",
    /* Runs after TB_PG_TOPO_TRY_LOCK in the same transaction (see
     * tb__pg_mutation_claim): its snapshot is taken once the topology is
     * ours, so it sees every earlier claim of that topology committed.
     * claimed_at is the server's clock: leases are judged on one clock. */
    [TB_PG_MUT_CLAIM] = "UPDATE mutations SET state = 'applying', claimed_at = " DB_NOW_MS ", "
                        "updated_at = $2, claimed_by = $3, claim_token = $4, "
                        "effect_started_at = NULL WHERE state = 'pending' AND seq = "
                        "(SELECT seq FROM mutations WHERE topology_id = $1 AND state = 'pending' "
                        "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) AND NOT EXISTS (SELECT 1 "
                        "FROM mutations WHERE topology_id = $1 AND state = 'applying') "
                        "RETURNING " TB_PG_MUT_COLS ", expected_version",
    [TB_PG_MUT_START] = "UPDATE mutations SET effect_started_at = " DB_NOW_MS " WHERE id = $1 "
                        "AND state = 'applying' AND claim_token = $2 AND claimed_by = $3",
    [TB_PG_MUT_SET_APPLIED] = "UPDATE mutations SET state = 'applied', error = NULL, "
                              "claimed_at = NULL, updated_at = $2 "
                              "WHERE id = $1 AND state = 'applying' RETURNING " TB_PG_MUT_COLS,
    [TB_PG_MUT_SET_FAILED] = "UPDATE mutations SET state = 'failed', error = $2, "
                             "claimed_at = NULL, updated_at = $3 "
                             "WHERE id = $1 AND state = 'applying' RETURNING " TB_PG_MUT_COLS,
    [TB_PG_MUT_REQUEUE] = "UPDATE mutations SET state = 'pending', attempts = attempts + $2, "
                          "claimed_at = NULL, claimed_by = NULL, effect_started_at = NULL, "
                          "updated_at = $3 WHERE id = $1 AND state = 'applying' "
                          "RETURNING " TB_PG_MUT_COLS,
    [TB_PG_MUT_INTERRUPT] = "UPDATE mutations SET state = 'failed', error = 'interrupted', "
                            "attempts = attempts + 1, claimed_at = NULL, updated_at = $2 "
                            "WHERE id = $1 AND state = 'applying' RETURNING " TB_PG_MUT_COLS,
    /* Rows locked here are ended in the same transaction; SKIP LOCKED leaves
     * a row being finished (or recovered) elsewhere to that transaction. */
    [TB_PG_MUT_STALE] = "SELECT id FROM mutations WHERE state = 'applying' AND claimed_at < "
                        DB_NOW_MS " + $1::bigint - $2::bigint ORDER BY seq LIMIT 1000 "
                        "FOR UPDATE SKIP LOCKED",
    [TB_PG_MUT_OWNED] = "SELECT id FROM mutations WHERE state = 'applying' AND claimed_by = $1 "
                        "ORDER BY seq FOR UPDATE SKIP LOCKED",
    [TB_PG_MUT_ANY_APPLYING] = "SELECT 1 FROM mutations WHERE topology_id = $1 AND "
                               "state = 'applying' LIMIT 1",
    [TB_PG_MUT_PRUNE] = "DELETE FROM mutations WHERE seq IN (SELECT seq FROM mutations WHERE "
                        "state IN ('applied', 'failed') AND updated_at < " DB_NOW_MS
                        " - $1::bigint ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    [TB_PG_PENDING_TOPOLOGIES] = "SELECT topology_id FROM mutations WHERE state = 'pending' "
                                 "GROUP BY topology_id ORDER BY MIN(seq)",
    /* The deploy/teardown claim of a topology, locked (finish, release, recovery wait). */
    [TB_PG_TOPO_CLAIM_LOCK] = "SELECT status, version, claim_seq, claimed_by, claim_kind, "
                              "claim_token, effect_started_at IS NOT NULL, claim_attempts "
                              "FROM topologies WHERE id = $1 FOR NO KEY UPDATE",
    [TB_PG_TOPO_SET_SEQ] = "UPDATE topologies SET claim_seq = $2 WHERE id = $1",
    [TB_PG_TOPO_SET_CLAIM] = "UPDATE topologies SET claim_seq = $2, claim_token = $2, "
                             "claim_kind = $3, claimed_by = $4, claimed_at = " DB_NOW_MS ", "
                             "effect_started_at = NULL WHERE id = $1 RETURNING id, name, status, "
                             "version, doc, created_at, updated_at",
    [TB_PG_TOPO_START] = "UPDATE topologies SET effect_started_at = " DB_NOW_MS " WHERE id = $1 "
                         "AND claim_token = $2 AND claimed_by = $3",
    [TB_PG_TOPO_CLEAR_CLAIM] = "UPDATE topologies SET claim_kind = NULL, claimed_by = NULL, "
                               "claim_token = NULL, claimed_at = NULL, effect_started_at = NULL, "
                               "claim_attempts = $2 WHERE id = $1",
    [TB_PG_TOPO_STALE] = "SELECT id FROM topologies WHERE claimed_by IS NOT NULL AND claimed_at < "
                         DB_NOW_MS " + $1::bigint - $2::bigint FOR NO KEY UPDATE SKIP LOCKED",
    [TB_PG_TOPO_OWNED] = "SELECT id FROM topologies WHERE claimed_by IS NOT NULL AND "
                         "claimed_by = $1 FOR NO KEY UPDATE SKIP LOCKED",
    /* seq is drawn here, at insert time: every caller holds the topology's
     * row lock already (tb__pg_outbox_add). created_at is the server's. */
    [TB_PG_OUTBOX_INSERT] = "INSERT INTO outbox (topology_id, topic, msg_id, envelope) "
                            "VALUES ($1, $2, $3, $4)",
    /* greatest(0, …): a wall clock stepped back must not make an age negative. */
    [TB_PG_OUTBOX_READ] = "SELECT seq, topic, msg_id, envelope, greatest(0, " DB_NOW_MS
                          " - created_at) FROM outbox ORDER BY seq LIMIT $1",
    /* Exact seqs only, never `seq <= n`: a row of another topology with a
     * lower seq may still be uncommitted, and must not be lost. */
    [TB_PG_OUTBOX_DELETE] = "DELETE FROM outbox WHERE seq = ANY ($1::bigint[])",
    /* One statement, so one transaction: the row leaves the outbox exactly
     * when it lands in the set-aside table. */
    [TB_PG_OUTBOX_SET_ASIDE] = "WITH moved AS (DELETE FROM outbox WHERE seq = $1 RETURNING seq, "
                               "topology_id, topic, msg_id, envelope, created_at) "
                               "INSERT INTO outbox_set_aside (seq, topology_id, topic, msg_id, "
                               "envelope, created_at, reason, set_aside_at) SELECT seq, "
                               "topology_id, topic, msg_id, envelope, created_at, $2, " DB_NOW_MS
                               " FROM moved ON CONFLICT (seq) DO UPDATE SET reason = "
                               "excluded.reason, set_aside_at = excluded.set_aside_at",
    [TB_PG_OUTBOX_STATS] = "SELECT count(*), greatest(0, coalesce(" DB_NOW_MS
                           " - min(created_at), 0)), (SELECT count(*) FROM outbox_set_aside) "
                           "FROM outbox",
    /* One statement: the lease row is created, renewed by its holder, or
     * taken over once expired (excluded.expires_at - ttl is the server's
     * now), all under the row lock ON CONFLICT takes; RETURNING yields a row
     * only when granted. */
    [TB_PG_LEASE_TAKE] = "INSERT INTO outbox_lease AS l (id, holder, expires_at) "
                         "VALUES (1, $1, " DB_NOW_MS " + $2::bigint) "
                         "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "
                         "expires_at = excluded.expires_at WHERE l.holder = excluded.holder "
                         "OR l.expires_at <= excluded.expires_at - $2::bigint RETURNING holder",
    [TB_PG_LEASE_RELEASE] = "UPDATE outbox_lease SET expires_at = 0 WHERE id = 1 AND holder = $1",
};

static void stmt_name(tb_pg_stmt idx, char name[8])
{
    snprintf(name, 8, "tb%d", (int)idx);
}

tb_pg_int_t tb__pg_int(int64_t v)
{
    tb_pg_int_t out;
    snprintf(out.s, sizeof out.s, "%lld", (long long)v);
    return out;
}

/* The first line of a libpq message, without "ERROR:  "/"FATAL:  ". */
static void first_line(const char *msg, char *buf, size_t cap)
{
    if (!msg || !*msg)
        msg = "no message";
    const char *colon = strstr(msg, ":  ");
    if (colon && colon - msg < 10)
        msg = colon + 3;
    size_t n = strcspn(msg, "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, msg, n);
    buf[n] = '\0';
}

static tb_status unavailable(tb_store_err_t *err, const char *why)
{
    return tb__store_fail(err, TB_ECLOSED, TB_STORE_R_BACKEND,
                          "the database is unavailable (%s); retry shortly", why);
}

/* Forgets a connection that can no longer be trusted; the next call
 * reconnects. The outage is logged once, when it starts. */
static void drop(tb_pg_store_t *q, const char *why)
{
    PQfinish(q->conn);
    q->conn = NULL;
    if (q->down_since_ms == 0) {
        q->down_since_ms = tb_clock_mono_ms();
        q->failed_connects = 0;
        tb_log(TB_LOG_WARN, "store", "database connection lost where=%s why=\"%s\"", q->where, why);
    }
}

/* The connection failed under a call: drop it and report the outage. */
static tb_status lost(tb_pg_store_t *q, const char *what, tb_store_err_t *err)
{
    char line[160];
    first_line(q->conn ? PQerrorMessage(q->conn) : NULL, line, sizeof line);
    tb_log(TB_LOG_DEBUG, "store", "connection failed op=%s msg=\"%s\" where=%s", what, line,
           q->where);
    drop(q, line);
    return unavailable(err, line);
}

static bool is_connection_state(const char *state)
{
    return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
           strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0;
}

static bool is_retryable_state(const char *state)
{
    return strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0;
}

/* Maps a failed result at the boundary and logs the native text once. */
static tb_status map_error(tb_pg_store_t *q, const PGresult *res, const char *what,
                           tb_store_err_t *err)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(q->sqlstate, sizeof q->sqlstate, "%s", state ? state : "");
    char line[160];
    first_line(PQresultErrorMessage(res), line, sizeof line);
    if (PQstatus(q->conn) == CONNECTION_BAD || !state || is_connection_state(state)) {
        tb_log(TB_LOG_DEBUG, "store", "connection failed op=%s sqlstate=%s msg=\"%s\" where=%s",
               what, q->sqlstate, line, q->where);
        drop(q, line);
        return unavailable(err, line);
    }
    if (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0) {
        tb_log(TB_LOG_WARN, "store", "statement timed out op=%s sqlstate=%s where=%s", what, state,
               q->where);
        return tb__store_fail(err, TB_ETIMEDOUT, TB_STORE_R_BUSY,
                              "the database did not finish within the %d ms timeout",
                              q->timeout_ms);
    }
    if (strcmp(state, SQLSTATE_NO_STATEMENT) == 0) {
        /* Not the statement's fault: the session lost what we prepared on it
         * (a pooler reset it, DISCARD ALL). The caller prepares again. */
        tb_log(TB_LOG_DEBUG, "store", "prepared statement gone op=%s where=%s", what, q->where);
        return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND,
                              "the session lost its prepared statements during %s", what);
    }
    if (is_retryable_state(state)) {
        tb_log(TB_LOG_DEBUG, "store", "transaction aborted op=%s sqlstate=%s where=%s", what, state,
               q->where);
        return tb__store_fail(err, TB_ETIMEDOUT, TB_STORE_R_BUSY,
                              "the database kept aborting the transaction (%s)", state);
    }
    tb_log(TB_LOG_ERR, "store", "postgres error op=%s sqlstate=%s msg=\"%s\" where=%s", what, state,
           line, q->where);
    return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND,
                          "database error during %s: SQLSTATE %s", what, state);
}

/* Waits until the socket is readable (or writable, if write), or the
 * deadline passes: 1 ready, 0 deadline, -1 error. */
static int wait_socket(PGconn *c, bool write, int64_t deadline)
{
    int fd = PQsocket(c);
    if (fd < 0)
        return -1;
    for (;;) {
        int64_t left = deadline - tb_clock_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = (short)(POLLIN | (write ? POLLOUT : 0))};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static tb_status deadline_passed(tb_pg_store_t *q, const char *what, tb_store_err_t *err)
{
    char why[96];
    snprintf(why, sizeof why, "no answer within %d ms", q->timeout_ms + GRACE_MS);
    tb_log(TB_LOG_DEBUG, "store", "deadline passed op=%s where=%s", what, q->where);
    drop(q, why);
    return unavailable(err, why);
}

/* After a PQsend*: sends what is buffered, then collects every result of
 * the command, all before one deadline. The connection is non-blocking, so
 * a server that stops answering costs at most the deadline. *res (may be
 * NULL) gets the result on success. */
static tb_status await(tb_pg_store_t *q, const char *what, PGresult **res, tb_store_err_t *err)
{
    PGconn *c = q->conn;
    /* A migration may rightly run for long (an index on a big table): no deadline then. */
    int64_t deadline = q->migrating ? INT64_MAX / 2 : tb_clock_mono_ms() + q->timeout_ms + GRACE_MS;
    int f;
    while ((f = PQflush(c)) == 1) {
        int w = wait_socket(c, true, deadline);
        if (w == 0)
            return deadline_passed(q, what, err);
        if (w < 0 || !PQconsumeInput(c))
            return lost(q, what, err);
    }
    if (f < 0)
        return lost(q, what, err);
    PGresult *keep = NULL;
    for (;;) {
        while (PQisBusy(c)) {
            int w = wait_socket(c, false, deadline);
            if (w <= 0 || !PQconsumeInput(c)) {
                PQclear(keep);
                return w == 0 ? deadline_passed(q, what, err) : lost(q, what, err);
            }
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        /* Keep the first failure, else the last result. */
        bool keep_failed = keep && PQresultStatus(keep) == PGRES_FATAL_ERROR;
        if (keep_failed) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    if (!keep)
        return lost(q, what, err);
    ExecStatusType es = PQresultStatus(keep);
    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK) {
        if (res)
            *res = keep;
        else
            PQclear(keep);
        return TB_OK;
    }
    tb_status st = map_error(q, keep, what, err);
    PQclear(keep);
    return st;
}

tb_status tb__pg_exec(tb_pg_store_t *q, const char *sql, int n, const char *const *values,
                          PGresult **res, const char *what, tb_store_err_t *err)
{
    int sent = n == 0 ? PQsendQuery(q->conn, sql)
                      : PQsendQueryParams(q->conn, sql, n, NULL, values, NULL, NULL, 0);
    if (!sent)
        return lost(q, what, err);
    return await(q, what, res, err);
}

tb_status tb__pg_set_timeouts(tb_pg_store_t *q, int timeout_ms, tb_store_err_t *err)
{
    tb_pg_int_t ms = tb__pg_int(timeout_ms);
    const char *values[] = {ms.s};
    return tb__pg_exec(q,
                    "SELECT set_config('statement_timeout', $1, false), "
                    "set_config('lock_timeout', $1, false)",
                    1, values, NULL, "set timeouts", err);
}

/* Prepares every statement on the current connection (again after a reconnect): the
 * table above, then the idempotency statements, numbered after it. */
static tb_status prepare_all(tb_pg_store_t *q, tb_store_err_t *err)
{
    tb_status st = TB_OK;
    for (int i = 0; !st && i < TB_PG_COUNT + TB_PG_IDEM_COUNT; i++) {
        char name[8];
        stmt_name((tb_pg_stmt)i, name);
        const char *sql = i < TB_PG_COUNT ? stmt_sql[i] : tb__pg_idem_sql[i - TB_PG_COUNT];
        if (!PQsendPrepare(q->conn, name, sql, 0, NULL))
            st = lost(q, "prepare", err);
        else
            st = await(q, "prepare", NULL, err);
    }
    return st;
}

/* Server notices ("relation already exists, skipping") go to the debug log
 * instead of libpq's default, stderr. */
static void on_notice(void *arg, const char *message)
{
    const tb_pg_store_t *q = arg;
    char line[160];
    first_line(message, line, sizeof line);
    tb_log(TB_LOG_DEBUG, "store", "postgres notice msg=\"%s\" where=%s", line, q->where);
}

static tb_status connect_now(tb_pg_store_t *q, bool prepare, tb_store_err_t *err)
{
    /* Keywords before dbname are defaults the URL may override; those after
     * it always apply. */
    static const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                                       "client_encoding", NULL};
    const char *const values[] = {CONNECT_TIMEOUT_S, "topobus", q->url, "UTF8", NULL};
    q->conn = PQconnectdbParams(keys, values, 1);
    /* NULL only when libpq is out of memory, which is fatal here as in tb_xmalloc. */
    TB_ASSERT(q->conn);
    if (PQstatus(q->conn) != CONNECTION_OK) {
        char line[160];
        first_line(PQerrorMessage(q->conn), line, sizeof line);
        PQfinish(q->conn);
        q->conn = NULL;
        tb_log(TB_LOG_DEBUG, "store", "connect failed msg=\"%s\" where=%s", line, q->where);
        return unavailable(err, line);
    }
    PQsetNoticeProcessor(q->conn, on_notice, q);
    if (PQsetnonblocking(q->conn, 1) != 0)
        return lost(q, "set non-blocking", err);
    tb_status st = tb__pg_set_timeouts(q, q->timeout_ms, err);
    if (!st && prepare)
        st = prepare_all(q, err);
    if (st && q->conn) {
        PQfinish(q->conn);
        q->conn = NULL;
    }
    return st;
}

/* Makes sure there is a connection. After a failed attempt the next waits
 * RECONNECT_MS; calls in between fail at once. Never inside a transaction:
 * one whose connection was lost is over, and its remaining statements must
 * not run elsewhere. */
static tb_status ensure_connected(tb_pg_store_t *q, bool in_tx, tb_store_err_t *err)
{
    if (q->conn)
        return TB_OK;
    if (in_tx)
        return unavailable(err, "the connection was lost during the transaction");
    int64_t now = tb_clock_mono_ms();
    if (now < q->retry_at_ms)
        return unavailable(err, "reconnecting");
    tb_status st = connect_now(q, true, err);
    if (st) {
        q->retry_at_ms = tb_clock_mono_ms() + RECONNECT_MS;
        q->failed_connects++;
        return st;
    }
    q->retry_at_ms = 0;
    tb_log(TB_LOG_NOTICE, "store",
           "database connection re-established after %lld ms failed_attempts=%d where=%s",
           (long long)(tb_clock_mono_ms() - q->down_since_ms), q->failed_connects, q->where);
    q->down_since_ms = 0;
    return TB_OK;
}

/* True if the last statement failed because the session lost our prepared statements. */
static bool statements_gone(const tb_pg_store_t *q)
{
    return q->conn && strcmp(q->sqlstate, SQLSTATE_NO_STATEMENT) == 0;
}

/* Prepares every statement again on the same connection, after SQLSTATE
 * 26000 (a connection pooler in transaction mode, or DISCARD ALL, dropped
 * them). Outside any transaction. */
static tb_status reprepare(tb_pg_store_t *q, tb_store_err_t *err)
{
    tb_log(TB_LOG_NOTICE, "store",
           "the database session lost its prepared statements (SQLSTATE 26000, e.g. a pooler "
           "reset it); preparing them again where=%s",
           q->where);
    tb_status st = tb__pg_exec(q, "DEALLOCATE ALL", 0, NULL, NULL, "deallocate", err);
    if (!st)
        st = prepare_all(q, err);
    return st;
}

static tb_status send_prepared(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                               PGresult **res, const char *what, tb_store_err_t *err)
{
    char name[8];
    stmt_name(idx, name);
    if (!PQsendQueryPrepared(q->conn, name, n, values, NULL, NULL, 0))
        return lost(q, what, err);
    return await(q, what, res, err);
}

static tb_status run_prepared(tb_pg_store_t *q, bool in_tx, tb_pg_stmt idx, int n,
                              const char *const *values, PGresult **res, const char *what,
                              tb_store_err_t *err)
{
    q->sqlstate[0] = '\0';
    tb_status st = ensure_connected(q, in_tx, err);
    if (st)
        return st;
    st = send_prepared(q, idx, n, values, res, what, err);
    /* Outside a transaction the statement can simply run again once the
     * statements are back; inside one, tb__pg_tx runs the whole body again. */
    if (st && !in_tx && statements_gone(q)) {
        memset(err, 0, sizeof *err);
        st = reprepare(q, err);
        if (!st)
            st = send_prepared(q, idx, n, values, res, what, err);
    }
    return st;
}

/* True while the connection has a transaction open (or aborted). */
static bool tx_open(const tb_pg_store_t *q)
{
    return q->conn && PQtransactionStatus(q->conn) != PQTRANS_IDLE;
}

tb_status tb__pg_query(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                       PGresult **res, const char *what, tb_store_err_t *err)
{
    *res = NULL;
    return run_prepared(q, q->in_tx, idx, n, values, res, what, err);
}

tb_status tb__pg_command(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                         const char *what, tb_store_err_t *err)
{
    return run_prepared(q, q->in_tx, idx, n, values, NULL, what, err);
}

static void rollback_quietly(tb_pg_store_t *q)
{
    if (!tx_open(q))
        return;
    tb_store_err_t scratch;
    tb__pg_exec(q, "ROLLBACK", 0, NULL, NULL, "rollback", &scratch);
}

tb_status tb__pg_tx(tb_pg_store_t *q, const char *begin, tb_pg_tx_fn fn, void *ctx, json_t **out,
                    tb_store_err_t *err)
{
    if (q->wrapped) {
        /* The wrap's transaction is this one: tb__pg_wrap_end commits or rolls back. */
        json_decref(*out);
        *out = NULL;
        tb_status st = fn(q, ctx, out, err);
        if (st) {
            json_decref(*out);
            *out = NULL;
        }
        return st;
    }
    for (int attempt = 1;; attempt++) {
        json_decref(*out);
        *out = NULL;
        q->sqlstate[0] = '\0';
        q->outbox_added = false;
        tb_status st = ensure_connected(q, false, err);
        if (!st)
            st = tb__pg_exec(q, begin, 0, NULL, NULL, "begin", err);
        if (!st) {
            q->in_tx = true;
            st = fn(q, ctx, out, err);
            q->in_tx = false;
        }
        if (!st && !q->conn)
            st = unavailable(err, "the connection was lost during the transaction");
        if (!st)
            st = tb__pg_exec(q, "COMMIT", 0, NULL, NULL, "commit", err);
        if (!st) {
            /* Only now are the rows there for a relay to read: the
             * listener must not be woken by an attempt that rolled back. */
            if (q->outbox_added)
                q->base.outbox_written = true;
            return TB_OK;
        }
        rollback_quietly(q);
        json_decref(*out);
        *out = NULL;
        bool gone = statements_gone(q);
        if (attempt >= TX_ATTEMPTS || !(gone || is_retryable_state(q->sqlstate)))
            return st;
        memset(err, 0, sizeof *err);
        if (gone && (st = reprepare(q, err)) != TB_OK)
            return st;
    }
}

tb_status tb__pg_wrap_begin(tb_store_t *s, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    TB_ASSERT(!q->wrapped && !q->in_tx);
    q->sqlstate[0] = '\0';
    q->outbox_added = false;
    tb_status st = ensure_connected(q, false, err);
    if (!st)
        st = tb__pg_exec(q, TB_PG_BEGIN, 0, NULL, NULL, "begin", err);
    if (st)
        return st;
    q->in_tx = true;
    q->wrapped = true;
    return TB_OK;
}

tb_status tb__pg_wrap_end(tb_store_t *s, bool commit, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    q->wrapped = false;
    q->in_tx = false;
    tb_status st = TB_OK;
    if (commit && !q->conn)
        st = unavailable(err, "the connection was lost during the transaction");
    else if (commit)
        st = tb__pg_exec(q, "COMMIT", 0, NULL, NULL, "commit", err);
    if (commit && !st) {
        /* As in tb__pg_tx: the listener hears only of committed rows. A deadlock or
         * serialization failure is not retried here (the caller's request fails with
         * TB_ETIMEDOUT and may be sent again). */
        if (q->outbox_added)
            q->base.outbox_written = true;
        return TB_OK;
    }
    rollback_quietly(q);
    return st;
}

tb_status tb__pg_corrupt(tb_pg_store_t *q, const char *what, const char *id, tb_store_err_t *err)
{
    tb_log(TB_LOG_ERR, "store", "undecodable row what=%s id=%s where=%s", what, id ? id : "?",
           q->where);
    return tb__store_fail(err, TB_EBACKEND, TB_STORE_R_BACKEND, "a stored %s cannot be decoded",
                          what);
}

int64_t tb__pg_int64(const PGresult *res, int r, int i)
{
    if (PQgetisnull(res, r, i))
        return 0;
    return strtoll(PQgetvalue(res, r, i), NULL, 10);
}

const char *tb__pg_text(const PGresult *res, int r, int i)
{
    return PQgetisnull(res, r, i) ? NULL : PQgetvalue(res, r, i);
}

tb_status tb__pg_row_json(tb_pg_store_t *q, const PGresult *res, int r, json_t **row,
                          tb_store_err_t *err)
{
    *row = NULL;
    const char *id = tb__pg_text(res, r, 0);
    const char *payload_text = tb__pg_text(res, r, 3);
    json_t *payload = payload_text ? json_loads(payload_text, 0, NULL) : NULL;
    if (!id || !json_is_object(payload)) {
        json_decref(payload);
        return tb__pg_corrupt(q, "mutation", id, err);
    }
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "topology_id", json_string(tb__pg_text(res, r, 1)));
    json_object_set_new(o, "op", json_string(tb__pg_text(res, r, 2)));
    json_object_set_new(o, "payload", payload);
    json_object_set_new(o, "state", json_string(tb__pg_text(res, r, 4)));
    const char *error = tb__pg_text(res, r, 5);
    json_object_set_new(o, "error", error ? json_string(error) : json_null());
    json_object_set_new(o, "attempts", json_integer(tb__pg_int64(res, r, 6)));
    json_object_set_new(o, "created_at", tb__store_time_json(tb__pg_int64(res, r, 7)));
    json_object_set_new(o, "updated_at", tb__store_time_json(tb__pg_int64(res, r, 8)));
    *row = o;
    return TB_OK;
}

tb_status tb__pg_rows_json(tb_pg_store_t *q, const PGresult *res, json_t *arr, tb_store_err_t *err)
{
    int n = PQntuples(res);
    for (int r = 0; r < n; r++) {
        json_t *row = NULL;
        tb_status st = tb__pg_row_json(q, res, r, &row, err);
        if (st)
            return st;
        json_array_append_new(arr, row);
    }
    return TB_OK;
}

/* "host:port/db" for log lines; the password never appears. */
static tb_status describe(tb_pg_store_t *q, tb_store_err_t *err)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(q->url, &msg);
    if (!opts) {
        char line[160];
        first_line(msg, line, sizeof line);
        PQfreemem(msg);
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "bad PostgreSQL URL: %s", line);
    }
    const char *host = "", *port = "", *db = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
    }
    size_t cap = strlen(host) + strlen(port) + strlen(db) + 8;
    q->where = tb_xmalloc(cap);
    snprintf(q->where, cap, "%s:%s/%s", *host ? host : "localhost", *port ? port : "5432", db);
    PQconninfoFree(opts);
    return TB_OK;
}

static void pg_close(tb_store_t *s)
{
    tb_pg_store_t *q = tb__pg_from(s);
    PQfinish(q->conn);
    free(q->url);
    free(q->where);
    free(q);
}

/* target is the URL after "postgres": "://…" or "ql://…". */
static tb_status pg_open(tb_store_t **out, const char *target, const tb_store_options_t *o,
                         tb_store_err_t *err)
{
    *out = NULL;
    if (strncmp(target, "://", 3) != 0 && strncmp(target, "ql://", 5) != 0)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "a PostgreSQL URL is postgres://user:pass@host:port/db");
    if (strlen(target) > URL_MAX_LEN)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "the store URL is too long");
    tb_pg_store_t *q = tb_xcalloc(1, sizeof *q);
    size_t cap = strlen(target) + sizeof "postgres";
    q->url = tb_xmalloc(cap);
    snprintf(q->url, cap, "postgres%s", target);
    q->timeout_ms = o->busy_timeout_ms;
    tb_status st = describe(q, err);
    if (!st)
        st = connect_now(q, false, err);
    if (!st)
        st = tb__pg_migrate(q, err);
    if (!st)
        st = prepare_all(q, err);
    if (st) {
        pg_close(&q->base);
        return st;
    }
    *out = &q->base;
    return TB_OK;
}

const struct tb_store_ops tb__store_pg_ops = {
    .name = "postgres",
    .scheme = "postgres",
    .open = pg_open,
    .close = pg_close,
    .topology_create = tb__pg_topology_create,
    .topology_get = tb__pg_topology_get,
    .topology_list = tb__pg_topology_list,
    .topology_transition = tb__pg_topology_transition,
    .mutation_enqueue = tb__pg_mutation_enqueue,
    .mutation_list = tb__pg_mutation_list,
    .snapshot = tb__pg_snapshot,
    .topologies_with_pending = tb__pg_topologies_with_pending,
    .mutation_claim = tb__pg_mutation_claim,
    .transition_claim = tb__pg_transition_claim,
    .claim_start = tb__pg_claim_start,
    .claim_release = tb__pg_claim_release,
    .release_worker_claims = tb__pg_release_worker_claims,
    .mutation_mark_applied = tb__pg_mutation_mark_applied,
    .mutation_mark_failed = tb__pg_mutation_mark_failed,
    .transition_finish = tb__pg_transition_finish,
    .recover_stale = tb__pg_recover_stale,
    .mutation_prune = tb__pg_mutation_prune,
    .outbox_lease = tb__pg_outbox_lease,
    .outbox_release = tb__pg_outbox_release,
    .outbox_read = tb__pg_outbox_read,
    .outbox_delete = tb__pg_outbox_delete,
    .outbox_set_aside = tb__pg_outbox_set_aside,
    .outbox_stats = tb__pg_outbox_stats,
    .idem_reserve = tb__pg_idem_reserve,
    .idem_record = tb__pg_idem_record,
    .idem_release = tb__pg_idem_release,
    .idem_prune = tb__pg_idem_prune,
    .wrap_begin = tb__pg_wrap_begin,
    .wrap_end = tb__pg_wrap_end,
};
