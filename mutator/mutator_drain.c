/*
 * The drain pass: completes deploy and teardown requests, then claims,
 * applies and commits pending mutations. Runs on the worker thread only (or
 * on tb_mutator_run_once's caller). The store is the truth: each of its
 * writes records its own change event in the outbox, in the same
 * transaction, and the relay publishes it (CONTRACT §2); the mutator
 * publishes nothing itself but its health.
 *
 * A status change caused by a mutation (active → degraded on failure,
 * degraded → active on success) is written while the mutation is still
 * `applying`, so no other worker can claim the topology's next mutation in
 * between and the final status follows the last mutation's outcome.
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
    STEP_ERROR,   /* the store failed; leave the topology for later */
} step_result;

static void count_store_error(tb_mutator_t *m, const char *what, const char *id,
                              const tb_store_err_t *err)
{
    atomic_fetch_add(&m->counters.store_errors, 1);
    tb_log(TB_LOG_WARN, "mutator", "%s failed: id=%s reason=%s %s", what, id,
           tb_store_reason_code(err->reason), err->message);
}

static tb_topology_status doc_status(const json_t *doc)
{
    tb_topology_status st = TB_TOPOLOGY_PENDING;
    const char *name = tb_store_doc_status(doc);
    if (!name || tb_topology_status_parse(name, &st))
        return TB_TOPOLOGY_ANY;
    return st;
}

/* Moves id from → to (the store records the status event); false if it did not happen. */
static bool transition(tb_mutator_t *m, const char *id, tb_topology_status from,
                       tb_topology_status to, const char *reason)
{
    tb_store_err_t err;
    tb_status st = tb_store_topology_transition(m->deps.store, id, from, to, reason, NULL, &err);
    if (st == TB_ECONFLICT || st == TB_ENOTFOUND)
        return false; /* another worker or a request got there first */
    if (st) {
        count_store_error(m, "topology transition", id, &err);
        return false;
    }
    return true;
}

/* Runs the hook, if any, on doc's JSON; true on success, else reason is filled. */
static bool run_hook(tb_mutator_t *m, const json_t *input, char *reason)
{
    if (!m->hook)
        return true;
    char *text = json_dumps(input, JSON_COMPACT);
    tb_status st = tb_mutator_hook_run(m->hook, text, strlen(text), m->opts.hook_timeout_ms, reason);
    free(text);
    return st == TB_OK;
}

static void complete_request(tb_mutator_t *m, const char *id)
{
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_get(m->deps.store, id, &doc, &err);
    if (st) {
        if (st != TB_ENOTFOUND)
            count_store_error(m, "read topology", id, &err);
        return;
    }
    tb_topology_status status = doc_status(doc);
    if (status == TB_TOPOLOGY_DEPLOYING) {
        char reason[TB_MUTATOR_REASON_BUF_SIZE];
        bool ok = run_hook(m, doc, reason);
        if (transition(m, id, TB_TOPOLOGY_DEPLOYING, ok ? TB_TOPOLOGY_ACTIVE : TB_TOPOLOGY_FAILED,
                       ok ? NULL : reason)) {
            atomic_fetch_add(&m->counters.deployed, 1);
            tb_log(TB_LOG_INFO, "mutator", "deploy done: topology=%s state=%s", id,
                   ok ? "active" : "failed");
        }
    } else if (status == TB_TOPOLOGY_TEARING_DOWN) {
        if (transition(m, id, TB_TOPOLOGY_TEARING_DOWN, TB_TOPOLOGY_TORN_DOWN, NULL))
            atomic_fetch_add(&m->counters.torn_down, 1);
    }
    json_decref(doc);
}

/* Works out the new graph, or why there is none; hook included. */
static json_t *compute(tb_mutator_t *m, const json_t *row, const json_t *doc,
                       tb_topology_status status, char *reason)
{
    if (status == TB_TOPOLOGY_FAILED || status == TB_TOPOLOGY_TEARING_DOWN ||
        status == TB_TOPOLOGY_TORN_DOWN || status == TB_TOPOLOGY_ANY) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE, "the topology is %s: mutations no longer apply",
                 tb_topology_status_name(status));
        return NULL;
    }
    json_t *next = NULL;
    if (tb_mutator_apply_op(doc, tb_store_row_op(row), tb_store_row_payload(row), &next, reason))
        return NULL;
    if (!run_hook(m, row, reason)) {
        json_decref(next);
        return NULL;
    }
    return next;
}

static step_result commit_failure(tb_mutator_t *m, const char *tid, const json_t *row,
                                  tb_topology_status status, const char *reason)
{
    const char *mid = tb_store_row_id(row);
    /* Degrade first, while the row still holds the topology (see the file comment). */
    if (status == TB_TOPOLOGY_ACTIVE)
        transition(m, tid, TB_TOPOLOGY_ACTIVE, TB_TOPOLOGY_DEGRADED, reason);
    tb_store_err_t err;
    tb_status st = tb_store_mutation_mark_failed(m->deps.store, mid, reason, NULL, &err);
    if (st) {
        count_store_error(m, "mark mutation failed", mid, &err);
        return STEP_ERROR; /* still applying: stale-claim recovery will retry it */
    }
    atomic_fetch_add(&m->counters.failed, 1);
    tb_log(TB_LOG_NOTICE, "mutator", "mutation failed: topology=%s mutation=%s reason=%s", tid,
           mid, reason);
    return STEP_FAILED;
}

static step_result commit(tb_mutator_t *m, const char *tid, const json_t *row, const json_t *doc,
                          tb_topology_status status, const json_t *next)
{
    const char *mid = tb_store_row_id(row);
    int64_t version = tb_store_doc_version(doc) + 1;
    bool restored = status == TB_TOPOLOGY_DEGRADED &&
                    transition(m, tid, TB_TOPOLOGY_DEGRADED, TB_TOPOLOGY_ACTIVE, NULL);
    tb_store_err_t err;
    tb_status st = tb_store_mutation_mark_applied(m->deps.store, mid, next, version, NULL, &err);
    if (st == TB_EINVAL || st == TB_ECONFLICT) {
        char reason[TB_MUTATOR_REASON_BUF_SIZE];
        snprintf(reason, sizeof reason, "the result cannot be stored: %s", err.message);
        if (restored)
            transition(m, tid, TB_TOPOLOGY_ACTIVE, TB_TOPOLOGY_DEGRADED, reason);
        return commit_failure(m, tid, row, restored ? TB_TOPOLOGY_DEGRADED : status, reason);
    }
    if (st) {
        count_store_error(m, "mark mutation applied", mid, &err);
        return STEP_ERROR;
    }
    atomic_fetch_add(&m->counters.applied, 1);
    return STEP_APPLIED;
}

static step_result step(tb_mutator_t *m, const char *tid)
{
    json_t *row = NULL, *doc = NULL, *next = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_claim(m->deps.store, tid, &row, &err);
    if (st) {
        if (st == TB_ENOTFOUND)
            return STEP_NONE;
        count_store_error(m, "claim", tid, &err);
        return STEP_ERROR;
    }
    step_result result = STEP_ERROR;
    st = tb_store_topology_get(m->deps.store, tid, &doc, &err);
    if (st) {
        /* Leave the row applying: recovery requeues it once the store answers again. */
        count_store_error(m, "read topology", tid, &err);
        goto out;
    }
    tb_topology_status status = doc_status(doc);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    next = compute(m, row, doc, status, reason);
    result = next ? commit(m, tid, row, doc, status, next)
                  : commit_failure(m, tid, row, status, reason);
out:
    json_decref(next);
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
        count_store_error(m, "list topologies", "-", &err);
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

static void drain(tb_mutator_t *m)
{
    json_t *ids = NULL;
    tb_store_err_t err;
    if (tb_store_topologies_with_pending(m->deps.store, &ids, &err)) {
        count_store_error(m, "list pending work", "-", &err);
        return;
    }
    /* Round-robin, one mutation per topology per round, so one busy topology
     * does not hold the others back. A topology leaves the round when it has
     * nothing claimable (possibly because another worker holds it) or failed. */
    while (json_array_size(ids) > 0 && !atomic_load(&m->stop)) {
        for (size_t i = 0; i < json_array_size(ids) && !atomic_load(&m->stop);) {
            step_result r = step(m, json_string_value(json_array_get(ids, i)));
            if (r == STEP_APPLIED)
                i++;
            else
                json_array_remove(ids, i);
        }
    }
    json_decref(ids);
}

void tb__mutator_pass(tb_mutator_t *m, bool full, const json_t *hints)
{
    atomic_fetch_add(&m->counters.passes, 1);
    json_t *requests = json_object();
    if (hints)
        json_object_update(requests, (json_t *)(uintptr_t)hints);
    if (full)
        scan_requests(m, requests);
    const char *id;
    json_t *v;
    json_object_foreach(requests, id, v) {
        if (atomic_load(&m->stop))
            break;
        complete_request(m, id);
    }
    json_decref(requests);
    if (!atomic_load(&m->stop))
        drain(m);
}
