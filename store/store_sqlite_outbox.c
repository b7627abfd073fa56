/*
 * SQLite backend: the outbox. Rows are added inside the callers' write
 * transactions (tb__sq_outbox_add); the relay's calls read, delete and set
 * rows aside, and take the store-wide lease. The database's clock is this
 * host's clock (a SQLite file is shared only by processes on one host), so
 * lease times come from tb__store_now_ms.
 */
#include <stdlib.h>
#include <string.h>

#include "store_sqlite_int.h"
#include "tb/alloc.h"

tb_status tb__sq_outbox_add(tb_sq_store_t *q, tb_topic_family family, const char *topology_id,
                            json_t *payload_take, tb_store_err_t *err)
{
    if (!q->base.outbox) {
        json_decref(payload_take);
        return TB_OK;
    }
    tb__store_event_t ev;
    if (tb__store_event_build(&ev, family, topology_id, payload_take))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "the change event cannot be encoded");
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_OUTBOX_INSERT);
    sqlite3_bind_text(st, 1, ev.topology_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ev.topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, ev.msg_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, ev.envelope, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, tb__store_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    tb__store_event_cleanup(&ev);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "insert outbox row", err);
    q->outbox_pending = true; /* told to the listener once the transaction commits */
    return TB_OK;
}

tb_status tb__sq_outbox_lease(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                              tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_LEASE_TAKE);
    sqlite3_bind_text(st, 1, holder, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, tb__store_now_ms());
    sqlite3_bind_int64(st, 3, ttl_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "take outbox lease", err);
    *held = rc == SQLITE_ROW;
    return TB_OK;
}

tb_status tb__sq_outbox_release(tb_store_t *s, const char *holder, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_LEASE_RELEASE);
    sqlite3_bind_text(st, 1, holder, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "release outbox lease", err);
    return TB_OK;
}

/* Copies the current row of a TB_SQ_OUTBOX_READ step into r; false if it is malformed. */
static bool read_row(sqlite3_stmt *st, tb_outbox_row_t *r)
{
    const char *topic = (const char *)sqlite3_column_text(st, 1);
    const char *msg_id = (const char *)sqlite3_column_text(st, 2);
    const char *env = (const char *)sqlite3_column_text(st, 3);
    r->seq = sqlite3_column_int64(st, 0);
    /* now is sampled before the read's snapshot: a row committed in between
     * is younger than that sample. It is brand new, not from the future. */
    r->age_ms = sqlite3_column_int64(st, 4);
    if (r->age_ms < 0)
        r->age_ms = 0;
    if (!topic || !msg_id || !env || strlen(topic) >= sizeof r->topic ||
        strlen(msg_id) >= sizeof r->msg_id)
        return false;
    strcpy(r->topic, topic);
    strcpy(r->msg_id, msg_id);
    r->len = (size_t)sqlite3_column_bytes(st, 3);
    r->envelope = tb_xmalloc(r->len + 1);
    memcpy(r->envelope, env, r->len + 1);
    return true;
}

tb_status tb__sq_outbox_read(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                             tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_OUTBOX_READ);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
    sqlite3_bind_int64(st, 2, tb__store_now_ms());
    tb_outbox_row_t *out = NULL;
    size_t count = 0, cap = 0;
    tb_status result = TB_OK;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            /* Grow as rows come: most reads find a handful, not `max`. */
            cap = cap ? cap * 2 : 16;
            out = tb_xrealloc(out, cap * sizeof *out);
        }
        memset(&out[count], 0, sizeof out[count]);
        if (!read_row(st, &out[count])) {
            /* A malformed row goes out empty: the bus refuses it as invalid and the relay
             * sets it aside, so it cannot block the rows behind it. */
            tb__sq_corrupt(q, "outbox row", NULL, err);
            out[count].topic[0] = out[count].msg_id[0] = '\0';
            out[count].envelope = tb_xstrdup("");
            out[count].len = 0;
        }
        count++;
    }
    if (!result && rc != SQLITE_DONE)
        result = tb__sq_error(q, rc, "read outbox", err);
    sqlite3_reset(st);
    if (result) {
        tb_store_outbox_rows_free(out, count);
        return result;
    }
    *rows = out;
    *n = count;
    return TB_OK;
}

tb_status tb__sq_outbox_delete(tb_store_t *s, const int64_t *seqs, size_t n, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_OUTBOX_DELETE);
        sqlite3_bind_int64(st, 1, seqs[i]);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            result = tb__sq_error(q, rc, "delete outbox row", err);
            tb__sq_rollback(q);
            return result;
        }
    }
    return tb__sq_commit(q, err);
}

tb_status tb__sq_outbox_set_aside(tb_store_t *s, int64_t seq, const char *reason,
                                  tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_OUTBOX_SET_ASIDE);
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tb__store_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        st = tb__sq_stmt(q, TB_SQ_OUTBOX_DELETE);
        sqlite3_bind_int64(st, 1, seq);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
    }
    if (rc != SQLITE_DONE) {
        result = tb__sq_error(q, rc, "set outbox row aside", err);
        tb__sq_rollback(q);
        return result;
    }
    return tb__sq_commit(q, err);
}

tb_status tb__sq_outbox_stats(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                              int64_t *set_aside, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_OUTBOX_STATS);
    sqlite3_bind_int64(st, 1, tb__store_now_ms());
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *depth = sqlite3_column_int64(st, 0);
        /* As in read_row: never negative. */
        *oldest_age_ms = sqlite3_column_int64(st, 1);
        if (*oldest_age_ms < 0)
            *oldest_age_ms = 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return tb__sq_error(q, rc, "read outbox depth", err);
    st = tb__sq_stmt(q, TB_SQ_OUTBOX_SET_ASIDE_COUNT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *set_aside = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return tb__sq_error(q, rc, "count set-aside outbox rows", err);
    return TB_OK;
}
