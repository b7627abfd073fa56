/*
 * The public bus API: argument validation, counters and dispatch through the
 * backend vtable, plus the subscription gate every backend delivers through.
 *
 * Ownership: tb_bus_create returns a new bus; a tb_sub_t is privately
 * refcounted (handle, running deliveries, backend) and freed on the last unref.
 *
 * Locks: bus->subs_mu (the list of open subscriptions) and sub->mu (one
 * subscription's gate). Order: subs_mu before sub->mu, never the reverse;
 * neither is held while a callback runs or while a backend is called, so a
 * callback may publish, subscribe or close subscriptions freely.
 */
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"
#include "tb/alloc.h"
#include "tb/log.h"
#include "tb/random.h"

enum {
    DEFAULT_RING_SIZE = 65536,
    DEFAULT_RING_MAX_BYTES = 64 << 20,
    DEFAULT_MAX_AGE_S = 3600,
    DEFAULT_DUPLICATES_S = 120,
    DEFAULT_RECONNECT_WAIT_MS = 250,
    DEFAULT_CONNECT_TIMEOUT_MS = 2000,
    DEFAULT_REPLAY_MAX = 4,
    /* nats.c's own defaults (2 min, 2) notice a frozen server or a cut network only after
     * minutes; these within 5-6 s (CONTRACT §3: streams say the bus is down), while a pong
     * may come up to 5 s late (a loaded host) before a live connection is given up. */
    DEFAULT_PING_INTERVAL_MS = 1000,
    DEFAULT_MAX_PINGS_OUT = 5,
    DEFAULT_PUBLISH_BUFFER = 8 * 1024 * 1024,
    DEFAULT_PENDING_MSGS = 262144,
    DEFAULT_PENDING_BYTES = 256 * 1024 * 1024,
    MAX_RING_SIZE = 1 << 24,
};

/* The backends by URL; nats.c is optional at build time, so only its entry is conditional. */
static const struct {
    const char *prefix;
    bool exact;
    const struct tb_bus_ops *ops;
} backends[] = {
    {"mem://", true, &tb__bus_mem_ops},
    {"none", true, &tb__bus_null_ops},
#ifdef TB_WITH_NATS
    {"nats://", false, &tb__bus_nats_ops},
#endif
};

const char *tb_bus_state_str(tb_bus_state_t state)
{
    switch (state) {
    case TB_BUS_UP:
        return "up";
    case TB_BUS_DOWN:
        return "down";
    case TB_BUS_DISABLED:
        return "disabled";
    }
    return "down";
}

void tb_bus_options_init(tb_bus_options_t *opts)
{
    *opts = (tb_bus_options_t){
        .ring_size = DEFAULT_RING_SIZE,
        .ring_max_bytes = DEFAULT_RING_MAX_BYTES,
        .stream_name = "TOPOBUS",
        .stream_max_age_s = DEFAULT_MAX_AGE_S,
        .stream_max_bytes = (int64_t)256 * 1024 * 1024,
        .stream_duplicates_s = DEFAULT_DUPLICATES_S,
        .stream_replicas = 1,
        .js_heartbeat_ms = 2000,
        .jetstream = true,
        .reconnect_wait_ms = DEFAULT_RECONNECT_WAIT_MS,
        .connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS,
        .replay_max = DEFAULT_REPLAY_MAX,
        .ping_interval_ms = DEFAULT_PING_INTERVAL_MS,
        .max_pings_out = DEFAULT_MAX_PINGS_OUT,
        .retry_first_connect = true,
        .publish_buffer_bytes = DEFAULT_PUBLISH_BUFFER,
        .sub_pending_msgs = DEFAULT_PENDING_MSGS,
        .sub_pending_bytes = DEFAULT_PENDING_BYTES,
    };
}

static bool stream_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static tb_status options_check(const tb_bus_options_t *o)
{
    if (o->ring_size < 1 || o->ring_size > MAX_RING_SIZE || o->ring_max_bytes < 1 ||
        !o->stream_name || !stream_name_valid(o->stream_name) || o->stream_max_age_s < 0 ||
        o->stream_max_bytes < 0 || o->stream_duplicates_s < 1 ||
        (o->stream_max_age_s > 0 && o->stream_duplicates_s > o->stream_max_age_s) ||
        (o->client_name && strlen(o->client_name) > 255) || o->stream_replicas < 1 ||
        o->js_heartbeat_ms < 100 || o->reconnect_wait_ms < 1 || o->connect_timeout_ms < 1 ||
        o->replay_max < 1 || o->publish_buffer_bytes < 0 || o->sub_pending_msgs < 1 ||
        o->ping_interval_ms < 100 || o->max_pings_out < 1 || o->sub_pending_bytes < 1)
        return TB_EINVAL;
    return TB_OK;
}

void tb__bus_base_init(tb_bus_t *bus, const struct tb_bus_ops *ops, const tb_bus_options_t *opts)
{
    bus->ops = ops;
    bus->opts = *opts;
    bus->stream_name = tb_xstrdup(opts->stream_name);
    bus->opts.stream_name = bus->stream_name;
    bus->client_name = opts->client_name ? tb_xstrdup(opts->client_name) : NULL;
    bus->opts.client_name = bus->client_name;
    atomic_init(&bus->state, TB_BUS_DOWN);
    TB_ASSERT(pthread_mutex_init(&bus->subs_mu, NULL) == 0);
    TB_ASSERT(pthread_mutex_init(&bus->confirm_mu, NULL) == 0);
    bus->subs = NULL;
    atomic_init(&bus->published, 0);
    atomic_init(&bus->publish_dropped, 0);
    atomic_init(&bus->received, 0);
    for (size_t i = 0; i < TB_ARRAY_LEN(bus->rejected); i++)
        atomic_init(&bus->rejected[i], 0);
    atomic_init(&bus->sub_dropped, 0);
    atomic_init(&bus->js_skipped, 0);
    atomic_init(&bus->js_leader_changes, 0);
    atomic_init(&bus->reconnects, 0);
    atomic_init(&bus->confirmed, 0);
    atomic_init(&bus->confirm_failed, 0);
}

void tb__bus_base_cleanup(tb_bus_t *bus)
{
    pthread_mutex_destroy(&bus->confirm_mu);
    pthread_mutex_destroy(&bus->subs_mu);
    free(bus->stream_name);
    free(bus->client_name);
}

uint64_t tb__bus_random_epoch(void)
{
    uint64_t epoch = 0;
    while (epoch == 0)
        tb_random_fill(&epoch, sizeof epoch);
    return epoch;
}

tb_event_t *tb__bus_event_clone(const tb_event_t *ev)
{
    tb_event_t *copy = tb_xmalloc(sizeof *copy);
    memcpy(copy, ev, sizeof *copy);
    atomic_init(&copy->refs, 1);
    copy->payload = tb_xstrndup(ev->payload, ev->payload_len);
    copy->seq = 0;
    return copy;
}

tb_status tb_bus_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts)
{
    *out = NULL;
    tb_bus_options_t defaults;
    if (!opts) {
        tb_bus_options_init(&defaults);
        opts = &defaults;
    }
    if (!url || options_check(opts))
        return TB_EINVAL;
    for (size_t i = 0; i < TB_ARRAY_LEN(backends); i++) {
        size_t plen = strlen(backends[i].prefix);
        bool hit = backends[i].exact ? strcmp(url, backends[i].prefix) == 0
                                     : strncmp(url, backends[i].prefix, plen) == 0;
        if (hit)
            return backends[i].ops->create(out, url, opts);
    }
    tb_log(TB_LOG_ERR, "bus", "unsupported bus url=%.64s", url);
    return TB_EINVAL;
}

void tb_bus_destroy(tb_bus_t *bus)
{
    if (!bus)
        return;
    /* Close what the owner left open; each close takes the list lock itself. */
    for (;;) {
        pthread_mutex_lock(&bus->subs_mu);
        tb_sub_t *sub = bus->subs;
        pthread_mutex_unlock(&bus->subs_mu);
        if (!sub)
            break;
        tb_sub_close(sub);
    }
    bus->ops->destroy(bus);
}

const char *tb_bus_backend(const tb_bus_t *bus)
{
    return bus->ops->name;
}

static tb_status publish_owned(tb_bus_t *bus, tb_event_t *ev)
{
    tb_status st = bus->ops->publish(bus, ev);
    if (st == TB_OK)
        atomic_fetch_add_explicit(&bus->published, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&bus->publish_dropped, 1, memory_order_relaxed);
    return st;
}

tb_status tb_bus_publish(tb_bus_t *bus, const char *topic, const char *type,
                         const char *payload_json, size_t len)
{
    if (!bus || !topic || !payload_json)
        return TB_EINVAL;
    tb_event_t *ev;
    if (tb_event_create(&ev, topic, type, payload_json, len, NULL))
        return TB_EINVAL;
    tb_status st = publish_owned(bus, ev);
    tb_event_unref(ev);
    return st;
}

tb_status tb_bus_publish_event(tb_bus_t *bus, tb_event_t *ev)
{
    if (!bus || !ev || tb_topic_validate(ev->topic, NULL) || !tb_event_type_valid(ev->type) ||
        !ev->payload)
        return TB_EINVAL;
    /* The backend may number the event; only an unshared one may be written to. */
    tb_event_t *mine = atomic_load_explicit(&ev->refs, memory_order_acquire) == 1
                           ? tb_event_ref(ev)
                           : tb__bus_event_clone(ev);
    tb_status st = publish_owned(bus, mine);
    tb_event_unref(mine);
    return st;
}

tb_status tb_bus_drain(tb_bus_t *bus, int timeout_ms)
{
    if (!bus || timeout_ms < 0)
        return TB_EINVAL;
    return bus->ops->drain(bus, timeout_ms);
}

tb_status tb_bus_subscribe(tb_bus_t *bus, const char *pattern, const tb_sub_handlers_t *h,
                           void *ud, tb_sub_t **out)
{
    *out = NULL;
    if (!bus || !pattern || !h || !h->on_event || tb_topic_validate_pattern(pattern, NULL))
        return TB_EINVAL;
    tb_sub_t *sub = tb_xcalloc(1, sizeof *sub);
    sub->bus = bus;
    sub->h = *h;
    sub->ud = ud;
    strcpy(sub->pattern, pattern); /* validated: at most TB_TOPIC_MAX_LEN bytes */
    atomic_init(&sub->refs, 1);
    atomic_init(&sub->dropped, 0);
    TB_ASSERT(pthread_mutex_init(&sub->mu, NULL) == 0);
    TB_ASSERT(pthread_cond_init(&sub->cv, NULL) == 0);
    tb_status st = bus->ops->subscribe(bus, sub);
    if (st) {
        tb__sub_unref(sub);
        return st;
    }
    pthread_mutex_lock(&bus->subs_mu);
    sub->next = bus->subs;
    if (bus->subs)
        bus->subs->prev = sub;
    bus->subs = sub;
    pthread_mutex_unlock(&bus->subs_mu);
    *out = sub;
    return TB_OK;
}

void tb__sub_ref(tb_sub_t *sub)
{
    atomic_fetch_add_explicit(&sub->refs, 1, memory_order_relaxed);
}

void tb__sub_unref(tb_sub_t *sub)
{
    if (atomic_fetch_sub_explicit(&sub->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (sub->backend_free)
        sub->backend_free(sub->backend);
    pthread_cond_destroy(&sub->cv);
    pthread_mutex_destroy(&sub->mu);
    free(sub);
}

static unsigned frames_on_this_thread(const tb_sub_t *sub)
{
    unsigned n = 0;
    for (const struct tb_sub_frame *f = sub->frames; f; f = f->next)
        n += pthread_equal(f->thread, pthread_self()) != 0;
    return n;
}

static unsigned frames_total(const tb_sub_t *sub)
{
    unsigned n = 0;
    for (const struct tb_sub_frame *f = sub->frames; f; f = f->next)
        n++;
    return n;
}

void tb_sub_close(tb_sub_t *sub)
{
    if (!sub)
        return;
    tb_bus_t *bus = sub->bus;
    pthread_mutex_lock(&bus->subs_mu);
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        bus->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    sub->prev = sub->next = NULL;
    pthread_mutex_unlock(&bus->subs_mu);
    bus->ops->unsubscribe(bus, sub);
    pthread_mutex_lock(&sub->mu);
    sub->closed = true;
    /*
     * Wait for callbacks on other threads. Frames of this thread are callers
     * further up our own stack: waiting for them would never end, and they
     * cannot call the handlers again because closed is now set.
     */
    while (frames_total(sub) > frames_on_this_thread(sub))
        pthread_cond_wait(&sub->cv, &sub->mu);
    pthread_mutex_unlock(&sub->mu);
    tb__sub_unref(sub);
}

uint64_t tb_sub_dropped(const tb_sub_t *sub)
{
    return atomic_load_explicit(&sub->dropped, memory_order_relaxed);
}

/* Enters the gate: false if closed. On true, leave_gate must follow. */
static bool enter_gate(tb_sub_t *sub, struct tb_sub_frame *frame)
{
    pthread_mutex_lock(&sub->mu);
    if (sub->closed) {
        pthread_mutex_unlock(&sub->mu);
        return false;
    }
    frame->thread = pthread_self();
    frame->next = sub->frames;
    sub->frames = frame;
    pthread_mutex_unlock(&sub->mu);
    return true;
}

static void leave_gate(tb_sub_t *sub, struct tb_sub_frame *frame)
{
    pthread_mutex_lock(&sub->mu);
    struct tb_sub_frame **p = &sub->frames;
    while (*p != frame)
        p = &(*p)->next;
    *p = frame->next;
    if (sub->closed)
        pthread_cond_broadcast(&sub->cv);
    pthread_mutex_unlock(&sub->mu);
}

void tb__sub_deliver(tb_sub_t *sub, tb_event_t *ev)
{
    struct tb_sub_frame frame;
    /* The reference keeps sub alive if the callback closes it. */
    tb__sub_ref(sub);
    if (enter_gate(sub, &frame)) {
        atomic_fetch_add_explicit(&sub->bus->received, 1, memory_order_relaxed);
        sub->h.on_event(ev, sub->ud);
        leave_gate(sub, &frame);
    }
    tb__sub_unref(sub);
}

bool tb__sub_wants(tb_sub_t *sub, const char *topic)
{
    if (!sub->h.want)
        return true;
    struct tb_sub_frame frame;
    bool wanted = false;
    tb__sub_ref(sub);
    if (enter_gate(sub, &frame)) {
        wanted = sub->h.want(topic, sub->ud);
        leave_gate(sub, &frame);
    }
    tb__sub_unref(sub);
    return wanted;
}

void tb__sub_report_dropped(tb_sub_t *sub, uint64_t count)
{
    if (count == 0)
        return;
    atomic_fetch_add_explicit(&sub->dropped, count, memory_order_relaxed);
    atomic_fetch_add_explicit(&sub->bus->sub_dropped, count, memory_order_relaxed);
    struct tb_sub_frame frame;
    tb__sub_ref(sub);
    if (sub->h.on_dropped && enter_gate(sub, &frame)) {
        sub->h.on_dropped(count, sub->ud);
        leave_gate(sub, &frame);
    }
    tb__sub_unref(sub);
}

void tb__bus_set_state(tb_bus_t *bus, tb_bus_state_t state)
{
    int old = atomic_exchange(&bus->state, (int)state);
    if (old == (int)state)
        return;
    if (old == TB_BUS_DOWN && state == TB_BUS_UP)
        atomic_fetch_add_explicit(&bus->reconnects, 1, memory_order_relaxed);
    tb_log(TB_LOG_NOTICE, "bus", "backend=%s state=%s", bus->ops->name, tb_bus_state_str(state));
    if (bus->opts.on_state)
        bus->opts.on_state(state, bus->opts.state_ud);
}

void tb__bus_count_rejected(tb_bus_t *bus, tb_envelope_error why)
{
    if ((size_t)why < TB_ARRAY_LEN(bus->rejected))
        atomic_fetch_add_explicit(&bus->rejected[why], 1, memory_order_relaxed);
}

tb_bus_state_t tb_bus_state(const tb_bus_t *bus)
{
    return (tb_bus_state_t)atomic_load(&bus->state);
}

uint64_t tb_bus_epoch(const tb_bus_t *bus)
{
    return bus->epoch;
}

tb_status tb_bus_head(tb_bus_t *bus, tb_cursor_t *out)
{
    return bus->ops->head(bus, out);
}

tb_status tb_bus_replay(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                        tb_bus_event_cb on_event, void *ud)
{
    if (!bus || !pattern || !after || !on_event || tb_topic_validate_pattern(pattern, NULL))
        return TB_EINVAL;
    return bus->ops->replay(bus, pattern, after, on_event, ud);
}

void tb_bus_stats(const tb_bus_t *bus, tb_bus_stats_t *out)
{
    /* The counters are only ever incremented; loads need no ordering. */
    const tb_bus_t *b = bus;
    out->published = atomic_load_explicit(&b->published, memory_order_relaxed);
    out->publish_dropped = atomic_load_explicit(&b->publish_dropped, memory_order_relaxed);
    out->received = atomic_load_explicit(&b->received, memory_order_relaxed);
    for (size_t i = 0; i < TB_ARRAY_LEN(out->rejected); i++)
        out->rejected[i] = atomic_load_explicit(&b->rejected[i], memory_order_relaxed);
    out->sub_dropped = atomic_load_explicit(&b->sub_dropped, memory_order_relaxed);
    out->js_skipped = atomic_load_explicit(&b->js_skipped, memory_order_relaxed);
    out->js_leader_changes = atomic_load_explicit(&b->js_leader_changes, memory_order_relaxed);
    out->reconnects = atomic_load_explicit(&b->reconnects, memory_order_relaxed);
    out->confirmed = atomic_load_explicit(&b->confirmed, memory_order_relaxed);
    out->confirm_failed = atomic_load_explicit(&b->confirm_failed, memory_order_relaxed);
}
