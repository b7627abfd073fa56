/*
 * The NATS backend (nats://...), on nats.c: one connection per bus that
 * reconnects forever (and keeps trying after a failed first connect if
 * asked), reports DOWN/UP through the state listener, buffers publishes
 * during an outage up to publish_buffer_bytes and then drops and counts
 * them. nats.c re-sends subscriptions after a reconnect, so they survive a
 * server restart without any action here.
 *
 * Threads: each subscription's messages arrive on its own nats.c delivery
 * thread (on_msg); connection events and asynchronous errors (slow consumer)
 * on nats.c's single callback thread.
 *
 * Sequences: with JetStream, live subscriptions whose pattern lies inside
 * the stream (topology.>) are ordered push consumers starting at "new", so
 * every live event carries its stream sequence in the message metadata and
 * live cursors and replay cursors are the same numbers; the ordered consumer
 * also repairs gaps by itself. Patterns outside the stream use core
 * subscriptions and deliver seq 0. Without JetStream, core subscriptions
 * number events with a per-process counter under a random epoch.
 *
 * An ordered consumer lives on one server; if that server dies, nats.c
 * reports missed heartbeats but does not rebuild it. The repair thread
 * (bus_nats_repair.c) then creates a new one (a new feed) from the last
 * stream sequence delivered; once it is in place the old feed is muted, so
 * only one feed ever counts, and deliveries are deduplicated by sequence.
 *
 * Lifetime: a nats.c subscription may call on_msg once more after it was
 * unsubscribed; the gate in bus.c keeps user callbacks out, and the backend
 * holds a reference on the tb_sub_t until nats.c's on_complete runs.
 * Locks: nb->mu only guards live_subs and closed; base.subs_mu is held in
 * the error handler only to find the subscription, never across nats.c calls.
 */
#include <stdlib.h>
#include <string.h>

#include "bus_nats_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { WAIT_CLOSE_MS = 5000, ENCODE_STACK = 4096, SUBSCRIBE_CONFIRM_MS = 1000 };

bool tb__nats_in_stream(const char *pattern)
{
    return strncmp(pattern, "topology.", 9) == 0;
}

tb_event_t *tb__nats_decode(nats_bus_t *nb, natsMsg *msg)
{
    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    tb_event_t *ev = NULL;
    tb_envelope_error why;
    if (tb_envelope_decode(natsMsg_GetSubject(msg), data ? data : "", len > 0 ? (size_t)len : 0,
                           tb_clock_wall(), &ev, &why)) {
        tb__bus_count_rejected(&nb->base, why);
        return NULL;
    }
    return ev;
}

/*
 * Reports what nats.c dropped for ns since the last report. Called from the
 * error handler (first drop of an episode) and before each delivery (later
 * drops, which nats.c does not signal again); the CAS makes each drop count once.
 */
static void report_drops(tb_sub_t *sub, natsSubscription *ns)
{
    nats_sub_t *s = sub->backend;
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(ns, &dropped) != NATS_OK)
        return;
    int_fast64_t seen = atomic_load(&s->dropped_seen);
    while (dropped > seen) {
        if (atomic_compare_exchange_weak(&s->dropped_seen, &seen, dropped)) {
            tb__sub_report_dropped(sub, (uint64_t)(dropped - seen));
            return;
        }
    }
}

/* One nats.c subscription's closure: the subscription it feeds, and which feed it is. */
typedef struct nats_feed {
    tb_sub_t *sub;
    uint64_t number;
} nats_feed_t;

static void on_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    const nats_feed_t *feed = closure;
    tb_sub_t *sub = feed->sub;
    nats_sub_t *s = sub->backend;
    if (feed->number < atomic_load(&s->live_feed)) {
        natsMsg_Destroy(msg); /* a replaced consumer still delivering: it no longer counts */
        return;
    }
    report_drops(sub, ns);
    nats_bus_t *nb = tb__nats_of(sub->bus);
    uint64_t seq = 0;
    if (s->stream) {
        jsMsgMetaData *md = NULL;
        if (natsMsg_GetMetaData(&md, msg) == NATS_OK) {
            seq = md->Sequence.Stream;
            jsMsgMetaData_Destroy(md);
            /* A rebuilt consumer may overlap the old one: each sequence is delivered once.
             * Unwanted events count too: a rebuild starts after the last one seen. */
            uint_fast64_t last = atomic_load(&s->last_seq);
            do {
                if (seq <= last) {
                    natsMsg_Destroy(msg);
                    return;
                }
            } while (!atomic_compare_exchange_weak(&s->last_seq, &last, seq));
            uint64_t seen = atomic_load(&nb->last_stream_seq);
            while (seq > seen && !atomic_compare_exchange_weak(&nb->last_stream_seq, &seen, seq)) {
            }
        }
    }
    /* Asked before decoding: a wide pattern's unwanted events cost no JSON parse. */
    tb_event_t *ev = tb__sub_wants(sub, natsMsg_GetSubject(msg)) ? tb__nats_decode(nb, msg) : NULL;
    natsMsg_Destroy(msg);
    if (!ev)
        return;
    if (s->stream)
        ev->seq = seq;
    else if (!nb->js)
        ev->seq = atomic_fetch_add(&nb->local_seq, 1) + 1;
    tb__sub_deliver(sub, ev);
    tb_event_unref(ev);
}

void tb__nats_sub_started(nats_bus_t *nb)
{
    pthread_mutex_lock(&nb->mu);
    nb->live_subs++;
    pthread_mutex_unlock(&nb->mu);
}

void tb__nats_sub_completed(nats_bus_t *nb)
{
    /* Last touch of nb: tb_bus_destroy may free it as soon as the count reaches zero. */
    pthread_mutex_lock(&nb->mu);
    nb->live_subs--;
    pthread_cond_broadcast(&nb->cv);
    pthread_mutex_unlock(&nb->mu);
}

tb_sub_t **tb__nats_collect_subs(nats_bus_t *nb, bool (*want)(nats_sub_t *), size_t *n)
{
    pthread_mutex_lock(&nb->base.subs_mu);
    size_t count = 0;
    for (tb_sub_t *sub = nb->base.subs; sub; sub = sub->next)
        count += sub->backend && want(sub->backend);
    tb_sub_t **list = tb_xcalloc(count ? count : 1, sizeof *list);
    *n = 0;
    for (tb_sub_t *sub = nb->base.subs; sub && *n < count; sub = sub->next) {
        if (sub->backend && want(sub->backend)) {
            tb__sub_ref(sub);
            list[(*n)++] = sub;
        }
    }
    pthread_mutex_unlock(&nb->base.subs_mu);
    return list;
}

static void on_complete(void *closure)
{
    nats_feed_t *feed = closure;
    tb_sub_t *sub = feed->sub;
    nats_bus_t *nb = tb__nats_of(sub->bus);
    free(feed);
    tb__sub_unref(sub);
    tb__nats_sub_completed(nb);
}

static void report_state(nats_bus_t *nb, tb_bus_state_t state)
{
    if (!atomic_load(&nb->closing))
        tb__bus_set_state(&nb->base, state);
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    report_state(closure, TB_BUS_UP);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    report_state(closure, TB_BUS_DOWN);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    nats_bus_t *nb = closure;
    report_state(nb, TB_BUS_DOWN);
    pthread_mutex_lock(&nb->mu);
    nb->closed = true;
    pthread_cond_broadcast(&nb->cv);
    pthread_mutex_unlock(&nb->mu);
}

/* Slow consumer: nats.c dropped messages of ns; tell the subscriber how many. */
static void on_error(natsConnection *nc, natsSubscription *ns, natsStatus err, void *closure)
{
    (void)nc;
    nats_bus_t *nb = closure;
    if (!ns) {
        tb_log(TB_LOG_WARN, "bus", "nats async error=%s", natsStatus_GetText(err));
        return;
    }
    /* Anything but a slow consumer on a subscription means its consumer may be gone: missed
     * heartbeats, a sequence mismatch, or nats.c's own reset of an ordered consumer timing
     * out while a JetStream cluster elects a leader. A core subscription is only logged. */
    bool lost = err != NATS_SLOW_CONSUMER;
    tb_sub_t *found = NULL;
    pthread_mutex_lock(&nb->base.subs_mu);
    for (tb_sub_t *sub = nb->base.subs; sub && !found; sub = sub->next) {
        nats_sub_t *s = sub->backend;
        if (s->ns == ns) {
            found = sub;
            tb__sub_ref(sub);
        }
    }
    pthread_mutex_unlock(&nb->base.subs_mu);
    if (found && lost) {
        nats_sub_t *s = found->backend;
        if (!s->stream)
            tb_log(TB_LOG_WARN, "bus", "nats async error=%s pattern=%s", natsStatus_GetText(err),
                   found->pattern);
        else if (!atomic_exchange(&s->broken, true)) {
            tb_log(TB_LOG_NOTICE, "bus", "jetstream consumer for pattern=%s lost (%s); rebuilding",
                   found->pattern, natsStatus_GetText(err));
            tb__nats_repair_wake(nb);
        }
    } else if (found) {
        report_drops(found, ns);
    }
    if (found)
        tb__sub_unref(found);
}

static tb_status configure(nats_bus_t *nb, const tb_bus_options_t *o)
{
    const char *servers[TB_BUS_URL_MAX_SERVERS];
    for (size_t i = 0; i < nb->nservers; i++)
        servers[i] = nb->servers[i];
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetServers(no, servers, (int)nb->nservers);
    if (s == NATS_OK)
        s = natsOptions_SetNoRandomize(no, true);
    if (s == NATS_OK && o->client_name)
        s = natsOptions_SetName(no, o->client_name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, o->reconnect_wait_ms);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, o->connect_timeout_ms);
    /* A silent peer (frozen server, cut network) answers no ping: past max_pings_out the
     * connection is stale, reported DOWN and replaced by a reconnect. */
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(no, o->ping_interval_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(no, o->max_pings_out);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(no, o->publish_buffer_bytes);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, nb);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_connected, nb);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, nb);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(no, on_error, nb);
    if (s == NATS_OK && o->retry_first_connect)
        s = natsOptions_SetRetryOnFailedConnect(no, true, on_connected, nb);
    nb->nopts = no;
    if (s != NATS_OK) {
        tb_log(TB_LOG_ERR, "bus", "nats options error=%s", natsStatus_GetText(s));
        return TB_EBACKEND;
    }
    return TB_OK;
}

static void nats_destroy(tb_bus_t *bus);

static tb_status nats_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts)
{
    nats_bus_t *nb = tb_xcalloc(1, sizeof *nb);
    tb__bus_base_init(&nb->base, &tb__bus_nats_ops, opts);
    atomic_init(&nb->closing, false);
    atomic_init(&nb->local_seq, 0);
    atomic_init(&nb->last_stream_seq, 0);
    atomic_init(&nb->js_quiet_until, 0);
    TB_ASSERT(pthread_mutex_init(&nb->mu, NULL) == 0);
    TB_ASSERT(pthread_cond_init(&nb->cv, NULL) == 0);
    TB_ASSERT(pthread_cond_init(&nb->replay_cv, NULL) == 0);
    const char *why = NULL;
    tb_status st = tb__bus_url_parse(url, &nb->servers, &nb->nservers, &why);
    if (st) {
        tb_log(TB_LOG_ERR, "bus", "bad nats url: %s", why);
        goto fail;
    }
    st = configure(nb, opts);
    if (st)
        goto fail;
    st = tb__nats_repair_start(nb);
    if (st)
        goto fail;
    natsStatus s = natsConnection_Connect(&nb->nc, nb->nopts);
    if (s == NATS_OK) {
        atomic_store(&nb->base.state, TB_BUS_UP);
        if (opts->jetstream)
            tb__nats_js_setup(nb);
    } else if (s == NATS_NOT_YET_CONNECTED) {
        tb_log(TB_LOG_NOTICE, "bus", "nats server=%s not reachable yet; retrying every %d ms",
               nb->servers[0], opts->reconnect_wait_ms);
    } else {
        tb_log(TB_LOG_WARN, "bus", "nats connect server=%s error=%s", nb->servers[0],
               natsStatus_GetText(s));
        st = TB_EIO;
        goto fail;
    }
    if (!nb->js)
        nb->base.epoch = tb__bus_random_epoch();
    *out = &nb->base;
    return TB_OK;
fail:
    nats_destroy(&nb->base);
    return st;
}

/* Waits on nb->cv until *flag says done or the deadline passes; nb->mu held. */
static bool wait_until(nats_bus_t *nb, bool (*done)(const nats_bus_t *), int timeout_ms)
{
    int64_t deadline = tb_clock_mono_ms() + timeout_ms;
    while (!done(nb)) {
        int64_t now = tb_clock_mono_ms();
        if (now >= deadline)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (deadline - now) % 1000 * 1000000;
        ts.tv_sec += (deadline - now) / 1000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&nb->cv, &nb->mu, &ts);
    }
    return true;
}

static bool subs_done(const nats_bus_t *nb)
{
    return nb->live_subs == 0;
}

static bool closed_done(const nats_bus_t *nb)
{
    return nb->closed;
}

static void nats_destroy(tb_bus_t *bus)
{
    nats_bus_t *nb = tb__nats_of(bus);
    atomic_store(&nb->closing, true);
    tb__nats_repair_stop(nb);
    tb__nats_js_unwatch(nb);
    pthread_mutex_lock(&nb->mu);
    /* Every subscription was unsubscribed; wait for nats.c to finish with them. */
    if (!wait_until(nb, subs_done, WAIT_CLOSE_MS))
        tb_log(TB_LOG_ERR, "bus", "nats subscriptions did not complete in %d ms", WAIT_CLOSE_MS);
    pthread_mutex_unlock(&nb->mu);
    if (nb->nc) {
        natsConnection_Close(nb->nc);
        pthread_mutex_lock(&nb->mu);
        if (!wait_until(nb, closed_done, WAIT_CLOSE_MS))
            tb_log(TB_LOG_ERR, "bus", "nats connection did not close in %d ms", WAIT_CLOSE_MS);
        pthread_mutex_unlock(&nb->mu);
    }
    tb__nats_confirm_free(nb);
    jsCtx_Destroy(nb->js);
    natsConnection_Destroy(nb->nc);
    natsOptions_Destroy(nb->nopts);
    tb__bus_url_free(nb->servers, nb->nservers);
    pthread_cond_destroy(&nb->replay_cv);
    pthread_cond_destroy(&nb->cv);
    pthread_mutex_destroy(&nb->mu);
    tb__bus_base_cleanup(&nb->base);
    free(nb);
}

static tb_status nats_publish(tb_bus_t *bus, tb_event_t *ev)
{
    nats_bus_t *nb = tb__nats_of(bus);
    char stack[ENCODE_STACK];
    tb_buf_t buf;
    tb_buf_init_fixed(&buf, stack, sizeof stack);
    if (tb_envelope_encode(ev, &buf) == TB_EFULL) {
        tb_buf_init(&buf);
        TB_ASSERT(tb_envelope_encode(ev, &buf) == TB_OK);
    }
    natsStatus s = natsConnection_Publish(nb->nc, ev->topic, buf.data, (int)buf.len);
    tb_buf_cleanup(&buf);
    if (s == NATS_OK)
        return TB_OK;
    if (s == NATS_INSUFFICIENT_BUFFER)
        return TB_EFULL; /* the outage buffer is full: dropped */
    return s == NATS_CONNECTION_CLOSED ? TB_ECLOSED : TB_EIO;
}

static void free_nats_sub(void *p)
{
    nats_sub_t *s = p;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

natsStatus tb__nats_subscribe_ns(nats_bus_t *nb, tb_sub_t *sub, uint64_t start_seq,
                                 natsSubscription **out, uint64_t *feed_number)
{
    nats_sub_t *s = sub->backend;
    const tb_bus_options_t *o = &nb->base.opts;
    natsSubscription *ns = NULL;
    natsStatus st;
    jsErrCode jerr = 0;
    if (s->stream && !tb__nats_js_admit(nb))
        return NATS_TIMEOUT; /* JetStream just did not answer: the caller retries later */
    nats_feed_t *feed = tb_xmalloc(sizeof *feed);
    feed->sub = sub;
    feed->number = atomic_fetch_add(&s->feeds, 1) + 1;
    if (s->stream) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = o->stream_name;
        so.Ordered = true;
        so.Config.Heartbeat = (int64_t)o->js_heartbeat_ms * 1000000;
        if (start_seq > 0) {
            so.Config.DeliverPolicy = js_DeliverByStartSequence;
            so.Config.OptStartSeq = start_seq;
        } else {
            so.Config.DeliverPolicy = js_DeliverNew;
        }
        st = js_Subscribe(&ns, nb->js, sub->pattern, on_msg, feed, NULL, &so, &jerr);
        tb__nats_js_outcome(nb, st, jerr);
    } else {
        st = natsConnection_Subscribe(&ns, nb->nc, sub->pattern, on_msg, feed);
    }
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(ns, o->sub_pending_msgs, o->sub_pending_bytes);
    if (st != NATS_OK) {
        tb_log(TB_LOG_ERR, "bus", "nats subscribe pattern=%s error=%s jserr=%d", sub->pattern,
               natsStatus_GetText(st), (int)jerr);
        natsSubscription_Destroy(ns);
        free(feed);
        return st;
    }
    /* The backend's reference, dropped by on_complete once nats.c is done with ns. */
    tb__sub_ref(sub);
    tb__nats_sub_started(nb);
    st = natsSubscription_SetOnCompleteCB(ns, on_complete, feed);
    TB_ASSERT(st == NATS_OK);
    *out = ns;
    *feed_number = feed->number;
    return NATS_OK;
}

static tb_status nats_subscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    nats_bus_t *nb = tb__nats_of(bus);
    nats_sub_t *s = tb_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->dropped_seen, 0);
    atomic_init(&s->last_seq, 0);
    atomic_init(&s->broken, false);
    atomic_init(&s->feeds, 0);
    atomic_init(&s->live_feed, 0);
    sub->backend = s;
    sub->backend_free = free_nats_sub;
    s->stream = nb->js && tb__nats_in_stream(sub->pattern);
    uint64_t feed;
    if (tb__nats_subscribe_ns(nb, sub, 0, &s->ns, &feed) != NATS_OK)
        return TB_EBACKEND;
    /* nats.c only queues the SUB: without a round trip, an event another
     * process publishes right after this returns can reach the server first
     * and be lost to this subscription. A PING after the SUB answers once
     * the server has the interest. Skipped while disconnected, when the
     * flush would only wait out its timeout. */
    if (natsConnection_Status(nb->nc) == NATS_CONN_STATUS_CONNECTED) {
        natsStatus fs = natsConnection_FlushTimeout(nb->nc, SUBSCRIBE_CONFIRM_MS);
        if (fs != NATS_OK)
            tb_log(TB_LOG_DEBUG, "bus", "subscribe not confirmed pattern=%s error=%s",
                   sub->pattern, natsStatus_GetText(fs));
    }
    return TB_OK;
}

static void nats_unsubscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    (void)bus;
    nats_sub_t *s = sub->backend;
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    natsSubscription *ns = s->ns;
    s->ns = NULL;
    pthread_mutex_unlock(&s->mu);
    /* Fails only if the connection is already closed, which closed the subscription too. */
    natsSubscription_Unsubscribe(ns);
    natsSubscription_Destroy(ns);
}

static tb_status nats_drain(tb_bus_t *bus, int timeout_ms)
{
    nats_bus_t *nb = tb__nats_of(bus);
    natsStatus s = natsConnection_FlushTimeout(nb->nc, timeout_ms > 0 ? timeout_ms : 1);
    if (s == NATS_OK)
        return TB_OK;
    return s == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EIO;
}

static tb_status nats_head(tb_bus_t *bus, tb_cursor_t *out)
{
    nats_bus_t *nb = tb__nats_of(bus);
    if (nb->js)
        return tb__nats_js_head(nb, out);
    *out = (tb_cursor_t){bus->epoch, atomic_load(&nb->local_seq), TB_CURSOR_NO_VERSION};
    return TB_OK;
}

static tb_status nats_replay(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud)
{
    nats_bus_t *nb = tb__nats_of(bus);
    if (!nb->js)
        return TB_ENOTFOUND; /* nothing is stored without JetStream */
    return tb__nats_js_replay(nb, pattern, after, on_event, ud);
}

const struct tb_bus_ops tb__bus_nats_ops = {
    .name = "nats",
    .create = nats_create,
    .destroy = nats_destroy,
    .publish = nats_publish,
    .subscribe = nats_subscribe,
    .unsubscribe = nats_unsubscribe,
    .drain = nats_drain,
    .head = nats_head,
    .replay = nats_replay,
    .publish_confirmed = tb__nats_publish_confirmed,
};
