/*
 * The disabled bus (`none`): publishing (confirmed or not) succeeds and goes nowhere,
 * subscriptions never receive, the state is DISABLED and replay is always
 * "gone". No threads, no locks, no callbacks.
 */
#include <stdlib.h>

#include "bus_int.h"
#include "tb/alloc.h"

static tb_status null_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts)
{
    (void)url;
    tb_bus_t *bus = tb_xcalloc(1, sizeof *bus);
    tb__bus_base_init(bus, &tb__bus_null_ops, opts);
    bus->epoch = tb__bus_random_epoch();
    atomic_store(&bus->state, TB_BUS_DISABLED);
    *out = bus;
    return TB_OK;
}

static void null_destroy(tb_bus_t *bus)
{
    tb__bus_base_cleanup(bus);
    free(bus);
}

static tb_status null_publish(tb_bus_t *bus, tb_event_t *ev)
{
    (void)bus;
    (void)ev;
    return TB_OK;
}

static tb_status null_subscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    (void)bus;
    (void)sub;
    return TB_OK;
}

static void null_unsubscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    (void)bus;
    (void)sub;
}

static tb_status null_drain(tb_bus_t *bus, int timeout_ms)
{
    (void)bus;
    (void)timeout_ms;
    return TB_OK;
}

static tb_status null_head(tb_bus_t *bus, tb_cursor_t *out)
{
    *out = (tb_cursor_t){bus->epoch, 0, TB_CURSOR_NO_VERSION};
    return TB_OK;
}

static tb_status null_replay(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud)
{
    (void)bus;
    (void)pattern;
    (void)after;
    (void)on_event;
    (void)ud;
    return TB_ENOTFOUND;
}

/* Confirmed, as every publish here: the bus is disabled, not failing. */
static void null_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *const *items, size_t n,
                                   int64_t deadline_ms)
{
    (void)bus;
    (void)deadline_ms;
    for (size_t i = 0; i < n; i++)
        items[i]->result = TB_OK;
}

const struct tb_bus_ops tb__bus_null_ops = {
    .name = "null",
    .create = null_create,
    .destroy = null_destroy,
    .publish = null_publish,
    .subscribe = null_subscribe,
    .unsubscribe = null_unsubscribe,
    .drain = null_drain,
    .head = null_head,
    .replay = null_replay,
    .publish_confirmed = null_publish_confirmed,
};
