/*
 * SSE streams; see gw_sse.h. A session belongs to one loop and is touched
 * only there. It holds references to shared frames in a bounded ring; a
 * `control` buffer carries what must precede them (retry and first
 * keepalive, snapshots, bus notices). Writes coalesce control text and
 * queued frames into one lws_write of at most GW_SSE_WRITE_BUDGET bytes.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gw_auth_http.h"
#include "gw_fanout.h"
#include "gw_sse.h"
#include "gw_users.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/clock.h"
#include "tb/cursor.h"
#include "tb/log.h"
#include "tb/random.h"
#include "tb/sse.h"
#include "tb/store.h"

enum { TOPIC_BUCKETS = 1024, WATCH_BATCH = 64, SWEEP_MAX_MS = 1000, DRAIN_SWEEP_MS = 50 };

typedef struct gw_loop_topology {
    struct gw_loop_topology *next;
    struct gw_session *sessions;
    uint64_t last_seq; /* newest event of this topology seen by this loop */
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
} gw_loop_topology_t;

typedef struct gw_session {
    gw_request_t *req;
    gw_loop_t *loop;
    gw_loop_topology_t *topic;
    struct gw_session *topic_prev, *topic_next;
    struct gw_session *loop_prev, *loop_next;
    gw_user_slot_t *slot;
    gw_frame_t **ring;
    uint32_t head, count, cap;
    size_t queued_bytes;
    tb_buf_t control;
    uint64_t min_seq; /* live frames at or below this were replayed already */
    size_t bytes_sent;
    int64_t last_write_ms;
    int64_t close_at_ms; /* drain: when this stream is closed; 0 = not scheduled */
    int fd;
    bool resync, keepalive_due, dead, closing, close_after_write, write_requested;
} gw_session_t;

/* ---- frames and lookup ------------------------------------------------ */

gw_frame_t *tb__gw_sse_format_frame(uint64_t epoch, const tb_event_t *ev)
{
    char cursor[TB_CURSOR_BUF_SIZE];
    tb_cursor_format(&(tb_cursor_t){epoch, ev->seq}, cursor);
    tb_buf_t data, frame;
    tb_buf_init(&data);
    tb_buf_init(&frame);
    tb_sse_event_data(&data, ev);
    gw_frame_t *f = NULL;
    if (tb_sse_format_event(&frame, cursor, tb_sse_event_name(ev->topic), data.data, data.len) ==
        TB_OK)
        f = gw_frame_new(frame.data, frame.len, ev->seq);
    tb_buf_cleanup(&data);
    tb_buf_cleanup(&frame);
    return f;
}

static size_t topic_bucket(const char *id)
{
    size_t h = 14695981039346656037u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    return h % TOPIC_BUCKETS;
}

static gw_loop_topology_t *topic_find(gw_loop_t *loop, const char *id)
{
    gw_loop_topology_t *t = loop->topics[topic_bucket(id)];
    while (t && strcmp(t->id, id) != 0)
        t = t->next;
    return t;
}

static gw_loop_topology_t *topic_get(gw_loop_t *loop, const char *id)
{
    gw_loop_topology_t *t = topic_find(loop, id);
    if (!t) {
        t = tb_xcalloc(1, sizeof *t);
        strcpy(t->id, id);
        size_t b = topic_bucket(id);
        t->next = loop->topics[b];
        loop->topics[b] = t;
    }
    return t;
}

static void topic_put(gw_loop_t *loop, gw_loop_topology_t *t)
{
    if (t->sessions)
        return;
    gw_loop_topology_t **link = &loop->topics[topic_bucket(t->id)];
    while (*link != t)
        link = &(*link)->next;
    *link = t->next;
    free(t);
}

/* ---- the queue ----------------------------------------------------------- */

/* Asks lws for WRITEABLE once per pending write, not once per queued event. */
static void request_write(gw_session_t *s)
{
    if (s->write_requested)
        return;
    s->write_requested = true;
    lws_callback_on_writable(s->req->wsi);
}

/* The loop's gauge has one writer (this thread): a plain relaxed store, no locked add. */
static void loop_add_queued(gw_loop_t *loop, int64_t delta)
{
    int64_t now = atomic_load_explicit(&loop->queued_bytes, memory_order_relaxed);
    atomic_store_explicit(&loop->queued_bytes, now + delta, memory_order_relaxed);
}

static void queue_clear(gw_session_t *s)
{
    for (uint32_t i = 0; i < s->count; i++)
        gw_frame_unref(s->ring[(s->head + i) % s->cap]);
    loop_add_queued(s->loop, -(int64_t)s->queued_bytes);
    s->head = s->count = 0;
    s->queued_bytes = 0;
}

/* Drops the backlog and sends a fresh snapshot instead (CONTRACT §3.6). */
static void schedule_resync(gw_session_t *s)
{
    queue_clear(s);
    if (!s->resync)
        atomic_fetch_add(&s->loop->gw->counters.sse_resyncs, 1);
    s->resync = true;
    request_write(s);
}

static void enqueue(gw_session_t *s, gw_frame_t *f)
{
    if (f->seq && f->seq <= s->min_seq)
        return; /* already sent by a replay */
    if (s->resync)
        return; /* the coming snapshot covers it */
    if (s->count == GW_SSE_QUEUE_FRAMES || s->queued_bytes + f->len > GW_SSE_QUEUE_BYTES) {
        schedule_resync(s);
        return;
    }
    if (s->count == s->cap) {
        /* Grow the ring lazily: most streams never hold more than a few frames. */
        uint32_t cap = s->cap ? s->cap * 2 : 4;
        gw_frame_t **ring = tb_xmalloc(cap * sizeof *ring);
        for (uint32_t i = 0; i < s->count; i++)
            ring[i] = s->ring[(s->head + i) % s->cap];
        free(s->ring);
        s->ring = ring;
        s->cap = cap;
        s->head = 0;
    }
    s->ring[(s->head + s->count) % s->cap] = gw_frame_ref(f);
    s->count++;
    s->queued_bytes += f->len;
    loop_add_queued(s->loop, (int64_t)f->len);
    atomic_store_explicit(&s->loop->frames_queued,
                          atomic_load_explicit(&s->loop->frames_queued, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    request_write(s);
}

/* ---- snapshots ----------------------------------------------------------- */

/*
 * Appends `event: snapshot` to the control buffer. The cursor names the last
 * event this loop saw for the topology, so a resume from it replays what
 * came after. TB_ENOTFOUND if the topology is gone, TB_EBACKEND if the store
 * failed.
 */
static tb_status append_snapshot(gw_session_t *s)
{
    tb_gateway_t *gw = s->loop->gw;
    json_t *snap = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_snapshot(gw->deps.store, s->topic->id, &snap, &err);
    if (st)
        return st == TB_ENOTFOUND ? TB_ENOTFOUND : TB_EBACKEND;
    json_object_set_new(snap, "bus",
                        json_string(tb_bus_state_str((tb_bus_state_t)s->loop->bus_state)));
    char *text = json_dumps(snap, JSON_COMPACT);
    char cursor[TB_CURSOR_BUF_SIZE];
    tb_cursor_format(&(tb_cursor_t){tb__gw_bus_epoch(gw), s->topic->last_seq}, cursor);
    tb_sse_format_event(&s->control, cursor, "snapshot", text, strlen(text));
    free(text);
    json_decref(snap);
    return TB_OK;
}

static void append_error_and_close(gw_session_t *s)
{
    static const char msg[] = "{\"message\":\"Stream interrupted\"}";
    tb_sse_format_event(&s->control, NULL, "error", msg, sizeof msg - 1);
    s->close_after_write = true;
    request_write(s);
}

/* ---- opening ------------------------------------------------------------- */

static void link_session(gw_session_t *s)
{
    gw_loop_t *loop = s->loop;
    s->topic_next = s->topic->sessions;
    if (s->topic_next)
        s->topic_next->topic_prev = s;
    s->topic->sessions = s;
    s->loop_next = loop->sessions;
    if (s->loop_next)
        s->loop_next->loop_prev = s;
    loop->sessions = s;
    loop->nsessions++;
}

static void unlink_session(gw_session_t *s)
{
    gw_loop_t *loop = s->loop;
    if (s->topic_prev)
        s->topic_prev->topic_next = s->topic_next;
    else
        s->topic->sessions = s->topic_next;
    if (s->topic_next)
        s->topic_next->topic_prev = s->topic_prev;
    if (s->loop_prev)
        s->loop_prev->loop_next = s->loop_next;
    else
        loop->sessions = s->loop_next;
    if (s->loop_next)
        s->loop_next->loop_prev = s->loop_prev;
    loop->nsessions--;
}

/* Frees a session that never became a stream (no headers sent yet). */
static void session_abandon(gw_session_t *s)
{
    tb_gateway_t *gw = s->loop->gw;
    unlink_session(s);
    gw_fanout_release(gw->fanout, s->loop->index, s->topic->id);
    topic_put(s->loop, s->topic);
    gw_users_release(gw->users, s->slot);
    queue_clear(s);
    free(s->ring);
    tb_buf_cleanup(&s->control);
    free(s);
}

static void on_replayed(tb_event_t *ev, void *ud)
{
    gw_session_t *s = ud;
    gw_frame_t *f = tb__gw_sse_format_frame(tb__gw_bus_epoch(s->loop->gw), ev);
    if (!f)
        return;
    enqueue(s, f);
    if (ev->seq > s->min_seq && !s->resync)
        s->min_seq = ev->seq;
    gw_frame_unref(f);
}

/* Reads Last-Event-ID (header, or ?last_event_id=) as a cursor; false if absent or garbage. */
static bool read_resume_cursor(gw_request_t *req, tb_cursor_t *out)
{
    char text[64];
    int n = lws_hdr_custom_copy(req->wsi, text, sizeof text, "last-event-id:", 14);
    if (n <= 0) {
        if (!tb__gw_query(req, "last_event_id", text, sizeof text))
            return false;
        n = (int)strlen(text);
    }
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--; /* lws keeps trailing spaces (NOTES-libs §1) */
    return tb_cursor_parse(text, (size_t)n, out) == TB_OK;
}

/*
 * Resume (CONTRACT §3): replays what followed the cursor if the bus still has
 * all of it; otherwise the caller sends a snapshot. Replay runs after the
 * subscription exists, so nothing falls between it and the live tail.
 */
static bool try_resume(gw_session_t *s, const tb_cursor_t *cursor)
{
    tb_gateway_t *gw = s->loop->gw;
    tb_bus_t *bus = tb__gw_bus(gw);
    if (!bus || cursor->epoch != tb__gw_bus_epoch(gw))
        return false;
    char pattern[TB_TOPIC_BUF_SIZE];
    tb_topic_build_topology_pattern(pattern, s->topic->id);
    s->min_seq = cursor->seq;
    if (tb_bus_replay(bus, pattern, cursor, on_replayed, s) != TB_OK) {
        queue_clear(s);
        s->min_seq = 0;
        return false;
    }
    return !s->resync;
}

/* A capped user gets 429, unless the topology does not exist: 404 comes first. */
static void reply_capped(gw_request_t *req)
{
    json_t *snap = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_snapshot(req->gw->deps.store, req->topology_id, &snap, &err);
    json_decref(snap);
    if (st == TB_ENOTFOUND) {
        tb__gw_reply_error(req, 404, "not_found", "no such topology");
        return;
    }
    atomic_fetch_add(&req->gw->counters.sse_rejected_cap, 1);
    tb__gw_add_header(req, "retry-after:", "5");
    tb__gw_reply_error(req, 429, "too_many_streams", "this user holds the maximum of open streams");
}

static int start_stream(gw_session_t *s)
{
    gw_request_t *req = s->req;
    if (tb__gw_write_headers(req, "no-cache, no-transform", LWS_ILLEGAL_HTTP_CONTENT_LEN))
        return -1;
    /* After this the header table is gone: everything needed was read above. */
    lws_http_mark_sse(req->wsi);
    tb__gw_request_shed(req);
    s->fd = lws_get_socket_fd(req->wsi);
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = s};
    /* lws 4.1.6 never reads a stream's socket, so a FIN would spin its loop (NOTES-libs §1). */
    if (epoll_ctl(s->loop->watch_epfd, EPOLL_CTL_ADD, s->fd, &ev) != 0)
        tb_log(TB_LOG_WARN, "sse", "cannot watch stream fd %d for hang-ups", s->fd);
    s->last_write_ms = tb_clock_mono_ms();
    atomic_fetch_add(&s->loop->gw->counters.sse_open, 1);
    atomic_fetch_add(&s->loop->gw->counters.sse_opened, 1);
    request_write(s);
    return 0;
}

void tb__gw_sse_open(gw_request_t *req)
{
    tb_gateway_t *gw = req->gw;
    tb_principal_t p;
    if (!tb__gw_authenticate(req, TB_ROLE_VIEWER, true, &p))
        return;
    if (!req->topology_id_valid) {
        tb__gw_reply_error(req, 404, "not_found", "no such topology");
        return;
    }
    gw_user_slot_t *slot = gw_users_acquire(gw->users, p.sub, gw->deps.cfg->sse_max_per_user);
    if (!slot) {
        reply_capped(req);
        return;
    }
    gw_session_t *s = tb_xcalloc(1, sizeof *s);
    s->req = req;
    s->loop = req->loop;
    s->slot = slot;
    s->fd = -1;
    tb_buf_init(&s->control);
    s->topic = topic_get(s->loop, req->topology_id);
    link_session(s);
    /* Subscribe before reading the snapshot: what arrives meanwhile waits in the inbox. */
    if (gw_fanout_acquire(gw->fanout, s->loop->index, req->topology_id)) {
        unlink_session(s);
        topic_put(s->loop, s->topic);
        gw_users_release(gw->users, slot);
        tb_buf_cleanup(&s->control);
        free(s);
        tb__gw_reply_error(req, 503, "bus_unavailable", "cannot subscribe to the topology");
        return;
    }
    tb_buf_appendf(&s->control, "retry: %u\n\n: keepalive\n\n",
                   (unsigned)tb_random_range(2000, 5000));
    tb_cursor_t cursor;
    bool resumed = read_resume_cursor(req, &cursor) && try_resume(s, &cursor);
    if (!resumed) {
        tb_status st = append_snapshot(s);
        if (st) {
            session_abandon(s);
            if (st == TB_ENOTFOUND)
                tb__gw_reply_error(req, 404, "not_found", "no such topology");
            else
                tb__gw_reply_error(req, 503, "store_unavailable", "cannot read the topology");
            return;
        }
    }
    req->sse = s;
    req->status = 200;
    req->sse_result = start_stream(s);
}

/* ---- writing ------------------------------------------------------------- */

/* Copies up to `room` bytes of control text and whole frames into out; returns bytes. */
static size_t fill(gw_session_t *s, char *out, size_t room)
{
    size_t n = 0;
    if (s->control.len > 0) {
        n = s->control.len < room ? s->control.len : room;
        memcpy(out, s->control.data, n);
        memmove(s->control.data, s->control.data + n, s->control.len - n);
        tb_buf_truncate(&s->control, s->control.len - n);
        if (s->control.len > 0)
            return n;
        tb_buf_cleanup(&s->control); /* a snapshot's worth of capacity is not kept idle */
    }
    while (s->count > 0) {
        gw_frame_t *f = s->ring[s->head];
        if (n + f->len > room && n > 0)
            break;
        if (f->len > room) {
            /* A frame larger than one write goes through the control buffer in pieces. */
            tb_buf_append(&s->control, f->data, f->len);
        } else {
            memcpy(out + n, f->data, f->len);
            n += f->len;
        }
        s->head = (s->head + 1) % s->cap;
        s->count--;
        s->queued_bytes -= f->len;
        loop_add_queued(s->loop, -(int64_t)f->len);
        gw_frame_unref(f);
        if (s->control.len > 0)
            break;
    }
    return n;
}

int tb__gw_sse_writeable(gw_request_t *req)
{
    gw_session_t *s = req->sse;
    s->write_requested = false;
    if (s->dead || s->closing)
        return -1;
    if (s->resync) {
        s->resync = false;
        queue_clear(s);
        if (append_snapshot(s) != TB_OK)
            append_error_and_close(s);
    }
    if (s->keepalive_due && s->control.len == 0 && s->count == 0)
        tb_sse_format_comment(&s->control, "keepalive");
    s->keepalive_due = false;
    char *buf = s->loop->write_buf + LWS_PRE;
    size_t n = fill(s, buf, GW_SSE_WRITE_BUDGET);
    if (n > 0) {
        if (lws_write(req->wsi, (unsigned char *)buf, n, LWS_WRITE_HTTP) < (int)n)
            return -1;
        s->bytes_sent += n;
        s->last_write_ms = tb_clock_mono_ms();
    }
    if (s->control.len > 0 || s->count > 0)
        request_write(s);
    else if (s->close_after_write)
        return -1;
    return 0;
}

void tb__gw_sse_closed(gw_request_t *req)
{
    gw_session_t *s = req->sse;
    gw_loop_t *loop = s->loop;
    if (s->fd >= 0)
        epoll_ctl(loop->watch_epfd, EPOLL_CTL_DEL, s->fd, NULL);
    atomic_fetch_sub(&loop->gw->counters.sse_open, 1);
    tb__gw_access_log(req, s->bytes_sent, s->dead ? " (stream closed by client)" : " (stream)");
    session_abandon(s);
    req->sse = NULL;
    tb__gw_request_finish(req);
}

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
    schedule_resync(s);
}

static void notify_bus(gw_session_t *s, const void *arg)
{
    int state = *(const int *)arg;
    const char *data = state == TB_BUS_UP ? "{\"state\":\"up\"}" : "{\"state\":\"down\"}";
    tb_sse_format_event(&s->control, NULL, "bus", data, strlen(data));
    if (state == TB_BUS_UP)
        schedule_resync(s); /* events were missed while down: snapshot, then live */
    else
        request_write(s);
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

void tb__gw_sse_handle_msg(gw_loop_t *loop, const gw_msg_t *m)
{
    switch (m->kind) {
    case GW_MSG_EVENT: {
        gw_loop_topology_t *t = topic_find(loop, m->topology);
        if (!t)
            return;
        if (m->frame->seq > t->last_seq)
            t->last_seq = m->frame->seq;
        for (gw_session_t *s = t->sessions; s; s = s->topic_next)
            enqueue(s, m->frame);
        return;
    }
    case GW_MSG_DROPPED: {
        gw_loop_topology_t *t = topic_find(loop, m->topology);
        for (gw_session_t *s = t ? t->sessions : NULL; s; s = s->topic_next)
            schedule_resync(s);
        return;
    }
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
            request_write(s); /* WRITEABLE returns -1 and lws closes it */
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
        if (loop->draining && s->close_at_ms <= now) {
            s->closing = true;
            request_write(s);
        } else if (now - s->last_write_ms >= keepalive && !s->keepalive_due) {
            s->keepalive_due = true;
            request_write(s);
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
    loop->topics = tb_xcalloc(TOPIC_BUCKETS, sizeof *loop->topics);
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
