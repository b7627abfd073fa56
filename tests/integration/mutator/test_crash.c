/*
 * Mutators that die with a claim in hand (tb/store.h "Claims"). A hook that
 * may have done its work is never run again:
 *   - killed with SIGKILL while its apply hook runs and restarted under the
 *     same worker id, the new process ends that claim at once (not after the
 *     lease) as `interrupted`, and the hook has run exactly once;
 *   - killed the same way but replaced by a mutator with another id, the
 *     claim is ended as `interrupted` by the database's lease;
 *   - a claim left before its hook started is given back by the restarted
 *     process at once, keeping its attempts, and applied with one hook run.
 * The hook (a script) records every run and its pid, and sleeps on the
 * mutation named "slow". Reaped by pid, orphans included.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "harness.h"
#include "tb/alloc.h"
#include "tb/store.h"

typedef struct crash {
    char dir[256], url[320], log[320], hook[320];
    tb_store_t *store;
    char topology[TB_STORE_ID_BUF_SIZE];
} crash_t;

static int hook_runs(const crash_t *c)
{
    char path[400];
    snprintf(path, sizeof path, "%s/runs", c->dir);
    char *text = tb_test_read_file(path, NULL);
    int n = 0;
    for (const char *p = text; p && *p; p++)
        n += *p == '\n';
    free(text);
    return n;
}

static bool hook_started(void *ud)
{
    return hook_runs(ud) > 0;
}

/* Kills the hook processes a SIGKILLed mutator left behind (their own groups). */
static void kill_orphans(const crash_t *c)
{
    char path[400];
    snprintf(path, sizeof path, "%s/pids", c->dir);
    char *text = tb_test_read_file(path, NULL);
    for (char *save = NULL, *tok = text ? strtok_r(text, "\n", &save) : NULL; tok;
         tok = strtok_r(NULL, "\n", &save))
        kill(-(pid_t)atol(tok), SIGKILL);
    free(text);
}

static pid_t start(crash_t *c, const char *worker_id, const char *lease)
{
    const char *args[] = {"mutator", "--bus", "none", "--db", c->url, "--poll", "1",
                          "--lease", lease, "--hook", c->hook, "--hook-timeout", "2",
                          "--worker-id", worker_id, NULL};
    return h_topobus(c->log, args);
}

static void setup_crash(crash_t *c, const char *tag)
{
    memset(c, 0, sizeof *c);
    h_dir_make(c->dir, sizeof c->dir, tag);
    snprintf(c->url, sizeof c->url, "sqlite:%s/topobus.db", c->dir);
    snprintf(c->log, sizeof c->log, "%s/mutator.log", c->dir);
    snprintf(c->hook, sizeof c->hook, "%s/hook.sh", c->dir);
    char body[1200];
    snprintf(body, sizeof body,
             "cd '%s'\necho $$ >> pids\ninput=$(cat)\n"
             "echo \"$TOPOBUS_HOOK_KIND $TOPOBUS_HOOK_MUTATION_ID\" >> runs\n"
             "case \"$input\" in *'\"id\":\"slow\"'*) exec sleep 30;; esac\nexit 0\n",
             c->dir);
    h_write_file(c->hook, body, true);
    assert_int_equal(tb_store_open(&c->store, c->url, NULL, NULL), TB_OK);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(c->store, "crash", NULL, NULL, &doc, NULL), TB_OK);
    snprintf(c->topology, sizeof c->topology, "%s", tb_store_doc_id(doc));
    json_decref(doc);
}

static void cleanup_crash(crash_t *c)
{
    kill_orphans(c);
    h_reap_all();
    tb_store_close(c->store);
    h_dir_remove(c->dir);
}

static json_t *row(crash_t *c, const char *mid)
{
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(c->store, c->topology, NULL, &rows, NULL), TB_OK);
    json_t *found = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        if (strcmp(tb_store_row_id(r), mid) == 0)
            found = json_incref(r);
    }
    json_decref(rows);
    return found;
}

typedef struct wait_state {
    crash_t *c;
    const char *mid;
    const char *state;
} wait_state_t;

static bool in_state(void *ud)
{
    wait_state_t *w = ud;
    json_t *r = row(w->c, w->mid);
    bool ok = r && strcmp(tb_store_row_state(r), w->state) == 0;
    json_decref(r);
    return ok;
}

static char *enqueue(crash_t *c, const char *node)
{
    json_t *p = json_pack("{s:s, s:s}", "id", node, "kind", "k");
    json_t *r = NULL;
    assert_int_equal(tb_store_mutation_enqueue(c->store, c->topology, "add_node", p,
                                               TB_STORE_NO_VERSION, &r, NULL),
                     TB_OK);
    char *mid = tb_xstrdup(tb_store_row_id(r));
    json_decref(r);
    json_decref(p);
    return mid;
}

static void assert_interrupted_once(crash_t *c, const char *mid)
{
    json_t *r = row(c, mid);
    assert_string_equal(tb_store_row_state(r), "failed");
    assert_string_equal(json_string_value(json_object_get(r, "error")), "interrupted");
    assert_int_equal(json_integer_value(json_object_get(r, "attempts")), 1);
    json_decref(r);
    assert_int_equal(hook_runs(c), 1);
}

static void test_killed_mid_hook_restarted_ends_it_at_once_without_rerun(void **state)
{
    (void)state;
    crash_t c;
    setup_crash(&c, "crash-restart");
    char *slow = enqueue(&c, "slow");
    /* A lease far longer than the test: only the restart can end the claim. */
    pid_t pid = start(&c, "crash-w1", "120");
    assert_true(tb_test_wait_until(hook_started, &c, 15000));
    tb_test_stop(pid, SIGKILL, 1000);
    long long t0 = tb_test_now_ms();
    pid = start(&c, "crash-w1", "120");
    wait_state_t w = {&c, slow, "failed"};
    assert_true(tb_test_wait_until(in_state, &w, 15000));
    printf("# the restarted mutator ended its predecessor's claim %lld ms after it started\n",
           tb_test_now_ms() - t0);
    assert_interrupted_once(&c, slow);
    /* The queue goes on, and the hook runs once for the next mutation. */
    char *next = enqueue(&c, "next");
    w = (wait_state_t){&c, next, "applied"};
    assert_true(tb_test_wait_until(in_state, &w, 15000));
    assert_int_equal(hook_runs(&c), 2);
    int ws = tb_test_stop(pid, SIGTERM, 10000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    free(slow);
    free(next);
    cleanup_crash(&c);
}

static void test_killed_mid_hook_other_mutator_ends_it_after_the_lease(void **state)
{
    (void)state;
    crash_t c;
    setup_crash(&c, "crash-lease");
    char *slow = enqueue(&c, "slow");
    pid_t pid = start(&c, "crash-a", "3");
    assert_true(tb_test_wait_until(hook_started, &c, 15000));
    tb_test_stop(pid, SIGKILL, 1000);
    pid = start(&c, "crash-b", "3");
    wait_state_t w = {&c, slow, "failed"};
    assert_true(tb_test_wait_until(in_state, &w, 15000));
    assert_interrupted_once(&c, slow);
    int ws = tb_test_stop(pid, SIGTERM, 10000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    free(slow);
    cleanup_crash(&c);
}

static void test_claim_left_before_its_hook_is_given_back_keeping_attempts(void **state)
{
    (void)state;
    crash_t c;
    setup_crash(&c, "crash-before");
    char *mid = enqueue(&c, "early");
    /* A mutator that claimed and died before starting its hook: its claim, as it left it. */
    json_t *claimed = NULL;
    tb_store_claim_t claim;
    assert_int_equal(
        tb_store_mutation_claim(c.store, c.topology, "crash-w2", &claimed, &claim, NULL), TB_OK);
    json_decref(claimed);
    pid_t pid = start(&c, "crash-w2", "120");
    wait_state_t w = {&c, mid, "applied"};
    assert_true(tb_test_wait_until(in_state, &w, 15000));
    json_t *r = row(&c, mid);
    assert_int_equal(json_integer_value(json_object_get(r, "attempts")), 0);
    json_decref(r);
    assert_int_equal(hook_runs(&c), 1);
    /* The old claim's holder, had it lived, is refused. */
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(c.store, c.topology, &doc, NULL), TB_OK);
    tb_store_err_t err;
    assert_int_equal(tb_store_mutation_mark_applied(c.store, &claim, doc,
                                                    tb_store_doc_version(doc) + 1, NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_STALE_CLAIM);
    json_decref(doc);
    int ws = tb_test_stop(pid, SIGTERM, 10000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    free(mid);
    cleanup_crash(&c);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_killed_mid_hook_restarted_ends_it_at_once_without_rerun),
        cmocka_unit_test(test_killed_mid_hook_other_mutator_ends_it_after_the_lease),
        cmocka_unit_test(test_claim_left_before_its_hook_is_given_back_keeping_attempts),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    return rc;
}
