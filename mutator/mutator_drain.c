/*
 * The drain pass: completes claimed deploy and teardown requests, then
 * claims, applies and commits pending mutations. Runs on the worker thread
 * only (or on tb_mutator_run_once's caller). The store is the truth: each of
 * its writes records its own change event in the outbox, in the same
 * transaction, and the relay publishes it (CONTRACT §2); the mutator
 * publishes nothing itself but its health.
 *
 * Everything is done under a claim (tb/store.h "Claims", mutator_claims.c):
 * the hook runs only after the claim is marked started, and every verdict
 * (applied, failed, a deploy's or teardown's outcome) is recorded with the
 * claim's fencing token, so a worker whose claim was taken back records
 * nothing. A status change caused by a mutation (active → degraded on
 * failure, degraded → active on success) is written by the store in the
 * same transaction as the verdict.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mutator_int.h"
#include "tb/log.h"

typedef enum step_result {
    STEP_NONE,    /* nothing claimable */
    STEP_APPLIED, /* applied; the topology may have more */
    STEP_FAILED,  /* failed; stop draining this topology for this pass */
    STEP_ERROR,   /* the store failed or the claim was lost; leave the topology for later */
} step_result;

static tb_topology_status doc_status(const json_t *doc)
{
    tb_topology_status st = TB_TOPOLOGY_PENDING;
    const char *name = tb_store_doc_status(doc);
    if (!name || tb_topology_status_parse(name, &st))
        return TB_TOPOLOGY_ANY;
    return st;
}

/* ---- deploy and teardown ------------------------------------------------- */

typedef struct transition_verdict {
    const tb_store_claim_t *claim;
    bool ok;
    const char *reason;
    tb_topology_status now;
} transition_verdict_t;

static tb_status finish_transition(tb_mutator_t *m, void *ctx, tb_store_err_t *err)
{
    transition_verdict_t *v = ctx;
    return tb_store_transition_finish(m->deps.store, v->claim, v->ok, v->reason, &v->now, err);
}

static void complete_request(tb_mutator_t *m, const char *id)
{
    json_t *doc = NULL;
    tb_store_claim_t c;
    tb_store_err_t err;
    tb_status st = tb_store_transition_claim(m->deps.store, id, m->worker_id, &doc, &c, &err);
    if (st) {
        /* Nothing to do, or another worker has it. */
        if (st != TB_ENOTFOUND)
            tb__mutator_store_error(m, "claim deploy or teardown", id, &err);
        return;
    }
    char hook_reason[TB_MUTATOR_REASON_BUF_SIZE] = "";
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    bool ok = true;
    if (m->hook) {
        if (!tb__mutator_start_effect(m, &c))
            goto out;
        ok = tb__mutator_run_hook(m, &c, doc, hook_reason);
    }
    transition_verdict_t v = {&c, ok, ok ? NULL : hook_reason, TB_TOPOLOGY_ANY};
    if (!ok && c.kind == TB_CLAIM_TEARDOWN) {
        /* torn_down is the only way out of tearing_down: the reason tells what went wrong. */
        snprintf(reason, sizeof reason, "teardown hook failed: %.900s", hook_reason);
        v.reason = reason;
    }
    st = tb__mutator_finish(m, finish_transition, &v, &c, &err);
    if (st == TB_ECONFLICT) {
        tb__mutator_refused(m, &c, "the outcome", &err);
    } else if (st) {
        tb__mutator_store_error(m, "finish deploy or teardown", id, &err);
    } else {
        atomic_fetch_add(c.kind == TB_CLAIM_DEPLOY ? &m->counters.deployed
                                                   : &m->counters.torn_down,
                         1);
        tb_log(TB_LOG_INFO, "mutator", "%s done: topology=%s state=%s",
               tb_store_claim_kind_name(c.kind), id, tb_topology_status_name(v.now));
    }
out:
    json_decref(doc);
}

/* ---- mutations ------------------------------------------------------------ */

typedef struct mutation_verdict {
    const tb_store_claim_t *claim;
    const json_t *next; /* applied: the new graph; NULL: failed */
    int64_t version;
    const char *reason;
    bool degrade;
} mutation_verdict_t;

static tb_status finish_mutation(tb_mutator_t *m, void *ctx, tb_store_err_t *err)
{
    mutation_verdict_t *v = ctx;
    if (v->next)
        return tb_store_mutation_mark_applied(m->deps.store, v->claim, v->next, v->version, NULL,
                                              err);
    return tb_store_mutation_mark_failed(m->deps.store, v->claim, v->reason, v->degrade, NULL,
                                         err);
}

/* Records a failure; degrade says whether an active topology becomes degraded. */
static step_result commit_failure(tb_mutator_t *m, const tb_store_claim_t *c, const char *reason,
                                  bool degrade, bool started)
{
    mutation_verdict_t v = {.claim = c, .reason = reason, .degrade = degrade};
    tb_store_err_t err;
    tb_status st = tb__mutator_finish(m, finish_mutation, &v, c, &err);
    if (st == TB_ECONFLICT) {
        tb__mutator_refused(m, c, "the failure", &err);
        return STEP_ERROR;
    }
    if (st) {
        tb__mutator_store_error(m, "mark mutation failed", c->mutation_id, &err);
        if (!started)
            tb__mutator_release(m, c);
        return STEP_ERROR;
    }
    atomic_fetch_add(&m->counters.failed, 1);
    tb_log(TB_LOG_NOTICE, "mutator", "mutation failed: topology=%s mutation=%s reason=%s",
           c->topology_id, c->mutation_id, reason);
    return STEP_FAILED;
}

static step_result commit(tb_mutator_t *m, const tb_store_claim_t *c, const json_t *next,
                          int64_t version, bool started)
{
    mutation_verdict_t v = {.claim = c, .next = next, .version = version};
    tb_store_err_t err;
    tb_status st = tb__mutator_finish(m, finish_mutation, &v, c, &err);
    if (st == TB_EINVAL || (st == TB_ECONFLICT && err.reason != TB_STORE_R_STALE_CLAIM)) {
        char reason[TB_MUTATOR_REASON_BUF_SIZE];
        snprintf(reason, sizeof reason, "the result cannot be stored: %s", err.message);
        return commit_failure(m, c, reason, true, started);
    }
    if (st == TB_ECONFLICT) {
        tb__mutator_refused(m, c, "the applied result", &err);
        return STEP_ERROR;
    }
    if (st) {
        tb__mutator_store_error(m, "mark mutation applied", c->mutation_id, &err);
        if (!started)
            tb__mutator_release(m, c);
        return STEP_ERROR;
    }
    atomic_fetch_add(&m->counters.applied, 1);
    return STEP_APPLIED;
}

/* Why a claimed mutation cannot apply to doc before anything is tried, or NULL. */
static bool refuse_early(const tb_store_claim_t *c, const json_t *doc, tb_topology_status status,
                         char *reason, bool *degrade)
{
    *degrade = false;
    if (status == TB_TOPOLOGY_FAILED || status == TB_TOPOLOGY_TEARING_DOWN ||
        status == TB_TOPOLOGY_TORN_DOWN || status == TB_TOPOLOGY_ANY) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE, "the topology is %s: mutations no longer apply",
                 tb_topology_status_name(status));
        return true;
    }
    /* expected_version is compare-and-set: the mutation applies only to the version its
     * client saw. A conflict is no fault of the deployment: the status stays. */
    int64_t version = tb_store_doc_version(doc);
    if (c->expected_version != TB_STORE_NO_VERSION && c->expected_version != version) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE,
                 "version_conflict: the topology is at version %lld, not the expected %lld",
                 (long long)version, (long long)c->expected_version);
        return true;
    }
    return false;
}

static step_result apply_claimed(tb_mutator_t *m, const tb_store_claim_t *c, const json_t *row,
                                 const json_t *doc)
{
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    bool degrade;
    if (refuse_early(c, doc, doc_status(doc), reason, &degrade))
        return commit_failure(m, c, reason, degrade, false);
    json_t *next = NULL;
    if (tb_mutator_apply_op(doc, tb_store_row_op(row), tb_store_row_payload(row), &next, reason))
        return commit_failure(m, c, reason, true, false);
    step_result result = STEP_ERROR;
    bool started = m->hook != NULL;
    if (started && !tb__mutator_start_effect(m, c))
        goto out;
    if (!tb__mutator_run_hook(m, c, row, reason))
        result = commit_failure(m, c, reason, true, started);
    else
        result = commit(m, c, next, tb_store_doc_version(doc) + 1, started);
out:
    json_decref(next);
    return result;
}

static step_result step(tb_mutator_t *m, const char *tid)
{
    json_t *row = NULL, *doc = NULL;
    tb_store_claim_t c;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_claim(m->deps.store, tid, m->worker_id, &row, &c, &err);
    if (st) {
        if (st == TB_ENOTFOUND)
            return STEP_NONE;
        tb__mutator_store_error(m, "claim", tid, &err);
        return STEP_ERROR;
    }
    step_result result = STEP_ERROR;
    st = tb_store_topology_get(m->deps.store, tid, &doc, &err);
    if (st) {
        /* Nothing has started: give it back at once, its attempts untouched. */
        tb__mutator_store_error(m, "read topology", tid, &err);
        tb__mutator_release(m, &c);
    } else {
        result = apply_claimed(m, &c, row, doc);
    }
    json_decref(doc);
    json_decref(row);
    return result;
}

/* Adds the ids of every topology deploying or tearing down to set. */
static void scan_requests(tb_mutator_t *m, json_t *set)
{
    json_t *list = NULL;
    tb_store_err_t err;
    if (tb_store_topology_list(m->deps.store, &list, &err)) {
        tb__mutator_store_error(m, "list topologies", "-", &err);
        return;
    }
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) {
        const char *status = tb_store_doc_status(t);
        if (status && (strcmp(status, "deploying") == 0 || strcmp(status, "tearing_down") == 0))
            json_object_set_new(set, tb_store_doc_id(t), json_true());
    }
    json_decref(list);
}

/* Drains every topology with pending work; adds those it worked on to touched. */
static void drain(tb_mutator_t *m, json_t *touched)
{
    json_t *ids = NULL;
    tb_store_err_t err;
    if (tb_store_topologies_with_pending(m->deps.store, &ids, &err)) {
        tb__mutator_store_error(m, "list pending work", "-", &err);
        return;
    }
    /* Round-robin, one mutation per topology per round, so one busy topology
     * does not hold the others back. A topology leaves the round when it has
     * nothing claimable (possibly because another worker holds it, or it
     * deploys) or failed. */
    while (json_array_size(ids) > 0 && !atomic_load(&m->stop)) {
        for (size_t i = 0; i < json_array_size(ids) && !atomic_load(&m->stop);) {
            const char *tid = json_string_value(json_array_get(ids, i));
            step_result r = step(m, tid);
            if (r == STEP_APPLIED || r == STEP_FAILED)
                json_object_set_new(touched, tid, json_true());
            if (r == STEP_APPLIED)
                i++;
            else
                json_array_remove(ids, i);
        }
    }
    json_decref(ids);
}

/* Keeps in set only the topologies now deploying or tearing down. */
static void keep_requests(tb_mutator_t *m, json_t *set)
{
    const char *id;
    json_t *v, *tmp;
    json_object_foreach_safe(set, tmp, id, v) {
        json_t *doc = NULL;
        tb_status st = tb_store_topology_get(m->deps.store, id, &doc, NULL);
        tb_topology_status status = st ? TB_TOPOLOGY_ANY : doc_status(doc);
        json_decref(doc);
        if (status != TB_TOPOLOGY_DEPLOYING && status != TB_TOPOLOGY_TEARING_DOWN)
            json_object_del(set, id);
    }
}

enum { PASS_ROUNDS = 3 };

void tb__mutator_pass(tb_mutator_t *m, bool full, const json_t *hints)
{
    atomic_fetch_add(&m->counters.passes, 1);
    tb__mutator_release_leftovers(m);
    json_t *requests = json_object();
    if (hints)
        json_object_update(requests, (json_t *)(uintptr_t)hints);
    if (full)
        scan_requests(m, requests);
    /* A deploy or teardown waits for the mutation in flight, and queued
     * mutations wait for a deploy: after draining, the topologies this pass
     * worked on get another look, so neither waits for the next poll. */
    for (int round = 0; round < PASS_ROUNDS && !atomic_load(&m->stop); round++) {
        const char *id;
        json_t *v;
        json_object_foreach(requests, id, v) {
            if (atomic_load(&m->stop))
                break;
            complete_request(m, id);
        }
        json_object_clear(requests);
        if (!atomic_load(&m->stop))
            drain(m, requests);
        keep_requests(m, requests);
        if (json_object_size(requests) == 0)
            break;
    }
    json_decref(requests);
    if (!atomic_load(&m->stop))
        tb__mutator_prune(m);
}
