/*
 * Private to the nats backend (bus_nats.c: connection, publish, live
 * subscriptions; bus_nats_js.c: the JetStream stream, head and replay;
 * bus_nats_confirm.c: confirmed publishing).
 */
#ifndef TB_BUS_NATS_INT_H
#define TB_BUS_NATS_INT_H

#include <nats/nats.h>

#include "bus_int.h"

#define TB_NATS_STREAM_SUBJECT "topology.>"

/* The nats side of a tb_sub_t (sub->backend). */
typedef struct nats_sub {
    pthread_mutex_t mu;  /* guards ns and closed against a repair running at the same time */
    natsSubscription *ns;
    bool stream;         /* an ordered JetStream consumer */
    bool closed;         /* unsubscribed: a repair must not bring it back */
    atomic_bool broken;  /* the server stopped feeding it (missed heartbeats, mismatch) */
    atomic_uint_fast64_t last_seq;    /* stream sequence of the last event delivered */
    atomic_uint_fast64_t feeds;       /* nats.c subscriptions made for it so far */
    atomic_uint_fast64_t live_feed;   /* the one whose messages count; older ones are muted */
    atomic_int_fast64_t dropped_seen; /* nats.c's dropped count already reported */
} nats_sub_t;

/* Confirmed publishing over JetStream (bus_nats_confirm.c). */
typedef struct nats_confirm nats_confirm_t;

typedef struct nats_bus {
    tb_bus_t base;
    natsOptions *nopts;
    natsConnection *nc;
    jsCtx *js;     /* non-NULL when JetStream is in use (decided at create) */
    nats_confirm_t *confirm; /* with js: confirmed publishing's own jsCtx, or NULL */
    char **servers;
    size_t nservers;
    atomic_bool closing;            /* destroy has begun: no more state reports */
    atomic_uint_fast64_t local_seq; /* numbering without JetStream */
    atomic_uint_fast64_t last_stream_seq; /* newest stream sequence seen live */
    atomic_int_fast64_t js_quiet_until; /* monotonic ms before which JetStream is not asked
                                           (0: it answers); see tb__nats_js_admit */
    natsSubscription *leader_watch;     /* stream leader advisories, or NULL */
    pthread_mutex_t mu;             /* guards live_subs, closed and replays */
    pthread_cond_t cv;
    unsigned live_subs; /* nats subscriptions whose completion has not run */
    bool closed;        /* nats.c's closed callback ran */
    unsigned replays;   /* replays under way (at most opts.replay_max) */
    pthread_cond_t replay_cv; /* a replay ended: a place is free */
    /* The repair thread (bus_nats_repair.c): rebuilds JetStream consumers the server lost. */
    pthread_t repair_thread;
    pthread_cond_t repair_cv;
    bool repair_started;
    bool repair_wanted; /* under mu: some subscription is broken */
    bool repair_stop;   /* under mu */
} nats_bus_t;

static inline nats_bus_t *tb__nats_of(tb_bus_t *bus)
{
    return tb_container_of(bus, nats_bus_t, base);
}

/** True if every topic pattern matches lies inside the stream's subjects (topology.>). */
bool tb__nats_in_stream(const char *pattern);

/**
 * Sets up JetStream on a connected bus: creates the stream if missing and
 * sets nb->js and the epoch. Leaves nb->js NULL (and logs why) when the
 * server has no JetStream or the stream cannot be used; never fails the bus.
 */
void tb__nats_js_setup(nats_bus_t *nb);

/** Head cursor from the stream (falls back to the last sequence seen). */
tb_status tb__nats_js_head(nats_bus_t *nb, tb_cursor_t *out);

/**
 * Whether a JetStream request may be sent now. After a request went
 * unanswered, JetStream is left alone for a while: callers get false at once
 * (counted) and fall back, except one caller per quiet period, which probes.
 */
bool tb__nats_js_admit(nats_bus_t *nb);

/** Records how a JetStream request ended (jerr: the server's error code, 0 if none). */
void tb__nats_js_outcome(nats_bus_t *nb, natsStatus s, jsErrCode jerr);

/** Stops watching stream leader changes; before the connection closes. */
void tb__nats_js_unwatch(nats_bus_t *nb);

/** JetStream replay (see tb_bus_replay). */
tb_status tb__nats_js_replay(nats_bus_t *nb, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud);

/**
 * Creates a nats.c subscription (a feed) for sub: an ordered JetStream
 * consumer from stream sequence start_seq (0: only new events) for stream
 * patterns, else a core subscription. Takes the backend's reference on sub.
 * On success *out is the new subscription and *feed its number: its
 * messages count until a newer feed is made live (s->live_feed).
 */
natsStatus tb__nats_subscribe_ns(nats_bus_t *nb, tb_sub_t *sub, uint64_t start_seq,
                                 natsSubscription **out, uint64_t *feed);

/**
 * The stream's first and last sequence, waiting at most wait_ms; TB_ETIMEDOUT
 * if JetStream does not answer (or was just found not answering), TB_EBACKEND
 * (logged) if it refuses.
 */
tb_status tb__nats_js_bounds(nats_bus_t *nb, int wait_ms, uint64_t *first, uint64_t *last);

/**
 * References to every open subscription whose backend part satisfies want
 * (called under base.subs_mu); *n is their number. The caller unrefs each
 * and frees the array.
 */
tb_sub_t **tb__nats_collect_subs(nats_bus_t *nb, bool (*want)(nats_sub_t *), size_t *n);

/** Counts a subscription nats.c will complete, and one it completed (bus_nats.c). */
void tb__nats_sub_started(nats_bus_t *nb);
void tb__nats_sub_completed(nats_bus_t *nb);

/** Starts, wakes and stops the repair thread (bus_nats_repair.c). */
tb_status tb__nats_repair_start(nats_bus_t *nb);
void tb__nats_repair_wake(nats_bus_t *nb);
void tb__nats_repair_stop(nats_bus_t *nb);

/** Sets up confirmed publishing (nb->confirm) once nb->js is in use; logs if it cannot. */
void tb__nats_confirm_setup(nats_bus_t *nb);
/** Frees nb->confirm (if any), after the connection closed. */
void tb__nats_confirm_free(nats_bus_t *nb);
/** The publish_confirmed slot: over JetStream with nb->js, else core publish and flush. */
void tb__nats_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *const *items, size_t n,
                                int64_t deadline_ms);

/** Decodes a received message into a new event, counting rejections; NULL if rejected. */
tb_event_t *tb__nats_decode(nats_bus_t *nb, natsMsg *msg);

#endif
