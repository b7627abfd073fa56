/*
 * Subscription registry and bus callbacks; see gw_fanout.h for threads and
 * lock order. An entry has one reference for being registered and one for
 * each thread working on it outside the lock; subscribing is done by one
 * thread at a time (`subscribing`), others wait on the condition variable.
 * Each entry also knows the newest topology version its events carried, to
 * stamp into the cursors of its frames (gw_frame_format).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gw_fanout.h"
#include "gw_int.h"
#include "gw_sse.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/log.h"

enum { REGISTRY_BUCKETS = 4096 };

typedef struct entry {
    struct entry *next;
    gw_fanout_t *fanout;
    char topology[TB_TOPOLOGY_ID_BUF_SIZE];
    tb_sub_t *sub;                  /* NULL until subscribed */
    pthread_mutex_t deliver_lock;   /* on_event: stamping and pushing, in one order */
    int64_t last_version;           /* under deliver_lock: newest version seen on the bus */
    atomic_uint_fast64_t loop_mask; /* read by callbacks without the lock */
    unsigned *loop_streams;         /* per loop; under the registry lock */
    unsigned refs;                  /* under the registry lock */
    bool linked;                    /* in the registry */
    bool subscribing;               /* a thread is in tb_bus_subscribe for it */
} entry_t;

struct gw_fanout {
    tb_gateway_t *gw;
    pthread_mutex_t lock;
    pthread_cond_t subscribed;
    entry_t *buckets[REGISTRY_BUCKETS];
    size_t count;     /* registered entries */
    size_t unsubscribed; /* registered entries without a subscription */
};

static size_t bucket_of(const char *id)
{
    size_t h = 14695981039346656037u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    return h % REGISTRY_BUCKETS;
}

void gw_fanout_create(gw_fanout_t **out, tb_gateway_t *gw)
{
    gw_fanout_t *f = tb_xcalloc(1, sizeof *f);
    f->gw = gw;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->subscribed, NULL);
    *out = f;
}

static void entry_free(entry_t *e)
{
    pthread_mutex_destroy(&e->deliver_lock);
    free(e->loop_streams);
    free(e);
}

void gw_fanout_destroy(gw_fanout_t *f)
{
    if (!f)
        return;
    for (size_t b = 0; b < REGISTRY_BUCKETS; b++) {
        for (entry_t *e = f->buckets[b], *next; e; e = next) {
            next = e->next;
            tb_sub_close(e->sub);
            entry_free(e);
        }
    }
    pthread_cond_destroy(&f->subscribed);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/*
 * Pushes a message to every loop in mask; a full inbox marks that loop for a
 * full resync. Returns the loops to wake (wake_loops) once the caller holds
 * no lock.
 */
static uint64_t push_to_loops(tb_gateway_t *gw, uint64_t mask, gw_msg_kind kind,
                              const char *topology, gw_frame_t *frame)
{
    uint64_t wake = 0;
    for (unsigned i = 0; i < gw->nloops; i++) {
        if (!(mask & (UINT64_C(1) << i)))
            continue;
        gw_msg_t *m = tb_xcalloc(1, sizeof *m);
        m->kind = kind;
        m->fd = -1;
        m->frame = frame ? gw_frame_ref(frame) : NULL;
        strcpy(m->topology, topology);
        bool woken = false;
        if (gw_inbox_push_take_nowake(&gw->loops[i].inbox, m, &woken) == TB_EFULL) {
            /* The loop is far behind: it resyncs every stream when it catches up. */
            atomic_store(&gw->loops[i].overflowed, true);
            atomic_fetch_add(&gw->counters.inbox_overflows, 1);
        }
        if (woken)
            wake |= UINT64_C(1) << i;
    }
    return wake;
}

static void wake_loops(tb_gateway_t *gw, uint64_t wake)
{
    for (unsigned i = 0; i < gw->nloops; i++) {
        if (wake & (UINT64_C(1) << i))
            gw_inbox_wake(&gw->loops[i].inbox);
    }
}

static void on_event(tb_event_t *ev, void *ud)
{
    entry_t *e = ud;
    tb_gateway_t *gw = e->fanout->gw;
    uint64_t mask = atomic_load(&e->loop_mask);
    if (!mask)
        return;
    /*
     * Stamping a frame's cursor and pushing it are one step under the entry's lock, so
     * every loop receives frames in the order their versions were stamped, also when mem
     * delivers from several publisher threads at once: a cursor never claims a version
     * that a frame still on its way to the same stream carries.
     */
    pthread_mutex_lock(&e->deliver_lock);
    gw_frame_t *f = gw_frame_format(tb__gw_bus_epoch(gw), ev, &e->last_version);
    uint64_t wake = f ? push_to_loops(gw, mask, GW_MSG_EVENT, e->topology, f) : 0;
    pthread_mutex_unlock(&e->deliver_lock);
    wake_loops(gw, wake);
    gw_frame_unref(f);
}

static void on_dropped(uint64_t count, void *ud)
{
    entry_t *e = ud;
    (void)count;
    tb_gateway_t *gw = e->fanout->gw;
    uint64_t mask = atomic_load(&e->loop_mask);
    wake_loops(gw, push_to_loops(gw, mask, GW_MSG_DROPPED, e->topology, NULL));
}

static entry_t *find(gw_fanout_t *f, const char *topology, entry_t ***link_out)
{
    entry_t **link = &f->buckets[bucket_of(topology)];
    for (; *link; link = &(*link)->next) {
        if (strcmp((*link)->topology, topology) == 0)
            break;
    }
    if (link_out)
        *link_out = link;
    return *link;
}

/* Drops a reference (lock held); returns the subscription to close if it was the last. */
static tb_sub_t *put_locked(entry_t *e, entry_t **to_free)
{
    *to_free = NULL;
    if (--e->refs > 0)
        return NULL;
    *to_free = e;
    return e->sub;
}

/* Closes and frees what put_locked handed over, outside the lock (closing waits for
 * a running callback, which never takes the lock). */
static void finish_put(tb_sub_t *sub, entry_t *e)
{
    tb_sub_close(sub);
    if (e)
        entry_free(e);
}

/*
 * Subscribes e if nobody has or is doing it. Lock held on entry and exit; it
 * is released around the bus call. TB_OK if e is subscribed when it returns.
 */
static tb_status subscribe_locked(gw_fanout_t *f, entry_t *e)
{
    while (e->subscribing)
        pthread_cond_wait(&f->subscribed, &f->lock);
    if (e->sub)
        return TB_OK;
    tb_bus_t *bus = tb__gw_bus(f->gw);
    if (!bus || !e->linked)
        return TB_EBACKEND;
    e->subscribing = true;
    pthread_mutex_unlock(&f->lock);
    char pattern[TB_TOPIC_BUF_SIZE];
    tb_topic_build_topology_pattern(pattern, e->topology);
    tb_sub_handlers_t h = {.on_event = on_event, .on_dropped = on_dropped};
    tb_sub_t *sub = NULL;
    tb_status st = tb_bus_subscribe(bus, pattern, &h, e, &sub);
    pthread_mutex_lock(&f->lock);
    e->subscribing = false;
    pthread_cond_broadcast(&f->subscribed);
    if (st == TB_OK) {
        e->sub = sub;
        if (e->linked)
            f->unsubscribed--;
    }
    return st;
}

void gw_fanout_acquire(gw_fanout_t *f, unsigned loop, const char *topology)
{
    pthread_mutex_lock(&f->lock);
    entry_t **link;
    entry_t *e = find(f, topology, &link);
    if (!e) {
        e = tb_xcalloc(1, sizeof *e);
        e->fanout = f;
        strcpy(e->topology, topology);
        e->loop_streams = tb_xcalloc(f->gw->nloops, sizeof *e->loop_streams);
        pthread_mutex_init(&e->deliver_lock, NULL);
        e->last_version = TB_CURSOR_NO_VERSION; /* none seen on the bus yet */
        atomic_init(&e->loop_mask, 0);
        e->refs = 1; /* registered */
        e->linked = true;
        *link = e;
        f->count++;
        f->unsubscribed++;
    }
    if (e->loop_streams[loop]++ == 0)
        atomic_fetch_or(&e->loop_mask, UINT64_C(1) << loop);
    pthread_mutex_unlock(&f->lock);
}

void gw_fanout_release(gw_fanout_t *f, unsigned loop, const char *topology)
{
    pthread_mutex_lock(&f->lock);
    entry_t **link;
    entry_t *e = find(f, topology, &link);
    TB_ASSERT(e && e->loop_streams[loop] > 0);
    tb_sub_t *close = NULL;
    entry_t *dead = NULL;
    if (--e->loop_streams[loop] == 0 &&
        (atomic_fetch_and(&e->loop_mask, ~(UINT64_C(1) << loop)) & ~(UINT64_C(1) << loop)) == 0) {
        *link = e->next;
        e->linked = false;
        f->count--;
        if (!e->sub)
            f->unsubscribed--;
        close = put_locked(e, &dead);
    }
    pthread_mutex_unlock(&f->lock);
    if (dead)
        finish_put(close, dead);
}

tb_status gw_fanout_ensure(gw_fanout_t *f, const char *topology)
{
    pthread_mutex_lock(&f->lock);
    entry_t *e = find(f, topology, NULL);
    if (!e) {
        pthread_mutex_unlock(&f->lock);
        return TB_ENOTFOUND; /* its streams closed meanwhile */
    }
    e->refs++;
    tb_status st = subscribe_locked(f, e);
    entry_t *dead;
    tb_sub_t *close = put_locked(e, &dead);
    pthread_mutex_unlock(&f->lock);
    if (dead)
        finish_put(close, dead);
    return st;
}

void gw_fanout_retry(gw_fanout_t *f)
{
    pthread_mutex_lock(&f->lock);
    if (f->unsubscribed == 0 || !tb__gw_bus(f->gw)) {
        pthread_mutex_unlock(&f->lock);
        return;
    }
    /* Take references first: the lock is released around each subscribe. */
    size_t n = 0;
    entry_t **pending = tb_xcalloc(f->unsubscribed, sizeof *pending);
    for (size_t b = 0; b < REGISTRY_BUCKETS && n < f->unsubscribed; b++) {
        for (entry_t *e = f->buckets[b]; e && n < f->unsubscribed; e = e->next) {
            if (!e->sub && !e->subscribing) {
                e->refs++;
                pending[n++] = e;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        entry_t *e = pending[i];
        bool was_missing = !e->sub;
        if (subscribe_locked(f, e) == TB_OK && was_missing) {
            /* Events may have gone by while it was missing: the streams resync. */
            wake_loops(f->gw, push_to_loops(f->gw, atomic_load(&e->loop_mask), GW_MSG_DROPPED,
                                            e->topology, NULL));
        } else if (!e->sub) {
            tb_log(TB_LOG_DEBUG, "gateway", "subscribe topology=%s still failing", e->topology);
        }
        entry_t *dead;
        tb_sub_t *close = put_locked(e, &dead);
        if (dead) {
            pthread_mutex_unlock(&f->lock);
            finish_put(close, dead);
            pthread_mutex_lock(&f->lock);
        }
    }
    pthread_mutex_unlock(&f->lock);
    free(pending);
}

size_t gw_fanout_count(gw_fanout_t *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->count - f->unsubscribed;
    pthread_mutex_unlock(&f->lock);
    return n;
}
