/*
 * What concerns all streams of a loop: bus events and drop notices from the
 * inbox, the bus state, a full inbox, the drain at shutdown, and the loop's
 * watcher: an epoll fd adopted into lws as a raw file, which reports hang-ups
 * (lws 4.1.6 would spin on them) and carries the one sweep timer that sends
 * keepalives, polls the bus state and retries failed snapshot reads.
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

enum { WATCH_BATCH = 64, SWEEP_MAX_MS = 1000, DRAIN_SWEEP_MS = 50 };

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
        tb__gw_sse_request_write(s);
}

/* Spreads closing over the drain window so browsers do not come back in one burst. */
static void start_drain(gw_loop_t *loop, int64_t window_ms)
{
    loop->draining = true;
    int64_t now = tb_clock_mono_ms();
    size_t i = 0, n = loop->nsessions;
    for (gw_session_t *s = loop->sessions; s; s = s->loop_next, i++)
        s->close_at_ms = now + (n > 1 ? window_ms * (int64_t)i / (int64_t)(n - 1) : 0);
    lws_set_timer_usecs(loop->watcher, 1000);
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

static int64_t sweep_interval_ms(const gw_loop_t *loop)
{
    int64_t keepalive = loop->gw->deps.cfg->keepalive_s * 1000;
    int64_t ms = keepalive / 4;
    if (loop->draining)
        return DRAIN_SWEEP_MS;
    return ms < SWEEP_MAX_MS ? (ms > 0 ? ms : 1) : SWEEP_MAX_MS;
}

/*
 * The bus state is polled here rather than pushed: one atomic read per tick
 * per loop, no callback wiring, and a notice reaches streams within a tick.
 */
static void check_bus_state(gw_loop_t *loop)
{
    int state = tb__gw_bus_state(loop->gw);
    if (state == loop->bus_state)
        return;
    loop->bus_state = state;
    if (state != TB_BUS_DISABLED)
        for_each_session(loop, notify_bus, &state);
}

static void sweep(gw_loop_t *loop)
{
    check_bus_state(loop);
    int64_t now = tb_clock_mono_ms();
    int64_t keepalive = loop->gw->deps.cfg->keepalive_s * 1000;
    for (gw_session_t *s = loop->sessions; s; s = s->loop_next) {
        /* A snapshot the store could not give (or the pool could not take) is asked again. */
        if (s->phase == GW_SSE_STREAMING && (s->resync || s->holding) && !s->req->job &&
            now >= s->snapshot_retry_ms)
            tb__gw_sse_want_snapshot(s);
        if (loop->draining && s->close_at_ms <= now) {
            s->closing = true;
            tb__gw_sse_request_write(s);
        } else if (now - s->last_write_ms >= keepalive && !s->keepalive_due) {
            s->keepalive_due = true;
            tb__gw_sse_request_write(s);
        }
    }
    lws_set_timer_usecs(loop->watcher, sweep_interval_ms(loop) * 1000);
}

int tb__gw_sse_watcher_callback(gw_loop_t *loop, struct lws *wsi, int reason)
{
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT_FILE:
        loop->watcher = wsi;
        lws_set_timer_usecs(wsi, sweep_interval_ms(loop) * 1000);
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
