/*
 * The worker thread: waits for a wake-up (a bus event or tb_mutator_wake) or
 * the poll interval, runs drain passes, recovers stale claims at start and
 * every lease / 2, and publishes its health every 10 s. The bus is optional
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

enum {
    DEFAULT_POLL_MS = 10 * 1000,
    DEFAULT_LEASE_MS = TB_STORE_LEASE_DEFAULT_S * 1000,
    DEFAULT_HOOK_TIMEOUT_MS = 30 * 1000,
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

/* Deploy and teardown requests name their topology: remember it for the next pass. */
static void on_status(tb_event_t *ev, void *ud)
{
    tb_mutator_t *m = ud;
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
    if (tb_topic_topology_id(ev->topic, id))
        return;
    json_t *p = json_loadb(ev->payload, ev->payload_len, 0, NULL);
    const char *state = json_string_value(json_object_get(p, "state"));
    bool request = state && (strcmp(state, "deploying") == 0 || strcmp(state, "tearing_down") == 0);
    if (request) {
        pthread_mutex_lock(&m->lock);
        json_object_set_new(m->hints, id, json_true());
        m->wake = true;
        pthread_cond_signal(&m->cond);
        pthread_mutex_unlock(&m->lock);
    }
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

static void recover(tb_mutator_t *m)
{
    int requeued = 0, failed = 0;
    tb_store_err_t err;
    int64_t now_ms = (int64_t)(tb_clock_wall() * 1000.0);
    if (tb_store_recover_stale(m->deps.store, now_ms, &requeued, &failed, &err)) {
        atomic_fetch_add(&m->counters.store_errors, 1);
        tb_log(TB_LOG_WARN, "mutator", "stale-claim recovery failed: %s", err.message);
        return;
    }
    if (requeued + failed == 0)
        return;
    atomic_fetch_add(&m->counters.recovered, (uint64_t)(requeued + failed));
    tb_log(TB_LOG_NOTICE, "mutator", "recovered stale claims: requeued=%d failed=%d", requeued,
           failed);
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
    const char *worker = o.worker ? o.worker : "mutator";
    if (!deps || !deps->store || !tb_topology_id_valid(worker) ||
        (o.hook && (!*o.hook || o.lease_ms <= o.hook_timeout_ms)))
        return TB_EINVAL;
    tb_mutator_t *m = tb_xcalloc(1, sizeof *m);
    m->deps = *deps;
    m->hook = o.hook ? tb_xstrdup(o.hook) : NULL;
    o.hook = m->hook;
    o.worker = m->worker;
    snprintf(m->worker, sizeof m->worker, "%s", worker);
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
    tb_log(TB_LOG_INFO, "mutator", "started: worker=%s poll_ms=%ld lease_ms=%ld hook=%s",
           m->worker, m->opts.poll_ms, m->opts.lease_ms, m->hook ? m->hook : "-");
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
    recover(m);
    tb__mutator_pass(m, true, hints);
    json_decref(hints);
    return TB_OK;
}

void tb_mutator_stats(const tb_mutator_t *m, tb_mutator_stats_t *out)
{
    tb_mutator_t *w = (tb_mutator_t *)(uintptr_t)m;
    out->applied = atomic_load(&w->counters.applied);
    out->failed = atomic_load(&w->counters.failed);
    out->deployed = atomic_load(&w->counters.deployed);
    out->torn_down = atomic_load(&w->counters.torn_down);
    out->recovered = atomic_load(&w->counters.recovered);
    out->publish_failed = atomic_load(&w->counters.publish_failed);
    out->store_errors = atomic_load(&w->counters.store_errors);
    out->passes = atomic_load(&w->counters.passes);
}
