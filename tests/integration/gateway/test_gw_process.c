/*
 * `topobus gateway` as a process: configuration errors exit 2 with one
 * line, the first log line is the bound address, IPv6 listening, two
 * processes sharing one port (SO_REUSEPORT), SIGTERM answering the request
 * in flight before exiting 0, slow clients dropped within a bound, and no
 * CPU burnt after 100 idle connections (streams included) close: the lws
 * 4.1.6 disconnect spin of NOTES-libs §1. Each test starts its own gateways.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gw_test.h"
#include "proc.h"

enum { IDLE_CONNECTIONS = 100, CPU_WINDOW_MS = 2000, CPU_TICKS_MAX = 10 };

/* Runs a gateway that must refuse to start; checks exit 2 and one stderr line naming what. */
static void check_refused(tb_test_gateway_opts_t *o, const char *what)
{
    char out[4096];
    int status = tb_test_gateway_run(o, out, sizeof out, 10000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 || !strstr(out, what))
        fprintf(stderr, "expected exit 2 naming %s, got status %d: %s\n", what, status, out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    assert_true(strncmp(out, "topobus: ", 9) == 0);
    assert_non_null(strstr(out, what));
    /* Exactly one line: nothing logged before it, nothing after. */
    size_t lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 1);
    assert_int_equal(out[strlen(out) - 1], '\n');
}

static void test_gw_bad_configuration_exits_2_with_one_line(void **state)
{
    (void)state;
    tb_test_gateway_opts_t no_secret = {.secret = ""};
    check_refused(&no_secret, "TOPOBUS_JWT_SECRET");
    const char *listens[] = {"127.0.0.1", "127.0.0.1:99999", "999.1.1.1:80", "[::1:0", "x:y"};
    for (size_t i = 0; i < TB_ARRAY_LEN(listens); i++) {
        tb_test_gateway_opts_t o = {.listen = listens[i]};
        check_refused(&o, "--listen");
    }
    const char *dbs[] = {"mysql://x/y", "sqlite:", "postgres:nope"};
    for (size_t i = 0; i < TB_ARRAY_LEN(dbs); i++) {
        tb_test_gateway_opts_t o = {.db = dbs[i]};
        check_refused(&o, "--db");
    }
    tb_test_gateway_opts_t bus = {.bus = "carrier-pigeon://x"};
    check_refused(&bus, "--bus");
}

static void test_gw_first_log_line_is_the_address_and_ipv6_works(void **state)
{
    (void)state;
    tb_test_gateway_t g;
    tb_test_gateway_opts_t o = {.listen = "[::1]:0"};
    assert_true(tb_test_gateway_start(&g, &o));
    assert_string_equal(g.host, "::1");
    char *log = tb_test_gateway_log(&g);
    const char *eol = strchr(log, '\n');
    char first[256];
    snprintf(first, sizeof first, "%.*s", (int)(eol - log), log);
    free(log);
    char want[128];
    snprintf(want, sizeof want, "NOTICE gateway: listening on [::1]:%d", g.port);
    assert_non_null(strstr(first, want));
    assert_int_equal(gw_status(&g, "GET", "/healthz", NULL, NULL), 200);
    int status = tb_test_gateway_stop(&g, SIGINT, 10000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    tb_test_gateway_cleanup(&g);
}

static int access_lines(const tb_test_gateway_t *g)
{
    char *log = tb_test_gateway_log(g);
    int n = 0;
    for (const char *p = log; (p = strstr(p, "http: GET /healthz 200")); p++)
        n++;
    free(log);
    return n;
}

static void test_gw_two_processes_share_one_port(void **state)
{
    (void)state;
    tb_test_gateway_t a, b;
    assert_true(tb_test_gateway_start(&a, NULL));
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", a.port);
    tb_test_gateway_opts_t o = {.listen = listen};
    assert_true(tb_test_gateway_start(&b, &o));
    assert_int_equal(b.port, a.port);
    /* The kernel spreads new connections over both sockets; each request is a new one. */
    int served_a = 0, served_b = 0;
    for (int i = 0; i < 400 && (served_a == 0 || served_b == 0); i++) {
        assert_int_equal(gw_status(&a, "GET", "/healthz", NULL, NULL), 200);
        if (i % 20 == 19) {
            served_a = access_lines(&a);
            served_b = access_lines(&b);
        }
    }
    assert_true(tb_test_gateway_wait_log(&a, "http: GET /healthz 200", 5000));
    assert_true(tb_test_gateway_wait_log(&b, "http: GET /healthz 200", 5000));
    int sa = tb_test_gateway_stop(&a, SIGTERM, 10000), sb = tb_test_gateway_stop(&b, SIGTERM, 10000);
    assert_true(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    assert_true(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    tb_test_gateway_cleanup(&a);
    tb_test_gateway_cleanup(&b);
}

typedef struct metric_wait {
    const tb_test_gateway_t *g;
    const char *series;
    long long at_least, at_most;
} metric_wait_t;

static bool metric_in_range(void *ud)
{
    metric_wait_t *w = ud;
    long long v = gw_metric(w->g, w->series);
    return v >= w->at_least && v <= w->at_most;
}

static bool wait_metric(const tb_test_gateway_t *g, const char *series, long long lo,
                        long long hi, int timeout_ms)
{
    metric_wait_t w = {g, series, lo, hi};
    return tb_test_wait_until(metric_in_range, &w, timeout_ms);
}

static void test_gw_sigterm_answers_the_request_in_flight_then_exits_0(void **state)
{
    (void)state;
    tb_test_gateway_t g;
    assert_true(tb_test_gateway_start(&g, NULL));
    char *token = tb_test_token(NULL, "ed", "editor", 600);
    const char body[] = "{\"name\":\"in flight\"}";
    char head[2048];
    int hlen = snprintf(head, sizeof head,
                        "POST /topologies HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                        token, sizeof body - 1);
    int fd = tb_test_tcp_connect(g.host, g.port);
    assert_true(fd >= 0);
    /* Headers and half the body: the request is in flight (the metrics request is the other). */
    assert_true(tb_test_tcp_send(fd, head, (size_t)hlen));
    assert_true(tb_test_tcp_send(fd, body, 5));
    assert_true(wait_metric(&g, "topobus_http_in_flight", 2, 2, 5000));
    assert_int_equal(kill(g.pid, SIGTERM), 0);
    assert_true(tb_test_gateway_wait_log(&g, "shutting down", 5000));
    /* It stops accepting at once, while the request above is still being received. */
    assert_true(tb_test_wait_port_closed(g.port, 5000));
    assert_true(tb_test_tcp_send(fd, body + 5, sizeof body - 1 - 5));
    char got[4096];
    assert_true(tb_test_tcp_wait_closed(fd, 10000, got, sizeof got));
    close(fd);
    assert_true(strncmp(got, "HTTP/1.1 201", 12) == 0);
    assert_non_null(strstr(got, "in flight"));
    int status = tb_test_gateway_stop(&g, SIGTERM, 15000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(tb_test_gateway_wait_log(&g, "gateway: stopped", 1000));
    free(token);
    tb_test_gateway_cleanup(&g);
}

/* Opens a connection and sends request (may be NULL: a silent client). */
static int open_client(const tb_test_gateway_t *g, const char *request)
{
    int fd = tb_test_tcp_connect(g->host, g->port);
    assert_true(fd >= 0);
    if (request)
        assert_true(tb_test_tcp_send(fd, request, strlen(request)));
    return fd;
}

static void test_gw_closed_idle_connections_leave_the_cpu_idle(void **state)
{
    (void)state;
    tb_test_gateway_t g;
    const char *env[] = {"TOPOBUS_SSE_MAX_PER_USER=0", NULL};
    tb_test_gateway_opts_t o = {.bus = "mem://", .env = env};
    assert_true(tb_test_gateway_start(&g, &o));
    char *token = tb_test_token(NULL, "vi", "viewer,editor", 600);
    tb_http_response_t r;
    assert_int_equal(gw_req(&g, "POST", "/topologies", token, "{\"name\":\"idle\"}", &r), 201);
    char id[64], stream[2048];
    const char *keepalive = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    gw_json_str(&r, "id", id, sizeof id);
    tb_http_response_cleanup(&r);
    snprintf(stream, sizeof stream, "GET /topologies/%s/events?token=%s HTTP/1.1\r\nHost: t\r\n\r\n",
             id, token);
    /* Streams (the case lws 4.1.6 spins on), answered keep-alive connections, silent ones. */
    int fds[IDLE_CONNECTIONS];
    for (int i = 0; i < IDLE_CONNECTIONS; i++)
        fds[i] = open_client(&g, i < 60 ? stream : i < 90 ? keepalive : NULL);
    assert_true(wait_metric(&g, "topobus_sse_streams", 60, 60, 10000));
    /* Read what was sent first: closing with unread bytes would send a reset, which lws sees;
     * a plain FIN is what 4.1.6 never reads on a stream. */
    for (int i = 0; i < IDLE_CONNECTIONS; i++) {
        char buf[4096];
        while (recv(fds[i], buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
        close(fds[i]);
    }
    bool all_closed = wait_metric(&g, "topobus_sse_streams", 0, 0, 5000);
    long long before = tb_test_cpu_ticks(g.pid);
    struct timespec ts = {CPU_WINDOW_MS / 1000, (CPU_WINDOW_MS % 1000) * 1000000L};
    /* A fixed measuring window with nothing to do, not a wait for a condition. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    long long after = tb_test_cpu_ticks(g.pid);
    fprintf(stderr, "cpu ticks in %d ms after %d connections closed: %lld\n", CPU_WINDOW_MS,
            IDLE_CONNECTIONS, after - before);
    assert_true(all_closed);
    assert_true(before >= 0 && after >= before);
    assert_true(after - before <= CPU_TICKS_MAX);
    assert_int_equal(gw_status(&g, "GET", "/healthz", NULL, NULL), 200);
    int status = tb_test_gateway_stop(&g, SIGTERM, 15000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(token);
    tb_test_gateway_cleanup(&g);
}

static void test_gw_slow_clients_are_dropped_within_the_request_timeout(void **state)
{
    (void)state;
    tb_test_gateway_t g;
    assert_true(tb_test_gateway_start(&g, NULL));
    int trickle = open_client(&g, "GET /healthz HTTP/1.1\r\n");
    int stall = open_client(&g, "POST /topologies HTTP/1.1\r\nHost: t\r\nContent-Type: "
                                "application/json\r\nContent-Length: 100\r\n\r\n{\"name\":");
    int chunked = open_client(&g, "POST /topologies HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
                                  "chunked\r\n\r\n5\r\n{\"nam");
    int silent = open_client(&g, NULL);
    int fds[] = {trickle, stall, chunked, silent};
    bool closed[4] = {false};
    long long start = tb_test_now_ms(), deadline = start + 15000;
    size_t nclosed = 0;
    /* Send the trickler one header byte every 100 ms: bytes arriving must not keep it alive. */
    while (nclosed < TB_ARRAY_LEN(fds) && tb_test_now_ms() < deadline) {
        if (!closed[0])
            tb_test_tcp_send(trickle, "x", 1);
        for (size_t i = 0; i < TB_ARRAY_LEN(fds); i++) {
            struct pollfd p = {.fd = fds[i], .events = POLLIN};
            char buf[512];
            if (!closed[i] && poll(&p, 1, i == 0 ? 100 : 0) == 1 &&
                recv(fds[i], buf, sizeof buf, MSG_DONTWAIT) <= 0) {
                closed[i] = true;
                nclosed++;
            }
        }
    }
    long long took = tb_test_now_ms() - start;
    fprintf(stderr, "slow clients dropped after %lld ms\n", took);
    for (size_t i = 0; i < TB_ARRAY_LEN(fds); i++) {
        assert_true(closed[i]);
        close(fds[i]);
    }
    /* The server stays healthy for everyone else, and says why it dropped the body. */
    assert_int_equal(gw_status(&g, "GET", "/healthz", NULL, NULL), 200);
    assert_true(tb_test_gateway_wait_log(&g, "POST /topologies 408", 2000));
    int status = tb_test_gateway_stop(&g, SIGTERM, 15000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    tb_test_gateway_cleanup(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gw_bad_configuration_exits_2_with_one_line),
        cmocka_unit_test(test_gw_first_log_line_is_the_address_and_ipv6_works),
        cmocka_unit_test(test_gw_two_processes_share_one_port),
        cmocka_unit_test(test_gw_sigterm_answers_the_request_in_flight_then_exits_0),
        cmocka_unit_test(test_gw_closed_idle_connections_leave_the_cpu_idle),
        cmocka_unit_test(test_gw_slow_clients_are_dropped_within_the_request_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
