/*
 * SQLite backend: the claims of deploys and teardowns, starting and
 * releasing claims, stale-claim recovery and retention pruning. Every write
 * runs inside BEGIN IMMEDIATE: SQLite's single writer makes each check and
 * its write one atomic step, and every event is recorded in the same
 * transaction (store_sqlite_outbox.c). The database's clock is this host's
 * clock (a SQLite file is shared only by processes on one host), so leases
 * and retention are judged by tb__store_now_ms.
 */
#include <stdlib.h>
#include <string.h>

#include "store_sqlite_int.h"
#include "tb/alloc.h"
#include "tb/topic.h"

/* The deploy/teardown claim of a topology, as stored (TB_SQ_TOPO_CLAIM_READ). */
typedef struct topo_claim {
    tb_topology_status status;
    int64_t version, seq, token, attempts;
    bool held, started;
    tb_store_claim_kind kind;
    char worker[TB_STORE_WORKER_BUF_SIZE];
} topo_claim_t;

static tb_status topo_claim_read(tb_sq_store_t *q, const char *id, topo_claim_t *out,
                                 tb_store_err_t *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_CLAIM_READ);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    tb_status result = TB_OK;
    if (rc == SQLITE_ROW) {
        const char *worker = (const char *)sqlite3_column_text(st, 3);
        const char *kind = (const char *)sqlite3_column_text(st, 4);
        out->version = sqlite3_column_int64(st, 1);
        out->seq = sqlite3_column_int64(st, 2);
        out->held = worker != NULL;
        out->token = sqlite3_column_int64(st, 5);
        out->started = sqlite3_column_int(st, 6) != 0;
        out->attempts = sqlite3_column_int64(st, 7);
        if (tb_topology_status_parse((const char *)sqlite3_column_text(st, 0), &out->status) ||
            (worker && (strlen(worker) >= sizeof out->worker ||
                        !tb__store_claim_kind_parse(kind, &out->kind))))
            result = tb__sq_corrupt(q, "topology claim", id, err);
        else if (worker)
            memcpy(out->worker, worker, strlen(worker) + 1);
    } else if (rc == SQLITE_DONE) {
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    } else {
        result = tb__sq_error(q, rc, "read topology claim", err);
    }
    sqlite3_reset(st);
    return result;
}

static tb_status stale(const tb_store_claim_t *claim, tb_store_err_t *err)
{
    return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_STALE_CLAIM,
                          "the %s claim with token %lld is no longer %s's: it was recovered or "
                          "reclaimed",
                          tb_store_claim_kind_name(claim->kind), (long long)claim->token,
                          claim->worker);
}

static tb_status check_topo_claim(const topo_claim_t *tc, const tb_store_claim_t *claim,
                                  tb_store_err_t *err)
{
    if (tc->held && tc->kind == claim->kind && tc->token == claim->token &&
        strcmp(tc->worker, claim->worker) == 0)
        return TB_OK;
    return stale(claim, err);
}

/* Runs a bound statement that returns no rows; what names it in errors. */
static tb_status step_done(tb_sq_store_t *q, sqlite3_stmt *st, const char *what,
                           tb_store_err_t *err)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TB_OK : tb__sq_error(q, rc, what, err);
}

static tb_status clear_topo_claim(tb_sq_store_t *q, const char *id, int64_t attempts,
                                  tb_store_err_t *err)
{
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_CLEAR_CLAIM);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, attempts);
    return step_done(q, st, "end topology claim", err);
}

/* Ends a topology's claim with status `to` (if it is still in the claimed status). */
static tb_status end_transition(tb_sq_store_t *q, const char *id, const topo_claim_t *tc,
                                tb_topology_status to, const char *reason,
                                tb_topology_status *now, tb_store_err_t *err)
{
    tb_status result = clear_topo_claim(q, id, 0, err);
    *now = tc->status;
    if (!result && tc->status == tb__store_claim_status(tc->kind)) {
        result = tb__sq_set_status(q, id, tc->status, to, tc->version, reason, err);
        *now = to;
    }
    return result;
}

/* Ends a topology's claim without a verdict (tb__store_claim_fate). */
static tb_status end_topo_claim(tb_sq_store_t *q, const char *id, const topo_claim_t *tc,
                                bool expired, tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb__claim_fate fate = tb__store_claim_fate(tc->started, tc->attempts, expired);
    if (fate != TB__FATE_INTERRUPTED) {
        out->requeued++;
        return clear_topo_claim(q, id, tc->attempts + (fate == TB__FATE_REQUEUE_ONCE), err);
    }
    out->failed++;
    tb_topology_status to =
        tc->kind == TB_CLAIM_DEPLOY ? TB_TOPOLOGY_FAILED : TB_TOPOLOGY_TORN_DOWN;
    tb_topology_status now;
    return end_transition(q, id, tc, to, TB__STORE_INTERRUPTED, &now, err);
}

tb_status tb__sq_transition_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    topo_claim_t tc;
    result = topo_claim_read(q, topology_id, &tc, err);
    if (result)
        goto fail;
    bool wanted = tc.status == TB_TOPOLOGY_DEPLOYING || tc.status == TB_TOPOLOGY_TEARING_DOWN;
    bool busy = false;
    if (wanted && !tc.held) {
        /* The hook must see the document after the mutation in flight, if any. */
        sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_ANY_APPLYING);
        sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            result = tb__sq_error(q, rc, "look for applying mutations", err);
            goto fail;
        }
        busy = rc == SQLITE_ROW;
    }
    if (!wanted || tc.held || busy) {
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND,
                                "no claimable deploy or teardown for this topology");
        goto fail;
    }
    claim->kind = tc.status == TB_TOPOLOGY_DEPLOYING ? TB_CLAIM_DEPLOY : TB_CLAIM_TEARDOWN;
    claim->token = tc.seq + 1;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_SET_CLAIM);
    sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, claim->token);
    sqlite3_bind_text(st, 3, tb_store_claim_kind_name(claim->kind), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, worker, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, tb__store_now_ms());
    result = step_done(q, st, "claim topology", err);
    if (!result)
        result = tb__sq_read_doc(q, topology_id, doc, err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (!result)
        return TB_OK;
fail:
    json_decref(*doc);
    *doc = NULL;
    tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_claim_start(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    bool mutation = claim->kind == TB_CLAIM_MUTATION;
    sqlite3_stmt *st = tb__sq_stmt(q, mutation ? TB_SQ_MUT_START : TB_SQ_TOPO_START);
    sqlite3_bind_text(st, 1, mutation ? claim->mutation_id : claim->topology_id, -1,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, claim->token);
    sqlite3_bind_int64(st, 3, tb__store_now_ms());
    sqlite3_bind_text(st, 4, claim->worker, -1, SQLITE_STATIC);
    /* One statement, so atomic: it matches only while the claim is the caller's. */
    tb_status result = step_done(q, st, "start claim", err);
    if (!result && sqlite3_changes(q->db) != 1)
        result = stale(claim, err);
    return result;
}

/* Ends one live claim of the caller's without a verdict, inside a transaction. */
static tb_status release_one(tb_sq_store_t *q, const tb_store_claim_t *claim,
                             tb_store_recovery_t *out, tb_store_err_t *err)
{
    if (claim->kind == TB_CLAIM_MUTATION) {
        tb_sq_mut_claim_t mc;
        tb_status result = tb__sq_mut_claim_read(q, claim->mutation_id, &mc, err);
        if (!result)
            result = tb__sq_check_claim(&mc, claim, err);
        return result ? result
                      : tb__sq_end_mutation_claim(q, claim->mutation_id, &mc, false, out, err);
    }
    topo_claim_t tc;
    tb_status result = topo_claim_read(q, claim->topology_id, &tc, err);
    if (!result)
        result = check_topo_claim(&tc, claim, err);
    return result ? result : end_topo_claim(q, claim->topology_id, &tc, false, out, err);
}

tb_status tb__sq_claim_release(tb_store_t *s, const tb_store_claim_t *claim,
                               tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (!result)
        result = release_one(q, claim, out, err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (result)
        tb__sq_rollback(q);
    return result;
}

/* The ids (text column 0) a statement returns, as a new array. */
static tb_status collect_ids(tb_sq_store_t *q, sqlite3_stmt *st, json_t **ids, tb_store_err_t *err)
{
    *ids = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(*ids, json_string((const char *)sqlite3_column_text(st, 0)));
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return TB_OK;
    json_decref(*ids);
    *ids = NULL;
    return tb__sq_error(q, rc, "find claims", err);
}

/* Ends the claims of the mutation ids and topology ids given, without a verdict. */
static tb_status end_claims(tb_sq_store_t *q, const json_t *mutations, const json_t *topologies,
                            bool expired, tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb_status result = TB_OK;
    for (size_t i = 0; !result && i < json_array_size(mutations); i++) {
        const char *id = json_string_value(json_array_get(mutations, i));
        tb_sq_mut_claim_t mc;
        result = tb__sq_mut_claim_read(q, id, &mc, err);
        if (!result)
            result = tb__sq_end_mutation_claim(q, id, &mc, expired, out, err);
    }
    for (size_t i = 0; !result && i < json_array_size(topologies); i++) {
        const char *id = json_string_value(json_array_get(topologies, i));
        topo_claim_t tc;
        result = topo_claim_read(q, id, &tc, err);
        if (!result && tc.held)
            result = end_topo_claim(q, id, &tc, expired, out, err);
    }
    return result;
}

/* One transaction: finds claims with the two bound statements and ends them. */
static tb_status end_found_claims(tb_sq_store_t *q, sqlite3_stmt *mut_st, sqlite3_stmt *topo_st,
                                  bool expired, tb_store_recovery_t *out, tb_store_err_t *err)
{
    json_t *mutations = NULL, *topologies = NULL;
    tb_status result = collect_ids(q, mut_st, &mutations, err);
    if (!result)
        result = collect_ids(q, topo_st, &topologies, err);
    if (!result)
        result = end_claims(q, mutations, topologies, expired, out, err);
    json_decref(mutations);
    json_decref(topologies);
    return result;
}

tb_status tb__sq_release_worker_claims(tb_store_t *s, const char *worker, tb_store_recovery_t *out,
                                       tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    sqlite3_stmt *mut_st = tb__sq_stmt(q, TB_SQ_MUT_OWNED);
    sqlite3_bind_text(mut_st, 1, worker, -1, SQLITE_STATIC);
    sqlite3_stmt *topo_st = tb__sq_stmt(q, TB_SQ_TOPO_OWNED);
    sqlite3_bind_text(topo_st, 1, worker, -1, SQLITE_STATIC);
    result = end_found_claims(q, mut_st, topo_st, false, out, err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (result) {
        *out = (tb_store_recovery_t){0};
        tb__sq_rollback(q);
    }
    return result;
}

tb_status tb__sq_recover_stale(tb_store_t *s, int64_t ahead_ms, int64_t lease_ms,
                               tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    int64_t cutoff = tb__store_now_ms() + ahead_ms - lease_ms;
    sqlite3_stmt *mut_st = tb__sq_stmt(q, TB_SQ_MUT_STALE);
    sqlite3_bind_int64(mut_st, 1, cutoff);
    sqlite3_stmt *topo_st = tb__sq_stmt(q, TB_SQ_TOPO_STALE);
    sqlite3_bind_int64(topo_st, 1, cutoff);
    result = end_found_claims(q, mut_st, topo_st, true, out, err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (result) {
        *out = (tb_store_recovery_t){0};
        tb__sq_rollback(q);
    }
    return result;
}

tb_status tb__sq_transition_finish(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                   const char *reason, tb_topology_status *now,
                                   tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    topo_claim_t tc;
    result = topo_claim_read(q, claim->topology_id, &tc, err);
    if (!result)
        result = check_topo_claim(&tc, claim, err);
    tb_topology_status to = claim->kind == TB_CLAIM_TEARDOWN ? TB_TOPOLOGY_TORN_DOWN
                            : ok                             ? TB_TOPOLOGY_ACTIVE
                                                             : TB_TOPOLOGY_FAILED;
    if (!result)
        result = end_transition(q, claim->topology_id, &tc, to, reason, now, err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (result)
        tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_mutation_prune(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_PRUNE);
    sqlite3_bind_int64(st, 1, tb__store_now_ms() - retention_ms);
    sqlite3_bind_int(st, 2, max);
    /* One statement: its own short transaction. */
    tb_status result = step_done(q, st, "prune settled mutations", err);
    if (!result)
        *deleted = sqlite3_changes(q->db);
    return result;
}
