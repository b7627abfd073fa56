/*
 * The REST handlers' store jobs; see gw_api_job.h. A job's run (worker)
 * reserves its Idempotency-Key, if any, does the work and settles the key;
 * its done (loop, or shutdown) sends the reply if the request is still
 * there, leaves the key's table and frees the job.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_api_job.h"
#include "tb/alloc.h"
#include "tb/log.h"

void gw_api_job_json(gw_api_job_t *j, int status, const json_t *value)
{
    j->status = status;
    j->text = json_dumps(value, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

void gw_api_job_error(gw_api_job_t *j, int status, const char *code, const char *message)
{
    json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
    gw_api_job_json(j, status, obj);
    json_decref(obj);
}

/* Maps a store failure to its HTTP answer (CONTRACT §4; 503 when the store does not answer). */
void gw_api_job_store_error(gw_api_job_t *j, tb_status st, const tb_store_err_t *err)
{
    switch (err->reason) {
    case TB_STORE_R_INVALID:
        gw_api_job_error(j, 400, "invalid", err->message);
        return;
    case TB_STORE_R_NOT_FOUND:
        gw_api_job_error(j, 404, "not_found", "no such topology or mutation");
        return;
    case TB_STORE_R_VERSION_CONFLICT: {
        json_t *body =
            json_pack("{s:s, s:s, s:I, s:I}", "error", "version_conflict", "message", err->message,
                      "current", (json_int_t)err->current, "expected", (json_int_t)err->expected);
        gw_api_job_json(j, 409, body);
        json_decref(body);
        return;
    }
    case TB_STORE_R_NOT_MUTABLE:
    case TB_STORE_R_ILLEGAL_TRANSITION:
    case TB_STORE_R_WRONG_STATE:
    case TB_STORE_R_STALE_CLAIM: /* a worker's reason, never an HTTP request's */
        gw_api_job_error(j, 409, tb_store_reason_code(err->reason), err->message);
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
    gw_api_job_error(j, 503, "store_unavailable", "the store is not answering; retry shortly");
}

static void job_run(gw_job_t *base)
{
    gw_api_job_t *j = (gw_api_job_t *)base;
    /* With a key: the recorded answer, or 409/422/503, unless the key is now this request's. */
    if (j->idem.on && !gw_idem_reserve(j->gw, &j->idem, &j->status, &j->text, &j->retry_after))
        return;
    j->work(j);
    gw_idem_settle(j->gw, &j->idem, j->status, j->text);
}

/* Loop thread: sends the reply if the client is still there, then frees the job. */
static void job_done(gw_job_t *base)
{
    gw_api_job_t *j = (gw_api_job_t *)base;
    gw_request_t *req = atomic_load(&base->req);
    if (req) {
        if (j->retry_after)
            tb__gw_add_header(req, "retry-after:", "1");
        if (j->idem.replayed)
            tb__gw_add_header(req, "idempotent-replayed:", "true");
        tb__gw_reply(req, j->status, "application/json", j->text, strlen(j->text));
        tb__gw_respond(req);
    }
    gw_idem_close(j->gw, &j->idem);
    tb_store_idem_cleanup(&j->idem.rec);
    free(j->text);
    json_decref(j->body);
    free(j);
}

/* A job for req doing `work`, with the request's id, its log name and body (taken). */
gw_api_job_t *gw_api_job_new(gw_request_t *req, gw_api_work_fn work, json_t *body_take)
{
    gw_api_job_t *j = tb_xcalloc(1, sizeof *j);
    j->base.run = job_run;
    j->base.done = job_done;
    j->gw = req->gw;
    j->work = work;
    j->body = body_take;
    snprintf(j->what, sizeof j->what, "%s %s", req->method_name, req->path);
    memcpy(j->topology_id, req->topology_id, sizeof j->topology_id);
    return j;
}

/*
 * Queues a filled job (taken). A key being processed in this process answers 409/422 at
 * once; a full queue answers 503 at once instead of waiting.
 */
void gw_api_job_submit(gw_request_t *req, gw_api_job_t *j)
{
    bool claimed = gw_idem_claim(req, &j->idem);
    if (claimed && gw_pool_submit(req->gw->pool, &j->base, req->loop, req) == TB_OK)
        return;
    gw_idem_close(req->gw, &j->idem);
    json_decref(j->body);
    free(j);
    if (!claimed)
        return; /* 409 or 422, set by the claim */
    tb__gw_add_header(req, "retry-after:", "1");
    tb__gw_reply_error(req, 503, "busy", "too many requests are waiting for the store");
}

/* Parses the request body as a JSON object; on false the 400 reply is set. */
json_t *gw_api_body_object(gw_request_t *req)
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

/* A job for a request that may carry an Idempotency-Key (read already into idem). */
gw_api_job_t *gw_api_job_new_keyed(gw_request_t *req, gw_api_work_fn work, json_t *body_take,
                                   const gw_idem_t *idem)
{
    gw_api_job_t *j = gw_api_job_new(req, work, body_take);
    j->idem = *idem;
    return j;
}

/*
 * The reply of a change: its answer (with a key, exactly the body recorded with the
 * change), or its error. a is the answer the call was given (gw_idem_answer); result is
 * what the call returned.
 */
void gw_api_job_result(gw_api_job_t *j, tb_status st, const tb_store_err_t *err,
                       tb_store_answer_t *a, const json_t *result)
{
    if (st == TB_OK) {
        j->status = a->status;
        j->text = j->idem.on ? a->body : a->build(result, a->ud);
        j->idem.answered = j->idem.on;
        return;
    }
    if (a->lost) {
        /* This request's reservation lapsed and another request with the key holds it now:
         * that one answers. Nothing was changed here. */
        j->idem.answered = true;
        atomic_fetch_add(&j->gw->counters.idem_in_flight, 1);
        j->retry_after = true;
        gw_api_job_error(
            j, 409, "idempotency_key_in_flight",
            "a request with this Idempotency-Key is still being processed; retry shortly");
        return;
    }
    gw_api_job_store_error(j, st, err);
}
