/*
 * Mutator benchmark (not a test): `topobus serve` on a fresh SQLite file,
 * one topology, one SSE client.
 *   latency   enqueue (POST returns) → mutation.applied seen by the SSE
 *             client, paced at 1/s and at 200/s: p50 and p99;
 *   sustained mutations/s end to end: CLIENTS HTTP clients enqueue as fast
 *             as they can, until the topology reaches the last version;
 *   raw       the same store work without HTTP or bus, in this process:
 *             enqueue, then claim + read + apply_op + mark_applied per row,
 *             on an empty document and on one of 1000 nodes.
 * Mutations alternate add_node/remove_node of one node (see flip_body).
 * Each figure is the median over --runs runs.
 * usage: bench_mutator [--runs N] [--slow-s S] [--fast-s S] [--count N]
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "tb/alloc.h"
#include "tb/mutator.h"
#include "tb/store.h"

enum { CLIENTS = 4, MAX_RUNS = 15 };

typedef struct server {
    pid_t pid;
    char dir[256], base[64], token[1024];
} server_t;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool token_from_log(server_t *s, const char *log)
{
    for (long long end = tb_test_now_ms() + 5000; tb_test_now_ms() < end; nap_ms(20)) {
        char *text = tb_test_read_file(log, NULL);
        const char *p = text ? strstr(text, "admin token:") : NULL;
        if (p) {
            p += strlen("admin token:");
            while (*p == ' ')
                p++;
            size_t n = strcspn(p, "\n");
            if (n > 0 && n < sizeof s->token && p[n] == '\n') {
                memcpy(s->token, p, n);
                s->token[n] = '\0';
                free(text);
                return true;
            }
        }
        free(text);
    }
    return false;
}

static bool server_start(server_t *s)
{
    h_dir_make(s->dir, sizeof s->dir, "bench");
    char db[320], log[320], listen[64];
    snprintf(db, sizeof db, "sqlite:%s/topobus.db", s->dir);
    snprintf(log, sizeof log, "%s/serve.log", s->dir);
    int port = tb_test_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", port);
    const char *args[] = {"serve", "--listen", listen, "--db", db, "--drain", "0", NULL};
    setenv("TOPOBUS_LOG", "warn", 1);
    s->pid = h_topobus(log, args);
    return tb_test_wait_port(port, 10000) && token_from_log(s, log);
}

static void server_stop(server_t *s)
{
    tb_test_stop(s->pid, SIGTERM, 10000);
    h_dir_remove(s->dir);
}

static char *create_active(server_t *s)
{
    long code;
    json_t *doc = h_http("POST", s->base, "/topologies", s->token, "{\"name\":\"bench\"}", &code);
    char *id = tb_xstrdup(json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    char path[128];
    snprintf(path, sizeof path, "/topologies/%s/deploy", id);
    json_decref(h_http("POST", s->base, path, s->token, NULL, &code));
    if (!h_wait_status(s->base, id, s->token, "active", 10000))
        abort();
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
static void latency(server_t *s, double rate, double seconds, double *p50, double *p99)
{
    char *id = create_active(s);
    h_sse_t sse;
    if (!h_sse_open(&sse, s->base, id, s->token))
        abort();
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
        snprintf(mids[i], sizeof mids[i], "%s", json_string_value(json_object_get(ans, "mutation_id")));
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
    server_t *s;
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
    }
    return NULL;
}

/* Mutations/s from the first POST until every client's topology reached its last version. */
static double sustained(server_t *s, int count)
{
    pthread_t th[CLIENTS];
    flood_t fl[CLIENTS];
    char *ids[CLIENTS];
    int per = count / CLIENTS;
    for (int c = 0; c < CLIENTS; c++)
        ids[c] = create_active(s);
    long long t0 = tb_test_now_ms();
    for (int c = 0; c < CLIENTS; c++) {
        fl[c] = (flood_t){s, ids[c], 0, per};
        pthread_create(&th[c], NULL, flood_main, &fl[c]);
    }
    for (int c = 0; c < CLIENTS; c++)
        pthread_join(th[c], NULL);
    long long t1 = t0;
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
            nap_ms(2);
        }
        free(ids[c]);
    }
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
    if (tb_store_open(&st, url, NULL, NULL))
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
    while (tb_store_mutation_claim(st, id, &row, NULL) == TB_OK) {
        tb_store_topology_get(st, id, &doc, NULL);
        json_t *next = NULL;
        char reason[TB_MUTATOR_REASON_BUF_SIZE];
        if (tb_mutator_apply_op(doc, tb_store_row_op(row), tb_store_row_payload(row), &next, reason) ||
            tb_store_mutation_mark_applied(st, tb_store_row_id(row), next,
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

static double median(double *v, int n)
{
    return pct(v, (size_t)n, 0.5);
}

int main(int argc, char **argv)
{
    int runs = 3, count = 4000;
    double slow_s = 15, fast_s = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--slow-s") == 0)
            slow_s = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--fast-s") == 0)
            fast_s = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--count") == 0)
            count = atoi(argv[i + 1]);
    }
    if (runs < 1 || runs > MAX_RUNS)
        runs = 3;
    json_set_alloc_funcs(tb_xmalloc, free);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    double s50[MAX_RUNS], s99[MAX_RUNS], f50[MAX_RUNS], f99[MAX_RUNS], sus[MAX_RUNS], rw[MAX_RUNS],
        rwb[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        server_t s;
        if (!server_start(&s)) {
            fprintf(stderr, "topobus serve did not start\n");
            return 1;
        }
        latency(&s, 1, slow_s, &s50[r], &s99[r]);
        latency(&s, 200, fast_s, &f50[r], &f99[r]);
        sus[r] = sustained(&s, count);
        server_stop(&s);
        rw[r] = raw(count, 0);
        rwb[r] = raw(count / 4, 1000);
        printf("run %d: 1/s p50 %.1f p99 %.1f ms | 200/s p50 %.1f p99 %.1f ms | "
               "sustained %.0f/s | raw store %.0f/s, with 1000 nodes %.0f/s\n",
               r + 1, s50[r], s99[r], f50[r], f99[r], sus[r], rw[r], rwb[r]);
        fflush(stdout);
    }
    printf("median of %d: 1/s p50 %.1f p99 %.1f ms | 200/s p50 %.1f p99 %.1f ms | "
           "sustained %.0f/s | raw store %.0f/s, with 1000 nodes %.0f/s\n",
           runs, median(s50, runs), median(s99, runs), median(f50, runs), median(f99, runs),
           median(sus, runs), median(rw, runs), median(rwb, runs));
    h_reap_all();
    curl_global_cleanup();
    return 0;
}
