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
 * Requests here block up to connect_timeout_ms; publishing never comes here.
 */
#include <stdlib.h>
#include <string.h>

#include "bus_nats_int.h"
#include "tb/log.h"

enum { NS_PER_S = 1000000000 };

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

static void options_for(const nats_bus_t *nb, jsOptions *jo)
{
    jsOptions_Init(jo);
    jo->Wait = nb->base.opts.connect_timeout_ms;
}

void tb__nats_js_setup(nats_bus_t *nb)
{
    const tb_bus_options_t *o = &nb->base.opts;
    jsOptions jo;
    options_for(nb, &jo);
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
}

tb_status tb__nats_js_bounds(nats_bus_t *nb, uint64_t *first, uint64_t *last)
{
    jsOptions jo;
    options_for(nb, &jo);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, nb->js, nb->base.opts.stream_name, &jo, &jerr);
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
    if (tb__nats_js_bounds(nb, &first, &last))
        last = atomic_load(&nb->last_stream_seq);
    *out = (tb_cursor_t){nb->base.epoch, last};
    return TB_OK;
}

/* Reads the consumer's messages, delivering each, until none is pending or seq reaches last. */
static tb_status replay_read(nats_bus_t *nb, natsSubscription *ns, uint64_t last,
                             tb_bus_event_cb on_event, void *ud)
{
    for (;;) {
        natsMsg *msg = NULL;
        natsStatus s = natsSubscription_NextMsg(&msg, ns, nb->base.opts.connect_timeout_ms);
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

tb_status tb__nats_js_replay(nats_bus_t *nb, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud)
{
    if (after->epoch != nb->base.epoch || !tb__nats_in_stream(pattern))
        return TB_ENOTFOUND;
    uint64_t first, last;
    tb_status st = tb__nats_js_bounds(nb, &first, &last);
    if (st)
        return st;
    if (after->seq > last || after->seq + 1 < first)
        return TB_ENOTFOUND;
    if (after->seq == last)
        return TB_OK;
    jsOptions jo;
    options_for(nb, &jo);
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
    if (s == NATS_OK)
        s = natsSubscription_GetConsumerInfo(&ci, ns, &jo, &jerr);
    if (s != NATS_OK) {
        tb_log(TB_LOG_WARN, "bus", "jetstream replay pattern=%s error=%s jserr=%d", pattern,
               natsStatus_GetText(s), (int)jerr);
        st = s == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EBACKEND;
        goto out;
    }
    /* Delivered + pending is every matching message from the start sequence on. */
    if (ci->Delivered.Consumer + ci->NumPending > 0)
        st = replay_read(nb, ns, last, on_event, ud);
    /* Limits may have discarded events between our first look and the consumer's start. */
    if (st == TB_OK && tb__nats_js_bounds(nb, &first, &last) == TB_OK && after->seq + 1 < first)
        st = TB_ENOTFOUND;
out:
    jsConsumerInfo_Destroy(ci);
    if (ns)
        natsSubscription_Unsubscribe(ns);
    natsSubscription_Destroy(ns);
    return st;
}
