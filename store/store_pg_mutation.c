/*
 * PostgreSQL backend: the mutation queue, at READ COMMITTED. Enqueue locks
 * its topology row first, so one topology's rows get their seq in commit
 * order and the version check cannot race a mark-applied. Reads that must
 * agree (list, snapshot) share one REPEATABLE READ READ ONLY transaction.
 *
 * Every write records its change event in the outbox in its transaction
 * (store_pg_outbox.c). The outbox's seq is drawn when the row is inserted,
 * not when it commits, yet the relay publishes one topology's events in seq
 * order and CONTRACT §2 wants commit order. So every transaction that
 * inserts an event holds its topology's row lock (FOR NO KEY UPDATE) from
 * before the insert until its commit: two such transactions of one
 * topology run their inserts one after the other, and the second draws its
 * seq only after the first has committed (PostgreSQL makes a commit visible
 * before it releases the committer's locks), so a reader that sees the
 * second row sees the first. Enqueue, mark applied, mark failed and
 * transitions take TB_PG_TOPO_LOCK before their insert; the claim holds
 * the lock through TB_PG_TOPO_TRY_LOCK. Rows of different topologies may
 * commit out of seq order; that is why the relay deletes exact seqs.
 *
 * The claim takes the topology row with FOR NO KEY UPDATE SKIP LOCKED, then
 * the oldest pending row with FOR UPDATE SKIP LOCKED: a claimer never waits
 * for another, and two claimers never get the same row. It must be two
 * statements: the second takes its snapshot after the topology is ours, so
 * it sees an earlier claimer's row as applying and claims nothing (one
 * statement would use a snapshot from before the lock and could skip past a
 * row just claimed, breaking the per-topology order).
 *
 * Lock order: mutation row, then topology row (mark applied, mark failed,
 * ending a claim without a verdict). Claims never wait; enqueue,
 * transitions and their finish hold only the topology row; a deadlock
 * between recoveries is retried by tb__pg_tx.
 */
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"
#include "tb/topic.h"

/* Runs a statement that returns one mutation row into *row; none is
 * TB_ENOTFOUND with message `none`. */
static tb_status row_query(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                           const char *what, const char *none, json_t **row, tb_store_err_t *err)
{
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, idx, n, values, &res, what, err);
    if (st)
        return st;
    if (PQntuples(res) == 0)
        st = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "%s", none);
    else
        st = tb__pg_row_json(q, res, 0, row, err);
    PQclear(res);
    return st;
}

typedef struct enqueue_ctx {
    const char *id, *topology_id, *op, *payload_text;
    int64_t expected_version;
} enqueue_ctx_t;

static tb_status enqueue_tx(tb_pg_store_t *q, void *ctx, json_t **row, tb_store_err_t *err)
{
    enqueue_ctx_t *c = ctx;
    tb_topology_status status;
    int64_t version;
    tb_status st = tb__pg_topology_read_state(q, true, c->topology_id, &status, &version, err);
    if (st)
        return st;
    st = tb__store_check_enqueue(status, version, c->expected_version, err);
    if (st)
        return st;
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    tb_pg_int_t expected = tb__pg_int(c->expected_version);
    const char *values[] = {c->id, c->topology_id, c->op, c->payload_text, now.s,
                            c->expected_version == TB_STORE_NO_VERSION ? NULL : expected.s};
    st = row_query(q, TB_PG_MUT_INSERT, 6, values, "insert mutation", "no row inserted", row, err);
    if (st)
        return st;
    /* The topology row is locked above: this event's seq follows every
     * earlier commit of this topology (see the top of this file). */
    return tb__pg_outbox_add(
        q, TB_TOPIC_MUTATION_ENQUEUED, c->topology_id,
        tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_ENQUEUED, version, NULL), err);
}

tb_status tb__pg_mutation_enqueue(tb_store_t *s, const char *id, const char *topology_id,
                                  const char *op, const char *payload_text,
                                  int64_t expected_version, json_t **row, tb_store_err_t *err)
{
    enqueue_ctx_t c = {id, topology_id, op, payload_text, expected_version};
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, enqueue_tx, &c, row, err);
}

typedef struct read_ctx {
    const char *topology_id;
    int state; /* mutation_list: < 0 for every state */
} read_ctx_t;

static tb_status list_tx(tb_pg_store_t *q, void *ctx, json_t **rows, tb_store_err_t *err)
{
    read_ctx_t *c = ctx;
    tb_topology_status status;
    int64_t version;
    tb_status st = tb__pg_topology_read_state(q, false, c->topology_id, &status, &version, err);
    if (st)
        return st;
    const char *values[] = {
        c->topology_id, c->state < 0 ? NULL : tb_mutation_state_name((tb_mutation_state)c->state)};
    PGresult *res = NULL;
    st = tb__pg_query(q, c->state < 0 ? TB_PG_MUT_LIST : TB_PG_MUT_LIST_STATE, c->state < 0 ? 1 : 2,
                      values, &res, "list mutations", err);
    if (st)
        return st;
    *rows = json_array();
    st = tb__pg_rows_json(q, res, *rows, err);
    PQclear(res);
    return st;
}

tb_status tb__pg_mutation_list(tb_store_t *s, const char *topology_id, int state, json_t **rows,
                               tb_store_err_t *err)
{
    read_ctx_t c = {topology_id, state};
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN_SNAPSHOT, list_tx, &c, rows, err);
}

static tb_status snapshot_tx(tb_pg_store_t *q, void *ctx, json_t **snap, tb_store_err_t *err)
{
    read_ctx_t *c = ctx;
    tb_topology_status status;
    int64_t version;
    tb_status st = tb__pg_topology_read_state(q, false, c->topology_id, &status, &version, err);
    if (st)
        return st;
    const char *values[] = {c->topology_id};
    PGresult *res = NULL;
    st = tb__pg_query(q, TB_PG_MUT_IN_FLIGHT, 1, values, &res, "read in-flight mutations", err);
    if (st)
        return st;
    json_t *in_flight = json_array();
    *snap = json_object();
    json_object_set_new(*snap, "topology_id", json_string(c->topology_id));
    json_object_set_new(*snap, "status", json_string(tb_topology_status_name(status)));
    json_object_set_new(*snap, "version", json_integer(version));
    json_object_set_new(*snap, "in_flight", in_flight);
    st = tb__pg_rows_json(q, res, in_flight, err);
    PQclear(res);
    return st;
}

tb_status tb__pg_snapshot(tb_store_t *s, const char *topology_id, json_t **snap,
                          tb_store_err_t *err)
{
    read_ctx_t c = {topology_id, -1};
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN_SNAPSHOT, snapshot_tx, &c, snap, err);
}

tb_status tb__pg_topologies_with_pending(tb_store_t *s, json_t **ids, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_PENDING_TOPOLOGIES, 0, NULL, &res,
                                "list topologies with pending work", err);
    if (st)
        return st;
    json_t *arr = json_array();
    for (int r = 0; r < PQntuples(res); r++)
        json_array_append_new(arr, json_string(tb__pg_text(res, r, 0)));
    PQclear(res);
    *ids = arr;
    return TB_OK;
}

typedef struct claim_ctx {
    const char *topology_id, *worker;
    tb_store_claim_t *claim;
} claim_ctx_t;

static tb_status claim_tx(tb_pg_store_t *q, void *ctx, json_t **row, tb_store_err_t *err)
{
    claim_ctx_t *c = ctx;
    const char *values[] = {c->topology_id, NULL, NULL, NULL};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_TOPO_TRY_LOCK, 1, values, &res, "lock topology", err);
    if (st)
        return st;
    int locked = PQntuples(res);
    int64_t version = locked ? tb__pg_int64(res, 0, 0) : 0;
    const char *status = locked ? tb__pg_text(res, 0, 1) : NULL;
    /* Mutations wait while the topology deploys or its deploy or teardown is claimed. */
    bool waits = locked && (!status || strcmp(status, "deploying") == 0 ||
                            strcmp(tb__pg_text(res, 0, 3), "t") == 0);
    int64_t token = locked ? tb__pg_int64(res, 0, 2) + 1 : 0;
    PQclear(res);
    /* Absent, or another claimer holds it right now: nothing to claim here. */
    if (locked == 0 || waits)
        return tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND,
                              "no claimable mutation for this topology");
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    tb_pg_int_t tok = tb__pg_int(token);
    values[1] = now.s;
    values[2] = c->worker;
    values[3] = tok.s;
    st = tb__pg_query(q, TB_PG_MUT_CLAIM, 4, values, &res, "claim mutation", err);
    if (st)
        return st;
    if (PQntuples(res) == 0) {
        st = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND,
                            "no claimable mutation for this topology");
    } else {
        st = tb__pg_row_json(q, res, 0, row, err);
        if (!PQgetisnull(res, 0, 9))
            c->claim->expected_version = tb__pg_int64(res, 0, 9);
    }
    PQclear(res);
    if (st)
        return st;
    c->claim->token = token;
    snprintf(c->claim->mutation_id, sizeof c->claim->mutation_id, "%s", tb_store_row_id(*row));
    const char *seq_values[] = {c->topology_id, tok.s};
    st = tb__pg_command(q, TB_PG_TOPO_SET_SEQ, 2, seq_values, "record claim token", err);
    if (st)
        return st;
    /* The try-lock above holds the topology row until commit, so this
     * event's seq is in commit order (see the top of this file). */
    return tb__pg_outbox_add(
        q, TB_TOPIC_MUTATION_APPLYING, c->topology_id,
        tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_APPLYING, version, NULL), err);
}

tb_status tb__pg_mutation_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                json_t **row, tb_store_claim_t *claim, tb_store_err_t *err)
{
    claim_ctx_t c = {topology_id, worker, claim};
    tb_status st = tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, claim_tx, &c, row, err);
    if (st)
        claim->token = 0;
    return st;
}

tb_status tb__pg_mut_claim_read(tb_pg_store_t *q, const char *id, tb_pg_mut_claim_t *out,
                                tb_store_err_t *err)
{
    memset(out, 0, sizeof *out);
    const char *values[] = {id};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_MUT_FIND_LOCK, 1, values, &res, "read mutation", err);
    if (st)
        return st;
    if (PQntuples(res) == 0) {
        st = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such mutation");
    } else {
        const char *tid = tb__pg_text(res, 0, 0);
        const char *state = tb__pg_text(res, 0, 1);
        const char *worker = tb__pg_text(res, 0, 3);
        if (!tid || strlen(tid) >= sizeof out->topology_id || !state ||
            (worker && strlen(worker) >= sizeof out->worker)) {
            st = tb__pg_corrupt(q, "mutation", id, err);
        } else {
            snprintf(out->topology_id, sizeof out->topology_id, "%s", tid);
            out->applying = strcmp(state, "applying") == 0;
            out->token = tb__pg_int64(res, 0, 2);
            snprintf(out->worker, sizeof out->worker, "%s", worker ? worker : "");
            out->started = strcmp(tb__pg_text(res, 0, 4), "t") == 0;
            out->attempts = tb__pg_int64(res, 0, 5);
            out->expected_version =
                PQgetisnull(res, 0, 6) ? TB_STORE_NO_VERSION : tb__pg_int64(res, 0, 6);
        }
    }
    PQclear(res);
    return st;
}

tb_status tb__pg_check_claim(const tb_pg_mut_claim_t *mc, const tb_store_claim_t *claim,
                             tb_store_err_t *err)
{
    if (mc->applying && mc->token == claim->token && strcmp(mc->worker, claim->worker) == 0 &&
        strcmp(mc->topology_id, claim->topology_id) == 0)
        return TB_OK;
    return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_STALE_CLAIM,
                          "the claim with token %lld is no longer %s's: the mutation was "
                          "recovered or reclaimed",
                          (long long)claim->token, claim->worker);
}

/* Locks a mutation row and checks the claim is still the caller's (inside a transaction). */
static tb_status require_claim(tb_pg_store_t *q, const tb_store_claim_t *claim,
                               tb_pg_mut_claim_t *mc, tb_store_err_t *err)
{
    tb_status st = tb__pg_mut_claim_read(q, claim->mutation_id, mc, err);
    return st ? st : tb__pg_check_claim(mc, claim, err);
}

typedef struct mark_ctx {
    const tb_store_claim_t *claim;
    const char *text; /* the graph (applied) or the reason (failed) */
    int64_t new_version;
    bool degrade;
} mark_ctx_t;

static tb_status check_versions(const tb_pg_mut_claim_t *mc, int64_t version, int64_t new_version,
                                tb_store_err_t *err)
{
    if (mc->expected_version != TB_STORE_NO_VERSION && mc->expected_version != version) {
        err->current = version;
        err->expected = mc->expected_version;
        return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_VERSION_CONFLICT,
                              "the topology is at version %lld, not the expected %lld",
                              (long long)version, (long long)mc->expected_version);
    }
    if (new_version != version + 1) {
        err->current = version;
        err->expected = new_version - 1;
        return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_VERSION_CONFLICT,
                              "the topology is at version %lld; version %lld cannot follow",
                              (long long)version, (long long)new_version);
    }
    return TB_OK;
}

static tb_status mark_applied_tx(tb_pg_store_t *q, void *ctx, json_t **row, tb_store_err_t *err)
{
    mark_ctx_t *c = ctx;
    tb_pg_mut_claim_t mc;
    tb_status st = require_claim(q, c->claim, &mc, err);
    tb_topology_status status = TB_TOPOLOGY_ANY;
    int64_t version = 0;
    if (!st)
        st = tb__pg_topology_read_state(q, true, mc.topology_id, &status, &version, err);
    if (!st)
        st = check_versions(&mc, version, c->new_version, err);
    if (st)
        return st;
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    tb_pg_int_t nv = tb__pg_int(c->new_version);
    const char *doc_values[] = {mc.topology_id, c->text, nv.s, now.s};
    st = tb__pg_command(q, TB_PG_TOPO_SET_DOC, 4, doc_values, "update document", err);
    /* A success restores a degraded topology; its status event comes first. */
    if (!st && status == TB_TOPOLOGY_DEGRADED)
        st = tb__pg_set_status(q, mc.topology_id, status, TB_TOPOLOGY_ACTIVE, version, NULL, err);
    if (st)
        return st;
    const char *values[] = {c->claim->mutation_id, now.s};
    st = row_query(q, TB_PG_MUT_SET_APPLIED, 2, values, "mark mutation applied", "no such mutation",
                   row, err);
    if (st)
        return st;
    /* The topology row was locked before the version check above, so this
     * event's seq is in commit order (see the top of this file). */
    return tb__pg_outbox_add(
        q, TB_TOPIC_MUTATION_APPLIED, mc.topology_id,
        tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_APPLIED, c->new_version, NULL), err);
}

tb_status tb__pg_mutation_mark_applied(tb_store_t *s, const tb_store_claim_t *claim,
                                       const char *graph_text, int64_t new_version, json_t **row,
                                       tb_store_err_t *err)
{
    mark_ctx_t c = {claim, graph_text, new_version, false};
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, mark_applied_tx, &c, row, err);
}

static tb_status mark_failed_tx(tb_pg_store_t *q, void *ctx, json_t **row, tb_store_err_t *err)
{
    mark_ctx_t *c = ctx;
    tb_pg_mut_claim_t mc;
    tb_status st = require_claim(q, c->claim, &mc, err);
    /* The failure may change no topology column, but its event needs the
     * topology's row lock all the same: without it, this seq could be drawn
     * before a concurrent writer of the topology commits and the event
     * would commit after that writer's later-numbered one. Same lock order
     * as mark applied: mutation row, then topology row. */
    tb_topology_status status = TB_TOPOLOGY_ANY;
    int64_t version = 0;
    if (!st)
        st = tb__pg_topology_read_state(q, true, mc.topology_id, &status, &version, err);
    /* CONTRACT §4: an active topology becomes degraded; its status event comes first. */
    if (!st && c->degrade && status == TB_TOPOLOGY_ACTIVE)
        st = tb__pg_set_status(q, mc.topology_id, status, TB_TOPOLOGY_DEGRADED, version, c->text,
                               err);
    if (st)
        return st;
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    const char *values[] = {c->claim->mutation_id, c->text, now.s};
    st = row_query(q, TB_PG_MUT_SET_FAILED, 3, values, "mark mutation failed", "no such mutation",
                   row, err);
    if (st)
        return st;
    return tb__pg_outbox_add(
        q, TB_TOPIC_MUTATION_FAILED, mc.topology_id,
        tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_FAILED, version, c->text), err);
}

tb_status tb__pg_mutation_mark_failed(tb_store_t *s, const tb_store_claim_t *claim,
                                      const char *reason, bool degrade, json_t **row,
                                      tb_store_err_t *err)
{
    mark_ctx_t c = {claim, reason, 0, degrade};
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, mark_failed_tx, &c, row, err);
}

tb_status tb__pg_end_mutation_claim(tb_pg_store_t *q, const char *id, const tb_pg_mut_claim_t *mc,
                                    bool expired, tb_store_recovery_t *out, tb_store_err_t *err)
{
    /* Lock order as in mark applied: the mutation row (held), then the topology row. */
    tb_topology_status status;
    int64_t version = 0;
    tb_status st = tb__pg_topology_read_state(q, true, mc->topology_id, &status, &version, err);
    if (st)
        return st;
    tb__claim_fate fate = tb__store_claim_fate(mc->started, mc->attempts, expired);
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    json_t *row = NULL;
    if (fate == TB__FATE_INTERRUPTED) {
        /* CONTRACT §4: an active topology becomes degraded; its status event first. */
        if (status == TB_TOPOLOGY_ACTIVE)
            st = tb__pg_set_status(q, mc->topology_id, status, TB_TOPOLOGY_DEGRADED, version,
                                   TB__STORE_INTERRUPTED, err);
        const char *values[] = {id, now.s};
        if (!st)
            st = row_query(q, TB_PG_MUT_INTERRUPT, 2, values, "fail interrupted mutation",
                           "no such mutation", &row, err);
        if (!st)
            st = tb__pg_outbox_add(q, TB_TOPIC_MUTATION_FAILED, mc->topology_id,
                                   tb__store_mutation_payload(row, TB_TOPIC_MUTATION_FAILED,
                                                              version, TB__STORE_INTERRUPTED),
                                   err);
        if (!st)
            out->failed++;
    } else {
        const char *values[] = {id, fate == TB__FATE_REQUEUE_ONCE ? "1" : "0", now.s};
        st = row_query(q, TB_PG_MUT_REQUEUE, 3, values, "requeue mutation", "no such mutation",
                       &row, err);
        if (!st)
            st = tb__pg_outbox_add(q, TB_TOPIC_MUTATION_ENQUEUED, mc->topology_id,
                                   tb__store_requeued_payload(row, version), err);
        if (!st)
            out->requeued++;
    }
    json_decref(row);
    return st;
}
