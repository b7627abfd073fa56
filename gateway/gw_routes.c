/*
 * The route table (CONTRACT §4) and the small system routes: health,
 * metrics and SSE tickets. Loop thread only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_auth_http.h"
#include "gw_int.h"
#include "gw_sse.h"
#include "gw_web.h"
#include "gw_fanout.h"
#include "tb/buf.h"
#include "tb/clock.h"

static void get_healthz(gw_request_t *req)
{
    tb__gw_reply(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void metric(tb_buf_t *b, const char *name, const char *type, const char *help,
                   unsigned long long value)
{
    tb_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, value);
}

static void get_metrics(gw_request_t *req)
{
    const gw_counters_t *c = &req->gw->counters;
    tb_buf_t b;
    tb_buf_init(&b);
    metric(&b, "topobus_http_requests_total", "counter", "HTTP requests received",
           atomic_load(&c->requests));
    tb_buf_append_str(&b, "# HELP topobus_http_responses_total HTTP responses by status class\n"
                          "# TYPE topobus_http_responses_total counter\n");
    tb_buf_appendf(&b, "topobus_http_responses_total{class=\"2xx\"} %llu\n",
                   (unsigned long long)atomic_load(&c->responses_2xx));
    tb_buf_appendf(&b, "topobus_http_responses_total{class=\"4xx\"} %llu\n",
                   (unsigned long long)atomic_load(&c->responses_4xx));
    tb_buf_appendf(&b, "topobus_http_responses_total{class=\"5xx\"} %llu\n",
                   (unsigned long long)atomic_load(&c->responses_5xx));
    metric(&b, "topobus_http_in_flight", "gauge", "HTTP requests being served",
           (unsigned long long)atomic_load(&c->in_flight));
    metric(&b, "topobus_connections_accepted_total", "counter", "TCP connections accepted",
           atomic_load(&c->connections_accepted));
    metric(&b, "topobus_connections_refused_total", "counter",
           "connections refused for lack of descriptors or memory",
           atomic_load(&c->connections_refused));
    metric(&b, "topobus_sse_tickets", "gauge", "SSE tickets minted and not yet used",
           tb_tickets_count(req->gw->tickets));
    metric(&b, "topobus_sse_streams", "gauge", "SSE streams open",
           (unsigned long long)atomic_load(&c->sse_open));
    metric(&b, "topobus_sse_streams_opened_total", "counter", "SSE streams opened",
           atomic_load(&c->sse_opened));
    unsigned long long frames = 0;
    long long queued = 0;
    for (unsigned i = 0; i < req->gw->nloops; i++) {
        frames += atomic_load_explicit(&req->gw->loops[i].frames_queued, memory_order_relaxed);
        queued += atomic_load_explicit(&req->gw->loops[i].queued_bytes, memory_order_relaxed);
    }
    metric(&b, "topobus_sse_frames_total", "counter", "event frames queued to streams", frames);
    metric(&b, "topobus_sse_resyncs_total", "counter",
           "snapshots sent because a stream's backlog or upstream events were lost",
           atomic_load(&c->sse_resyncs));
    metric(&b, "topobus_sse_rejected_cap_total", "counter", "streams refused by the per-user cap",
           atomic_load(&c->sse_rejected_cap));
    metric(&b, "topobus_sse_queued_bytes", "gauge", "event bytes waiting in stream queues",
           (unsigned long long)queued);
    metric(&b, "topobus_sse_subscriptions", "gauge", "topologies with a bus subscription",
           gw_fanout_count(req->gw->fanout));
    metric(&b, "topobus_inbox_overflows_total", "counter",
           "messages refused by a full loop inbox (each forces a resync)",
           atomic_load(&c->inbox_overflows));
    metric(&b, "topobus_publish_failed_total", "counter", "events the bus dropped or refused",
           atomic_load(&c->publish_failed));
    metric(&b, "topobus_uptime_seconds", "gauge", "seconds since the gateway started",
           (unsigned long long)(tb_clock_wall() - req->gw->started_at));
    tb__gw_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    tb_buf_cleanup(&b);
}

static void post_sse_ticket(gw_request_t *req)
{
    tb_principal_t p;
    if (!tb__gw_authenticate(req, 0, false, &p))
        return;
    char ticket[TB_TICKET_LEN + 1];
    if (tb_tickets_mint(req->gw->tickets, &p, tb_clock_wall(), ticket)) {
        tb__gw_add_header(req, "retry-after:", "5");
        tb__gw_reply_error(req, 503, "busy", "too many outstanding tickets; retry shortly");
        return;
    }
    char body[160];
    int n = snprintf(body, sizeof body, "{\"ticket\":\"%s\",\"expires_in\":%d}", ticket,
                     TB_TICKET_TTL_S);
    tb__gw_reply(req, 200, "application/json", body, (size_t)n);
}

static const gw_route_t routes[] = {
    {"/", GW_GET, tb__gw_web_index, NULL},
    {"/app.js", GW_GET, tb__gw_web_asset, NULL},
    {"/app.css", GW_GET, tb__gw_web_asset, NULL},
    {"/healthz", GW_GET, get_healthz, NULL},
    {"/readyz", GW_GET, tb__gw_api_get_readyz, NULL},
    {"/metrics", GW_GET, get_metrics, NULL},
    {"/auth/sse-ticket", GW_POST, NULL, post_sse_ticket},
    {"/publish", GW_POST, NULL, tb__gw_api_post_publish},
    {"/topologies", GW_GET | GW_POST, tb__gw_api_get_topologies, tb__gw_api_post_topologies},
    {"/topologies/{id}", GW_GET, tb__gw_api_get_topology, NULL},
    {"/topologies/{id}/events", GW_GET, tb__gw_sse_open, NULL},
    {"/topologies/{id}/deploy", GW_POST, NULL, tb__gw_api_post_deploy},
    {"/topologies/{id}/teardown", GW_POST, NULL, tb__gw_api_post_teardown},
    {"/topologies/{id}/mutations", GW_GET | GW_POST, tb__gw_api_get_mutations,
     tb__gw_api_post_mutation},
};

/* Matches path against pattern segment by segment; `{id}` takes one non-empty segment. */
static bool match(const char *pattern, const char *path, char *id_out, bool *id_valid)
{
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return false;
        p++;
        s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen == 4 && memcmp(p, "{id}", 4) == 0) {
            if (slen == 0)
                return false;
            *id_valid = tb_topology_id_valid_n(s, slen);
            snprintf(id_out, TB_TOPOLOGY_ID_BUF_SIZE, "%.*s",
                     (int)(slen < TB_TOKEN_MAX_LEN ? slen : TB_TOKEN_MAX_LEN), s);
        } else if (plen != slen || memcmp(p, s, plen) != 0) {
            return false;
        }
        p += plen;
        s += slen;
    }
    return *p == '\0' && *s == '\0';
}

const gw_route_t *tb__gw_route_match(const char *path, char *id_out, bool *id_valid)
{
    id_out[0] = '\0';
    *id_valid = false;
    for (size_t i = 0; i < TB_ARRAY_LEN(routes); i++) {
        if (match(routes[i].pattern, path, id_out, id_valid))
            return &routes[i];
    }
    return NULL;
}
