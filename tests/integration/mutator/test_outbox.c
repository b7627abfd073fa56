/*
 * Nothing committed is lost (CONTRACT §2): real processes (gateway,
 * mutator, nats-server with JetStream, one SQLite file), and the mutator
 * killed with SIGKILL at random moments, with NATS up and during a NATS
 * outage. At the end the JetStream stream holds every applied mutation
 * exactly once, versions 1..N in order, N being the topology's version in
 * the store, and the outbox is empty.
 *
 * The kill moments are random; the seed is printed so a failure can be
 * replayed with TB_TEST_SEED.
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
#include <time.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <nats/nats.h>

#include "harness.h"
#include "tb/alloc.h"
#include "tb/store.h"

#define SECRET "outbox-secret-outbox-secret-outbox"

typedef struct rig {
    char dir[256], db[320], log[320], listen[64], base[64];
    tb_test_nats_t nats;
    pid_t gw, mut;
    char *token;
    char id[64];
    tb_store_t *store; /* the test's own handle on the SQLite file */
} rig_t;

static pid_t start_mutator(rig_t *r)
{
    /* A short lease: a killed mutator's claim is recovered within the test. */
    const char *args[] = {"mutator", "--bus", r->nats.url, "--db", r->db, "--poll", "1",
                          "--lease", "2", NULL};
    return h_topobus(r->log, args);
}

static void rig_start(rig_t *r, const char *tag)
{
    memset(r, 0, sizeof *r);
    h_dir_make(r->dir, sizeof r->dir, tag);
    snprintf(r->db, sizeof r->db, "sqlite:%s/topobus.db", r->dir);
    snprintf(r->log, sizeof r->log, "%s/processes.log", r->dir);
    assert_true(tb_test_nats_start(&r->nats, 0, true));
    int port = tb_test_free_port();
    snprintf(r->listen, sizeof r->listen, "127.0.0.1:%d", port);
    snprintf(r->base, sizeof r->base, "http://127.0.0.1:%d", port);
    setenv("TOPOBUS_JWT_SECRET", SECRET, 1);
    const char *gw_args[] = {"gateway", "--listen", r->listen, "--bus", r->nats.url, "--db", r->db,
                             "--drain", "1", NULL};
    r->gw = h_topobus(r->log, gw_args);
    r->mut = start_mutator(r);
    assert_true(tb_test_wait_port(port, 10000));
    r->token = h_mint(SECRET, "admin");
    long code;
    json_t *doc = h_http("POST", r->base, "/topologies", r->token, "{\"name\":\"outbox\"}", &code);
    assert_int_equal(code, 201);
    snprintf(r->id, sizeof r->id, "%s", json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    char path[160];
    snprintf(path, sizeof path, "/topologies/%s/deploy", r->id);
    json_decref(h_http("POST", r->base, path, r->token, NULL, &code));
    assert_int_equal(code, 202);
    assert_true(h_wait_status(r->base, r->id, r->token, "active", 10000));
    tb_store_err_t err;
    assert_int_equal(tb_store_open(&r->store, r->db, NULL, &err), TB_OK);
}

static void rig_stop(rig_t *r)
{
    tb_store_close(r->store);
    tb_test_stop(r->mut, SIGKILL, 5000);
    tb_test_stop(r->gw, SIGKILL, 5000);
    tb_test_nats_stop(&r->nats);
    free(r->token);
    unsetenv("TOPOBUS_JWT_SECRET");
    h_dir_remove(r->dir);
}

static void enqueue(rig_t *r, int first, int count)
{
    char path[160], body[160];
    snprintf(path, sizeof path, "/topologies/%s/mutations", r->id);
    for (int i = first; i < first + count; i++) {
        snprintf(body, sizeof body, "{\"op\":\"add_node\",\"payload\":{\"id\":\"n%d\",\"kind\":\"k\"}}",
                 i);
        long code;
        json_decref(h_http("POST", r->base, path, r->token, body, &code));
        assert_int_equal(code, 202);
    }
}

/* The store's view: settled rows (applied or failed) and the topology's version. */
static void settled(rig_t *r, int *done, int64_t *version)
{
    json_t *rows = NULL, *doc = NULL;
    *done = 0;
    *version = -1;
    if (tb_store_mutation_list(r->store, r->id, NULL, &rows, NULL) == TB_OK) {
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row) {
            const char *st = tb_store_row_state(row);
            *done += strcmp(st, "applied") == 0 || strcmp(st, "failed") == 0;
        }
    }
    if (tb_store_topology_get(r->store, r->id, &doc, NULL) == TB_OK)
        *version = tb_store_doc_version(doc);
    json_decref(rows);
    json_decref(doc);
}

typedef struct settle_wait {
    rig_t *r;
    int want;
} settle_wait_t;

static bool all_settled(void *ud)
{
    settle_wait_t *w = ud;
    int done;
    int64_t version;
    settled(w->r, &done, &version);
    return done >= w->want;
}

static bool outbox_empty(void *ud)
{
    rig_t *r = ud;
    int64_t depth = -1, age, aside;
    return tb_store_outbox_stats(r->store, &depth, &age, &aside, NULL) == TB_OK && depth == 0;
}

/* Kills the mutator at a random moment in the next `span_ms` and starts a new one. */
static void kill_at_random(rig_t *r, int span_ms)
{
    tb_test_sleep_ms(20 + rand() % span_ms);
    tb_test_stop(r->mut, SIGKILL, 5000);
    r->mut = start_mutator(r);
}

/* Reads every mutation.applied of the topology from the JetStream stream, oldest first. */
static json_t *stream_versions(rig_t *r)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(natsConnection_ConnectTo(&nc, r->nats.url), NATS_OK);
    assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = "TOPOBUS";
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckPolicy = js_AckNone;
    char subject[160];
    snprintf(subject, sizeof subject, "topology.%s.mutation.applied", r->id);
    assert_int_equal(js_SubscribeSync(&sub, js, subject, NULL, &so, &jerr), NATS_OK);
    json_t *versions = json_array();
    natsMsg *msg = NULL;
    /* The outbox is empty, so the stream is complete: read until it stays quiet. */
    while (natsSubscription_NextMsg(&msg, sub, 1500) == NATS_OK) {
        json_t *env = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), 0, NULL);
        json_array_append(versions, json_object_get(json_object_get(env, "payload"), "version"));
        json_decref(env);
        natsMsg_Destroy(msg);
    }
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return versions;
}

static void assert_stream_matches_store(rig_t *r, int settled_want)
{
    settle_wait_t w = {r, settled_want};
    assert_true(tb_test_wait_until(all_settled, &w, 60000));
    assert_true(tb_test_wait_until(outbox_empty, r, 30000));
    int done;
    int64_t version;
    settled(r, &done, &version);
    json_t *versions = stream_versions(r);
    print_message("settled=%d version=%lld stream=%zu\n", done, (long long)version,
                  json_array_size(versions));
    assert_int_equal(json_array_size(versions), (size_t)version);
    for (size_t i = 0; i < json_array_size(versions); i++)
        assert_int_equal(json_integer_value(json_array_get(versions, i)), (json_int_t)i + 1);
    json_decref(versions);
}

static unsigned seed_from_env(void)
{
    const char *s = getenv("TB_TEST_SEED");
    unsigned seed = s && *s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
    print_message("TB_TEST_SEED=%u\n", seed);
    return seed;
}

static void test_outbox_mutator_killed_at_random_moments_with_nats_up(void **state)
{
    (void)state;
    srand(seed_from_env());
    rig_t r;
    rig_start(&r, "outbox-up");
    enqueue(&r, 0, 250);
    for (int k = 0; k < 5; k++)
        kill_at_random(&r, 400);
    assert_stream_matches_store(&r, 250);
    rig_stop(&r);
}

static void test_outbox_mutator_killed_during_a_nats_outage(void **state)
{
    (void)state;
    srand(seed_from_env());
    rig_t r;
    rig_start(&r, "outbox-down");
    enqueue(&r, 0, 20);
    settle_wait_t w = {&r, 20};
    assert_true(tb_test_wait_until(all_settled, &w, 30000));
    /* NATS goes away; the mutator goes on applying on its poll, then dies, twice. */
    tb_test_nats_kill(&r.nats, SIGKILL);
    enqueue(&r, 20, 40);
    kill_at_random(&r, 1500);
    kill_at_random(&r, 1500);
    w.want = 60;
    assert_true(tb_test_wait_until(all_settled, &w, 60000));
    /* Every process that wrote those events is gone before NATS comes back. */
    tb_test_stop(r.mut, SIGKILL, 5000);
    tb_test_stop(r.gw, SIGKILL, 5000);
    assert_true(tb_test_nats_restart(&r.nats));
    r.mut = start_mutator(&r);
    assert_stream_matches_store(&r, 60);
    rig_stop(&r);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbox_mutator_killed_at_random_moments_with_nats_up),
        cmocka_unit_test(test_outbox_mutator_killed_during_a_nats_outage),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    curl_global_cleanup();
    return rc;
}
