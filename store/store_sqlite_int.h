/*
 * Inside the SQLite backend: its struct (base first), the table of
 * statements prepared once at open, the embedded migrations, and the helpers
 * the backend's files share (error mapping, transactions, row decoding).
 * One connection per store; store.c's mutex serialises its use.
 */
#ifndef TB_STORE_SQLITE_INT_H
#define TB_STORE_SQLITE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>

#include "store_int.h"
#include "tb/embed.h"

/** The forward migrations store/schema/NNN_name.sql, sorted by NNN (embedded at build time). */
extern const tb_embedded_file_t tb__store_schema[];
extern const size_t tb__store_schema_count;

/** Every statement the backend runs after open; the SQL is in store_sqlite.c. */
typedef enum tb_sq_stmt {
    TB_SQ_BEGIN,
    TB_SQ_BEGIN_IMMEDIATE,
    TB_SQ_COMMIT,
    TB_SQ_ROLLBACK,
    TB_SQ_TOPO_INSERT,
    TB_SQ_TOPO_GET,
    TB_SQ_TOPO_LIST,
    TB_SQ_TOPO_STATUS,
    TB_SQ_TOPO_SET_STATUS,
    TB_SQ_TOPO_SET_DOC,
    TB_SQ_MUT_INSERT,
    TB_SQ_MUT_LIST,
    TB_SQ_MUT_LIST_STATE,
    TB_SQ_MUT_IN_FLIGHT,
    TB_SQ_MUT_FIND,
    TB_SQ_MUT_CLAIM,
    TB_SQ_MUT_START,
    TB_SQ_MUT_SET_APPLIED,
    TB_SQ_MUT_SET_FAILED,
    TB_SQ_MUT_REQUEUE,
    TB_SQ_MUT_INTERRUPT,
    TB_SQ_MUT_STALE,
    TB_SQ_MUT_OWNED,
    TB_SQ_MUT_ANY_APPLYING,
    TB_SQ_MUT_PRUNE,
    TB_SQ_PENDING_TOPOLOGIES,
    TB_SQ_TOPO_CLAIM_READ,
    TB_SQ_TOPO_SET_SEQ,
    TB_SQ_TOPO_SET_CLAIM,
    TB_SQ_TOPO_START,
    TB_SQ_TOPO_CLEAR_CLAIM,
    TB_SQ_TOPO_STALE,
    TB_SQ_TOPO_OWNED,
    TB_SQ_OUTBOX_INSERT,
    TB_SQ_OUTBOX_READ,
    TB_SQ_OUTBOX_DELETE,
    TB_SQ_OUTBOX_SET_ASIDE,
    TB_SQ_OUTBOX_STATS,
    TB_SQ_OUTBOX_SET_ASIDE_COUNT,
    TB_SQ_LEASE_TAKE,
    TB_SQ_LEASE_RELEASE,
    TB_SQ_COUNT,
} tb_sq_stmt;

/** The Idempotency-Key statements; the SQL is in store_sqlite_idempotency.c. */
typedef enum tb_sq_idem_stmt {
    TB_SQ_IDEM_GET,
    TB_SQ_IDEM_PUT,
    TB_SQ_IDEM_ANSWER,
    TB_SQ_IDEM_RELEASE,
    TB_SQ_IDEM_PRUNE,
    TB_SQ_IDEM_COUNT,
} tb_sq_idem_stmt;

typedef struct tb_sq_store {
    struct tb_store base; /* first: store.c sees only this */
    sqlite3 *db;
    char *path; /* for log context */
    sqlite3_stmt *stmt[TB_SQ_COUNT];
    bool outbox_pending; /* the open transaction added outbox rows */
    sqlite3_stmt *idem_stmt[TB_SQ_IDEM_COUNT];
    bool wrapped; /* a wrapping transaction is open (tb__sq_wrap_begin): begin/commit join it */
} tb_sq_store_t;

static inline tb_sq_store_t *tb__sq_from(tb_store_t *s)
{
    return tb_container_of(s, tb_sq_store_t, base);
}

/**
 * Maps a SQLite result code to a status at the boundary and logs the native
 * text once with context (what): BUSY/LOCKED → TB_ETIMEDOUT, others →
 * TB_EBACKEND. Returns the status.
 */
tb_status tb__sq_error(tb_sq_store_t *q, int rc, const char *what, tb_store_err_t *err);

/** Logs a row the backend cannot decode and returns TB_EBACKEND. */
tb_status tb__sq_corrupt(tb_sq_store_t *q, const char *what, const char *id, tb_store_err_t *err);

/**
 * Runs BEGIN (read transactions) or BEGIN IMMEDIATE (read-then-write).
 * Inside a wrapping transaction (tb__sq_wrap_begin) begin and commit do
 * nothing: the wrap's transaction is the call's; a rollback ends it.
 */
tb_status tb__sq_begin(tb_sq_store_t *q, bool immediate, tb_store_err_t *err);
/** Commits; on failure rolls back and maps the error. */
tb_status tb__sq_commit(tb_sq_store_t *q, tb_store_err_t *err);
/** Rolls back the open transaction, if any. Never fails. */
void tb__sq_rollback(tb_sq_store_t *q);

/** The prepared statement idx, reset and unbound from its last use. */
sqlite3_stmt *tb__sq_stmt(tb_sq_store_t *q, tb_sq_stmt idx);

/** Column list every mutation-row query selects, in tb__sq_row_json's order. */
#define TB_SQ_MUT_COLS                                                                            \
    "id, topology_id, op, payload, state, error, attempts, created_at, updated_at"

/** Decodes the current row of st (TB_SQ_MUT_COLS) into a new mutation row. */
tb_status tb__sq_row_json(tb_sq_store_t *q, sqlite3_stmt *st, json_t **row, tb_store_err_t *err);

/**
 * Steps st to the end and appends each decoded mutation row to arr.
 * Resets st.
 */
tb_status tb__sq_rows_json(tb_sq_store_t *q, sqlite3_stmt *st, json_t *arr, const char *what,
                           tb_store_err_t *err);

/* The slots of tb__store_sqlite_ops implemented in the other backend files. */
tb_status tb__sq_topology_create(tb_store_t *s, const char *id, const char *name,
                                 const char *graph_text, json_t **doc, tb_store_err_t *err);
tb_status tb__sq_topology_get(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err);
tb_status tb__sq_topology_list(tb_store_t *s, json_t **list, tb_store_err_t *err);
tb_status tb__sq_topology_transition(tb_store_t *s, const char *id,
                                     tb_topology_status expected_from, tb_topology_status to,
                                     const char *reason, tb_topology_status *previous,
                                     tb_store_err_t *err);
tb_status tb__sq_mutation_enqueue(tb_store_t *s, const char *id, const char *topology_id,
                                  const char *op, const char *payload_text,
                                  int64_t expected_version, json_t **row, tb_store_err_t *err);
tb_status tb__sq_mutation_list(tb_store_t *s, const char *topology_id, int state, json_t **rows,
                               tb_store_err_t *err);
tb_status tb__sq_snapshot(tb_store_t *s, const char *topology_id, json_t **snap,
                          tb_store_err_t *err);
tb_status tb__sq_topologies_with_pending(tb_store_t *s, json_t **ids, tb_store_err_t *err);
tb_status tb__sq_mutation_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                json_t **row, tb_store_claim_t *claim, tb_store_err_t *err);
tb_status tb__sq_mutation_mark_applied(tb_store_t *s, const tb_store_claim_t *claim,
                                       const char *graph_text, int64_t new_version, json_t **row,
                                       tb_store_err_t *err);
tb_status tb__sq_mutation_mark_failed(tb_store_t *s, const tb_store_claim_t *claim,
                                      const char *reason, bool degrade, json_t **row,
                                      tb_store_err_t *err);
tb_status tb__sq_transition_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err);
tb_status tb__sq_claim_start(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err);
tb_status tb__sq_claim_release(tb_store_t *s, const tb_store_claim_t *claim,
                               tb_store_recovery_t *out, tb_store_err_t *err);
tb_status tb__sq_release_worker_claims(tb_store_t *s, const char *worker, tb_store_recovery_t *out,
                                       tb_store_err_t *err);
tb_status tb__sq_transition_finish(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                   const char *reason, tb_topology_status *now,
                                   tb_store_err_t *err);
tb_status tb__sq_recover_stale(tb_store_t *s, int64_t ahead_ms, int64_t lease_ms,
                               tb_store_recovery_t *out, tb_store_err_t *err);
tb_status tb__sq_mutation_prune(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                tb_store_err_t *err);

tb_status tb__sq_outbox_lease(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                              tb_store_err_t *err);
tb_status tb__sq_outbox_release(tb_store_t *s, const char *holder, tb_store_err_t *err);
tb_status tb__sq_outbox_read(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                             tb_store_err_t *err);
tb_status tb__sq_outbox_delete(tb_store_t *s, const int64_t *seqs, size_t n, tb_store_err_t *err);
tb_status tb__sq_outbox_set_aside(tb_store_t *s, int64_t seq, const char *reason,
                                  tb_store_err_t *err);
tb_status tb__sq_outbox_stats(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                              int64_t *set_aside, tb_store_err_t *err);

/* Idempotency-Key records and the wrapping transaction (store_sqlite_idempotency.c). */
tb_status tb__sq_idem_reserve(tb_store_t *s, tb_store_idem_t *rec, const char *token,
                              tb_store_err_t *err);
tb_status tb__sq_idem_record(tb_store_t *s, const tb_store_idem_t *rec, int status,
                             const char *body, bool *lost, tb_store_err_t *err);
tb_status tb__sq_idem_release(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err);
tb_status tb__sq_idem_prune(tb_store_t *s, int max, int *pruned, tb_store_err_t *err);
tb_status tb__sq_wrap_begin(tb_store_t *s, tb_store_err_t *err);
tb_status tb__sq_wrap_end(tb_store_t *s, bool commit, tb_store_err_t *err);
/** Prepares the Idempotency-Key statements (at open, after the others). */
tb_status tb__sq_idem_prepare(tb_sq_store_t *q, tb_store_err_t *err);
/** Finalizes them (at close). */
void tb__sq_idem_finalize(tb_sq_store_t *q);

/**
 * Records a change event inside the caller's write transaction: family's
 * topic of topology_id with payload (taken). Does nothing when the store
 * writes no outbox. TB_EINVAL or the mapped SQLite error.
 */
tb_status tb__sq_outbox_add(tb_sq_store_t *q, tb_topic_family family, const char *topology_id,
                            json_t *payload_take, tb_store_err_t *err);

/**
 * Moves topology id to status `to` (inside the caller's write transaction)
 * and records the status event {"state","previous","version","reason"?}.
 */
tb_status tb__sq_set_status(tb_sq_store_t *q, const char *id, tb_topology_status from,
                            tb_topology_status to, int64_t version, const char *reason,
                            tb_store_err_t *err);

/** Reads document id (inside the caller's transaction) into a new *doc. TB_ENOTFOUND. */
tb_status tb__sq_read_doc(tb_sq_store_t *q, const char *id, json_t **doc, tb_store_err_t *err);

/** What the backend knows of a mutation's claim (TB_SQ_MUT_FIND). */
typedef struct tb_sq_mut_claim {
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    bool applying;          /* state is applying */
    int64_t token;          /* 0 if none */
    char worker[TB_STORE_WORKER_BUF_SIZE];
    bool started;           /* effect_started_at is set */
    int64_t attempts;
    int64_t expected_version; /* TB_STORE_NO_VERSION if none */
} tb_sq_mut_claim_t;

/** Reads mutation id's claim (inside the caller's transaction). TB_ENOTFOUND if absent. */
tb_status tb__sq_mut_claim_read(tb_sq_store_t *q, const char *id, tb_sq_mut_claim_t *out,
                                tb_store_err_t *err);

/** TB_OK if mc is still claim (applying, same token and worker), else TB_ECONFLICT stale. */
tb_status tb__sq_check_claim(const tb_sq_mut_claim_t *mc, const tb_store_claim_t *claim,
                             tb_store_err_t *err);

/**
 * Ends mutation id's claim without a verdict (inside the caller's write
 * transaction), by tb__store_claim_fate: requeued (recording
 * mutation.enqueued again) or interrupted (recording status → degraded if
 * the topology was active, then mutation.failed). Counts into out.
 */
tb_status tb__sq_end_mutation_claim(tb_sq_store_t *q, const char *id, const tb_sq_mut_claim_t *mc,
                                    bool expired, tb_store_recovery_t *out, tb_store_err_t *err);

/**
 * Reads the status and version of topology id (inside the caller's
 * transaction). TB_ENOTFOUND if absent.
 */
tb_status tb__sq_topology_state(tb_sq_store_t *q, const char *id, tb_topology_status *status,
                                int64_t *version, tb_store_err_t *err);

#endif
