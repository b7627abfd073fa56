/*
 * PostgreSQL backend: the outbox. Rows are added inside the callers' write
 * transactions (tb__pg_outbox_add, after the topology's row lock: see
 * store_pg_mutation.c for why); the relay's calls read, delete and set
 * rows aside, and take the store-wide lease. Several hosts may share the
 * database, so every time here is the server's clock (DB_NOW_MS in
 * store_pg.c), never this process's. Each relay call is one statement, so
 * one transaction of its own. store.c's mutex serialises calls; nothing here
 * locks.
 */
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"
#include "tb/alloc.h"
#include "tb/buf.h"

tb_status tb__pg_outbox_add(tb_pg_store_t *q, tb_topic_family family, const char *topology_id,
                            json_t *payload_take, tb_store_err_t *err)
{
    if (!q->base.outbox) {
        json_decref(payload_take);
        return TB_OK;
    }
    /* Outside a transaction the row would commit alone, out of order. */
    TB_ASSERT(q->in_tx);
    tb__store_event_t ev;
    if (tb__store_event_build(&ev, family, topology_id, payload_take))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "the change event cannot be encoded");
    const char *values[] = {ev.topology_id, ev.topic, ev.msg_id, ev.envelope};
    tb_status st = tb__pg_command(q, TB_PG_OUTBOX_INSERT, 4, values, "insert outbox row", err);
    tb__store_event_cleanup(&ev);
    /* tb__pg_tx tells the listener once this transaction has committed. */
    if (!st)
        q->outbox_added = true;
    return st;
}

tb_status tb__pg_outbox_lease(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                              tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    tb_pg_int_t ttl = tb__pg_int(ttl_ms);
    const char *values[] = {holder, ttl.s};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_LEASE_TAKE, 2, values, &res, "take outbox lease", err);
    if (st)
        return st;
    *held = PQntuples(res) == 1;
    PQclear(res);
    return TB_OK;
}

tb_status tb__pg_outbox_release(tb_store_t *s, const char *holder, tb_store_err_t *err)
{
    const char *values[] = {holder};
    return tb__pg_command(tb__pg_from(s), TB_PG_LEASE_RELEASE, 1, values, "release outbox lease",
                          err);
}

/* Copies row r of a TB_PG_OUTBOX_READ result into out; false if it is malformed. */
static bool read_row(const PGresult *res, int r, tb_outbox_row_t *out)
{
    const char *topic = tb__pg_text(res, r, 1);
    const char *msg_id = tb__pg_text(res, r, 2);
    const char *env = tb__pg_text(res, r, 3);
    out->seq = tb__pg_int64(res, r, 0);
    out->age_ms = tb__pg_int64(res, r, 4);
    if (!topic || !msg_id || !env || strlen(topic) >= sizeof out->topic ||
        strlen(msg_id) >= sizeof out->msg_id)
        return false;
    strcpy(out->topic, topic);
    strcpy(out->msg_id, msg_id);
    out->len = (size_t)PQgetlength(res, r, 3);
    out->envelope = tb_xmalloc(out->len + 1);
    memcpy(out->envelope, env, out->len + 1);
    return true;
}

tb_status tb__pg_outbox_read(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                             tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    tb_pg_int_t limit = tb__pg_int((int64_t)max);
    const char *values[] = {limit.s};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_OUTBOX_READ, 1, values, &res, "read outbox", err);
    if (st)
        return st;
    int count = PQntuples(res);
    tb_outbox_row_t *out = count > 0 ? tb_xcalloc((size_t)count, sizeof *out) : NULL;
    for (int r = 0; r < count; r++) {
        if (!read_row(res, r, &out[r])) {
            /* A row we cannot even name is set aside by hand: say so loudly. */
            st = tb__pg_corrupt(q, "outbox row", tb__pg_text(res, r, 0), err);
            tb_store_outbox_rows_free(out, (size_t)r);
            PQclear(res);
            return st;
        }
    }
    PQclear(res);
    *rows = out;
    *n = (size_t)count;
    return TB_OK;
}

tb_status tb__pg_outbox_delete(tb_store_t *s, const int64_t *seqs, size_t n, tb_store_err_t *err)
{
    /* One statement over an array literal "{1,2,3}": all rows or none. */
    tb_buf_t list;
    tb_buf_init(&list);
    tb_buf_append_str(&list, "{");
    for (size_t i = 0; i < n; i++)
        tb_buf_appendf(&list, "%s%lld", i ? "," : "", (long long)seqs[i]);
    tb_buf_append_str(&list, "}");
    const char *values[] = {list.data};
    tb_status st =
        tb__pg_command(tb__pg_from(s), TB_PG_OUTBOX_DELETE, 1, values, "delete outbox rows", err);
    tb_buf_cleanup(&list);
    return st;
}

tb_status tb__pg_outbox_set_aside(tb_store_t *s, int64_t seq, const char *reason,
                                  tb_store_err_t *err)
{
    tb_pg_int_t v = tb__pg_int(seq);
    const char *values[] = {v.s, reason};
    return tb__pg_command(tb__pg_from(s), TB_PG_OUTBOX_SET_ASIDE, 2, values, "set outbox row aside",
                          err);
}

tb_status tb__pg_outbox_stats(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                              int64_t *set_aside, tb_store_err_t *err)
{
    PGresult *res = NULL;
    tb_status st =
        tb__pg_query(tb__pg_from(s), TB_PG_OUTBOX_STATS, 0, NULL, &res, "read outbox depth", err);
    if (st)
        return st;
    if (PQntuples(res) == 1) {
        *depth = tb__pg_int64(res, 0, 0);
        *oldest_age_ms = tb__pg_int64(res, 0, 1);
        *set_aside = tb__pg_int64(res, 0, 2);
    }
    PQclear(res);
    return TB_OK;
}
