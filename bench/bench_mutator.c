/*
 * Mutator benchmark (not a test): one topology, one SSE client, against the
 * deployment named by --mode (bench_mutator_modes.h): `topobus serve` alone,
 * or nats-server -js + `topobus gateway` + `topobus mutator` on SQLite or on
 * PostgreSQL, each run on fresh processes, ports and database.
 *   latency   enqueue (POST returns) → mutation.applied seen by the SSE
 *             client, paced at 1/s and at 200/s: p50 and p99;
 *   sustained mutations/s end to end: CLIENTS HTTP clients enqueue as fast
 *             as they can, until the topology reaches the last version;
 *   raw       (serve only) the same store work without HTTP or bus, in this
 *             process: enqueue, then claim + read + apply_op + mark_applied
 *             per row, on an empty document and on one of 1000 nodes.
 * Mutations alternate add_node/remove_node of one node (see flip_body).
 * Each figure is the median over --runs runs; the last line, "result …",
 * holds the medians as key=value for bench/mutator.sh.
 * usage: bench_mutator [--mode serve|nats-sqlite|nats-pg] [--runs N]
 *                      [--slow-s S] [--fast-s S] [--count N]
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_mutator_modes.h"
#include "harness.h"
#include "tb/alloc.h"
#include "tb/mutator.h"
#include "tb/store.h"

enum { CLIENTS = 4, MAX_RUNS = 15, SETTLE_MS = 120000 };

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A broken deployment ends the run; the signal guard stops its processes. */
static void fail(const char *what)
{
    fprintf(stderr, "bench_mutator: %s\n", what);
    abort();
}

static char *create_active(const bench_target_t *s)
{
    long code;
    json_t *doc = h_http("POST", s->base, "/topologies", s->token, "{\"name\":\"bench\"}", &code);
    const char *got = json_string_value(json_object_get(doc, "id"));
    if (code != 201 || !got)
        fail("POST /topologies failed");
    char *id = tb_xstrdup(got);
    json_decref(doc);
    char path[128];
    snprintf(path, sizeof path, "/topologies/%s/deploy", id);
    json_decref(h_http("POST", s->base, path, s->token, NULL, &code));
    if (!h_wait_status(s->base, id, s->token, "active", 10000))
        fail("the topology did not become active");
    return id;
}

/*
 * Mutation i of a run: add_node x on even i, remove_node x on odd i, so the
 * document stays small and each figure measures the per-mutation cost, not
 * the document's growth (see raw() for that).
 */
static void flip_body(char *out, size_t cap, size_t i, bool http)
{
    const char *op = i % 2 == 0 ? "add_node" : "remove_node";
    const char *payload = i % 2 == 0 ? "{\"id\":\"x\",\"kind\":\"k\"}" : "{\"id\":\"x\"}";
    if (http)
        snprintf(out, cap, "{\"op\":\"%s\",\"payload\":%s}", op, payload);
    else
        snprintf(out, cap, "%s", payload);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* Paced enqueues at rate/s for seconds; fills p50/p99 (ms). */
static void latency(const bench_target_t *s, double rate, double seconds, double *p50, double *p99)
{
    char *id = create_active(s);
    h_sse_t sse;
    if (!h_sse_open(&sse, s->base, id, s->token))
        fail("the SSE stream did not open");
    size_t n = (size_t)(rate * seconds);
    char (*mids)[40] = tb_xcalloc(n, sizeof *mids);
    long long *sent = tb_xcalloc(n, sizeof *sent);
    char path[128];
    snprintf(path, sizeof path, "/topologies/%s/mutations", id);
    long long t0 = tb_test_now_ms();
    for (size_t i = 0; i < n; i++) {
        long long slot = t0 + (long long)((double)i * 1000.0 / rate);
        while (tb_test_now_ms() < slot)
            nap_ms(1);
        char body[128];
        flip_body(body, sizeof body, i, true);
        long code;
        sent[i] = tb_test_now_ms();
        json_t *ans = h_http("POST", s->base, path, s->token, body, &code);
        const char *mid = json_string_value(json_object_get(ans, "mutation_id"));
        if (code != 202 || !mid)
            fail("POST /mutations failed");
        snprintf(mids[i], sizeof mids[i], "%s", mid);
        json_decref(ans);
    }
    double *lat = tb_xcalloc(n, sizeof *lat);
    for (size_t i = 0; i < n; i++) {
        int k = h_sse_wait(&sse, "mutation.applied", mids[i], 10000);
        json_t *f = k >= 0 ? h_sse_frame(&sse, (size_t)k) : NULL;
        lat[i] = f ? (double)(json_integer_value(json_object_get(f, "at_ms")) - sent[i]) : 1e9;
        json_decref(f);
    }
    *p50 = pct(lat, n, 0.50);
    *p99 = pct(lat, n, 0.99);
    h_sse_close(&sse);
    free(lat);
    free(sent);
    free(mids);
    free(id);
}

typedef struct flood {
    const bench_target_t *s;
    const char *id;
    int from, count;
} flood_t;

static void *flood_main(void *arg)
{
    flood_t *f = arg;
    char path[128], body[128];
    snprintf(path, sizeof path, "/topologies/%s/mutations", f->id);
    for (int i = f->from; i < f->from + f->count; i++) {
        flip_body(body, sizeof body, (size_t)i, true);
        long code;
        json_decref(h_http("POST", f->s->base, path, f->s->token, body, &code));
        if (code != 202)
            fail("POST /mutations failed under load");
    }
    return NULL;
}

/*
 * Mutations/s from the first POST until every client's topology reached its last version;
 * *cpu_us gets the server processes' CPU time per mutation over the same window.
 */
static double sustained(const bench_target_t *s, int count, double *cpu_us)
{
    pthread_t th[CLIENTS];
    flood_t fl[CLIENTS];
    char *ids[CLIENTS];
    int per = count / CLIENTS;
    for (int c = 0; c < CLIENTS; c++)
        ids[c] = create_active(s);
    long long t0 = tb_test_now_ms(), cpu0 = bench_target_cpu_ms(s);
    for (int c = 0; c < CLIENTS; c++) {
        fl[c] = (flood_t){s, ids[c], 0, per};
        pthread_create(&th[c], NULL, flood_main, &fl[c]);
    }
    for (int c = 0; c < CLIENTS; c++)
        pthread_join(th[c], NULL);
    long long t1 = t0, deadline = tb_test_now_ms() + SETTLE_MS;
    for (int c = 0; c < CLIENTS; c++) {
        char path[128];
        snprintf(path, sizeof path, "/topologies/%s", ids[c]);
        for (;;) {
            long code;
            json_t *doc = h_http("GET", s->base, path, s->token, NULL, &code);
            json_int_t v = json_integer_value(json_object_get(doc, "version"));
            json_decref(doc);
            t1 = tb_test_now_ms();
            if (v >= per)
                break;
            if (t1 > deadline)
                fail("the mutations were not all applied in time");
            nap_ms(2);
        }
        free(ids[c]);
    }
    *cpu_us = (double)(bench_target_cpu_ms(s) - cpu0) * 1000.0 / (double)(per * CLIENTS);
    return (double)(per * CLIENTS) * 1000.0 / (double)(t1 - t0);
}

/*
 * The store and ops alone: claim + get + apply + mark_applied per row, on a
 * topology that already holds `nodes` nodes (a document is rewritten whole
 * on every mutation, so its size sets the cost).
 */
static double raw(int count, int nodes)
{
    char dir[256], url[320];
    h_dir_make(dir, sizeof dir, "bench-raw");
    snprintf(url, sizeof url, "sqlite:%s/raw.db", dir);
    tb_store_t *st = NULL;
    /* The same durability as the processes measured beside it (TOPOBUS_SQLITE_SYNCHRONOUS). */
    const char *sync = getenv("TOPOBUS_SQLITE_SYNCHRONOUS");
    tb_store_options_t so = {.sqlite_normal_sync = sync && strcmp(sync, "normal") == 0};
    if (tb_store_open(&st, url, &so, NULL))
        abort();
    json_t *doc = NULL;
    json_t *initial = json_array();
    for (int i = 0; i < nodes; i++) {
        char nid[32];
        snprintf(nid, sizeof nid, "n%d", i);
        json_array_append_new(initial, json_pack("{s:s, s:s}", "id", nid, "kind", "k"));
    }
    if (tb_store_topology_create(st, "raw", initial, NULL, &doc, NULL))
        abort();
    json_decref(initial);
    char *id = tb_xstrdup(tb_store_doc_id(doc));
    json_decref(doc);
    for (int i = 0; i < count; i++) {
        char body[128];
        flip_body(body, sizeof body, (size_t)i, false);
        json_t *p = json_loads(body, 0, NULL);
        tb_store_mutation_enqueue(st, id, i % 2 == 0 ? "add_node" : "remove_node", p,
                                  TB_STORE_NO_VERSION, NULL, NULL);
        json_decref(p);
    }
    long long t0 = tb_test_now_ms();
    json_t *row = NULL;
    tb_store_claim_t claim;
    while (tb_store_mutation_claim(st, id, "bench", &row, &claim, NULL) == TB_OK) {
        tb_store_topology_get(st, id, &doc, NULL);
        json_t *next = NULL;
        char reason[TB_MUTATOR_REASON_BUF_SIZE];
        if (tb_mutator_apply_op(doc, tb_store_row_op(row), tb_store_row_payload(row), &next, reason) ||
            tb_store_mutation_mark_applied(st, &claim, next,
                                           tb_store_doc_version(doc) + 1, NULL, NULL))
            abort();
        json_decref(next);
        json_decref(doc);
        json_decref(row);
    }
    double rate = (double)count * 1000.0 / (double)(tb_test_now_ms() - t0);
    free(id);
    tb_store_close(st);
    h_dir_remove(dir);
    return rate;
}

/* One run's figures: latency in ms at 1/s (slow) and 200/s (fast), rates in mutations/s. */
typedef struct figures {
    double slow_p50, slow_p99, fast_p50, fast_p99, sustained, cpu_us, raw, raw_1000;
} figures_t;

/* The median over n runs of the double at offset in figures_t. */
static double median_of(const figures_t *runs, int n, size_t offset)
{
    double v[MAX_RUNS];
    for (int r = 0; r < n; r++)
        memcpy(&v[r], (const char *)&runs[r] + offset, sizeof v[r]);
    return pct(v, (size_t)n, 0.5);
}

static figures_t medians(const figures_t *runs, int n)
{
    return (figures_t){
        .slow_p50 = median_of(runs, n, offsetof(figures_t, slow_p50)),
        .slow_p99 = median_of(runs, n, offsetof(figures_t, slow_p99)),
        .fast_p50 = median_of(runs, n, offsetof(figures_t, fast_p50)),
        .fast_p99 = median_of(runs, n, offsetof(figures_t, fast_p99)),
        .sustained = median_of(runs, n, offsetof(figures_t, sustained)),
        .cpu_us = median_of(runs, n, offsetof(figures_t, cpu_us)),
        .raw = median_of(runs, n, offsetof(figures_t, raw)),
        .raw_1000 = median_of(runs, n, offsetof(figures_t, raw_1000)),
    };
}

static void print_figures(const char *label, const figures_t *f, bool with_raw)
{
    printf("%s: 1/s p50 %.1f p99 %.1f ms | 200/s p50 %.1f p99 %.1f ms | sustained %.0f/s, "
           "server CPU %.0f us/mutation",
           label, f->slow_p50, f->slow_p99, f->fast_p50, f->fast_p99, f->sustained, f->cpu_us);
    if (with_raw)
        printf(" | raw store %.0f/s, with 1000 nodes %.0f/s", f->raw, f->raw_1000);
    printf("\n");
    fflush(stdout);
}

/* One run on fresh processes; raw figures (serve only) after they are stopped. */
static bool run_once(bench_mode_t mode, int count, double slow_s, double fast_s, figures_t *f)
{
    bench_target_t t;
    if (!bench_target_start(&t, mode))
        return false;
    *f = (figures_t){0};
    latency(&t, 1, slow_s, &f->slow_p50, &f->slow_p99);
    latency(&t, 200, fast_s, &f->fast_p50, &f->fast_p99);
    f->sustained = sustained(&t, count, &f->cpu_us);
    bench_target_stop(&t);
    if (mode == BENCH_SERVE) {
        f->raw = raw(count, 0);
        f->raw_1000 = raw(count / 4, 1000);
    }
    return true;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: bench_mutator [--mode serve|nats-sqlite|nats-pg] [--runs 1..%d] "
            "[--slow-s S] [--fast-s S] [--count N]\n",
            MAX_RUNS);
    return 2;
}

int main(int argc, char **argv)
{
    int runs = 3, count = 4000;
    double slow_s = 15, fast_s = 5;
    bench_mode_t mode = BENCH_SERVE;
    for (int i = 1; i < argc; i += 2) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return usage();
        if (strcmp(argv[i], "--mode") == 0 && bench_mode_parse(val, &mode))
            continue;
        if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(val);
        else if (strcmp(argv[i], "--slow-s") == 0)
            slow_s = atof(val);
        else if (strcmp(argv[i], "--fast-s") == 0)
            fast_s = atof(val);
        else if (strcmp(argv[i], "--count") == 0)
            count = atoi(val);
        else
            return usage();
    }
    if (runs < 1 || runs > MAX_RUNS || count < CLIENTS || slow_s < 1 || fast_s * 200 < 1)
        return usage();
    json_set_alloc_funcs(tb_xmalloc, free);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    bench_guard_install();
    bool with_raw = mode == BENCH_SERVE;
    figures_t fig[MAX_RUNS];
    char label[64];
    for (int r = 0; r < runs; r++) {
        if (!run_once(mode, count, slow_s, fast_s, &fig[r]))
            return 1;
        snprintf(label, sizeof label, "run %d [%s]", r + 1, bench_mode_name(mode));
        print_figures(label, &fig[r], with_raw);
    }
    figures_t m = medians(fig, runs);
    snprintf(label, sizeof label, "median of %d [%s]", runs, bench_mode_name(mode));
    print_figures(label, &m, with_raw);
    printf("result mode=%s runs=%d slow_p50=%.1f slow_p99=%.1f fast_p50=%.1f fast_p99=%.1f "
           "sustained=%.0f cpu_us=%.0f",
           bench_mode_name(mode), runs, m.slow_p50, m.slow_p99, m.fast_p50, m.fast_p99,
           m.sustained, m.cpu_us);
    if (with_raw)
        printf(" raw=%.0f raw_1000=%.0f", m.raw, m.raw_1000);
    printf("\n");
    curl_global_cleanup();
    return 0;
}
