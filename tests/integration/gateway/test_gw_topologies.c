/*
 * One gateway, many topologies (DESIGN "Fan-out"): what the gateway holds
 * on the bus and in threads must not grow with the number of topologies it
 * serves. A gateway on nats-server with JetStream gets one stream on each
 * of 10 topologies (deployed by a mutator), then on each of 300; the thread
 * counts of the gateway and the mutator (/proc/<pid>/task), the NATS
 * subscriptions of each (the monitoring port's /connz?subs=1, by connection
 * name) and the stream's JetStream consumers ($JS.API.CONSUMER.LIST.<stream>)
 * must be the same both times. Then every stream hears an event published on
 * its topology by a plain NATS client, and every stream is told when NATS
 * goes away and comes back (`event: bus` down, up, and a fresh snapshot), as
 * streams on one topology always were; nothing grew meanwhile either.
 *
 * Streams are raw sockets read with poll(); every wait is bounded, and the
 * gateway and nats-server are stopped by PID however the test ends.
 */
#include <dirent.h>
#include <errno.h>
#include <nats/nats.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gw_test.h"
#include "proc.h"

enum {
    FEW = 10,
    MANY = 300,
    STREAM_BUF = 32 * 1024, /* what a stream keeps of its text (snapshots are small) */
    WAIT_MS = 30000,
};

#define STREAM_NAME "TOPOBUS" /* the gateway's JetStream stream (bus default) */
#define PROBE_NAME "tb-test-probe" /* this test's own NATS connections */

typedef struct stream {
    int fd;
    size_t len;
    char buf[STREAM_BUF];
} stream_t;

static tb_test_gateway_t gw;
static tb_test_nats_t nats;
static bool gw_started, nats_started;
static pid_t mutator = -1;
static char mutator_log[128];
static char ids[MANY][64];
static stream_t *streams;
static size_t nstreams;
static char *token;

/* ---- processes ------------------------------------------------------------- */

static void stop_all(void)
{
    for (size_t i = 0; streams && i < nstreams; i++) {
        if (streams[i].fd >= 0)
            close(streams[i].fd);
    }
    free(streams);
    streams = NULL;
    nstreams = 0;
    if (mutator > 0)
        tb_test_stop(mutator, SIGTERM, 10000);
    mutator = -1;
    if (gw_started)
        tb_test_gateway_cleanup(&gw);
    if (nats_started)
        tb_test_nats_stop(&nats);
    gw_started = nats_started = false;
    free(token);
    token = NULL;
}

static int teardown(void **state)
{
    (void)state;
    stop_all();
    return 0;
}

static int thread_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- what the server says ------------------------------------------------- */

/* Subscriptions NATS holds for the connection named name (the bus's client name). */
static long subscriptions_of(const char *want)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/connz?subs=1", nats.monitor_port);
    tb_http_response_t r;
    assert_int_equal(tb_http_get(url, NULL, &r), 200);
    json_t *root = json_loads(r.body, 0, NULL);
    assert_non_null(root);
    long subs = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "connections"), i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        if (name && strcmp(name, want) == 0)
            subs += (long)json_integer_value(json_object_get(c, "subscriptions"));
    }
    json_decref(root);
    tb_http_response_cleanup(&r);
    return subs;
}

static natsConnection *probe_connect(void)
{
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    assert_int_equal(natsOptions_Create(&o), NATS_OK);
    assert_int_equal(natsOptions_SetURL(o, nats.url), NATS_OK);
    assert_int_equal(natsOptions_SetName(o, PROBE_NAME), NATS_OK);
    assert_int_equal(natsConnection_Connect(&nc, o), NATS_OK);
    natsOptions_Destroy(o);
    return nc;
}

/* The consumers of the gateway's JetStream stream, as the JetStream API lists them. */
static long stream_consumers(void)
{
    natsConnection *nc = probe_connect();
    natsMsg *reply = NULL;
    assert_int_equal(natsConnection_RequestString(&reply, nc,
                                                  "$JS.API.CONSUMER.LIST." STREAM_NAME, "{}",
                                                  5000),
                     NATS_OK);
    json_t *root = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0,
                              NULL);
    assert_non_null(root);
    json_t *total = json_object_get(root, "total");
    assert_true(json_is_integer(total));
    long n = (long)json_integer_value(total);
    json_decref(root);
    natsMsg_Destroy(reply);
    natsConnection_Destroy(nc);
    return n;
}

/* Publishes an envelope on topology.<id>.note from a plain NATS client, one per topology. */
static void publish_notes(size_t count)
{
    natsConnection *nc = probe_connect();
    for (size_t i = 0; i < count; i++) {
        char subject[128], envelope[512];
        snprintf(subject, sizeof subject, "topology.%s.note", ids[i]);
        snprintf(envelope, sizeof envelope,
                 "{\"v\":1,\"id\":\"%032zx\",\"topic\":\"%s\",\"type\":\"note\",\"ts\":1.5,"
                 "\"payload\":{\"n\":%zu}}",
                 i + 1, subject, i);
        assert_int_equal(natsConnection_PublishString(nc, subject, envelope), NATS_OK);
    }
    assert_int_equal(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
    natsConnection_Destroy(nc);
}

/* ---- streams --------------------------------------------------------------- */

static void open_stream(stream_t *s, const char *id)
{
    s->len = 0;
    s->fd = tb_test_tcp_connect(gw.host, gw.port);
    assert_true(s->fd >= 0);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET /topologies/%s/events?token=%s HTTP/1.1\r\nHost: %s\r\n"
                     "Accept: text/event-stream\r\n\r\n",
                     id, token, gw.address);
    assert_true(tb_test_tcp_send(s->fd, req, (size_t)n));
}

/* Reads whatever the streams have, without blocking longer than wait_ms in all. */
static void read_streams(int wait_ms)
{
    struct pollfd *p = calloc(nstreams, sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < nstreams; i++)
        p[i] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
    if (poll(p, nstreams, wait_ms) > 0) {
        for (size_t i = 0; i < nstreams; i++) {
            stream_t *s = &streams[i];
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t got = recv(s->fd, s->buf + s->len, STREAM_BUF - 1 - s->len, MSG_DONTWAIT);
            if (got > 0) {
                s->len += (size_t)got;
                s->buf[s->len] = '\0';
            }
        }
    }
    free(p);
}

static size_t occurrences(const stream_t *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(s->buf, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* True once every stream's text holds needle at least `times` times. */
static bool wait_all(const char *needle, size_t times, int timeout_ms)
{
    long long deadline = tb_test_now_ms() + timeout_ms;
    for (;;) {
        size_t missing = 0, first = 0;
        for (size_t i = 0; i < nstreams; i++) {
            if (occurrences(&streams[i], needle) < times && missing++ == 0)
                first = i;
        }
        if (missing == 0)
            return true;
        if (tb_test_now_ms() >= deadline) {
            fprintf(stderr, "%zu of %zu streams lack %zu x '%s'; stream %zu has:\n%s\n", missing,
                    nstreams, times, needle, first, streams[first].buf);
            return false;
        }
        read_streams(50);
    }
}

/* Opens streams on topologies [nstreams, upto) and waits for each one's snapshot. */
static void open_streams_upto(size_t upto)
{
    streams = realloc(streams, upto * sizeof *streams);
    assert_non_null(streams);
    for (size_t i = nstreams; i < upto; i++) {
        open_stream(&streams[i], ids[i]);
        nstreams = i + 1;
    }
    assert_true(wait_all("event: snapshot", 1, WAIT_MS));
}

typedef struct footprint {
    int threads, mutator_threads;
    long subscriptions, mutator_subscriptions, consumers;
} footprint_t;

static footprint_t measure(void)
{
    /* Let anything the last streams started settle (a subscription, a thread). */
    tb_test_sleep_ms(1000);
    footprint_t f = {thread_count(gw.pid), thread_count(mutator),
                     subscriptions_of("topobus-gateway"), subscriptions_of("topobus-mutator"),
                     stream_consumers()};
    fprintf(stderr,
            "%zu topologies with a stream: gateway %d threads, %ld NATS subscriptions; "
            "mutator %d threads, %ld NATS subscriptions; %ld JetStream consumers in all\n",
            nstreams, f.threads, f.subscriptions, f.mutator_threads, f.mutator_subscriptions,
            f.consumers);
    assert_true(f.threads > 0 && f.mutator_threads > 0);
    assert_true(f.subscriptions > 0 && f.mutator_subscriptions > 0);
    return f;
}

static void assert_same(const footprint_t *a, const footprint_t *b)
{
    assert_int_equal(a->threads, b->threads);
    assert_int_equal(a->subscriptions, b->subscriptions);
    assert_int_equal(a->mutator_threads, b->mutator_threads);
    assert_int_equal(a->mutator_subscriptions, b->mutator_subscriptions);
    assert_int_equal(a->consumers, b->consumers);
}

/* ---- the test ------------------------------------------------------------- */

static void create_topologies(void)
{
    char *editor = tb_test_token(NULL, "ed", "editor,viewer", 600);
    for (size_t i = 0; i < MANY; i++) {
        tb_http_response_t r;
        char body[64];
        snprintf(body, sizeof body, "{\"name\":\"t%zu\"}", i);
        assert_int_equal(gw_req(&gw, "POST", "/topologies", editor, body, &r), 201);
        gw_json_str(&r, "id", ids[i], sizeof ids[i]);
        assert_true(ids[i][0] != '\0');
        tb_http_response_cleanup(&r);
    }
    free(editor);
}

static void start_mutator(void)
{
    snprintf(mutator_log, sizeof mutator_log, "%s/mutator.log", gw.dir);
    const char *argv[] = {tb_test_topobus(), "mutator", "--bus", nats.url, "--db", gw.db_url,
                          "--poll", "60", NULL};
    mutator = tb_test_spawn(argv, mutator_log);
    assert_true(mutator > 0);
    tb_test_gateway_t view = {0}; /* the log reader, on the mutator's file */
    snprintf(view.log_path, sizeof view.log_path, "%s", mutator_log);
    assert_true(tb_test_gateway_wait_log(&view, "listening on the nats bus", WAIT_MS));
}

/* Deploys topologies [from, to): the mutator takes each one through its transitions. */
static void deploy(size_t from, size_t to)
{
    char *editor = tb_test_token(NULL, "ed", "editor", 600);
    for (size_t i = from; i < to; i++) {
        char path[128];
        snprintf(path, sizeof path, "/topologies/%s/deploy", ids[i]);
        assert_int_equal(gw_status(&gw, "POST", path, editor, NULL), 202);
    }
    free(editor);
}

static void test_gw_footprint_does_not_grow_with_topologies(void **state)
{
    (void)state;
    assert_true(nats_started = tb_test_nats_start_monitored(&nats, true));
    const char *env[] = {"TOPOBUS_SSE_MAX_PER_USER=0", NULL};
    tb_test_gateway_opts_t o = {.bus = nats.url, .env = env, .loops = 2};
    gw_started = true;
    assert_true(tb_test_gateway_start(&gw, &o));
    token = tb_test_token(NULL, "viewer", "viewer", 600);
    create_topologies();
    start_mutator();

    open_streams_upto(FEW);
    deploy(0, FEW);
    assert_true(wait_all("\"state\":\"active\"", 1, WAIT_MS));
    footprint_t few = measure();
    open_streams_upto(MANY);
    deploy(FEW, MANY);
    assert_true(wait_all("\"state\":\"active\"", 1, WAIT_MS));
    footprint_t many = measure();
    assert_same(&many, &few);

    /* Every topology's stream hears its own event from a plain NATS client. */
    publish_notes(MANY);
    assert_true(wait_all("event: note", 1, WAIT_MS));
    for (size_t i = 0; i < nstreams; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"payload\":{\"n\":%zu}", i);
        assert_non_null(strstr(streams[i].buf, want));
    }

    /* NATS goes away and comes back: every stream is told both, then gets a fresh snapshot. */
    tb_test_nats_kill(&nats, SIGKILL);
    assert_true(wait_all("\"state\":\"down\"", 1, WAIT_MS));
    assert_true(tb_test_nats_restart(&nats));
    assert_true(wait_all("\"state\":\"up\"", 1, WAIT_MS));
    assert_true(wait_all("event: snapshot", 2, WAIT_MS));
    footprint_t after = measure();
    assert_same(&after, &few);

    int status = tb_test_gateway_stop(&gw, SIGTERM, 15000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_gw_footprint_does_not_grow_with_topologies, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
