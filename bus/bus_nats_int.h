/*
 * Private to the nats backend (bus_nats.c: connection, publish, live
 * subscriptions; bus_nats_js.c: the JetStream stream, head and replay).
 */
#ifndef TB_BUS_NATS_INT_H
#define TB_BUS_NATS_INT_H

#include <nats/nats.h>

#include "bus_int.h"

#define TB_NATS_STREAM_SUBJECT "topology.>"

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

/** Decodes a received message into a new event, counting rejections; NULL if rejected. */
tb_event_t *tb__nats_decode(nats_bus_t *nb, natsMsg *msg);

#endif
