/*
 * Subscription registry and bus callbacks; see gw_fanout.h for threads and
 * lock order.
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
    tb_sub_t *sub;
    atomic_uint_fast64_t loop_mask; /* read by callbacks without the lock */
    unsigned *loop_streams;         /* per loop; under the registry lock */
} entry_t;

struct gw_fanout {
    tb_gateway_t *gw;
    pthread_mutex_t lock;
    entry_t *buckets[REGISTRY_BUCKETS];
    size_t count;
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
    *out = f;
}

static void entry_free(entry_t *e)
{
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
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* Pushes a message to every loop in mask; a full inbox marks that loop for a full resync. */
static void push_to_loops(tb_gateway_t *gw, uint64_t mask, gw_msg_kind kind, const char *topology,
                          gw_frame_t *frame)
{
    for (unsigned i = 0; i < gw->nloops; i++) {
        if (!(mask & (UINT64_C(1) << i)))
            continue;
        gw_msg_t *m = tb_xcalloc(1, sizeof *m);
        m->kind = kind;
        m->fd = -1;
        m->frame = frame ? gw_frame_ref(frame) : NULL;
        strcpy(m->topology, topology);
        if (gw_inbox_push_take(&gw->loops[i].inbox, m) == TB_EFULL) {
            /* The loop is far behind: it resyncs every stream when it catches up. */
            atomic_store(&gw->loops[i].overflowed, true);
            atomic_fetch_add(&gw->counters.inbox_overflows, 1);
        }
    }
}

static void on_event(tb_event_t *ev, void *ud)
{
    entry_t *e = ud;
    uint64_t mask = atomic_load(&e->loop_mask);
    if (!mask)
        return;
    gw_frame_t *f = tb__gw_sse_format_frame(tb__gw_bus_epoch(e->fanout->gw), ev);
    if (!f)
        return;
    push_to_loops(e->fanout->gw, mask, GW_MSG_EVENT, e->topology, f);
    gw_frame_unref(f);
}

static void on_dropped(uint64_t count, void *ud)
{
    entry_t *e = ud;
    (void)count;
    push_to_loops(e->fanout->gw, atomic_load(&e->loop_mask), GW_MSG_DROPPED, e->topology, NULL);
}

/* Subscribes e on bus. Registry lock held; the handlers never take it. */
static tb_status subscribe(entry_t *e, tb_bus_t *bus)
{
    char pattern[TB_TOPIC_BUF_SIZE];
    tb_topic_build_topology_pattern(pattern, e->topology);
    tb_sub_handlers_t h = {.on_event = on_event, .on_dropped = on_dropped};
    return tb_bus_subscribe(bus, pattern, &h, e, &e->sub);
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

tb_status gw_fanout_acquire(gw_fanout_t *f, unsigned loop, const char *topology)
{
    pthread_mutex_lock(&f->lock);
    entry_t **link;
    entry_t *e = find(f, topology, &link);
    if (!e) {
        e = tb_xcalloc(1, sizeof *e);
        e->fanout = f;
        strcpy(e->topology, topology);
        e->loop_streams = tb_xcalloc(f->gw->nloops, sizeof *e->loop_streams);
        atomic_init(&e->loop_mask, 0);
        /* Without a bus yet the entry waits unsubscribed; gw_fanout_attach subscribes it. */
        tb_bus_t *bus = tb__gw_bus(f->gw);
        if (bus && subscribe(e, bus)) {
            pthread_mutex_unlock(&f->lock);
            entry_free(e);
            return TB_EBACKEND;
        }
        *link = e;
        f->count++;
    }
    if (e->loop_streams[loop]++ == 0)
        atomic_fetch_or(&e->loop_mask, UINT64_C(1) << loop);
    pthread_mutex_unlock(&f->lock);
    return TB_OK;
}

void gw_fanout_release(gw_fanout_t *f, unsigned loop, const char *topology)
{
    pthread_mutex_lock(&f->lock);
    entry_t **link;
    entry_t *e = find(f, topology, &link);
    TB_ASSERT(e && e->loop_streams[loop] > 0);
    bool last = false;
    if (--e->loop_streams[loop] == 0 &&
        (atomic_fetch_and(&e->loop_mask, ~(UINT64_C(1) << loop)) & ~(UINT64_C(1) << loop)) == 0) {
        *link = e->next;
        f->count--;
        last = true;
    }
    pthread_mutex_unlock(&f->lock);
    if (last) {
        /* Outside the lock: closing waits for a running callback, which never takes it. */
        tb_sub_close(e->sub);
        entry_free(e);
    }
}

void gw_fanout_attach(gw_fanout_t *f, tb_bus_t *bus)
{
    pthread_mutex_lock(&f->lock);
    for (size_t b = 0; b < REGISTRY_BUCKETS; b++) {
        for (entry_t *e = f->buckets[b]; e; e = e->next) {
            if (!e->sub && subscribe(e, bus))
                tb_log(TB_LOG_WARN, "gateway", "cannot subscribe topology=%s", e->topology);
        }
    }
    pthread_mutex_unlock(&f->lock);
}

size_t gw_fanout_count(gw_fanout_t *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->count;
    pthread_mutex_unlock(&f->lock);
    return n;
}
