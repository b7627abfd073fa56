/*
 * The route table (CONTRACT §4) and the small system routes: health and
 * SSE tickets (metrics are in gw_metrics.c). Loop thread only.
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
#include "tb/clock.h"

static void get_healthz(gw_request_t *req)
{
    tb__gw_reply(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
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
    {"/favicon.svg", GW_GET, tb__gw_web_asset, NULL},
    {"/healthz", GW_GET, get_healthz, NULL},
    {"/readyz", GW_GET, tb__gw_api_get_readyz, NULL},
    {"/metrics", GW_GET, tb__gw_metrics_get, NULL},
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

_Static_assert(TB_ARRAY_LEN(routes) < GW_ROUTE_SLOTS, "GW_ROUTE_SLOTS holds every route");

/*
 * Matches path against pattern segment by segment; `{id}` takes one segment.
 * An empty one (`/topologies/`, which is also what lws leaves of
 * `/topologies/%2e`) matches as an invalid id, answered 404 after auth.
 */
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

size_t tb__gw_route_slot(const gw_route_t *route)
{
    return route ? (size_t)(route - routes) : TB_ARRAY_LEN(routes);
}

const char *tb__gw_route_slot_name(size_t slot)
{
    if (slot < TB_ARRAY_LEN(routes))
        return routes[slot].pattern;
    return slot == TB_ARRAY_LEN(routes) ? "unmatched" : NULL;
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
