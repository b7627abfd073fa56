/*
 * Inside the SSE streams: the session and per-loop topology structs and the
 * functions gw_sse.c (sessions, queues, writing), gw_sse_snapshot.c
 * (snapshot and resume reads on a worker) and gw_sse_loop.c (loop-wide
 * events, the watcher and the sweep) share. Loop thread only, except where
 * a job's worker side is named.
 */
#ifndef TB_GW_SSE_INT_H
#define TB_GW_SSE_INT_H

#include "gw_sse.h"
#include "gw_users.h"
#include "tb/cursor.h"

#define GW_SSE_TOPIC_BUCKETS 1024 /* per loop: topology id -> its streams */

typedef struct gw_loop_topology {
    struct gw_loop_topology *next;
    struct gw_session *sessions;
    uint64_t last_seq; /* newest event of this topology seen by this loop */
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
} gw_loop_topology_t;

/*
 * One loop's hold on a shared frame. The frame's own count is atomic because
 * loops on several threads share it; the streams of one loop count their
 * uses here instead, without atomics, so a delivery does not bounce the
 * frame's cache line between cores. The holder keeps one frame reference.
 */
typedef struct gw_loop_frame {
    gw_frame_t *frame;
    uint32_t uses;
} gw_loop_frame_t;

typedef enum gw_phase {
    GW_SSE_OPENING,   /* the opening read (snapshot or replay) is on a worker */
    GW_SSE_HEADERS,   /* opened: the next WRITEABLE sends the headers */
    GW_SSE_STREAMING, /* headers sent */
} gw_phase;

typedef struct gw_session {
    gw_request_t *req;
    gw_loop_t *loop;
    gw_loop_topology_t *topic;
    struct gw_session *topic_prev, *topic_next;
    struct gw_session *loop_prev, *loop_next;
    gw_user_slot_t *slot;
    gw_loop_frame_t **ring;
    uint32_t head, count, cap;
    size_t queued_bytes;
    tb_buf_t control; /* text that goes before queued frames: retry, snapshots, notices */
    uint64_t min_seq; /* live frames at or below this were replayed already */
    int64_t version;  /* topology version the client reached, as far as sent or queued
                       * (TB_CURSOR_NO_VERSION: unknown until a snapshot or replay says) */
    size_t bytes_sent;
    int64_t last_write_ms;
    int64_t close_at_ms;       /* drain: when this stream is closed; 0 = not scheduled */
    int64_t snapshot_retry_ms; /* the store failed: when to read the snapshot again */
    int fd;
    gw_phase phase;
    bool resync;  /* a snapshot must replace what was dropped; queued events are dropped */
    bool holding; /* a resync snapshot is being read: queued events wait behind it */
    bool keepalive_due, dead, closing, close_after_write, write_requested;
    bool dirty;                     /* on the loop's list of streams to write after a drain */
    struct gw_session *dirty_next;
} gw_session_t;

/* gw_sse.c */
gw_loop_topology_t *tb__gw_sse_topic_find(gw_loop_t *loop, const char *id);
void tb__gw_sse_request_write(gw_session_t *s);
/**
 * Something is to be written to s: at the end of the inbox pass or sweep
 * under way (one write with everything), or else on WRITEABLE.
 */
void tb__gw_sse_want_write(gw_session_t *s);
/** Makes sure the loop's sweep runs by at_ms (a snapshot retry is due then). */
void tb__gw_sse_sweep_by(gw_loop_t *loop, int64_t at_ms);
void tb__gw_sse_queue_clear(gw_session_t *s);
/** A loop-local holder of f with one use (the caller's), taking a reference on f. */
gw_loop_frame_t *tb__gw_sse_hold(gw_frame_t *f);
/** Gives back one use; the last frees the holder and drops its frame reference. */
void tb__gw_sse_release(gw_loop_frame_t *lf);
/**
 * Queues a live frame lf for s (one more use) unless replayed already or
 * covered by a coming snapshot. Once the stream has its snapshot or replay,
 * the frame must continue s->version (gw_frame_continues), else the stream
 * resyncs (tb__gw_sse_version_gap).
 */
void tb__gw_sse_enqueue(gw_session_t *s, gw_loop_frame_t *lf);
/** As tb__gw_sse_enqueue, checking continuity in every phase (a replay being taken). */
void tb__gw_sse_enqueue_checked(gw_session_t *s, gw_loop_frame_t *lf);
/** A version the client never got: counts the gap and resyncs (a snapshot replaces it). */
void tb__gw_sse_version_gap(gw_session_t *s);
/** Drops the backlog and has a fresh snapshot sent instead (CONTRACT §3.6). */
void tb__gw_sse_schedule_resync(gw_session_t *s);
/** Queues `event: error` and closes the stream once it is written (CONTRACT §3.7). */
void tb__gw_sse_error_close(gw_session_t *s);
/** The opening read failed or found nothing: frees the session and answers req. */
void tb__gw_sse_refuse(gw_session_t *s, int status, const char *code, const char *message);
/** Frees a session and gives back its subscription, topology and user slot. */
void tb__gw_sse_session_free(gw_session_t *s);

/* gw_sse_snapshot.c */
/**
 * Starts the opening read of a new session on a worker: a replay from cursor
 * when resume is set and the bus still has it, else a snapshot. The stream's
 * answer (200, 404) waits for it.
 */
void tb__gw_sse_open_read(gw_session_t *s, bool resume, const tb_cursor_t *cursor);
/** Reads a fresh snapshot for a streaming session, unless a read is already running. */
void tb__gw_sse_want_snapshot(gw_session_t *s);
/** A capped user: reads whether the topology exists, then answers 404 or 429. */
void tb__gw_sse_answer_capped(gw_request_t *req);
/**
 * Appends `event: snapshot` with snap (taken) and the loop's bus state to
 * control, its cursor at cursor_seq with the snapshot's own version; returns
 * that version (TB_CURSOR_NO_VERSION if the snapshot has none).
 */
int64_t tb__gw_sse_append_snapshot(gw_session_t *s, json_t *snap_take, uint64_t cursor_seq);

#endif
