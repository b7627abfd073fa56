/*
 * SSE sessions (see gw_sse.h and gw_sse_int.h): opening, the bounded queue
 * of shared frames, coalesced writes and closing. A session belongs to one
 * loop and is touched only there. Reads that may block (the snapshot, a
 * JetStream replay) run on a worker (gw_sse_snapshot.c); until the opening
 * read answers, the session already receives events, which wait in its
 * queue: that is subscribe-before-snapshot.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gw_auth_http.h"
#include "gw_fanout.h"
#include "gw_sse_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"
#include "tb/random.h"
#include "tb/sse.h"

/* ---- topologies ---------------------------------------------------------- */

static size_t topic_bucket(const char *id)
{
    size_t h = 14695981039346656037u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    return h % GW_SSE_TOPIC_BUCKETS;
}

gw_loop_topology_t *tb__gw_sse_topic_find(gw_loop_t *loop, const char *id)
{
    gw_loop_topology_t *t = loop->topics[topic_bucket(id)];
    while (t && strcmp(t->id, id) != 0)
        t = t->next;
    return t;
}

static gw_loop_topology_t *topic_get(gw_loop_t *loop, const char *id)
{
    gw_loop_topology_t *t = tb__gw_sse_topic_find(loop, id);
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
void tb__gw_sse_request_write(gw_session_t *s)
{
    if (s->write_requested)
        return;
    s->write_requested = true;
    lws_callback_on_writable(s->req->wsi);
}

/*
 * A stream has something to write: during an inbox pass or a sweep it is
 * written once the pass ends (tb__gw_sse_flush), with everything the pass
 * queued for it; outside one, on WRITEABLE.
 */
void tb__gw_sse_want_write(gw_session_t *s)
{
    gw_loop_t *loop = s->loop;
    if (!loop->batching) {
        tb__gw_sse_request_write(s);
        return;
    }
    if (!s->dirty) {
        s->dirty = true;
        s->dirty_next = loop->dirty;
        loop->dirty = s;
    }
}

static void forget_dirty(gw_session_t *s)
{
    if (!s->dirty)
        return;
    gw_session_t **link = &s->loop->dirty;
    while (*link != s)
        link = &(*link)->dirty_next;
    *link = s->dirty_next;
    s->dirty = false;
}

/* The loop's gauge has one writer (this thread): a plain relaxed store, no locked add. */
static void loop_add_queued(gw_loop_t *loop, int64_t delta)
{
    int64_t now = atomic_load_explicit(&loop->queued_bytes, memory_order_relaxed);
    atomic_store_explicit(&loop->queued_bytes, now + delta, memory_order_relaxed);
}

gw_loop_frame_t *tb__gw_sse_hold(gw_frame_t *f)
{
    gw_loop_frame_t *lf = tb_xmalloc(sizeof *lf);
    lf->frame = gw_frame_ref(f);
    lf->uses = 1;
    return lf;
}

void tb__gw_sse_release(gw_loop_frame_t *lf)
{
    if (--lf->uses == 0) {
        gw_frame_unref(lf->frame);
        free(lf);
    }
}

void tb__gw_sse_queue_clear(gw_session_t *s)
{
    for (uint32_t i = 0; i < s->count; i++)
        tb__gw_sse_release(s->ring[(s->head + i) % s->cap]);
    loop_add_queued(s->loop, -(int64_t)s->queued_bytes);
    s->head = s->count = 0;
    s->queued_bytes = 0;
}

void tb__gw_sse_schedule_resync(gw_session_t *s)
{
    tb__gw_sse_queue_clear(s);
    s->version = TB_CURSOR_NO_VERSION; /* the coming snapshot says */
    if (!s->resync)
        atomic_fetch_add(&s->loop->gw->counters.sse_resyncs, 1);
    s->resync = true;
    /* While opening, the opening read itself is re-run when it answers. */
    if (s->phase == GW_SSE_STREAMING)
        tb__gw_sse_want_snapshot(s);
}

void tb__gw_sse_version_gap(gw_session_t *s)
{
    atomic_fetch_add(&s->loop->gw->counters.sse_version_gaps, 1);
    tb__gw_sse_schedule_resync(s);
}

/*
 * Queues lf for s. With check, the frame must continue the version the
 * client reached (gw_frame_continues): a version it would never get means a
 * lost event, and the view resyncs instead of passing over the gap.
 */
static void enqueue(gw_session_t *s, gw_loop_frame_t *lf, bool check)
{
    const gw_frame_t *f = lf->frame;
    if (f->seq && f->seq <= s->min_seq)
        return; /* already sent by a replay */
    if (s->resync)
        return; /* the coming snapshot covers it */
    if (check && !gw_frame_continues(f, &s->version)) {
        tb__gw_sse_version_gap(s);
        return;
    }
    if (s->count == GW_SSE_QUEUE_FRAMES || s->queued_bytes + f->len > GW_SSE_QUEUE_BYTES) {
        tb__gw_sse_schedule_resync(s);
        return;
    }
    if (s->count == s->cap) {
        /* Grow the ring lazily: most streams never hold more than a few frames. */
        uint32_t cap = s->cap ? s->cap * 2 : 4;
        gw_loop_frame_t **ring = tb_xmalloc(cap * sizeof *ring);
        for (uint32_t i = 0; i < s->count; i++)
            ring[i] = s->ring[(s->head + i) % s->cap];
        free(s->ring);
        s->ring = ring;
        s->cap = cap;
        s->head = 0;
    }
    lf->uses++;
    s->ring[(s->head + s->count) % s->cap] = lf;
    s->count++;
    s->queued_bytes += f->len;
    loop_add_queued(s->loop, (int64_t)f->len);
    atomic_store_explicit(&s->loop->frames_queued,
                          atomic_load_explicit(&s->loop->frames_queued, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (s->phase == GW_SSE_STREAMING && !s->holding)
        tb__gw_sse_want_write(s);
}

void tb__gw_sse_enqueue(gw_session_t *s, gw_loop_frame_t *lf)
{
    /* While the opening read or a resync snapshot is on its way, frames wait unchecked:
     * the snapshot or replay that lands in front of them checks them then. */
    enqueue(s, lf, s->phase != GW_SSE_OPENING && !s->holding);
}

void tb__gw_sse_enqueue_checked(gw_session_t *s, gw_loop_frame_t *lf)
{
    enqueue(s, lf, true);
}

void tb__gw_sse_error_close(gw_session_t *s)
{
    static const char msg[] = "{\"message\":\"Stream interrupted\"}";
    tb_sse_format_event(&s->control, NULL, "error", msg, sizeof msg - 1);
    s->close_after_write = true;
    s->holding = false;
    tb__gw_sse_queue_clear(s);
    tb__gw_sse_request_write(s);
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

void tb__gw_sse_session_free(gw_session_t *s)
{
    tb_gateway_t *gw = s->loop->gw;
    forget_dirty(s);
    unlink_session(s);
    gw_fanout_release(gw->fanout, s->loop->index, s->topic->id);
    topic_put(s->loop, s->topic);
    gw_users_release(gw->users, s->slot);
    tb__gw_sse_queue_clear(s);
    free(s->ring);
    tb_buf_cleanup(&s->control);
    free(s);
}

void tb__gw_sse_refuse(gw_session_t *s, int status, const char *code, const char *message)
{
    gw_request_t *req = s->req;
    req->sse = NULL;
    tb__gw_sse_session_free(s);
    tb__gw_reply_error(req, status, code, message);
    tb__gw_respond(req);
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
        tb__gw_sse_answer_capped(req);
        return;
    }
    gw_session_t *s = tb_xcalloc(1, sizeof *s);
    s->req = req;
    s->loop = req->loop;
    s->slot = slot;
    s->fd = -1;
    s->version = TB_CURSOR_NO_VERSION; /* until the opening read says */
    s->phase = GW_SSE_OPENING;
    tb_buf_init(&s->control);
    s->topic = topic_get(s->loop, req->topology_id);
    link_session(s);
    /* Interest first; the opening read subscribes before it reads, so what arrives
     * meanwhile waits in the queue (or the inbox). */
    gw_fanout_acquire(gw->fanout, s->loop->index, req->topology_id);
    tb_buf_appendf(&s->control, "retry: %u\n\n: keepalive\n\n",
                   (unsigned)tb_random_range(2000, 5000));
    req->sse = s;
    req->status = 200;
    tb_cursor_t cursor;
    bool resume = read_resume_cursor(req, &cursor);
    tb__gw_sse_open_read(s, resume, &cursor);
}

/* Sends the stream's headers; from here it is a stream (lws detaches the header table). */
static int send_headers(gw_session_t *s)
{
    gw_request_t *req = s->req;
    /* The retry line and whatever follows it (snapshot, replay) share the headers' write. */
    size_t before = s->control.len;
    if (tb__gw_write_headers(req, "no-cache, no-transform", LWS_ILLEGAL_HTTP_CONTENT_LEN,
                             &s->control))
        return -1;
    s->bytes_sent += before - s->control.len;
    if (s->control.len == 0)
        tb_buf_cleanup(&s->control); /* a snapshot's worth of capacity is not kept idle */
    lws_http_mark_sse(req->wsi);
    tb__gw_request_shed(req);
    s->phase = GW_SSE_STREAMING;
    s->fd = lws_get_socket_fd(req->wsi);
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = s};
    /* lws 4.1.6 never reads a stream's socket, so a FIN would spin its loop (NOTES-libs §1). */
    if (epoll_ctl(s->loop->watch_epfd, EPOLL_CTL_ADD, s->fd, &ev) != 0)
        tb_log(TB_LOG_WARN, "sse", "cannot watch stream fd %d for hang-ups", s->fd);
    s->last_write_ms = tb_clock_mono_ms();
    atomic_fetch_add(&s->loop->gw->counters.sse_open, 1);
    atomic_fetch_add(&s->loop->gw->counters.sse_opened, 1);
    return 0;
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
    while (s->count > 0 && !s->holding) {
        gw_loop_frame_t *lf = s->ring[s->head];
        const gw_frame_t *f = lf->frame;
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
        tb__gw_sse_release(lf);
        if (s->control.len > 0)
            break;
    }
    return n;
}

/*
 * Writes control text and queued frames, up to one write budget, and asks for
 * WRITEABLE if more remains. -1 if the socket failed.
 */
static int write_queued(gw_session_t *s, int64_t now_ms)
{
    char *buf = s->loop->write_buf + LWS_PRE;
    size_t n = fill(s, buf, GW_SSE_WRITE_BUDGET);
    if (n > 0) {
        if (lws_write(s->req->wsi, (unsigned char *)buf, n, LWS_WRITE_HTTP) < (int)n)
            return -1;
        s->bytes_sent += n;
        s->last_write_ms = now_ms;
    }
    if (s->control.len > 0 || (s->count > 0 && !s->holding))
        tb__gw_sse_request_write(s);
    return 0;
}

/* A keepalive that fell due goes out only if nothing else does. */
static void add_keepalive(gw_session_t *s)
{
    if (s->keepalive_due && s->control.len == 0 && (s->count == 0 || s->holding))
        tb_sse_format_comment(&s->control, "keepalive");
    s->keepalive_due = false;
}

/* Sends what s has, its headers first if they have not gone yet. -1 if the socket failed. */
static int write_now(gw_session_t *s, int64_t now_ms)
{
    if (s->phase == GW_SSE_HEADERS && send_headers(s) < 0)
        return -1;
    add_keepalive(s);
    return write_queued(s, now_ms);
}

int tb__gw_sse_writeable(gw_request_t *req)
{
    gw_session_t *s = req->sse;
    s->write_requested = false;
    if (s->dead || s->closing)
        return -1;
    if (s->phase == GW_SSE_OPENING)
        return 0; /* nothing goes out before the opening read answered */
    if (write_now(s, tb_clock_mono_ms()) < 0)
        return -1;
    if (s->control.len == 0 && (s->count == 0 || s->holding) && s->close_after_write)
        return -1;
    return 0;
}

void tb__gw_sse_flush(gw_loop_t *loop)
{
    int64_t now = tb_clock_mono_ms();
    gw_session_t *s = loop->dirty;
    loop->dirty = NULL;
    while (s) {
        gw_session_t *next = s->dirty_next;
        s->dirty = false;
        s->dirty_next = NULL;
        struct lws *wsi = s->req->wsi;
        if (s->phase == GW_SSE_OPENING) {
            /* Nothing goes out before the opening read answered. */
        } else if (s->dead || s->closing || s->close_after_write) {
            tb__gw_sse_request_write(s); /* WRITEABLE closes it, or finishes it first */
        } else if (lws_partial_buffered(wsi)) {
            tb__gw_sse_request_write(s); /* lws sends its own backlog first */
        } else if (write_now(s, now) < 0) {
            /* Outside its own callback a stream cannot be closed by returning -1. */
            s->dead = true;
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        }
        s = next;
    }
}

void tb__gw_sse_closed(gw_request_t *req)
{
    gw_session_t *s = req->sse;
    gw_loop_t *loop = s->loop;
    if (s->phase == GW_SSE_STREAMING) {
        if (s->fd >= 0)
            epoll_ctl(loop->watch_epfd, EPOLL_CTL_DEL, s->fd, NULL);
        atomic_fetch_sub(&loop->gw->counters.sse_open, 1);
    }
    tb__gw_access_log(req, s->bytes_sent, s->dead ? " (stream closed by client)" : " (stream)");
    tb__gw_sse_session_free(s);
    req->sse = NULL;
    tb__gw_request_finish(req);
}
