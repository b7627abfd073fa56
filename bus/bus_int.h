/*
 * Private to tb_bus: the backend vtable, the base structs every backend
 * embeds, and the helpers bus.c offers backends (delivery gate, counters,
 * state reports). Nothing outside bus/ includes this, except unit tests of
 * the singleton (clock seam).
 */
#ifndef TB_BUS_INT_H
#define TB_BUS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "tb/bus.h"

/*
 * One backend. Every slot is mandatory. bus.c validated all arguments
 * (topics, patterns, payloads) before calling; backends do not check again.
 */
struct tb_bus_ops {
    /* Name used in logs and tb_bus_backend(). */
    const char *name;
    /* Allocates the backend, fills base->epoch and the initial state; *out is base. */
    tb_status (*create)(tb_bus_t **out, const char *url, const tb_bus_options_t *opts);
    /* Stops the backend and frees it; every subscription was closed before. */
    void (*destroy)(tb_bus_t *bus);
    /* Sends ev (refs == 1, owned by the caller, may be given a seq); never blocks on I/O. */
    tb_status (*publish)(tb_bus_t *bus, tb_event_t *ev);
    /* Starts routing events matching sub->pattern to tb__sub_deliver(sub, ...). */
    tb_status (*subscribe)(tb_bus_t *bus, tb_sub_t *sub);
    /* Stops routing to sub; must not wait for sub's callbacks (may run inside one). */
    void (*unsubscribe)(tb_bus_t *bus, tb_sub_t *sub);
    /* Waits until earlier publishes have left the process. */
    tb_status (*drain)(tb_bus_t *bus, int timeout_ms);
    /* Cursor of the newest event. */
    tb_status (*head)(tb_bus_t *bus, tb_cursor_t *out);
    /* Replays events after `after` matching pattern on the caller's thread. */
    tb_status (*replay)(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                        tb_bus_event_cb on_event, void *ud);
    /* Publishes the n valid items in order and sets each one's result by deadline_ms
     * (tb_clock_mono_ms); never called while DOWN, nor twice at once on one bus. */
    void (*publish_confirmed)(tb_bus_t *bus, tb_bus_confirm_item_t *const *items, size_t n,
                              int64_t deadline_ms);
};

extern const struct tb_bus_ops tb__bus_mem_ops;
extern const struct tb_bus_ops tb__bus_nats_ops;
extern const struct tb_bus_ops tb__bus_null_ops;

/* The part of every bus that bus.c owns; backends embed it first. */
struct tb_bus {
    const struct tb_bus_ops *ops;
    tb_bus_options_t opts;    /* copy; opts.stream_name and opts.client_name point at the copies */
    char *stream_name;        /* owned copy of the stream name */
    char *client_name;        /* owned copy of the client name, or NULL */
    uint64_t epoch;           /* set by the backend's create */
    atomic_int state;         /* tb_bus_state_t */
    pthread_mutex_t subs_mu;  /* guards the list of open subscriptions */
    pthread_mutex_t confirm_mu; /* serialises tb_bus_publish_confirmed calls */
    tb_sub_t *subs;           /* open subscriptions, closed by tb_bus_destroy */
    atomic_uint_fast64_t published;
    atomic_uint_fast64_t publish_dropped;
    atomic_uint_fast64_t received;
    atomic_uint_fast64_t rejected[TB_ENVELOPE_ERROR_COUNT];
    atomic_uint_fast64_t sub_dropped;
    atomic_uint_fast64_t js_skipped;
    atomic_uint_fast64_t js_leader_changes;
    atomic_uint_fast64_t reconnects;
    atomic_uint_fast64_t confirmed;
    atomic_uint_fast64_t confirm_failed;
};

/* A thread inside one of a subscription's callbacks; lives on that thread's stack. */
struct tb_sub_frame {
    pthread_t thread;
    struct tb_sub_frame *next;
};

/*
 * A subscription. Reference-counted privately: the handle holds one, each
 * running delivery holds one, and a backend may hold one until its library
 * has stopped calling it (nats on_complete). The gate (mu, closed, frames)
 * guarantees no callback starts after tb_sub_close and that close waits for
 * callbacks running on other threads.
 */
struct tb_sub {
    tb_bus_t *bus;
    tb_sub_handlers_t h;
    void *ud;
    char pattern[TB_TOPIC_BUF_SIZE];
    atomic_uint refs;
    atomic_uint_fast64_t dropped;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;
    struct tb_sub_frame *frames; /* threads currently in a callback */
    tb_sub_t *prev, *next;       /* the bus's list, under bus->subs_mu */
    void *backend;               /* the backend's per-subscription state */
    void (*backend_free)(void *backend); /* frees it with the subscription, or NULL */
};

/** Takes a reference on sub. Any thread. */
void tb__sub_ref(tb_sub_t *sub);
/** Drops a reference; the last one frees sub. Any thread. */
void tb__sub_unref(tb_sub_t *sub);
/** Calls sub's on_event with ev unless the subscription is closed; counts it. */
void tb__sub_deliver(tb_sub_t *sub, tb_event_t *ev);
/** Asks sub's want handler about topic (true without one, false once closed). */
bool tb__sub_wants(tb_sub_t *sub, const char *topic);
/** Reports count lost events to sub's on_dropped (if open) and counts them. */
void tb__sub_report_dropped(tb_sub_t *sub, uint64_t count);
/** Records a new state and calls the state listener if it changed. */
void tb__bus_set_state(tb_bus_t *bus, tb_bus_state_t state);
/** Counts a received envelope dropped for reason why. */
void tb__bus_count_rejected(tb_bus_t *bus, tb_envelope_error why);
/** Initialises the base part of a bus (options copied, epoch 0, state DOWN). */
void tb__bus_base_init(tb_bus_t *bus, const struct tb_bus_ops *ops, const tb_bus_options_t *opts);
/** Releases what tb__bus_base_init set up. */
void tb__bus_base_cleanup(tb_bus_t *bus);
/** A random non-zero epoch. */
uint64_t tb__bus_random_epoch(void);
/** A new copy of ev (one reference), seq 0. */
tb_event_t *tb__bus_event_clone(const tb_event_t *ev);

/*
 * The mem backend's subscription index: a token trie, so a publish visits
 * only the trie nodes its topic's tokens lead to, however many patterns are
 * stored. Not thread-safe: the mem backend guards it with its rwlock.
 */
typedef struct tb_mem_index tb_mem_index_t;
/** A growable array of subscription pointers. */
typedef struct tb_sub_vec {
    tb_sub_t **items;
    size_t len, cap;
} tb_sub_vec_t;
void tb__mem_index_create(tb_mem_index_t **out);
/** Frees the index (it holds no references on its subscriptions). Accepts NULL. */
void tb__mem_index_destroy(tb_mem_index_t *index);
/** Stores sub under its (validated) pattern. */
void tb__mem_index_add(tb_mem_index_t *index, tb_sub_t *sub);
/** Removes sub stored by tb__mem_index_add and prunes empty nodes. */
void tb__mem_index_remove(tb_mem_index_t *index, tb_sub_t *sub);
/**
 * Appends the subscriptions matching topic (validated) to out, each with a
 * reference taken (tb__sub_ref). Returns the number of trie nodes visited.
 */
size_t tb__mem_index_match(const tb_mem_index_t *index, const char *topic, tb_sub_vec_t *out);
/** Appends one pointer to v. */
void tb__sub_vec_push(tb_sub_vec_t *v, tb_sub_t *sub);

/*
 * The nats URL list: "nats://h:p[,h:p...]" (later items may repeat the
 * scheme; the port defaults to 4222; IPv6 hosts in brackets). On TB_OK,
 * *servers is a new array of n new strings "nats://host:port" (free with
 * tb__bus_url_free). TB_EINVAL with *why set for anything else. Pure.
 */
enum { TB_BUS_URL_MAX_LEN = 1024, TB_BUS_URL_MAX_SERVERS = 16 };
tb_status tb__bus_url_parse(const char *url, char ***servers, size_t *n, const char **why);
void tb__bus_url_free(char **servers, size_t n);

/* Singleton test seam: the clock the 2 s backoff reads (NULL restores tb_clock_mono_ms). */
void tb__app_bus_set_clock(int64_t (*now_ms)(void));
/* Singleton test seam: how many connects tb_app_bus() has attempted. */
unsigned tb__app_bus_attempts(void);

#endif
