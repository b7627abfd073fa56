/*
 * Several processes share one store: 4 children (separate processes, each
 * with its own connection opened after fork) drain 1,000 pending mutations
 * across 10 topologies with claim → apply. Every mutation must be claimed
 * exactly once, each topology must end at version 100 (its mutations applied
 * one at a time), and no busy/locked error may escape to a caller (within a
 * busy timeout generous enough for a loaded machine). Each
 * child writes the ids it claimed to its own file; the parent checks them.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store_fixture.h"

#define N_TOPOLOGIES 10
#define N_PER_TOPOLOGY 100
#define N_CHILDREN 4

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claims and applies until no topology has pending work. Exit code 0 on
 * success; any status other than OK or "nothing claimable" fails the child. */
static int child_main(const tb_test_store_t *t, int index)
{
    char path[400];
    snprintf(path, sizeof path, "%s/claims.%d", t->dir, index);
    FILE *out = fopen(path, "w");
    if (!out)
        return 10;
    /* Claims are checked here, not latency: on a loaded machine every commit's fsync
     * (synchronous=FULL) can make a writer wait past the default 5 s for the lock. */
    tb_store_options_t opts = {.busy_timeout_ms = 120000};
    tb_store_t *s = NULL;
    tb_store_err_t err;
    if (tb_store_open(&s, t->url, &opts, &err) != TB_OK)
        return 11;
    int64_t claim_ns = 0;
    long claims = 0;
    int rc = 0;
    for (;;) {
        json_t *ids = NULL;
        if (tb_store_topologies_with_pending(s, &ids, &err)) {
            rc = 11;
            break;
        }
        size_t n = json_array_size(ids);
        for (size_t i = 0; i < n && rc == 0; i++) {
            const char *tid = json_string_value(json_array_get(ids, i));
            json_t *row = NULL, *doc = NULL;
            int64_t t0 = now_ns();
            tb_store_claim_t c;
            tb_status st = tb_store_mutation_claim(s, tid, "child", &row, &c, &err);
            if (st == TB_ENOTFOUND)
                continue; /* another child holds this topology or drained it */
            claim_ns += now_ns() - t0;
            claims++;
            if (st == TB_OK)
                st = tb_store_topology_get(s, tid, &doc, &err);
            if (st == TB_OK)
                st = tb_store_mutation_mark_applied(s, &c, doc,
                                                    tb_store_doc_version(doc) + 1, NULL, &err);
            if (st == TB_OK)
                fprintf(out, "%s\n", tb_store_row_id(row));
            else
                rc = 12;
            json_decref(doc);
            json_decref(row);
        }
        json_decref(ids);
        if (rc || n == 0)
            break;
    }
    if (rc)
        fprintf(stderr, "child %d failed: %s (%s)\n", index, err.message,
                tb_store_reason_code(err.reason));
    fprintf(out, "# %ld %lld\n", claims, (long long)claim_ns);
    fclose(out);
    tb_store_close(s);
    return rc;
}

static void test_concurrency_four_processes_claim_each_row_once(void **state)
{
    (void)state;
    tb_test_store_t t;
    tb_test_store_init(&t, 0);
    char *tids[N_TOPOLOGIES];
    for (int i = 0; i < N_TOPOLOGIES; i++)
        tids[i] = tb_test_create_topology(t.store, "shared");
    json_t *expected = json_object();
    json_t *payload = tb_test_json("{\"id\":\"n\",\"kind\":\"k\"}");
    for (int k = 0; k < N_PER_TOPOLOGY; k++) {
        for (int i = 0; i < N_TOPOLOGIES; i++) {
            json_t *row = NULL;
            assert_int_equal(tb_store_mutation_enqueue(t.store, tids[i], "add_node", payload,
                                                       TB_STORE_NO_VERSION, &row, NULL),
                             TB_OK);
            json_object_set_new(expected, tb_store_row_id(row), json_false());
            json_decref(row);
        }
    }
    json_decref(payload);
    /* A SQLite connection must not cross fork(): close, let the children
     * open their own, reopen afterwards. */
    tb_store_close(t.store);
    t.store = NULL;

    int64_t t0 = now_ns();
    pid_t pids[N_CHILDREN];
    for (int c = 0; c < N_CHILDREN; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            /* A test killed on its timeout takes its children with it. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1)
                _exit(1);
            _exit(child_main(&t, c));
        }
    }
    for (int c = 0; c < N_CHILDREN; c++) {
        int status = 0;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    int64_t elapsed = now_ns() - t0;

    size_t seen = 0;
    long claims = 0;
    long long claim_ns = 0;
    for (int c = 0; c < N_CHILDREN; c++) {
        char path[400], line[128];
        snprintf(path, sizeof path, "%s/claims.%d", t.dir, c);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        while (fgets(line, sizeof line, f)) {
            if (line[0] == '#') {
                long n;
                long long ns;
                assert_int_equal(sscanf(line, "# %ld %lld", &n, &ns), 2);
                claims += n;
                claim_ns += ns;
                continue;
            }
            line[strcspn(line, "\n")] = '\0';
            json_t *flag = json_object_get(expected, line);
            if (!flag || json_is_true(flag))
                fail_msg("mutation %s claimed twice or unknown", line);
            json_object_set_new(expected, line, json_true());
            seen++;
        }
        fclose(f);
    }
    assert_int_equal(seen, N_TOPOLOGIES * N_PER_TOPOLOGY);
    assert_int_equal(claims, N_TOPOLOGIES * N_PER_TOPOLOGY);
    printf("# %d processes drained %d mutations in %.1f ms; claim statement %.1f us on average\n",
           N_CHILDREN, N_TOPOLOGIES * N_PER_TOPOLOGY, (double)elapsed / 1e6,
           (double)claim_ns / (double)claims / 1e3);

    t.store = tb_test_store_reopen(&t, 0);
    for (int i = 0; i < N_TOPOLOGIES; i++) {
        json_t *doc = NULL, *rows = NULL;
        assert_int_equal(tb_store_topology_get(t.store, tids[i], &doc, NULL), TB_OK);
        assert_int_equal(tb_store_doc_version(doc), N_PER_TOPOLOGY);
        assert_int_equal(tb_store_mutation_list(t.store, tids[i], "applied", &rows, NULL),
                         TB_OK);
        assert_int_equal(json_array_size(rows), N_PER_TOPOLOGY);
        json_decref(rows);
        json_decref(doc);
        free(tids[i]);
    }
    json_t *pending = NULL;
    assert_int_equal(tb_store_topologies_with_pending(t.store, &pending, NULL), TB_OK);
    assert_int_equal(json_array_size(pending), 0);
    json_decref(pending);
    json_decref(expected);
    tb_test_store_cleanup(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrency_four_processes_claim_each_row_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
