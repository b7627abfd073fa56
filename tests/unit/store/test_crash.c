/*
 * A mutator that dies mid-mutation: a child process claims a row and is
 * killed with SIGKILL (reaped by pid). Stale-claim recovery, judging the
 * short lease as if it had run out (the database's clock, looked ahead),
 * requeues the row once (attempts 1); when it happens again the row fails
 * with reason "interrupted". The killed
 * connections leave no lock behind: later writes succeed at once.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store_fixture.h"
#include "tb/clock.h"

#define LEASE_S 5

/* Forks a child that claims from tid, reports on a pipe, then waits to be
 * killed. Returns the child's pid after the claim is committed. */
static pid_t spawn_claimer(const tb_test_store_t *t, const char *tid)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        tb_store_t *s = tb_test_store_reopen(t, LEASE_S);
        json_t *row = NULL;
        tb_store_claim_t claim;
        char ok = tb_store_mutation_claim(s, tid, "crashed-child", &row, &claim, NULL) == TB_OK
                      ? '1'
                      : '0';
        ssize_t n = write(fds[1], &ok, 1);
        (void)n;
        for (;;)
            pause();
    }
    close(fds[1]);
    char ok = 0;
    assert_int_equal(read(fds[0], &ok, 1), 1);
    close(fds[0]);
    assert_int_equal(ok, '1');
    return pid;
}

static void kill_and_reap(pid_t pid)
{
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

static json_t *only_row(tb_store_t *s, const char *tid)
{
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(s, tid, NULL, &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return row;
}

/* Past the lease by the database's clock, without waiting for it. */
#define AFTER_LEASE_MS ((LEASE_S + 1) * 1000)

static void test_crash_killed_claimer_requeued_once_then_failed(void **state)
{
    (void)state;
    tb_test_store_t t;
    tb_test_store_init(&t, LEASE_S);
    char *tid = tb_test_create_topology(t.store, "crashy");
    json_t *payload = tb_test_json("{\"id\":\"n\",\"kind\":\"k\"}");
    assert_int_equal(tb_store_mutation_enqueue(t.store, tid, "add_node", payload,
                                               TB_STORE_NO_VERSION, NULL, NULL),
                     TB_OK);
    json_decref(payload);
    tb_store_close(t.store);
    t.store = NULL;

    kill_and_reap(spawn_claimer(&t, tid));
    t.store = tb_test_store_reopen(&t, LEASE_S);
    json_t *row = only_row(t.store, tid);
    assert_string_equal(tb_store_row_state(row), "applying");
    json_decref(row);
    tb_store_recovery_t out;
    /* Within the lease nothing is touched: the claimer might still be working. */
    assert_int_equal(tb_store_recover_stale(t.store, 0, &out, NULL), TB_OK);
    assert_int_equal(out.requeued + out.failed, 0);
    assert_int_equal(tb_store_recover_stale(t.store, AFTER_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 1);
    assert_int_equal(out.failed, 0);
    row = only_row(t.store, tid);
    assert_string_equal(tb_store_row_state(row), "pending");
    assert_int_equal(json_integer_value(json_object_get(row, "attempts")), 1);
    json_decref(row);
    tb_store_close(t.store);
    t.store = NULL;

    kill_and_reap(spawn_claimer(&t, tid));
    t.store = tb_test_store_reopen(&t, LEASE_S);
    assert_int_equal(tb_store_recover_stale(t.store, AFTER_LEASE_MS, &out, NULL), TB_OK);
    assert_int_equal(out.requeued, 0);
    assert_int_equal(out.failed, 1);
    row = only_row(t.store, tid);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_string_equal(json_string_value(json_object_get(row, "error")), "interrupted");
    assert_int_equal(json_integer_value(json_object_get(row, "attempts")), 2);
    json_decref(row);
    json_t *next = NULL;
    tb_store_claim_t claim;
    assert_int_equal(tb_store_mutation_claim(t.store, tid, "test", &next, &claim, NULL),
                     TB_ENOTFOUND);
    /* Nothing of the killed connections lingers: a write goes through. */
    assert_int_equal(tb_store_topology_transition(t.store, tid, TB_TOPOLOGY_PENDING,
                                                  TB_TOPOLOGY_DEPLOYING, NULL, NULL, NULL),
                     TB_OK);
    free(tid);
    tb_test_store_cleanup(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_killed_claimer_requeued_once_then_failed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
