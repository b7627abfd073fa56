/*
 * The REST API of a real `topobus gateway` process (in-process bus, SQLite
 * in a temporary directory) over HTTP: every route, every status of
 * CONTRACT §3–§4 and their order (401, then 403, then 404), each JWT
 * rejection, tickets, CORS, limits, /metrics moving, and no credential in
 * the log. The tests of this file share one gateway and run in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jwt.h>

#include "gw_test.h"

#define ORIGIN_OK "https://editor.example"
#define ORIGIN_BAD "https://evil.example"

enum { MAX_SECRETS = 64 };

static tb_test_gateway_t gw;
static char *editor, *viewer, *publisher, *admin;
static char topology[64]; /* created by the lifecycle test */
/* Every credential the tests send; none may appear in the log. */
static char *secrets[MAX_SECRETS];
static size_t nsecrets;

static char *remember(char *secret)
{
    assert_true(nsecrets < MAX_SECRETS);
    secrets[nsecrets++] = secret;
    return secret;
}

static int setup(void **state)
{
    (void)state;
    const char *env[] = {"TOPOBUS_CORS_ORIGINS=" ORIGIN_OK ", http://localhost:3000", NULL};
    tb_test_gateway_opts_t o = {.bus = "mem://", .env = env};
    if (!tb_test_gateway_start(&gw, &o))
        return -1;
    editor = remember(tb_test_token(NULL, "ed", "editor,viewer", 600));
    viewer = remember(tb_test_token(NULL, "vi", "viewer", 600));
    publisher = remember(tb_test_token(NULL, "pu", "publisher", 600));
    admin = remember(tb_test_token(NULL, "ad", "admin", 600));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int status = tb_test_gateway_stop(&gw, SIGTERM, 10000);
    tb_test_gateway_cleanup(&gw);
    for (size_t i = 0; i < nsecrets; i++)
        free(secrets[i]);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void test_gw_health_ready_and_metrics_answer_without_auth(void **state)
{
    (void)state;
    tb_http_response_t r;
    assert_int_equal(gw_req(&gw, "GET", "/healthz", NULL, NULL, &r), 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_req(&gw, "GET", "/readyz", NULL, NULL, &r), 200);
    char v[32];
    assert_string_equal(gw_json_str(&r, "bus", v, sizeof v), "up");
    assert_string_equal(gw_json_str(&r, "store", v, sizeof v), "up");
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_req(&gw, "GET", "/metrics", NULL, NULL, &r), 200);
    assert_true(tb_http_header(&r, "content-type", v, sizeof v));
    assert_true(strncmp(v, "text/plain", 10) == 0);
    assert_non_null(strstr(r.body, "topobus_build_info{version=\""));
    assert_non_null(strstr(r.body, "\ntopobus_bus_up 1\n"));
    assert_non_null(strstr(r.body, "topobus_bus_state{state=\"up\"} 1\n"));
    assert_non_null(strstr(r.body, "topobus_sse_streams 0\n"));
    assert_non_null(strstr(r.body, "topobus_store_errors_total 0\n"));
    tb_http_response_cleanup(&r);
}

/* POSTs body to path as editor and expects status; returns the answer (clean it up). */
static void post_expect(const char *path, const char *body, long status, tb_http_response_t *r)
{
    long got = gw_req(&gw, "POST", path, editor, body, r);
    if (got != status)
        fprintf(stderr, "POST %s %s -> %ld %s\n", path, body ? body : "", got, r->body);
    assert_int_equal(got, status);
}

static void test_gw_topology_lifecycle_create_list_get_mutate_deploy_teardown(void **state)
{
    (void)state;
    tb_http_response_t r;
    char path[256], v[64];
    post_expect("/topologies", "{\"name\":\"lab\",\"nodes\":[{\"id\":\"n1\",\"kind\":\"router\"}]}",
                201, &r);
    gw_json_str(&r, "id", topology, sizeof topology);
    assert_string_equal(gw_json_str(&r, "status", v, sizeof v), "pending");
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_req(&gw, "GET", "/topologies", viewer, NULL, &r), 200);
    assert_non_null(strstr(r.body, topology));
    tb_http_response_cleanup(&r);
    snprintf(path, sizeof path, "/topologies/%s", topology);
    assert_int_equal(gw_req(&gw, "GET", path, viewer, NULL, &r), 200);
    assert_string_equal(gw_json_str(&r, "name", v, sizeof v), "lab");
    tb_http_response_cleanup(&r);

    snprintf(path, sizeof path, "/topologies/%s/mutations", topology);
    post_expect(path, "{\"op\":\"add_node\",\"payload\":{\"id\":\"n2\",\"kind\":\"switch\"}}", 202,
                &r);
    assert_string_equal(gw_json_str(&r, "state", v, sizeof v), "pending");
    assert_true(strlen(gw_json_str(&r, "mutation_id", v, sizeof v)) > 0);
    tb_http_response_cleanup(&r);
    post_expect(path, "{\"op\":\"add_node\",\"payload\":{},\"expected_version\":7}", 409, &r);
    assert_string_equal(gw_json_str(&r, "error", v, sizeof v), "version_conflict");
    tb_http_response_cleanup(&r);
    assert_int_equal(gw_req(&gw, "GET", path, viewer, NULL, &r), 200);
    json_t *rows = json_loads(r.body, 0, NULL);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    tb_http_response_cleanup(&r);
    snprintf(path, sizeof path, "/topologies/%s/mutations?state=applied", topology);
    assert_int_equal(gw_req(&gw, "GET", path, viewer, NULL, &r), 200);
    assert_string_equal(r.body, "[]");
    tb_http_response_cleanup(&r);

    snprintf(path, sizeof path, "/topologies/%s/deploy", topology);
    post_expect(path, NULL, 202, &r);
    assert_string_equal(gw_json_str(&r, "status", v, sizeof v), "deploying");
    tb_http_response_cleanup(&r);
    snprintf(path, sizeof path, "/topologies/%s/teardown", topology);
    post_expect(path, NULL, 202, &r);
    assert_string_equal(gw_json_str(&r, "status", v, sizeof v), "tearing_down");
    tb_http_response_cleanup(&r);
    snprintf(path, sizeof path, "/topologies/%s/mutations", topology);
    post_expect(path, "{\"op\":\"remove_node\",\"payload\":{\"id\":\"n1\"}}", 409, &r);
    assert_string_equal(gw_json_str(&r, "error", v, sizeof v), "not_mutable");
    tb_http_response_cleanup(&r);
}

static void test_gw_bad_bodies_are_400_and_publish_is_202(void **state)
{
    (void)state;
    static const struct {
        const char *path, *body, *error;
    } cases[] = {
        {"/topologies", "{\"name\":", "invalid_json"},
        {"/topologies", "[1,2]", "invalid"},
        {"/topologies", "{\"nodes\":[]}", "invalid"},
        {"/topologies", "", "invalid_json"},
        {"/publish", "{\"topic\":\"system.x.health\",\"payload\":{}}", "invalid"},
        {"/publish", "{\"topic\":\"topology.*.status\",\"payload\":{}}", "invalid"},
        {"/publish", "{\"topic\":\"topology.t1..x\",\"payload\":{}}", "invalid"},
        {"/publish", "{\"topic\":\"topology.t1.status\",\"payload\":[1]}", "invalid"},
        {"/publish", "{\"topic\":\"topology.t1.status\"}", "invalid"},
    };
    for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
        tb_http_response_t r;
        long st = gw_req(&gw, "POST", cases[i].path, admin, cases[i].body, &r);
        char v[64];
        if (st != 400)
            fprintf(stderr, "case %zu: %ld %s\n", i, st, r.body);
        assert_int_equal(st, 400);
        assert_string_equal(gw_json_str(&r, "error", v, sizeof v), cases[i].error);
        tb_http_response_cleanup(&r);
    }
    char path[128];
    snprintf(path, sizeof path, "/topologies/%s/mutations", topology);
    assert_int_equal(gw_status(&gw, "POST", path, editor, "{\"op\":1,\"payload\":{}}"), 400);
    assert_int_equal(gw_status(&gw, "POST", "/publish", publisher,
                               "{\"topic\":\"topology.t1.custom\",\"type\":\"x\",\"payload\":{}}"),
                     202);
}

typedef struct route_case {
    const char *method;
    const char *suffix; /* after /topologies/<id> */
    const char *right, *wrong; /* tokens with and without the role */
    const char *body;
} route_case_t;

static void check_route_order(const route_case_t *c, const char *const *bad_ids, size_t nbad)
{
    char path[512];
    for (size_t i = 0; i < nbad; i++) {
        snprintf(path, sizeof path, "/topologies/%s%s", bad_ids[i], c->suffix);
        long anon = gw_status(&gw, c->method, path, NULL, c->body);
        long wrong = gw_status(&gw, c->method, path, c->wrong, c->body);
        long right = gw_status(&gw, c->method, path, c->right, c->body);
        if (anon != 401 || wrong != 403 || right != 404)
            fprintf(stderr, "%s %s: %ld %ld %ld\n", c->method, path, anon, wrong, right);
        assert_int_equal(anon, 401);
        assert_int_equal(wrong, 403);
        assert_int_equal(right, 404);
    }
}

static void test_gw_auth_comes_before_role_before_not_found(void **state)
{
    (void)state;
    char long_id[66];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    /* lws decodes `%2e` and then resolves dot segments (RFC 3986 §5.2.4) before routing:
     * `/topologies/%2e` is `/topologies/` (an empty id), `/topologies/%2e/deploy` is
     * `/topologies/deploy` (id `deploy`, a GET-only route). Both are covered below. */
    const char *bad_ids[] = {"a.b", "*", ">", "a%2eb", "%3e", "%2A", "a%20b", long_id,
                             "t_0000000000000000" /* well-formed, unknown */};
    const route_case_t routes[] = {
        {"GET", "", viewer, publisher, NULL},
        {"GET", "/mutations", viewer, publisher, NULL},
        {"GET", "/events", viewer, publisher, NULL},
        {"POST", "/deploy", editor, viewer, NULL},
        {"POST", "/teardown", editor, viewer, NULL},
        {"POST", "/mutations", editor, viewer, "{\"op\":\"remove_node\",\"payload\":{\"id\":\"n\"}}"},
    };
    for (size_t i = 0; i < TB_ARRAY_LEN(routes); i++)
        check_route_order(&routes[i], bad_ids, TB_ARRAY_LEN(bad_ids));
    const char *dots[] = {"%2e", "%2E", "", "."};
    for (size_t i = 0; i < 3; i++)
        check_route_order(&routes[i], dots, TB_ARRAY_LEN(dots));
    /* A dot id on a POST route names the GET-only document route: never a 2xx. */
    assert_int_equal(gw_status(&gw, "POST", "/topologies/%2e/deploy", editor, NULL), 405);
    /* `..` climbs out of /topologies entirely, to the public editor page: never a list. */
    char url[256];
    tb_http_response_t page = {0};
    tb_test_gateway_url(&gw, "/topologies/%2e%2e", url, sizeof url);
    assert_int_equal(tb_http_get(url, viewer, &page), 200);
    assert_non_null(strstr(page.body, "<!doctype html>"));
    tb_http_response_cleanup(&page);
    /* Routes without an id: 401 then 403. */
    assert_int_equal(gw_status(&gw, "GET", "/topologies", NULL, NULL), 401);
    assert_int_equal(gw_status(&gw, "GET", "/topologies", publisher, NULL), 403);
    assert_int_equal(gw_status(&gw, "POST", "/topologies", viewer, "{\"name\":\"x\"}"), 403);
    assert_int_equal(gw_status(&gw, "POST", "/publish", NULL, "{}"), 401);
    assert_int_equal(gw_status(&gw, "POST", "/publish", editor, "{}"), 403);
    assert_int_equal(gw_status(&gw, "POST", "/auth/sse-ticket", NULL, NULL), 401);
    tb_http_response_t r;
    char v[64];
    assert_int_equal(gw_req(&gw, "GET", "/topologies", NULL, NULL, &r), 401);
    assert_string_equal(gw_json_str(&r, "error", v, sizeof v), "unauthorized");
    assert_true(tb_http_header(&r, "www-authenticate", v, sizeof v));
    tb_http_response_cleanup(&r);
}

static char *b64url(const char *in)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t len = strlen(in);
    char *out = calloc(len * 2 + 4, 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)(unsigned char)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)(unsigned char)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)in[i + 2];
        out[n++] = abc[(v >> 18) & 63];
        out[n++] = abc[(v >> 12) & 63];
        if (i + 1 < len)
            out[n++] = abc[(v >> 6) & 63];
        if (i + 2 < len)
            out[n++] = abc[v & 63];
    }
    return out;
}

/* A token signed by libjwt over claims (JSON text) with alg and key. */
static char *signed_token(jwt_alg_t alg, const char *key, const char *claims)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)), 0);
    char *t = jwt_encode_str(jwt);
    jwt_free(jwt);
    assert_non_null(t);
    return remember(t);
}

static char *unsigned_token(const char *claims)
{
    char *h = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}"), *p = b64url(claims);
    char *t = malloc(strlen(h) + strlen(p) + 3);
    sprintf(t, "%s.%s.", h, p);
    free(h);
    free(p);
    return remember(t);
}

static void test_gw_every_jwt_rejection_is_401_and_counted_by_reason(void **state)
{
    (void)state;
    long now = (long)time(NULL);
    char ok[160], expired[160], no_exp[96], future[200], no_sub[96];
    snprintf(ok, sizeof ok, "{\"sub\":\"x\",\"roles\":[\"viewer\"],\"exp\":%ld}", now + 600);
    snprintf(expired, sizeof expired, "{\"sub\":\"x\",\"roles\":[\"viewer\"],\"exp\":%ld}", now - 5);
    snprintf(no_exp, sizeof no_exp, "{\"sub\":\"x\",\"roles\":[\"viewer\"]}");
    snprintf(future, sizeof future, "{\"sub\":\"x\",\"roles\":[\"viewer\"],\"exp\":%ld,\"nbf\":%ld}",
             now + 600, now + 300);
    snprintf(no_sub, sizeof no_sub, "{\"roles\":[\"viewer\"],\"exp\":%ld}", now + 600);
    const struct {
        const char *token, *reason;
    } cases[] = {
        {unsigned_token(ok), "algorithm"},
        {signed_token(JWT_ALG_HS384, TB_TEST_SECRET, ok), "algorithm"},
        {signed_token(JWT_ALG_HS256, "another-secret-another-secret-0000", ok), "signature"},
        {signed_token(JWT_ALG_HS256, TB_TEST_SECRET, expired), "expired"},
        {signed_token(JWT_ALG_HS256, TB_TEST_SECRET, no_exp), "claims"},
        {signed_token(JWT_ALG_HS256, TB_TEST_SECRET, future), "not_yet_valid"},
        {signed_token(JWT_ALG_HS256, TB_TEST_SECRET, no_sub), "claims"},
        {"not-a-jwt", "malformed"},
        {NULL, "missing"},
    };
    /* The same claims, properly signed, pass: each case fails for its one defect. */
    assert_int_equal(gw_status(&gw, "GET", "/topologies",
                               signed_token(JWT_ALG_HS256, TB_TEST_SECRET, ok), NULL),
                     200);
    for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
        char series[96];
        snprintf(series, sizeof series, "topobus_auth_failures_total{reason=\"%s\"}",
                 cases[i].reason);
        long long before = gw_metric(&gw, series);
        assert_int_equal(gw_status(&gw, "GET", "/topologies", cases[i].token, NULL), 401);
        assert_int_equal(gw_metric(&gw, series), before + 1);
    }
    long long forbidden = gw_metric(&gw, "topobus_auth_failures_total{reason=\"forbidden\"}");
    assert_int_equal(gw_status(&gw, "GET", "/topologies", publisher, NULL), 403);
    assert_int_equal(gw_metric(&gw, "topobus_auth_failures_total{reason=\"forbidden\"}"),
                     forbidden + 1);
}

static bool stop_at_first_bytes(const char *data, size_t len, void *ud)
{
    (void)data;
    (void)len;
    (void)ud;
    return false;
}

/* Opens the event stream with a query credential; returns the status (200: stream opened). */
static long open_stream(const char *query)
{
    char path[2200], url[2400];
    snprintf(path, sizeof path, "/topologies/%s/events?%s", topology, query);
    tb_http_request_t req = {.url = tb_test_gateway_url(&gw, path, url, sizeof url),
                             .on_body = stop_at_first_bytes,
                             .timeout_ms = 5000};
    tb_http_response_t r;
    tb_http_do(&req, &r);
    long status = r.status;
    tb_http_response_cleanup(&r);
    return status;
}

static char *mint_ticket(const char *bearer)
{
    tb_http_response_t r;
    assert_int_equal(gw_req(&gw, "POST", "/auth/sse-ticket", bearer, NULL, &r), 200);
    char t[128];
    gw_json_str(&r, "ticket", t, sizeof t);
    json_t *root = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(root, "expires_in")), 60);
    json_decref(root);
    tb_http_response_cleanup(&r);
    assert_true(strlen(t) >= 32); /* at least 128 random bits in hex */
    return remember(strdup(t));
}

static void test_gw_tickets_are_single_use_and_bound_to_roles(void **state)
{
    (void)state;
    char *a = mint_ticket(viewer), *b = mint_ticket(viewer);
    assert_string_not_equal(a, b);
    assert_int_equal(gw_metric(&gw, "topobus_sse_tickets"), 2);
    /* A ticket is not a bearer token. */
    assert_int_equal(gw_status(&gw, "GET", "/topologies", a, NULL), 401);
    char q[2048];
    snprintf(q, sizeof q, "ticket=%s", a);
    assert_int_equal(open_stream(q), 200);
    assert_int_equal(open_stream(q), 401); /* used */
    assert_int_equal(gw_metric(&gw, "topobus_sse_tickets"), 1);
    assert_int_equal(open_stream("ticket=00000000000000000000000000000000"), 401); /* never minted */
    /* A ticket carries its roles: one bought by a publisher cannot open a stream. */
    snprintf(q, sizeof q, "ticket=%s", mint_ticket(publisher));
    assert_int_equal(open_stream(q), 403);
    snprintf(q, sizeof q, "token=%s", viewer);
    assert_int_equal(open_stream(q), 200);
    snprintf(q, sizeof q, "ticket=%s", b);
    assert_int_equal(open_stream(q), 200);
}

static void check_allow(const char *method, const char *path, const char *allow)
{
    tb_http_response_t r;
    char v[64];
    long st = gw_req(&gw, method, path, editor, NULL, &r);
    if (st != 405)
        fprintf(stderr, "%s %s -> %ld\n", method, path, st);
    assert_int_equal(st, 405);
    assert_true(tb_http_header(&r, "allow", v, sizeof v));
    assert_string_equal(v, allow);
    tb_http_response_cleanup(&r);
}

static void test_gw_wrong_method_is_405_with_allow_and_unknown_route_404(void **state)
{
    (void)state;
    check_allow("PUT", "/topologies", "GET, POST");
    check_allow("DELETE", "/topologies/t_1", "GET");
    check_allow("PATCH", "/topologies/t_1/mutations", "GET, POST");
    check_allow("GET", "/publish", "POST");
    check_allow("GET", "/auth/sse-ticket", "POST");
    check_allow("POST", "/healthz", "GET");
    check_allow("GET", "/topologies/t_1/deploy", "POST");
    check_allow("DELETE", "/metrics", "GET");
    assert_int_equal(gw_status(&gw, "GET", "/nope", NULL, NULL), 404);
    assert_int_equal(gw_status(&gw, "GET", "/topologies/t_1/x/y", NULL, NULL), 404);
    assert_int_equal(gw_status(&gw, "POST", "/nope", NULL, "{}"), 404);
}

static void test_gw_bodies_over_64_kib_are_413_also_chunked(void **state)
{
    (void)state;
    size_t big = 64 * 1024 + 1;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[big] = '\0';
    char url[256];
    tb_http_request_t req = {.url = tb_test_gateway_url(&gw, "/topologies", url, sizeof url),
                             .bearer = editor, .body = body, .body_len = big};
    tb_http_response_t r;
    tb_http_do(&req, &r);
    assert_int_equal(r.status, 413);
    tb_http_response_cleanup(&r);
    req.chunked = true;
    tb_http_do(&req, &r);
    assert_int_equal(r.status, 413);
    tb_http_response_cleanup(&r);
    /* Exactly the limit is read and parsed: blanks are malformed JSON, so 400, not 413. */
    req.body_len = big - 1;
    tb_http_do(&req, &r);
    assert_int_equal(r.status, 400);
    tb_http_response_cleanup(&r);
    req.chunked = false;
    tb_http_do(&req, &r);
    assert_int_equal(r.status, 400);
    tb_http_response_cleanup(&r);
    free(body);
}

static void test_gw_overlong_path_is_414(void **state)
{
    (void)state;
    char path[3000] = "/topologies/";
    memset(path + strlen(path), 'a', 2000);
    assert_int_equal(gw_status(&gw, "GET", path, viewer, NULL), 414);
}

static void test_gw_cors_answers_listed_origins_only(void **state)
{
    (void)state;
    char url[256], v[128];
    const char *ok[] = {"Origin: " ORIGIN_OK, "Access-Control-Request-Method: POST", NULL};
    tb_http_request_t pre = {.method = "OPTIONS",
                             .url = tb_test_gateway_url(&gw, "/topologies", url, sizeof url),
                             .headers = ok};
    tb_http_response_t r;
    tb_http_do(&pre, &r);
    assert_int_equal(r.status, 204);
    assert_true(tb_http_header(&r, "access-control-allow-origin", v, sizeof v));
    assert_string_equal(v, ORIGIN_OK);
    assert_true(tb_http_header(&r, "access-control-allow-methods", v, sizeof v));
    assert_non_null(strstr(v, "POST"));
    assert_true(tb_http_header(&r, "access-control-allow-headers", v, sizeof v));
    assert_non_null(strstr(v, "authorization"));
    tb_http_response_cleanup(&r);
    const char *bad[] = {"Origin: " ORIGIN_BAD, "Access-Control-Request-Method: POST", NULL};
    pre.headers = bad;
    tb_http_do(&pre, &r);
    assert_int_equal(r.status, 204);
    assert_false(tb_http_header(&r, "access-control-allow-origin", v, sizeof v));
    assert_false(tb_http_header(&r, "access-control-allow-methods", v, sizeof v));
    tb_http_response_cleanup(&r);
    tb_http_request_t get = {.url = url, .bearer = viewer, .headers = ok};
    tb_http_do(&get, &r);
    assert_int_equal(r.status, 200);
    assert_true(tb_http_header(&r, "access-control-allow-origin", v, sizeof v));
    assert_string_equal(v, ORIGIN_OK);
    tb_http_response_cleanup(&r);
    /* Error answers carry it too, so a browser can read the 401. */
    get.bearer = NULL;
    tb_http_do(&get, &r);
    assert_int_equal(r.status, 401);
    assert_true(tb_http_header(&r, "access-control-allow-origin", v, sizeof v));
    tb_http_response_cleanup(&r);
    get.headers = bad;
    get.bearer = viewer;
    tb_http_do(&get, &r);
    assert_int_equal(r.status, 200);
    assert_false(tb_http_header(&r, "access-control-allow-origin", v, sizeof v));
    tb_http_response_cleanup(&r);
}

static void test_gw_get_with_body_is_answered_and_body_never_parsed_as_request(void **state)
{
    (void)state;
    int fd = tb_test_tcp_connect(gw.host, gw.port);
    assert_true(fd >= 0);
    /* The body looks like a second request; it must not be answered as one. */
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 38\r\n\r\n"
                       "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n\r\n";
    assert_true(tb_test_tcp_send(fd, req, sizeof req - 1));
    char got[8192];
    assert_true(tb_test_tcp_wait_closed(fd, 5000, got, sizeof got));
    close(fd);
    assert_true(strncmp(got, "HTTP/1.1 200", 12) == 0);
    assert_non_null(strstr(got, "{\"status\":\"ok\"}"));
    assert_null(strstr(got, "topobus_build_info"));
    assert_null(strstr(got + 12, "HTTP/1.1"));
}

static void test_gw_metrics_count_requests_by_route_and_status(void **state)
{
    (void)state;
    const char *s404 = "topobus_http_requests_total{route=\"/topologies/{id}\",status=\"404\"}";
    const char *s200 = "topobus_http_requests_total{route=\"/healthz\",status=\"200\"}";
    const char *none = "topobus_http_requests_total{route=\"unmatched\",status=\"404\"}";
    long long a = gw_metric(&gw, s404), b = gw_metric(&gw, s200), c = gw_metric(&gw, none);
    assert_int_equal(gw_status(&gw, "GET", "/topologies/a.b", viewer, NULL), 404);
    assert_int_equal(gw_status(&gw, "GET", "/topologies/t_0000000000000000", viewer, NULL), 404);
    assert_int_equal(gw_status(&gw, "GET", "/healthz", NULL, NULL), 200);
    assert_int_equal(gw_status(&gw, "GET", "/nowhere", NULL, NULL), 404);
    assert_int_equal(gw_metric(&gw, s404), a + 2);
    assert_int_equal(gw_metric(&gw, s200), b + 1);
    assert_int_equal(gw_metric(&gw, none), c + 1);
    /* The in-process bus counts what went out (enqueue and deploy through the outbox,
     * /publish directly). */
    assert_true(gw_wait_metric_at_least(&gw, "topobus_bus_events_total{direction=\"out\"}", 3,
                                        5000));
    /* This gateway's relay published the change events (create has none; enqueue and
     * deploy have one each) and says so. */
    assert_true(gw_wait_metric_at_least(&gw, "topobus_outbox_confirmed_total", 2, 5000));
    assert_int_equal(gw_metric(&gw, "topobus_outbox_lease_held"), 1);
    assert_int_equal(gw_metric(&gw, "topobus_store_errors_total"), 0);
}

static void test_gw_log_has_access_lines_and_no_credentials(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "/topologies/%s/mutations?state=pending&token=%s", topology,
             viewer);
    assert_int_equal(gw_status(&gw, "GET", path, viewer, NULL), 200);
    /* The access line of the last request must be written before the log is read. */
    assert_true(tb_test_gateway_wait_log(&gw, "/mutations 200", 5000));
    char *log = tb_test_gateway_log(&gw);
    assert_non_null(strstr(log, "INFO http: GET /topologies 200 "));
    assert_non_null(strstr(log, "INFO http: POST /topologies 201 "));
    assert_non_null(strstr(log, "INFO http: PUT /topologies 405 "));
    assert_null(strstr(log, "state=pending"));
    assert_null(strstr(log, "token="));
    assert_null(strstr(log, "ticket="));
    assert_null(strstr(log, "Bearer"));
    assert_null(strstr(log, TB_TEST_SECRET));
    for (size_t i = 0; i < nsecrets; i++) {
        /* The signature part is what would let someone replay a token. */
        const char *sig = strrchr(secrets[i], '.');
        const char *needle = sig && sig[1] ? sig + 1 : secrets[i];
        if (strstr(log, needle))
            fprintf(stderr, "credential %zu found in the log\n", i);
        assert_null(strstr(log, needle));
    }
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gw_health_ready_and_metrics_answer_without_auth),
        cmocka_unit_test(test_gw_topology_lifecycle_create_list_get_mutate_deploy_teardown),
        cmocka_unit_test(test_gw_bad_bodies_are_400_and_publish_is_202),
        cmocka_unit_test(test_gw_auth_comes_before_role_before_not_found),
        cmocka_unit_test(test_gw_every_jwt_rejection_is_401_and_counted_by_reason),
        cmocka_unit_test(test_gw_tickets_are_single_use_and_bound_to_roles),
        cmocka_unit_test(test_gw_wrong_method_is_405_with_allow_and_unknown_route_404),
        cmocka_unit_test(test_gw_bodies_over_64_kib_are_413_also_chunked),
        cmocka_unit_test(test_gw_overlong_path_is_414),
        cmocka_unit_test(test_gw_cors_answers_listed_origins_only),
        cmocka_unit_test(test_gw_get_with_body_is_answered_and_body_never_parsed_as_request),
        cmocka_unit_test(test_gw_metrics_count_requests_by_route_and_status),
        cmocka_unit_test(test_gw_log_has_access_lines_and_no_credentials),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
