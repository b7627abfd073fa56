/*
 * The publishing pass: read the oldest outbox rows, hand them to the bus as
 * one confirmed batch, delete what the bus confirmed, set aside what it can
 * never accept. Relay thread only.
 *
 * Deletion is batched: a confirmed row is kept in memory and skipped by the
 * following reads until one transaction deletes up to 512 of them, at the
 * latest 100 ms after the first; one delete per event would double the
 * store's write transactions. A relay that dies in between leaves confirmed
 * rows behind: its successor publishes them again, and JetStream drops them
 * by Nats-Msg-Id (counted as republished).
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

static int cmp_seq(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static bool kept(const tb_relay_t *r, int64_t seq)
{
    return bsearch(&seq, r->confirmed_seqs, r->nconfirmed, sizeof seq, cmp_seq) != NULL;
}

tb_status tb__relay_flush_deletes(tb_relay_t *r, bool force)
{
    if (r->nconfirmed == 0 || (!force && tb_clock_mono_ms() < r->delete_due_ms))
        return TB_OK;
    tb_store_err_t err;
    tb_status st = tb_store_outbox_delete(r->deps.store, r->confirmed_seqs, r->nconfirmed, &err);
    if (st) {
        tb_log(TB_LOG_WARN, "relay", "cannot delete %zu confirmed outbox rows: %s",
               r->nconfirmed, err.message);
        return st;
    }
    r->nconfirmed = 0;
    r->delete_due_ms = 0;
    return TB_OK;
}

/* Keeps a confirmed row for the next deletion; forces one when the set is full. */
static tb_status keep_confirmed(tb_relay_t *r, int64_t seq)
{
    if (r->nconfirmed == TB_RELAY_DELETE_MAX) {
        tb_status st = tb__relay_flush_deletes(r, true);
        if (st)
            return st;
    }
    if (r->nconfirmed == 0)
        r->delete_due_ms = tb_clock_mono_ms() + TB_RELAY_DELETE_AFTER_MS;
    r->confirmed_seqs[r->nconfirmed++] = seq;
    atomic_fetch_add(&r->confirmed, 1);
    return TB_OK;
}

/*
 * Publishes one batch of rows not yet confirmed and settles it. Returns
 * TB_OK if every row was either confirmed (kept for deletion) or set aside,
 * else the first failure; *more says whether more rows may wait.
 */
static tb_status publish_batch(tb_relay_t *r, tb_bus_t *bus, bool *more)
{
    tb_outbox_row_t *rows = NULL;
    size_t n = 0;
    tb_store_err_t err;
    *more = false;
    /* The confirmed rows kept for deletion come back too: read past them. */
    size_t want = (size_t)r->batch + r->nconfirmed;
    tb_status st = tb_store_outbox_read(r->deps.store, want, &rows, &n, &err);
    if (st || n == 0)
        return st;
    *more = n == want;
    tb_bus_confirm_item_t *items = tb_xcalloc(n, sizeof *items);
    tb_outbox_row_t **sent = tb_xcalloc(n, sizeof *sent);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept(r, rows[i].seq))
            continue;
        sent[k] = &rows[i];
        items[k++] = (tb_bus_confirm_item_t){.topic = rows[i].topic, .msg_id = rows[i].msg_id,
                                             .envelope = rows[i].envelope, .len = rows[i].len};
        if (rows[i].seq <= r->attempted_max_seq)
            atomic_fetch_add(&r->republished, 1);
        else
            r->attempted_max_seq = rows[i].seq;
    }
    if (k > 0)
        tb_bus_publish_confirmed(bus, items, k, r->confirm_timeout_ms);
    for (size_t i = 0; i < k && st == TB_OK; i++) {
        if (items[i].result == TB_OK)
            st = keep_confirmed(r, sent[i]->seq);
        else if (items[i].result == TB_EINVAL)
            set_aside(r, sent[i], items[i].result);
        else
            st = items[i].result; /* this row and every later one go again */
    }
    qsort(r->confirmed_seqs, r->nconfirmed, sizeof r->confirmed_seqs[0], cmp_seq);
    free(sent);
    free(items);
    tb_store_outbox_rows_free(rows, n);
    return st;
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
