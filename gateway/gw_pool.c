/*
 * Worker threads for blocking store calls; see gw_pool.h. One mutex and one
 * condition variable guard a FIFO of jobs; finished jobs go to their loop's
 * inbox (gw_inbox.c), whose push wakes the loop.
 */
#include <pthread.h>
#include <stdlib.h>

#include "gw_int.h"
#include "gw_pool.h"
#include "tb/alloc.h"

struct gw_pool {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    gw_job_t *head, *tail;
    size_t count, capacity;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
};

/* Hands a finished job to its loop; if the loop no longer takes messages, it ends here. */
static void send_back(gw_job_t *job)
{
    gw_msg_t *m = gw_msg_new(GW_MSG_JOB);
    m->job = job;
    /* Never refused (see gw_inbox_push_take_nowake): the job is finished on its loop, or
     * by the inbox cleanup once the loop and its requests are gone. */
    gw_inbox_push_take(&job->loop->inbox, m);
}

static void *worker_main(void *arg)
{
    gw_pool_t *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->stopping)
            pthread_cond_wait(&pool->ready, &pool->lock);
        gw_job_t *job = pool->head;
        if (job) {
            pool->head = job->next;
            if (!pool->head)
                pool->tail = NULL;
            pool->count--;
        }
        pthread_mutex_unlock(&pool->lock);
        if (!job)
            return NULL; /* stopping and nothing left */
        job->run(job);
        send_back(job);
    }
}

tb_status gw_pool_create(gw_pool_t **out, unsigned threads, size_t capacity)
{
    gw_pool_t *pool = tb_xcalloc(1, sizeof *pool);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->ready, NULL);
    pool->capacity = capacity;
    pool->threads = tb_xcalloc(threads, sizeof *pool->threads);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&pool->threads[i], NULL, worker_main, pool)) {
            gw_pool_destroy(pool);
            *out = NULL;
            return TB_EIO;
        }
        pool->nthreads++;
    }
    *out = pool;
    return TB_OK;
}

void gw_pool_destroy(gw_pool_t *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->ready);
    pthread_mutex_unlock(&pool->lock);
    /* Workers drain the queue before they stop: every job reaches its done. */
    for (unsigned i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    free(pool->threads);
    pthread_cond_destroy(&pool->ready);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

tb_status gw_pool_submit(gw_pool_t *pool, gw_job_t *job, gw_loop_t *loop, gw_request_t *req)
{
    job->loop = loop;
    job->req = req;
    job->next = NULL;
    pthread_mutex_lock(&pool->lock);
    tb_status st = pool->stopping ? TB_ECLOSED : pool->count >= pool->capacity ? TB_EFULL : TB_OK;
    if (st == TB_OK) {
        if (pool->tail)
            pool->tail->next = job;
        else
            pool->head = job;
        pool->tail = job;
        pool->count++;
        pthread_cond_signal(&pool->ready);
    }
    pthread_mutex_unlock(&pool->lock);
    if (st == TB_OK)
        req->job = job;
    return st;
}

void gw_pool_deliver(gw_job_t *job)
{
    if (job->req)
        job->req->job = NULL;
    job->done(job);
}

void gw_pool_forget(gw_request_t *req)
{
    if (req->job) {
        req->job->req = NULL;
        req->job = NULL;
    }
}
