/*
 * The relay thread: waits for a wake-up (a commit in this process, a
 * doorbell from another, the lease timer, a retry after a failure), renews
 * or takes the outbox lease, and while it holds it publishes the outbox
 * (relay_pass.c): at once when woken, and at every renewal in case a
 * doorbell was lost. Failures back off from 100 ms to 2 s, so a bus or store
 * outage costs a few attempts a second at most and nothing at all while
 * the outbox is empty.
 *
 * Threads: see relay_int.h. Lock order: `lock` is a leaf.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relay_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"
#include "tb/random.h"

enum {
    DEFAULT_LEASE_MS = 5000,
    DEFAULT_BATCH = 256,
    DEFAULT_CONFIRM_TIMEOUT_MS = 2000,
    BACKOFF_MIN_MS = 100,
    BACKOFF_MAX_MS = 2000,
    BUS_RETRY_MS = 1000,
    STATS_MS = 2000,
};

static void wake_thread(tb_relay_t *r)
{
    pthread_mutex_lock(&r->lock);
    r->wake = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void tb_relay_notify(tb_relay_t *r)
{
    if (atomic_load(&r->holding)) {
        wake_thread(r);
        return;
    }
    /* Another process holds the lease: ring its doorbell. If nobody holds it, our own
     * thread takes it at its next look; wake it so that look happens now. */
    tb_bus_t *bus = atomic_load(&r->bus);
    if (!bus) {
        /* Not connected yet (a process writes at start, before its bus is up): the
         * thread rings once it is. Checked again after the mark, so a bus attached in
         * between is not missed either. */
        atomic_store(&r->ring_owed, true);
        bus = atomic_load(&r->bus);
        if (bus && !atomic_exchange(&r->ring_owed, false))
            bus = NULL;
    }
    if (bus)
        tb_bus_publish(bus, TB_RELAY_DOORBELL, NULL, "{}", 2);
    wake_thread(r);
}

static void on_outbox_commit(void *ud)
{
    tb_relay_notify(ud);
}

static void on_doorbell(tb_event_t *ev, void *ud)
{
    (void)ev;
    tb_relay_t *r = ud;
    if (atomic_load(&r->holding))
        wake_thread(r);
}

static void attach_bus(tb_relay_t *r)
{
    if (atomic_load(&r->bus) || !r->deps.bus_provider)
        return;
    tb_bus_t *bus = r->deps.bus_provider(r->deps.bus_provider_ud);
    if (!bus)
        return;
    tb_sub_handlers_t h = {.on_event = on_doorbell};
    if (tb_bus_subscribe(bus, TB_RELAY_DOORBELL, &h, r, &r->doorbell))
        tb_log(TB_LOG_WARN, "relay", "cannot listen for the outbox doorbell on the %s bus; "
                                     "other processes' rows wait for the lease timer",
               tb_bus_backend(bus));
    atomic_store(&r->bus, bus);
    /* Commits made while there was no bus were announced to nobody. */
    if (atomic_exchange(&r->ring_owed, false))
        tb_bus_publish(bus, TB_RELAY_DOORBELL, NULL, "{}", 2);
}

static void make_holder(char *out, const char *given)
{
    if (given) {
        snprintf(out, TB_RELAY_HOLDER_MAX + 1, "%s", given);
        return;
    }
    char host[32] = "host", hex[9];
    gethostname(host, sizeof host - 1);
    for (char *p = host; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '-';
        if (!ok)
            *p = '_';
    }
    tb_random_hex(hex, 4);
    snprintf(out, TB_RELAY_HOLDER_MAX + 1, "%s:%d:%s", host, (int)getpid(), hex);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Sleeps until woken, stopped or deadline (monotonic ms); true if woken. */
static bool wait_until(tb_relay_t *r, int64_t deadline)
{
    pthread_mutex_lock(&r->lock);
    while (!r->wake && !atomic_load(&r->stop) && tb_clock_mono_ms() < deadline) {
        struct timespec ts = tb_clock_mono_timespec(deadline);
        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
    }
    bool woken = r->wake;
    r->wake = false;
    pthread_mutex_unlock(&r->lock);
    return woken;
}

static void *relay_main(void *arg)
{
    tb_relay_t *r = arg;
    int64_t now = tb_clock_mono_ms(), next_bus = now, next_stats = now, retry_at = 0;
    int backoff = BACKOFF_MIN_MS;
    bool pass_due = true, was_holding = false;
    while (!atomic_load(&r->stop)) {
        now = tb_clock_mono_ms();
        if (!atomic_load(&r->bus) && now >= next_bus) {
            attach_bus(r);
            next_bus = now + BUS_RETRY_MS;
        }
        bool renewed = now >= r->lease_renew_ms;
        bool holding = tb__relay_lease(r, false);
        /* A new holder owes whatever its predecessor left; a holder also looks at each
         * renewal, so a doorbell that never rang (another process wrote while its bus was
         * away) delays rows by a third of a lease at most. */
        if (holding && (!was_holding || renewed))
            pass_due = true;
        was_holding = holding;
        if (holding && pass_due && now >= retry_at) {
            tb_status st = tb__relay_drain(r);
            pass_due = st != TB_OK;
            if (pass_due) {
                retry_at = tb_clock_mono_ms() + backoff;
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            } else {
                backoff = BACKOFF_MIN_MS;
            }
        }
        tb__relay_flush_deletes(r, !holding);
        now = tb_clock_mono_ms();
        if (now >= next_stats) {
            tb__relay_refresh_stats(r);
            next_stats = now + STATS_MS;
        }
        int64_t deadline = min64(r->lease_renew_ms, next_stats);
        if (!atomic_load(&r->bus))
            deadline = min64(deadline, next_bus);
        if (holding && pass_due)
            deadline = min64(deadline, retry_at);
        if (r->nconfirmed > 0)
            deadline = min64(deadline, r->delete_due_ms);
        if (wait_until(r, deadline))
            pass_due = true;
    }
    return NULL;
}

tb_status tb_relay_create(tb_relay_t **out, const tb_relay_deps_t *deps,
                          const tb_relay_options_t *opts)
{
    *out = NULL;
    tb_relay_options_t o = {0};
    if (opts)
        o = *opts;
    if (!deps || !deps->store || o.lease_ms < 0 || o.batch < 0 || o.batch > 10000 ||
        o.confirm_timeout_ms < 0 || (o.holder && (!*o.holder || strlen(o.holder) > 64)))
        return TB_EINVAL;
    tb_relay_t *r = tb_xcalloc(1, sizeof *r);
    r->deps = *deps;
    make_holder(r->holder, o.holder);
    r->lease_ms = o.lease_ms ? o.lease_ms : DEFAULT_LEASE_MS;
    r->batch = o.batch ? o.batch : DEFAULT_BATCH;
    r->confirm_timeout_ms = o.confirm_timeout_ms ? o.confirm_timeout_ms
                                                 : DEFAULT_CONFIRM_TIMEOUT_MS;
    /* A batch must be settled well inside the lease, or a successor could publish beside it. */
    if (r->confirm_timeout_ms * 2 >= r->lease_ms) {
        free(r);
        return TB_EINVAL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    tb_relay_watch_store(r, r->deps.store);
    *out = r;
    return TB_OK;
}

tb_status tb_relay_watch_store(tb_relay_t *r, tb_store_t *store)
{
    if (r->nwatched == TB_RELAY_WATCH_MAX)
        return TB_EFULL;
    r->watched[r->nwatched++] = store;
    tb_store_set_outbox_listener(store, on_outbox_commit, r);
    return TB_OK;
}

tb_status tb_relay_start(tb_relay_t *r)
{
    if (r->started)
        return TB_ECONFLICT;
    atomic_store(&r->running, true);
    if (pthread_create(&r->thread, NULL, relay_main, r)) {
        atomic_store(&r->running, false);
        return TB_EIO;
    }
    r->started = true;
    tb_log(TB_LOG_INFO, "relay", "started: holder=%s lease_ms=%d batch=%d", r->holder,
           r->lease_ms, r->batch);
    return TB_OK;
}

void tb_relay_stop(tb_relay_t *r)
{
    if (r->started && !r->joined) {
        pthread_mutex_lock(&r->lock);
        atomic_store(&r->stop, true);
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
        r->joined = true;
        atomic_store(&r->running, false);
        tb_log(TB_LOG_INFO, "relay", "stopped: confirmed=%llu republished=%llu",
               (unsigned long long)atomic_load(&r->confirmed),
               (unsigned long long)atomic_load(&r->republished));
    }
    tb__relay_flush_deletes(r, true);
    if (atomic_exchange(&r->holding, false))
        tb_store_outbox_release(r->deps.store, r->holder, NULL);
}

void tb_relay_destroy(tb_relay_t *r)
{
    if (!r)
        return;
    tb_relay_stop(r);
    for (size_t i = 0; i < r->nwatched; i++)
        tb_store_set_outbox_listener(r->watched[i], NULL, NULL);
    tb_sub_close(r->doorbell);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

tb_status tb_relay_run_once(tb_relay_t *r)
{
    if (atomic_load(&r->running))
        return TB_ECONFLICT;
    attach_bus(r);
    if (!tb__relay_lease(r, true))
        return TB_ECONFLICT;
    tb_status st = tb__relay_drain(r);
    tb_status del = tb__relay_flush_deletes(r, true);
    tb__relay_refresh_stats(r);
    return st ? st : del;
}

void tb_relay_stats(const tb_relay_t *r, tb_relay_stats_t *out)
{
    tb_relay_t *w = (tb_relay_t *)(uintptr_t)r;
    out->holding = atomic_load(&w->holding);
    out->confirmed = atomic_load(&w->confirmed);
    out->republished = atomic_load(&w->republished);
    out->set_aside = atomic_load(&w->set_aside);
    out->failed_batches = atomic_load(&w->failed_batches);
    out->depth = atomic_load(&w->depth);
    out->oldest_age_ms = atomic_load(&w->oldest_age_ms);
    out->set_aside_rows = atomic_load(&w->set_aside_rows);
}

static void metric(tb_buf_t *b, const char *name, const char *type, const char *help,
                   double value)
{
    tb_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name,
                   value);
}

void tb_relay_metrics(const tb_relay_t *r, tb_buf_t *out)
{
    tb_relay_stats_t s;
    tb_relay_stats(r, &s);
    metric(out, "topobus_outbox_depth", "gauge",
           "committed change events not yet confirmed by the bus (read every 2 s)",
           (double)s.depth);
    metric(out, "topobus_outbox_oldest_age_seconds", "gauge",
           "age of the oldest unconfirmed change event", (double)s.oldest_age_ms / 1000.0);
    metric(out, "topobus_outbox_set_aside_rows", "gauge",
           "change events the bus refused for good, kept in outbox_set_aside",
           (double)s.set_aside_rows);
    metric(out, "topobus_outbox_lease_held", "gauge", "1 if this process's relay publishes",
           s.holding ? 1 : 0);
    metric(out, "topobus_outbox_confirmed_total", "counter",
           "change events this process published and the bus confirmed", (double)s.confirmed);
    metric(out, "topobus_outbox_republished_total", "counter",
           "change events published again after an unconfirmed attempt", (double)s.republished);
    metric(out, "topobus_outbox_set_aside_total", "counter",
           "change events this process set aside", (double)s.set_aside);
    metric(out, "topobus_outbox_failed_batches_total", "counter",
           "publish batches that ended on a bus or store failure", (double)s.failed_batches);
}
