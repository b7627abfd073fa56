/*
 * End to end with real processes: a gateway, a mutator and a nats-server;
 * then `topobus serve` alone. Both run the same story through HTTP and an
 * SSE stream: create, deploy (status active), enqueue add_node (the stream
 * shows mutation.enqueued, .applying, .applied in that order with one
 * mutation id and the new version), then a bad op (mutation.failed, then
 * status degraded), and SIGTERM ends each process with exit 0.
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
#include "tb/auth.h"
#include "tb/clock.h"

#define SECRET "e2e-secret-e2e-secret-e2e-secret"

static const char *event_at(h_sse_t *s, int i)
{
    static char name[64];
    json_t *f = h_sse_frame(s, (size_t)i);
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(f, "event")));
    json_decref(f);
    return name;
}

/* True once the gateway at base reports its bus up (/readyz), false after timeout_ms. */
static bool bus_up(const char *base, int timeout_ms)
{
    long long end = tb_test_now_ms() + timeout_ms;
    do {
        long code;
        json_t *r = h_http("GET", base, "/readyz", NULL, NULL, &code);
        const char *bus = json_string_value(json_object_get(r, "bus"));
        bool up = code == 200 && bus && strcmp(bus, "up") == 0;
        json_decref(r);
        if (up)
            return true;
        tb_test_sleep_ms(20);
    } while (tb_test_now_ms() < end);
    return false;
}

/* The story of the file comment against a serving gateway at base. */
static void story(const char *base, const char *token)
{
    long code;
    json_t *doc = h_http("POST", base, "/topologies", token, "{\"name\":\"e2e\"}", &code);
    assert_int_equal(code, 201);
    char id[80];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    char path[160];
    snprintf(path, sizeof path, "/topologies/%s/deploy", id);
    json_decref(h_http("POST", base, path, token, NULL, &code));
    assert_int_equal(code, 202);
    assert_true(h_wait_status(base, id, token, "active", 10000));

    /* A stream opened before the gateway reached its bus (it does so on a thread of its
     * own, late on a loaded host) reports the enqueue in its bus-up snapshot, not as an
     * event: the story needs the event. */
    assert_true(bus_up(base, 10000));
    h_sse_t sse;
    assert_true(h_sse_open(&sse, base, id, token));
    snprintf(path, sizeof path, "/topologies/%s/mutations", id);
    json_t *ans = h_http("POST", base, path, token,
                         "{\"op\":\"add_node\",\"payload\":{\"id\":\"n1\",\"kind\":\"router\"}}",
                         &code);
    assert_int_equal(code, 202);
    char mid[64];
    snprintf(mid, sizeof mid, "%s", json_string_value(json_object_get(ans, "mutation_id")));
    json_decref(ans);
    int enq = h_sse_wait(&sse, "mutation.enqueued", mid, 10000);
    int applying = h_sse_wait(&sse, "mutation.applying", mid, 10000);
    int applied = h_sse_wait(&sse, "mutation.applied", mid, 10000);
    assert_true(enq >= 0 && applying > enq && applied > applying);
    json_t *f = h_sse_frame(&sse, (size_t)applied);
    json_t *payload = json_object_get(json_object_get(f, "data"), "payload");
    assert_int_equal(json_integer_value(json_object_get(payload, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(payload, "op")), "add_node");
    json_decref(f);

    ans = h_http("POST", base, path, token,
                 "{\"op\":\"add_link\",\"payload\":{\"id\":\"l1\",\"from\":\"n1\",\"to\":\"nope\"}}",
                 &code);
    assert_int_equal(code, 202);
    snprintf(mid, sizeof mid, "%s", json_string_value(json_object_get(ans, "mutation_id")));
    json_decref(ans);
    int failed = h_sse_wait(&sse, "mutation.failed", mid, 10000);
    assert_true(failed > applied);
    int status = -1;
    for (long long end = tb_test_now_ms() + 10000; status < 0 && tb_test_now_ms() < end;) {
        int i = h_sse_wait(&sse, "status", NULL, 100);
        for (; i >= 0; i++) {
            json_t *fr = h_sse_frame(&sse, (size_t)i);
            if (!fr)
                break;
            const char *ev = json_string_value(json_object_get(fr, "event"));
            const char *state = json_string_value(json_object_get(
                json_object_get(json_object_get(fr, "data"), "payload"), "state"));
            if (strcmp(ev, "status") == 0 && state && strcmp(state, "degraded") == 0)
                status = i;
            json_decref(fr);
        }
    }
    /* The topology degrades while the failing row still holds it: that status event is
     * committed, and so published, before mutation.failed. */
    assert_true(status >= 0 && status < failed);
    assert_string_equal(event_at(&sse, status), "status");
    h_sse_close(&sse);

    /* The store agrees: version 1, one node, degraded. */
    snprintf(path, sizeof path, "/topologies/%s", id);
    doc = h_http("GET", base, path, token, NULL, &code);
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "degraded");
    assert_int_equal(json_array_size(json_object_get(doc, "nodes")), 1);
    json_decref(doc);
}

static void stop_cleanly(pid_t pid)
{
    int ws = tb_test_stop(pid, SIGTERM, 15000);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
}


static void test_e2e_gateway_mutator_nats(void **state)
{
    (void)state;
    char dir[256], db[320], log[320], listen[64], base[64];
    h_dir_make(dir, sizeof dir, "e2e");
    snprintf(db, sizeof db, "sqlite:%s/topobus.db", dir);
    snprintf(log, sizeof log, "%s/processes.log", dir);
    tb_test_nats_t nats;
    assert_true(tb_test_nats_start(&nats, 0, false));
    int port = tb_test_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    setenv("TOPOBUS_JWT_SECRET", SECRET, 1);
    const char *gw_args[] = {"gateway", "--listen", listen, "--bus", nats.url, "--db", db,
                             "--drain", "1", NULL};
    pid_t gw = h_topobus(log, gw_args);
    /* A long poll: the mutator must be woken by the bus, not find the work by polling. */
    const char *mut_args[] = {"mutator", "--bus", nats.url, "--db", db, "--poll", "60", NULL};
    pid_t mut = h_topobus(log, mut_args);
    assert_true(tb_test_wait_port(port, 10000));
    char *token = h_mint(SECRET, "admin");
    story(base, token);
    free(token);
    stop_cleanly(mut);
    stop_cleanly(gw);
    tb_test_nats_stop(&nats);
    unsetenv("TOPOBUS_JWT_SECRET");
    h_dir_remove(dir);
}

/* The value after `label` on its line in text, copied into out. */
static bool field(const char *text, const char *label, char *out, size_t cap)
{
    const char *p = strstr(text, label);
    if (!p)
        return false;
    p += strlen(label);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static void test_e2e_serve_alone(void **state)
{
    (void)state;
    char dir[256], db[320], log[320], listen[64], base[64];
    h_dir_make(dir, sizeof dir, "serve");
    snprintf(db, sizeof db, "sqlite:%s/topobus.db", dir);
    snprintf(log, sizeof log, "%s/serve.log", dir);
    int port = tb_test_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    unsetenv("TOPOBUS_JWT_SECRET");
    unsetenv("TOPOBUS_JWT_SECRET_FILE");
    const char *args[] = {"serve", "--listen", listen, "--db", db, "--poll", "60", "--drain", "1",
                          NULL};
    pid_t pid = h_topobus(log, args);
    assert_true(tb_test_wait_port(port, 10000));
    char admin[1024] = "", viewer[1024] = "", url[1200] = "";
    for (long long end = tb_test_now_ms() + 5000; !url[0] && tb_test_now_ms() < end;) {
        char *text = tb_test_read_file(log, NULL);
        if (text && field(text, "admin token:", admin, sizeof admin) &&
            field(text, "viewer token:", viewer, sizeof viewer))
            field(text, "editor:", url, sizeof url);
        free(text);
    }
    char want[1200];
    snprintf(want, sizeof want, "http://%s/?token=%s", listen, admin);
    assert_string_equal(url, want);
    /* The viewer token reads but may not write. */
    long code;
    json_decref(h_http("GET", base, "/topologies", viewer, NULL, &code));
    assert_int_equal(code, 200);
    json_decref(h_http("POST", base, "/topologies", viewer, "{\"name\":\"x\"}", &code));
    assert_int_equal(code, 403);
    story(base, admin);
    stop_cleanly(pid);
    /* Printed once. */
    char *text = tb_test_read_file(log, NULL);
    assert_non_null(text);
    const char *first = strstr(text, "admin token:");
    assert_non_null(first);
    assert_null(strstr(first + 1, "admin token:"));
    free(text);
    h_dir_remove(dir);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e2e_gateway_mutator_nats),
        cmocka_unit_test(test_e2e_serve_alone),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    h_reap_all();
    curl_global_cleanup();
    return rc;
}
