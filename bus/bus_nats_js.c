/*
 * JetStream for the nats backend: the stream on topology.> that gives every
 * event a sequence (created if missing, bounded by age and size), the head
 * cursor, and replay after a cursor.
 *
 * The epoch is derived from the stream's name and creation time, so a
 * stream that was deleted and created again (sequences restart) never
 * honours the old cursors. Replay runs on the caller's thread with a
 * short-lived ephemeral consumer filtered by the pattern, starting right
 * after the cursor; it answers "gone" when the stream no longer holds the
 * event after the cursor (discarded by limits or purged).
 *
 * Requests here block up to connect_timeout_ms (a replay as a whole, too);
 * publishing never comes here. At most replay_max replays run at once, each
 * with its own consumer for the length of the call, so resuming clients
 * never hold more than that many consumers on the server; a replay that
 * finds no place within its time answers TB_ETIMEDOUT (the caller sends a
 * snapshot instead).
 *
 * JetStream in a cluster stops answering for seconds while it elects a
 * leader (a node died). Waiting out a timeout per caller then would hold
 * every stream opening on it, so after one unanswered request JetStream is
 * left alone for QUIET_MS: replays fail at once (the gateway sends a store
 * snapshot instead), consumer creation fails at once (retried by its
 * owner), and one caller per quiet period probes.
 *
 * A stream that lost its leader does not store what is published until a
 * new leader is elected: core publishers get no error, and consumers never
 * see those events. The new leader's advisory is the only trace, so on it
 * every stream subscription is told events may have been lost (it resyncs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_nats_int.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { NS_PER_S = 1000000000, QUIET_MS = 2000 };

#define LEADER_ADVISORY "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser: spreads name and creation time over all 64 bits. */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t stream_epoch(const char *name, int64_t created_ns)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = name; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    uint64_t epoch = mix64(h ^ mix64((uint64_t)created_ns));
    return epoch ? epoch : 1;
}

static void options_for(jsOptions *jo, int wait_ms)
{
    jsOptions_Init(jo);
    jo->Wait = wait_ms > 0 ? wait_ms : 1;
}

/* ---- the quiet period ------------------------------------------------------ */

bool tb__nats_js_admit(nats_bus_t *nb)
{
    int_fast64_t until = atomic_load(&nb->js_quiet_until);
    if (until == 0)
        return true;
    int64_t now = tb_clock_mono_ms();
    /* Past the period, the first caller to move it on probes; the others keep falling back. */
    if (now >= until && atomic_compare_exchange_strong(&nb->js_quiet_until, &until, now + QUIET_MS))
        return true;
    atomic_fetch_add_explicit(&nb->base.js_skipped, 1, memory_order_relaxed);
    return false;
}

void tb__nats_js_outcome(nats_bus_t *nb, natsStatus s, jsErrCode jerr)
{
    if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) {
        if (atomic_exchange(&nb->js_quiet_until, tb_clock_mono_ms() + QUIET_MS) == 0)
            tb_log(TB_LOG_NOTICE, "bus",
                   "jetstream not answering (%s): replays fall back to snapshots for now",
                   natsStatus_GetText(s));
    } else if (s == NATS_OK || jerr != 0) {
        if (atomic_exchange(&nb->js_quiet_until, 0) != 0)
            tb_log(TB_LOG_NOTICE, "bus", "jetstream answering again");
    }
    /* Anything else (not connected, closed) says nothing about JetStream itself. */
}

static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - tb_clock_mono_ms();
    return left > 0 ? (int)left : 0;
}

/* ---- stream leader changes ------------------------------------------------- */

static bool is_stream_consumer(nats_sub_t *s)
{
    return s->stream;
}

static void on_leader_elected(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    natsMsg_Destroy(msg);
    nats_bus_t *nb = closure;
    atomic_fetch_add_explicit(&nb->base.js_leader_changes, 1, memory_order_relaxed);
    size_t k;
    tb_sub_t **list = tb__nats_collect_subs(nb, is_stream_consumer, &k);
    tb_log(TB_LOG_NOTICE, "bus",
           "jetstream stream=%s has a new leader: what was published without one was not "
           "stored; %zu subscription%s told to resync",
           nb->base.opts.stream_name, k, k == 1 ? "" : "s");
    for (size_t i = 0; i < k; i++) {
        tb__sub_report_dropped(list[i], 1);
        tb__sub_unref(list[i]);
    }
    free(list);
}

static void leader_watch_completed(void *closure)
{
    tb__nats_sub_completed(closure);
}

/* Subscribes to the stream's leader advisories; without it a leader change goes unnoticed. */
static void watch_leader(nats_bus_t *nb)
{
    char subject[sizeof LEADER_ADVISORY + 64];
    snprintf(subject, sizeof subject, "%s%s", LEADER_ADVISORY, nb->base.opts.stream_name);
    natsSubscription *ns = NULL;
    natsStatus s = natsConnection_Subscribe(&ns, nb->nc, subject, on_leader_elected, nb);
    if (s == NATS_OK)
        s = natsSubscription_SetOnCompleteCB(ns, leader_watch_completed, nb);
    if (s != NATS_OK) {
        tb_log(TB_LOG_WARN, "bus", "cannot watch stream leader changes: %s; a failover may go "
               "unnoticed by open streams", natsStatus_GetText(s));
        if (ns)
            natsSubscription_Unsubscribe(ns);
        natsSubscription_Destroy(ns);
        return;
    }
    tb__nats_sub_started(nb);
    nb->leader_watch = ns;
}

void tb__nats_js_unwatch(nats_bus_t *nb)
{
    if (!nb->leader_watch)
        return;
    natsSubscription_Unsubscribe(nb->leader_watch);
    natsSubscription_Destroy(nb->leader_watch);
    nb->leader_watch = NULL;
}

/* ---- the stream ------------------------------------------------------------- */

void tb__nats_js_setup(nats_bus_t *nb)
{
    const tb_bus_options_t *o = &nb->base.opts;
    jsOptions jo;
    options_for(&jo, o->connect_timeout_ms);
    jsCtx *js = NULL;
    natsStatus s = natsConnection_JetStream(&js, nb->nc, &jo);
    if (s != NATS_OK) {
        tb_log(TB_LOG_WARN, "bus", "jetstream context error=%s", natsStatus_GetText(s));
        return;
    }
    const char *subjects[] = {TB_NATS_STREAM_SUBJECT};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = o->stream_name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.MaxAge = o->stream_max_age_s * NS_PER_S;
    cfg.MaxBytes = o->stream_max_bytes > 0 ? o->stream_max_bytes : -1;
    cfg.Replicas = o->stream_replicas;
    cfg.Duplicates = o->stream_duplicates_s * NS_PER_S; /* the window of Nats-Msg-Id dedupe */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    s = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
        /* It exists with other limits: an operator's settings win over ours. */
        tb_log(TB_LOG_NOTICE, "bus", "jetstream stream=%s exists with other settings; using it",
               o->stream_name);
        s = js_GetStreamInfo(&si, js, o->stream_name, NULL, &jerr);
    }
    if (s != NATS_OK) {
        if (s == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr)
            tb_log(TB_LOG_INFO, "bus", "server has no jetstream: replay disabled");
        else
            tb_log(TB_LOG_WARN, "bus", "jetstream stream=%s error=%s jserr=%d: replay disabled",
                   o->stream_name, natsStatus_GetText(s), (int)jerr);
        jsCtx_Destroy(js);
        return;
    }
    nb->base.epoch = stream_epoch(o->stream_name, si->Created);
    atomic_store(&nb->last_stream_seq, si->State.LastSeq);
    tb_log(TB_LOG_INFO, "bus", "jetstream stream=%s first_seq=%llu last_seq=%llu",
           o->stream_name, (unsigned long long)si->State.FirstSeq,
           (unsigned long long)si->State.LastSeq);
    jsStreamInfo_Destroy(si);
    nb->js = js;
    watch_leader(nb);
    tb__nats_confirm_setup(nb);
}

tb_status tb__nats_js_bounds(nats_bus_t *nb, int wait_ms, uint64_t *first, uint64_t *last)
{
    if (wait_ms <= 0 || !tb__nats_js_admit(nb))
        return TB_ETIMEDOUT;
    jsOptions jo;
    options_for(&jo, wait_ms);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, nb->js, nb->base.opts.stream_name, &jo, &jerr);
    tb__nats_js_outcome(nb, s, jerr);
    if (s != NATS_OK) {
        tb_log(TB_LOG_WARN, "bus", "jetstream stream info error=%s jserr=%d",
               natsStatus_GetText(s), (int)jerr);
        return s == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EBACKEND;
    }
    *first = si->State.FirstSeq;
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return TB_OK;
}

tb_status tb__nats_js_head(nats_bus_t *nb, tb_cursor_t *out)
{
    uint64_t first, last;
    if (tb__nats_js_bounds(nb, nb->base.opts.connect_timeout_ms, &first, &last))
        last = atomic_load(&nb->last_stream_seq);
    *out = (tb_cursor_t){nb->base.epoch, last, TB_CURSOR_NO_VERSION};
    return TB_OK;
}

/* Reads the consumer's messages, delivering each, until none is pending or seq reaches last. */
static tb_status replay_read(nats_bus_t *nb, natsSubscription *ns, uint64_t last,
                             int64_t deadline, tb_bus_event_cb on_event, void *ud)
{
    for (;;) {
        natsMsg *msg = NULL;
        int wait_ms = remaining_ms(deadline);
        natsStatus s = NATS_TIMEOUT; /* the replay's time is up */
        if (wait_ms > 0) {
            s = natsSubscription_NextMsg(&msg, ns, wait_ms);
            if (s == NATS_TIMEOUT)
                tb__nats_js_outcome(nb, s, 0); /* the consumer stopped delivering */
        }
        if (s != NATS_OK) {
            tb_log(TB_LOG_WARN, "bus", "jetstream replay read error=%s", natsStatus_GetText(s));
            return s == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EBACKEND;
        }
        jsMsgMetaData *md = NULL;
        if (natsMsg_GetMetaData(&md, msg) != NATS_OK) {
            natsMsg_Destroy(msg);
            return TB_EBACKEND;
        }
        uint64_t seq = md->Sequence.Stream, pending = md->NumPending;
        jsMsgMetaData_Destroy(md);
        tb_event_t *ev = tb__nats_decode(nb, msg);
        natsMsg_Destroy(msg);
        if (ev) {
            ev->seq = seq;
            on_event(ev, ud);
            tb_event_unref(ev);
        }
        if (pending == 0 || seq >= last)
            return TB_OK;
    }
}

/* Takes one of the replay_max places, waiting until the deadline at most. */
static bool replay_enter(nats_bus_t *nb, int64_t deadline)
{
    pthread_mutex_lock(&nb->mu);
    while (nb->replays >= (unsigned)nb->base.opts.replay_max) {
        int64_t left = deadline - tb_clock_mono_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&nb->mu);
            return false;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + left % 1000 * 1000000;
        ts.tv_sec += left / 1000 + ns / NS_PER_S;
        ts.tv_nsec = ns % NS_PER_S;
        pthread_cond_timedwait(&nb->replay_cv, &nb->mu, &ts);
    }
    nb->replays++;
    pthread_mutex_unlock(&nb->mu);
    return true;
}

static void replay_leave(nats_bus_t *nb)
{
    pthread_mutex_lock(&nb->mu);
    nb->replays--;
    pthread_cond_signal(&nb->replay_cv);
    pthread_mutex_unlock(&nb->mu);
}

static tb_status replay_in_place(nats_bus_t *nb, const char *pattern, const tb_cursor_t *after,
                                 int64_t deadline, tb_bus_event_cb on_event, void *ud);

tb_status tb__nats_js_replay(nats_bus_t *nb, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud)
{
    if (after->epoch != nb->base.epoch || !tb__nats_in_stream(pattern))
        return TB_ENOTFOUND;
    int64_t deadline = tb_clock_mono_ms() + nb->base.opts.connect_timeout_ms;
    if (!replay_enter(nb, deadline)) {
        tb_log(TB_LOG_DEBUG, "bus", "replay pattern=%s found no place in time", pattern);
        return TB_ETIMEDOUT;
    }
    tb_status st = replay_in_place(nb, pattern, after, deadline, on_event, ud);
    replay_leave(nb);
    return st;
}

/* The replay itself, holding one of the places. */
static tb_status replay_in_place(nats_bus_t *nb, const char *pattern, const tb_cursor_t *after,
                                 int64_t deadline, tb_bus_event_cb on_event, void *ud)
{
    uint64_t first, last;
    tb_status st = tb__nats_js_bounds(nb, remaining_ms(deadline), &first, &last);
    if (st)
        return st;
    if (after->seq > last || after->seq + 1 < first)
        return TB_ENOTFOUND;
    if (after->seq == last)
        return TB_OK;
    if (!tb__nats_js_admit(nb))
        return TB_ETIMEDOUT;
    jsOptions jo;
    options_for(&jo, remaining_ms(deadline));
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = nb->base.opts.stream_name;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = after->seq + 1;
    so.Config.AckPolicy = js_AckNone;
    natsSubscription *ns = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(&ns, nb->js, pattern, &jo, &so, &jerr);
    if (s == NATS_OK) {
        options_for(&jo, remaining_ms(deadline));
        s = natsSubscription_GetConsumerInfo(&ci, ns, &jo, &jerr);
    }
    tb__nats_js_outcome(nb, s, jerr);
    if (s != NATS_OK) {
        tb_log(TB_LOG_WARN, "bus", "jetstream replay pattern=%s error=%s jserr=%d", pattern,
               natsStatus_GetText(s), (int)jerr);
        st = s == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EBACKEND;
        goto out;
    }
    /* Delivered + pending is every matching message from the start sequence on. */
    if (ci->Delivered.Consumer + ci->NumPending > 0)
        st = replay_read(nb, ns, last, deadline, on_event, ud);
    /* Limits may have discarded events between our first look and the consumer's start;
     * a replay that cannot be checked is not trusted. */
    if (st == TB_OK) {
        st = tb__nats_js_bounds(nb, remaining_ms(deadline), &first, &last);
        if (st == TB_OK && after->seq + 1 < first)
            st = TB_ENOTFOUND;
    }
out:
    jsConsumerInfo_Destroy(ci);
    if (ns)
        natsSubscription_Unsubscribe(ns);
    natsSubscription_Destroy(ns);
    return st;
}
