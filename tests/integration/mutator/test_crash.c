/*
 * A mutator killed with SIGKILL while its apply hook is running. The hook
 * (a script) counts its runs and, until told otherwise, is slow only on its
 * first run. After a restart the stale claim is requeued once and the
 * mutation completes (attempts 1); when every run is slow and the mutator
 * is killed again, the next one fails the mutation as `interrupted`.
 * Short lease and hook timeout (3 s, 2 s) keep it quick.
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
    int runs_seen;
} crash_t;

static int hook_runs(const crash_t *c)
{
    char path[400];
    snprintf(path, sizeof path, "%s/runs", c->dir);
    char *text = tb_test_read_file(path, NULL);
    int n = text ? atoi(text) : 0;
    free(text);
    return n;
}

static bool hook_started(void *ud)
{
    crash_t *c = ud;
    return hook_runs(c) > c->runs_seen;
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

static pid_t start(crash_t *c)
{
    const char *args[] = {"mutator", "--bus", "none", "--db", c->url, "--poll", "1", "--lease",
                          "3", "--hook", c->hook, "--hook-timeout", "2", NULL};
    return h_topobus(c->log, args);
}

/* Starts a mutator, waits for the hook to begin, and kills the mutator. */
static void crash_during_hook(crash_t *c)
{
    pid_t pid = start(c);
    assert_true(tb_test_wait_until(hook_started, c, 15000));
    c->runs_seen = hook_runs(c);
    tb_test_stop(pid, SIGKILL, 1000);
    kill_orphans(c);
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

static void test_killed_mutator_is_retried_once_then_interrupted(void **state)
{
    (void)state;
    crash_t c = {0};
    h_dir_make(c.dir, sizeof c.dir, "crash");
    snprintf(c.url, sizeof c.url, "sqlite:%s/topobus.db", c.dir);
    snprintf(c.log, sizeof c.log, "%s/mutator.log", c.dir);
    snprintf(c.hook, sizeof c.hook, "%s/hook.sh", c.dir);
    char body[1200];
    snprintf(body, sizeof body,
             "cd '%s'\necho $$ >> pids\nn=$(cat runs 2>/dev/null || echo 0)\n"
             "echo $((n + 1)) > runs\ncat > /dev/null\n"
             "if [ \"$n\" -eq 0 ] || [ -f always-slow ]; then exec sleep 30; fi\nexit 0\n",
             c.dir);
    h_write_file(c.hook, body, true);
    tb_store_options_t opts = {.lease_s = 3};
    assert_int_equal(tb_store_open(&c.store, c.url, &opts, NULL), TB_OK);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_create(c.store, "crash", NULL, NULL, &doc, NULL), TB_OK);
    snprintf(c.topology, sizeof c.topology, "%s", tb_store_doc_id(doc));
    json_decref(doc);

    /* First crash: the restarted mutator requeues the claim and completes it. */
    char *m1 = enqueue(&c, "a");
    crash_during_hook(&c);
    pid_t pid = start(&c);
    wait_state_t w = {&c, m1, "applied"};
    assert_true(tb_test_wait_until(in_state, &w, 15000));
    json_t *r = row(&c, m1);
    assert_int_equal(json_integer_value(json_object_get(r, "attempts")), 1);
    json_decref(r);
    assert_int_equal(hook_runs(&c), 2);
    tb_test_stop(pid, SIGTERM, 10000);

    /* Second mutation, every hook run slow: two crashes, then `interrupted`. */
    char flag[400];
    snprintf(flag, sizeof flag, "%s/always-slow", c.dir);
    h_write_file(flag, "", false);
    c.runs_seen = hook_runs(&c);
    char *m2 = enqueue(&c, "b");
    crash_during_hook(&c);
    crash_during_hook(&c); /* the requeued claim, taken by the second mutator */
    pid = start(&c);
    w = (wait_state_t){&c, m2, "failed"};
    assert_true(tb_test_wait_until(in_state, &w, 15000));
    r = row(&c, m2);
    assert_string_equal(json_string_value(json_object_get(r, "error")), "interrupted");
    assert_int_equal(json_integer_value(json_object_get(r, "attempts")), 2);
    json_decref(r);
    int ws = tb_test_stop(pid, SIGTERM, 10000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    /* The document holds the first mutation only. */
    assert_int_equal(tb_store_topology_get(c.store, c.topology, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 1);
    json_decref(doc);
    kill_orphans(&c);
    free(m1);
    free(m2);
    tb_store_close(c.store);
    h_dir_remove(c.dir);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_killed_mutator_is_retried_once_then_interrupted),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    return rc;
}
