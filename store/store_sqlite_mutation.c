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

tb_status tb__sq_mutation_claim(tb_store_t *s, const char *topology_id, json_t **row,
                                tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    /* The claim itself is one atomic statement; the transaction adds its event. */
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_CLAIM);
    sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, tb__store_now_ms());
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        result = tb__sq_row_json(q, st, row, err);
    else if (rc == SQLITE_DONE)
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND,
                                "no claimable mutation for this topology");
    else
        result = tb__sq_error(q, rc, "claim mutation", err);
    /* Reset completes the statement: the update happened in the first step. */
    sqlite3_reset(st);
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

/* Looks up a mutation's topology and checks that it is applying (inside a
 * transaction). topology_id receives the id (TB_TOKEN_MAX_LEN + 1 bytes). */
static tb_status require_applying(tb_sq_store_t *q, const char *mutation_id, char *topology_id,
                                  size_t cap, tb_store_err_t *err)
{
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_FIND);
    sqlite3_bind_text(st, 1, mutation_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    tb_status result = TB_OK;
    if (rc == SQLITE_ROW) {
        const char *tid = (const char *)sqlite3_column_text(st, 0);
        const char *state = (const char *)sqlite3_column_text(st, 1);
        if (!tid || strlen(tid) >= cap)
            result = tb__sq_corrupt(q, "mutation", mutation_id, err);
        else if (!state || strcmp(state, "applying") != 0)
            result = tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_WRONG_STATE,
                                    "the mutation is %s, not applying", state ? state : "?");
        else
            memcpy(topology_id, tid, strlen(tid) + 1);
    } else if (rc == SQLITE_DONE) {
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such mutation");
    } else {
        result = tb__sq_error(q, rc, "read mutation", err);
    }
    sqlite3_reset(st);
    return result;
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

tb_status tb__sq_mutation_mark_applied(tb_store_t *s, const char *mutation_id,
                                       const char *graph_text, int64_t new_version, json_t **row,
                                       tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    result = require_applying(q, mutation_id, topology_id, sizeof topology_id, err);
    tb_topology_status status;
    int64_t version = 0;
    if (!result)
        result = tb__sq_topology_state(q, topology_id, &status, &version, err);
    if (result)
        goto fail;
    if (new_version != version + 1) {
        err->current = version;
        err->expected = new_version - 1;
        result = tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_VERSION_CONFLICT,
                                "the topology is at version %lld; version %lld cannot follow",
                                (long long)version, (long long)new_version);
        goto fail;
    }
    int64_t now = tb__store_now_ms();
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_SET_DOC);
    sqlite3_bind_text(st, 1, topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, graph_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, new_version);
    sqlite3_bind_int64(st, 4, now);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        result = tb__sq_error(q, rc, "update document", err);
        goto fail;
    }
    st = tb__sq_stmt(q, TB_SQ_MUT_SET_APPLIED);
    sqlite3_bind_text(st, 1, mutation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    result = step_returning(q, st, "mark mutation applied", row, err);
    if (!result)
        result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_APPLIED, topology_id,
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

tb_status tb__sq_mutation_mark_failed(tb_store_t *s, const char *mutation_id, const char *reason,
                                      json_t **row, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    result = require_applying(q, mutation_id, topology_id, sizeof topology_id, err);
    tb_topology_status status;
    int64_t version = 0;
    if (!result)
        result = tb__sq_topology_state(q, topology_id, &status, &version, err);
    if (result)
        goto fail;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_MUT_SET_FAILED);
    sqlite3_bind_text(st, 1, mutation_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tb__store_now_ms());
    result = step_returning(q, st, "mark mutation failed", row, err);
    if (!result)
        result = tb__sq_outbox_add(q, TB_TOPIC_MUTATION_FAILED, topology_id,
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

static tb_status run_recovery(tb_sq_store_t *q, tb_sq_stmt idx, int64_t now_ms,
                              int64_t cutoff_ms, int *count, tb_store_err_t *err)
{
    sqlite3_stmt *st = tb__sq_stmt(q, idx);
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, cutoff_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "recover stale claims", err);
    *count = sqlite3_changes(q->db);
    return TB_OK;
}

tb_status tb__sq_recover_stale(tb_store_t *s, int64_t now_ms, int64_t cutoff_ms, int *requeued,
                               int *failed, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    /* Fail the second-time stale rows first: the requeue below raises
     * attempts to 1 and must not make a row eligible for failing. */
    result = run_recovery(q, TB_SQ_RECOVER_FAIL, now_ms, cutoff_ms, failed, err);
    if (!result)
        result = run_recovery(q, TB_SQ_RECOVER_REQUEUE, now_ms, cutoff_ms, requeued, err);
    if (!result)
        result = tb__sq_commit(q, err);
    if (result) {
        *requeued = *failed = 0;
        tb__sq_rollback(q);
    }
    return result;
}
