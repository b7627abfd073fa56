/*
 * The gateway's worker pool (DESIGN "Threads and the event loop"): store
 * calls, which may block on the network (PostgreSQL) or on a lock (SQLite),
 * never run on an event loop. A loop submits a job; a worker runs job->run;
 * the result travels back through the loop's inbox, where job->done runs on
 * the loop thread.
 *
 * A job belongs to one request. If the request goes away first (the client
 * hung up), the loop sets job->req to NULL; done then only frees the job.
 * done always runs exactly once, also at shutdown (then with req NULL).
 * Lock order: the pool's mutex is a leaf; nothing is called while holding it.
 */
#ifndef TB_GW_POOL_H
#define TB_GW_POOL_H

#include <stdatomic.h>
#include <stddef.h>

#include "tb/base.h"

struct gw_loop;
struct gw_request;
typedef struct gw_pool gw_pool_t;
typedef struct gw_job gw_job_t;

typedef void (*gw_job_fn)(gw_job_t *job);

struct gw_job {
    gw_job_t *next;            /* pool queue link */
    struct gw_loop *loop;      /* where done runs */
    /* The owner; NULL once it is gone. Atomic: at shutdown a worker may finish the job
     * while the loop side forgets the request. */
    struct gw_request *_Atomic req;
    gw_job_fn run;             /* worker thread: the blocking part */
    gw_job_fn done;            /* loop thread (or shutdown): deliver, then free the job */
};

/** Starts `threads` workers and a queue of at most `capacity` jobs. */
tb_status gw_pool_create(gw_pool_t **out, unsigned threads, size_t capacity);

/** Stops the workers (each finishes its current job); queued jobs get done with req NULL. */
void gw_pool_destroy(gw_pool_t *pool);

/**
 * Queues job for the request req on loop and records it as req->job. On
 * failure (TB_EFULL: too many jobs waiting; TB_ECLOSED: shutting down)
 * nothing is queued and the caller still owns job. Loop thread.
 */
tb_status gw_pool_submit(gw_pool_t *pool, gw_job_t *job, struct gw_loop *loop,
                         struct gw_request *req);

/** The loop side of a finished job: clears req->job, runs done. Loop thread. */
void gw_pool_deliver(gw_job_t *job);

/** A request is going away: its job, if any, will not touch it. Loop thread. */
void gw_pool_forget(struct gw_request *req);

#endif
