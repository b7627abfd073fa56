/*
 * The loop inbox: frames are bounded, finished jobs never refused. A job's
 * request on the loop still points at the job, so a job refused by a full
 * or closed inbox (and finished on the worker) would leave that request
 * with a dangling pointer and its stream waiting forever. The inbox keeps
 * every job message until the loop delivers it or the cleanup after the
 * loop is gone finishes it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "gw_inbox.h"
#include "gw_pool.h"
#include "tb/alloc.h"

typedef struct probe_job {
    gw_job_t base;
    int *done_calls;
} probe_job_t;

static void probe_done(gw_job_t *job)
{
    probe_job_t *p = (probe_job_t *)job;
    (*p->done_calls)++;
    free(p);
}

static gw_msg_t *job_msg(int *done_calls)
{
    probe_job_t *p = tb_xcalloc(1, sizeof *p);
    p->base.done = probe_done;
    p->done_calls = done_calls;
    gw_msg_t *m = gw_msg_new(GW_MSG_JOB);
    m->job = &p->base;
    return m;
}

static void test_inbox_full_of_frames_still_takes_finished_jobs(void **state)
{
    (void)state;
    gw_inbox_t in;
    gw_inbox_init(&in, 2);
    int done_calls = 0;
    gw_frame_t *f = gw_frame_new("data: x\n\n", 9, 1);
    bool wake;
    assert_int_equal(gw_inbox_push_frame(&in, f, &wake), TB_OK);
    assert_int_equal(gw_inbox_push_frame(&in, f, &wake), TB_OK);
    assert_int_equal(gw_inbox_push_frame(&in, f, &wake), TB_EFULL);
    gw_frame_unref(f);
    assert_int_equal(gw_inbox_push_take(&in, job_msg(&done_calls)), TB_OK);
    assert_int_equal(done_calls, 0); /* not finished on the pushing thread */
    gw_inbox_cleanup(&in);
    assert_int_equal(done_calls, 1);
}

static void test_inbox_closed_keeps_finished_jobs_for_the_cleanup(void **state)
{
    (void)state;
    gw_inbox_t in;
    gw_inbox_init(&in, 4);
    int done_calls = 0;
    gw_inbox_close(&in);
    assert_int_equal(gw_inbox_push_take(&in, gw_msg_new(GW_MSG_DRAIN)), TB_ECLOSED);
    assert_int_equal(gw_inbox_push_take(&in, job_msg(&done_calls)), TB_OK);
    assert_int_equal(done_calls, 0);
    gw_inbox_cleanup(&in);
    assert_int_equal(done_calls, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inbox_full_of_frames_still_takes_finished_jobs),
        cmocka_unit_test(test_inbox_closed_keeps_finished_jobs_for_the_cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
