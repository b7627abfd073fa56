/*
 * The outbox relay (CONTRACT §2, DESIGN "The picture"): publishes the
 * change events the store committed to its outbox, in commit order, and
 * deletes each row only once the bus confirmed it (JetStream
 * acknowledgement; core publish + flush without JetStream; at once on the
 * in-process bus).
 *
 * Every process that writes to the store runs one relay (gateway, mutator,
 * serve). They share the work through the store-wide outbox lease: only
 * the holder publishes, so per topology the bus sees commit order, and two
 * relays never publish one row twice but after a takeover (the bus drops
 * such repeats by Nats-Msg-Id within its duplicate window). A relay wakes
 * without polling: its own process's commits signal it (the store's outbox
 * listener), other processes' commits ring a doorbell on the bus
 * (TB_RELAY_DOORBELL, core NATS, fire-and-forget), and a timer renews or
 * takes the lease. While the bus is down rows wait in the store (bounded by
 * its size) and are published once it is back.
 *
 * Threads: one relay thread; tb_relay_notify and tb_relay_stats from any
 * thread.
 */
#ifndef TB_RELAY_H
#define TB_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "tb/buf.h"
#include "tb/bus.h"
#include "tb/store.h"

/** Subject of the doorbell: "the outbox has new rows". Not under topology.>, so never stored. */
#define TB_RELAY_DOORBELL "_topobus.outbox.wake"

typedef struct tb_relay tb_relay_t;

typedef struct tb_relay_deps {
    tb_store_t *store; /* borrowed; outlives the relay */
    /* The bus, or NULL while unavailable; asked again about once a second. */
    tb_bus_t *(*bus_provider)(void *ud);
    void *bus_provider_ud;
} tb_relay_deps_t;

typedef struct tb_relay_options {
    const char *holder;     /* lease holder name; NULL: "<host>:<pid>:<8 hex>" */
    int lease_ms;           /* outbox lease; 0: 5000 */
    int batch;              /* rows per publish; 0: 256 */
    int confirm_timeout_ms; /* wait for the bus to confirm a batch; 0: 2000 */
} tb_relay_options_t;

typedef struct tb_relay_stats {
    bool holding;             /* this relay holds the lease */
    uint64_t confirmed;       /* rows published, confirmed and deleted */
    uint64_t republished;     /* rows published again after an unconfirmed attempt */
    uint64_t set_aside;       /* rows this relay moved aside (never publishable) */
    uint64_t failed_batches;  /* batches that ended on a bus or store failure */
    int64_t depth;            /* outbox rows waiting, as last read (every ~1 s) */
    int64_t oldest_age_ms;    /* age of the oldest, as last read */
    int64_t set_aside_rows;   /* rows in the set-aside table, as last read */
} tb_relay_stats_t;

/**
 * Creates a relay (not started); it reads and deletes outbox rows through
 * deps->store and listens to that handle's commits. TB_EINVAL for a missing
 * store or bad options. *out is new.
 */
tb_status tb_relay_create(tb_relay_t **out, const tb_relay_deps_t *deps,
                          const tb_relay_options_t *opts);

/**
 * Also listens to the commits of another store handle of this process
 * (up to 4 in all), so its writes wake the relay at once. Call before
 * tb_relay_start, at wiring time; the handle must outlive the relay.
 * TB_EFULL past the limit.
 */
tb_status tb_relay_watch_store(tb_relay_t *r, tb_store_t *store);

/** Starts the relay thread. TB_ECONFLICT if started already, TB_EIO if it cannot. */
tb_status tb_relay_start(tb_relay_t *r);

/** Rows were committed to the outbox: wakes this relay, or rings the holder's doorbell. Any thread. */
void tb_relay_notify(tb_relay_t *r);

/**
 * Stops the thread after its current batch and gives the lease up, so
 * another process's relay takes over at once. Safe to call twice.
 */
void tb_relay_stop(tb_relay_t *r);

/** Stops if needed, removes its store listeners and frees. Accepts NULL. */
void tb_relay_destroy(tb_relay_t *r);

/**
 * One pass on the caller's thread (the relay thread must not run): takes
 * or renews the lease and, if held and the bus is up, publishes every row.
 * TB_OK when the outbox was emptied, TB_ECONFLICT when another relay holds
 * the lease or the thread runs, TB_ECLOSED when the bus is unavailable,
 * else the failing bus or store status. For tests and tools.
 */
tb_status tb_relay_run_once(tb_relay_t *r);

/** Copies the counters. Any thread. */
void tb_relay_stats(const tb_relay_t *r, tb_relay_stats_t *out);

/** Appends the relay's Prometheus metrics (topobus_outbox_*) to out. Any thread. */
void tb_relay_metrics(const tb_relay_t *r, tb_buf_t *out);

#endif
