/*
 * The bus is down for everyone (a NATS URL where no server listens): the
 * gateway accepts a deploy and a mutation, the mutator finds both on its
 * poll interval and applies them, and the gateway's snapshot (the SSE
 * stream's first frame, bus "down") and its REST document show the truth.
 * Then a nats-server appears on that port and both reconnect and carry on.
 * (What becomes of the events committed meanwhile: test_outbox.c.)
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

#include "harness.h"
#include "tb/alloc.h"
#include "tb/clock.h"

#define SECRET "busdown-secret-busdown-secret-bus"


typedef struct version_wait {
    const char *base, *id, *token;
    long want;
} version_wait_t;

static bool at_version(void *ud)
{
    version_wait_t *w = ud;
    char path[160];
    snprintf(path, sizeof path, "/topologies/%s", w->id);
    long code;
    json_t *doc = h_http("GET", w->base, path, w->token, NULL, &code);
    bool ok = json_integer_value(json_object_get(doc, "version")) >= w->want;
    json_decref(doc);
    return ok;
}

static void test_mutator_applies_on_poll_with_the_bus_down(void **state)
{
    (void)state;
    char dir[256], db[320], log[320], listen[64], base[64], bus[64];
    h_dir_make(dir, sizeof dir, "busdown");
    snprintf(db, sizeof db, "sqlite:%s/topobus.db", dir);
    snprintf(log, sizeof log, "%s/processes.log", dir);
    int nats_port = tb_test_free_port();
    snprintf(bus, sizeof bus, "nats://127.0.0.1:%d", nats_port);
    int port = tb_test_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    setenv("TOPOBUS_JWT_SECRET", SECRET, 1);
    const char *gw_args[] = {"gateway", "--listen", listen, "--bus", bus, "--db", db, "--drain",
                             "1", NULL};
    pid_t gw = h_topobus(log, gw_args);
    const char *mut_args[] = {"mutator", "--bus", bus, "--db", db, "--poll", "1", NULL};
    pid_t mut = h_topobus(log, mut_args);
    assert_true(tb_test_wait_port(port, 10000));
    char *token = h_mint(SECRET, "admin");
    long code;
    json_t *doc = h_http("POST", base, "/topologies", token, "{\"name\":\"offline\"}", &code);
    assert_int_equal(code, 201);
    char id[64], path[160];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    snprintf(path, sizeof path, "/topologies/%s/deploy", id);
    json_decref(h_http("POST", base, path, token, NULL, &code));
    assert_int_equal(code, 202);
    /* Found on the poll: no event reaches the mutator. */
    assert_true(h_wait_status(base, id, token, "active", 5000));
    snprintf(path, sizeof path, "/topologies/%s/mutations", id);
    json_decref(h_http("POST", base, path, token,
                       "{\"op\":\"add_node\",\"payload\":{\"id\":\"a\",\"kind\":\"k\"}}", &code));
    assert_int_equal(code, 202);
    version_wait_t w = {base, id, token, 1};
    assert_true(tb_test_wait_until(at_version, &w, 5000));

    h_sse_t sse;
    assert_true(h_sse_open(&sse, base, id, token));
    json_t *snap = h_sse_frame(&sse, 0);
    json_t *data = json_object_get(snap, "data");
    assert_string_equal(json_string_value(json_object_get(data, "bus")), "down");
    assert_string_equal(json_string_value(json_object_get(data, "status")), "active");
    assert_int_equal(json_integer_value(json_object_get(data, "version")), 1);
    assert_int_equal(json_array_size(json_object_get(data, "in_flight")), 0);
    json_decref(snap);
    h_sse_close(&sse);

    /* The bus comes up: work goes on, and the stream now says so. */
    tb_test_nats_t nats;
    assert_true(tb_test_nats_start(&nats, nats_port, false));
    /* The mutator asks its provider about once a second (2 s backoff after a failure). */
    struct timespec ts = {4, 0};
    nanosleep(&ts, NULL);
    json_decref(h_http("POST", base, path, token,
                       "{\"op\":\"add_node\",\"payload\":{\"id\":\"b\",\"kind\":\"k\"}}", &code));
    assert_int_equal(code, 202);
    w.want = 2;
    assert_true(tb_test_wait_until(at_version, &w, 5000));
    assert_true(h_sse_open(&sse, base, id, token));
    snap = h_sse_frame(&sse, 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(snap, "data"), "bus")),
                        "up");
    json_decref(snap);
    h_sse_close(&sse);
    free(token);
    int wm = tb_test_stop(mut, SIGTERM, 10000);
    int wg = tb_test_stop(gw, SIGTERM, 10000);
    assert_true(WIFEXITED(wm) && WEXITSTATUS(wm) == 0);
    assert_true(WIFEXITED(wg) && WEXITSTATUS(wg) == 0);
    tb_test_nats_stop(&nats);
    unsetenv("TOPOBUS_JWT_SECRET");
    h_dir_remove(dir);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutator_applies_on_poll_with_the_bus_down),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    curl_global_cleanup();
    return rc;
}
