/*
 * Private to the mutator module: the worker's state, shared by the loop
 * (mutator_worker.c) and the drain pass (mutator_drain.c), and helpers.
 *
 * Lock: `lock` guards wake, rescan, hints and the condition variable; it is never
 * held across a store call, a bus call or a hook. Everything else but the
 * atomics belongs to the worker thread (or to tb_mutator_run_once's caller
 * while the thread is not running).
 */
#ifndef TB_MUTATOR_INT_H
#define TB_MUTATOR_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "tb/mutator.h"
#include "tb/topic.h"

typedef struct mutator_counters {
    atomic_uint_fast64_t applied, failed, deployed, torn_down, recovered, released, stale_refused,
        pruned, publish_failed, store_errors, passes;
} mutator_counters_t;

struct tb_mutator {
    tb_mutator_deps_t deps;
    tb_mutator_options_t opts; /* defaults filled; opts.hook points at `hook` */
    char *hook;
    char worker[TB_TOPOLOGY_ID_BUF_SIZE];
    char worker_id[TB_STORE_WORKER_BUF_SIZE];
    bool release_pending; /* worker thread: own claims may be left (a release failed, or start) */
    int64_t next_prune;   /* worker thread: monotonic ms when pruning is due */

    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool wake;           /* a pass was asked for */
    bool rescan;         /* the next pass looks at the whole store: requests may have been missed */
    json_t *hints;       /* topology ids with a deploy/teardown request: object used as a set */
    atomic_bool stop;    /* set under lock, read anywhere */

    pthread_t thread;
    bool started, joined;
    atomic_bool running;  /* the worker thread is inside its loop */
    int64_t started_ms;   /* monotonic, for uptime */

    tb_bus_t *bus;        /* from the provider; NULL until it answers (worker thread) */
    tb_sub_t *sub_enqueued;
    tb_sub_t *sub_status;

    mutator_counters_t counters;
};

/**
 * Copies len bytes of text into out (TB_MUTATOR_REASON_BUF_SIZE bytes) as a
 * store-acceptable failure reason: invalid UTF-8 and control characters
 * become '?' or spaces, surrounding whitespace is trimmed, and an empty
 * result becomes fallback.
 */
void tb__mutator_reason_clean(char *out, const char *text, size_t len, const char *fallback);

/**
 * One drain pass: completes deploy/teardown requests for the topologies in
 * hints (an object used as a set, may be NULL) and, when full is set, for
 * every topology found deploying or tearing down; then applies pending
 * mutations, round-robin over the topologies, until none is left or stop is
 * set. Worker thread (or run_once).
 */
void tb__mutator_pass(tb_mutator_t *m, bool full, const json_t *hints);

/**
 * Gives back the claims still recorded under the worker's id if a release
 * is pending (at start, after a failed release). Worker thread, holding no
 * claim.
 */
void tb__mutator_release_leftovers(tb_mutator_t *m);

/** Prunes settled rows past the retention if due (at most every prune interval). */
void tb__mutator_prune(tb_mutator_t *m);

/** A verdict-recording store call for tb__mutator_finish. */
typedef tb_status (*tb_mutator_finish_fn)(tb_mutator_t *m, void *ctx, tb_store_err_t *err);

/**
 * Runs fn until it records the verdict, is refused, or fails for a reason a
 * retry cannot cure; transient store errors are retried with backoff for a
 * few seconds (mutator_claims.c). Returns fn's last status.
 */
tb_status tb__mutator_finish(tb_mutator_t *m, tb_mutator_finish_fn fn, void *ctx,
                             const tb_store_claim_t *c, tb_store_err_t *err);

/** Logs and counts a verdict or release the store refused because c was taken back. */
void tb__mutator_refused(tb_mutator_t *m, const tb_store_claim_t *c, const char *what,
                         const tb_store_err_t *err);

/** Gives c back without a verdict; on a store error, leaves it for the next pass. */
void tb__mutator_release(tb_mutator_t *m, const tb_store_claim_t *c);

/**
 * Marks c's side effect started before its hook runs. False if it must not
 * run: the claim was taken back (logged), or the store failed (c given back).
 */
bool tb__mutator_start_effect(tb_mutator_t *m, const tb_store_claim_t *c);

/**
 * Runs the hook, if any, for claim c with input (borrowed) on stdin and the
 * TOPOBUS_HOOK_* variables; true on success (or no hook), else reason
 * (TB_MUTATOR_REASON_BUF_SIZE bytes) says why.
 */
bool tb__mutator_run_hook(tb_mutator_t *m, const tb_store_claim_t *c, const json_t *input,
                          char *reason);

/** Counts a failed store call and logs it once (what, id, the reason). */
void tb__mutator_store_error(tb_mutator_t *m, const char *what, const char *id,
                             const tb_store_err_t *err);

/** Publishes payload (borrowed) on an exact topic, fire-and-forget (health); failures are counted. */
void tb__mutator_publish_topic(tb_mutator_t *m, const char *topic, const json_t *payload);

#endif
