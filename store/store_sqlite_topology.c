/*
 * SQLite backend: topologies. Create is one INSERT; reads are single
 * statements; a status transition reads the current status and writes the
 * new one inside BEGIN IMMEDIATE, so a concurrent writer can neither slip in
 * between nor make the write fail with SQLITE_BUSY_SNAPSHOT. Inputs arrive
 * validated from store.c; ids and JSON are always bound, never spliced.
 */
#include <stdlib.h>
#include <string.h>

#include "store_sqlite_int.h"

tb_status tb__sq_topology_state(tb_sq_store_t *q, const char *id, tb_topology_status *status,
                                int64_t *version, tb_store_err_t *err)
{
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_STATUS);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    tb_status result = TB_OK;
    if (rc == SQLITE_ROW) {
        if (tb_topology_status_parse((const char *)sqlite3_column_text(st, 0), status))
            result = tb__sq_corrupt(q, "topology status", id, err);
        *version = sqlite3_column_int64(st, 1);
    } else if (rc == SQLITE_DONE) {
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    } else {
        result = tb__sq_error(q, rc, "read topology status", err);
    }
    sqlite3_reset(st);
    return result;
}

/* Builds a document from a TB_SQ_TOPO_GET row. */
static tb_status doc_json(tb_sq_store_t *q, sqlite3_stmt *st, json_t **doc, tb_store_err_t *err)
{
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *status = (const char *)sqlite3_column_text(st, 2);
    const char *text = (const char *)sqlite3_column_text(st, 4);
    json_t *graph = text ? json_loads(text, 0, NULL) : NULL;
    json_t *nodes = json_object_get(graph, "nodes");
    json_t *links = json_object_get(graph, "links");
    tb_topology_status parsed;
    if (!json_is_array(nodes) || !json_is_array(links) ||
        tb_topology_status_parse(status, &parsed)) {
        json_decref(graph);
        return tb__sq_corrupt(q, "topology", id, err);
    }
    json_t *d = json_object();
    json_object_set_new(d, "id", json_string(id));
    json_object_set_new(d, "name", json_string((const char *)sqlite3_column_text(st, 1)));
    json_object_set_new(d, "status", json_string(status));
    json_object_set_new(d, "version", json_integer(sqlite3_column_int64(st, 3)));
    json_object_set(d, "nodes", nodes);
    json_object_set(d, "links", links);
    json_object_set_new(d, "created_at", tb__store_time_json(sqlite3_column_int64(st, 5)));
    json_object_set_new(d, "updated_at", tb__store_time_json(sqlite3_column_int64(st, 6)));
    json_decref(graph);
    *doc = d;
    return TB_OK;
}

tb_status tb__sq_read_doc(tb_sq_store_t *q, const char *id, json_t **doc, tb_store_err_t *err)
{
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_GET);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    tb_status result;
    if (rc == SQLITE_ROW)
        result = doc_json(q, st, doc, err);
    else if (rc == SQLITE_DONE)
        result = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    else
        result = tb__sq_error(q, rc, "read topology", err);
    sqlite3_reset(st);
    return result;
}

tb_status tb__sq_topology_create(tb_store_t *s, const char *id, const char *name,
                                 const char *graph_text, json_t **doc, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    /* Insert and read back in one transaction, so the document returned is
     * exactly the row committed. */
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_INSERT);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, graph_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, tb__store_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        result = tb__sq_error(q, rc, "insert topology", err);
        goto fail;
    }
    result = tb__sq_read_doc(q, id, doc, err);
    if (result)
        goto fail;
    result = tb__sq_commit(q, err);
    if (result) {
        json_decref(*doc);
        *doc = NULL;
    }
    return result;
fail:
    tb__sq_rollback(q);
    return result;
}

tb_status tb__sq_topology_get(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err)
{
    return tb__sq_read_doc(tb__sq_from(s), id, doc, err);
}

tb_status tb__sq_topology_list(tb_store_t *s, json_t **list, tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_LIST);
    json_t *arr = json_array();
    tb_status result = TB_OK;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *e = json_object();
        json_object_set_new(e, "id", json_string((const char *)sqlite3_column_text(st, 0)));
        json_object_set_new(e, "name", json_string((const char *)sqlite3_column_text(st, 1)));
        json_object_set_new(e, "status", json_string((const char *)sqlite3_column_text(st, 2)));
        json_object_set_new(e, "version", json_integer(sqlite3_column_int64(st, 3)));
        json_object_set_new(e, "updated_at", tb__store_time_json(sqlite3_column_int64(st, 4)));
        json_array_append_new(arr, e);
    }
    if (rc != SQLITE_DONE) {
        result = tb__sq_error(q, rc, "list topologies", err);
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_reset(st);
    *list = arr;
    return result;
}

tb_status tb__sq_set_status(tb_sq_store_t *q, const char *id, tb_topology_status from,
                            tb_topology_status to, int64_t version, const char *reason,
                            tb_store_err_t *err)
{
    sqlite3_stmt *st = tb__sq_stmt(q, TB_SQ_TOPO_SET_STATUS);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tb_topology_status_name(to), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tb__store_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return tb__sq_error(q, rc, "update topology status", err);
    return tb__sq_outbox_add(q, TB_TOPIC_STATUS, id,
                             tb__store_status_payload(to, from, version, reason), err);
}

tb_status tb__sq_topology_transition(tb_store_t *s, const char *id,
                                     tb_topology_status expected_from, tb_topology_status to,
                                     const char *reason, tb_topology_status *previous,
                                     tb_store_err_t *err)
{
    tb_sq_store_t *q = tb__sq_from(s);
    tb_status result = tb__sq_begin(q, true, err);
    if (result)
        return result;
    tb_topology_status current;
    int64_t version;
    result = tb__sq_topology_state(q, id, &current, &version, err);
    if (result)
        goto fail;
    *previous = current;
    if (expected_from != TB_TOPOLOGY_ANY && current != expected_from) {
        result = tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_WRONG_STATE,
                                "the topology is %s, not %s", tb_topology_status_name(current),
                                tb_topology_status_name(expected_from));
        goto fail;
    }
    if (!tb_topology_transition_legal(current, to)) {
        result = tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_ILLEGAL_TRANSITION,
                                "a topology cannot go from %s to %s",
                                tb_topology_status_name(current), tb_topology_status_name(to));
        goto fail;
    }
    result = tb__sq_set_status(q, id, current, to, version, reason, err);
    if (result)
        goto fail;
    return tb__sq_commit(q, err);
fail:
    tb__sq_rollback(q);
    return result;
}
