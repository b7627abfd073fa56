/*
 * The publishing pass: read the oldest outbox rows, hand them to the bus as
 * one confirmed batch, delete what the bus confirmed, set aside what it can
 * never accept. Relay thread only.
 *
 * Order: rows are read in seq order (commit order per topology) and only
 * the confirmed prefix of a batch is deleted: once a row fails, the rows
 * after it are published again with it, even if the bus confirmed them, so
 * no row can overtake an earlier one that is still unconfirmed. The repeats
 * are counted and dropped by JetStream by Nats-Msg-Id.
 */
#include <stdlib.h>
#include <string.h>

#include "relay_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

bool tb__relay_lease(tb_relay_t *r, bool force)
{
    int64_t now = tb_clock_mono_ms();
    if (!force && now < r->lease_renew_ms)
        return atomic_load(&r->holding);
    bool held = false;
    tb_store_err_t err;
    tb_status st = tb_store_outbox_lease(r->deps.store, r->holder, r->lease_ms, &held, &err);
    if (st) {
        /* Unknown: stop publishing until the store answers; the lease may lapse meanwhile. */
        tb_log(TB_LOG_WARN, "relay", "outbox lease failed: %s", err.message);
        held = false;
        r->lease_renew_ms = now + 1000;
    } else {
        /* A holder renews three times per lease; the others look twice per lease. */
        r->lease_renew_ms = now + (held ? r->lease_ms / 3 : r->lease_ms / 2);
    }
    bool was = atomic_exchange(&r->holding, held);
    if (was != held)
        tb_log(TB_LOG_INFO, "relay", "%s the outbox lease: holder=%s",
               held ? "took" : "lost", r->holder);
    return held;
}

void tb__relay_refresh_stats(tb_relay_t *r)
{
    int64_t depth, age, aside;
    if (tb_store_outbox_stats(r->deps.store, &depth, &age, &aside, NULL))
        return;
    atomic_store(&r->depth, depth);
    atomic_store(&r->oldest_age_ms, age);
    atomic_store(&r->set_aside_rows, aside);
}

static void set_aside(tb_relay_t *r, const tb_outbox_row_t *row, tb_status why)
{
    char reason[64];
    snprintf(reason, sizeof reason, "refused by the bus: %s", tb_status_str(why));
    tb_store_err_t err;
    if (tb_store_outbox_set_aside(r->deps.store, row->seq, reason, &err)) {
        tb_log(TB_LOG_WARN, "relay", "cannot set outbox row aside seq=%lld: %s",
               (long long)row->seq, err.message);
        return;
    }
    atomic_fetch_add(&r->set_aside, 1);
    tb_log(TB_LOG_ERR, "relay", "outbox row set aside seq=%lld topic=%s reason=\"%s\"",
           (long long)row->seq, row->topic, reason);
}

/*
 * Publishes one batch and settles it. Returns TB_OK if every row was either
 * confirmed (and deleted) or set aside, else the first failure; *more says
 * whether the batch was full (more rows may wait).
 */
static tb_status publish_batch(tb_relay_t *r, tb_bus_t *bus, bool *more)
{
    tb_outbox_row_t *rows = NULL;
    size_t n = 0;
    tb_store_err_t err;
    *more = false;
    tb_status st = tb_store_outbox_read(r->deps.store, (size_t)r->batch, &rows, &n, &err);
    if (st || n == 0)
        return st;
    *more = n == (size_t)r->batch;
    tb_bus_confirm_item_t *items = tb_xcalloc(n, sizeof *items);
    int64_t *done = tb_xcalloc(n, sizeof *done);
    size_t ndone = 0;
    for (size_t i = 0; i < n; i++) {
        items[i] = (tb_bus_confirm_item_t){.topic = rows[i].topic, .msg_id = rows[i].msg_id,
                                           .envelope = rows[i].envelope, .len = rows[i].len};
        if (rows[i].seq <= r->attempted_max_seq)
            atomic_fetch_add(&r->republished, 1);
        else
            r->attempted_max_seq = rows[i].seq;
    }
    tb_bus_publish_confirmed(bus, items, n, r->confirm_timeout_ms);
    st = TB_OK;
    for (size_t i = 0; i < n && st == TB_OK; i++) {
        if (items[i].result == TB_OK)
            done[ndone++] = rows[i].seq;
        else if (items[i].result == TB_EINVAL)
            set_aside(r, &rows[i], items[i].result);
        else
            st = items[i].result; /* this row and every later one go again */
    }
    tb_status del = tb_store_outbox_delete(r->deps.store, done, ndone, &err);
    if (del == TB_OK)
        atomic_fetch_add(&r->confirmed, ndone);
    else
        tb_log(TB_LOG_WARN, "relay", "cannot delete %zu confirmed outbox rows: %s", ndone,
               err.message);
    free(done);
    free(items);
    tb_store_outbox_rows_free(rows, n);
    return st ? st : del;
}

tb_status tb__relay_drain(tb_relay_t *r)
{
    for (;;) {
        if (atomic_load(&r->stop))
            return TB_OK;
        tb_bus_t *bus = atomic_load(&r->bus);
        if (!bus || tb_bus_state(bus) == TB_BUS_DOWN)
            return TB_ECLOSED;
        if (!tb__relay_lease(r, false))
            return TB_ECONFLICT;
        bool more = false;
        tb_status st = publish_batch(r, bus, &more);
        if (st) {
            atomic_fetch_add(&r->failed_batches, 1);
            return st;
        }
        if (!more)
            return TB_OK;
    }
}
