/*
 * Events published shortly before a lost connection may never have reached
 * the server: nats.c buffers only what is published while it knows it is
 * disconnected, and what it wrote to a dying server's socket is gone. A
 * stream that missed a mutation.applied would show a stale view until
 * something else made it resync. So the mutator remembers what it published
 * lately and, once the bus reports a reconnect, publishes the last
 * RECENT_WINDOW_MS of it again. Subscribers treat events idempotently
 * (CONTRACT §3: mutation ids, topology version), so a repeat costs nothing.
 *
 * Worker thread only (or tb_mutator_run_once's caller while it does not run).
 */
#include <stdlib.h>
#include <string.h>

#include "mutator_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { RECENT_WINDOW_MS = 10 * 1000 };

void tb__mutator_recent_add(mutator_recent_t *r, const char *topic, const char *payload)
{
    if (strncmp(topic, "topology.", 9) != 0)
        return; /* health is periodic anyway */
    size_t slot = (r->head + r->count) % TB_MUTATOR_RECENT_EVENTS;
    if (r->count == TB_MUTATOR_RECENT_EVENTS) {
        slot = r->head;
        r->head = (r->head + 1) % TB_MUTATOR_RECENT_EVENTS;
        free(r->events[slot].topic);
        free(r->events[slot].payload);
    } else {
        r->count++;
    }
    r->events[slot].topic = tb_xstrdup(topic);
    r->events[slot].payload = tb_xstrdup(payload);
    r->events[slot].at_ms = tb_clock_mono_ms();
}

void tb__mutator_recent_cleanup(mutator_recent_t *r)
{
    for (size_t i = 0; i < r->count; i++) {
        size_t slot = (r->head + i) % TB_MUTATOR_RECENT_EVENTS;
        free(r->events[slot].topic);
        free(r->events[slot].payload);
    }
    r->head = r->count = 0;
}

void tb__mutator_republish_if_reconnected(tb_mutator_t *m)
{
    if (!m->bus)
        return;
    tb_bus_stats_t st;
    tb_bus_stats(m->bus, &st);
    mutator_recent_t *r = &m->recent;
    if (st.reconnects == r->reconnects_seen)
        return;
    r->reconnects_seen = st.reconnects;
    int64_t since = tb_clock_mono_ms() - RECENT_WINDOW_MS;
    size_t n = 0;
    for (size_t i = 0; i < r->count; i++) {
        const struct mutator_recent_event *e = &r->events[(r->head + i) % TB_MUTATOR_RECENT_EVENTS];
        if (e->at_ms < since)
            continue;
        if (tb_bus_publish(m->bus, e->topic, NULL, e->payload, strlen(e->payload)))
            atomic_fetch_add(&m->counters.publish_failed, 1);
        n++;
    }
    if (n > 0)
        tb_log(TB_LOG_NOTICE, "mutator", "bus reconnected: published the last %zu events again",
               n);
}
