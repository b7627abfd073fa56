/*
 * The gateway's bus subscriptions: one per topology with at least one open
 * stream anywhere in the process, shared by all loops (DESIGN "Fan-out").
 * Each entry knows which loops want its events (a bit mask) and how many
 * streams each loop holds. The bus callback formats each event into an SSE
 * frame once and pushes a reference into every interested loop's inbox.
 *
 * Subscribing can block (a JetStream consumer is created with a request to
 * the server), so loops never subscribe: a loop registers interest
 * (acquire), and a stream's opening read subscribes on a worker before it
 * reads the snapshot (ensure), which keeps subscribe-before-snapshot. A
 * subscription that fails then (bus down, a JetStream election) is retried
 * every second by the gateway's bus watcher; once it succeeds, the streams
 * of that topology are told events may have been missed and resync.
 *
 * Each entry stamps the cursors of its frames with the newest topology
 * version its events carried (never one read from the store, which is ahead
 * of the bus), so a client's Last-Event-ID names the version it reached.
 *
 * Threads: acquire/release on loop threads, ensure on workers, retry on the
 * watcher; callbacks on bus threads. Lock order: the registry mutex is never
 * held across a bus call. Callbacks never take it; they read the mask
 * atomically, and an entry is freed only after tb_sub_close guarantees no
 * callback runs and no thread holds a reference. The event callback holds
 * its entry's deliver lock while it stamps a frame and pushes it into the
 * loops' inboxes (whose locks are leaves under it); it wakes the loops after
 * releasing it.
 */
#ifndef TB_GW_FANOUT_H
#define TB_GW_FANOUT_H

#include "tb/base.h"

struct tb_gateway;
struct tb_bus;
typedef struct gw_fanout gw_fanout_t;

void gw_fanout_create(gw_fanout_t **out, struct tb_gateway *gw);
/** Closes every remaining subscription and frees the registry. Accepts NULL. */
void gw_fanout_destroy(gw_fanout_t *f);
/** Registers one stream of loop on topology. Never blocks on the bus. Loop thread. */
void gw_fanout_acquire(gw_fanout_t *f, unsigned loop, const char *topology);
/** Drops one stream's interest; the last one in the process unsubscribes. Loop thread. */
void gw_fanout_release(gw_fanout_t *f, unsigned loop, const char *topology);
/**
 * Makes sure topology is subscribed on the bus, subscribing now if needed
 * (blocking). TB_OK when subscribed; TB_EBACKEND if the bus is not reached
 * or refused (the watcher retries). Worker threads.
 */
tb_status gw_fanout_ensure(gw_fanout_t *f, const char *topology);
/**
 * Subscribes every registered topology that has no subscription yet and
 * tells their streams to resync. The gateway's bus watcher calls it. Any
 * thread but a loop's.
 */
void gw_fanout_retry(gw_fanout_t *f);
/** Topologies with a live subscription (for metrics). Any thread. */
size_t gw_fanout_count(gw_fanout_t *f);

#endif
