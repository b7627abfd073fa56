/*
 * The mutator (DESIGN "The mutator"): the worker that drains the mutation
 * queue of the store, applies each op to its topology's document, runs the
 * optional apply hook, commits the result and publishes every step on the
 * bus; it also completes deploy and teardown requests.
 *
 * Three layers, each usable alone:
 *   - tb_mutator_apply_op: the graph ops of CONTRACT §4 as a pure function
 *     over jansson documents;
 *   - tb_mutator_hook_run: the apply hook, an external command run without a
 *     shell with JSON on stdin and a timeout;
 *   - tb_mutator_t: the worker thread (wake on bus events, poll fallback,
 *     stale-claim recovery, health), started and stopped by process wiring.
 *
 * Several workers (in one process or many) may share one store: the store's
 * claims (tb/store.h "Claims") give every mutation, deploy and teardown to
 * one worker, fenced by a token, so each is applied, and its hook run, at
 * most once; a topology's mutations are applied one at a time in enqueue
 * order, and wait while it deploys. Each worker has a worker id, stable
 * across its restarts: a restarted worker gives its predecessor's claims
 * back at once instead of waiting out the lease.
 */
#ifndef TB_MUTATOR_H
#define TB_MUTATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tb/base.h"
#include "tb/bus.h"
#include "tb/store.h"

#define TB_MUTATOR_REASON_BUF_SIZE (TB_STORE_REASON_MAX + 1) /* reason buffers below */
#define TB_MUTATOR_HOOK_STDERR_MAX 512 /* bytes of hook stderr kept as a failure reason */
#define TB_MUTATOR_HEALTH_INTERVAL_S 10

/**
 * Applies one op (add_node, update_node, remove_node, add_link, remove_link;
 * CONTRACT §4) with its payload to doc, an object with "nodes" and "links"
 * arrays (a full document is fine; other members are ignored). On TB_OK *out
 * is a new object {"nodes","links"} holding the result, which passed
 * tb_store_validate_graph. On TB_EINVAL (unknown op, payload of the wrong
 * shape or types, duplicate id, missing node or link, a link to a missing
 * node) *out is NULL and reason (TB_MUTATOR_REASON_BUF_SIZE bytes) holds one
 * sentence. doc and payload are borrowed and never modified, also on
 * failure. Pure; any thread.
 */
tb_status tb_mutator_apply_op(const json_t *doc, const char *op, const json_t *payload,
                              json_t **out, char *reason);

/**
 * Runs the executable at path (no shell, no PATH search for a name with a
 * slash; argv is just the path) with len bytes of input on its stdin,
 * stdout discarded, stderr captured. The child gets the default signal mask
 * and dispositions, its own process group and a minimal environment: PATH
 * (a default if ours has none), HOME, LANG and TZ from this process, plus
 * env (NULL-terminated "TOPOBUS_HOOK_NAME=value" strings, borrowed; may be
 * NULL; at most 12; other names are a programming error), never anything
 * else of ours (secrets). Once it exits, or after timeout_ms, its whole
 * process group is killed with SIGKILL and it is reaped, so nothing it
 * started outlives the verdict. Blocks the calling thread until then.
 * Returns TB_OK when it exited 0; otherwise reason
 * (TB_MUTATOR_REASON_BUF_SIZE bytes, valid UTF-8 without control characters)
 * says why: TB_EIO (non-zero exit or killed by a signal: the last
 * TB_MUTATOR_HOOK_STDERR_MAX bytes of stderr, or the exit status if stderr
 * was empty), TB_ETIMEDOUT (killed after the timeout), TB_ENOTFOUND (it
 * could not be started, e.g. it does not exist or is not executable).
 * Any thread; SIGPIPE from a hook that does not read its input is absorbed.
 */
tb_status tb_mutator_hook_run(const char *path, const char *const *env, const char *input,
                              size_t len, long timeout_ms, char *reason);

typedef struct tb_mutator tb_mutator_t;

/**
 * Returns the bus, or NULL while it is unavailable (the worker then polls
 * and asks again about once a second). Called on the worker thread; may
 * block for one connect attempt. tb_app_bus is the production provider.
 */
typedef tb_bus_t *(*tb_mutator_bus_provider)(void *ud);

/** What the worker runs with; borrowed, and must outlive the worker. */
typedef struct tb_mutator_deps {
    tb_store_t *store;                    /* required; opened with the claim lease */
    tb_mutator_bus_provider bus_provider; /* NULL: no bus, poll only */
    void *bus_provider_ud;
} tb_mutator_deps_t;

#define TB_MUTATOR_RETENTION_DEFAULT_MS (7LL * 24 * 3600 * 1000)
#define TB_MUTATOR_KEEP_FOREVER (-1LL) /* retention_ms: never prune */
#define TB_MUTATOR_PRUNE_BATCH 500     /* settled rows deleted per store call */

typedef struct tb_mutator_options {
    long poll_ms;         /* fallback poll interval (0 = 10 s) */
    long lease_ms;        /* the store's claim lease: recovery runs every lease / 2 (0 = 60 s) */
    long health_ms;       /* health publication interval (0 = 10 s) */
    const char *hook;     /* apply hook path, or NULL (copied) */
    long hook_timeout_ms; /* 0 = 30 s */
    const char *worker;   /* token naming the worker in health topics (NULL: "mutator") */
    const char *worker_id; /* who holds its claims (tb_store_worker_id_valid), stable across
                              restarts; NULL: a random one for this worker's life (copied) */
    long long retention_ms; /* settled rows older than this are pruned (0 = 7 days;
                               TB_MUTATOR_KEEP_FOREVER: never) */
    long prune_interval_ms; /* pruning runs at most this often (0 = 60 s) */
} tb_mutator_options_t;

/** Counters, monotonic over the worker's life. */
typedef struct tb_mutator_stats {
    uint64_t applied;          /* mutations committed applied */
    uint64_t failed;           /* mutations committed failed */
    uint64_t deployed;         /* deploy requests completed (active or failed) */
    uint64_t torn_down;        /* teardown requests completed */
    uint64_t recovered;        /* stale claims requeued or failed by recovery */
    uint64_t released;         /* own claims given back (after a store error, at start) */
    uint64_t stale_refused;    /* verdicts the store refused: the claim had been taken back */
    uint64_t pruned;           /* settled rows deleted by retention */
    uint64_t publish_failed;   /* events the bus refused or that found no bus */
    uint64_t store_errors;     /* store calls that failed for backend reasons */
    uint64_t passes;           /* drain passes run */
} tb_mutator_stats_t;

/**
 * Creates a stopped worker. opts may be NULL for the defaults; it is copied.
 * TB_EINVAL for a missing store, a worker name outside the token grammar, a
 * worker id outside its grammar, or a lease not longer than the hook
 * timeout (a live claim would be taken for a crashed one).
 */
tb_status tb_mutator_create(tb_mutator_t **out, const tb_mutator_deps_t *deps,
                            const tb_mutator_options_t *opts);

/**
 * Starts the worker thread: gives back every claim still recorded under its
 * worker id (its predecessor's), stale-claim recovery, then a first drain
 * pass, then the loop. TB_EIO if the thread cannot be created, TB_ECONFLICT if
 * already started. Controlling thread only.
 */
tb_status tb_mutator_start(tb_mutator_t *m);

/**
 * Asks the worker to stop and waits for it: the mutation or deploy being
 * processed is finished (its hook too), nothing new is claimed, the bus
 * subscriptions are closed. Safe to call twice or on a worker never started.
 * Controlling thread only.
 */
void tb_mutator_stop(tb_mutator_t *m);

/** Stops if needed and frees the worker. Accepts NULL. */
void tb_mutator_destroy(tb_mutator_t *m);

/** Wakes the worker for a drain pass now, as a bus event would. Any thread. */
void tb_mutator_wake(tb_mutator_t *m);

/**
 * Runs one full drain pass on the calling thread (its own leftover claims,
 * recovery, deploys and teardowns, then every topology with pending work,
 * then retention pruning if due), for tests and tools. Only while the
 * worker thread is not running. TB_ECONFLICT if it is.
 */
tb_status tb_mutator_run_once(tb_mutator_t *m);

/** The worker id its claims are recorded under. Borrowed, valid while m lives. Any thread. */
const char *tb_mutator_worker_id(const tb_mutator_t *m);

/** Copies the counters. Any thread. */
void tb_mutator_stats(const tb_mutator_t *m, tb_mutator_stats_t *out);

#endif
