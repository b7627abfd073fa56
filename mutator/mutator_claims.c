/*
 * How the worker handles its claims (tb/store.h "Claims"): starting the
 * side effect, running the apply hook with the claim's variables, recording
 * a verdict through transient store errors, giving a claim back when no
 * verdict can be had, the claims a predecessor left under the same worker
 * id, and retention pruning. Worker thread only (or tb_mutator_run_once's
 * caller); nothing here locks.
 *
 * Retry policy. A claim whose side effect has not started is given back at
 * the first store error (tb_store_claim_release): the work is queued again
 * with its attempts unchanged, so a store outage never burns a mutation's
 * one retry. If even that fails, the next pass gives back every claim left
 * under the worker's id first. Once the hook has run, its verdict is worth
 * keeping: recording it is retried with backoff for a few seconds; if the
 * store stays away, recovery later ends the claim as "interrupted" (the
 * hook is never run twice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mutator_int.h"
#include "tb/clock.h"
#include "tb/log.h"

enum {
    FINISH_ATTEMPTS = 6,       /* tries to record a verdict: about 6 s in all */
    FINISH_BACKOFF_MS = 100,   /* first pause, doubling */
    FINISH_BACKOFF_MAX_MS = 2000,
    PRUNE_BATCHES_MAX = 20,    /* batches per pruning run: 10,000 rows */
};

void tb__mutator_store_error(tb_mutator_t *m, const char *what, const char *id,
                             const tb_store_err_t *err)
{
    atomic_fetch_add(&m->counters.store_errors, 1);
    tb_log(TB_LOG_WARN, "mutator", "%s failed: id=%s reason=%s %s", what, id,
           tb_store_reason_code(err->reason), err->message);
}

static bool transient(tb_status st)
{
    return st == TB_ECLOSED || st == TB_ETIMEDOUT || st == TB_EBACKEND;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static const char *claim_id(const tb_store_claim_t *c)
{
    return c->kind == TB_CLAIM_MUTATION ? c->mutation_id : c->topology_id;
}

void tb__mutator_refused(tb_mutator_t *m, const tb_store_claim_t *c, const char *what,
                         const tb_store_err_t *err)
{
    atomic_fetch_add(&m->counters.stale_refused, 1);
    tb_log(TB_LOG_WARN, "mutator",
           "stale claim refused: %s of %s %s (token %lld) by worker %s was not recorded: %s", what,
           tb_store_claim_kind_name(c->kind), claim_id(c), (long long)c->token, c->worker,
           err->message);
}

void tb__mutator_release(tb_mutator_t *m, const tb_store_claim_t *c)
{
    tb_store_err_t err;
    tb_store_recovery_t out;
    tb_status st = tb_store_claim_release(m->deps.store, c, &out, &err);
    if (st == TB_OK) {
        atomic_fetch_add(&m->counters.released, 1);
        tb_log(TB_LOG_NOTICE, "mutator", "gave back the %s claim of %s: %s",
               tb_store_claim_kind_name(c->kind), claim_id(c),
               out.requeued ? "queued again" : "ended as interrupted");
    } else if (st == TB_ECONFLICT) {
        tb__mutator_refused(m, c, "the release", &err);
    } else {
        tb__mutator_store_error(m, "give back claim", claim_id(c), &err);
        /* Still ours in the store: the next pass gives it back. */
        m->release_pending = true;
    }
}

bool tb__mutator_start_effect(tb_mutator_t *m, const tb_store_claim_t *c)
{
    tb_store_err_t err;
    tb_status st = tb_store_claim_start(m->deps.store, c, &err);
    if (st == TB_OK)
        return true;
    if (st == TB_ECONFLICT)
        tb__mutator_refused(m, c, "the start of its hook", &err);
    else {
        tb__mutator_store_error(m, "start claim", claim_id(c), &err);
        tb__mutator_release(m, c);
    }
    return false;
}

bool tb__mutator_run_hook(tb_mutator_t *m, const tb_store_claim_t *c, const json_t *input,
                          char *reason)
{
    if (!m->hook)
        return true;
    char kind[48], topology[32 + TB_TOPOLOGY_ID_BUF_SIZE], mutation[48 + TB_STORE_ID_BUF_SIZE],
        token[64], worker[32 + TB_STORE_WORKER_BUF_SIZE];
    snprintf(kind, sizeof kind, "TOPOBUS_HOOK_KIND=%s", tb_store_claim_kind_name(c->kind));
    snprintf(topology, sizeof topology, "TOPOBUS_HOOK_TOPOLOGY_ID=%s", c->topology_id);
    snprintf(token, sizeof token, "TOPOBUS_HOOK_CLAIM_TOKEN=%lld", (long long)c->token);
    snprintf(worker, sizeof worker, "TOPOBUS_HOOK_WORKER_ID=%s", c->worker);
    snprintf(mutation, sizeof mutation, "TOPOBUS_HOOK_MUTATION_ID=%s", c->mutation_id);
    const char *env[] = {kind, topology, token, worker,
                         c->kind == TB_CLAIM_MUTATION ? mutation : NULL, NULL};
    char *text = json_dumps(input, JSON_COMPACT);
    tb_status st = tb_mutator_hook_run(m->hook, env, text, strlen(text), m->opts.hook_timeout_ms,
                                       reason);
    free(text);
    return st == TB_OK;
}

tb_status tb__mutator_finish(tb_mutator_t *m, tb_mutator_finish_fn fn, void *ctx,
                             const tb_store_claim_t *c, tb_store_err_t *err)
{
    long delay = FINISH_BACKOFF_MS;
    for (int attempt = 1;; attempt++) {
        tb_status st = fn(m, ctx, err);
        if (!transient(st) || attempt >= FINISH_ATTEMPTS)
            return st;
        tb__mutator_store_error(m, "record verdict", claim_id(c), err);
        pause_ms(delay);
        delay = delay * 2 > FINISH_BACKOFF_MAX_MS ? FINISH_BACKOFF_MAX_MS : delay * 2;
    }
}

void tb__mutator_release_leftovers(tb_mutator_t *m)
{
    if (!m->release_pending)
        return;
    tb_store_err_t err;
    tb_store_recovery_t out;
    if (tb_store_release_worker_claims(m->deps.store, m->worker_id, &out, &err)) {
        tb__mutator_store_error(m, "give back leftover claims", m->worker_id, &err);
        return;
    }
    m->release_pending = false;
    if (out.requeued + out.failed == 0)
        return;
    atomic_fetch_add(&m->counters.released, (uint64_t)(out.requeued + out.failed));
    tb_log(TB_LOG_NOTICE, "mutator",
           "gave back the claims left under worker id %s: requeued=%d interrupted=%d",
           m->worker_id, out.requeued, out.failed);
}

void tb__mutator_prune(tb_mutator_t *m)
{
    int64_t now = tb_clock_mono_ms();
    if (m->opts.retention_ms == TB_MUTATOR_KEEP_FOREVER || now < m->next_prune)
        return;
    m->next_prune = now + m->opts.prune_interval_ms;
    /* Small batches, each its own short transaction, so writers never wait long. */
    int total = 0, n = TB_MUTATOR_PRUNE_BATCH;
    for (int i = 0; i < PRUNE_BATCHES_MAX && n == TB_MUTATOR_PRUNE_BATCH && !atomic_load(&m->stop);
         i++) {
        tb_store_err_t err;
        if (tb_store_mutation_prune(m->deps.store, m->opts.retention_ms, TB_MUTATOR_PRUNE_BATCH,
                                    &n, &err)) {
            tb__mutator_store_error(m, "prune settled mutations", "-", &err);
            break;
        }
        total += n;
    }
    if (total == 0)
        return;
    atomic_fetch_add(&m->counters.pruned, (uint64_t)total);
    tb_log(TB_LOG_INFO, "mutator", "pruned %d settled mutations older than %lld s", total,
           m->opts.retention_ms / 1000);
}
