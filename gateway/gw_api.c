/*
 * The REST API of CONTRACT §4: topologies, deploy/teardown requests,
 * mutations and publishing. A handler authenticates and validates on its
 * loop thread, then hands the store call to a worker (gw_pool.h): a store
 * may block on the network or a lock, a loop never may. The worker builds
 * the reply text; the loop sends it. Events are published only after the
 * store committed, and a bus failure never fails a request.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_auth_http.h"
#include "gw_pool.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/log.h"
#include "tb/store.h"

/*
 * One REST call's store work: its inputs, copied from the request on the loop
 * thread, and its reply, built on a worker. It never touches the request.
 */
typedef struct api_job api_job_t;
typedef void (*api_work_fn)(api_job_t *j);

struct api_job {
    gw_job_t base;
    tb_gateway_t *gw;
    api_work_fn work;
    char what[96]; /* "POST /topologies/t_…/mutations" for the log: no query string */
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    json_t *body; /* the parsed request body, owned; NULL if none */
    char state[32];
    bool filtered;
    int64_t version;
    tb_topology_status to;
    /* The reply. */
    int status;
    char *text;
    bool retry_after;
};

static void job_json(api_job_t *j, int status, const json_t *value)
{
    j->status = status;
    j->text = json_dumps(value, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

static void job_error(api_job_t *j, int status, const char *code, const char *message)
{
    json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
    job_json(j, status, obj);
    json_decref(obj);
}

/* Maps a store failure to its HTTP answer (CONTRACT §4; 503 when the store does not answer). */
static void job_store_error(api_job_t *j, tb_status st, const tb_store_err_t *err)
{
    switch (err->reason) {
    case TB_STORE_R_INVALID:
        job_error(j, 400, "invalid", err->message);
        return;
    case TB_STORE_R_NOT_FOUND:
        job_error(j, 404, "not_found", "no such topology or mutation");
        return;
    case TB_STORE_R_VERSION_CONFLICT: {
        json_t *body = json_pack("{s:s, s:s, s:I, s:I}", "error", "version_conflict", "message",
                                 err->message, "current", (json_int_t)err->current, "expected",
                                 (json_int_t)err->expected);
        job_json(j, 409, body);
        json_decref(body);
        return;
    }
    case TB_STORE_R_NOT_MUTABLE:
    case TB_STORE_R_ILLEGAL_TRANSITION:
    case TB_STORE_R_WRONG_STATE:
    case TB_STORE_R_STALE_CLAIM: /* a worker's reason, never an HTTP request's */
        job_error(j, 409, tb_store_reason_code(err->reason), err->message);
        return;
    case TB_STORE_R_BUSY:
    case TB_STORE_R_BACKEND:
    case TB_STORE_R_SCHEMA_TOO_NEW:
    case TB_STORE_R_NONE:
        break;
    }
    atomic_fetch_add(&j->gw->counters.store_errors, 1);
    tb_log(TB_LOG_WARN, "api", "%s: store failed: %s (%s)", j->what, tb_status_str(st),
           err->message);
    j->retry_after = true;
    job_error(j, 503, "store_unavailable", "the store is not answering; retry shortly");
}

static void job_run(gw_job_t *base)
{
    api_job_t *j = (api_job_t *)base;
    j->work(j);
}

/* Loop thread: sends the reply if the client is still there, then frees the job. */
static void job_done(gw_job_t *base)
{
    api_job_t *j = (api_job_t *)base;
    gw_request_t *req = atomic_load(&base->req);
    if (req) {
        if (j->retry_after)
            tb__gw_add_header(req, "retry-after:", "1");
        tb__gw_reply(req, j->status, "application/json", j->text, strlen(j->text));
        tb__gw_respond(req);
    }
    free(j->text);
    json_decref(j->body);
    free(j);
}

/* A job for req doing `work`, with the request's id, its log name and body (taken). */
static api_job_t *job_new(gw_request_t *req, api_work_fn work, json_t *body_take)
{
    api_job_t *j = tb_xcalloc(1, sizeof *j);
    j->base.run = job_run;
    j->base.done = job_done;
    j->gw = req->gw;
    j->work = work;
    j->body = body_take;
    snprintf(j->what, sizeof j->what, "%s %s", req->method_name, req->path);
    memcpy(j->topology_id, req->topology_id, sizeof j->topology_id);
    return j;
}

/* Queues a filled job (taken); a full queue answers 503 at once instead of waiting. */
static void job_submit(gw_request_t *req, api_job_t *j)
{
    if (gw_pool_submit(req->gw->pool, &j->base, req->loop, req) == TB_OK)
        return;
    json_decref(j->body);
    free(j);
    tb__gw_add_header(req, "retry-after:", "1");
    tb__gw_reply_error(req, 503, "busy", "too many requests are waiting for the store");
}

/* Parses the request body as a JSON object; on false the 400 reply is set. */
static json_t *body_object(gw_request_t *req)
{
    json_error_t jerr;
    json_t *obj = json_loadb(req->body.data ? req->body.data : "", req->body.len,
                             JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        char msg[200];
        snprintf(msg, sizeof msg, "malformed JSON: %s", jerr.text);
        tb__gw_reply_error(req, 400, "invalid_json", msg);
        return NULL;
    }
    if (!json_is_object(obj)) {
        tb__gw_reply_error(req, 400, "invalid", "the body must be a JSON object");
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Authenticates, then refuses a malformed id as unknown: no existence probe without a token. */
static bool authorize_topology(gw_request_t *req, unsigned role)
{
    tb_principal_t p;
    if (!tb__gw_authenticate(req, role, false, &p))
        return false;
    if (!req->topology_id_valid) {
        tb__gw_reply_error(req, 404, "not_found", "no such topology");
        return false;
    }
    return true;
}

static void work_list(api_job_t *j)
{
    json_t *list = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_list(j->gw->deps.store, &list, &err);
    if (st) {
        job_store_error(j, st, &err);
        return;
    }
    job_json(j, 200, list);
    json_decref(list);
}

void tb__gw_api_get_topologies(gw_request_t *req)
{
    tb_principal_t p;
    if (tb__gw_authenticate(req, TB_ROLE_VIEWER, false, &p))
        job_submit(req, job_new(req, work_list, NULL));
}

static void work_create(api_job_t *j)
{
    const json_t *nodes = json_object_get(j->body, "nodes");
    const json_t *links = json_object_get(j->body, "links");
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_create(
        j->gw->deps.store, json_string_value(json_object_get(j->body, "name")),
        json_is_null(nodes) ? NULL : nodes, json_is_null(links) ? NULL : links, &doc, &err);
    if (st) {
        job_store_error(j, st, &err);
        return;
    }
    job_json(j, 201, doc);
    json_decref(doc);
}

void tb__gw_api_post_topologies(gw_request_t *req)
{
    tb_principal_t p;
    if (!tb__gw_authenticate(req, TB_ROLE_EDITOR, false, &p))
        return;
    json_t *body = body_object(req);
    if (!body)
        return;
    if (!json_is_string(json_object_get(body, "name"))) {
        tb__gw_reply_error(req, 400, "invalid", "name must be a string");
        json_decref(body);
        return;
    }
    job_submit(req, job_new(req, work_create, body));
}

static void work_get(api_job_t *j)
{
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_get(j->gw->deps.store, j->topology_id, &doc, &err);
    if (st) {
        job_store_error(j, st, &err);
        return;
    }
    job_json(j, 200, doc);
    json_decref(doc);
}

void tb__gw_api_get_topology(gw_request_t *req)
{
    if (authorize_topology(req, TB_ROLE_VIEWER))
        job_submit(req, job_new(req, work_get, NULL));
}

/*
 * Deploy and teardown are recorded in the store as the first transition
 * (pending → deploying, or → tearing_down), together with its
 * `topology.<id>.status` event in the outbox, so a request survives a bus
 * outage. The mutator wakes on that event once the relay published it (or
 * finds the status when it polls) and completes the transition.
 */
static void work_transition(api_job_t *j)
{
    tb_topology_status previous;
    tb_store_err_t err;
    tb_status st = tb_store_topology_transition(j->gw->deps.store, j->topology_id,
                                                TB_TOPOLOGY_ANY, j->to, NULL, &previous, &err);
    if (st) {
        job_store_error(j, st, &err);
        return;
    }
    json_t *body = json_pack("{s:s, s:s}", "id", j->topology_id, "status",
                             tb_topology_status_name(j->to));
    job_json(j, 202, body);
    json_decref(body);
}

static void request_transition(gw_request_t *req, tb_topology_status to)
{
    if (!authorize_topology(req, TB_ROLE_EDITOR))
        return;
    api_job_t *j = job_new(req, work_transition, NULL);
    j->to = to;
    job_submit(req, j);
}

void tb__gw_api_post_deploy(gw_request_t *req)
{
    request_transition(req, TB_TOPOLOGY_DEPLOYING);
}

void tb__gw_api_post_teardown(gw_request_t *req)
{
    request_transition(req, TB_TOPOLOGY_TEARING_DOWN);
}

/* Reads expected_version: absent or null → none; a non-negative integer; else false. */
static bool expected_version(const json_t *v, int64_t *out)
{
    if (!v || json_is_null(v)) {
        *out = TB_STORE_NO_VERSION;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static void work_enqueue(api_job_t *j)
{
    const json_t *op = json_object_get(j->body, "op");
    const json_t *payload = json_object_get(j->body, "payload");
    json_t *row = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_enqueue(j->gw->deps.store, j->topology_id,
                                             json_string_value(op), payload, j->version, &row,
                                             &err);
    if (st) {
        job_store_error(j, st, &err);
        return;
    }
    json_t *answer =
        json_pack("{s:s, s:s}", "mutation_id", tb_store_row_id(row), "state", "pending");
    job_json(j, 202, answer);
    json_decref(answer);
    json_decref(row);
}

void tb__gw_api_post_mutation(gw_request_t *req)
{
    if (!authorize_topology(req, TB_ROLE_EDITOR))
        return;
    json_t *body = body_object(req);
    if (!body)
        return;
    int64_t version;
    if (!json_is_string(json_object_get(body, "op")) ||
        !json_is_object(json_object_get(body, "payload"))) {
        tb__gw_reply_error(req, 400, "invalid", "op must be a string and payload an object");
    } else if (!expected_version(json_object_get(body, "expected_version"), &version)) {
        tb__gw_reply_error(req, 400, "invalid", "expected_version must be a non-negative integer");
    } else {
        api_job_t *j = job_new(req, work_enqueue, body);
        j->version = version;
        job_submit(req, j);
        return;
    }
    json_decref(body);
}

static void work_list_mutations(api_job_t *j)
{
    json_t *rows = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_list(j->gw->deps.store, j->topology_id,
                                          j->filtered ? j->state : NULL, &rows, &err);
    if (st) {
        job_store_error(j, st, &err);
        return;
    }
    job_json(j, 200, rows);
    json_decref(rows);
}

void tb__gw_api_get_mutations(gw_request_t *req)
{
    if (!authorize_topology(req, TB_ROLE_VIEWER))
        return;
    api_job_t *j = job_new(req, work_list_mutations, NULL);
    j->filtered = tb__gw_query(req, "state", j->state, sizeof j->state);
    job_submit(req, j);
}

void tb__gw_api_post_publish(gw_request_t *req)
{
    tb_principal_t p;
    if (!tb__gw_authenticate(req, TB_ROLE_PUBLISHER, false, &p))
        return;
    json_t *body = body_object(req);
    if (!body)
        return;
    const json_t *topic = json_object_get(body, "topic");
    const json_t *type = json_object_get(body, "type");
    const json_t *payload = json_object_get(body, "payload");
    const char *why = NULL;
    if (!json_is_string(topic) || strncmp(json_string_value(topic), "topology.", 9) != 0) {
        tb__gw_reply_error(req, 400, "invalid", "topic must be a string under topology.");
    } else if (tb_topic_validate(json_string_value(topic), &why)) {
        char msg[160];
        snprintf(msg, sizeof msg, "topic: %s", why);
        tb__gw_reply_error(req, 400, "invalid", msg);
    } else if (type && !json_is_null(type) &&
               (!json_is_string(type) || !tb_event_type_valid(json_string_value(type)))) {
        tb__gw_reply_error(req, 400, "invalid", "type must be 1..255 bytes of A-Z a-z 0-9 _ - .");
    } else if (!json_is_object(payload)) {
        tb__gw_reply_error(req, 400, "invalid", "payload must be a JSON object");
    } else {
        char *text = json_dumps(payload, JSON_COMPACT);
        tb_bus_t *bus = tb__gw_bus(req->gw);
        tb_status st = bus ? tb_bus_publish(bus, json_string_value(topic),
                                            json_is_string(type) ? json_string_value(type) : NULL,
                                            text, strlen(text))
                           : TB_ECLOSED;
        free(text);
        if (st == TB_EINVAL) {
            tb__gw_reply_error(req, 400, "invalid", "the event was refused");
        } else {
            if (st)
                atomic_fetch_add(&req->gw->counters.publish_failed, 1);
            /* Accepted: the bus delivers at most once, and may be down right now. */
            tb__gw_reply(req, 202, "application/json", "{\"accepted\":true}", 17);
        }
    }
    json_decref(body);
}

static void work_ready(api_job_t *j)
{
    tb_store_err_t err;
    json_t *ids = NULL;
    /* A cheap indexed read proves the store answers. */
    tb_status st = tb_store_topologies_with_pending(j->gw->deps.store, &ids, &err);
    json_decref(ids);
    if (st)
        atomic_fetch_add(&j->gw->counters.store_errors, 1);
    const char *bus = tb_bus_state_str((tb_bus_state_t)tb__gw_bus_state(j->gw));
    json_t *body = json_pack("{s:s, s:s, s:s}", "status", st ? "unavailable" : "ready", "store",
                             st ? "down" : "up", "bus", bus);
    job_json(j, st ? 503 : 200, body);
    json_decref(body);
}

void tb__gw_api_get_readyz(gw_request_t *req)
{
    job_submit(req, job_new(req, work_ready, NULL));
}
