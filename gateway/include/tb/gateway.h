/*
 * The HTTP/SSE gateway (CONTRACT §3–§6): owns its listening socket
 * (SO_REUSEPORT, so several processes can share a port), accepts on one
 * thread and hands each connection to one of N libwebsockets event loops,
 * each on its own thread.
 *
 * Lifecycle, all from one controlling thread: create (binds and listens) →
 * start (threads run) → stop (graceful) → destroy.
 */
#ifndef TB_GATEWAY_H
#define TB_GATEWAY_H

#include <stddef.h>

#include "tb/auth.h"
#include "tb/buf.h"
#include "tb/bus.h"
#include "tb/config.h"
#include "tb/store.h"

typedef struct tb_gateway tb_gateway_t;

/** What the gateway serves with; everything is borrowed and must outlive the gateway. */
/**
 * Returns the bus, or NULL while it is unavailable. Called from the
 * gateway's attach thread until it first answers; may block for one connect
 * attempt (tb_app_bus with its 2 s backoff is the production provider).
 */
typedef tb_bus_t *(*tb_gateway_bus_provider)(void *ud);

typedef struct tb_gateway_deps {
    const tb_config_t *cfg;
    const tb_auth_t *auth;
    tb_gateway_bus_provider bus_provider;
    void *bus_provider_ud;
    tb_store_t *store;
    /* Appends more Prometheus text to GET /metrics (the process's outbox relay), or NULL.
     * Runs on an event loop: it must not block. */
    void (*metrics_extra)(tb_buf_t *out, void *ud);
    void *metrics_extra_ud;
} tb_gateway_deps_t;

/**
 * Creates the gateway and binds its listening socket on cfg->listen.
 * TB_EINVAL (err filled, naming the setting) for an unusable address,
 * TB_EIO if binding fails (e.g. the port is taken without SO_REUSEPORT peers).
 */
tb_status tb_gateway_create(tb_gateway_t **out, const tb_gateway_deps_t *deps, char *err,
                            size_t errlen);

/** The bound address as HOST:PORT ([v6]:PORT), with the real port when 0 was asked. */
const char *tb_gateway_address(const tb_gateway_t *gw);

/** Starts the event loops and the accept thread. */
tb_status tb_gateway_start(tb_gateway_t *gw);

/**
 * Stops gracefully: stops accepting, lets in-flight requests finish (bounded
 * by a few seconds), then stops the loops. Safe to call twice.
 */
void tb_gateway_stop(tb_gateway_t *gw);

/** Stops if needed and frees everything. Accepts NULL. */
void tb_gateway_destroy(tb_gateway_t *gw);

#endif
