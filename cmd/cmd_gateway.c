/*
 * `topobus gateway`: the HTTP/SSE gateway alone. Runs until SIGTERM or
 * SIGINT, then shuts down gracefully and exits 0.
 */
#include <stdlib.h>

#include "cmd_int.h"
#include "tb/clock.h"
#include "tb/config.h"
#include "tb/gateway.h"
#include "tb/log.h"

static const tb_cli_spec_t gateway_spec = {
    .command = "gateway",
    .settings = TB_SET_LISTEN | TB_SET_BUS | TB_SET_DB | TB_SET_KEEPALIVE | TB_SET_DRAIN |
                TB_SET_LOOPS | TB_SET_JWT | TB_SET_SSE_CAP | TB_SET_CORS | TB_SET_LOG,
    .usage = "[--listen HOST:PORT] [--bus URL] [--db URL] [--loops N] ...",
};

int tb__cmd_gateway(int argc, char **argv)
{
    tb__cmd_block_signals();
    tb_config_t cfg;
    int early = tb__cmd_load_settings(&gateway_spec, argc, argv, &cfg);
    if (early >= 0)
        return early;
    char err[512];
    int rc = TB_EXIT_USAGE;
    tb_auth_t *auth = NULL;
    tb_gateway_t *gw = NULL;
    tb_store_t *store = NULL, *relay_store = NULL;
    tb_relay_t *relay = NULL;
    /* Until the socket is bound, log lines wait: a failure prints only its one error line,
     * and a start prints the address first, where scripts and tests read it. */
    int held = tb__cmd_log_hold();
    if (!cfg.jwt_secret && !cfg.jwt_public_key_file) {
        tb__cmd_error("TOPOBUS_JWT_SECRET: not set (the gateway refuses to start without a key; "
                      "set TOPOBUS_JWT_SECRET, TOPOBUS_JWT_SECRET_FILE or "
                      "TOPOBUS_JWT_PUBLIC_KEY_FILE)");
        goto out;
    }
    if (tb_auth_create(&auth, cfg.jwt_secret, cfg.jwt_secret_len, cfg.jwt_public_key_file, err,
                       sizeof err)) {
        tb__cmd_error("%s", err);
        goto out;
    }
    rc = tb__cmd_configure_bus(&cfg, "topobus-gateway");
    if (rc)
        goto out;
    rc = tb__cmd_open_store(&cfg, &store);
    if (!rc)
        rc = tb__cmd_relay_create(&cfg, &relay, &relay_store);
    if (!rc && relay)
        tb_relay_watch_store(relay, store);
    if (rc)
        goto out;
    tb_gateway_deps_t deps = {.cfg = &cfg, .auth = auth, .bus_provider = tb__cmd_app_bus,
                              .store = store,
                              .metrics_extra = relay ? tb__cmd_relay_metrics : NULL,
                              .metrics_extra_ud = relay};
    tb_status st = tb_gateway_create(&gw, &deps, err, sizeof err);
    if (st) {
        tb__cmd_error("%s", err);
        rc = st == TB_EINVAL ? TB_EXIT_USAGE : TB_EXIT_FAILURE;
        goto out;
    }
    tb__cmd_log_release(held);
    tb_log(TB_LOG_NOTICE, "gateway", "listening on %s", tb_gateway_address(gw));
    tb__cmd_log_drop_held(held, true);
    held = -1;
    if ((relay && tb_relay_start(relay)) || tb_gateway_start(gw)) {
        tb__cmd_error("cannot start the gateway threads");
        rc = TB_EXIT_FAILURE;
        goto out;
    }
    tb_config_log(&cfg, &gateway_spec);
    int sig = tb__cmd_wait_for_signal();
    tb_log(TB_LOG_NOTICE, "gateway", "signal %d: shutting down", sig);
    rc = TB_EXIT_OK;
out:
    tb__cmd_log_drop_held(held, false);
    /* Gateway first (it uses both), then the relay (publishes what is left, gives the lease
     * up), then the bus (no more callbacks), then the stores. */
    tb_gateway_destroy(gw);
    tb_relay_destroy(relay);
    tb_app_bus_close();
    tb_store_close(relay_store);
    tb_store_close(store);
    tb_auth_destroy(auth);
    tb_config_cleanup(&cfg);
    return rc;
}
