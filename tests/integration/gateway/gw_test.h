/*
 * Small helpers shared by the gateway integration tests: one-line requests
 * against a running tb_test_gateway_t, JSON fields of answers and /metrics
 * values. Header-only (static functions) so each test stays one executable.
 */
#ifndef TB_GW_TEST_H
#define TB_GW_TEST_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>
#include <sys/wait.h>

#include "gateway_proc.h"
#include "http_client.h"
#include "proc.h"
#include "tb/base.h"

/* Performs method on the gateway's path; fills r (clean it up). Returns the status. */
static inline long gw_req(const tb_test_gateway_t *g, const char *method, const char *path,
                          const char *bearer, const char *body, tb_http_response_t *r)
{
    char url[4096];
    tb_http_request_t req = {.method = method,
                             .url = tb_test_gateway_url(g, path, url, sizeof url),
                             .bearer = bearer,
                             .body = body};
    tb_http_do(&req, r);
    return r->status;
}

/* The status of method on path, nothing else. */
static inline long gw_status(const tb_test_gateway_t *g, const char *method, const char *path,
                             const char *bearer, const char *body)
{
    tb_http_response_t r;
    long status = gw_req(g, method, path, bearer, body, &r);
    tb_http_response_cleanup(&r);
    return status;
}

/* A string field of a JSON object body, copied into out ("" if absent). */
static inline const char *gw_json_str(const tb_http_response_t *r, const char *key, char *out,
                                      size_t outlen)
{
    json_t *root = json_loads(r->body, 0, NULL);
    const char *v = json_string_value(json_object_get(root, key));
    snprintf(out, outlen, "%s", v ? v : "");
    json_decref(root);
    return out;
}

/* The value of one /metrics series (name with labels, as printed), 0 if absent, -1 on error. */
static inline long long gw_metric(const tb_test_gateway_t *g, const char *series)
{
    tb_http_response_t r;
    if (gw_req(g, "GET", "/metrics", NULL, NULL, &r) != 200) {
        tb_http_response_cleanup(&r);
        return -1;
    }
    long long value = 0;
    size_t len = strlen(series);
    for (const char *line = r.body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, series, len) == 0 && line[len] == ' ') {
            value = atoll(line + len + 1);
            break;
        }
    }
    tb_http_response_cleanup(&r);
    return value;
}

/*
 * Waits up to timeout_ms until the series reaches at least min; true if it did. For
 * counters moved by other threads after a request was answered (the outbox relay
 * publishes a change once its transaction committed, not before the answer).
 */
static inline bool gw_wait_metric_at_least(const tb_test_gateway_t *g, const char *series,
                                           long long min, int timeout_ms)
{
    for (long long end = tb_test_now_ms() + timeout_ms;; tb_test_sleep_ms(10)) {
        if (gw_metric(g, series) >= min)
            return true;
        if (tb_test_now_ms() >= end)
            return false;
    }
}

#endif
