/*
 * Loop inboxes; see gw_inbox.h for batching and the wake protocol. The
 * mutex is a leaf lock (only the allocator runs under it, for a new frame
 * batch when no spare is left); lws_cancel_service() is called after it is
 * released.
 */
#include <libwebsockets.h>
#include <stdlib.h>
#include <unistd.h>

#include "gw_inbox.h"
#include "gw_pool.h"
#include "tb/alloc.h"

enum { SPARES = 8 }; /* emptied batches kept per inbox: enough for a loop's steady state */

void gw_inbox_init(gw_inbox_t *in, size_t capacity)
{
    pthread_mutex_init(&in->lock, NULL);
    in->head = in->tail = NULL;
    in->frames = 0;
    in->capacity = capacity;
    in->closed = false;
    in->signalled = false;
    in->spare = NULL;
    in->nspare = 0;
    in->ctx = NULL;
}

gw_msg_t *gw_msg_new(gw_msg_kind kind)
{
    TB_ASSERT(kind != GW_MSG_FRAMES);
    gw_msg_t *m = tb_xcalloc(1, sizeof *m);
    m->kind = kind;
    m->fd = -1;
    return m;
}

void gw_msg_free(gw_msg_t *msg)
{
    if (!msg)
        return;
    if (msg->kind == GW_MSG_ADOPT && msg->fd >= 0)
        close(msg->fd);
    for (unsigned i = 0; i < msg->nframes; i++)
        gw_frame_unref(msg->frames[i]);
    if (msg->job) {
        msg->job->req = NULL; /* never delivered: nobody waits for it any more */
        msg->job->done(msg->job);
    }
    free(msg);
}

void gw_inbox_cleanup(gw_inbox_t *in)
{
    gw_msg_t *m = gw_inbox_take_all(in);
    while (m) {
        gw_msg_t *next = m->next;
        gw_msg_free(m);
        m = next;
    }
    while (in->spare) {
        gw_msg_t *next = in->spare->next;
        free(in->spare);
        in->spare = next;
    }
    in->nspare = 0;
    pthread_mutex_destroy(&in->lock);
}

void gw_inbox_set_context(gw_inbox_t *in, struct lws_context *ctx)
{
    in->ctx = ctx;
}

/* Appends m (lock held); true if the caller must wake the loop. */
static bool append_locked(gw_inbox_t *in, gw_msg_t *m)
{
    m->next = NULL;
    if (in->tail)
        in->tail->next = m;
    else
        in->head = m;
    in->tail = m;
    /* A pending wake-up, or a loop that is draining, will see this message. */
    bool wake = !in->signalled;
    in->signalled = true;
    return wake;
}

tb_status gw_inbox_push_take(gw_inbox_t *in, gw_msg_t *msg)
{
    pthread_mutex_lock(&in->lock);
    if (in->closed && msg->kind == GW_MSG_JOB) {
        /* A finished job is kept even now: its request may still point at it, so only
         * gw_inbox_cleanup (after the loop and its requests are gone) may finish it. The
         * loop is gone or going: nobody to wake. */
        msg->next = NULL;
        if (in->tail)
            in->tail->next = msg;
        else
            in->head = msg;
        in->tail = msg;
        pthread_mutex_unlock(&in->lock);
        return TB_OK;
    }
    if (in->closed) {
        pthread_mutex_unlock(&in->lock);
        gw_msg_free(msg);
        return TB_ECLOSED;
    }
    bool wake = append_locked(in, msg);
    pthread_mutex_unlock(&in->lock);
    if (wake)
        gw_inbox_wake(in);
    return TB_OK;
}

tb_status gw_inbox_push_frame(gw_inbox_t *in, gw_frame_t *frame, bool *wake)
{
    *wake = false;
    pthread_mutex_lock(&in->lock);
    tb_status st = in->closed ? TB_ECLOSED : in->frames >= in->capacity ? TB_EFULL : TB_OK;
    if (st == TB_OK) {
        gw_msg_t *batch = in->tail;
        if (!batch || batch->kind != GW_MSG_FRAMES || batch->nframes == GW_MSG_BATCH) {
            batch = in->spare;
            if (batch) {
                in->spare = batch->next;
                in->nspare--;
            } else {
                batch = tb_xmalloc(sizeof *batch + GW_MSG_BATCH * sizeof batch->frames[0]);
            }
            batch->kind = GW_MSG_FRAMES;
            batch->fd = -1;
            batch->job = NULL;
            batch->nframes = 0;
            *wake = append_locked(in, batch);
        }
        batch->frames[batch->nframes++] = gw_frame_ref(frame);
        in->frames++;
    }
    pthread_mutex_unlock(&in->lock);
    return st;
}

void gw_inbox_wake(gw_inbox_t *in)
{
    /* The context is set before the first push and never changes. */
    if (in->ctx)
        lws_cancel_service(in->ctx);
}

gw_msg_t *gw_inbox_take_all(gw_inbox_t *in)
{
    pthread_mutex_lock(&in->lock);
    gw_msg_t *all = in->head;
    in->head = in->tail = NULL;
    in->frames = 0;
    pthread_mutex_unlock(&in->lock);
    return all;
}

bool gw_inbox_settle(gw_inbox_t *in)
{
    pthread_mutex_lock(&in->lock);
    bool more = in->head != NULL;
    if (!more)
        in->signalled = false; /* from here a push must wake the loop */
    pthread_mutex_unlock(&in->lock);
    return more;
}

void gw_inbox_recycle(gw_inbox_t *in, gw_msg_t *msg)
{
    if (msg->kind != GW_MSG_FRAMES) {
        gw_msg_free(msg);
        return;
    }
    for (unsigned i = 0; i < msg->nframes; i++)
        gw_frame_unref(msg->frames[i]);
    msg->nframes = 0;
    pthread_mutex_lock(&in->lock);
    bool keep = in->nspare < SPARES;
    if (keep) {
        msg->next = in->spare;
        in->spare = msg;
        in->nspare++;
    }
    pthread_mutex_unlock(&in->lock);
    if (!keep)
        free(msg);
}

void gw_inbox_close(gw_inbox_t *in)
{
    pthread_mutex_lock(&in->lock);
    in->closed = true;
    pthread_mutex_unlock(&in->lock);
}
