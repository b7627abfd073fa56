/*
 * The reads behind a stream, on a worker (gw_pool.h): the opening read (a
 * replay after the client's cursor if the bus still holds it and it provably
 * continues the cursor's topology version, else a store snapshot), resync
 * snapshots, and the existence check behind a 429. Frames and snapshots are
 * built on the worker; the loop only appends them. One read per request at a
 * time: a resync asked for while a read runs is remembered (session->resync)
 * and the read is redone when it answers.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_fanout.h"
#include "gw_pool.h"
#include "gw_sse_int.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/clock.h"
#include "tb/log.h"
#include "tb/sse.h"
#include "tb/store.h"

enum { RETRY_MS = 2000 }; /* after a failed read, try again this much later */

typedef enum snap_kind { SNAP_OPEN, SNAP_RESYNC, SNAP_CAPPED } snap_kind;

typedef struct snap_job {
    gw_job_t base;
    tb_gateway_t *gw;
    snap_kind kind;
    char topology[TB_TOPOLOGY_ID_BUF_SIZE];
    bool resume;
    tb_cursor_t cursor;  /* resume after this */
    int64_t stamp;       /* replay: the version the client reached, stamped on each frame */
    int64_t version;     /* replay: the same, as the continuity rule advances it */
    uint64_t cursor_seq; /* the snapshot's cursor: the newest event the loop had seen */
    /* Results, written by the worker. */
    tb_status st;  /* of the snapshot read: TB_OK, TB_ENOTFOUND or TB_EBACKEND */
    json_t *snap;  /* the snapshot without "bus" */
    bool resumed;  /* frames hold everything after the cursor */
    gw_frame_t **frames;
    size_t nframes, bytes;
    bool too_many; /* the replay would not fit one stream's queue */
    bool gap;      /* the replay skips a version the client never got */
} snap_job_t;

/* ---- worker side ---------------------------------------------------------- */

static void collect(tb_event_t *ev, void *ud)
{
    snap_job_t *j = ud;
    if (j->too_many || j->gap)
        return;
    /* The replay runs from the cursor in bus order, so each frame's cursor carries the
     * version reached from the cursor's on; frames past a gap are never sent. */
    gw_frame_t *f = gw_frame_format(tb__gw_bus_epoch(j->gw), ev, &j->stamp);
    if (!f)
        return;
    if (!gw_frame_continues(f, &j->version)) {
        j->gap = true;
        gw_frame_unref(f);
        return;
    }
    if (j->nframes == GW_SSE_QUEUE_FRAMES || j->bytes + f->len > GW_SSE_QUEUE_BYTES) {
        j->too_many = true; /* a snapshot is smaller than this backlog */
        gw_frame_unref(f);
        return;
    }
    if (!j->frames)
        j->frames = tb_xcalloc(GW_SSE_QUEUE_FRAMES, sizeof *j->frames);
    j->frames[j->nframes++] = f;
    j->bytes += f->len;
}

static void drop_frames(snap_job_t *j)
{
    for (size_t i = 0; i < j->nframes; i++)
        gw_frame_unref(j->frames[i]);
    free(j->frames);
    j->frames = NULL;
    j->nframes = j->bytes = 0;
}

/*
 * Replays after the cursor; true if the bus had all of it and it continues
 * the cursor's version (CONTRACT §3 "Resume"). The live frames queued
 * meanwhile are checked against the end of the replay on the loop.
 */
static bool replay(snap_job_t *j)
{
    tb_bus_t *bus = tb__gw_bus(j->gw);
    if (!bus || j->cursor.epoch != tb__gw_bus_epoch(j->gw))
        return false; /* another bus instance's cursor is never misread */
    if (j->cursor.version < 0)
        return false; /* an old or unstamped cursor: continuity cannot be proven */
    j->stamp = j->version = j->cursor.version;
    char pattern[TB_TOPIC_BUF_SIZE];
    tb_topic_build_topology_pattern(pattern, j->topology);
    if (tb_bus_replay(bus, pattern, &j->cursor, collect, j) == TB_OK && !j->too_many && !j->gap)
        return true;
    if (j->gap)
        atomic_fetch_add(&j->gw->counters.sse_version_gaps, 1);
    drop_frames(j);
    return false;
}

static void run(gw_job_t *base)
{
    snap_job_t *j = (snap_job_t *)base;
    /* Subscribe before reading (CONTRACT §3): the stream registered its topology before this
     * job was queued, so with the gateway's bus subscription in place every event from now
     * on reaches it. Without it the stream still opens, and resyncs once it is made. */
    if (j->kind == SNAP_OPEN && j->resume && gw_fanout_live(j->gw->fanout) && replay(j)) {
        j->resumed = true;
        return;
    }
    tb_store_err_t err;
    tb_status st = tb_store_snapshot(j->gw->deps.store, j->topology, &j->snap, &err);
    if (st && st != TB_ENOTFOUND) {
        atomic_fetch_add(&j->gw->counters.store_errors, 1);
        tb_log(TB_LOG_WARN, "sse", "snapshot of topology=%s failed: %s (%s)", j->topology,
               tb_status_str(st), err.message);
    }
    j->st = st == TB_OK || st == TB_ENOTFOUND ? st : TB_EBACKEND;
}

/* ---- loop side ------------------------------------------------------------ */

/* The snapshot read failed or could not be queued: the sweep asks again in RETRY_MS. */
static void retry_later(gw_session_t *s)
{
    s->snapshot_retry_ms = tb_clock_mono_ms() + RETRY_MS;
    tb__gw_sse_sweep_by(s->loop, s->snapshot_retry_ms);
}

static int64_t snapshot_version(const json_t *snap)
{
    const json_t *v = json_object_get(snap, "version");
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v)
                                                            : TB_CURSOR_NO_VERSION;
}

int64_t tb__gw_sse_append_snapshot(gw_session_t *s, json_t *snap_take, uint64_t cursor_seq)
{
    int64_t version = snapshot_version(snap_take);
    json_object_set_new(snap_take, "bus",
                        json_string(tb_bus_state_str((tb_bus_state_t)s->loop->bus_state)));
    char *text = json_dumps(snap_take, JSON_COMPACT);
    /* The snapshot's own cursor may carry its version: whatever follows cursor_seq on the
     * bus with a version up to it repeats what the snapshot shows. (Frames never carry a
     * snapshot's version: the store is ahead of the bus.) */
    char cursor[TB_CURSOR_BUF_SIZE];
    tb_cursor_format(&(tb_cursor_t){tb__gw_bus_epoch(s->loop->gw), cursor_seq, version}, cursor);
    tb_sse_format_event(&s->control, cursor, "snapshot", text, strlen(text));
    free(text);
    json_decref(snap_take);
    return version;
}

/*
 * The snapshot is the view's new base version: the events queued behind it
 * must continue it (gw_frame_continues), else one was lost and the view
 * resyncs again. Call once the session's state after the snapshot is settled.
 */
static void rebase_version(gw_session_t *s, int64_t base)
{
    s->version = base;
    for (uint32_t i = 0; i < s->count; i++) {
        if (!gw_frame_continues(s->ring[(s->head + i) % s->cap]->frame, &s->version)) {
            tb__gw_sse_version_gap(s);
            return;
        }
    }
}

/*
 * The replay goes first; live events already queued follow unless the replay
 * had them. Both continue the cursor's version (the worker checked the
 * replay; the live tail is checked here), or the stream resyncs.
 */
static void take_replay(gw_session_t *s, snap_job_t *j)
{
    uint32_t nlive = s->count;
    gw_loop_frame_t **live = tb_xcalloc(nlive ? nlive : 1, sizeof *live);
    for (uint32_t i = 0; i < nlive; i++) {
        live[i] = s->ring[(s->head + i) % s->cap];
        live[i]->uses++; /* kept across the clear below */
    }
    tb__gw_sse_queue_clear(s);
    uint64_t last = j->cursor.seq;
    s->min_seq = last;
    s->version = j->cursor.version;
    for (size_t i = 0; i < j->nframes; i++) {
        gw_loop_frame_t *lf = tb__gw_sse_hold(j->frames[i]);
        tb__gw_sse_enqueue_checked(s, lf);
        tb__gw_sse_release(lf);
        if (j->frames[i]->seq > last)
            last = j->frames[i]->seq;
    }
    s->min_seq = last;
    for (uint32_t i = 0; i < nlive; i++) {
        tb__gw_sse_enqueue_checked(s, live[i]);
        tb__gw_sse_release(live[i]);
    }
    free(live);
}

static void opened(gw_session_t *s, snap_job_t *j)
{
    if (j->resumed) {
        take_replay(s, j);
    } else if (j->st == TB_ENOTFOUND) {
        tb__gw_sse_refuse(s, 404, "not_found", "no such topology");
        return;
    } else if (j->st == TB_OK) {
        int64_t version = tb__gw_sse_append_snapshot(s, j->snap, j->cursor_seq);
        j->snap = NULL;
        rebase_version(s, version);
    } else {
        /* The store is away: answer 200 anyway (a browser gives up for good on other
         * statuses), carry keepalives, and send the snapshot once it can be read. */
        s->holding = true;
        retry_later(s);
    }
    s->phase = GW_SSE_HEADERS;
    tb__gw_sse_want_write(s); /* headers and what is queued go out together */
    if (s->resync) /* the queue overflowed or the bus changed while opening */
        tb__gw_sse_want_snapshot(s);
}

static void resynced(gw_session_t *s, snap_job_t *j)
{
    if (s->resync) { /* more was dropped while this read ran: read again */
        tb__gw_sse_want_snapshot(s);
    } else if (j->st == TB_OK) {
        int64_t version = tb__gw_sse_append_snapshot(s, j->snap, j->cursor_seq);
        j->snap = NULL;
        s->holding = false;
        tb__gw_sse_want_write(s);
        rebase_version(s, version);
    } else if (j->st == TB_ENOTFOUND) {
        tb__gw_sse_error_close(s); /* the topology vanished under the stream */
    } else {
        retry_later(s); /* the sweep asks again */
    }
}

static void answer_capped(gw_request_t *req, const snap_job_t *j)
{
    if (j->st == TB_ENOTFOUND) {
        tb__gw_reply_error(req, 404, "not_found", "no such topology");
    } else {
        atomic_fetch_add(&req->gw->counters.sse_rejected_cap, 1);
        tb__gw_add_header(req, "retry-after:", "5");
        tb__gw_reply_error(req, 429, "too_many_streams",
                           "this user holds the maximum of open streams");
    }
    tb__gw_respond(req);
}

static void done(gw_job_t *base)
{
    snap_job_t *j = (snap_job_t *)base;
    gw_request_t *req = atomic_load(&base->req);
    if (req && j->kind == SNAP_CAPPED)
        answer_capped(req, j);
    else if (req && req->sse && j->kind == SNAP_OPEN)
        opened(req->sse, j);
    else if (req && req->sse)
        resynced(req->sse, j);
    drop_frames(j);
    json_decref(j->snap);
    free(j);
}

static snap_job_t *job_new(tb_gateway_t *gw, snap_kind kind, const char *topology)
{
    snap_job_t *j = tb_xcalloc(1, sizeof *j);
    j->base.run = run;
    j->base.done = done;
    j->gw = gw;
    j->kind = kind;
    snprintf(j->topology, sizeof j->topology, "%s", topology);
    return j;
}

void tb__gw_sse_open_read(gw_session_t *s, bool resume, const tb_cursor_t *cursor)
{
    snap_job_t *j = job_new(s->loop->gw, SNAP_OPEN, s->topic->id);
    j->resume = resume;
    if (resume)
        j->cursor = *cursor;
    j->cursor_seq = s->topic->last_seq;
    if (gw_pool_submit(s->loop->gw->pool, &j->base, s->loop, s->req) != TB_OK) {
        free(j);
        tb__gw_add_header(s->req, "retry-after:", "1");
        tb__gw_sse_refuse(s, 503, "busy", "too many requests are waiting for the store");
    }
}

void tb__gw_sse_want_snapshot(gw_session_t *s)
{
    if (s->req->job) {
        s->resync = true; /* redone when the running read answers */
        return;
    }
    snap_job_t *j = job_new(s->loop->gw, SNAP_RESYNC, s->topic->id);
    j->cursor_seq = s->topic->last_seq;
    /* From here events are queued again, and held until the snapshot is in front of them. */
    s->resync = false;
    s->holding = true;
    if (gw_pool_submit(s->loop->gw->pool, &j->base, s->loop, s->req) != TB_OK) {
        free(j);
        s->resync = true;
        retry_later(s);
    }
}

void tb__gw_sse_answer_capped(gw_request_t *req)
{
    snap_job_t *j = job_new(req->gw, SNAP_CAPPED, req->topology_id);
    if (gw_pool_submit(req->gw->pool, &j->base, req->loop, req) != TB_OK) {
        free(j);
        tb__gw_add_header(req, "retry-after:", "1");
        tb__gw_reply_error(req, 503, "busy", "too many requests are waiting for the store");
    }
}
