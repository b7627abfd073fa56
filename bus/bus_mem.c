/*
 * The in-process bus (mem://): thread-safe, always UP. A publish numbers the
 * event, keeps a reference in a ring of the most recent events (for replay)
 * and calls every matching subscription on the publisher's own thread. A
 * confirmed publish decodes each envelope and publishes it the same way.
 *
 * Ownership: the ring holds one reference per stored event; a publish holds
 * references on the matched subscriptions while it calls them, so a callback
 * may close its own or another subscription.
 *
 * Locks: ring_mu (sequence and ring) and index_lock (rwlock over the trie)
 * are never held together and never while a callback runs, so callbacks may
 * publish, subscribe and unsubscribe. Events published concurrently from
 * several threads get distinct increasing sequences, but may reach a
 * subscriber out of sequence order; from one thread, order is kept.
 */
#include <stdlib.h>

#include "bus_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"

enum { STACK_MATCHES = 32 };

typedef struct mem_bus {
    tb_bus_t base;
    pthread_rwlock_t index_lock;
    tb_mem_index_t *index;
    pthread_mutex_t ring_mu;
    tb_event_t **ring; /* ring[seq % ring_size] for seq in [tail, head] */
    size_t ring_size;
    size_t ring_bytes;     /* payload bytes of the events held */
    size_t ring_max_bytes; /* the ring also gives up old events to stay under this */
    uint64_t head; /* sequence of the newest event; 0 before the first */
    uint64_t tail; /* sequence of the oldest event held (head + 1 when empty) */
} mem_bus_t;

static mem_bus_t *mem_of(tb_bus_t *bus)
{
    return tb_container_of(bus, mem_bus_t, base);
}

static tb_status mem_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts)
{
    (void)url;
    mem_bus_t *m = tb_xcalloc(1, sizeof *m);
    tb__bus_base_init(&m->base, &tb__bus_mem_ops, opts);
    m->base.epoch = tb__bus_random_epoch();
    atomic_store(&m->base.state, TB_BUS_UP);
    TB_ASSERT(pthread_rwlock_init(&m->index_lock, NULL) == 0);
    TB_ASSERT(pthread_mutex_init(&m->ring_mu, NULL) == 0);
    tb__mem_index_create(&m->index);
    m->ring_size = opts->ring_size;
    m->ring_max_bytes = opts->ring_max_bytes;
    m->ring = tb_xcalloc(m->ring_size, sizeof *m->ring);
    m->tail = 1;
    *out = &m->base;
    return TB_OK;
}

static void mem_destroy(tb_bus_t *bus)
{
    mem_bus_t *m = mem_of(bus);
    for (size_t i = 0; i < m->ring_size; i++)
        tb_event_unref(m->ring[i]);
    free(m->ring);
    tb__mem_index_destroy(m->index);
    pthread_mutex_destroy(&m->ring_mu);
    pthread_rwlock_destroy(&m->index_lock);
    tb__bus_base_cleanup(&m->base);
    free(m);
}

/* Drops the oldest held event. ring_mu held; the unref only frees memory. */
static void evict_oldest(mem_bus_t *m)
{
    tb_event_t **slot = &m->ring[m->tail % m->ring_size];
    m->ring_bytes -= (*slot)->payload_len;
    tb_event_unref(*slot);
    *slot = NULL;
    m->tail++;
}

static tb_status mem_publish(tb_bus_t *bus, tb_event_t *ev)
{
    mem_bus_t *m = mem_of(bus);
    pthread_mutex_lock(&m->ring_mu);
    ev->seq = ++m->head;
    if (m->head - m->tail + 1 > m->ring_size)
        evict_oldest(m); /* by count: the slot is about to be reused */
    m->ring[ev->seq % m->ring_size] = tb_event_ref(ev);
    m->ring_bytes += ev->payload_len;
    /* By size: large events must not pin gigabytes for replay. The newest always stays. */
    while (m->ring_bytes > m->ring_max_bytes && m->tail < m->head)
        evict_oldest(m);
    pthread_mutex_unlock(&m->ring_mu);

    tb_sub_t *stack[STACK_MATCHES];
    tb_sub_vec_t matches = {.items = stack, .len = 0, .cap = STACK_MATCHES};
    pthread_rwlock_rdlock(&m->index_lock);
    tb__mem_index_match(m->index, ev->topic, &matches);
    pthread_rwlock_unlock(&m->index_lock);
    for (size_t i = 0; i < matches.len; i++) {
        tb__sub_deliver(matches.items[i], ev);
        tb__sub_unref(matches.items[i]);
    }
    if (matches.items != stack)
        free(matches.items);
    return TB_OK;
}

static tb_status mem_subscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    mem_bus_t *m = mem_of(bus);
    pthread_rwlock_wrlock(&m->index_lock);
    tb__mem_index_add(m->index, sub);
    pthread_rwlock_unlock(&m->index_lock);
    return TB_OK;
}

static void mem_unsubscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    mem_bus_t *m = mem_of(bus);
    pthread_rwlock_wrlock(&m->index_lock);
    tb__mem_index_remove(m->index, sub);
    pthread_rwlock_unlock(&m->index_lock);
}

static tb_status mem_drain(tb_bus_t *bus, int timeout_ms)
{
    (void)bus;
    (void)timeout_ms;
    return TB_OK; /* delivery is synchronous: nothing is ever pending */
}

static tb_status mem_head(tb_bus_t *bus, tb_cursor_t *out)
{
    mem_bus_t *m = mem_of(bus);
    pthread_mutex_lock(&m->ring_mu);
    *out = (tb_cursor_t){bus->epoch, m->head, TB_CURSOR_NO_VERSION};
    pthread_mutex_unlock(&m->ring_mu);
    return TB_OK;
}

static tb_status mem_replay(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                            tb_bus_event_cb on_event, void *ud)
{
    mem_bus_t *m = mem_of(bus);
    if (after->epoch != bus->epoch)
        return TB_ENOTFOUND;
    pthread_mutex_lock(&m->ring_mu);
    if (after->seq > m->head || after->seq + 1 < m->tail) {
        pthread_mutex_unlock(&m->ring_mu);
        return TB_ENOTFOUND;
    }
    /* Copy references out so callbacks run without the lock. */
    size_t n = 0;
    tb_event_t **found = tb_xmalloc((size_t)(m->head - after->seq) * sizeof *found);
    for (uint64_t seq = after->seq + 1; seq <= m->head; seq++) {
        tb_event_t *ev = m->ring[seq % m->ring_size];
        if (tb_topic_match(pattern, ev->topic))
            found[n++] = tb_event_ref(ev);
    }
    pthread_mutex_unlock(&m->ring_mu);
    for (size_t i = 0; i < n; i++) {
        on_event(found[i], ud);
        tb_event_unref(found[i]);
    }
    free(found);
    return TB_OK;
}

/* Delivery is synchronous, so an item is confirmed once its subscribers were called. */
static void mem_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *const *items, size_t n,
                                  int64_t deadline_ms)
{
    (void)deadline_ms;
    for (size_t i = 0; i < n; i++) {
        tb_event_t *ev = NULL;
        tb_envelope_error why;
        /* As a subscriber would: the item's topic is the subject, not the envelope's field. */
        if (tb_envelope_decode(items[i]->topic, items[i]->envelope, items[i]->len,
                               tb_clock_wall(), &ev, &why)) {
            items[i]->result = TB_EINVAL;
            continue;
        }
        items[i]->result = mem_publish(bus, ev);
        tb_event_unref(ev);
    }
}

const struct tb_bus_ops tb__bus_mem_ops = {
    .name = "mem",
    .create = mem_create,
    .destroy = mem_destroy,
    .publish = mem_publish,
    .subscribe = mem_subscribe,
    .unsubscribe = mem_unsubscribe,
    .drain = mem_drain,
    .head = mem_head,
    .replay = mem_replay,
    .publish_confirmed = mem_publish_confirmed,
};
