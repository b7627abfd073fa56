/*
 * PostgreSQL backend: topologies. Create is one INSERT … RETURNING; reads
 * are single statements; a status transition locks the row (FOR NO KEY
 * UPDATE), checks, writes and records its status event in one transaction,
 * so a concurrent writer can neither slip in between nor be lost, and the
 * event's outbox seq follows the topology's earlier commits. Inputs arrive
 * validated from store.c; ids and JSON are always bound as parameters, never
 * spliced.
 */
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"

/* Reads status and version of topology id with statement idx (a plain read
 * or the row lock), inside the caller's transaction. TB_ENOTFOUND if absent. */
static tb_status topology_state(tb_pg_store_t *q, tb_pg_stmt idx, const char *id,
                                tb_topology_status *status, int64_t *version, tb_store_err_t *err)
{
    PGresult *res = NULL;
    const char *values[] = {id};
    tb_status st = tb__pg_query(q, idx, 1, values, &res, "read topology status", err);
    if (st)
        return st;
    if (PQntuples(res) == 0)
        st = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    else if (tb_topology_status_parse(tb__pg_text(res, 0, 0), status))
        st = tb__pg_corrupt(q, "topology status", id, err);
    else
        *version = tb__pg_int64(res, 0, 1);
    PQclear(res);
    return st;
}

tb_status tb__pg_topology_read_state(tb_pg_store_t *q, bool lock, const char *id,
                                     tb_topology_status *status, int64_t *version,
                                     tb_store_err_t *err)
{
    return topology_state(q, lock ? TB_PG_TOPO_LOCK : TB_PG_TOPO_STATUS, id, status, version, err);
}

tb_status tb__pg_topology_doc(tb_pg_store_t *q, const PGresult *res, json_t **doc,
                              tb_store_err_t *err)
{
    if (PQntuples(res) == 0)
        return tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    const char *id = tb__pg_text(res, 0, 0);
    const char *status = tb__pg_text(res, 0, 2);
    const char *text = tb__pg_text(res, 0, 4);
    json_t *graph = text ? json_loads(text, 0, NULL) : NULL;
    json_t *nodes = json_object_get(graph, "nodes");
    json_t *links = json_object_get(graph, "links");
    tb_topology_status parsed;
    if (!json_is_array(nodes) || !json_is_array(links) ||
        tb_topology_status_parse(status, &parsed)) {
        json_decref(graph);
        return tb__pg_corrupt(q, "topology", id, err);
    }
    json_t *d = json_object();
    json_object_set_new(d, "id", json_string(id));
    json_object_set_new(d, "name", json_string(tb__pg_text(res, 0, 1)));
    json_object_set_new(d, "status", json_string(status));
    json_object_set_new(d, "version", json_integer(tb__pg_int64(res, 0, 3)));
    json_object_set(d, "nodes", nodes);
    json_object_set(d, "links", links);
    json_object_set_new(d, "created_at", tb__store_time_json(tb__pg_int64(res, 0, 5)));
    json_object_set_new(d, "updated_at", tb__store_time_json(tb__pg_int64(res, 0, 6)));
    json_decref(graph);
    *doc = d;
    return TB_OK;
}

/* Runs a statement returning at most one document row. */
static tb_status doc_query(tb_pg_store_t *q, tb_pg_stmt idx, int n, const char *const *values,
                           const char *what, json_t **doc, tb_store_err_t *err)
{
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, idx, n, values, &res, what, err);
    if (st)
        return st;
    if (PQntuples(res) == 0)
        st = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    else
        st = tb__pg_topology_doc(q, res, doc, err);
    PQclear(res);
    return st;
}

tb_status tb__pg_topology_create(tb_store_t *s, const char *id, const char *name,
                                 const char *graph_text, json_t **doc, tb_store_err_t *err)
{
    /* One statement: the document returned is exactly the row committed. */
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    const char *values[] = {id, name, graph_text, now.s};
    return doc_query(tb__pg_from(s), TB_PG_TOPO_INSERT, 4, values, "insert topology", doc, err);
}

tb_status tb__pg_topology_get(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err)
{
    const char *values[] = {id};
    return doc_query(tb__pg_from(s), TB_PG_TOPO_GET, 1, values, "read topology", doc, err);
}

tb_status tb__pg_topology_list(tb_store_t *s, json_t **list, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_TOPO_LIST, 0, NULL, &res, "list topologies", err);
    if (st)
        return st;
    json_t *arr = json_array();
    for (int r = 0; r < PQntuples(res); r++) {
        json_t *e = json_object();
        json_object_set_new(e, "id", json_string(tb__pg_text(res, r, 0)));
        json_object_set_new(e, "name", json_string(tb__pg_text(res, r, 1)));
        json_object_set_new(e, "status", json_string(tb__pg_text(res, r, 2)));
        json_object_set_new(e, "version", json_integer(tb__pg_int64(res, r, 3)));
        json_object_set_new(e, "updated_at", tb__store_time_json(tb__pg_int64(res, r, 4)));
        json_array_append_new(arr, e);
    }
    PQclear(res);
    *list = arr;
    return TB_OK;
}

tb_status tb__pg_set_status(tb_pg_store_t *q, const char *id, tb_topology_status from,
                            tb_topology_status to, int64_t version, const char *reason,
                            tb_store_err_t *err)
{
    tb_pg_int_t now = tb__pg_int(tb__store_now_ms());
    const char *values[] = {id, tb_topology_status_name(to), now.s};
    tb_status st = tb__pg_command(q, TB_PG_TOPO_SET_STATUS, 3, values, "update topology status",
                                  err);
    if (st)
        return st;
    return tb__pg_outbox_add(q, TB_TOPIC_STATUS, id,
                             tb__store_status_payload(to, from, version, reason), err);
}

typedef struct transition_ctx {
    const char *id;
    tb_topology_status expected_from, to;
    const char *reason;
    tb_topology_status *previous;
} transition_ctx_t;

static tb_status transition_tx(tb_pg_store_t *q, void *ctx, json_t **out, tb_store_err_t *err)
{
    (void)out;
    transition_ctx_t *c = ctx;
    tb_topology_status current;
    int64_t version;
    tb_status st = topology_state(q, TB_PG_TOPO_LOCK, c->id, &current, &version, err);
    if (st)
        return st;
    *c->previous = current;
    if (c->expected_from != TB_TOPOLOGY_ANY && current != c->expected_from)
        return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_WRONG_STATE,
                              "the topology is %s, not %s", tb_topology_status_name(current),
                              tb_topology_status_name(c->expected_from));
    if (!tb_topology_transition_legal(current, c->to))
        return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_ILLEGAL_TRANSITION,
                              "a topology cannot go from %s to %s",
                              tb_topology_status_name(current), tb_topology_status_name(c->to));
    /* The row lock taken above is held until commit, so this event's seq
     * is in commit order among the topology's events (store_pg_mutation.c). */
    return tb__pg_set_status(q, c->id, current, c->to, version, c->reason, err);
}

tb_status tb__pg_topology_transition(tb_store_t *s, const char *id,
                                     tb_topology_status expected_from, tb_topology_status to,
                                     const char *reason, tb_topology_status *previous,
                                     tb_store_err_t *err)
{
    transition_ctx_t c = {id, expected_from, to, reason, previous};
    json_t *unused = NULL;
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, transition_tx, &c, &unused, err);
}
