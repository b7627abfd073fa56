/* Shared by the bus integration tests: a thread-safe event collector and state recorder. */
#ifndef TB_TEST_BUS_WAIT_H
#define TB_TEST_BUS_WAIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proc.h"
#include "tb/bus.h"

enum { COLLECT_MAX = 256 };

typedef struct collector {
    pthread_mutex_t mu;
    tb_event_t *events[COLLECT_MAX];
    size_t n;
    atomic_uint_fast64_t dropped;
    unsigned want; /* for wait_count */
} collector_t;

static inline void collector_init(collector_t *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->dropped, 0);
}

static inline void collector_cleanup(collector_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        tb_event_unref(c->events[i]);
    c->n = 0;
    pthread_mutex_destroy(&c->mu);
}

static inline void collect_event(tb_event_t *ev, void *ud)
{
    collector_t *c = ud;
    pthread_mutex_lock(&c->mu);
    if (c->n < COLLECT_MAX)
        c->events[c->n++] = tb_event_ref(ev);
    pthread_mutex_unlock(&c->mu);
}

static inline void collect_dropped(uint64_t count, void *ud)
{
    collector_t *c = ud;
    atomic_fetch_add(&c->dropped, count);
}

static const tb_sub_handlers_t collect_handlers = {.on_event = collect_event,
                                                   .on_dropped = collect_dropped};

static inline size_t collector_count(collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static inline bool count_reached(void *ud)
{
    collector_t *c = ud;
    return collector_count(c) >= c->want;
}

/** True once c holds at least n events (within timeout_ms). */
static inline bool wait_count(collector_t *c, unsigned n, int timeout_ms)
{
    c->want = n;
    return tb_test_wait_until(count_reached, c, timeout_ms);
}

typedef struct state_rec {
    atomic_int state;
    atomic_int changes;
} state_rec_t;

static inline void record_state(tb_bus_state_t state, void *ud)
{
    state_rec_t *r = ud;
    atomic_store(&r->state, (int)state);
    atomic_fetch_add(&r->changes, 1);
}

typedef struct recorded_wait {
    state_rec_t *rec;
    int want;
} recorded_wait_t;

static inline bool recorded_is(void *ud)
{
    recorded_wait_t *w = ud;
    return atomic_load(&w->rec->state) == w->want;
}

/**
 * True once the listener recorded want, false after timeout_ms. The bus
 * state changes a moment before its listener is called (on another thread).
 */
static inline bool wait_recorded(state_rec_t *rec, tb_bus_state_t want, int timeout_ms)
{
    recorded_wait_t w = {rec, (int)want};
    return tb_test_wait_until(recorded_is, &w, timeout_ms);
}

typedef struct state_wait {
    tb_bus_t *bus;
    tb_bus_state_t want;
} state_wait_t;

static inline bool state_is(void *ud)
{
    state_wait_t *w = ud;
    return tb_bus_state(w->bus) == w->want;
}

static inline bool wait_state(tb_bus_t *bus, tb_bus_state_t want, int timeout_ms)
{
    state_wait_t w = {bus, want};
    return tb_test_wait_until(state_is, &w, timeout_ms);
}

#endif
