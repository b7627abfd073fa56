/*
 * How bus events reach streams (DESIGN "Fan-out"). A gateway process holds
 * ONE bus subscription, on `topology.>`, whatever the number of topologies
 * it serves, and a registry of the topologies that have open streams
 * (which loops hold them, how many on each). The bus callback looks an
 * event's topology up in the registry (a hash lookup): an event of a
 * topology without streams is dropped there (and, on NATS, before its
 * envelope is even decoded); any other is formatted into an SSE frame once
 * and a reference is pushed into the inbox of every loop that holds one of
 * its streams.
 *
 * Registering a stream's interest is an in-process insert, so it never
 * blocks. Subscribe-before-snapshot then holds as soon as the one
 * subscription is in effect at the server (tb_bus_subscribe confirms it):
 * a stream registers on its loop before its opening read runs, and what the
 * bus delivers from then on reaches it. The subscription is made when the
 * bus is first reached (gateway start, or the bus watcher), and retried by
 * the watcher every second while it fails; when it finally succeeds, the
 * streams that opened without it resync.
 *
 * Each registered topology stamps the cursors of its frames with the newest
 * topology version its events carried (never one read from the store,
 * which is ahead of the bus), so a client's Last-Event-ID names the version
 * it reached; a topology newly registered starts with that version unknown.
 *
 * When the bus reports lost events (a slow consumer, a rebuilt JetStream
 * consumer, a stream leader change), every loop is told, and every stream
 * on it resyncs: one subscription carries every topology.
 *
 * Threads: acquire/release on loop threads; attach on the gateway's
 * starting thread or the watcher; the callbacks on bus threads. Locks: the
 * registry is striped by topology; a stripe's lock guards its topologies'
 * entries, and the event callback holds it while it stamps a frame and
 * pushes it into the loops' inboxes (whose locks are leaves under it), so
 * every loop receives one topology's frames in the order their versions
 * were stamped, even when several publisher threads deliver at once (mem).
 * Loops are woken after the stripe lock is released. No lock is held
 * across a bus call.
 */
#ifndef TB_GW_FANOUT_H
#define TB_GW_FANOUT_H

#include <stdbool.h>
#include <stddef.h>

#include "tb/base.h"

struct tb_gateway;
typedef struct gw_fanout gw_fanout_t;

void gw_fanout_create(gw_fanout_t **out, struct tb_gateway *gw);
/** Closes the bus subscription (no callback runs after) and frees the registry. Accepts NULL. */
void gw_fanout_destroy(gw_fanout_t *f);
/** Registers one stream of loop on topology. Never blocks. Loop thread. */
void gw_fanout_acquire(gw_fanout_t *f, unsigned loop, const char *topology);
/** Drops one stream's interest; the last one in the process removes the topology. Loop thread. */
void gw_fanout_release(gw_fanout_t *f, unsigned loop, const char *topology);
/**
 * True when the bus subscription is in effect: what is published from now
 * on reaches registered topologies. Any thread.
 */
bool gw_fanout_live(gw_fanout_t *f);
/**
 * Subscribes to the bus if it has been reached and no subscription exists
 * yet (blocks up to the bus's confirmation round trip). Once it succeeds,
 * every stream opened before resyncs. Call it from one thread at a time,
 * never a loop's.
 */
void gw_fanout_attach(gw_fanout_t *f);
/**
 * Closes the bus subscription: no callback runs after it returns. For
 * shutdown, once the loops stopped; the registry stays until destroy.
 * Idempotent; the thread that attaches must have stopped.
 */
void gw_fanout_detach(gw_fanout_t *f);
/** Topologies with at least one open stream (for metrics). Any thread. */
size_t gw_fanout_count(gw_fanout_t *f);

#endif
