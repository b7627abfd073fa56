/*
 * The lws protocol callback: one HTTP transaction per gw_request_t (lws'
 * per-session memory, reused across keep-alive requests and reset for each),
 * routing, request bodies with a size cap, replies written in chunks, CORS
 * and the access log. Loop thread only.
 */
#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_int.h"
#include "gw_pool.h"
#include "gw_sse.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { HEADER_BUF = 4096, AUTH_HEADER_MAX = TB_AUTH_TOKEN_MAX + 16 };

void tb__gw_request_finish(gw_request_t *req)
{
    if (!req->active)
        return;
    atomic_fetch_sub(&req->gw->counters.in_flight, 1);
    tb__gw_request_shed(req);
    free(req->path);
    memset(req, 0, sizeof *req);
}

void tb__gw_request_shed(gw_request_t *req)
{
    free(req->authorization);
    free(req->origin);
    free(req->idem_key);
    free(req->headers);
    req->authorization = req->origin = req->idem_key = NULL;
    req->headers = NULL;
    req->nheaders = 0;
    tb_buf_cleanup(&req->body);
    tb_buf_cleanup(&req->response);
}

void tb__gw_access_log(const gw_request_t *req, size_t bytes, const char *note)
{
    int64_t ms = tb_clock_mono_ms() - req->started_ms;
    /* The path excludes the query string, so tokens and tickets never reach the log. */
    tb_log(TB_LOG_INFO, "http", "%s %s %d %zu %lldms%s", req->method_name, req->path, req->status,
           bytes, (long long)ms, note);
}

void tb__gw_reply(gw_request_t *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    req->status = status;
    req->content_type = content_type;
    tb_buf_reset(&req->response);
    tb_buf_append(&req->response, body, len);
}

void tb__gw_reply_error(gw_request_t *req, int status, const char *code, const char *message)
{
    json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *text = json_dumps(obj, JSON_COMPACT);
    tb__gw_reply(req, status, "application/json", text, strlen(text));
    free(text);
    json_decref(obj);
}

void tb__gw_add_header(gw_request_t *req, const char *name, const char *value)
{
    if (req->nheaders >= GW_MAX_EXTRA_HEADERS)
        return;
    if (!req->headers)
        req->headers = tb_xcalloc(GW_MAX_EXTRA_HEADERS, sizeof *req->headers);
    gw_header_t *h = &req->headers[req->nheaders++];
    h->name = name;
    snprintf(h->value, sizeof h->value, "%s", value);
}

bool tb__gw_query(gw_request_t *req, const char *name, char *out, size_t outlen)
{
    char key[32];
    snprintf(key, sizeof key, "%s=", name);
    /* lws stops at the first argument longer than the buffer it is given, so the buffer must
     * hold the longest one (a JWT in ?token= before ?last_event_id=, say). */
    int total = lws_hdr_total_length(req->wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return false;
    char *buf = tb_xmalloc((size_t)total + 1);
    const char *v = lws_get_urlarg_by_name(req->wsi, key, buf, total + 1);
    bool found = v != NULL && strlen(v) < outlen; /* too long is as good as absent: never cut */
    if (found)
        memcpy(out, v, strlen(v) + 1);
    free(buf);
    return found;
}

/* A header value as a new string, or NULL if absent or longer than max. */
static char *copy_header(struct lws *wsi, enum lws_token_indexes token, int max)
{
    int len = lws_hdr_total_length(wsi, token);
    if (len <= 0 || len > max)
        return NULL;
    char *v = tb_xmalloc((size_t)len + 1);
    if (lws_hdr_copy(wsi, v, len + 1, token) < 0) {
        free(v);
        return NULL;
    }
    return v;
}

/* A header lws does not know by name (name lower-case with ':'), as a new string; NULL if
 * absent or longer than max. *given says whether the request has it at all. */
static char *copy_custom_header(struct lws *wsi, const char *name, int max, bool *given)
{
    int nlen = (int)strlen(name);
    int len = lws_hdr_custom_length(wsi, name, nlen);
    *given = len >= 0;
    if (len < 0 || len > max)
        return NULL;
    char *v = tb_xmalloc((size_t)len + 1);
    if (lws_hdr_custom_copy(wsi, v, len + 1, name, nlen) < 0) {
        free(v);
        return NULL;
    }
    return v;
}

/* The configured CORS origin list allows origin ("*" allows any). */
static bool origin_allowed(const gw_request_t *req)
{
    const char *list = req->gw->deps.cfg->cors_origins;
    if (!list || !req->origin)
        return false;
    size_t olen = strlen(req->origin);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        while (len > 0 && p[0] == ' ') {
            p++;
            len--;
        }
        if ((len == 1 && p[0] == '*') || (len == olen && memcmp(p, req->origin, len) == 0))
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

int tb__gw_write_headers(gw_request_t *req, const char *cache_control, size_t content_len,
                         tb_buf_t *lead)
{
    uint8_t buf[LWS_PRE + HEADER_BUF];
    uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    struct lws *wsi = req->wsi;
    bool stream = content_len == LWS_ILLEGAL_HTTP_CONTENT_LEN;
    if (lws_add_http_common_headers(wsi, (unsigned)req->status,
                                    stream ? "text/event-stream" : req->content_type, content_len,
                                    &p, end))
        return -1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)cache_control,
                                    (int)strlen(cache_control), &p, end))
        return -1;
    /* Proxies such as nginx must pass stream bytes through at once. */
    if (stream && lws_add_http_header_by_name(wsi, (const unsigned char *)"x-accel-buffering:",
                                              (const unsigned char *)"no", 2, &p, end))
        return -1;
    for (unsigned i = 0; i < req->nheaders; i++) {
        const gw_header_t *h = &req->headers[i];
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)h->name,
                                        (const unsigned char *)h->value, (int)strlen(h->value),
                                        &p, end))
            return -1;
    }
    if (origin_allowed(req) &&
        (lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-origin:",
                                     (const unsigned char *)req->origin,
                                     (int)strlen(req->origin), &p, end) ||
         lws_add_http_header_by_name(wsi, (const unsigned char *)"vary:",
                                     (const unsigned char *)"origin", 6, &p, end)))
        return -1;
    if (req->close_after &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                    (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_http_header(wsi, &p, end))
        return -1;
    size_t room = (size_t)(end - p), take = !lead ? 0 : lead->len < room ? lead->len : room;
    if (take > 0) {
        memcpy(p, lead->data, take);
        p += take;
        memmove(lead->data, lead->data + take, lead->len - take);
        tb_buf_truncate(lead, lead->len - take);
    }
    int len = (int)(p - start);
    if (lws_write(wsi, start, (size_t)len, LWS_WRITE_HTTP_HEADERS) != len)
        return -1;
    req->headers_sent = true;
    tb__gw_metrics_count_response(req);
    if (!stream)
        lws_callback_on_writable(wsi);
    return 0;
}

void tb__gw_respond(gw_request_t *req)
{
    if (!req->status)
        tb__gw_reply_error(req, 500, "internal", "the handler produced no response");
    req->replying = true;
    lws_callback_on_writable(req->wsi);
}

/* For the lws callbacks: answer now (from WRITEABLE), keep the connection. */
static int respond(gw_request_t *req)
{
    tb__gw_respond(req);
    return 0;
}

static void allow_header(gw_request_t *req, unsigned methods)
{
    tb__gw_add_header(req, "allow:",
                      (methods & GW_GET) && (methods & GW_POST) ? "GET, POST"
                      : (methods & GW_POST)                     ? "POST"
                                                                : "GET");
}

static int dispatch(gw_request_t *req)
{
    const gw_route_t *r = req->route;
    gw_handler_fn fn = req->method == GW_GET ? r->get : r->post;
    fn(req);
    if (req->sse)
        return req->sse_result; /* a stream answers for itself */
    if (req->job)
        return 0; /* a worker has the store call; its result is sent from the loop */
    return respond(req);
}

static void preflight(gw_request_t *req)
{
    tb__gw_reply(req, 204, "text/plain", "", 0);
    if (!origin_allowed(req))
        return;
    tb__gw_add_header(req, "access-control-allow-methods:", "GET, POST");
    tb__gw_add_header(req, "access-control-allow-headers:",
                      "authorization, content-type, last-event-id, idempotency-key");
    tb__gw_add_header(req, "access-control-max-age:", "600");
}

static const struct {
    int lws;
    gw_method method;
    const char *name;
} methods[] = {
    {LWSHUMETH_GET, GW_GET, "GET"},          {LWSHUMETH_POST, GW_POST, "POST"},
    {LWSHUMETH_OPTIONS, GW_OPTIONS, "OPTIONS"}, {LWSHUMETH_HEAD, GW_HEAD, "HEAD"},
    {LWSHUMETH_PUT, GW_OTHER, "PUT"},        {LWSHUMETH_PATCH, GW_OTHER, "PATCH"},
    {LWSHUMETH_DELETE, GW_OTHER, "DELETE"},  {LWSHUMETH_CONNECT, GW_OTHER, "CONNECT"},
};

static gw_method method_of(struct lws *wsi, const char **name)
{
    char *uri;
    int ulen;
    int m = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    for (size_t i = 0; i < TB_ARRAY_LEN(methods); i++) {
        if (methods[i].lws == m) {
            *name = methods[i].name;
            return methods[i].method;
        }
    }
    *name = "OTHER";
    return GW_OTHER;
}

/* Answers what needs no handler: a long path, no route, preflight, a wrong method. */
static bool answer_early(gw_request_t *req, size_t len)
{
    if (len > GW_PATH_MAX) {
        tb__gw_reply_error(req, 414, "uri_too_long", "the request path is too long");
        return true;
    }
    req->route = tb__gw_route_match(req->path, req->topology_id, &req->topology_id_valid);
    if (!req->route) {
        tb__gw_reply_error(req, 404, "not_found", "no such route");
        return true;
    }
    if (req->method == GW_OPTIONS) {
        preflight(req);
        return true;
    }
    if (!(req->route->methods & req->method)) {
        allow_header(req, req->route->methods);
        tb__gw_reply_error(req, 405, "method_not_allowed", "method not allowed on this route");
        return true;
    }
    return false;
}

static int on_request(gw_loop_t *loop, gw_request_t *req, struct lws *wsi, const char *path,
                      size_t len)
{
    tb__gw_request_finish(req); /* a keep-alive connection reuses the memory */
    req->active = true;
    req->gw = loop->gw;
    req->loop = loop;
    req->wsi = wsi;
    req->started_ms = tb_clock_mono_ms();
    atomic_fetch_add(&loop->gw->counters.in_flight, 1);
    req->method = method_of(wsi, &req->method_name);
    req->path = tb_xstrndup(path, len > GW_PATH_MAX ? GW_PATH_MAX : len);
    req->authorization = copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, AUTH_HEADER_MAX);
    req->origin = copy_header(wsi, WSI_TOKEN_ORIGIN, 256);
    /* Anything longer than a valid key is refused by the routes that read it (400). */
    req->idem_key = copy_custom_header(wsi, "idempotency-key:", TB_STORE_IDEM_KEY_MAX + 1,
                                       &req->idem_key_given);
    char cl[32];
    long long declared = -1;
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
        declared = atoll(cl);
    bool chunked = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    /* A body nobody reads (a GET with one, an early error) must not be parsed as the next
     * request on this connection; a HEAD answer must not carry a body either. */
    req->close_after = declared > 0 || chunked || req->method == GW_HEAD;
    if (answer_early(req, len))
        return respond(req);
    if (req->method == GW_GET)
        return dispatch(req);
    /* POST: the handler runs once the body is complete. */
    if (declared > GW_BODY_MAX) {
        tb__gw_reply_error(req, 413, "payload_too_large", "request bodies are limited to 64 KiB");
        return respond(req);
    }
    /* lws 4.1.6 passes chunked bodies through framed and never completes them: decode
     * here, and close afterwards since lws cannot tell where the next request starts. */
    req->close_after = chunked;
    req->chunked = chunked;
    gw_chunked_init(&req->dechunk);
    if (declared == 0 || (declared < 0 && !chunked))
        return dispatch(req);
    return 0;
}

static int on_body(gw_request_t *req, const void *in, size_t len)
{
    if (!req->active || req->replying || req->job)
        return 0;
    if (req->chunked) {
        size_t used;
        switch (gw_chunked_feed(&req->dechunk, in, len, &req->body, GW_BODY_MAX, &used)) {
        case GW_CHUNKED_MORE:
            return 0;
        case GW_CHUNKED_DONE:
            return dispatch(req);
        case GW_CHUNKED_TOO_LARGE:
            break;
        case GW_CHUNKED_BAD:
            tb__gw_reply_error(req, 400, "bad_chunked_body", "malformed chunked request body");
            return respond(req);
        }
    } else if (req->body.len + len <= GW_BODY_MAX) {
        tb_buf_append(&req->body, in, len);
        return 0;
    }
    req->close_after = true;
    tb__gw_reply_error(req, 413, "payload_too_large", "request bodies are limited to 64 KiB");
    return respond(req);
}

static int on_writeable(gw_request_t *req)
{
    if (!req->active || !req->replying)
        return 0;
    if (!req->headers_sent)
        return tb__gw_write_headers(req, "no-store", req->response.len, NULL); /* body: next */
    size_t remaining = req->response.len - req->sent;
    if (remaining > 0) {
        uint8_t buf[LWS_PRE + GW_WRITE_CHUNK];
        size_t n = remaining < GW_WRITE_CHUNK ? remaining : GW_WRITE_CHUNK;
        bool last = n == remaining;
        memcpy(buf + LWS_PRE, req->response.data + req->sent, n);
        if (lws_write(req->wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) <
            (int)n)
            return -1;
        req->sent += n;
        if (!last) {
            lws_callback_on_writable(req->wsi);
            return 0;
        }
    }
    tb__gw_access_log(req, req->response.len, "");
    bool close = req->close_after;
    struct lws *wsi = req->wsi;
    tb__gw_request_finish(req);
    if (close || lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

int tb__gw_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    gw_request_t *req = user;
    gw_loop_t *loop = lws_context_user(lws_get_context(wsi));
    /* An int switch: lws has ~100 reasons and this handles a few (-Wswitch-enum). */
    switch ((int)reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Returning non-zero here would break lws' internal wake pipe: always 0. */
        tb__gw_loop_drain_inbox(loop);
        return 0;
    case LWS_CALLBACK_HTTP:
        return on_request(loop, req, wsi, in, len);
    case LWS_CALLBACK_HTTP_BODY:
        return on_body(req, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!req->active || req->replying || req->job || req->chunked)
            return 0; /* a chunked body completes in on_body */
        return dispatch(req);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return req->sse ? tb__gw_sse_writeable(req) : on_writeable(req);
    case LWS_CALLBACK_RAW_ADOPT_FILE:
    case LWS_CALLBACK_RAW_RX_FILE:
    case LWS_CALLBACK_RAW_CLOSE_FILE:
    case LWS_CALLBACK_TIMER:
        /* Only the loop's watcher (the hang-up epoll fd) is a raw file or has a timer. */
        return tb__gw_sse_watcher_callback(loop, wsi, (int)reason);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (req)
            gw_pool_forget(req); /* a store call still running must not come back to it */
        if (req && req->sse) {
            tb__gw_sse_closed(req);
        } else if (req && req->active) {
            bool timed_out = tb_clock_mono_ms() - req->started_ms >= GW_REQUEST_TIMEOUT_S * 1000;
            if (!req->status)
                req->status = timed_out ? 408 : 499; /* dropped as too slow, or the client left */
            if (!req->headers_sent)
                tb__gw_metrics_count_response(req);
            tb__gw_access_log(req, req->sent,
                              req->headers_sent ? " (closed early)"
                              : timed_out       ? " (timed out)"
                                                : " (client closed)");
            tb__gw_request_finish(req);
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
