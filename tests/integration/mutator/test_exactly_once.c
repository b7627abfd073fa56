/*
 * Exactly one hook run per deploy, teardown and mutation, across several
 * mutator processes on one store: `itest_mutator_exactly_once BACKEND N`
 * runs N (2 or 3) `topobus mutator` processes, a gateway and a nats-server
 * on SQLite or a private PostgreSQL, all real processes, with an apply hook
 * that appends one line per call (kind, id, its mutator's pid) to a file.
 *
 *   1. Topologies are created, given mutations and asked to deploy before any
 *      mutator runs: each deploy runs once, and the mutations queued behind
 *      it run after it ended.
 *   2. One mutator is SIGSTOPped while its hook runs (slow on purpose) and
 *      kept stopped past its lease: the others end that claim as
 *      `interrupted` (the stream says mutation.failed and status degraded) and
 *      go on with the rest; SIGCONTed, its late verdict is refused and logged.
 *   3. One mutator is SIGKILLed while its hook runs and started again: the
 *      new process ends its predecessor's claim at once, as `interrupted`.
 *   4. More mutations, one of whose hooks leaves `sleep 1000 &` behind (gone
 *      once the verdict is taken), then every topology is torn down.
 *
 * At the end every deploy, teardown and mutation ran the hook exactly once,
 * the hook never saw TOPOBUS_JWT_SECRET or TOPOBUS_DB, and every process
 * exits 0 on SIGTERM. Everything waits on conditions; every process is
 * stopped by pid (the hooks' process groups too) however the test ends.
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
#include <curl/curl.h>
#include <sqlite3.h>

#include "harness.h"
#include "pg_server.h"
#include "tb/alloc.h"

#define SECRET "exactly-once-secret-exactly-once"
#define TOPOLOGIES 3
#define QUEUED 3 /* mutations queued on each topology before its deploy */
#define LATER 2  /* mutations per topology after the faults */
#define MAX_MUTATORS 3
#define LEASE "6" /* s; recovery runs every 3 s */
#define HOOK_TIMEOUT "4"
#define WAIT_MS 40000

typedef struct run {
    bool pg;
    int n;
    char dir[256], url[400], hook[320], calls[320], base[64], sqlite_path[320];
    char *token;
    tb_test_nats_t nats;
    tb_test_pg_t server;
    pid_t gateway;
    pid_t mutators[MAX_MUTATORS];
    char logs[MAX_MUTATORS][320];
    char ids[TOPOLOGIES][64];
    json_t *mutations; /* every mutation id enqueued */
    h_sse_t sse;       /* the stream a phase watches; closed however the test ends */
    bool sse_open;
} run_t;

static run_t R;

/* ---- processes -------------------------------------------------------------- */

static pid_t start_mutator(run_t *r, int i)
{
    const char *args[] = {"mutator", "--bus", r->nats.url, "--db", r->url, "--poll", "1",
                          "--lease", LEASE, "--hook", r->hook, "--hook-timeout", HOOK_TIMEOUT,
                          NULL};
    r->mutators[i] = h_topobus(r->logs[i], args);
    return r->mutators[i];
}

static int mutator_index(run_t *r, pid_t pid)
{
    for (int i = 0; i < r->n; i++)
        if (r->mutators[i] == pid)
            return i;
    return -1;
}

/* Kills the process group of one of our hooks, if its leader still runs our hook (a
 * pgid seen long ago may belong to someone else by now). */
static void kill_hook_group(pid_t pgid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pgid);
    size_t len = 0;
    char *cmd = pgid > 0 ? tb_test_read_file(path, &len) : NULL;
    bool ours = false;
    for (size_t i = 0; cmd && i < len; i += strlen(cmd + i) + 1)
        ours = ours || strcmp(cmd + i, R.hook) == 0;
    free(cmd);
    if (ours)
        kill(-pgid, SIGKILL);
}

/* Kills what is left of every hook's process group (a killed mutator's hook lives on). */
static void kill_hook_groups(run_t *r)
{
    char path[400];
    snprintf(path, sizeof path, "%s/pgids", r->dir);
    char *text = tb_test_read_file(path, NULL);
    for (char *save = NULL, *tok = text ? strtok_r(text, "\n", &save) : NULL; tok;
         tok = strtok_r(NULL, "\n", &save))
        kill_hook_group((pid_t)atol(tok));
    free(text);
}

/* ---- HTTP --------------------------------------------------------------------- */

static json_t *api(const char *method, const char *path, const char *body, long want)
{
    long code = 0;
    json_t *out = h_http(method, R.base, path, R.token, body, &code);
    if (code != want)
        fail_msg("%s %s: %ld, want %ld", method, path, code, want);
    return out;
}

static void request(const char *id, const char *what)
{
    char path[160];
    snprintf(path, sizeof path, "/topologies/%s/%s", id, what);
    json_decref(api("POST", path, NULL, 202));
}

static char *enqueue(int t, const char *node)
{
    char path[160], body[256];
    snprintf(path, sizeof path, "/topologies/%s/mutations", R.ids[t]);
    snprintf(body, sizeof body, "{\"op\":\"add_node\",\"payload\":{\"id\":\"%s\",\"kind\":\"r\"}}",
             node);
    json_t *ans = api("POST", path, body, 202);
    char *mid = tb_xstrdup(json_string_value(json_object_get(ans, "mutation_id")));
    json_decref(ans);
    json_array_append_new(R.mutations, json_string(mid));
    return mid;
}

static json_t *rows_of(int t)
{
    char path[160];
    snprintf(path, sizeof path, "/topologies/%s/mutations", R.ids[t]);
    return api("GET", path, NULL, 200);
}

static json_t *row_by_id(const char *mid)
{
    for (int t = 0; t < TOPOLOGIES; t++) {
        json_t *rows = rows_of(t);
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r) {
            if (strcmp(json_string_value(json_object_get(r, "id")), mid) == 0) {
                json_incref(r);
                json_decref(rows);
                return r;
            }
        }
        json_decref(rows);
    }
    return NULL;
}

typedef struct row_wait {
    const char *mid, *state;
} row_wait_t;

static bool row_in_state(void *ud)
{
    row_wait_t *w = ud;
    json_t *r = row_by_id(w->mid);
    bool ok = r && strcmp(json_string_value(json_object_get(r, "state")), w->state) == 0;
    json_decref(r);
    return ok;
}

static void wait_row(const char *mid, const char *state)
{
    row_wait_t w = {mid, state};
    if (!tb_test_wait_until(row_in_state, &w, WAIT_MS))
        fail_msg("mutation %s never became %s", mid, state);
}

/* True when no mutation of any topology is pending or applying. */
static bool queues_settled(void *ud)
{
    (void)ud;
    for (int t = 0; t < TOPOLOGIES; t++) {
        json_t *rows = rows_of(t);
        size_t i;
        json_t *r;
        bool busy = false;
        json_array_foreach(rows, i, r) {
            const char *st = json_string_value(json_object_get(r, "state"));
            busy = busy || strcmp(st, "pending") == 0 || strcmp(st, "applying") == 0;
        }
        json_decref(rows);
        if (busy)
            return false;
    }
    return true;
}

static void wait_all_status(const char *status)
{
    for (int t = 0; t < TOPOLOGIES; t++)
        if (!h_wait_status(R.base, R.ids[t], R.token, status, WAIT_MS))
            fail_msg("topology %s never became %s", R.ids[t], status);
}

/* ---- the hook's record -------------------------------------------------------- */

/* Lines of the calls file "KIND ID PPID PGID", in order. New array of strings. */
static json_t *calls(void)
{
    json_t *out = json_array();
    char *text = tb_test_read_file(R.calls, NULL);
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save))
        json_array_append_new(out, json_string(line));
    free(text);
    return out;
}

/* How often the hook was called for kind and id. */
static int calls_of(const char *kind, const char *id)
{
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s %s ", kind, id);
    json_t *all = calls();
    int n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) {
        if (strncmp(json_string_value(v), prefix, strlen(prefix)) == 0)
            n++;
    }
    json_decref(all);
    return n;
}

typedef struct call_wait {
    const char *kind, *id;
    pid_t ppid, pgid;
} call_wait_t;

static bool called(void *ud)
{
    call_wait_t *w = ud;
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s %s ", w->kind, w->id);
    json_t *all = calls();
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) {
        const char *line = json_string_value(v);
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            long ppid = 0, pgid = 0;
            sscanf(line + strlen(prefix), "%ld %ld", &ppid, &pgid);
            w->ppid = (pid_t)ppid;
            w->pgid = (pid_t)pgid;
        }
    }
    json_decref(all);
    return w->ppid > 0;
}

static bool log_has(const char *path, const char *text)
{
    char *all = tb_test_read_file(path, NULL);
    bool yes = all && strstr(all, text);
    free(all);
    return yes;
}

typedef struct log_wait {
    const char *path, *text;
} log_wait_t;

static bool log_shows(void *ud)
{
    log_wait_t *w = ud;
    return log_has(w->path, w->text);
}

/* ---- SQLite: never stop a process in the middle of a write --------------------- */

/* True if some process holds the database's write lock right now. */
static bool write_locked(const char *path)
{
    sqlite3 *db = NULL;
    bool locked = false;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        locked = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
        if (rc == SQLITE_OK)
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return locked;
}

/* SIGSTOPs pid at a moment it holds no SQLite write lock: stopped inside a write, it
 * would hold every other writer up, which is not what this test is about. */
static void stop_between_writes(pid_t pid)
{
    for (int tries = 0;; tries++) {
        assert_int_equal(kill(pid, SIGSTOP), 0);
        if (!R.pg && write_locked(R.sqlite_path) && tries < 50) {
            kill(pid, SIGCONT);
            tb_test_sleep_ms(5);
            continue;
        }
        return;
    }
}

/* ---- the run ------------------------------------------------------------------ */

static void write_hook(run_t *r)
{
    char body[2400];
    snprintf(body, sizeof body,
             "cd '%s'\n"
             "echo $$ >> pgids\n"
             "input=$(cat)\n"
             /* An older build sets no TOPOBUS_HOOK_*: then tell from the input (the
              * row, or the document), so the record still shows what ran twice. */
             "kind=$TOPOBUS_HOOK_KIND\n"
             "id=${TOPOBUS_HOOK_MUTATION_ID:-$TOPOBUS_HOOK_TOPOLOGY_ID}\n"
             "if [ -z \"$kind\" ]; then\n"
             "  id=$(printf '%%s' \"$input\" | sed 's/^{\"id\":\"\\([^\"]*\\)\".*/\\1/')\n"
             "  case \"$input\" in *'\"op\":'*) kind=mutation;; *) kind=deploy;; esac\n"
             "fi\n"
             "echo \"$kind $id $PPID $$\" >> calls\n"
             "[ -f env.txt ] || env > env.txt\n"
             "case \"$input\" in\n"
             "  *'\"id\":\"slow-'*) sleep 3;;\n"
             "  *'\"id\":\"daemon\"'*) sleep 1000 & echo $! > daemon.pid;;\n"
             "esac\n"
             "[ \"$kind\" = deploy ] && sleep 0.3\n"
             "echo \"end $kind $id\" >> calls\n"
             "exit 0\n",
             r->dir);
    h_write_file(r->hook, body, true);
}

static void start_run(bool pg, int n)
{
    memset(&R, 0, sizeof R);
    R.pg = pg;
    R.n = n;
    R.mutations = json_array();
    h_dir_make(R.dir, sizeof R.dir, pg ? "once-pg" : "once-sqlite");
    snprintf(R.hook, sizeof R.hook, "%s/hook.sh", R.dir);
    snprintf(R.calls, sizeof R.calls, "%s/calls", R.dir);
    write_hook(&R);
    if (pg) {
        assert_true(tb_test_pg_start(&R.server));
        snprintf(R.url, sizeof R.url, "%s", R.server.url);
    } else {
        snprintf(R.sqlite_path, sizeof R.sqlite_path, "%s/topobus.db", R.dir);
        snprintf(R.url, sizeof R.url, "sqlite:%s", R.sqlite_path);
    }
    assert_true(tb_test_nats_start(&R.nats, 0, false));
    /* What the processes hold and the hook must never see. */
    setenv("TOPOBUS_JWT_SECRET", SECRET, 1);
    setenv("TOPOBUS_DB", R.url, 1);
    int port = tb_test_free_port();
    char listen[64], log[320];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(R.base, sizeof R.base, "http://127.0.0.1:%d", port);
    snprintf(log, sizeof log, "%s/gateway.log", R.dir);
    const char *gw[] = {"gateway", "--listen", listen, "--bus", R.nats.url, "--db", R.url,
                        "--drain", "1", NULL};
    R.gateway = h_topobus(log, gw);
    assert_true(tb_test_wait_port(port, 15000));
    R.token = h_mint(SECRET, "admin");
    for (int i = 0; i < n; i++)
        snprintf(R.logs[i], sizeof R.logs[i], "%s/mutator-%d.log", R.dir, i);
}

static void watch(int t)
{
    assert_true(h_sse_open(&R.sse, R.base, R.ids[t], R.token));
    R.sse_open = true;
}

static void unwatch(void)
{
    if (R.sse_open)
        h_sse_close(&R.sse);
    R.sse_open = false;
}

static void end_run(void)
{
    unwatch();
    for (int i = 0; i < R.n; i++)
        if (R.mutators[i] > 0)
            kill(R.mutators[i], SIGCONT);
    h_reap_all();
    kill_hook_groups(&R);
    tb_test_nats_stop(&R.nats);
    if (R.pg)
        tb_test_pg_stop(&R.server);
    unsetenv("TOPOBUS_JWT_SECRET");
    unsetenv("TOPOBUS_DB");
    json_decref(R.mutations);
    free(R.token);
    h_dir_remove(R.dir);
}

/* 1: deploys requested before any mutator runs, with mutations queued behind them. */
static void phase_deploy_with_queue(void)
{
    for (int t = 0; t < TOPOLOGIES; t++) {
        char body[64];
        snprintf(body, sizeof body, "{\"name\":\"once-%d\"}", t);
        json_t *doc = api("POST", "/topologies", body, 201);
        snprintf(R.ids[t], sizeof R.ids[t], "%s", json_string_value(json_object_get(doc, "id")));
        json_decref(doc);
        for (int k = 0; k < QUEUED; k++) {
            char node[16];
            snprintf(node, sizeof node, "q%d", k);
            free(enqueue(t, node));
        }
        request(R.ids[t], "deploy");
    }
    for (int i = 0; i < R.n; i++)
        start_mutator(&R, i);
    wait_all_status("active");
    assert_true(tb_test_wait_until(queues_settled, NULL, WAIT_MS));
    /* Each deploy ran once (however many mutators and poll passes), and each queued
     * mutation after it had ended. */
    for (int t = 0; t < TOPOLOGIES; t++) {
        int n = calls_of("deploy", R.ids[t]);
        if (n != 1)
            fail_msg("the deploy hook of %s ran %d times", R.ids[t], n);
    }
    json_t *all = calls();
    for (int t = 0; t < TOPOLOGIES; t++) {
        char end[128];
        snprintf(end, sizeof end, "end deploy %s", R.ids[t]);
        json_t *rows = rows_of(t);
        size_t i, k;
        json_t *v, *r;
        long deploy_end = -1;
        json_array_foreach(all, i, v) {
            if (strcmp(json_string_value(v), end) == 0)
                deploy_end = (long)i;
        }
        assert_true(deploy_end >= 0);
        json_array_foreach(rows, k, r) {
            char prefix[128];
            snprintf(prefix, sizeof prefix, "mutation %s ",
                     json_string_value(json_object_get(r, "id")));
            json_array_foreach(all, i, v) {
                if (strncmp(json_string_value(v), prefix, strlen(prefix)) == 0 &&
                    (long)i < deploy_end)
                    fail_msg("%s ran before the deploy of %s ended", prefix, R.ids[t]);
            }
            assert_string_equal(json_string_value(json_object_get(r, "state")), "applied");
        }
        json_decref(rows);
    }
    json_decref(all);
}

/* 2: a mutator stopped past its lease while its hook runs, then continued. */
static void phase_stopped_past_lease(void)
{
    watch(0);
    char *slow = enqueue(0, "slow-stop");
    call_wait_t c = {"mutation", slow, 0, 0};
    assert_true(tb_test_wait_until(called, &c, WAIT_MS));
    int victim = mutator_index(&R, c.ppid);
    assert_true(victim >= 0);
    stop_between_writes(c.ppid);
    /* The others go on meanwhile. */
    char *other = enqueue(1, "during-stop");
    wait_row(other, "applied");
    /* Past the lease, by the database's clock, the claim is ended; the stream says so. */
    wait_row(slow, "failed");
    json_t *r = row_by_id(slow);
    assert_string_equal(json_string_value(json_object_get(r, "error")), "interrupted");
    json_decref(r);
    int failed = h_sse_wait(&R.sse, "mutation.failed", slow, WAIT_MS);
    assert_true(failed >= 0);
    json_t *f = h_sse_frame(&R.sse, (size_t)failed);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(f, "data"), "payload"), "reason")),
                        "interrupted");
    json_decref(f);
    assert_true(h_wait_status(R.base, R.ids[0], R.token, "degraded", WAIT_MS));
    /* Continued, the stopped mutator finishes its hook; its verdict is refused. */
    assert_int_equal(kill(c.ppid, SIGCONT), 0);
    log_wait_t lw = {R.logs[victim], "stale claim refused"};
    assert_true(tb_test_wait_until(log_shows, &lw, WAIT_MS));
    r = row_by_id(slow);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "failed");
    json_decref(r);
    /* The next mutation restores the topology. */
    char *after = enqueue(0, "after-stop");
    wait_row(after, "applied");
    assert_true(h_wait_status(R.base, R.ids[0], R.token, "active", WAIT_MS));
    unwatch();
    free(slow);
    free(other);
    free(after);
}

/* 3: a mutator killed while its hook runs, and started again. */
static void phase_killed_and_restarted(void)
{
    watch(1);
    char *slow = enqueue(1, "slow-kill");
    call_wait_t c = {"mutation", slow, 0, 0};
    assert_true(tb_test_wait_until(called, &c, WAIT_MS));
    int victim = mutator_index(&R, c.ppid);
    assert_true(victim >= 0);
    tb_test_stop(c.ppid, SIGKILL, 5000);
    kill_hook_group(c.pgid); /* its hook, orphaned in its own group */
    long long t0 = tb_test_now_ms();
    start_mutator(&R, victim);
    wait_row(slow, "failed");
    /* Given back by the restarted process: far sooner than the 6 s lease. */
    long long took = tb_test_now_ms() - t0;
    printf("# the restarted mutator ended its predecessor's claim within %lld ms\n", took);
    json_t *r = row_by_id(slow);
    assert_string_equal(json_string_value(json_object_get(r, "error")), "interrupted");
    json_decref(r);
    assert_true(h_sse_wait(&R.sse, "mutation.failed", slow, WAIT_MS) >= 0);
    unwatch();
    free(slow);
}

static bool daemon_gone(void *ud)
{
    (void)ud;
    char path[400];
    snprintf(path, sizeof path, "%s/daemon.pid", R.dir);
    char *text = tb_test_read_file(path, NULL);
    pid_t pid = text ? (pid_t)atol(text) : 0;
    free(text);
    return pid > 0 && kill(pid, 0) != 0;
}

/* 4: more work, a hook that leaves a daemon behind, then teardown. */
static void phase_more_then_teardown(void)
{
    for (int t = 0; t < TOPOLOGIES; t++) {
        for (int k = 0; k < LATER; k++) {
            char node[16];
            snprintf(node, sizeof node, "late%d", k);
            free(enqueue(t, node));
        }
    }
    char *d = enqueue(2, "daemon");
    wait_row(d, "applied");
    assert_true(tb_test_wait_until(daemon_gone, NULL, 5000));
    free(d);
    assert_true(tb_test_wait_until(queues_settled, NULL, WAIT_MS));
    for (int t = 0; t < TOPOLOGIES; t++)
        request(R.ids[t], "teardown");
    wait_all_status("torn_down");
}

static void check_exactly_once(void)
{
    for (int t = 0; t < TOPOLOGIES; t++) {
        if (calls_of("deploy", R.ids[t]) != 1 || calls_of("teardown", R.ids[t]) != 1)
            fail_msg("topology %s: deploy hook ran %d times, teardown hook %d times", R.ids[t],
                     calls_of("deploy", R.ids[t]), calls_of("teardown", R.ids[t]));
    }
    size_t i;
    json_t *v;
    json_array_foreach(R.mutations, i, v) {
        int n = calls_of("mutation", json_string_value(v));
        if (n != 1)
            fail_msg("mutation %s: the hook ran %d times", json_string_value(v), n);
    }
    printf("# %zu mutations, %d deploys, %d teardowns: one hook run each\n",
           json_array_size(R.mutations), TOPOLOGIES, TOPOLOGIES);
    char path[400];
    snprintf(path, sizeof path, "%s/env.txt", R.dir);
    char *env = tb_test_read_file(path, NULL);
    assert_non_null(env);
    assert_null(strstr(env, "TOPOBUS_JWT_SECRET"));
    assert_null(strstr(env, SECRET));
    assert_null(strstr(env, "TOPOBUS_DB"));
    assert_non_null(strstr(env, "TOPOBUS_HOOK_KIND="));
    free(env);
}

static void stop_all_cleanly(void)
{
    for (int i = 0; i < R.n; i++) {
        int ws = tb_test_stop(R.mutators[i], SIGTERM, 15000);
        assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    }
    int ws = tb_test_stop(R.gateway, SIGTERM, 15000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

static void test_exactly_once(void **state)
{
    (void)state;
    phase_deploy_with_queue();
    phase_stopped_past_lease();
    phase_killed_and_restarted();
    phase_more_then_teardown();
    check_exactly_once();
    stop_all_cleanly();
}

static bool opt_pg;
static int opt_n;

static int setup(void **state)
{
    (void)state;
    start_run(opt_pg, opt_n);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    end_run();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "sqlite") != 0 && strcmp(argv[1], "pg") != 0) ||
        atoi(argv[2]) < 2 || atoi(argv[2]) > MAX_MUTATORS) {
        fprintf(stderr, "usage: %s sqlite|pg 2|3\n", argv[0]);
        return 2;
    }
    opt_pg = strcmp(argv[1], "pg") == 0;
    opt_n = atoi(argv[2]);
    json_set_alloc_funcs(tb_xmalloc, free);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exactly_once, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    curl_global_cleanup();
    return rc;
}
