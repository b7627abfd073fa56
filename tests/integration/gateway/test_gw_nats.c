/*
 * The gateway on a real nats-server: an enqueued mutation and a deploy are
 * seen on NATS by `topobus sub`; with NATS killed, /publish and enqueues
 * still answer 202 and /metrics and /readyz say the bus is down; after a
 * restart events flow again. A frozen server (SIGSTOP: the connection stays
 * open, nothing answers) is noticed by the default pings within 10 s: the
 * bus goes down and open streams are told, then up again after SIGCONT.
 * Also the disabled bus (`--bus none`).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gw_test.h"
#include "proc.h"

typedef struct sub_proc {
    pid_t pid;
    char dir[64], log[128];
} sub_proc_t;

/* Starts `topobus sub pattern --count 1` on url and waits until it has subscribed. */
static void sub_start(sub_proc_t *s, const char *url, const char *pattern)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/tb-sub-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->log, sizeof s->log, "%s/sub.log", s->dir);
    const char *argv[] = {tb_test_topobus(), "sub", pattern, "--bus", url, "--count", "1", NULL};
    const char *env[] = {"TOPOBUS_LOG=info", NULL};
    s->pid = tb_test_spawn_env(argv, env, s->log);
    assert_true(s->pid > 0);
    tb_test_gateway_t view = {0}; /* reuse the log reader on the sub's file */
    snprintf(view.log_path, sizeof view.log_path, "%s", s->log);
    assert_true(tb_test_gateway_wait_log(&view, "subscribed pattern=", 10000));
}

/* Waits for the sub to print its one event and exit 0; returns its output (new string). */
static char *sub_finish(sub_proc_t *s)
{
    long long deadline = tb_test_now_ms() + 10000;
    int status = -1;
    while (tb_test_now_ms() < deadline) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = -1;
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (s->pid > 0)
        status = tb_test_stop(s->pid, SIGKILL, 2000);
    tb_test_gateway_t view = {0};
    snprintf(view.log_path, sizeof view.log_path, "%s", s->log);
    char *out = tb_test_gateway_log(&view);
    unlink(s->log);
    rmdir(s->dir);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "topobus sub did not see its event (status %d): %s\n", status, out);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return out;
}

static bool bus_up_is(const tb_test_gateway_t *g, long long want)
{
    long long deadline = tb_test_now_ms() + 15000;
    while (tb_test_now_ms() < deadline) {
        if (gw_metric(g, "topobus_bus_up") == want)
            return true;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_gw_events_reach_nats_and_a_dead_nats_changes_no_answer(void **state)
{
    (void)state;
    tb_test_nats_t nats;
    assert_true(tb_test_nats_start(&nats, 0, false));
    tb_test_gateway_t g;
    tb_test_gateway_opts_t o = {.bus = nats.url};
    assert_true(tb_test_gateway_start(&g, &o));
    assert_true(bus_up_is(&g, 1));
    char *editor = tb_test_token(NULL, "ed", "editor,viewer,publisher", 600);
    tb_http_response_t r;
    assert_int_equal(gw_req(&g, "POST", "/topologies", editor, "{\"name\":\"n\"}", &r), 201);
    char id[64], id2[64], path[128], mid[64], pattern[128];
    gw_json_str(&r, "id", id, sizeof id);
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_req(&g, "POST", "/topologies", editor, "{\"name\":\"m\"}", &r), 201);
    gw_json_str(&r, "id", id2, sizeof id2); /* stays pending: mutable while NATS is down */
    tb_http_response_cleanup(&r);

    sub_proc_t sub;
    snprintf(pattern, sizeof pattern, "topology.%s.mutation.enqueued", id);
    sub_start(&sub, nats.url, pattern);
    snprintf(path, sizeof path, "/topologies/%s/mutations", id);
    assert_int_equal(gw_req(&g, "POST", path, editor,
                            "{\"op\":\"add_node\",\"payload\":{\"id\":\"a\",\"kind\":\"k\"}}", &r),
                     202);
    gw_json_str(&r, "mutation_id", mid, sizeof mid);
    tb_http_response_cleanup(&r);
    char *out = sub_finish(&sub);
    assert_non_null(strstr(out, pattern));
    assert_non_null(strstr(out, mid));
    free(out);

    snprintf(pattern, sizeof pattern, "topology.%s.status", id);
    sub_start(&sub, nats.url, pattern);
    snprintf(path, sizeof path, "/topologies/%s/deploy", id);
    assert_int_equal(gw_status(&g, "POST", path, editor, NULL), 202);
    out = sub_finish(&sub);
    assert_non_null(strstr(out, "deploying"));
    free(out);
    assert_true(gw_wait_metric_at_least(&g, "topobus_bus_events_total{direction=\"out\"}", 2,
                                        5000));

    /* NATS dies: every answer stays what it was, and the gateway says the bus is down. */
    tb_test_nats_kill(&nats, SIGKILL);
    assert_true(bus_up_is(&g, 0));
    assert_int_equal(gw_metric(&g, "topobus_bus_state{state=\"down\"}"), 1);
    assert_int_equal(gw_status(&g, "POST", "/publish", editor,
                               "{\"topic\":\"topology.t1.note\",\"payload\":{\"n\":1}}"),
                     202);
    snprintf(path, sizeof path, "/topologies/%s/mutations", id2);
    assert_int_equal(gw_status(&g, "POST", path, editor,
                               "{\"op\":\"add_node\",\"payload\":{\"id\":\"b\",\"kind\":\"k\"}}"),
                     202);
    assert_int_equal(gw_req(&g, "GET", "/readyz", NULL, NULL, &r), 200);
    char v[32];
    assert_string_equal(gw_json_str(&r, "bus", v, sizeof v), "down");
    tb_http_response_cleanup(&r);

    /* NATS comes back on the same port: the gateway reconnects and publishes again. */
    assert_true(tb_test_nats_restart(&nats));
    assert_true(bus_up_is(&g, 1));
    sub_start(&sub, nats.url, "topology.t1.note");
    assert_int_equal(gw_status(&g, "POST", "/publish", editor,
                               "{\"topic\":\"topology.t1.note\",\"payload\":{\"n\":2}}"),
                     202);
    out = sub_finish(&sub);
    assert_non_null(strstr(out, "\"n\":2"));
    free(out);

    int status = tb_test_gateway_stop(&g, SIGTERM, 15000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    tb_test_gateway_cleanup(&g);
    tb_test_nats_stop(&nats);
    free(editor);
}

static void test_gw_without_a_bus_accepts_and_reports_disabled(void **state)
{
    (void)state;
    tb_test_gateway_t g;
    assert_true(tb_test_gateway_start(&g, NULL)); /* --bus none */
    char *publisher = tb_test_token(NULL, "pu", "publisher", 600);
    assert_int_equal(gw_status(&g, "POST", "/publish", publisher,
                               "{\"topic\":\"topology.t1.note\",\"payload\":{}}"),
                     202);
    tb_http_response_t r;
    char v[32];
    assert_int_equal(gw_req(&g, "GET", "/readyz", NULL, NULL, &r), 200);
    assert_string_equal(gw_json_str(&r, "bus", v, sizeof v), "disabled");
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_metric(&g, "topobus_bus_state{state=\"disabled\"}"), 1);
    assert_int_equal(gw_metric(&g, "topobus_bus_up"), 0);
    int status = tb_test_gateway_stop(&g, SIGTERM, 15000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    tb_test_gateway_cleanup(&g);
    free(publisher);
}

enum { STREAM_BUF = 256 * 1024 };

/* An SSE stream read on its own thread; the text received so far, under mu. */
typedef struct stream {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    char text[STREAM_BUF];
    size_t len;
    atomic_bool stop;
    char url[2048];
    tb_http_response_t r;
} stream_t;

typedef struct ping_fixture {
    tb_test_nats_t nats;
    tb_test_gateway_t g;
    bool gateway_started;
    stream_t stream;
    char *token;
} ping_fixture_t;

static bool on_stream(const char *data, size_t len, void *ud)
{
    stream_t *s = ud;
    pthread_mutex_lock(&s->mu);
    size_t room = sizeof s->text - 1 - s->len;
    size_t n = len < room ? len : room;
    memcpy(s->text + s->len, data, n);
    s->len += n;
    s->text[s->len] = '\0';
    pthread_mutex_unlock(&s->mu);
    return !atomic_load(&s->stop);
}

static void *read_stream(void *arg)
{
    stream_t *s = arg;
    tb_http_request_t req = {.url = s->url, .timeout_ms = 60000, .on_body = on_stream, .ud = s};
    tb_http_do(&req, &s->r);
    return NULL;
}

/* Index of needle in the stream's text at or after from, or -1. */
static long stream_find(stream_t *s, const char *needle, long from)
{
    pthread_mutex_lock(&s->mu);
    const char *hit = from >= 0 && (size_t)from <= s->len ? strstr(s->text + from, needle) : NULL;
    long at = hit ? (long)(hit - s->text) : -1;
    pthread_mutex_unlock(&s->mu);
    return at;
}

/* Waits up to timeout_ms for needle after from; its index, or -1. */
static long stream_wait(stream_t *s, const char *needle, long from, int timeout_ms)
{
    long long end = tb_test_now_ms() + timeout_ms;
    for (;;) {
        long at = stream_find(s, needle, from);
        if (at >= 0 || tb_test_now_ms() >= end)
            return at;
        tb_test_sleep_ms(20);
    }
}

static int ping_setup(void **state)
{
    ping_fixture_t *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->stream.mu, NULL);
    atomic_init(&f->stream.stop, false);
    f->nats.pid = -1;
    *state = f;
    return 0;
}

static int ping_teardown(void **state)
{
    ping_fixture_t *f = *state;
    tb_test_nats_freeze(&f->nats, false);
    /* The stream ends at its next keepalive (every second here), or at its deadline. */
    atomic_store(&f->stream.stop, true);
    if (f->stream.started)
        pthread_join(f->stream.thread, NULL);
    tb_http_response_cleanup(&f->stream.r);
    int result = 0;
    if (f->gateway_started) {
        int status = tb_test_gateway_stop(&f->g, SIGTERM, 15000);
        result = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
    }
    tb_test_gateway_cleanup(&f->g);
    tb_test_nats_stop(&f->nats);
    pthread_mutex_destroy(&f->stream.mu);
    free(f->token);
    free(f);
    return result;
}

static void test_gw_frozen_nats_is_noticed_within_10s_and_streams_are_told(void **state)
{
    ping_fixture_t *f = *state;
    assert_true(tb_test_nats_start(&f->nats, 0, false));
    const char *env[] = {"TOPOBUS_KEEPALIVE_S=1", NULL};
    tb_test_gateway_opts_t o = {.bus = f->nats.url, .env = env};
    f->gateway_started = tb_test_gateway_start(&f->g, &o);
    assert_true(f->gateway_started);
    assert_true(bus_up_is(&f->g, 1));
    f->token = tb_test_token(NULL, "vi", "viewer,editor", 600);
    tb_http_response_t r;
    assert_int_equal(gw_req(&f->g, "POST", "/topologies", f->token, "{\"name\":\"ping\"}", &r),
                     201);
    char id[64], path[2048];
    gw_json_str(&r, "id", id, sizeof id);
    tb_http_response_cleanup(&r);
    snprintf(path, sizeof path, "/topologies/%s/events?token=%s", id, f->token);
    tb_test_gateway_url(&f->g, path, f->stream.url, sizeof f->stream.url);
    assert_int_equal(pthread_create(&f->stream.thread, NULL, read_stream, &f->stream), 0);
    f->stream.started = true;
    long snap = stream_wait(&f->stream, "event: snapshot", 0, 10000);
    assert_true(snap >= 0);

    assert_true(tb_test_nats_freeze(&f->nats, true));
    long long t0 = tb_test_now_ms();
    long down = stream_wait(&f->stream, "event: bus\ndata: {\"state\":\"down\"}", snap, 15000);
    long long took = tb_test_now_ms() - t0;
    print_message("stream told the bus is down %lld ms after SIGSTOP\n", took);
    assert_true(down >= 0);
    assert_true(took <= 10000);
    assert_int_equal(gw_metric(&f->g, "topobus_bus_up"), 0);

    tb_test_nats_freeze(&f->nats, false);
    long up = stream_wait(&f->stream, "event: bus\ndata: {\"state\":\"up\"}", down, 15000);
    assert_true(up >= 0);
    /* Events may have been missed: a fresh snapshot follows on the same connection. */
    assert_true(stream_wait(&f->stream, "event: snapshot", up, 10000) >= 0);
    assert_true(bus_up_is(&f->g, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gw_events_reach_nats_and_a_dead_nats_changes_no_answer),
        cmocka_unit_test(test_gw_without_a_bus_accepts_and_reports_disabled),
        cmocka_unit_test_setup_teardown(
            test_gw_frozen_nats_is_noticed_within_10s_and_streams_are_told, ping_setup,
            ping_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
