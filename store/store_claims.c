/*
 * The public claim calls (tb/store.h "Claims"): claiming mutations and
 * deploys/teardowns, starting, finishing and releasing claims, recovery and
 * retention. Each validates its arguments once (ids, the worker id, the
 * claim as handed out, reasons, documents) so that backends see only valid
 * input, then serialises on the store's mutex and dispatches through the
 * backend's vtable. Calls that may commit outbox rows tell the listener
 * after unlocking. Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tb/topic.h"

static tb_status invalid(tb_store_err_t *err, const char *what)
{
    return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "%s", what);
}

static tb_status bad_worker(tb_store_err_t *err)
{
    return invalid(err, "the worker id must be 1..64 bytes of [A-Za-z0-9_.:-]");
}

/* A claim must be one the store could have handed out. */
static tb_status check_claim(const tb_store_claim_t *c, tb_store_err_t *err)
{
    if (!c || (unsigned)c->kind > TB_CLAIM_TEARDOWN || c->token <= 0 ||
        !tb_store_worker_id_valid(c->worker) || !tb_topology_id_valid(c->topology_id))
        return invalid(err, "not a claim the store handed out");
    bool is_mutation = c->kind == TB_CLAIM_MUTATION;
    if (is_mutation != (c->mutation_id[0] != '\0') ||
        (is_mutation && !tb_topology_id_valid(c->mutation_id)))
        return invalid(err, "not a claim the store handed out");
    return TB_OK;
}

static void claim_reset(tb_store_claim_t *c, tb_store_claim_kind kind, const char *topology_id,
                        const char *worker)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->expected_version = TB_STORE_NO_VERSION;
    snprintf(c->topology_id, sizeof c->topology_id, "%s", topology_id);
    snprintf(c->worker, sizeof c->worker, "%s", worker);
}

tb_status tb_store_mutation_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **row, tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *row = NULL;
    memset(claim, 0, sizeof *claim);
    if (!tb_store_worker_id_valid(worker))
        return bad_worker(err);
    if (!tb_topology_id_valid(topology_id))
        return tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    claim_reset(claim, TB_CLAIM_MUTATION, topology_id, worker);
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->mutation_claim(s, topology_id, worker, row, claim, err);
    tb__store_unlock_and_notify(s);
    if (st)
        memset(claim, 0, sizeof *claim);
    return st;
}

tb_status tb_store_transition_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                    json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *doc = NULL;
    memset(claim, 0, sizeof *claim);
    if (!tb_store_worker_id_valid(worker))
        return bad_worker(err);
    if (!tb_topology_id_valid(topology_id))
        return tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    claim_reset(claim, TB_CLAIM_DEPLOY, topology_id, worker);
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->transition_claim(s, topology_id, worker, doc, claim, err);
    pthread_mutex_unlock(&s->lock);
    if (st)
        memset(claim, 0, sizeof *claim);
    return st;
}

tb_status tb_store_claim_start(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_status st = check_claim(claim, err);
    if (st)
        return st;
    pthread_mutex_lock(&s->lock);
    st = s->ops->claim_start(s, claim, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_claim_release(tb_store_t *s, const tb_store_claim_t *claim,
                                 tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_store_recovery_t counts = {0};
    tb_status st = check_claim(claim, err);
    if (!st) {
        pthread_mutex_lock(&s->lock);
        st = s->ops->claim_release(s, claim, &counts, err);
        tb__store_unlock_and_notify(s);
    }
    if (out)
        *out = st ? (tb_store_recovery_t){0} : counts;
    return st;
}

tb_status tb_store_release_worker_claims(tb_store_t *s, const char *worker,
                                         tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_store_recovery_t counts = {0};
    tb_status st = tb_store_worker_id_valid(worker) ? TB_OK : bad_worker(err);
    if (!st) {
        pthread_mutex_lock(&s->lock);
        st = s->ops->release_worker_claims(s, worker, &counts, err);
        tb__store_unlock_and_notify(s);
    }
    if (out)
        *out = st ? (tb_store_recovery_t){0} : counts;
    return st;
}

tb_status tb_store_mutation_mark_applied(tb_store_t *s, const tb_store_claim_t *claim,
                                         const json_t *doc, int64_t new_version, json_t **row,
                                         tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if (row)
        *row = NULL;
    tb_status st = check_claim(claim, err);
    if (st)
        return st;
    if (claim->kind != TB_CLAIM_MUTATION)
        return invalid(err, "not a mutation's claim");
    const json_t *nodes = json_object_get(doc, "nodes");
    const json_t *links = json_object_get(doc, "links");
    if (!json_is_object(doc) || !nodes || !links)
        return invalid(err, "the new document must be an object with nodes and links");
    if (new_version < 1)
        return invalid(err, "the new version must be at least 1");
    char *graph = NULL;
    st = tb__store_graph_text(nodes, links, &graph, err);
    if (st)
        return st;
    json_t *scratch_row = NULL;
    pthread_mutex_lock(&s->lock);
    st = s->ops->mutation_mark_applied(s, claim, graph, new_version, &scratch_row, err);
    tb__store_unlock_and_notify(s);
    free(graph);
    if (row)
        *row = scratch_row;
    else
        json_decref(scratch_row);
    return st;
}

tb_status tb_store_mutation_mark_failed(tb_store_t *s, const tb_store_claim_t *claim,
                                        const char *reason, bool degrade, json_t **row,
                                        tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if (row)
        *row = NULL;
    tb_status st = check_claim(claim, err);
    if (st)
        return st;
    if (claim->kind != TB_CLAIM_MUTATION)
        return invalid(err, "not a mutation's claim");
    st = tb__store_check_text(reason, TB_STORE_REASON_MAX, false, "reason", err);
    if (st)
        return st;
    json_t *scratch_row = NULL;
    pthread_mutex_lock(&s->lock);
    st = s->ops->mutation_mark_failed(s, claim, reason, degrade, &scratch_row, err);
    tb__store_unlock_and_notify(s);
    if (row)
        *row = scratch_row;
    else
        json_decref(scratch_row);
    return st;
}

tb_status tb_store_transition_finish(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                     const char *reason, tb_topology_status *now,
                                     tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_topology_status after = TB_TOPOLOGY_ANY;
    tb_status st = check_claim(claim, err);
    if (!st && claim->kind == TB_CLAIM_MUTATION)
        st = invalid(err, "not a deploy's or a teardown's claim");
    if (!st && reason && tb__store_check_text(reason, TB_STORE_REASON_MAX, false, "reason", err))
        st = TB_EINVAL;
    if (!st) {
        pthread_mutex_lock(&s->lock);
        st = s->ops->transition_finish(s, claim, ok, reason, &after, err);
        tb__store_unlock_and_notify(s);
    }
    if (now)
        *now = after;
    return st;
}

tb_status tb_store_recover_stale(tb_store_t *s, int64_t ahead_ms, tb_store_recovery_t *out,
                                 tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_store_recovery_t counts = {0};
    tb_status st = ahead_ms >= 0 ? TB_OK : invalid(err, "ahead_ms must not be negative");
    if (!st) {
        pthread_mutex_lock(&s->lock);
        st = s->ops->recover_stale(s, ahead_ms, s->lease_ms, &counts, err);
        tb__store_unlock_and_notify(s);
    }
    if (out)
        *out = st ? (tb_store_recovery_t){0} : counts;
    return st;
}

tb_status tb_store_mutation_prune(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                  tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    int n = 0;
    tb_status st = TB_OK;
    if (retention_ms < 0 || max < 1 || max > TB_STORE_PRUNE_MAX)
        st = invalid(err, "prune takes a retention >= 0 and 1..10000 rows");
    if (!st) {
        pthread_mutex_lock(&s->lock);
        st = s->ops->mutation_prune(s, retention_ms, max, &n, err);
        pthread_mutex_unlock(&s->lock);
    }
    if (deleted)
        *deleted = st ? 0 : n;
    return st;
}
