/*
 * The gateway's one bus subscription and its topology registry; see
 * gw_fanout.h for threads and lock order. The registry is a fixed hash
 * table whose buckets are split over STRIPES locks: loops registering
 * streams and bus threads delivering events meet on one stripe only when
 * their topologies hash to it. An entry lives exactly as long as its
 * topology has a stream, and is only touched under its stripe's lock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gw_fanout.h"
#include "gw_int.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { BUCKETS = 16384, STRIPES = 64, ATTACH_RETRY_MS = 1000 };

#define ALL_TOPOLOGIES "topology.>"

typedef struct entry {
    struct entry *next;
    int64_t last_version;   /* newest version seen on the bus (TB_CURSOR_NO_VERSION: none) */
    uint64_t loop_mask;     /* loops holding a stream of it */
    char topology[TB_TOPOLOGY_ID_BUF_SIZE];
    unsigned loop_streams[]; /* streams per loop */
} entry_t;

/* A stripe's lock, alone on its cache line: stripes are taken by different threads. */
typedef struct stripe {
    _Alignas(64) pthread_mutex_t lock;
} stripe_t;

struct gw_fanout {
    tb_gateway_t *gw;
    stripe_t stripes[STRIPES];
    entry_t *buckets[BUCKETS]; /* bucket b is guarded by stripes[b % STRIPES] */
    atomic_size_t count;       /* registered topologies */
    /* The subscription on topology.>: set once by gw_fanout_attach (one thread at a time),
     * read by gw_fanout_destroy after that thread stopped. */
    tb_sub_t *sub;
    atomic_bool live;          /* sub is set */
    bool failing;              /* the last attempt failed (logged once per episode) */
    int64_t failed_at_ms;      /* when it failed: the next attempt waits ATTACH_RETRY_MS */
};

static size_t bucket_of(const char *id)
{
    size_t h = 14695981039346656037u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    return h % BUCKETS;
}

static pthread_mutex_t *stripe_of(gw_fanout_t *f, size_t bucket)
{
    return &f->stripes[bucket % STRIPES].lock;
}

/* The entry of topology in bucket b (its stripe locked), or NULL. */
static entry_t **find(gw_fanout_t *f, size_t b, const char *topology)
{
    entry_t **link = &f->buckets[b];
    while (*link && strcmp((*link)->topology, topology) != 0)
        link = &(*link)->next;
    return link;
}

void gw_fanout_create(gw_fanout_t **out, tb_gateway_t *gw)
{
    gw_fanout_t *f = tb_xcalloc(1, sizeof *f);
    f->gw = gw;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&f->stripes[i].lock, NULL);
    atomic_init(&f->count, 0);
    atomic_init(&f->live, false);
    *out = f;
}

void gw_fanout_destroy(gw_fanout_t *f)
{
    if (!f)
        return;
    /* No callback runs once this returns, so the registry may go. */
    gw_fanout_detach(f);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (entry_t *e = f->buckets[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&f->stripes[i].lock);
    free(f);
}

/* ---- the loops' side ------------------------------------------------------- */

void gw_fanout_acquire(gw_fanout_t *f, unsigned loop, const char *topology)
{
    size_t b = bucket_of(topology);
    pthread_mutex_lock(stripe_of(f, b));
    entry_t **link = find(f, b, topology);
    entry_t *e = *link;
    if (!e) {
        e = tb_xcalloc(1, sizeof *e + f->gw->nloops * sizeof e->loop_streams[0]);
        strcpy(e->topology, topology);
        e->last_version = TB_CURSOR_NO_VERSION; /* none seen on the bus yet */
        *link = e;
        atomic_fetch_add(&f->count, 1);
    }
    e->loop_streams[loop]++;
    e->loop_mask |= UINT64_C(1) << loop;
    pthread_mutex_unlock(stripe_of(f, b));
}

void gw_fanout_release(gw_fanout_t *f, unsigned loop, const char *topology)
{
    size_t b = bucket_of(topology);
    pthread_mutex_lock(stripe_of(f, b));
    entry_t **link = find(f, b, topology);
    entry_t *e = *link;
    TB_ASSERT(e && e->loop_streams[loop] > 0);
    if (--e->loop_streams[loop] == 0)
        e->loop_mask &= ~(UINT64_C(1) << loop);
    if (e->loop_mask == 0) {
        *link = e->next;
        atomic_fetch_sub(&f->count, 1);
        free(e);
    }
    pthread_mutex_unlock(stripe_of(f, b));
}

/* ---- delivery ------------------------------------------------------------- */

/* Wakes the loops in mask; called holding no lock. */
static void wake_loops(tb_gateway_t *gw, uint64_t mask)
{
    for (unsigned i = 0; mask && i < gw->nloops; i++) {
        if (mask & (UINT64_C(1) << i))
            gw_inbox_wake(&gw->loops[i].inbox);
    }
}

/* Tells every loop that events were lost: each resyncs all its streams. */
static void resync_all(tb_gateway_t *gw)
{
    for (unsigned i = 0; i < gw->nloops; i++) {
        /* A closed inbox means the loop is stopping: nothing left to resync. */
        gw_inbox_push_take(&gw->loops[i].inbox, gw_msg_new(GW_MSG_DROPPED));
    }
}

/* Asked by the bus before it decodes an event: only registered topologies are worth it. */
static bool want(const char *topic, void *ud)
{
    gw_fanout_t *f = ud;
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
    if (tb_topic_topology_id(topic, id) != TB_OK)
        return false;
    size_t b = bucket_of(id);
    pthread_mutex_lock(stripe_of(f, b));
    bool found = *find(f, b, id) != NULL;
    pthread_mutex_unlock(stripe_of(f, b));
    return found;
}

static void on_event(tb_event_t *ev, void *ud)
{
    gw_fanout_t *f = ud;
    tb_gateway_t *gw = f->gw;
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
    if (tb_topic_topology_id(ev->topic, id) != TB_OK)
        return;
    size_t b = bucket_of(id);
    uint64_t wake = 0;
    gw_frame_t *frame = NULL;
    pthread_mutex_lock(stripe_of(f, b));
    entry_t *e = *find(f, b, id);
    /*
     * Stamping a frame's cursor and pushing it are one step under the stripe's lock, so
     * every loop receives frames in the order their versions were stamped, also when mem
     * delivers from several publisher threads at once: a cursor never claims a version
     * that a frame still on its way to the same stream carries.
     */
    if (e)
        frame = gw_frame_format(tb__gw_bus_epoch(gw), ev, &e->last_version);
    for (unsigned i = 0; frame && i < gw->nloops; i++) {
        if (!(e->loop_mask & (UINT64_C(1) << i)))
            continue;
        bool woken = false;
        if (gw_inbox_push_frame(&gw->loops[i].inbox, frame, &woken) == TB_EFULL) {
            /* The loop is far behind: it resyncs every stream when it catches up. */
            atomic_store(&gw->loops[i].overflowed, true);
            atomic_fetch_add(&gw->counters.inbox_overflows, 1);
            woken = true; /* make sure it looks */
        }
        if (woken)
            wake |= UINT64_C(1) << i;
    }
    pthread_mutex_unlock(stripe_of(f, b));
    wake_loops(gw, wake);
    gw_frame_unref(frame);
}

static void on_dropped(uint64_t count, void *ud)
{
    gw_fanout_t *f = ud;
    (void)count;
    resync_all(f->gw);
}

/* ---- the subscription ------------------------------------------------------ */

bool gw_fanout_live(gw_fanout_t *f)
{
    return atomic_load(&f->live);
}

void gw_fanout_attach(gw_fanout_t *f)
{
    if (atomic_load(&f->live))
        return;
    tb_bus_t *bus = tb__gw_bus(f->gw);
    if (!bus || (f->failing && tb_clock_mono_ms() - f->failed_at_ms < ATTACH_RETRY_MS))
        return;
    static const tb_sub_handlers_t h = {.on_event = on_event, .on_dropped = on_dropped,
                                        .want = want};
    tb_sub_t *sub = NULL;
    tb_status st = tb_bus_subscribe(bus, ALL_TOPOLOGIES, &h, f, &sub);
    if (st != TB_OK) {
        if (!f->failing)
            tb_log(TB_LOG_WARN, "gateway", "cannot subscribe to %s (%s); retrying every second",
                   ALL_TOPOLOGIES, tb_status_str(st));
        f->failing = true;
        f->failed_at_ms = tb_clock_mono_ms();
        return;
    }
    f->sub = sub;
    atomic_store(&f->live, true);
    if (f->failing)
        tb_log(TB_LOG_NOTICE, "gateway", "subscribed to %s", ALL_TOPOLOGIES);
    f->failing = false;
    /* A stream registered before `live` was set may have read its snapshot before events
     * reached it: every stream resyncs. (One registered after it reads `live` as true.) */
    if (atomic_load(&f->count) > 0)
        resync_all(f->gw);
}

void gw_fanout_detach(gw_fanout_t *f)
{
    atomic_store(&f->live, false);
    tb_sub_close(f->sub);
    f->sub = NULL;
}

size_t gw_fanout_count(gw_fanout_t *f)
{
    return atomic_load(&f->count);
}
