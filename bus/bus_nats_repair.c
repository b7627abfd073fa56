/*
 * Rebuilding JetStream consumers the server lost. An ordered consumer is an
 * ephemeral consumer on one server; when that server dies the consumer is
 * gone, and nats.c reports missed heartbeats (NATS_MISSED_HEARTBEAT) without
 * creating a new one, so the subscription would stall for good. The error
 * handler marks the subscription broken and wakes this thread, which swaps
 * in a new ordered consumer starting after the last stream sequence
 * delivered and mutes the old one. The subscriber is then told events may
 * have been lost, always: while old and new overlapped, or while nats.c
 * reset the old one by itself, or if the stream no longer holds that far
 * back, what was delivered cannot be vouched for, and a resync costs one
 * snapshot per stream where a silent gap would cost a wrong view.
 *
 * Threads: one repair thread per nats bus. Lock order: nb->mu (only to wait
 * and flag), base.subs_mu (only to collect broken subscriptions), then each
 * subscription's s->mu, which is held across the re-subscribe so a
 * concurrent unsubscribe either happens before (nothing to repair) or after
 * (it closes the new consumer).
 */
#include <stdlib.h>
#include <time.h>

#include "bus_nats_int.h"
#include "tb/log.h"

enum { RETRY_MS = 1000 }; /* a repair that failed (no server yet) is tried again after this */

/* Replaces sub's consumer; false if it is still broken afterwards. */
static bool repair_one(nats_bus_t *nb, tb_sub_t *sub)
{
    nats_sub_t *s = sub->backend;
    pthread_mutex_lock(&s->mu);
    if (s->closed || !atomic_load(&s->broken)) {
        pthread_mutex_unlock(&s->mu);
        return true;
    }
    uint64_t last = atomic_load(&s->last_seq);
    natsSubscription *fresh = NULL;
    uint64_t feed;
    if (tb__nats_subscribe_ns(nb, sub, last > 0 ? last + 1 : 0, &fresh, &feed) != NATS_OK) {
        pthread_mutex_unlock(&s->mu);
        return false;
    }
    natsSubscription *old = s->ns;
    s->ns = fresh;
    atomic_store(&s->live_feed, feed);
    atomic_store(&s->broken, false);
    pthread_mutex_unlock(&s->mu);
    natsSubscription_Unsubscribe(old);
    natsSubscription_Destroy(old);
    tb_log(TB_LOG_NOTICE, "bus", "jetstream consumer rebuilt pattern=%s from_seq=%llu; resync",
           sub->pattern, (unsigned long long)(last + 1));
    tb__sub_report_dropped(sub, 1);
    return true;
}

static bool is_broken(nats_sub_t *s)
{
    return atomic_load(&s->broken);
}

static void wait_for_work(nats_bus_t *nb, int timeout_ms)
{
    if (timeout_ms <= 0) {
        while (!nb->repair_wanted && !nb->repair_stop)
            pthread_cond_wait(&nb->repair_cv, &nb->mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (!nb->repair_wanted && !nb->repair_stop &&
           pthread_cond_timedwait(&nb->repair_cv, &nb->mu, &ts) == 0) {
    }
}

static void *repair_main(void *arg)
{
    nats_bus_t *nb = arg;
    int retry_ms = 0;
    pthread_mutex_lock(&nb->mu);
    for (;;) {
        wait_for_work(nb, retry_ms);
        if (nb->repair_stop)
            break;
        nb->repair_wanted = false;
        pthread_mutex_unlock(&nb->mu);
        size_t n;
        tb_sub_t **broken = tb__nats_collect_subs(nb, is_broken, &n);
        bool all_fixed = true;
        for (size_t i = 0; i < n; i++) {
            all_fixed &= repair_one(nb, broken[i]);
            tb__sub_unref(broken[i]);
        }
        free(broken);
        pthread_mutex_lock(&nb->mu);
        /* Not all fixed: the timed wait ends after RETRY_MS, or earlier on a new loss. */
        retry_ms = all_fixed ? 0 : RETRY_MS;
    }
    pthread_mutex_unlock(&nb->mu);
    return NULL;
}

tb_status tb__nats_repair_start(nats_bus_t *nb)
{
    pthread_cond_init(&nb->repair_cv, NULL);
    if (pthread_create(&nb->repair_thread, NULL, repair_main, nb) != 0) {
        pthread_cond_destroy(&nb->repair_cv);
        return TB_EIO;
    }
    nb->repair_started = true;
    return TB_OK;
}

void tb__nats_repair_wake(nats_bus_t *nb)
{
    pthread_mutex_lock(&nb->mu);
    nb->repair_wanted = true;
    pthread_cond_signal(&nb->repair_cv);
    pthread_mutex_unlock(&nb->mu);
}

void tb__nats_repair_stop(nats_bus_t *nb)
{
    if (!nb->repair_started)
        return;
    pthread_mutex_lock(&nb->mu);
    nb->repair_stop = true;
    pthread_cond_signal(&nb->repair_cv);
    pthread_mutex_unlock(&nb->mu);
    pthread_join(nb->repair_thread, NULL);
    pthread_cond_destroy(&nb->repair_cv);
    nb->repair_started = false;
}
