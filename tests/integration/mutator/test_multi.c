/*
 * Two mutator processes on one SQLite store, 500 mutations over 5
 * topologies, half enqueued before they start and half while they run.
 * Every mutation is applied exactly once (each topology ends at version
 * 100 with 100 applied rows, none retried, and the two workers' counts add
 * up to 500), and in enqueue order per topology (the nodes, appended one by
 * one, appear in the order their mutations were enqueued).
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

enum { TOPOLOGIES = 5, PER_TOPOLOGY = 100 };

typedef struct multi {
    tb_store_t *store;
    char ids[TOPOLOGIES][TB_STORE_ID_BUF_SIZE];
} multi_t;

static void enqueue_range(multi_t *m, int from, int to)
{
    /* Interleaved over the topologies, as independent editors would. */
    for (int n = from; n < to; n++) {
        for (int t = 0; t < TOPOLOGIES; t++) {
            char id[16];
            snprintf(id, sizeof id, "n%03d", n);
            json_t *p = json_pack("{s:s, s:s}", "id", id, "kind", "k");
            tb_store_err_t err;
            assert_int_equal(tb_store_mutation_enqueue(m->store, m->ids[t], "add_node", p,
                                                       TB_STORE_NO_VERSION, NULL, &err),
                             TB_OK);
            json_decref(p);
        }
    }
}

static bool all_applied(void *ud)
{
    multi_t *m = ud;
    for (int t = 0; t < TOPOLOGIES; t++) {
        json_t *doc = NULL;
        if (tb_store_topology_get(m->store, m->ids[t], &doc, NULL))
            return false;
        bool done = tb_store_doc_version(doc) >= PER_TOPOLOGY;
        json_decref(doc);
        if (!done)
            return false;
    }
    return true;
}

static long applied_in_log(const char *path)
{
    char *text = tb_test_read_file(path, NULL);
    assert_non_null(text);
    const char *p = strstr(text, "stopped: applied=");
    long n = p ? strtol(p + strlen("stopped: applied="), NULL, 10) : -1;
    free(text);
    return n;
}

static void check_topology(multi_t *m, int t)
{
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(m->store, m->ids[t], &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), PER_TOPOLOGY);
    json_t *nodes = json_object_get(doc, "nodes");
    assert_int_equal(json_array_size(nodes), PER_TOPOLOGY);
    for (int n = 0; n < PER_TOPOLOGY; n++) {
        char want[16];
        snprintf(want, sizeof want, "n%03d", n);
        assert_string_equal(json_string_value(json_object_get(json_array_get(nodes, (size_t)n), "id")),
                            want);
    }
    json_decref(doc);
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(m->store, m->ids[t], NULL, &rows, NULL), TB_OK);
    assert_int_equal(json_array_size(rows), PER_TOPOLOGY);
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        assert_string_equal(tb_store_row_state(r), "applied");
        assert_int_equal(json_integer_value(json_object_get(r, "attempts")), 0);
    }
    json_decref(rows);
}

static void test_two_mutators_apply_each_mutation_once_in_order(void **state)
{
    (void)state;
    char dir[256], url[320], log_a[320], log_b[320];
    h_dir_make(dir, sizeof dir, "multi");
    snprintf(url, sizeof url, "sqlite:%s/topobus.db", dir);
    snprintf(log_a, sizeof log_a, "%s/a.log", dir);
    snprintf(log_b, sizeof log_b, "%s/b.log", dir);
    multi_t m = {0};
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&m.store, url, NULL, &err), TB_OK);
    for (int t = 0; t < TOPOLOGIES; t++) {
        json_t *doc = NULL;
        assert_int_equal(tb_store_topology_create(m.store, "multi", NULL, NULL, &doc, &err), TB_OK);
        snprintf(m.ids[t], sizeof m.ids[t], "%s", tb_store_doc_id(doc));
        json_decref(doc);
    }
    enqueue_range(&m, 0, PER_TOPOLOGY / 2);
    const char *args[] = {"mutator", "--bus", "none", "--db", url, "--poll", "1", NULL};
    pid_t a = h_topobus(log_a, args);
    pid_t b = h_topobus(log_b, args);
    enqueue_range(&m, PER_TOPOLOGY / 2, PER_TOPOLOGY);
    assert_true(tb_test_wait_until(all_applied, &m, 40000));
    int wa = tb_test_stop(a, SIGTERM, 10000);
    int wb = tb_test_stop(b, SIGTERM, 10000);
    assert_true(WIFEXITED(wa) && WEXITSTATUS(wa) == 0);
    assert_true(WIFEXITED(wb) && WEXITSTATUS(wb) == 0);
    for (int t = 0; t < TOPOLOGIES; t++)
        check_topology(&m, t);
    long na = applied_in_log(log_a), nb = applied_in_log(log_b);
    printf("# mutator a applied %ld, mutator b applied %ld\n", na, nb);
    assert_int_equal(na + nb, TOPOLOGIES * PER_TOPOLOGY);
    tb_store_close(m.store);
    h_dir_remove(dir);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_mutators_apply_each_mutation_once_in_order),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    return rc;
}
