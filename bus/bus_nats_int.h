/*
 * Private to the nats backend (bus_nats.c: connection, publish, live
 * subscriptions; bus_nats_js.c: the JetStream stream, head and replay).
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
    atomic_int_fast64_t dropped_seen; /* nats.c's dropped count already reported */
} nats_sub_t;

typedef struct nats_bus {
    tb_bus_t base;
    natsOptions *nopts;
    natsConnection *nc;
    jsCtx *js;     /* non-NULL when JetStream is in use (decided at create) */
    char **servers;
    size_t nservers;
    atomic_bool closing;            /* destroy has begun: no more state reports */
    atomic_uint_fast64_t local_seq; /* numbering without JetStream */
    atomic_uint_fast64_t last_stream_seq; /* newest stream sequence seen live */
    pthread_mutex_t mu;             /* guards live_subs and closed */
    pthread_cond_t cv;
    unsigned live_subs; /* nats subscriptions whose completion has not run */
    bool closed;        /* nats.c's closed callback ran */
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

/** JetStream replay (see tb_bus_replay). */
tb_status tb__nats_js_replay(nats_bus_t *nb, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud);

/**
 * Creates the nats.c subscription behind sub: an ordered JetStream consumer
 * from stream sequence start_seq (0: only new events) for stream patterns,
 * else a core subscription. Takes the backend's reference on sub. On success
 * *out is the new subscription.
 */
natsStatus tb__nats_subscribe_ns(nats_bus_t *nb, tb_sub_t *sub, uint64_t start_seq,
                                 natsSubscription **out);

/** The stream's first and last sequence; TB_EBACKEND (logged) if the server cannot say. */
tb_status tb__nats_js_bounds(nats_bus_t *nb, uint64_t *first, uint64_t *last);

/** Starts, wakes and stops the repair thread (bus_nats_repair.c). */
tb_status tb__nats_repair_start(nats_bus_t *nb);
void tb__nats_repair_wake(nats_bus_t *nb);
void tb__nats_repair_stop(nats_bus_t *nb);

/** Decodes a received message into a new event, counting rejections; NULL if rejected. */
tb_event_t *tb__nats_decode(nats_bus_t *nb, natsMsg *msg);

#endif
