/*
 * The REST API of CONTRACT §4: topologies, deploy/teardown requests,
 * mutations and publishing. A handler authenticates and validates on its
 * loop thread, then hands the store call to a worker as a job
 * (gw_api_job.h): a store may block on the network or a lock, a loop never
 * may. The worker builds the reply text; the loop sends it. Events are published only after the
 * store committed, and a bus failure never fails a request.
 *
 * Every POST that creates or changes something takes an Idempotency-Key
 * (gw_idem.h): creating a topology, deploy, teardown, enqueueing and
 * publishing. A change records its answer in its own transaction; a
 * keyed publish goes through a worker too, for its record.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_api_job.h"
#include "gw_auth_http.h"
#include "gw_idem.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/log.h"
#include "tb/store.h"

/*
 * Authenticates, then refuses a malformed id as unknown: no existence probe without a
 * token. *p is who asks.
 */
static bool authorize_topology(gw_request_t *req, unsigned role, tb_principal_t *p)
{
    if (!tb__gw_authenticate(req, role, false, p))
        return false;
    if (!req->topology_id_valid) {
        tb__gw_reply_error(req, 404, "not_found", "no such topology");
        return false;
    }
    return true;
}

static void work_list(gw_api_job_t *j)
{
    json_t *list = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_list(j->gw->deps.store, &list, &err);
    if (st) {
        gw_api_job_store_error(j, st, &err);
        return;
    }
    gw_api_job_json(j, 200, list);
    json_decref(list);
}

void tb__gw_api_get_topologies(gw_request_t *req)
{
    tb_principal_t p;
    if (tb__gw_authenticate(req, TB_ROLE_VIEWER, false, &p))
        gw_api_job_submit(req, gw_api_job_new(req, work_list, NULL));
}

/* 201 body: the document. */
static char *document_body(const json_t *doc, void *ud)
{
    (void)ud;
    return json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

static void work_create(gw_api_job_t *j)
{
    const json_t *nodes = json_object_get(j->body, "nodes");
    const json_t *links = json_object_get(j->body, "links");
    const char *name = json_string_value(json_object_get(j->body, "name"));
    nodes = json_is_null(nodes) ? NULL : nodes;
    links = json_is_null(links) ? NULL : links;
    tb_store_answer_t a = gw_idem_answer(&j->idem, 201, document_body, NULL);
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_store_t *store = j->gw->deps.store;
    tb_status st =
        j->idem.on ? tb_store_topology_create_answered(store, name, nodes, links, &a, &doc, &err)
                   : tb_store_topology_create(store, name, nodes, links, &doc, &err);
    gw_api_job_result(j, st, &err, &a, doc);
    json_decref(doc);
}

void tb__gw_api_post_topologies(gw_request_t *req)
{
    tb_principal_t p;
    gw_idem_t idem;
    if (!tb__gw_authenticate(req, TB_ROLE_EDITOR, false, &p) || !gw_idem_parse(req, &p, &idem))
        return;
    json_t *body = gw_api_body_object(req);
    if (!body)
        return;
    if (!json_is_string(json_object_get(body, "name"))) {
        tb__gw_reply_error(req, 400, "invalid", "name must be a string");
        json_decref(body);
        return;
    }
    gw_api_job_submit(req, gw_api_job_new_keyed(req, work_create, body, &idem));
}

static void work_get(gw_api_job_t *j)
{
    json_t *doc = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_topology_get(j->gw->deps.store, j->topology_id, &doc, &err);
    if (st) {
        gw_api_job_store_error(j, st, &err);
        return;
    }
    gw_api_job_json(j, 200, doc);
    json_decref(doc);
}

void tb__gw_api_get_topology(gw_request_t *req)
{
    tb_principal_t p;
    if (authorize_topology(req, TB_ROLE_VIEWER, &p))
        gw_api_job_submit(req, gw_api_job_new(req, work_get, NULL));
}

/* 202 body of a transition: {"id","status"} from the store's {"id","status","previous"}. */
static char *transition_body(const json_t *result, void *ud)
{
    (void)ud;
    json_t *body = json_pack("{s:s, s:s}", "id", json_string_value(json_object_get(result, "id")),
                             "status", json_string_value(json_object_get(result, "status")));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

/*
 * Deploy and teardown are recorded in the store as the first transition
 * (pending → deploying, or → tearing_down), together with its
 * `topology.<id>.status` event in the outbox, so a request survives a bus
 * outage. The mutator wakes on that event once the relay published it (or
 * finds the status when it polls) and completes the transition.
 */
static void work_transition(gw_api_job_t *j)
{
    tb_topology_status previous = TB_TOPOLOGY_ANY;
    tb_store_answer_t a = gw_idem_answer(&j->idem, 202, transition_body, NULL);
    tb_store_err_t err;
    tb_store_t *store = j->gw->deps.store;
    tb_status st = j->idem.on
                       ? tb_store_topology_transition_answered(store, j->topology_id,
                                                               TB_TOPOLOGY_ANY, j->to, NULL, &a,
                                                               &previous, &err)
                       : tb_store_topology_transition(store, j->topology_id, TB_TOPOLOGY_ANY,
                                                      j->to, NULL, &previous, &err);
    json_t *result = NULL;
    if (st == TB_OK)
        result = json_pack("{s:s, s:s, s:s}", "id", j->topology_id, "status",
                           tb_topology_status_name(j->to), "previous",
                           tb_topology_status_name(previous));
    gw_api_job_result(j, st, &err, &a, result);
    json_decref(result);
}

static void request_transition(gw_request_t *req, tb_topology_status to)
{
    tb_principal_t p;
    gw_idem_t idem;
    if (!authorize_topology(req, TB_ROLE_EDITOR, &p) || !gw_idem_parse(req, &p, &idem))
        return;
    gw_api_job_t *j = gw_api_job_new_keyed(req, work_transition, NULL, &idem);
    j->to = to;
    gw_api_job_submit(req, j);
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

/* 202 body of an enqueue. */
static char *enqueue_body(const json_t *row, void *ud)
{
    (void)ud;
    json_t *body =
        json_pack("{s:s, s:s}", "mutation_id", tb_store_row_id(row), "state", "pending");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

static void work_enqueue(gw_api_job_t *j)
{
    const char *op = json_string_value(json_object_get(j->body, "op"));
    const json_t *payload = json_object_get(j->body, "payload");
    tb_store_answer_t a = gw_idem_answer(&j->idem, 202, enqueue_body, NULL);
    json_t *row = NULL;
    tb_store_err_t err;
    tb_store_t *store = j->gw->deps.store;
    tb_status st = j->idem.on ? tb_store_mutation_enqueue_answered(store, j->topology_id, op,
                                                                   payload, j->version, &a, &row,
                                                                   &err)
                              : tb_store_mutation_enqueue(store, j->topology_id, op, payload,
                                                          j->version, &row, &err);
    gw_api_job_result(j, st, &err, &a, row);
    json_decref(row);
}

void tb__gw_api_post_mutation(gw_request_t *req)
{
    tb_principal_t p;
    gw_idem_t idem;
    if (!authorize_topology(req, TB_ROLE_EDITOR, &p) || !gw_idem_parse(req, &p, &idem))
        return;
    json_t *body = gw_api_body_object(req);
    if (!body)
        return;
    int64_t version;
    if (!json_is_string(json_object_get(body, "op")) ||
        !json_is_object(json_object_get(body, "payload"))) {
        tb__gw_reply_error(req, 400, "invalid", "op must be a string and payload an object");
    } else if (!expected_version(json_object_get(body, "expected_version"), &version)) {
        tb__gw_reply_error(req, 400, "invalid", "expected_version must be a non-negative integer");
    } else {
        gw_api_job_t *j = gw_api_job_new_keyed(req, work_enqueue, body, &idem);
        j->version = version;
        gw_api_job_submit(req, j);
        return;
    }
    json_decref(body);
}

static void work_list_mutations(gw_api_job_t *j)
{
    json_t *rows = NULL;
    tb_store_err_t err;
    tb_status st = tb_store_mutation_list(j->gw->deps.store, j->topology_id,
                                          j->filtered ? j->state : NULL, &rows, &err);
    if (st) {
        gw_api_job_store_error(j, st, &err);
        return;
    }
    gw_api_job_json(j, 200, rows);
    json_decref(rows);
}

void tb__gw_api_get_mutations(gw_request_t *req)
{
    tb_principal_t p;
    if (!authorize_topology(req, TB_ROLE_VIEWER, &p))
        return;
    gw_api_job_t *j = gw_api_job_new(req, work_list_mutations, NULL);
    j->filtered = tb__gw_query(req, "state", j->state, sizeof j->state);
    gw_api_job_submit(req, j);
}

/* Checks a /publish body; on false the 400 reply is set. */
static bool publish_valid(gw_request_t *req, const json_t *body)
{
    const json_t *topic = json_object_get(body, "topic");
    const json_t *type = json_object_get(body, "type");
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
    } else if (!json_is_object(json_object_get(body, "payload"))) {
        tb__gw_reply_error(req, 400, "invalid", "payload must be a JSON object");
    } else {
        return true;
    }
    return false;
}

/* Publishes a valid /publish body; the reply into j. Any thread: the bus never blocks. */
static void work_publish(gw_api_job_t *j)
{
    const json_t *type = json_object_get(j->body, "type");
    char *text = json_dumps(json_object_get(j->body, "payload"), JSON_COMPACT);
    tb_bus_t *bus = tb__gw_bus(j->gw);
    tb_status st = bus ? tb_bus_publish(bus, json_string_value(json_object_get(j->body, "topic")),
                                        json_is_string(type) ? json_string_value(type) : NULL,
                                        text, strlen(text))
                       : TB_ECLOSED;
    free(text);
    if (st == TB_EINVAL) {
        gw_api_job_error(j, 400, "invalid", "the event was refused");
        return;
    }
    if (st)
        atomic_fetch_add(&j->gw->counters.publish_failed, 1);
    /* Accepted: the bus delivers at most once, and may be down right now. */
    j->status = 202;
    j->text = tb_xstrdup("{\"accepted\":true}");
}

void tb__gw_api_post_publish(gw_request_t *req)
{
    tb_principal_t p;
    gw_idem_t idem;
    if (!tb__gw_authenticate(req, TB_ROLE_PUBLISHER, false, &p) || !gw_idem_parse(req, &p, &idem))
        return;
    json_t *body = gw_api_body_object(req);
    if (!body)
        return;
    if (!publish_valid(req, body)) {
        json_decref(body);
        return;
    }
    gw_api_job_t *j = gw_api_job_new_keyed(req, work_publish, body, &idem);
    if (idem.on) {
        /* The key's record is a store call: a worker publishes and records. */
        gw_api_job_submit(req, j);
        return;
    }
    /* Without a key nothing blocks: publish right here on the loop. */
    work_publish(j);
    tb__gw_reply(req, j->status, "application/json", j->text, strlen(j->text));
    free(j->text);
    json_decref(j->body);
    free(j);
}

static void work_ready(gw_api_job_t *j)
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
    gw_api_job_json(j, st ? 503 : 200, body);
    json_decref(body);
}

void tb__gw_api_get_readyz(gw_request_t *req)
{
    gw_api_job_submit(req, gw_api_job_new(req, work_ready, NULL));
}
