/*
 * The worker thread: gives back the claims its predecessor left under its
 * worker id, waits for a wake-up (a bus event or tb_mutator_wake) or the
 * poll interval, runs drain passes, recovers stale claims at start and
 * every lease / 2, prunes settled rows past the retention at most every
 * minute, and publishes its health every 10 s. The bus is optional
 * and may come and go: the provider is asked again about once a second until
 * it answers, and until then (or with the bus disabled) the poll interval
 * alone drives the work.
 *
 * Threads: bus callbacks run on bus threads and only take `lock` to set the
 * wake flag or a hint; tb_mutator_stop runs on the controlling thread. Lock
 * order: `lock` is a leaf (no call is made while holding it but condition
 * variable operations and jansson on `hints`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mutator_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"
#include "tb/random.h"

enum {
    DEFAULT_POLL_MS = 10 * 1000,
    DEFAULT_LEASE_MS = TB_STORE_LEASE_DEFAULT_S * 1000,
    DEFAULT_HOOK_TIMEOUT_MS = 30 * 1000,
    DEFAULT_PRUNE_INTERVAL_MS = 60 * 1000,
    BUS_RETRY_MS = 1000,
};

void tb__mutator_publish_topic(tb_mutator_t *m, const char *topic, const json_t *payload)
{
    if (!m->bus) {
        atomic_fetch_add(&m->counters.publish_failed, 1);
        return;
    }
    char *text = json_dumps(payload, JSON_COMPACT);
    if (tb_bus_publish(m->bus, topic, NULL, text, strlen(text)))
        atomic_fetch_add(&m->counters.publish_failed, 1);
    free(text);
}

void tb_mutator_wake(tb_mutator_t *m)
{
    pthread_mutex_lock(&m->lock);
    m->wake = true;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

static void on_enqueued(tb_event_t *ev, void *ud)
{
    (void)ev;
    tb_mutator_wake(ud);
}

/* Requests announced while not listening, or lost by the bus, are found by a full pass. */
static void ask_rescan(tb_mutator_t *m)
{
    pthread_mutex_lock(&m->lock);
    m->rescan = true;
    m->wake = true;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

static void on_dropped(uint64_t count, void *ud)
{
    (void)count;
    ask_rescan(ud);
}

/* Deploy and teardown requests name their topology: remember it for the next pass. Any
 * other status change may let mutations queued behind a deploy go on: a pass looks. */
static void on_status(tb_event_t *ev, void *ud)
{
    tb_mutator_t *m = ud;
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
    if (tb_topic_topology_id(ev->topic, id))
        return;
    json_t *p = json_loadb(ev->payload, ev->payload_len, 0, NULL);
    const char *state = json_string_value(json_object_get(p, "state"));
    bool request = state && (strcmp(state, "deploying") == 0 || strcmp(state, "tearing_down") == 0);
    pthread_mutex_lock(&m->lock);
    if (request)
        json_object_set_new(m->hints, id, json_true());
    m->wake = true;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
    json_decref(p);
}

/* Asks the provider for the bus and subscribes; true once subscribed. */
static bool attach_bus(tb_mutator_t *m)
{
    if (m->bus)
        return true;
    if (!m->deps.bus_provider)
        return false;
    tb_bus_t *bus = m->deps.bus_provider(m->deps.bus_provider_ud);
    if (!bus)
        return false;
    tb_sub_handlers_t enq = {.on_event = on_enqueued, .on_dropped = on_dropped};
    tb_sub_handlers_t sts = {.on_event = on_status, .on_dropped = on_dropped};
    if (tb_bus_subscribe(bus, "topology.*.mutation.enqueued", &enq, m, &m->sub_enqueued) ||
        tb_bus_subscribe(bus, "topology.*.status", &sts, m, &m->sub_status)) {
        tb_sub_close(m->sub_enqueued);
        m->sub_enqueued = NULL;
        tb_log(TB_LOG_WARN, "mutator", "cannot subscribe on the %s bus; polling",
               tb_bus_backend(bus));
        return false;
    }
    m->bus = bus;
    tb_log(TB_LOG_INFO, "mutator", "listening on the %s bus", tb_bus_backend(bus));
    /* A deploy requested before we listened was announced to nobody. */
    ask_rescan(m);
    return true;
}

static void detach_bus(tb_mutator_t *m)
{
    tb_sub_close(m->sub_enqueued);
    tb_sub_close(m->sub_status);
    m->sub_enqueued = m->sub_status = NULL;
    m->bus = NULL;
}

/* Stale-claim recovery, by the database's clock (the store judges the lease). */
static void recover(tb_mutator_t *m)
{
    tb_store_recovery_t out;
    tb_store_err_t err;
    if (tb_store_recover_stale(m->deps.store, 0, &out, &err)) {
        atomic_fetch_add(&m->counters.store_errors, 1);
        tb_log(TB_LOG_WARN, "mutator", "stale-claim recovery failed: %s", err.message);
        return;
    }
    if (out.requeued + out.failed == 0)
        return;
    atomic_fetch_add(&m->counters.recovered, (uint64_t)(out.requeued + out.failed));
    tb_log(TB_LOG_NOTICE, "mutator", "recovered stale claims: requeued=%d interrupted=%d",
           out.requeued, out.failed);
    /* A requeued deploy or teardown announces itself to nobody: look at the whole store. */
    ask_rescan(m);
}

static void publish_health(tb_mutator_t *m, const char *state)
{
    char topic[TB_TOPIC_BUF_SIZE];
    if (tb_topic_build_health(topic, m->worker))
        return;
    json_t *p = json_pack("{s:s, s:I, s:I, s:s}", "worker", m->worker, "pid",
                          (json_int_t)getpid(), "uptime_s",
                          (json_int_t)((tb_clock_mono_ms() - m->started_ms) / 1000), "state",
                          state);
    tb__mutator_publish_topic(m, topic, p);
    json_decref(p);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/*
 * Sleeps until woken, stopped or `deadline` (monotonic ms). Returns the
 * hints gathered meanwhile (new reference, possibly empty) and sets *stop.
 */
static json_t *wait_for_work(tb_mutator_t *m, int64_t deadline, bool *stop, bool *woken)
{
    pthread_mutex_lock(&m->lock);
    while (!m->wake && !atomic_load(&m->stop) && tb_clock_mono_ms() < deadline) {
        struct timespec ts = tb_clock_mono_timespec(deadline);
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    }
    *woken = m->wake;
    m->wake = false;
    json_t *hints = m->hints;
    m->hints = json_object();
    *stop = atomic_load(&m->stop);
    pthread_mutex_unlock(&m->lock);
    return hints;
}

static bool take_rescan(tb_mutator_t *m)
{
    pthread_mutex_lock(&m->lock);
    bool rescan = m->rescan;
    m->rescan = false;
    pthread_mutex_unlock(&m->lock);
    return rescan;
}

static void *worker_main(void *arg)
{
    tb_mutator_t *m = arg;
    int64_t now = tb_clock_mono_ms();
    int64_t next_poll = now + m->opts.poll_ms;
    int64_t next_recover = now + m->opts.lease_ms / 2;
    int64_t next_health = now;
    int64_t next_bus = now;
    /* Claims still under our id are our predecessor's: give them back before anything. */
    tb__mutator_release_leftovers(m);
    recover(m);
    bool full = true, stop = false, pass_due = true;
    json_t *hints = json_object();
    while (!stop) {
        now = tb_clock_mono_ms();
        if (!m->bus && now >= next_bus && !attach_bus(m))
            next_bus = now + BUS_RETRY_MS;
        if (now >= next_health) {
            publish_health(m, "running");
            next_health = now + m->opts.health_ms;
        }
        if (now >= next_recover) {
            recover(m);
            next_recover = now + m->opts.lease_ms / 2;
        }
        if (pass_due)
            tb__mutator_pass(m, take_rescan(m) || full, hints);
        json_decref(hints);
        int64_t deadline = min64(min64(next_poll, next_recover), next_health);
        if (!m->bus && m->deps.bus_provider)
            deadline = min64(deadline, next_bus);
        bool woken;
        hints = wait_for_work(m, deadline, &stop, &woken);
        now = tb_clock_mono_ms();
        /* A poll pass also looks for deploy/teardown requests whose event was lost. */
        full = now >= next_poll;
        if (full)
            next_poll = now + m->opts.poll_ms;
        pass_due = woken || full || !m->bus || now >= next_recover || now >= next_health;
    }
    json_decref(hints);
    publish_health(m, "stopping");
    detach_bus(m);
    return NULL;
}

tb_status tb_mutator_create(tb_mutator_t **out, const tb_mutator_deps_t *deps,
                            const tb_mutator_options_t *opts)
{
    *out = NULL;
    tb_mutator_options_t o = {0};
    if (opts)
        o = *opts;
    o.poll_ms = o.poll_ms > 0 ? o.poll_ms : DEFAULT_POLL_MS;
    o.lease_ms = o.lease_ms > 0 ? o.lease_ms : DEFAULT_LEASE_MS;
    o.health_ms = o.health_ms > 0 ? o.health_ms : TB_MUTATOR_HEALTH_INTERVAL_S * 1000;
    o.hook_timeout_ms = o.hook_timeout_ms > 0 ? o.hook_timeout_ms : DEFAULT_HOOK_TIMEOUT_MS;
    o.retention_ms = o.retention_ms == 0 ? TB_MUTATOR_RETENTION_DEFAULT_MS : o.retention_ms;
    o.prune_interval_ms = o.prune_interval_ms > 0 ? o.prune_interval_ms : DEFAULT_PRUNE_INTERVAL_MS;
    const char *worker = o.worker ? o.worker : "mutator";
    char random_id[TB_STORE_WORKER_BUF_SIZE];
    if (!o.worker_id) {
        /* No stable identity given: claims are still fenced, but a restart
         * cannot recognise its predecessor's; they wait for the lease. */
        snprintf(random_id, sizeof random_id, "%s-", worker);
        size_t len = strlen(random_id);
        if (len + 17 <= sizeof random_id)
            tb_random_hex(random_id + len, 8);
        o.worker_id = random_id;
    }
    if (!deps || !deps->store || !tb_topology_id_valid(worker) ||
        !tb_store_worker_id_valid(o.worker_id) ||
        (o.retention_ms < 0 && o.retention_ms != TB_MUTATOR_KEEP_FOREVER) ||
        (o.hook && (!*o.hook || o.lease_ms <= o.hook_timeout_ms)))
        return TB_EINVAL;
    tb_mutator_t *m = tb_xcalloc(1, sizeof *m);
    m->deps = *deps;
    m->hook = o.hook ? tb_xstrdup(o.hook) : NULL;
    o.hook = m->hook;
    o.worker = m->worker;
    snprintf(m->worker, sizeof m->worker, "%s", worker);
    snprintf(m->worker_id, sizeof m->worker_id, "%s", o.worker_id);
    o.worker_id = m->worker_id;
    m->release_pending = true;
    m->opts = o;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    m->hints = json_object();
    atomic_init(&m->stop, false);
    atomic_init(&m->running, false);
    m->started_ms = tb_clock_mono_ms();
    *out = m;
    return TB_OK;
}

tb_status tb_mutator_start(tb_mutator_t *m)
{
    if (m->started)
        return TB_ECONFLICT;
    m->started_ms = tb_clock_mono_ms();
    atomic_store(&m->running, true);
    if (pthread_create(&m->thread, NULL, worker_main, m)) {
        atomic_store(&m->running, false);
        return TB_EIO;
    }
    m->started = true;
    tb_log(TB_LOG_INFO, "mutator",
           "started: worker=%s worker_id=%s poll_ms=%ld lease_ms=%ld hook=%s retention_s=%lld",
           m->worker, m->worker_id, m->opts.poll_ms, m->opts.lease_ms, m->hook ? m->hook : "-",
           m->opts.retention_ms / 1000);
    return TB_OK;
}

void tb_mutator_stop(tb_mutator_t *m)
{
    if (!m->started || m->joined)
        return;
    pthread_mutex_lock(&m->lock);
    atomic_store(&m->stop, true);
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    m->joined = true;
    atomic_store(&m->running, false);
    tb_log(TB_LOG_INFO, "mutator", "stopped: applied=%llu failed=%llu",
           (unsigned long long)atomic_load(&m->counters.applied),
           (unsigned long long)atomic_load(&m->counters.failed));
}

void tb_mutator_destroy(tb_mutator_t *m)
{
    if (!m)
        return;
    tb_mutator_stop(m);
    detach_bus(m);
    json_decref(m->hints);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m->hook);
    free(m);
}

tb_status tb_mutator_run_once(tb_mutator_t *m)
{
    if (atomic_load(&m->running))
        return TB_ECONFLICT;
    attach_bus(m);
    pthread_mutex_lock(&m->lock);
    json_t *hints = m->hints;
    m->hints = json_object();
    m->wake = false;
    pthread_mutex_unlock(&m->lock);
    tb__mutator_release_leftovers(m);
    recover(m);
    tb__mutator_pass(m, true, hints);
    json_decref(hints);
    return TB_OK;
}

const char *tb_mutator_worker_id(const tb_mutator_t *m)
{
    return m->worker_id;
}

void tb_mutator_stats(const tb_mutator_t *m, tb_mutator_stats_t *out)
{
    tb_mutator_t *w = (tb_mutator_t *)(uintptr_t)m;
    out->applied = atomic_load(&w->counters.applied);
    out->failed = atomic_load(&w->counters.failed);
    out->deployed = atomic_load(&w->counters.deployed);
    out->torn_down = atomic_load(&w->counters.torn_down);
    out->recovered = atomic_load(&w->counters.recovered);
    out->released = atomic_load(&w->counters.released);
    out->stale_refused = atomic_load(&w->counters.stale_refused);
    out->pruned = atomic_load(&w->counters.pruned);
    out->publish_failed = atomic_load(&w->counters.publish_failed);
    out->store_errors = atomic_load(&w->counters.store_errors);
    out->passes = atomic_load(&w->counters.passes);
}
