/*
 * Loop inboxes; see gw_inbox.h for the wake protocol. The mutex is a leaf
 * lock: lws_cancel_service() is called after it is released.
 */
#include <libwebsockets.h>
#include <stdlib.h>
#include <unistd.h>

#include "gw_inbox.h"
#include "gw_pool.h"

void gw_inbox_init(gw_inbox_t *in, size_t capacity)
{
    pthread_mutex_init(&in->lock, NULL);
    in->head = in->tail = NULL;
    in->count = 0;
    in->capacity = capacity;
    in->closed = false;
    in->ctx = NULL;
}

void gw_msg_free(gw_msg_t *msg)
{
    if (!msg)
        return;
    if (msg->kind == GW_MSG_ADOPT && msg->fd >= 0)
        close(msg->fd);
    gw_frame_unref(msg->frame);
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
    pthread_mutex_destroy(&in->lock);
}

void gw_inbox_set_context(gw_inbox_t *in, struct lws_context *ctx)
{
    in->ctx = ctx;
}

tb_status gw_inbox_push_take_nowake(gw_inbox_t *in, gw_msg_t *msg, bool *wake)
{
    *wake = false;
    msg->next = NULL;
    /* A finished job is always queued, full or closed: its request on the loop still
     * points at it, so only the loop (or the cleanup after the loop is gone) may finish
     * and free it. The pool's capacity bounds these messages. */
    bool job = msg->kind == GW_MSG_JOB;
    pthread_mutex_lock(&in->lock);
    if (in->closed && !job) {
        pthread_mutex_unlock(&in->lock);
        gw_msg_free(msg);
        return TB_ECLOSED;
    }
    if (in->count >= in->capacity && msg->kind != GW_MSG_ADOPT && !job) {
        pthread_mutex_unlock(&in->lock);
        gw_msg_free(msg);
        return TB_EFULL;
    }
    /* A non-empty queue has already been signalled; the loop drains it whole. A closed
     * inbox's loop is gone: nobody to wake. */
    *wake = in->head == NULL && !in->closed;
    if (in->tail)
        in->tail->next = msg;
    else
        in->head = msg;
    in->tail = msg;
    in->count++;
    pthread_mutex_unlock(&in->lock);
    return TB_OK;
}

void gw_inbox_wake(gw_inbox_t *in)
{
    /* The context is set before the first push and never changes. */
    if (in->ctx)
        lws_cancel_service(in->ctx);
}

tb_status gw_inbox_push_take(gw_inbox_t *in, gw_msg_t *msg)
{
    bool wake;
    tb_status st = gw_inbox_push_take_nowake(in, msg, &wake);
    if (wake)
        gw_inbox_wake(in);
    return st;
}

gw_msg_t *gw_inbox_take_all(gw_inbox_t *in)
{
    pthread_mutex_lock(&in->lock);
    gw_msg_t *all = in->head;
    in->head = in->tail = NULL;
    in->count = 0;
    pthread_mutex_unlock(&in->lock);
    return all;
}

void gw_inbox_close(gw_inbox_t *in)
{
    pthread_mutex_lock(&in->lock);
    in->closed = true;
    pthread_mutex_unlock(&in->lock);
}
