/*
 * SQLite backend: the mutation queue. Enqueue and the mark operations read
 * then write, so they run inside BEGIN IMMEDIATE (a plain BEGIN would fail
 * at once with SQLITE_BUSY_SNAPSHOT when another process wrote in between).
 * The claim is a single UPDATE … RETURNING, in a transaction only so its
 * mutation.applying event commits with it. Every write records its change
 * event in the outbox in the same transaction (store_sqlite_outbox.c). Reads that must agree with each other (the snapshot) share
 * one read transaction; WAL readers never wait for writers.
 */
#include <string.h>

#include "store_sqlite_int.h"
#include "tb/topic.h"

tb_status tb__sq_mutation_enqueue(tb_store_t *s, const char *id, const char *topology_id,
                                  const char *op, const char *payload_text,
                                  int64_t expected_version, json_t **row, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    tb_topology_status status;
    int64_t version;
    result = tb__sq_topology_state(q, topology_id, &status, &version, err);
    if (result)
        goto fail;
    result = tb__store_check_enqueue(status, version, expected_version, err);
    if (result)
        goto fail;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_INSERT);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, op, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, payload_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, tb__store_now_ms());
    if (expected_version != TB_STORE_NO_VERSION)
        sqlite3_bind_int64(st, 6, expected_version);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        result = tb__sq_row_json(q, st, row, err);
    else
        result = tb__sq_error(q, rc, "insert mutation", err);
    sqlite3_reset(st);
    if (!result)
        result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_ENQUEUED, topology_id,
                                   tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_ENQUEUED,
                                                              version, NULL),
                                   err);
    if (result)
        goto fail;
    result = tb__sq_commit(q, err);
    if (result)
        goto fail;
    return TB_OK;
fail:
    json_decref(*row);
    *row = NULL;
    tb__sq_rollback(q);
    return result;
}

/* Fails with TB_ENOTFOUND unless the topology exists (inside a transaction). */
static tb_status require_topology(tb_sq_store_t *q, const char *id, tb_topology_status *status,
                                  int64_t *version, tb_store_err_t *err)
{
    tb_topology_status scratch_status;
    int64_t scratch_version;
    return tb__sq_topology_state(q, id, status ? status : &scratch_status,
                                 version ? version : &scratch_version, err);
}

tb_status tb__sq_mutation_list(tb_store_t *s, const char *topology_id, int state, json_t **rows,
                               tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, false, err);
    if (result)
        return result;
    json_t *arr = json_array();
    result = require_topology(q, topology_id, NULL, NULL, err);
    if (result)
        goto fail;
    sqlite3_stmt *st = tb__sq_stmt(q, state < 0 ? TB_SQ_MUT_LIST : TB_SQ_MUT_LIST_STATE);
    sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
    if (state >= 0)
        sqlite3_bind_text(st, 2, tb_mutation_state_name((tb_mutation_state)state), -1,
                          SQLITE_STATIC);
    result = tb__sq_rows_json(q, st, arr, "list mutations", err);
    if (result)
        goto fail;
    result = tb__sq_commit(q, err);
    if (result)
        goto fail;
    *rows = arr;
    return TB_OK;
fail:
    json_decref(arr);
    tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_snapshot(tb_store_t *s, const char *topology_id, json_t **snap,
                          tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, false, err);
    if (result)
        return result;
    json_t *in_flight = json_array();
    tb_topology_status status;
    int64_t version;
    result = require_topology(q, topology_id, &status, &version, err);
    if (result)
        goto fail;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_IN_FLIGHT);
    sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
    result = tb__sq_rows_json(q, st, in_flight, "read in-flight mutations", err);
    if (result)
        goto fail;
    result = tb__sq_commit(q, err);
    if (result)
        goto fail;
    json_t *out = json_object();
    json_object_set_new(out, "topology_id", json_string(topology_id));
    json_object_set_new(out, "status", json_string(tb_topology_status_name(status)));
    json_object_set_new(out, "version", json_integer(version));
    json_object_set_new(out, "in_flight", in_flight);
    *snap = out;
    return TB_OK;
fail:
    json_decref(in_flight);
    tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_topologies_with_pending(tb_store_t *s, json_t **ids, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_PENDING_TOPOLOGIES);
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_string((const char *)sqlite3_column_text(st, 0)));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return tb__sq_error(q, rc, "list topologies with pending work", err);
    }
    *ids = arr;
    return TB_OK;
}

tb_status tb__sq_mutation_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                json_t **row, tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    /* The claim itself is one atomic statement; the transaction adds the
     * topology's token counter and the event. */
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_CLAIM);
    sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, tb__store_now_ms());
    sqlite3_bind_text(st, 3, worker, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        result = tb__sq_row_json(q, st, row, err);
        claim->token = sqlite3_column_int64(st, 9);
        if (sqlite3_column_type(st, 10) != SQLITE_NULL)
            claim->expected_version = sqlite3_column_int64(st, 10);
    } else if (rc == SQLITE_DONE) {
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND,
                                "no claimable mutation for this topology");
    } else {
        result = tb__sq_error(q, rc, "claim mutation", err);
    }
    /* Reset completes the statement: the update happened in the first step. */
    sqlite3_reset(st);
    if (!result && claim->token <= 0)
        result = tb__sq_corrupt(q, "claim token", topology_id, err);
    if (!result) {
        snprintf(claim->mutation_id, sizeof claim->mutation_id, "%s", tb_store_row_id(*row));
        st = tb__sq_stmt(q, TB_SQ_TOPO_SET_SEQ);
        sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, claim->token);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            result = tb__sq_error(q, rc, "record claim token", err);
    }
    tb_topology_status status;
    int64_t version = 0;
    if (!result)
        result = tb__sq_topology_state(q, topology_id, &status, &version, err);
    if (!result)
        result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_APPLYING, topology_id,
                                   tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_APPLYING,
                                                              version, NULL),
                                   err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (result) {
        json_decref(*row);
        *row = NULL;
        tb__sq_rollback(q);
    }
    return result;
}

tb_status tb__sq_mut_claim_read(tb_sq_store_t *q, const char *id, tb_sq_mut_claim_t *out,
                                tb_store_err_t *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_FIND);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    tb_status result = TB_OK;
    if (rc == SQLITE_ROW) {
        const char *tid = (const char *)sqlite3_column_text(st, 0);
        const char *state = (const char *)sqlite3_column_text(st, 1);
        const char *worker = (const char *)sqlite3_column_text(st, 3);
        if (!tid || strlen(tid) >= sizeof out->topology_id || !state ||
            (worker && strlen(worker) >= sizeof out->worker)) {
            result = tb__sq_corrupt(q, "mutation", id, err);
        } else {
            snprintf(out->topology_id, sizeof out->topology_id, "%s", tid);
            out->applying = strcmp(state, "applying") == 0;
            out->token = sqlite3_column_int64(st, 2);
            snprintf(out->worker, sizeof out->worker, "%s", worker ? worker : "");
            out->started = sqlite3_column_int(st, 4) != 0;
            out->attempts = sqlite3_column_int64(st, 5);
            out->expected_version = sqlite3_column_type(st, 6) == SQLITE_NULL
                                        ? TB_STORE_NO_VERSION
                                        : sqlite3_column_int64(st, 6);
        }
    } else if (rc == SQLITE_DONE) {
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such mutation");
    } else {
        result = tb__sq_error(q, rc, "read mutation", err);
    }
    sqlite3_reset(st);
    return result;
}

tb_status tb__sq_check_claim(const tb_sq_mut_claim_t *mc, const tb_store_claim_t *claim,
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

/* Reads a mutation's claim and checks it is still the caller's (inside a transaction). */
static tb_status require_claim(tb_sq_store_t *q, const tb_store_claim_t *claim,
                               tb_sq_mut_claim_t *mc, tb_store_err_t *err)
{
    tb_status result = tb__sq_mut_claim_read(q, claim->mutation_id, mc, err);
    return result ? result : tb__sq_check_claim(mc, claim, err);
}

/* Runs a TB_SQ_MUT_SET_* statement already bound and decodes its row. */
static tb_status step_returning(tb_sq_store_t *q, sqlite3_stmt *st, const char *what,
                                json_t **row, tb_store_err_t *err)
{
    int rc = sqlite3_step(st);
    tb_status result;
    if (rc == SQLITE_ROW)
        result = tb__sq_row_json(q, st, row, err);
    else
        result = tb__sq_error(q, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, what, err);
    sqlite3_reset(st);
    return result;
}

static tb_status check_versions(const tb_sq_mut_claim_t *mc, int64_t version, int64_t new_version,
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

tb_status tb__sq_mutation_mark_applied(tb_store_t *s, const tb_store_claim_t *claim,
                                       const char *graph_text, int64_t new_version, json_t **row,
                                       tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    tb_sq_mut_claim_t mc;
    result = require_claim(q, claim, &mc, err);
    tb_topology_status status = TB_TOPOLOGY_ANY;
    int64_t version = 0;
    if (!result)
        result = tb__sq_topology_state(q, mc.topology_id, &status, &version, err);
    if (!result)
        result = check_versions(&mc, version, new_version, err);
    if (result)
        goto fail;
    int64_t now = tb__store_now_ms();
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_SET_DOC);
    sqlite3_bind_text(st, 1, mc.topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, graph_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, new_version);
    sqlite3_bind_int64(st, 4, now);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        result = tb__sq_error(q, rc, "update document", err);
        goto fail;
    }
    /* A success restores a degraded topology; its status event comes first. */
    if (status == TB_TOPOLOGY_DEGRADED)
        result = tb__sq_set_status(q, mc.topology_id, status, TB_TOPOLOGY_ACTIVE, version, NULL,
                                   err);
    if (result)
        goto fail;
    st = tb__sq_stmt(q, TB_SQ_MUT_SET_APPLIED);
    sqlite3_bind_text(st, 1, claim->mutation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    result = step_returning(q, st, "mark mutation applied", row, err);
    if (!result)
        result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_APPLIED, mc.topology_id,
                                   tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_APPLIED,
                                                              new_version, NULL),
                                   err);
    if (result)
        goto fail;
    result = tb__sq_commit(q, err);
    if (result)
        goto fail;
    return TB_OK;
fail:
    json_decref(*row);
    *row = NULL;
    tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_mutation_mark_failed(tb_store_t *s, const tb_store_claim_t *claim,
                                      const char *reason, bool degrade, json_t **row,
                                      tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    tb_sq_mut_claim_t mc;
    result = require_claim(q, claim, &mc, err);
    tb_topology_status status = TB_TOPOLOGY_ANY;
    int64_t version = 0;
    if (!result)
        result = tb__sq_topology_state(q, mc.topology_id, &status, &version, err);
    /* CONTRACT §4: an active topology becomes degraded; its status event comes first. */
    if (!result && degrade && status == TB_TOPOLOGY_ACTIVE)
        result = tb__sq_set_status(q, mc.topology_id, status, TB_TOPOLOGY_DEGRADED, version,
                                   reason, err);
    if (result)
        goto fail;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_SET_FAILED);
    sqlite3_bind_text(st, 1, claim->mutation_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tb__store_now_ms());
    result = step_returning(q, st, "mark mutation failed", row, err);
    if (!result)
        result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_FAILED, mc.topology_id,
                                   tb__store_mutation_payload(*row, TB_TOPIC_MUTATION_FAILED,
                                                              version, reason),
                                   err);
    if (result)
        goto fail;
    result = tb__sq_commit(q, err);
    if (result)
        goto fail;
    return TB_OK;
fail:
    json_decref(*row);
    *row = NULL;
    tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_end_mutation_claim(tb_sq_store_t *q, const char *id, const tb_sq_mut_claim_t *mc,
                                    bool expired, tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb_topology_status status;
    int64_t version = 0;
    tb_status result = tb__sq_topology_state(q, mc->topology_id, &status, &version, err);
    if (result)
        return result;
    tb__claim_fate fate = tb__store_claim_fate(mc->started, mc->attempts, expired);
    json_t *row = NULL;
    sqlite3_stmt *st;
    if (fate == TB__FATE_INTERRUPTED) {
        /* CONTRACT §4: an active topology becomes degraded; its status event first. */
        if (status == TB_TOPOLOGY_ACTIVE)
            result = tb__sq_set_status(q, mc->topology_id, status, TB_TOPOLOGY_DEGRADED, version,
                                       TB__STORE_INTERRUPTED, err);
        if (result)
            return result;
        st = tb__sq_stmt(q, TB_SQ_MUT_INTERRUPT);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, tb__store_now_ms());
        result = step_returning(q, st, "fail interrupted mutation", &row, err);
        if (!result)
            result = tb__sq_outbox_add(
                q, TB_TOPIC_MUTATION_FAILED, mc->topology_id,
                tb__store_mutation_payload(row, TB_TOPIC_MUTATION_FAILED, version,
                                           TB__STORE_INTERRUPTED),
                err);
        if (!result)
            out->failed++;
    } else {
        st = tb__sq_stmt(q, TB_SQ_MUT_REQUEUE);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, fate == TB__FATE_REQUEUE_ONCE ? 1 : 0);
        sqlite3_bind_int64(st, 3, tb__store_now_ms());
        result = step_returning(q, st, "requeue mutation", &row, err);
        if (!result)
            result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_ENQUEUED, mc->topology_id,
                                       tb__store_requeued_payload(row, version), err);
        if (!result)
            out->requeued++;
    }
    json_decref(row);
    return result;
}
