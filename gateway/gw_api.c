/*
 * The REST API of CONTRACT §4: topologies, deploy/teardown requests,
 * mutations and publishing. Handlers run on a loop thread; store calls are
 * SQLite-short (DESIGN "Threads and the event loop"). Events are published
 * only after the store committed, and a bus failure never fails a request.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_auth_http.h"
#include "tb/bus.h"
#include "tb/log.h"
#include "tb/store.h"

/* Sends value (borrowed) as the JSON body. */
static void reply_json(gw_request_t *req, int status, const json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_REAL_PRECISION(17));
    tb__gw_reply(req, status, "application/json", text, strlen(text));
    free(text);
}

/* Maps a store failure to its HTTP answer (CONTRACT §4, issue notes on 503). */
static void reply_store_error(gw_request_t *req, tb_status st, const tb_store_err_t *err)
{
    switch (err->reason) {
    case TB_STORE_R_INVALID:
        tb__gw_reply_error(req, 400, "invalid", err->message);
        return;
    case TB_STORE_R_NOT_FOUND:
        tb__gw_reply_error(req, 404, "not_found", "no such topology or mutation");
        return;
    case TB_STORE_R_VERSION_CONFLICT: {
        json_t *body = json_pack("{s:s, s:s, s:I, s:I}", "error", "version_conflict", "message",
                                 err->message, "current", (json_int_t)err->current, "expected",
                                 (json_int_t)err->expected);
        reply_json(req, 409, body);
        json_decref(body);
        return;
    }
    case TB_STORE_R_NOT_MUTABLE:
    case TB_STORE_R_ILLEGAL_TRANSITION:
    case TB_STORE_R_WRONG_STATE:
        tb__gw_reply_error(req, 409, tb_store_reason_code(err->reason), err->message);
        return;
    case TB_STORE_R_BUSY:
    case TB_STORE_R_BACKEND:
    case TB_STORE_R_SCHEMA_TOO_NEW:
    case TB_STORE_R_NONE:
        break;
    }
    atomic_fetch_add(&req->gw->counters.store_errors, 1);
    tb_log(TB_LOG_WARN, "api", "%s %s: store failed: %s (%s)", req->method_name, req->path,
           tb_status_str(st), err->message);
    tb__gw_add_header(req, "retry-after:", "1");
    tb__gw_reply_error(req, 503, "store_unavailable", "the store is not answering; retry shortly");
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

/* Fire and forget: the store already holds the truth, the event only hurries UIs along. */
static void publish(gw_request_t *req, tb_topic_family family, const json_t *payload)
{
    char topic[TB_TOPIC_BUF_SIZE];
    if (tb_topic_build(topic, family, req->topology_id))
        return;
    tb__gw_publish_json(req->gw, topic, payload);
}

void tb__gw_publish_json(tb_gateway_t *gw, const char *topic, const json_t *payload)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    tb_bus_t *bus = tb__gw_bus(gw);
    tb_status st = bus ? tb_bus_publish(bus, topic, NULL, text, strlen(text)) : TB_ECLOSED;
    if (st)
        atomic_fetch_add(&gw->counters.publish_failed, 1);
    free(text);
}

void tb__gw_api_get_topologies(gw_request_t *req)
{
    tb_principal_t p;
    if (!tb__gw_authenticate(req, TB_ROLE_VIEWER, false, &p))
        return;
    json_t *list = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_list(req->gw->deps.store, &list, &err);
    if (st) {
        reply_store_error(req, st, &err);
        return;
    }
    reply_json(req, 200, list);
    json_decref(list);
}

void tb__gw_api_post_topologies(gw_request_t *req)
{
    tb_principal_t p;
    if (!tb__gw_authenticate(req, TB_ROLE_EDITOR, false, &p))
        return;
    json_t *body = body_object(req);
    if (!body)
        return;
    const json_t *name = json_object_get(body, "name");
    const json_t *nodes = json_object_get(body, "nodes");
    const json_t *links = json_object_get(body, "links");
    if (!json_is_string(name)) {
        tb__gw_reply_error(req, 400, "invalid", "name must be a string");
        json_decref(body);
        return;
    }
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_create(req->gw->deps.store, json_string_value(name),
                                            json_is_null(nodes) ? NULL : nodes,
                                            json_is_null(links) ? NULL : links, &doc, &err);
    if (st) {
        reply_store_error(req, st, &err);
    } else {
        reply_json(req, 201, doc);
        json_decref(doc);
    }
    json_decref(body);
}

void tb__gw_api_get_topology(gw_request_t *req)
{
    if (!authorize_topology(req, TB_ROLE_VIEWER))
        return;
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_get(req->gw->deps.store, req->topology_id, &doc, &err);
    if (st) {
        reply_store_error(req, st, &err);
        return;
    }
    reply_json(req, 200, doc);
    json_decref(doc);
}

/*
 * Deploy and teardown are recorded in the store as the first transition
 * (pending → deploying, or → tearing_down), so a request survives a bus
 * outage, and published on `topology.<id>.status`. The mutator wakes on that
 * event (or finds the status when it polls) and completes the transition.
 */
static void request_transition(gw_request_t *req, tb_topology_status to)
{
    if (!authorize_topology(req, TB_ROLE_EDITOR))
        return;
    tb_topology_status previous;
    tb_store_err_t err;
    tb_status st = tb_store_topology_transition(req->gw->deps.store, req->topology_id,
                                                TB_TOPOLOGY_ANY, to, &previous, &err);
    if (st) {
        reply_store_error(req, st, &err);
        return;
    }
    json_t *payload = json_pack("{s:s, s:s}", "state", tb_topology_status_name(to), "previous",
                                tb_topology_status_name(previous));
    publish(req, TB_TOPIC_STATUS, payload);
    json_t *body = json_pack("{s:s, s:s}", "id", req->topology_id, "status",
                             tb_topology_status_name(to));
    reply_json(req, 202, body);
    json_decref(body);
    json_decref(payload);
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

void tb__gw_api_post_mutation(gw_request_t *req)
{
    if (!authorize_topology(req, TB_ROLE_EDITOR))
        return;
    json_t *body = body_object(req);
    if (!body)
        return;
    const json_t *op = json_object_get(body, "op");
    const json_t *payload = json_object_get(body, "payload");
    int64_t version;
    if (!json_is_string(op) || !json_is_object(payload)) {
        tb__gw_reply_error(req, 400, "invalid", "op must be a string and payload an object");
    } else if (!expected_version(json_object_get(body, "expected_version"), &version)) {
        tb__gw_reply_error(req, 400, "invalid", "expected_version must be a non-negative integer");
    } else {
        json_t *row = NULL;
        tb_store_err_t err;
        tb_status st = tb_store_mutation_enqueue(req->gw->deps.store, req->topology_id,
                                                 json_string_value(op), payload, version, &row,
                                                 &err);
        if (st) {
            reply_store_error(req, st, &err);
        } else {
            json_t *event = json_pack("{s:s, s:O, s:O}", "mutation_id", tb_store_row_id(row),
                                      "op", op, "payload", payload);
            publish(req, TB_TOPIC_MUTATION_ENQUEUED, event);
            json_decref(event);
            json_t *answer = json_pack("{s:s, s:s}", "mutation_id", tb_store_row_id(row),
                                       "state", "pending");
            reply_json(req, 202, answer);
            json_decref(answer);
            json_decref(row);
        }
    }
    json_decref(body);
}

void tb__gw_api_get_mutations(gw_request_t *req)
{
    if (!authorize_topology(req, TB_ROLE_VIEWER))
        return;
    char state[32];
    bool filtered = tb__gw_query(req, "state", state, sizeof state);
    json_t *rows = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_list(req->gw->deps.store, req->topology_id,
                                          filtered ? state : NULL, &rows, &err);
    if (st) {
        reply_store_error(req, st, &err);
        return;
    }
    reply_json(req, 200, rows);
    json_decref(rows);
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

void tb__gw_api_get_readyz(gw_request_t *req)
{
    tb_store_err_t err;
    json_t *ids = NULL;
    /* A cheap indexed read proves the store answers. */
    tb_status st = tb_store_topologies_with_pending(req->gw->deps.store, &ids, &err);
    json_decref(ids);
    if (st)
        atomic_fetch_add(&req->gw->counters.store_errors, 1);
    const char *bus = tb_bus_state_str((tb_bus_state_t)tb__gw_bus_state(req->gw));
    json_t *body = json_pack("{s:s, s:s, s:s}", "status", st ? "unavailable" : "ready", "store",
                             st ? "down" : "up", "bus", bus);
    reply_json(req, st ? 503 : 200, body);
    json_decref(body);
}
