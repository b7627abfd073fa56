/*
 * The REST handlers' store jobs (gw_api.c): a request's inputs, copied on
 * its loop thread, and its reply, built on a worker (gw_pool.h), with the
 * request's Idempotency-Key (gw_idem.h) reserved before the work and
 * settled after it. A job never touches its request; the loop sends the
 * reply. Functions are loop-thread only unless they say "worker".
 */
#ifndef TB_GW_API_JOB_H
#define TB_GW_API_JOB_H

#include <jansson.h>

#include "gw_idem.h"
#include "gw_int.h"
#include "gw_pool.h"
#include "tb/store.h"

/*
 * One REST call's store work: its inputs, copied from the request on the loop
 * thread, and its reply, built on a worker. It never touches the request.
 */
typedef struct gw_api_job gw_api_job_t;
typedef void (*gw_api_work_fn)(gw_api_job_t *j);

struct gw_api_job {
    gw_job_t base;
    tb_gateway_t *gw;
    gw_api_work_fn work;
    char what[96]; /* "POST /topologies/t_…/mutations" for the log: no query string */
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    json_t *body; /* the parsed request body, owned; NULL if none */
    char state[32];
    bool filtered;
    int64_t version;
    tb_topology_status to;
    gw_idem_t idem; /* the request's Idempotency-Key, if any */
    /* The reply. */
    int status;
    char *text;
    bool retry_after;
};

/** Worker: sets a JSON reply (value borrowed). */
void gw_api_job_json(gw_api_job_t *j, int status, const json_t *value);
/** Worker: sets an error reply {"error":code,"message":message}. */
void gw_api_job_error(gw_api_job_t *j, int status, const char *code, const char *message);
/** Worker: maps a store failure to its answer (CONTRACT §4; 503 if the store does not answer). */
void gw_api_job_store_error(gw_api_job_t *j, tb_status st, const tb_store_err_t *err);
/**
 * Worker: the reply of a change: its answer (with a key, exactly the body recorded with
 * the change), or its error. a is the answer the call was given (gw_idem_answer); result
 * is what the call returned (borrowed).
 */
void gw_api_job_result(gw_api_job_t *j, tb_status st, const tb_store_err_t *err,
                       tb_store_answer_t *a, const json_t *result);

/** A job for req doing `work`, with the request's id, its log name and body (taken). */
gw_api_job_t *gw_api_job_new(gw_request_t *req, gw_api_work_fn work, json_t *body_take);
/** As gw_api_job_new, for a request whose Idempotency-Key was read into idem (copied). */
gw_api_job_t *gw_api_job_new_keyed(gw_request_t *req, gw_api_work_fn work, json_t *body_take,
                                   const gw_idem_t *idem);
/**
 * Queues a filled job (taken). A key being processed in this process answers 409/422 at
 * once; a full queue answers 503 at once instead of waiting.
 */
void gw_api_job_submit(gw_request_t *req, gw_api_job_t *j);
/** Parses the request body as a JSON object (new); on NULL the 400 reply is set. */
json_t *gw_api_body_object(gw_request_t *req);

#endif
