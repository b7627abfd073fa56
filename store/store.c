/*
 * The public store API: picks the backend by URL from one const table,
 * validates every argument once (ids, names, graphs, ops, payloads, states,
 * sizes) so that nothing invalid reaches a backend, generates ids, and
 * serialises calls on one store with its mutex before dispatching through
 * the backend's const vtable. Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tb/random.h"
#include "tb/topic.h"

/* The backends this binary knows, selected by URL prefix ("postgres" also
 * covers "postgresql://"). */
static const struct tb_store_ops *const backends[] = {
    &tb__store_sqlite_ops,
    &tb__store_pg_ops,
};

#define LEASE_MAX_S (7 * 24 * 3600)
#define BUSY_TIMEOUT_MAX_MS (10 * 60 * 1000)

tb_store_err_t *tb__store_err_reset(tb_store_err_t *err, tb_store_err_t *scratch)
{
    if (!err)
        err = scratch;
    memset(err, 0, sizeof *err);
    return err;
}

void tb__store_unlock_and_notify(tb_store_t *s)
{
    bool wrote = s->outbox_written;
    s->outbox_written = false;
    tb_store_outbox_cb cb = s->outbox_cb;
    void *ud = s->outbox_ud;
    pthread_mutex_unlock(&s->lock);
    if (wrote && cb)
        cb(ud);
}

static tb_status not_found(tb_store_err_t *err, const char *what)
{
    return tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such %s", what);
}

static void new_id(char *out, char prefix)
{
    out[0] = prefix;
    out[1] = '_';
    tb_random_hex(out + 2, 8);
}

static tb_status resolve_options(const tb_store_options_t *opts, tb_store_options_t *o,
                                 tb_store_err_t *err)
{
    memset(o, 0, sizeof *o);
    o->lease_s = TB_STORE_LEASE_DEFAULT_S;
    o->busy_timeout_ms = TB_STORE_BUSY_TIMEOUT_DEFAULT_MS;
    if (!opts)
        return TB_OK;
    if (opts->lease_s < 0 || opts->lease_s > LEASE_MAX_S)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "the claim lease must be 1..%d seconds (0: default)", LEASE_MAX_S);
    if (opts->busy_timeout_ms < 0 || opts->busy_timeout_ms > BUSY_TIMEOUT_MAX_MS)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "the busy timeout must be 1..%d ms (0: default)",
                              BUSY_TIMEOUT_MAX_MS);
    if (opts->lease_s > 0)
        o->lease_s = opts->lease_s;
    if (opts->busy_timeout_ms > 0)
        o->busy_timeout_ms = opts->busy_timeout_ms;
    o->no_outbox = opts->no_outbox;
    o->sqlite_normal_sync = opts->sqlite_normal_sync;
    return TB_OK;
}

static const struct tb_store_ops *find_backend(const char *url, tb_store_err_t *err)
{
    for (size_t i = 0; i < TB_ARRAY_LEN(backends); i++) {
        size_t n = strlen(backends[i]->scheme);
        if (strncmp(url, backends[i]->scheme, n) == 0)
            return backends[i];
    }
    tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                   "unknown store URL (expected sqlite:PATH or postgres://...)");
    return NULL;
}

tb_status tb_store_open(tb_store_t **out, const char *url, const tb_store_options_t *opts,
                        tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *out = NULL;
    if (!url)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "no store URL given");
    tb_store_options_t o;
    tb_status st = resolve_options(opts, &o, err);
    if (!st)
        st = tb__store_idem_check_options(opts, err);
    if (st)
        return st;
    const struct tb_store_ops *ops = find_backend(url, err);
    if (!ops)
        return TB_EINVAL;
    tb_store_t *s = NULL;
    st = ops->open(&s, url + strlen(ops->scheme), &o, err);
    if (st)
        return st;
    s->ops = ops;
    s->lease_ms = o.lease_s * 1000;
    s->outbox = !o.no_outbox;
    tb__store_idem_init(s, opts);
    /* Recursive: an *_answered call (store_idempotency.c) holds the lock across the public
     * call it extends, so nothing else runs inside its transaction. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    *out = s;
    return TB_OK;
}

void tb_store_close(tb_store_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    s->ops->close(s);
}

const char *tb_store_backend(const tb_store_t *s)
{
    return s->ops->name;
}

tb_status tb_store_topology_create(tb_store_t *s, const char *name, const json_t *nodes,
                                   const json_t *links, json_t **doc, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *doc = NULL;
    tb_status st = tb__store_check_text(name, TB_STORE_NAME_MAX, true, "name", err);
    if (st)
        return st;
    char *graph = NULL;
    st = tb__store_graph_text(nodes, links, &graph, err);
    if (st)
        return st;
    char id[TB_STORE_ID_BUF_SIZE];
    new_id(id, 't');
    pthread_mutex_lock(&s->lock);
    st = s->ops->topology_create(s, id, name, graph, doc, err);
    pthread_mutex_unlock(&s->lock);
    free(graph);
    return st;
}

tb_status tb_store_topology_get(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *doc = NULL;
    if (!tb_topology_id_valid(id))
        return not_found(err, "topology");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->topology_get(s, id, doc, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_topology_list(tb_store_t *s, json_t **list, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *list = NULL;
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->topology_list(s, list, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_topology_transition(tb_store_t *s, const char *id,
                                       tb_topology_status expected_from, tb_topology_status to,
                                       const char *reason, tb_topology_status *previous,
                                       tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if ((unsigned)to >= TB_TOPOLOGY_ANY || (unsigned)expected_from > TB_TOPOLOGY_ANY)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "the target status must be a real status");
    if (reason && tb__store_check_text(reason, TB_STORE_REASON_MAX, false, "reason", err))
        return TB_EINVAL;
    if (!tb_topology_id_valid(id))
        return not_found(err, "topology");
    tb_topology_status prev = TB_TOPOLOGY_ANY;
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->topology_transition(s, id, expected_from, to, reason, &prev, err);
    tb__store_unlock_and_notify(s);
    if (previous)
        *previous = prev;
    return st;
}

tb_status tb_store_mutation_enqueue(tb_store_t *s, const char *topology_id, const char *op,
                                    const json_t *payload, int64_t expected_version, json_t **row,
                                    tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    if (row)
        *row = NULL;
    if (!tb_topology_id_valid(topology_id))
        return not_found(err, "topology");
    if (!tb_mutation_op_valid(op))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "op must be one of add_node, update_node, remove_node, add_link, "
                              "remove_link");
    if (!json_is_object(payload))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "payload must be an object");
    if (expected_version < 0 && expected_version != TB_STORE_NO_VERSION)
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "expected_version must be a non-negative integer");
    char *text = json_dumps(payload, JSON_COMPACT);
    TB_ASSERT(text);
    size_t len = strlen(text);
    if (len > TB_STORE_PAYLOAD_MAX) {
        free(text);
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "payload is %zu bytes; the limit is %d", len, TB_STORE_PAYLOAD_MAX);
    }
    char id[TB_STORE_ID_BUF_SIZE];
    new_id(id, 'm');
    json_t *scratch_row = NULL;
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->mutation_enqueue(s, id, topology_id, op, text, expected_version,
                                            &scratch_row, err);
    tb__store_unlock_and_notify(s);
    free(text);
    if (row)
        *row = scratch_row;
    else
        json_decref(scratch_row);
    return st;
}

tb_status tb_store_mutation_list(tb_store_t *s, const char *topology_id, const char *state,
                                 json_t **rows, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *rows = NULL;
    tb_mutation_state filter = TB_MUTATION_PENDING;
    if (state && tb_mutation_state_parse(state, &filter))
        return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID,
                              "state must be one of pending, applying, applied, failed");
    if (!tb_topology_id_valid(topology_id))
        return not_found(err, "topology");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->mutation_list(s, topology_id, state ? (int)filter : -1, rows, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_snapshot(tb_store_t *s, const char *topology_id, json_t **snap,
                            tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *snap = NULL;
    if (!tb_topology_id_valid(topology_id))
        return not_found(err, "topology");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->snapshot(s, topology_id, snap, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_mutation_in_flight(tb_store_t *s, const char *topology_id, json_t **rows,
                                      tb_store_err_t *err)
{
    *rows = NULL;
    json_t *snap = NULL;
    tb_status st = tb_store_snapshot(s, topology_id, &snap, err);
    if (st)
        return st;
    *rows = json_incref(json_object_get(snap, "in_flight"));
    json_decref(snap);
    return TB_OK;
}

tb_status tb_store_topologies_with_pending(tb_store_t *s, json_t **ids, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    *ids = NULL;
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->topologies_with_pending(s, ids, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}
