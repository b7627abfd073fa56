/*
 * Inside the PostgreSQL backend: its struct (base first), the statements
 * prepared on every connection, the embedded migrations, and the helpers the
 * backend's files share (connection upkeep, bounded execution, error
 * mapping, transactions with retry, row decoding). One connection per store;
 * store.c's mutex serialises its use, so nothing here locks.
 */
#ifndef TB_STORE_PG_INT_H
#define TB_STORE_PG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "store_int.h"
#include "tb/embed.h"

/** The forward migrations store/schema_pg/NNN_name.sql, sorted by NNN (embedded at build time). */
extern const tb_embedded_file_t tb__store_schema_pg[];
extern const size_t tb__store_schema_pg_count;

/** Every statement the backend runs after open; the SQL is in store_pg.c. */
typedef enum tb_pg_stmt {
    TB_PG_TOPO_INSERT,
    TB_PG_TOPO_GET,
    TB_PG_TOPO_LIST,
    TB_PG_TOPO_STATUS,
    TB_PG_TOPO_LOCK,
    TB_PG_TOPO_TRY_LOCK,
    TB_PG_TOPO_SET_STATUS,
    TB_PG_TOPO_SET_DOC,
    TB_PG_MUT_INSERT,
    TB_PG_MUT_LIST,
    TB_PG_MUT_LIST_STATE,
    TB_PG_MUT_IN_FLIGHT,
    TB_PG_MUT_FIND_LOCK,
    TB_PG_MUT_CLAIM,
    TB_PG_MUT_START,
    TB_PG_MUT_SET_APPLIED,
    TB_PG_MUT_SET_FAILED,
    TB_PG_MUT_REQUEUE,
    TB_PG_MUT_INTERRUPT,
    TB_PG_MUT_STALE,
    TB_PG_MUT_OWNED,
    TB_PG_MUT_ANY_APPLYING,
    TB_PG_MUT_PRUNE,
    TB_PG_PENDING_TOPOLOGIES,
    TB_PG_TOPO_CLAIM_LOCK,
    TB_PG_TOPO_SET_SEQ,
    TB_PG_TOPO_SET_CLAIM,
    TB_PG_TOPO_START,
    TB_PG_TOPO_CLEAR_CLAIM,
    TB_PG_TOPO_STALE,
    TB_PG_TOPO_OWNED,
    TB_PG_OUTBOX_INSERT,
    TB_PG_OUTBOX_READ,
    TB_PG_OUTBOX_DELETE,
    TB_PG_OUTBOX_SET_ASIDE,
    TB_PG_OUTBOX_STATS,
    TB_PG_LEASE_TAKE,
    TB_PG_LEASE_RELEASE,
    TB_PG_COUNT,
} tb_pg_stmt;

/**
 * The Idempotency-Key statements (their SQL is tb__pg_idem_sql, in
 * store_pg_idempotency.c), prepared on every connection after the others
 * and run as TB_PG_IDEM_STMT(i).
 */
typedef enum tb_pg_idem_stmt {
    TB_PG_IDEM_TAKE,
    TB_PG_IDEM_GET,
    TB_PG_IDEM_ANSWER,
    TB_PG_IDEM_RELEASE,
    TB_PG_IDEM_PRUNE,
    TB_PG_IDEM_COUNT,
} tb_pg_idem_stmt;

extern const char *const tb__pg_idem_sql[TB_PG_IDEM_COUNT];

/** The statement index of idempotency statement i, numbered after tb_pg_stmt's. */
#define TB_PG_IDEM_STMT(i) ((tb_pg_stmt)(TB_PG_COUNT + (int)(i)))

typedef struct tb_pg_store {
    struct tb_store base;  /* first: store.c sees only this */
    PGconn *conn;          /* NULL while the database is unreachable */
    char *url;             /* the full URL (may hold a password: never logged) */
    char *where;           /* host:port/db for log lines, without credentials */
    int timeout_ms;        /* statement and lock timeout; calls end by timeout_ms + grace */
    int64_t retry_at_ms;   /* monotonic: no connect attempt before this (after a failed one) */
    int64_t down_since_ms; /* monotonic time the connection was lost, 0 while up */
    int failed_connects;   /* connect attempts since down_since_ms */
    bool in_tx;            /* inside tb__pg_tx: statements must not reconnect */
    bool migrating;        /* tb__pg_migrate runs: no statement deadline */
    bool outbox_added;     /* the running transaction inserted outbox rows (see tb__pg_tx) */
    char sqlstate[6];      /* of the last failed statement; "" if none */
    bool wrapped;          /* a wrapping transaction is open (tb__pg_wrap_begin) */
} tb_pg_store_t;

static inline tb_pg_store_t *tb__pg_from(tb_store_t *s)
{
    return tb_container_of(s, tb_pg_store_t, base);
}

/** Buffer for an int64 in decimal, as bound to a text parameter. */
typedef struct tb_pg_int {
    char s[24];
} tb_pg_int_t;

/** v as decimal text for a parameter. */
tb_pg_int_t tb__pg_int(int64_t v);

/**
 * Runs prepared statement idx with n text parameters (bound, never spliced)
 * on the connection, reconnecting first if it is down (at most once per
 * TB_PG_RECONNECT_MS). Every wait is bounded. *res is the result on TB_OK
 * (PQclear it). Failures are mapped and logged: TB_ECLOSED (no connection:
 * lost, refused or not answering; see store.h), TB_ETIMEDOUT (statement or
 * lock timeout), TB_EBACKEND.
 */
tb_status tb__pg_query(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                       PGresult **res, const char *what, tb_store_err_t *err);

/**
 * Runs sql on the current connection: without parameters one or more
 * statements, else one statement with n bound text parameters. Bounded
 * like tb__pg_query (except while q->migrating). *res (may be NULL) gets
 * the result. Statuses as tb__pg_query.
 */
tb_status tb__pg_exec(tb_pg_store_t *q, const char *sql, int n, const char *const *values,
                      PGresult **res, const char *what, tb_store_err_t *err);

/** Sets the session's statement_timeout and lock_timeout (0: none). */
tb_status tb__pg_set_timeouts(tb_pg_store_t *q, int timeout_ms, tb_store_err_t *err);

/**
 * Brings the schema up to the newest embedded migration, or refuses a
 * database written by a newer binary (store_pg_migrate.c). At open, on the
 * fresh connection.
 */
tb_status tb__pg_migrate(tb_pg_store_t *q, tb_store_err_t *err);

/** As tb__pg_query for a statement that returns no rows the caller needs. */
tb_status tb__pg_command(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                         const char *what, tb_store_err_t *err);

/**
 * A transaction body: runs statements through tb__pg_query and leaves its
 * result in *out (new) and ctx. It may run more than once (see tb__pg_tx).
 */
typedef tb_status (*tb_pg_tx_fn)(tb_pg_store_t *q, void *ctx, json_t **out, tb_store_err_t *err);

/**
 * Runs fn inside `begin` … COMMIT. Inside a wrapping transaction
 * (tb__pg_wrap_begin) fn runs once in that transaction instead, and the
 * wrap commits or rolls back. On a serialization failure or deadlock
 * (SQLSTATE 40001, 40P01) the transaction is rolled back and run again, a
 * bounded number of times; *out is released before every attempt and after
 * a failure, so on error it is NULL. Sets base.outbox_written once a
 * transaction that inserted outbox rows has committed (never for one rolled
 * back or retried).
 */
tb_status tb__pg_tx(tb_pg_store_t *q, const char *begin, tb_pg_tx_fn fn, void *ctx, json_t **out,
                    tb_store_err_t *err);

#define TB_PG_BEGIN "BEGIN"
#define TB_PG_BEGIN_SNAPSHOT "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

/** Logs a row the backend cannot decode and returns TB_EBACKEND. */
tb_status tb__pg_corrupt(tb_pg_store_t *q, const char *what, const char *id, tb_store_err_t *err);

/** Column i of row r as int64 (0 if NULL or malformed). */
int64_t tb__pg_int64(const PGresult *res, int r, int i);
/** Column i of row r as a string, NULL if SQL NULL. Borrowed from res. */
const char *tb__pg_text(const PGresult *res, int r, int i);

/** Column list every mutation-row query selects, in tb__pg_row_json's order. */
#define TB_PG_MUT_COLS                                                                             \
    "id, topology_id, op, payload, state, error, attempts, created_at, updated_at"

/** Decodes row r of res (TB_PG_MUT_COLS) into a new mutation row. */
tb_status tb__pg_row_json(tb_pg_store_t *q, const PGresult *res, int r, json_t **row,
                          tb_store_err_t *err);

/** Appends every row of res (TB_PG_MUT_COLS), decoded, to arr. */
tb_status tb__pg_rows_json(tb_pg_store_t *q, const PGresult *res, json_t *arr, tb_store_err_t *err);

/* The slots of tb__store_pg_ops implemented in the other backend files. */
tb_status tb__pg_topology_create(tb_store_t *s, const char *id, const char *name,
                                 const char *graph_text, json_t **doc, tb_store_err_t *err);
tb_status tb__pg_topology_get(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err);
tb_status tb__pg_topology_list(tb_store_t *s, json_t **list, tb_store_err_t *err);
tb_status tb__pg_topology_transition(tb_store_t *s, const char *id,
                                     tb_topology_status expected_from, tb_topology_status to,
                                     const char *reason, tb_topology_status *previous,
                                     tb_store_err_t *err);
tb_status tb__pg_mutation_enqueue(tb_store_t *s, const char *id, const char *topology_id,
                                  const char *op, const char *payload_text,
                                  int64_t expected_version, json_t **row, tb_store_err_t *err);
tb_status tb__pg_mutation_list(tb_store_t *s, const char *topology_id, int state, json_t **rows,
                               tb_store_err_t *err);
tb_status tb__pg_snapshot(tb_store_t *s, const char *topology_id, json_t **snap,
                          tb_store_err_t *err);
tb_status tb__pg_topologies_with_pending(tb_store_t *s, json_t **ids, tb_store_err_t *err);
tb_status tb__pg_mutation_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                json_t **row, tb_store_claim_t *claim, tb_store_err_t *err);
tb_status tb__pg_mutation_mark_applied(tb_store_t *s, const tb_store_claim_t *claim,
                                       const char *graph_text, int64_t new_version, json_t **row,
                                       tb_store_err_t *err);
tb_status tb__pg_mutation_mark_failed(tb_store_t *s, const tb_store_claim_t *claim,
                                      const char *reason, bool degrade, json_t **row,
                                      tb_store_err_t *err);
tb_status tb__pg_transition_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err);
tb_status tb__pg_claim_start(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err);
tb_status tb__pg_claim_release(tb_store_t *s, const tb_store_claim_t *claim,
                               tb_store_recovery_t *out, tb_store_err_t *err);
tb_status tb__pg_release_worker_claims(tb_store_t *s, const char *worker, tb_store_recovery_t *out,
                                       tb_store_err_t *err);
tb_status tb__pg_transition_finish(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                   const char *reason, tb_topology_status *now,
                                   tb_store_err_t *err);
tb_status tb__pg_recover_stale(tb_store_t *s, int64_t ahead_ms, int64_t lease_ms,
                               tb_store_recovery_t *out, tb_store_err_t *err);
tb_status tb__pg_mutation_prune(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                tb_store_err_t *err);

tb_status tb__pg_outbox_lease(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                              tb_store_err_t *err);
tb_status tb__pg_outbox_release(tb_store_t *s, const char *holder, tb_store_err_t *err);
tb_status tb__pg_outbox_read(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                             tb_store_err_t *err);
tb_status tb__pg_outbox_delete(tb_store_t *s, const int64_t *seqs, size_t n, tb_store_err_t *err);
tb_status tb__pg_outbox_set_aside(tb_store_t *s, int64_t seq, const char *reason,
                                  tb_store_err_t *err);
tb_status tb__pg_outbox_stats(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                              int64_t *set_aside, tb_store_err_t *err);

/* The wrapping transaction of the *_answered calls (store_pg.c). */
tb_status tb__pg_wrap_begin(tb_store_t *s, tb_store_err_t *err);
tb_status tb__pg_wrap_end(tb_store_t *s, bool commit, tb_store_err_t *err);

/* Idempotency-Key records (store_pg_idempotency.c). */
tb_status tb__pg_idem_reserve(tb_store_t *s, tb_store_idem_t *rec, const char *token,
                              tb_store_err_t *err);
tb_status tb__pg_idem_record(tb_store_t *s, const tb_store_idem_t *rec, int status,
                             const char *body, bool *lost, tb_store_err_t *err);
tb_status tb__pg_idem_release(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err);
tb_status tb__pg_idem_prune(tb_store_t *s, int max, int *pruned, tb_store_err_t *err);

/**
 * Records a change event inside the caller's transaction (tb__pg_tx only):
 * family's topic of topology_id with payload (taken, also on failure).
 * Does nothing when the store writes no outbox. Ordering: the caller must
 * already hold topology_id's row lock (TB_PG_TOPO_LOCK or
 * TB_PG_TOPO_TRY_LOCK), because seq is drawn here, at insert time, and only
 * that lock makes one topology's seq order its commit order. TB_EINVAL or
 * the mapped PostgreSQL error.
 */
tb_status tb__pg_outbox_add(tb_pg_store_t *q, tb_topic_family family, const char *topology_id,
                            json_t *payload_take, tb_store_err_t *err);

/**
 * Moves topology id to status `to` inside the caller's transaction (which
 * holds the topology's row lock) and records the status event
 * {"state","previous","version","reason"?}.
 */
tb_status tb__pg_set_status(tb_pg_store_t *q, const char *id, tb_topology_status from,
                            tb_topology_status to, int64_t version, const char *reason,
                            tb_store_err_t *err);

/**
 * Builds a new document from row 0 of res (id, name, status, version, doc,
 * created_at, updated_at). TB_ENOTFOUND if res has no row.
 */
tb_status tb__pg_topology_doc(tb_pg_store_t *q, const PGresult *res, json_t **doc,
                              tb_store_err_t *err);

/** What the backend knows of a mutation's claim (TB_PG_MUT_FIND_LOCK, which locks the row). */
typedef struct tb_pg_mut_claim {
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    bool applying;
    int64_t token;
    char worker[TB_STORE_WORKER_BUF_SIZE];
    bool started;
    int64_t attempts;
    int64_t expected_version; /* TB_STORE_NO_VERSION if none */
} tb_pg_mut_claim_t;

/** Reads and locks mutation id's claim (inside a transaction). TB_ENOTFOUND if absent. */
tb_status tb__pg_mut_claim_read(tb_pg_store_t *q, const char *id, tb_pg_mut_claim_t *out,
                                tb_store_err_t *err);

/** TB_OK if mc is still claim (applying, same token and worker), else TB_ECONFLICT stale. */
tb_status tb__pg_check_claim(const tb_pg_mut_claim_t *mc, const tb_store_claim_t *claim,
                             tb_store_err_t *err);

/**
 * Ends mutation id's claim without a verdict inside the caller's
 * transaction (the row locked by tb__pg_mut_claim_read or a FOR UPDATE
 * scan): locks its topology, then requeues (recording mutation.enqueued
 * again) or interrupts it (recording status → degraded if active, then
 * mutation.failed), by tb__store_claim_fate. Counts into out.
 */
tb_status tb__pg_end_mutation_claim(tb_pg_store_t *q, const char *id, const tb_pg_mut_claim_t *mc,
                                    bool expired, tb_store_recovery_t *out, tb_store_err_t *err);

/**
 * Reads the status and version of topology id inside the caller's
 * transaction, locking the row (FOR NO KEY UPDATE) if lock is set.
 * TB_ENOTFOUND if absent.
 */
tb_status tb__pg_topology_read_state(tb_pg_store_t *q, bool lock, const char *id,
                                     tb_topology_status *status, int64_t *version,
                                     tb_store_err_t *err);

#endif
