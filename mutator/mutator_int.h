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
    atomic_uint_fast64_t applied, failed, deployed, torn_down, recovered, publish_failed,
        store_errors, passes;
} mutator_counters_t;

struct tb_mutator {
    tb_mutator_deps_t deps;
    tb_mutator_options_t opts; /* defaults filled; opts.hook points at `hook` */
    char *hook;
    char worker[TB_TOPOLOGY_ID_BUF_SIZE];

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

/** Publishes payload (borrowed) on an exact topic, fire-and-forget (health); failures are counted. */
void tb__mutator_publish_topic(tb_mutator_t *m, const char *topic, const json_t *payload);

#endif
