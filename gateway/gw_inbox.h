/*
 * The inbox of one event loop: a bounded multi-producer FIFO under a mutex.
 * Producers (the accept thread, bus threads) push and wake the loop with
 * lws_cancel_service() only when the queue goes from empty to non-empty; the
 * loop takes the whole queue at once on LWS_CALLBACK_EVENT_WAIT_CANCELLED.
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
    GW_MSG_ADOPT,     /* fd: an accepted connection for this loop */
    GW_MSG_EVENT,     /* frame: a formatted bus event (a reference owned by the message) */
    GW_MSG_DROPPED,   /* topology: events of this topology were lost upstream */
    GW_MSG_DRAIN,     /* nothing: start closing streams over the drain window */
    GW_MSG_JOB,       /* job: a worker finished it (gw_pool.h); owned by the message */
} gw_msg_kind;

typedef struct gw_msg {
    struct gw_msg *next;
    gw_msg_kind kind;
    int fd;
    gw_frame_t *frame;
    struct gw_job *job;
    char topology[65];
} gw_msg_t;

typedef struct gw_inbox {
    pthread_mutex_t lock;
    gw_msg_t *head, *tail;
    size_t count, capacity;
    bool closed;
    struct lws_context *ctx; /* woken on empty -> non-empty */
} gw_inbox_t;

void gw_inbox_init(gw_inbox_t *in, size_t capacity);
/** Frees queued messages (closing adopt fds, dropping frame refs). Loop stopped. */
void gw_inbox_cleanup(gw_inbox_t *in);
/** Sets the context to wake; before any push. */
void gw_inbox_set_context(gw_inbox_t *in, struct lws_context *ctx);
/**
 * Queues msg (taken, also on failure: freed with what it holds) and wakes the
 * loop if the queue was empty. TB_EFULL when at capacity (adopt messages
 * ignore the bound: a connection is never dropped for queue space),
 * TB_ECLOSED after gw_inbox_close. Job messages are never refused: they are
 * queued even when full or closed (a closed inbox is not woken), because
 * their request may still point at the job; gw_inbox_cleanup finishes them.
 * Any thread.
 */
tb_status gw_inbox_push_take(gw_inbox_t *in, gw_msg_t *msg);
/**
 * As gw_inbox_push_take, but leaves the wake-up to the caller, for a caller
 * that pushes under a lock of its own: *wake is set when the queue went from
 * empty to non-empty, and the caller then calls gw_inbox_wake once it holds
 * no lock. Any thread.
 */
tb_status gw_inbox_push_take_nowake(gw_inbox_t *in, gw_msg_t *msg, bool *wake);
/** Wakes the loop (lws_cancel_service). Any thread, holding no lock. */
void gw_inbox_wake(gw_inbox_t *in);
/** Takes every queued message, oldest first; the caller frees each with gw_msg_free. */
gw_msg_t *gw_inbox_take_all(gw_inbox_t *in);
/** Refuses further pushes. Any thread. */
void gw_inbox_close(gw_inbox_t *in);
/**
 * Frees a message and what it holds: closes an unadopted fd, unrefs a frame,
 * finishes an undelivered job with no request (its done frees it).
 */
void gw_msg_free(gw_msg_t *msg);

#endif
