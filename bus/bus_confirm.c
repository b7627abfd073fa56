/*
 * Confirmed publishing (tb_bus_publish_confirmed), for the outbox relay:
 * items are validated once here, a bus that is DOWN answers TB_ECLOSED
 * without sending anything, and the valid items go to the backend's
 * publish_confirmed slot, which sets each one's result by the deadline.
 *
 * Ownership: items are the caller's for the call; the backend gets an array
 * of pointers to the valid ones (on the stack for small batches).
 *
 * Threads: any. bus->confirm_mu serialises calls on one bus (the backend may
 * keep one batch's state in the bus); it is taken with the caller's
 * deadline, so waiting for an earlier call counts in timeout_ms. It is never
 * held by a callback, and no other bus lock is taken while holding it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"

enum { STACK_ITEMS = 64, MSG_ID_MAX_LEN = 64 };

static bool msg_id_valid(const char *id)
{
    size_t len = 0;
    for (const char *p = id; *p; p++, len++) {
        char c = *p;
        if (len == MSG_ID_MAX_LEN || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                       (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return len > 0;
}

static bool item_valid(const tb_bus_confirm_item_t *item)
{
    return item->topic && tb_topic_validate(item->topic, NULL) == TB_OK && item->msg_id &&
           msg_id_valid(item->msg_id) && item->envelope && item->len > 0 &&
           item->len <= TB_ENVELOPE_MAX_BYTES;
}

/* Takes confirm_mu, waiting no later than deadline_ms (monotonic). */
static bool lock_by(pthread_mutex_t *mu, int64_t deadline_ms)
{
    if (pthread_mutex_trylock(mu) == 0)
        return true;
    /* pthread_mutex_timedlock reads CLOCK_REALTIME: convert what is left of the deadline. */
    int64_t left = deadline_ms - tb_clock_mono_ms();
    if (left <= 0)
        return false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + left % 1000 * 1000000;
    ts.tv_sec += left / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    int rc;
    while ((rc = pthread_mutex_timedlock(mu, &ts)) == EINTR) {
    }
    return rc == 0;
}

/* Sets the result of every valid item that is still to be decided. */
static void set_all(tb_bus_confirm_item_t *const *valid, size_t k, tb_status st)
{
    for (size_t i = 0; i < k; i++)
        valid[i]->result = st;
}

tb_status tb_bus_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *items, size_t n,
                                   int timeout_ms)
{
    int64_t deadline = tb_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    if (!bus || (!items && n > 0) || timeout_ms < 0) {
        for (size_t i = 0; items && i < n; i++)
            items[i].result = TB_EINVAL;
        if (bus && items)
            atomic_fetch_add_explicit(&bus->confirm_failed, n, memory_order_relaxed);
        return TB_EINVAL;
    }
    tb_bus_confirm_item_t *stack[STACK_ITEMS];
    tb_bus_confirm_item_t **valid = n <= STACK_ITEMS ? stack : tb_xmalloc(n * sizeof *valid);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].result = item_valid(&items[i]) ? TB_OK : TB_EINVAL;
        if (items[i].result == TB_OK)
            valid[k++] = &items[i];
    }
    if (k > 0 && tb_bus_state(bus) == TB_BUS_DOWN) {
        set_all(valid, k, TB_ECLOSED); /* never buffered for later: the caller retries */
    } else if (k > 0 && !lock_by(&bus->confirm_mu, deadline)) {
        set_all(valid, k, TB_ETIMEDOUT); /* an earlier call held the bus all along */
    } else if (k > 0) {
        bus->ops->publish_confirmed(bus, valid, k, deadline);
        pthread_mutex_unlock(&bus->confirm_mu);
    }
    if (valid != stack)
        free(valid);
    tb_status first = TB_OK;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        ok += items[i].result == TB_OK;
        if (first == TB_OK)
            first = items[i].result;
    }
    /* A confirmed item went out as surely as a fire-and-forget one: count it as published. */
    atomic_fetch_add_explicit(&bus->published, ok, memory_order_relaxed);
    atomic_fetch_add_explicit(&bus->confirmed, ok, memory_order_relaxed);
    atomic_fetch_add_explicit(&bus->confirm_failed, n - ok, memory_order_relaxed);
    return first;
}

tb_status tb_bus_confirm_item_init(tb_bus_confirm_item_t *item, const char *topic,
                                   const char *envelope, size_t len, char *id_buf)
{
    if (!item || !topic || !envelope || !id_buf)
        return TB_EINVAL;
    tb_event_t *ev = NULL;
    tb_envelope_error why;
    /* A full decode: only a whole envelope yields an id worth confirming under. */
    if (tb_envelope_decode(topic, envelope, len, 0.0, &ev, &why))
        return TB_EINVAL;
    bool has_id = ev->id[0] != '\0';
    if (has_id)
        memcpy(id_buf, ev->id, sizeof ev->id);
    tb_event_unref(ev);
    if (!has_id)
        return TB_EINVAL;
    *item = (tb_bus_confirm_item_t){
        .topic = topic, .msg_id = id_buf, .envelope = envelope, .len = len, .result = TB_OK};
    return TB_OK;
}
