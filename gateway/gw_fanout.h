/*
 * The gateway's bus subscriptions: one per topology with at least one open
 * stream anywhere in the process, shared by all loops (DESIGN "Fan-out").
 * Each entry knows which loops want its events (a bit mask) and how many
 * streams each loop holds. The bus callback formats each event into an SSE
 * frame once and pushes a reference into every interested loop's inbox.
 *
 * Threads: acquire/release on loop threads; callbacks on bus threads. Lock
 * order: the registry mutex, then (inside tb_bus_subscribe) the bus's locks.
 * Callbacks never take the registry mutex; they read the mask atomically,
 * and an entry is freed only after tb_sub_close guarantees no callback runs.
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
/**
 * Registers loop's interest in topology's events, subscribing on the bus if
 * this is the first stream in the process. TB_EBACKEND if the bus refused.
 */
tb_status gw_fanout_acquire(gw_fanout_t *f, unsigned loop, const char *topology);
/** Drops one stream's interest; the last one in the process unsubscribes. */
void gw_fanout_release(gw_fanout_t *f, unsigned loop, const char *topology);
/**
 * Subscribes every entry that was registered before the bus was reached.
 * Called once, by the attach thread, after the bus became visible.
 */
void gw_fanout_attach(gw_fanout_t *f, struct tb_bus *bus);
/** Topologies with a live subscription (for metrics). Any thread. */
size_t gw_fanout_count(gw_fanout_t *f);

#endif
