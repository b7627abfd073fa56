/*
 * The inbox of one event loop: a multi-producer FIFO under a mutex.
 * Producers (the accept thread, bus threads, workers) push; the loop takes
 * the whole queue at once on LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 *
 * Bus events arrive as frames, batched: a frame pushed behind a batch that
 * has room joins it, so a burst of events costs one message (and no
 * allocation: the loop hands emptied batches back for reuse). Only frames
 * count against the capacity; the other messages (connections, finished
 * store calls, notices) are bounded where they come from.
 *
 * Wake-ups: a push wakes the loop with lws_cancel_service() only when no
 * wake-up is pending; the loop, once it has taken everything, settles the
 * inbox (gw_inbox_settle): if more arrived meanwhile it takes that too, and
 * only an empty inbox lets the next push wake it again. So a loop that is
 * already awake is not woken once per event.
 *
 * Lock order: the inbox mutex is a leaf; nothing is called while holding it.
 */
#ifndef TB_GW_INBOX_H
#define TB_GW_INBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "tb/base.h"
#include "gw_frame.h"

struct lws_context;

typedef enum gw_msg_kind {
    GW_MSG_ADOPT,   /* fd: an accepted connection for this loop */
    GW_MSG_FRAMES,  /* frames: formatted bus events (references owned by the message) */
    GW_MSG_DROPPED, /* nothing: events were lost upstream; every stream of the loop resyncs */
    GW_MSG_DRAIN,   /* nothing: start closing streams over the drain window */
    GW_MSG_BUS,     /* nothing: the bus state changed; streams are told */
    GW_MSG_JOB,     /* job: a worker finished it (gw_pool.h); owned by the message */
} gw_msg_kind;

#define GW_MSG_BATCH 64 /* frames one GW_MSG_FRAMES message holds */

typedef struct gw_msg {
    struct gw_msg *next;
    gw_msg_kind kind;
    int fd;
    struct gw_job *job;
    unsigned nframes;
    gw_frame_t *frames[]; /* GW_MSG_BATCH slots in a GW_MSG_FRAMES message, none otherwise */
} gw_msg_t;

typedef struct gw_inbox {
    pthread_mutex_t lock;
    gw_msg_t *head, *tail;
    size_t frames, capacity; /* frames queued, and the most that may be */
    bool closed;
    bool signalled;          /* a wake-up is on its way, or the loop is draining */
    gw_msg_t *spare;         /* emptied frame batches kept for reuse */
    unsigned nspare;
    struct lws_context *ctx; /* woken when no wake-up is pending */
} gw_inbox_t;

void gw_inbox_init(gw_inbox_t *in, size_t capacity);
/** Frees queued messages (closing adopt fds, dropping frame refs). Loop stopped. */
void gw_inbox_cleanup(gw_inbox_t *in);
/** Sets the context to wake; before any push. */
void gw_inbox_set_context(gw_inbox_t *in, struct lws_context *ctx);

/** A new message of kind (not GW_MSG_FRAMES), fd -1. Any thread. */
gw_msg_t *gw_msg_new(gw_msg_kind kind);

/**
 * Queues msg (taken, also on failure: freed with what it holds) and wakes the
 * loop unless a wake-up is pending. TB_ECLOSED after gw_inbox_close, except
 * for a finished job, which is kept (without a wake-up) for gw_inbox_cleanup:
 * its request may still point at it. Not bounded: only frames are. Any thread.
 */
tb_status gw_inbox_push_take(gw_inbox_t *in, gw_msg_t *msg);

/**
 * Queues a reference to frame (the caller keeps its own). TB_EFULL when
 * capacity frames are queued (nothing is queued), TB_ECLOSED after
 * gw_inbox_close. The wake-up is left to the caller, who may hold a lock of
 * its own: *wake is set when the loop must be woken, and the caller then
 * calls gw_inbox_wake once it holds no lock. Any thread.
 */
tb_status gw_inbox_push_frame(gw_inbox_t *in, gw_frame_t *frame, bool *wake);

/** Wakes the loop (lws_cancel_service). Any thread, holding no lock. */
void gw_inbox_wake(gw_inbox_t *in);

/** Takes every queued message, oldest first; the caller frees each with gw_inbox_recycle. */
gw_msg_t *gw_inbox_take_all(gw_inbox_t *in);

/**
 * After the loop handled what it took: true if more was queued meanwhile
 * (take it too); false if the inbox is empty, from when the next push wakes
 * the loop again. Loop thread.
 */
bool gw_inbox_settle(gw_inbox_t *in);

/** Frees msg (as gw_msg_free) or keeps an emptied frame batch for reuse. Loop thread. */
void gw_inbox_recycle(gw_inbox_t *in, gw_msg_t *msg);

/** Refuses further pushes. Any thread. */
void gw_inbox_close(gw_inbox_t *in);

/**
 * Frees a message and what it holds: closes an unadopted fd, unrefs frames,
 * finishes an undelivered job with no request (its done frees it).
 */
void gw_msg_free(gw_msg_t *msg);

#endif
