/*
 * What concerns all streams of a loop: bus events and drop notices from the
 * inbox, the bus state, a full inbox, the drain at shutdown, and the loop's
 * watcher: an epoll fd adopted into lws as a raw file, which reports hang-ups
 * (lws 4.1.6 would spin on them) and carries the one sweep timer that sends
 * keepalives, checks the bus state and retries failed snapshot reads.
 *
 * Every wake-up of a loop costs a poll() over all its sockets (lws' default
 * backend), which at thousands of idle streams is most of what an idle
 * gateway spends. So the sweep runs when something is due rather than on a
 * fixed tick: keepalives may go out up to KEEPALIVE_EARLY_MS early, so the
 * ones that fall due close together share one wake-up, and they are written
 * at the end of the sweep instead of after another poll for WRITEABLE. Bus
 * state changes arrive through the inbox (the gateway's bus watcher sends
 * them), not by polling.
 * Loop thread only.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gw_sse_int.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/clock.h"
#include "tb/sse.h"

enum {
    WATCH_BATCH = 64,
    DRAIN_SWEEP_MS = 50,
    SWEEP_MIN_MS = 20,        /* never sooner than this after a sweep */
    KEEPALIVE_EARLY_MS = 1000 /* a keepalive may go out this much (at most a tenth of the
                                 interval) before it is due */
};

/* ---- loop-wide events ------------------------------------------------------ */

static void for_each_session(gw_loop_t *loop, void (*fn)(gw_session_t *, const void *),
                             const void *arg)
{
    for (gw_session_t *s = loop->sessions, *next; s; s = next) {
        next = s->loop_next;
        fn(s, arg);
    }
}

static void resync_one(gw_session_t *s, const void *arg)
{
    (void)arg;
    tb__gw_sse_schedule_resync(s);
}

static void notify_bus(gw_session_t *s, const void *arg)
{
    int state = *(const int *)arg;
    const char *data = state == TB_BUS_UP ? "{\"state\":\"up\"}" : "{\"state\":\"down\"}";
    tb_sse_format_event(&s->control, NULL, "bus", data, strlen(data));
    if (state == TB_BUS_UP)
        tb__gw_sse_schedule_resync(s); /* events were missed while down: snapshot, then live */
    else
        tb__gw_sse_want_write(s);
}

static void arm_sweep(gw_loop_t *loop, int64_t now, int64_t at_ms);

/* Spreads closing over the drain window so browsers do not come back in one burst. */
static void start_drain(gw_loop_t *loop, int64_t window_ms)
{
    loop->draining = true;
    int64_t now = tb_clock_mono_ms();
    size_t i = 0, n = loop->nsessions;
    for (gw_session_t *s = loop->sessions; s; s = s->loop_next, i++)
        s->close_at_ms = now + (n > 1 ? window_ms * (int64_t)i / (int64_t)(n - 1) : 0);
    arm_sweep(loop, now, now);
}

/* Tells every stream when the bus went down or came back (CONTRACT §3.5). */
static void check_bus_state(gw_loop_t *loop)
{
    int state = tb__gw_bus_state(loop->gw);
    if (state == loop->bus_state)
        return;
    loop->bus_state = state;
    if (state != TB_BUS_DISABLED)
        for_each_session(loop, notify_bus, &state);
}

/* One bus event for this loop: queued to every stream of its topology here. */
static void handle_frame(gw_loop_t *loop, gw_frame_t *frame)
{
    gw_loop_topology_t *t = tb__gw_sse_topic_find(loop, frame->topology);
    if (!t)
        return; /* its last stream here closed since */
    if (frame->seq > t->last_seq)
        t->last_seq = frame->seq;
    gw_loop_frame_t *lf = tb__gw_sse_hold(frame);
    for (gw_session_t *s = t->sessions; s; s = s->topic_next)
        tb__gw_sse_enqueue(s, lf);
    tb__gw_sse_release(lf);
}

void tb__gw_sse_handle_msg(gw_loop_t *loop, const gw_msg_t *m)
{
    switch (m->kind) {
    case GW_MSG_FRAMES:
        for (unsigned i = 0; i < m->nframes; i++)
            handle_frame(loop, m->frames[i]);
        return;
    case GW_MSG_DROPPED:
        /* One bus subscription carries every topology: all streams resync. */
        for_each_session(loop, resync_one, NULL);
        return;
    case GW_MSG_BUS:
        check_bus_state(loop);
        return;
    case GW_MSG_DRAIN:
        start_drain(loop, loop->gw->deps.cfg->drain_s * 1000);
        return;
    case GW_MSG_ADOPT:
    case GW_MSG_JOB:
        return; /* handled by the loop itself (gw_server.c) */
    }
}

void tb__gw_sse_check_overflow(gw_loop_t *loop)
{
    if (atomic_exchange(&loop->overflowed, false))
        for_each_session(loop, resync_one, NULL);
}

/* ---- the watcher: hang-ups and the sweep timer ----------------------------- */

static void mark_dead(gw_loop_t *loop)
{
    struct epoll_event evs[WATCH_BATCH];
    int n;
    do {
        n = epoll_wait(loop->watch_epfd, evs, WATCH_BATCH, 0);
        for (int i = 0; i < n; i++) {
            gw_session_t *s = evs[i].data.ptr;
            s->dead = true;
            tb__gw_sse_request_write(s); /* WRITEABLE returns -1 and lws closes it */
        }
    } while (n == WATCH_BATCH);
}

/* Arms the sweep timer for at_ms (a monotonic time), at least SWEEP_MIN_MS from now. */
static void arm_sweep(gw_loop_t *loop, int64_t now, int64_t at_ms)
{
    if (at_ms < now + SWEEP_MIN_MS)
        at_ms = now + SWEEP_MIN_MS;
    loop->sweep_at_ms = at_ms;
    if (loop->watcher)
        lws_set_timer_usecs(loop->watcher, (lws_usec_t)(at_ms - now) * 1000);
}

void tb__gw_sse_sweep_by(gw_loop_t *loop, int64_t at_ms)
{
    if (at_ms < loop->sweep_at_ms)
        arm_sweep(loop, tb_clock_mono_ms(), at_ms);
}

/*
 * Retries snapshot reads that are due, closes streams whose drain time came,
 * sends the keepalives due now or within the next KEEPALIVE_EARLY_MS, and
 * sleeps until the next of these is due (at most half a keepalive interval,
 * so a stream opened meanwhile is looked at in time).
 */
static void sweep(gw_loop_t *loop)
{
    loop->batching = true;
    check_bus_state(loop);
    int64_t now = tb_clock_mono_ms();
    int64_t keepalive = loop->gw->deps.cfg->keepalive_s * 1000;
    int64_t early = keepalive / 10 < KEEPALIVE_EARLY_MS ? keepalive / 10 : KEEPALIVE_EARLY_MS;
    int64_t next = now + (keepalive / 2 > SWEEP_MIN_MS ? keepalive / 2 : SWEEP_MIN_MS);
    for (gw_session_t *s = loop->sessions; s; s = s->loop_next) {
        /* A snapshot the store could not give (or the pool could not take) is asked again. */
        if (s->phase == GW_SSE_STREAMING && (s->resync || s->holding) && !s->req->job) {
            if (now >= s->snapshot_retry_ms)
                tb__gw_sse_want_snapshot(s);
            else if (s->snapshot_retry_ms < next)
                next = s->snapshot_retry_ms;
        }
        if (loop->draining && s->close_at_ms <= now) {
            s->closing = true;
            tb__gw_sse_request_write(s);
        } else if (s->phase != GW_SSE_STREAMING || s->keepalive_due) {
            continue;
        } else if (now - s->last_write_ms >= keepalive - early) {
            s->keepalive_due = true;
            tb__gw_sse_want_write(s);
        } else if (s->last_write_ms + keepalive < next) {
            /* Woken when the next one is due, the sweep also sends the ones due soon after. */
            next = s->last_write_ms + keepalive;
        }
    }
    loop->batching = false;
    tb__gw_sse_flush(loop);
    arm_sweep(loop, now, loop->draining ? now + DRAIN_SWEEP_MS : next);
}

int tb__gw_sse_watcher_callback(gw_loop_t *loop, struct lws *wsi, int reason)
{
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT_FILE:
        loop->watcher = wsi;
        arm_sweep(loop, tb_clock_mono_ms(), tb_clock_mono_ms() + SWEEP_MIN_MS);
        return 0;
    case LWS_CALLBACK_RAW_RX_FILE:
        mark_dead(loop);
        return 0;
    case LWS_CALLBACK_TIMER:
        sweep(loop);
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        loop->watcher = NULL;
        return 0;
    default:
        return 0;
    }
}

tb_status tb__gw_sse_loop_init(gw_loop_t *loop)
{
    loop->topics = tb_xcalloc(GW_SSE_TOPIC_BUCKETS, sizeof *loop->topics);
    loop->write_buf = tb_xmalloc(LWS_PRE + GW_SSE_WRITE_BUDGET);
    loop->bus_state = tb__gw_bus_state(loop->gw);
    loop->watch_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->watch_epfd < 0)
        return TB_EIO;
    lws_sock_file_fd_type desc;
    desc.filefd = loop->watch_epfd;
    /* From here lws owns the epoll fd and closes it with the context. */
    if (!lws_adopt_descriptor_vhost(loop->vhost, LWS_ADOPT_RAW_FILE_DESC, desc, "tb-http", NULL)) {
        close(loop->watch_epfd); /* lws closes only sockets when adoption fails */
        loop->watch_epfd = -1;
        return TB_EIO;
    }
    return TB_OK;
}

void tb__gw_sse_loop_cleanup(gw_loop_t *loop)
{
    /* The context is destroyed: every session was closed through CLOSED_HTTP. */
    TB_ASSERT(loop->sessions == NULL);
    free(loop->topics);
    free(loop->write_buf);
    loop->topics = NULL;
    loop->write_buf = NULL;
}
