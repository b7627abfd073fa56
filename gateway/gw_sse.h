/*
 * SSE streams (CONTRACT §3) on one loop: opening (auth order, cap,
 * subscribe-before-snapshot, resume), the per-session bounded queue of
 * shared frames with resync on overflow, coalesced writes, keepalives from
 * one timer sweep, bus up/down notices, hang-up detection and the shutdown
 * drain. Everything here runs on the session's loop thread.
 */
#ifndef TB_GW_SSE_H
#define TB_GW_SSE_H

#include "gw_int.h"

#define GW_SSE_QUEUE_FRAMES 1024       /* frames waiting for one slow client */
#define GW_SSE_QUEUE_BYTES (1u << 20)  /* bytes waiting for one slow client */
#define GW_SSE_WRITE_BUDGET (64 * 1024) /* bytes per coalesced write */

/** Sets up the loop's SSE state (hang-up watcher, timer). TB_EIO if epoll fails. */
tb_status tb__gw_sse_loop_init(gw_loop_t *loop);
/** Releases the loop's SSE state after its context is destroyed. */
void tb__gw_sse_loop_cleanup(gw_loop_t *loop);

/** Route handler for GET /topologies/{id}/events. */
void tb__gw_sse_open(gw_request_t *req);
/** WRITEABLE for a request that is a stream: returns the lws callback result. */
int tb__gw_sse_writeable(gw_request_t *req);
/** CLOSED_HTTP for a stream: frees the session. */
void tb__gw_sse_closed(gw_request_t *req);

/** Handles inbox messages that concern streams (events, drops, bus state, drain). */
void tb__gw_sse_handle_msg(gw_loop_t *loop, const gw_msg_t *msg);
/**
 * After an inbox pass: writes what it queued, one write per stream, to every
 * stream whose socket has room; the others are written on WRITEABLE.
 */
void tb__gw_sse_flush(gw_loop_t *loop);
/** After a drain pass: a full inbox lost messages, so every stream resyncs. */
void tb__gw_sse_check_overflow(gw_loop_t *loop);
/** Callbacks on the loop's watcher wsi (raw file events, the timer); lws result. */
int tb__gw_sse_watcher_callback(gw_loop_t *loop, struct lws *wsi, int reason);

#endif
