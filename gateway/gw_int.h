/*
 * Gateway internals shared by its files. Threads: the accept thread touches
 * only the listening socket and the inboxes; each loop thread owns its lws
 * context, every wsi on it and every gw_request_t; the controlling thread
 * creates and destroys. Counters are atomics readable from any thread.
 */
#ifndef TB_GW_INT_H
#define TB_GW_INT_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gw_chunked.h"
#include "gw_inbox.h"
#include "tb/buf.h"
#include "tb/gateway.h"
#include "tb/ticket.h"
#include "tb/topic.h"

#define GW_BODY_MAX (64 * 1024)     /* request body limit (413 above) */
#define GW_PATH_MAX 1024            /* longer request paths are answered 414 */
#define GW_REQUEST_TIMEOUT_S 10     /* headers, and then the body, must arrive within this */
#define GW_INBOX_CAPACITY 65536     /* messages waiting for one loop */
#define GW_WRITE_CHUNK (16 * 1024)  /* bytes per lws_write of a response body */
#define GW_MAX_EXTRA_HEADERS 6
#define GW_ROUTE_SLOTS 16  /* route table entries, plus one for requests that matched none */
#define GW_STATUS_SLOTS 19 /* the statuses the gateway answers (gw_metrics.c), plus "other" */

/* Why a request was refused (401, or 403 for a missing role): /metrics labels. */
typedef enum gw_auth_reason {
    GW_AUTH_MISSING = 0,
    GW_AUTH_MALFORMED,
    GW_AUTH_ALGORITHM,
    GW_AUTH_SIGNATURE,
    GW_AUTH_EXPIRED,
    GW_AUTH_NOT_YET_VALID,
    GW_AUTH_CLAIMS,
    GW_AUTH_TICKET,
    GW_AUTH_FORBIDDEN,
    GW_AUTH_REASONS
} gw_auth_reason;

typedef enum gw_method { GW_GET = 1, GW_POST = 2, GW_OPTIONS = 4, GW_HEAD = 8, GW_OTHER = 16 } gw_method;

struct gw_session;
struct gw_loop_topology;

typedef struct gw_loop {
    struct tb_gateway *gw;
    unsigned index;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    gw_inbox_t inbox;
    atomic_bool overflowed; /* the inbox refused a message: resync every stream */
    /* SSE state (gw_sse.c), loop thread only. */
    struct gw_loop_topology **topics; /* hash buckets: topology id -> its streams here */
    struct gw_session *sessions;      /* every stream on this loop */
    size_t nsessions;
    struct gw_session *dirty;         /* streams with something to write after this pass */
    bool batching;                    /* an inbox pass or a sweep is under way: its end
                                         writes the dirty streams (tb__gw_sse_flush) */
    int64_t sweep_at_ms;              /* when the sweep timer fires next */
    int watch_epfd;                   /* EPOLLRDHUP on every stream socket */
    struct lws *watcher;              /* the epoll fd adopted as a raw file; carries the timer */
    int bus_state;                    /* tb_bus_state_t as last told */
    bool draining;
    char *write_buf;                  /* LWS_PRE + GW_SSE_WRITE_BUDGET */
    /* Written only by this loop's thread (relaxed, uncontended), read by /metrics. */
    atomic_uint_fast64_t frames_queued;  /* event frames queued to streams */
    atomic_int_fast64_t queued_bytes;    /* frame bytes waiting in stream queues */
} gw_loop_t;

typedef struct gw_counters {
    atomic_uint_fast64_t connections_accepted;
    atomic_uint_fast64_t connections_refused; /* accept failed: fd limit, memory */
    atomic_int_fast64_t in_flight;
    atomic_uint_fast64_t publish_failed; /* events the bus dropped or refused */
    atomic_uint_fast64_t inbox_overflows; /* messages a full loop inbox refused */
    atomic_int_fast64_t sse_open;         /* streams open now */
    atomic_uint_fast64_t sse_opened;      /* streams ever opened */
    atomic_uint_fast64_t sse_resyncs;     /* snapshots sent to replace a lost backlog */
    atomic_uint_fast64_t sse_version_gaps; /* resyncs because a topology version was skipped */
    atomic_uint_fast64_t sse_rejected_cap; /* 429 answers */
    atomic_uint_fast64_t store_errors;     /* 503s because the store did not answer */
    atomic_uint_fast64_t idem_replayed;    /* Idempotency-Key repeats answered from the record */
    atomic_uint_fast64_t idem_in_flight;   /* ... answered 409: the first was being processed */
    atomic_uint_fast64_t idem_reused;      /* ... answered 422: the key came with another request */
    atomic_uint_fast64_t auth_failures[GW_AUTH_REASONS];
    atomic_uint_fast64_t by_route_status[GW_ROUTE_SLOTS][GW_STATUS_SLOTS];
} gw_counters_t;

struct tb_gateway {
    tb_gateway_deps_t deps;
    int listen_fd;
    int accept_wake_fd; /* eventfd: wakes the accept thread to stop */
    char address[64];
    pthread_t accept_thread;
    bool accept_started;
    atomic_bool accepting;
    gw_loop_t *loops;
    unsigned nloops;
    unsigned next_loop; /* accept thread only */
    bool stopped;
    tb_tickets_t *tickets;
    struct gw_fanout *fanout;
    struct gw_pool *pool;
    struct gw_users *users;
    struct gw_idem_table *idem; /* Idempotency-Keys being processed in this process */
    /* The bus appears once (attach thread) and never changes after: NULL until then. */
    _Atomic(tb_bus_t *) bus;
    atomic_uint_fast64_t bus_epoch; /* set before bus is published */
    pthread_t attach_thread; /* the bus watcher (gw_server.c) */
    bool attach_started;
    atomic_bool attach_stop;
    pthread_mutex_t watch_mu; /* with watch_cv: wakes the watcher to stop */
    pthread_cond_t watch_cv;
    gw_counters_t counters;
    double started_at;
};

typedef struct gw_header {
    const char *name; /* static, lower-case with ':' ("allow:") */
    char value[128];
} gw_header_t;

/* One HTTP transaction; lives in lws' per-session memory, reset per request. */
typedef struct gw_request {
    struct tb_gateway *gw;
    gw_loop_t *loop;
    struct lws *wsi;
    bool active;          /* a transaction is in progress */
    gw_method method;
    const char *method_name;
    char *path;           /* heap, at most GW_PATH_MAX bytes; kept for the access log */
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    bool topology_id_valid; /* the {id} segment follows the token grammar */
    const struct gw_route *route;
    char *authorization;  /* Authorization header value (heap), NULL if absent */
    char *origin;         /* Origin header value (heap), NULL if absent */
    char *idem_key;       /* Idempotency-Key value (heap), NULL if absent or too long */
    bool idem_key_given;  /* the request has an Idempotency-Key header */
    tb_buf_t body;
    bool chunked;           /* the body is chunked: decoded by dechunk, not lws */
    gw_chunked_t dechunk;
    int64_t started_ms;
    /* The response. */
    int status;
    const char *content_type;
    tb_buf_t response;
    size_t sent;
    gw_header_t *headers; /* GW_MAX_EXTRA_HEADERS slots, allocated on first use */
    unsigned nheaders;
    bool headers_sent;
    bool replying;    /* a reply is set: WRITEABLE sends its headers, then its body */
    bool close_after; /* close the connection after this response */
    struct gw_job *job; /* a store call in flight for this request (see gw_pool.h) */
    struct gw_session *sse; /* set while the request is an open stream */
    int sse_result;         /* lws result of opening the stream */
} gw_request_t;

typedef void (*gw_handler_fn)(gw_request_t *req);

typedef struct gw_route {
    const char *pattern; /* "/topologies/{id}/events": {id} matches one segment */
    unsigned methods;    /* gw_method bits */
    gw_handler_fn get, post;
} gw_route_t;

/* gw_http.c: the lws protocol callback and replies. */
int tb__gw_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len);
/** Sets a JSON reply from text (copied). Loop thread. */
void tb__gw_reply(gw_request_t *req, int status, const char *content_type, const char *body,
                  size_t len);
/** Sets an error reply `{"error":code,"message":message}`. Loop thread. */
void tb__gw_reply_error(gw_request_t *req, int status, const char *code, const char *message);
/** Adds a response header (name lower-case with ':'); silently ignored beyond the limit. */
void tb__gw_add_header(gw_request_t *req, const char *name, const char *value);
/** Reads a query argument (URL-decoded) into out; false if absent. */
bool tb__gw_query(gw_request_t *req, const char *name, char *out, size_t outlen);

/* gw_routes.c: the route table and matching. */
const gw_route_t *tb__gw_route_match(const char *path, char *id_out, bool *id_valid);
/** The metrics slot of a route (NULL: the slot of unmatched requests, the last one used). */
size_t tb__gw_route_slot(const gw_route_t *route);
/** The pattern of a slot ("/topologies/{id}"), "unmatched" for the last, NULL past it. */
const char *tb__gw_route_slot_name(size_t slot);

/* gw_metrics.c: counters for /metrics. Any thread; each is one relaxed atomic add. */
/** Counts req's response under its route and status. */
void tb__gw_metrics_count_response(const gw_request_t *req);
/** Counts a refused credential (401) or a missing role (403) under its reason. */
void tb__gw_metrics_count_auth(tb_gateway_t *gw, gw_auth_reason reason);
/** Maps a static rejection reason of tb_auth_verify/tb_auth_claims_check to its label. */
gw_auth_reason tb__gw_auth_reason_of(const char *why);
/** GET /metrics (Prometheus text format). Loop thread. */
void tb__gw_metrics_get(gw_request_t *req);

/**
 * Writes the status line and headers of req's response (content_len may be
 * LWS_ILLEGAL_HTTP_CONTENT_LEN for a stream), with the extra headers and CORS.
 * With lead (may be NULL), the front of lead's text goes out in the same
 * write, as much as fits, and is removed from lead: one send instead of two.
 */
int tb__gw_write_headers(gw_request_t *req, const char *cache_control, size_t content_len,
                         tb_buf_t *lead);
/** Writes the access-log line of req. */
void tb__gw_access_log(const gw_request_t *req, size_t bytes, const char *note);
/**
 * Sends the reply set with tb__gw_reply*: asks for WRITEABLE, where the
 * headers and then the body go out. Also for replies completed later (a
 * worker's result). Loop thread.
 */
void tb__gw_respond(gw_request_t *req);
/** Ends req's transaction bookkeeping (idempotent). */
void tb__gw_request_finish(gw_request_t *req);
/**
 * Frees what a request needs only while it is being answered (request and
 * reply buffers, credentials, extra headers): a stream lives on without them,
 * which keeps an idle stream small.
 */
void tb__gw_request_shed(gw_request_t *req);

/* gw_server.c */
void tb__gw_loop_drain_inbox(gw_loop_t *loop);
/** The bus, or NULL while it has not been reached yet. Any thread. */
tb_bus_t *tb__gw_bus(tb_gateway_t *gw);
/** The bus state as streams report it: `down` until the bus is reached. Any thread. */
int tb__gw_bus_state(tb_gateway_t *gw);
/** The epoch of cursors (0 until the bus is reached). Any thread. */
uint64_t tb__gw_bus_epoch(tb_gateway_t *gw);

#endif
