/*
 * The outbox, backend-neutral part: building the change events the backends
 * write inside their transactions (CONTRACT §1 payloads, each with the
 * topology's version), and the public outbox calls, which validate their
 * arguments once and serialise on the store's mutex like every other call.
 * Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tb/buf.h"
#include "tb/envelope.h"
#include "tb/log.h"

enum {
    LEASE_TTL_MIN_MS = 100,
    LEASE_TTL_MAX_MS = 600 * 1000,
    BATCH_MAX = 10000,
};

tb_status tb__store_event_build(tb__store_event_t *out, tb_topic_family family,
                                const char *topology_id, json_t *payload_take)
{
    memset(out, 0, sizeof *out);
    tb_event_t *ev = NULL;
    const char *why = NULL;
    tb_buf_t buf;
    tb_buf_init(&buf);
    tb_status st = tb_topic_build(out->topic, family, topology_id);
    if (st == TB_OK)
        st = tb_event_create_json(&ev, out->topic, NULL, payload_take, &why);
    if (st == TB_OK)
        st = tb_envelope_encode(ev, &buf);
    json_decref(payload_take);
    if (st != TB_OK) {
        tb_log(TB_LOG_ERR, "store", "cannot build a change event topology=%s: %s", topology_id,
               why ? why : tb_status_str(st));
        tb_event_unref(ev);
        tb_buf_cleanup(&buf);
        return TB_EINVAL;
    }
    snprintf(out->topology_id, sizeof out->topology_id, "%s", topology_id);
    memcpy(out->msg_id, ev->id, sizeof out->msg_id);
    out->envelope = tb_buf_steal(&buf, NULL);
    tb_event_unref(ev);
    return TB_OK;
}

void tb__store_event_cleanup(tb__store_event_t *ev)
{
    free(ev->envelope);
    ev->envelope = NULL;
}

json_t *tb__store_mutation_payload(const json_t *row, tb_topic_family family, int64_t version,
                                   const char *reason)
{
    json_t *p = json_object();
    json_object_set_new(p, "mutation_id", json_string(tb_store_row_id(row)));
    json_object_set_new(p, "op", json_string(tb_store_row_op(row)));
    if (family == TB_TOPIC_MUTATION_ENQUEUED || family == TB_TOPIC_MUTATION_APPLYING)
        json_object_set(p, "payload", (json_t *)(uintptr_t)tb_store_row_payload(row));
    if (family == TB_TOPIC_MUTATION_FAILED)
        json_object_set_new(p, "reason", json_string(reason ? reason : ""));
    json_object_set_new(p, "version", json_integer(version));
    return p;
}

json_t *tb__store_requeued_payload(const json_t *row, int64_t version)
{
    json_t *p = tb__store_mutation_payload(row, TB_TOPIC_MUTATION_ENQUEUED, version, NULL);
    json_object_set(p, "attempts", json_object_get(row, "attempts"));
    json_object_set_new(p, "requeued", json_true());
    return p;
}

json_t *tb__store_status_payload(tb_topology_status to, tb_topology_status from, int64_t version,
                                 const char *reason)
{
    json_t *p = json_object();
    json_object_set_new(p, "state", json_string(tb_topology_status_name(to)));
    json_object_set_new(p, "previous", json_string(tb_topology_status_name(from)));
    json_object_set_new(p, "version", json_integer(version));
    if (reason)
        json_object_set_new(p, "reason", json_string(reason));
    return p;
}

/* ---- public calls --------------------------------------------------------- */

static tb_status invalid(tb_store_err_t *err, const char *what)
{
    return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "%s", what);
}

void tb_store_set_outbox_listener(tb_store_t *s, tb_store_outbox_cb cb, void *ud)
{
    pthread_mutex_lock(&s->lock);
    s->outbox_cb = cb;
    s->outbox_ud = ud;
    pthread_mutex_unlock(&s->lock);
}

tb_status tb_store_outbox_lease(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                                tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *held = false;
    if (!tb_store_worker_id_valid(holder))
        return invalid(err, "the lease holder must be 1..64 bytes of [A-Za-z0-9_.:-]");
    if (ttl_ms < LEASE_TTL_MIN_MS || ttl_ms > LEASE_TTL_MAX_MS)
        return invalid(err, "the lease must last 100..600000 ms");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->outbox_lease(s, holder, ttl_ms, held, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_outbox_release(tb_store_t *s, const char *holder, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if (!tb_store_worker_id_valid(holder))
        return invalid(err, "the lease holder must be 1..64 bytes of [A-Za-z0-9_.:-]");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->outbox_release(s, holder, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_outbox_read(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                               tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *rows = NULL;
    *n = 0;
    if (max == 0 || max > BATCH_MAX)
        return invalid(err, "an outbox read takes 1..10000 rows");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->outbox_read(s, max, rows, n, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

void tb_store_outbox_rows_free(tb_outbox_row_t *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        free(rows[i].envelope);
    free(rows);
}

tb_status tb_store_outbox_delete(tb_store_t *s, const int64_t *seqs, size_t n,
                                 tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if (n == 0)
        return TB_OK;
    if (!seqs || n > BATCH_MAX)
        return invalid(err, "an outbox delete takes 1..10000 rows");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->outbox_delete(s, seqs, n, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_outbox_set_aside(tb_store_t *s, int64_t seq, const char *reason,
                                    tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if (!reason || tb__store_check_text(reason, TB_OUTBOX_REASON_MAX, true, "reason", err))
        return invalid(err, "the reason must be 1..200 bytes of UTF-8 on one line");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->outbox_set_aside(s, seq, reason, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_outbox_stats(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                                int64_t *set_aside, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *depth = *oldest_age_ms = *set_aside = 0;
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->outbox_stats(s, depth, oldest_age_ms, set_aside, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}
