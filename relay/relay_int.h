/*
 * Private to the relay: its state, shared by the thread loop (relay.c) and
 * the publishing pass (relay_pass.c).
 *
 * Lock: `lock` guards `wake` and the condition variable only; it is a leaf,
 * never held across a store, bus or log call. The bus pointer is atomic
 * because tb_relay_notify reads it on committing threads. Everything else
 * that is not atomic belongs to the relay thread (or to run_once's caller).
 */
#ifndef TB_RELAY_INT_H
#define TB_RELAY_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "tb/relay.h"

enum {
    TB_RELAY_HOLDER_MAX = 64,
    TB_RELAY_WATCH_MAX = 4,
    TB_RELAY_DELETE_MAX = 512,      /* confirmed rows kept before their deletion is forced */
    TB_RELAY_DELETE_AFTER_MS = 100, /* the longest a confirmed row waits for its deletion */
};

struct tb_relay {
    tb_relay_deps_t deps;
    tb_store_t *watched[TB_RELAY_WATCH_MAX]; /* handles whose listener is this relay */
    size_t nwatched;
    char holder[TB_RELAY_HOLDER_MAX + 1];
    int lease_ms, batch, confirm_timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool wake;
    atomic_bool stop;
    pthread_t thread;
    bool started, joined;
    atomic_bool running;

    _Atomic(tb_bus_t *) bus; /* set once by the relay thread; lives as long as the process bus */
    atomic_bool ring_owed;    /* a commit found no bus to ring the doorbell on: ring once it is up */
    tb_sub_t *doorbell;
    atomic_bool holding;
    int64_t lease_renew_ms;   /* monotonic: when to renew or try the lease next */
    int64_t attempted_max_seq; /* highest seq this relay ever handed to the bus */
    /* Confirmed rows not deleted yet, sorted: deleted together, one transaction per
     * TB_RELAY_DELETE_MAX rows or TB_RELAY_DELETE_AFTER_MS, and skipped by reads meanwhile. */
    int64_t confirmed_seqs[TB_RELAY_DELETE_MAX];
    size_t nconfirmed;
    int64_t delete_due_ms; /* monotonic; 0 when nothing waits for deletion */

    atomic_uint_fast64_t confirmed, republished, set_aside, failed_batches;
    atomic_int_fast64_t depth, oldest_age_ms, set_aside_rows;
};

/** Takes or renews the lease if due (or if force); returns whether it is held. */
bool tb__relay_lease(tb_relay_t *r, bool force);

/**
 * Publishes every outbox row while this relay holds the lease and the bus
 * is up. TB_OK when the outbox is empty, TB_ECLOSED (no bus or bus down),
 * TB_ECONFLICT (lease lost), or the failing store or bus status.
 */
tb_status tb__relay_drain(tb_relay_t *r);

/**
 * Deletes the confirmed rows kept so far if force is set or their time has
 * come. TB_OK, or the store's status (they stay kept and are tried again).
 */
tb_status tb__relay_flush_deletes(tb_relay_t *r, bool force);

/** Reads depth, oldest age and set-aside count from the store into the atomics. */
void tb__relay_refresh_stats(tb_relay_t *r);

#endif
