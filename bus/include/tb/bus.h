/*
 * The bus (DESIGN.md "The bus"): publish envelopes on topics, subscribe to
 * patterns, watch the connection state, and replay recent events from a
 * cursor. One interface, three backends chosen by URL:
 *
 *   mem://                      in-process, thread-safe; the embedded default
 *   nats://HOST:PORT[,HOST:PORT...]   NATS through nats.c (port defaults to 4222)
 *   none                        disabled: publish is a no-op, nothing is delivered
 *
 * Threads. Every function here may be called from any thread unless stated.
 * Callbacks run on bus threads, never inside the call that registered them:
 *   - mem: on_event runs on the publisher's thread, inside tb_bus_publish*;
 *     on_state never runs (the state is always UP).
 *   - nats: on_event and on_dropped run on nats.c's delivery thread of that
 *     subscription (one thread per subscription; different subscriptions run
 *     concurrently); on_dropped may also run on nats.c's connection-event
 *     thread (as does on_state), on the thread that rebuilds lost JetStream
 *     consumers, or on the one that watches stream leader changes.
 *   - null: no callback ever runs.
 * on_event calls of one subscription never run concurrently with each other
 * on nats (on_dropped may run alongside them); on mem, two publishers on two
 * threads may call the same subscription at the same time. Callbacks must
 * not block for long: they hold up delivery.
 *
 * Sequences and cursors. Every delivered event carries ev->seq, so its SSE
 * cursor is {tb_bus_epoch(bus), ev->seq}. mem numbers events per bus instance
 * (random epoch). nats with JetStream uses the stream sequence (the epoch
 * identifies the stream); without JetStream a per-process counter with a
 * random epoch, which replay never honours. ev->seq == 0 means the event has
 * no position (nats with JetStream, on a pattern outside the stream).
 */
#ifndef TB_BUS_H
#define TB_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tb/base.h"
#include "tb/cursor.h"
#include "tb/envelope.h"
#include "tb/event.h"

typedef struct tb_bus tb_bus_t;
typedef struct tb_sub tb_sub_t;

typedef enum tb_bus_state_e {
    TB_BUS_UP = 0,   /* connected: publishes go out, subscriptions receive */
    TB_BUS_DOWN,     /* not connected; the backend keeps trying */
    TB_BUS_DISABLED, /* the null bus: nothing will ever be delivered */
} tb_bus_state_t;

/** "up", "down" or "disabled" (CONTRACT §3 snapshot `bus` field). */
const char *tb_bus_state_str(tb_bus_state_t state);

/** Called with an event; ev is borrowed for the call (tb_event_ref to keep it). */
typedef void (*tb_bus_event_cb)(tb_event_t *ev, void *ud);
/** Called when the state changes, with the new state. */
typedef void (*tb_bus_state_cb)(tb_bus_state_t state, void *ud);

/** What a subscription is told. on_event is required, on_dropped and want may be NULL. */
typedef struct tb_sub_handlers {
    tb_bus_event_cb on_event;
    /**
     * count events were lost for this subscription since the last report
     * (the client library dropped them: slow consumer), or may have been (1:
     * a JetStream consumer rebuilt past a gap, a stream leader change). The
     * subscriber should resync (send a fresh snapshot) rather than trust its
     * stream.
     */
    void (*on_dropped)(uint64_t count, void *ud);
    /**
     * Whether an event on topic is wanted at all, asked before its envelope
     * is decoded, so the events of a wide pattern the subscriber would throw
     * away cost little: false drops the event (not counted as received).
     * It runs on the thread and under the same rules as on_event. Asked by
     * nats; mem delivers already-built events without asking, so on_event
     * must still cope with events it would not have wanted.
     */
    bool (*want)(const char *topic, void *ud);
} tb_sub_handlers_t;

/** Settings of a bus; tb_bus_options_init fills the defaults. */
typedef struct tb_bus_options {
    size_t ring_size;              /* mem: events kept for replay (default 65536) */
    size_t ring_max_bytes;         /* mem: payload bytes kept for replay (default 64 MiB) */
    const char *stream_name;       /* nats: JetStream stream on topology.> ("TOPOBUS") */
    const char *client_name;       /* nats: the connection's name, as the server's monitoring
                                      (/connz) shows it (NULL: none) */
    int64_t stream_max_age_s;      /* nats: stream retention by age (3600) */
    int64_t stream_max_bytes;      /* nats: stream retention by size (256 MiB) */
    int64_t stream_duplicates_s;   /* nats: the stream's duplicate window: a message whose
                                      Nats-Msg-Id was stored this recently is not stored
                                      again (120; at most stream_max_age_s when that is set).
                                      Set when the stream is created; an existing stream
                                      keeps its own */
    int stream_replicas;           /* nats: stream replicas (1) */
    bool jetstream;                /* nats: use JetStream when the server has it (true) */
    int reconnect_wait_ms;         /* nats: wait between reconnect attempts (250) */
    int js_heartbeat_ms;           /* nats: JetStream consumer heartbeat; a consumer silent for
                                      about two of these is rebuilt (2000) */
    int connect_timeout_ms;        /* nats: one connect attempt / JetStream request, and a
                                      whole replay (2000) */
    int replay_max;                /* nats: replays (each a short-lived JetStream consumer)
                                      under way at once; more wait for a place within their
                                      time, then answer TB_ETIMEDOUT (4) */
    int ping_interval_ms;          /* nats: the client pings the server this often (1000) */
    int max_pings_out;             /* nats: unanswered pings before the connection counts as
                                      dead and is replaced (5); a silent peer (frozen server,
                                      cut network) is DOWN after max_pings_out to
                                      max_pings_out + 1 intervals: 5-6 s */
    bool retry_first_connect;      /* nats: a failed first connect keeps trying (true) */
    int publish_buffer_bytes;      /* nats: publishes buffered during an outage (8 MiB) */
    int sub_pending_msgs;          /* nats: per-subscription queue before drops (262144) */
    int sub_pending_bytes;         /* nats: same, in bytes (256 MiB) */
    tb_bus_state_cb on_state;      /* state listener on a bus thread, or NULL */
    void *state_ud;                /* passed to on_state */
} tb_bus_options_t;

/** Counters for metrics; each is monotonic over the bus's life. */
typedef struct tb_bus_stats {
    uint64_t published;         /* events handed to the backend */
    uint64_t publish_dropped;   /* publishes dropped (buffer full, closed) */
    uint64_t received;          /* envelopes decoded and delivered to subscriptions */
    uint64_t rejected[TB_ENVELOPE_ERROR_COUNT]; /* received envelopes dropped, by reason */
    uint64_t sub_dropped;       /* events lost by subscriptions (sum of on_dropped) */
    uint64_t js_skipped;        /* nats: JetStream requests failed at once because JetStream
                                   had just not answered (the caller falls back) */
    uint64_t js_leader_changes; /* nats: new stream leaders seen (subscriptions resynced) */
    uint64_t reconnects;        /* times the state went from down back to up */
    uint64_t confirmed;         /* tb_bus_publish_confirmed items confirmed (TB_OK) */
    uint64_t confirm_failed;    /* tb_bus_publish_confirmed items not confirmed, for any reason */
} tb_bus_stats_t;

/** Fills opts with the defaults listed above. */
void tb_bus_options_init(tb_bus_options_t *opts);

/**
 * Opens a bus from a URL (see the file comment). opts may be NULL for the
 * defaults; it is copied (stream_name and client_name too). nats: connects once; if that
 * fails, the bus starts DOWN and keeps trying when retry_first_connect is
 * set, else TB_EIO. Probes JetStream and creates the stream if missing.
 * Returns TB_OK with *out new, TB_EINVAL for a malformed URL or option,
 * TB_EIO or TB_EBACKEND (logged) for connection failures.
 */
tb_status tb_bus_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts);

/**
 * Closes every subscription still open (their handles become invalid), stops
 * the backend and frees the bus. After it returns no callback runs. Must not
 * be called from a bus callback. Accepts NULL.
 */
void tb_bus_destroy(tb_bus_t *bus);

/** Backend name: "mem", "nats" or "null". Borrowed, static. */
const char *tb_bus_backend(const tb_bus_t *bus);

/**
 * Publishes payload_json (len bytes, a JSON object) on topic with type
 * (NULL: derived from the topic). Never blocks on the network. Returns
 * TB_OK, TB_EINVAL for a bad topic, type or payload (nothing is published),
 * or TB_EFULL / TB_ECLOSED when the backend dropped the event (counted in
 * publish_dropped; the caller may count it too, it is not an error to act on).
 */
tb_status tb_bus_publish(tb_bus_t *bus, const char *topic, const char *type,
                         const char *payload_json, size_t len);

/**
 * Publishes an already-built event (borrowed). The bus sets the event's seq
 * when it holds the only reference (refs == 1); a shared event is copied.
 * Statuses as tb_bus_publish.
 */
tb_status tb_bus_publish_event(tb_bus_t *bus, tb_event_t *ev);

/** One already-encoded envelope to publish with confirmation. */
typedef struct tb_bus_confirm_item {
    const char *topic;    /* a valid topic (tb_topic_validate); under topology.> in practice */
    const char *msg_id;   /* the envelope id (1..64 bytes of [A-Za-z0-9_-]); sent as the
                             Nats-Msg-Id header */
    const char *envelope; /* the envelope bytes (CONTRACT §2), not NUL-terminated necessarily */
    size_t len;
    tb_status result;     /* out: TB_OK confirmed; TB_EINVAL never publishable (bad topic/id,
                             not a valid envelope, over TB_ENVELOPE_MAX_BYTES, refused by the
                             server as invalid); TB_ECLOSED bus down; TB_ETIMEDOUT no answer in
                             time; TB_EIO / TB_EBACKEND other failures */
} tb_bus_confirm_item_t;

/**
 * Publishes the n items in order and waits up to timeout_ms in all for the bus to confirm
 * them. Returns TB_OK when every item is TB_OK, else the first non-OK item's status (every
 * item's own result is set). Never buffers for later: while the bus is DOWN every item is
 * TB_ECLOSED at once and nothing is sent. Blocks: not for an event loop. Any thread; calls
 * on one bus are serialised.
 *
 * Items are borrowed for the call. Invalid items (bad topic or msg_id, an empty or
 * oversized envelope) are TB_EINVAL, also while DOWN, and never reach the backend; the
 * others are checked per backend:
 *   - nats with JetStream (set up at tb_bus_create: the server had JetStream and the
 *     stream existed or was made): each item is confirmed by the stream's
 *     acknowledgement; one the stream already held within its duplicate window (same
 *     msg_id) counts as confirmed. A topic outside topology.> is TB_EINVAL (no stream
 *     stores it). Items not acknowledged in time are taken back (TB_ETIMEDOUT, or
 *     TB_ECLOSED if the connection was lost meanwhile), yet may have reached the stream
 *     anyway: publish them again with the same msg_id. At most 512 KiB await
 *     acknowledgement at a time, so a server that hangs with the connection open cannot
 *     hold the call past its deadline.
 *   - nats without JetStream (the server has none, options.jetstream is off, or the bus
 *     was created while the server was unreachable): confirmed once the server answered
 *     a flush after them: it received them, nothing more. Unconfirmed items may still be
 *     sent later from nats.c's buffers; the Nats-Msg-Id header lets a stream drop them.
 *   - mem: each envelope is decoded (TB_EINVAL if it is not one) and delivered as by
 *     tb_bus_publish_event, before the call returns.
 *   - null: every valid item is TB_OK, and nothing is ever delivered.
 * Waiting for an earlier call on the same bus counts in timeout_ms (TB_ETIMEDOUT if it
 * takes all of it). Returns TB_EINVAL without looking at the items for a NULL bus, NULL
 * items with n > 0 or a negative timeout (every item's result TB_EINVAL when items is not
 * NULL).
 */
tb_status tb_bus_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *items, size_t n,
                                   int timeout_ms);

/**
 * Fills *item to publish the len envelope bytes at envelope on topic, with the envelope's
 * own `id` as msg_id (CONTRACT §2: the id is also the Nats-Msg-Id). The id is copied into
 * id_buf (TB_EVENT_ID_LEN + 1 bytes), which item->msg_id then points at; topic and
 * envelope are borrowed too, so all three must outlive the item. result is TB_OK.
 * Returns TB_OK, or TB_EINVAL (with *item untouched) if topic is not a valid topic or the
 * bytes are not an envelope with an id. Pure; any thread.
 */
tb_status tb_bus_confirm_item_init(tb_bus_confirm_item_t *item, const char *topic,
                                   const char *envelope, size_t len, char *id_buf);

/**
 * Waits up to timeout_ms until what was published so far has left the
 * process (nats: flushed to the server). TB_OK, TB_ETIMEDOUT or TB_EIO.
 * mem and null return TB_OK at once.
 */
tb_status tb_bus_drain(tb_bus_t *bus, int timeout_ms);

/**
 * Subscribes to pattern (topic grammar plus `*` and `>`). h is copied; ud is
 * passed to the handlers. *out is a new handle, closed with tb_sub_close.
 * TB_EINVAL for a bad pattern or missing on_event, TB_EBACKEND if the
 * backend refused (logged). If it fails, no callback ever runs.
 * On TB_OK every event published after the call returns, by any process,
 * reaches the handlers: nats waits (up to about a second, only while
 * connected) for the server to confirm the interest, so a caller may read
 * a snapshot right after subscribing without a gap. While disconnected the
 * interest is sent on reconnect, and what was missed is reported as usual.
 * May block for that round trip: not for an event loop.
 */
tb_status tb_bus_subscribe(tb_bus_t *bus, const char *pattern, const tb_sub_handlers_t *h,
                           void *ud, tb_sub_t **out);

/**
 * Closes a subscription and frees it. After it returns no callback of this
 * subscription runs. It may be called from inside one of this subscription's
 * own callbacks: it then returns at once and the handle is freed when that
 * callback returns. From other threads it waits for running callbacks to
 * finish, so never call it while holding a lock those callbacks take. Call
 * it once per handle. Accepts NULL.
 */
void tb_sub_close(tb_sub_t *sub);

/** Events this subscription lost (the sum reported through on_dropped). */
uint64_t tb_sub_dropped(const tb_sub_t *sub);

/** The current state. */
tb_bus_state_t tb_bus_state(const tb_bus_t *bus);

/** The epoch of this bus's cursors (see the file comment). */
uint64_t tb_bus_epoch(const tb_bus_t *bus);

/**
 * The cursor of the newest event the bus holds (seq 0 if none), for a
 * snapshot's `id:`. nats with JetStream asks the server (may block up to
 * connect_timeout_ms); if it cannot answer, the cursor still names the epoch
 * with the last sequence seen. The null bus answers {epoch, 0}. Always TB_OK.
 */
tb_status tb_bus_head(tb_bus_t *bus, tb_cursor_t *out);

/**
 * Calls on_event, on the caller's thread and before returning, for every
 * event after cursor `after` whose topic matches pattern, oldest first.
 * TB_OK: every such event the bus ever had was replayed (possibly none).
 * TB_ENOTFOUND ("gone"): the epoch is not this bus's, the sequence is not
 * one this bus issued, or events after it were discarded; the caller must
 * resync from a snapshot. TB_EINVAL for a bad pattern. nats may also return
 * TB_ETIMEDOUT or TB_EBACKEND, which callers treat as gone. nats replays from
 * JetStream with a consumer of its own that lives for the call only; a call
 * takes at most connect_timeout_ms, and at most replay_max run at once.
 */
tb_status tb_bus_replay(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                        tb_bus_event_cb on_event, void *ud);

/** Copies the counters into *out. */
void tb_bus_stats(const tb_bus_t *bus, tb_bus_stats_t *out);

/*
 * The process-wide bus (STYLE §6). Only process wiring (the `topobus`
 * subcommands) uses it; everything else takes a tb_bus_t * parameter.
 */

/**
 * Sets the URL and options tb_app_bus() opens with (both copied). Call once
 * at startup, before tb_app_bus(); a second call replaces the settings only
 * while no bus is open. TB_EINVAL for a NULL url, TB_ECONFLICT when open.
 */
tb_status tb_app_bus_configure(const char *url, const tb_bus_options_t *opts);

/**
 * The process bus, connecting on first use. If the connect fails it returns
 * NULL ("unavailable") and does not try again for 2 s; the next call after
 * that retries. NULL also before configuration and after tb_app_bus_close.
 * A call made while another thread connects waits for that attempt (at most
 * the connect timeout) and returns its outcome. The first connect does not retry in
 * the background (retry_first_connect is forced off): the singleton retries.
 * Borrowed pointer, valid until tb_app_bus_close.
 */
tb_bus_t *tb_app_bus(void);

/** Destroys the process bus, if open. Safe to call twice and before any use. */
void tb_app_bus_close(void);

#endif
