/*
 * The gateway's counters and GET /metrics in the Prometheus text format:
 * requests by route and status, auth failures by reason, streams, bus events
 * in/out/dropped, bus state, store errors and build info. Counting is one
 * relaxed atomic add on fixed arrays, from any thread; rendering runs on a
 * loop thread and reads each counter once.
 */
#include <stdatomic.h>
#include <string.h>

#include "gw_fanout.h"
#include "gw_idem.h"
#include "gw_int.h"
#include "tb/buf.h"
#include "tb/bus.h"
#include "tb/clock.h"

#ifndef TB_VERSION
#error "TB_VERSION must be defined by the build"
#endif

/* The statuses the gateway answers; anything else is counted as "other". */
static const int statuses[GW_STATUS_SLOTS - 1] = {200, 201, 202, 204, 400, 401, 403, 404, 405,
                                                  408, 409, 413, 414, 422, 429, 499, 500, 503};

static const char *const auth_labels[GW_AUTH_REASONS] = {
    [GW_AUTH_MISSING] = "missing",         [GW_AUTH_MALFORMED] = "malformed",
    [GW_AUTH_ALGORITHM] = "algorithm",     [GW_AUTH_SIGNATURE] = "signature",
    [GW_AUTH_EXPIRED] = "expired",         [GW_AUTH_NOT_YET_VALID] = "not_yet_valid",
    [GW_AUTH_CLAIMS] = "claims",           [GW_AUTH_TICKET] = "ticket",
    [GW_AUTH_FORBIDDEN] = "forbidden",
};

/* The static reasons of gw_auth.c and gw_claims.c that are not about the claims' content. */
static const struct {
    const char *why;
    gw_auth_reason reason;
} auth_reasons[] = {
    {"no credential", GW_AUTH_MISSING},
    {"malformed token", GW_AUTH_MALFORMED},
    {"algorithm not allowed", GW_AUTH_ALGORITHM},
    {"bad signature", GW_AUTH_SIGNATURE},
    {"token expired", GW_AUTH_EXPIRED},
    {"token not yet valid", GW_AUTH_NOT_YET_VALID},
    {"unknown, used or expired ticket", GW_AUTH_TICKET},
};

gw_auth_reason tb__gw_auth_reason_of(const char *why)
{
    for (size_t i = 0; why && i < TB_ARRAY_LEN(auth_reasons); i++) {
        if (strcmp(why, auth_reasons[i].why) == 0)
            return auth_reasons[i].reason;
    }
    return GW_AUTH_CLAIMS; /* sub, exp, nbf or role claims missing or of the wrong type */
}

void tb__gw_metrics_count_auth(tb_gateway_t *gw, gw_auth_reason reason)
{
    atomic_fetch_add_explicit(&gw->counters.auth_failures[reason], 1, memory_order_relaxed);
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i < TB_ARRAY_LEN(statuses); i++) {
        if (statuses[i] == status)
            return i;
    }
    return GW_STATUS_SLOTS - 1;
}

void tb__gw_metrics_count_response(const gw_request_t *req)
{
    size_t route = tb__gw_route_slot(req->route);
    atomic_fetch_add_explicit(&req->gw->counters.by_route_status[route][status_slot(req->status)],
                              1, memory_order_relaxed);
}

static void metric(tb_buf_t *b, const char *name, const char *type, const char *help,
                   unsigned long long value)
{
    tb_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, value);
}

static void family(tb_buf_t *b, const char *name, const char *type, const char *help)
{
    tb_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Only pairs that happened are listed: absent series read as 0 in Prometheus. */
static void render_requests(tb_buf_t *b, const gw_counters_t *c)
{
    family(b, "topobus_http_requests_total", "counter", "HTTP responses by route and status");
    for (size_t r = 0; r < GW_ROUTE_SLOTS && tb__gw_route_slot_name(r); r++) {
        for (size_t s = 0; s < GW_STATUS_SLOTS; s++) {
            unsigned long long n = atomic_load_explicit(&c->by_route_status[r][s],
                                                        memory_order_relaxed);
            if (n == 0)
                continue;
            if (s < TB_ARRAY_LEN(statuses))
                tb_buf_appendf(b, "topobus_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                               tb__gw_route_slot_name(r), statuses[s], n);
            else
                tb_buf_appendf(b,
                               "topobus_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                               tb__gw_route_slot_name(r), n);
        }
    }
    family(b, "topobus_auth_failures_total", "counter",
           "requests refused by authentication (401) or role (403), by reason");
    for (size_t i = 0; i < GW_AUTH_REASONS; i++)
        tb_buf_appendf(b, "topobus_auth_failures_total{reason=\"%s\"} %llu\n", auth_labels[i],
                       (unsigned long long)atomic_load(&c->auth_failures[i]));
}

static void render_bus(tb_buf_t *b, tb_gateway_t *gw)
{
    tb_bus_t *bus = tb__gw_bus(gw);
    tb_bus_stats_t st;
    memset(&st, 0, sizeof st);
    if (bus)
        tb_bus_stats(bus, &st);
    unsigned long long rejected = 0;
    for (size_t i = 0; i < TB_ARRAY_LEN(st.rejected); i++)
        rejected += st.rejected[i];
    tb_bus_state_t state = (tb_bus_state_t)tb__gw_bus_state(gw);
    metric(b, "topobus_bus_up", "gauge", "1 while the bus is connected", state == TB_BUS_UP);
    family(b, "topobus_bus_state", "gauge", "the bus state (1 for the current one)");
    const tb_bus_state_t states[] = {TB_BUS_UP, TB_BUS_DOWN, TB_BUS_DISABLED};
    for (size_t i = 0; i < TB_ARRAY_LEN(states); i++)
        tb_buf_appendf(b, "topobus_bus_state{state=\"%s\"} %d\n", tb_bus_state_str(states[i]),
                       states[i] == state);
    family(b, "topobus_bus_events_total", "counter", "bus events published (out) and received (in)");
    tb_buf_appendf(b, "topobus_bus_events_total{direction=\"in\"} %llu\n",
                   (unsigned long long)st.received);
    /* Out: fire-and-forget publishes and the outbox relay's confirmed ones alike. */
    tb_buf_appendf(b, "topobus_bus_events_total{direction=\"out\"} %llu\n",
                   (unsigned long long)(st.published + st.confirmed));
    family(b, "topobus_bus_events_dropped_total", "counter", "bus events lost, by where");
    const gw_counters_t *c = &gw->counters;
    tb_buf_appendf(b, "topobus_bus_events_dropped_total{reason=\"publish\"} %llu\n",
                   (unsigned long long)(st.publish_dropped + atomic_load(&c->publish_failed)));
    tb_buf_appendf(b, "topobus_bus_events_dropped_total{reason=\"invalid\"} %llu\n", rejected);
    tb_buf_appendf(b, "topobus_bus_events_dropped_total{reason=\"subscription\"} %llu\n",
                   (unsigned long long)st.sub_dropped);
    tb_buf_appendf(b, "topobus_bus_events_dropped_total{reason=\"inbox\"} %llu\n",
                   (unsigned long long)atomic_load(&c->inbox_overflows));
    metric(b, "topobus_bus_jetstream_skipped_total", "counter",
           "JetStream requests failed at once because JetStream had just not answered",
           st.js_skipped);
    metric(b, "topobus_bus_jetstream_leader_changes_total", "counter",
           "new JetStream stream leaders seen (every stream resyncs)", st.js_leader_changes);
}

static void render_streams(tb_buf_t *b, tb_gateway_t *gw)
{
    const gw_counters_t *c = &gw->counters;
    metric(b, "topobus_sse_tickets", "gauge", "SSE tickets minted and not yet used",
           tb_tickets_count(gw->tickets));
    metric(b, "topobus_sse_streams", "gauge", "SSE streams open",
           (unsigned long long)atomic_load(&c->sse_open));
    metric(b, "topobus_sse_streams_opened_total", "counter", "SSE streams opened",
           atomic_load(&c->sse_opened));
    unsigned long long frames = 0;
    long long queued = 0;
    for (unsigned i = 0; i < gw->nloops; i++) {
        frames += atomic_load_explicit(&gw->loops[i].frames_queued, memory_order_relaxed);
        queued += atomic_load_explicit(&gw->loops[i].queued_bytes, memory_order_relaxed);
    }
    metric(b, "topobus_sse_frames_total", "counter", "event frames queued to streams (events out)",
           frames);
    metric(b, "topobus_sse_queued_bytes", "gauge", "event bytes waiting in stream queues",
           (unsigned long long)queued);
    metric(b, "topobus_sse_resyncs_total", "counter",
           "snapshots sent because a stream's backlog or upstream events were lost",
           atomic_load(&c->sse_resyncs));
    metric(b, "topobus_sse_version_gaps_total", "counter",
           "resyncs because a stream skipped a topology version (its event never arrived)",
           atomic_load(&c->sse_version_gaps));
    metric(b, "topobus_sse_rejected_cap_total", "counter", "streams refused by the per-user cap",
           atomic_load(&c->sse_rejected_cap));
    metric(b, "topobus_sse_subscriptions", "gauge",
           "topologies with an open stream, routed from the gateway's one bus subscription",
           gw_fanout_count(gw->fanout));
    metric(b, "topobus_bus_subscriptions", "gauge",
           "bus subscriptions the gateway holds (one, whatever the number of topologies)",
           gw_fanout_live(gw->fanout) ? 1 : 0);
}

static void render_idempotency(tb_buf_t *b, tb_gateway_t *gw)
{
    const gw_counters_t *c = &gw->counters;
    metric(b, "topobus_idempotency_keys_in_flight", "gauge",
           "requests with an Idempotency-Key being processed in this process",
           gw_idem_table_count(gw->idem));
    family(b, "topobus_idempotency_answers_total", "counter",
           "repeated Idempotency-Keys: replayed answers, 409 (in flight), 422 (reused)");
    tb_buf_appendf(b, "topobus_idempotency_answers_total{outcome=\"replayed\"} %llu\n",
                   (unsigned long long)atomic_load(&c->idem_replayed));
    tb_buf_appendf(b, "topobus_idempotency_answers_total{outcome=\"in_flight\"} %llu\n",
                   (unsigned long long)atomic_load(&c->idem_in_flight));
    tb_buf_appendf(b, "topobus_idempotency_answers_total{outcome=\"reused\"} %llu\n",
                   (unsigned long long)atomic_load(&c->idem_reused));
}

void tb__gw_metrics_get(gw_request_t *req)
{
    tb_gateway_t *gw = req->gw;
    const gw_counters_t *c = &gw->counters;
    tb_buf_t b;
    tb_buf_init(&b);
    tb_buf_append_str(&b, "# HELP topobus_build_info the running build\n"
                          "# TYPE topobus_build_info gauge\n"
                          "topobus_build_info{version=\"" TB_VERSION "\"} 1\n");
    render_requests(&b, c);
    metric(&b, "topobus_http_in_flight", "gauge", "HTTP requests being served",
           (unsigned long long)atomic_load(&c->in_flight));
    metric(&b, "topobus_connections_accepted_total", "counter", "TCP connections accepted",
           atomic_load(&c->connections_accepted));
    metric(&b, "topobus_connections_refused_total", "counter",
           "connections refused for lack of descriptors or memory",
           atomic_load(&c->connections_refused));
    metric(&b, "topobus_store_errors_total", "counter",
           "requests answered 503 because the store did not answer", atomic_load(&c->store_errors));
    render_idempotency(&b, gw);
    render_streams(&b, gw);
    render_bus(&b, gw);
    if (gw->deps.metrics_extra)
        gw->deps.metrics_extra(&b, gw->deps.metrics_extra_ud);
    metric(&b, "topobus_uptime_seconds", "gauge", "seconds since the gateway started",
           (unsigned long long)(tb_clock_wall() - gw->started_at));
    tb__gw_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    tb_buf_cleanup(&b);
}
