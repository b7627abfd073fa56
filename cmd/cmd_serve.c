/*
 * `topobus serve`: the embedded default (CONTRACT §6). The gateway and the
 * mutator in one process, on the in-process bus (mem://) and SQLite, wired
 * from the same modules as `topobus gateway` and `topobus mutator`. Each
 * side opens its own store handle, as separate processes would, so neither
 * waits on the other's mutex. With no JWT secret configured, a random one is
 * made for this run, and an admin token, a viewer token and the editor URL
 * are printed once on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd_int.h"
#include "tb/auth.h"
#include "tb/clock.h"
#include "tb/config.h"
#include "tb/gateway.h"
#include "tb/log.h"
#include "tb/mutator.h"
#include "tb/random.h"

enum {
    SECRET_BYTES = 32,
    DEMO_TOKEN_TTL_S = 24 * 3600,
};

static const tb_cli_spec_t serve_spec = {
    .command = "serve",
    .settings = TB_SET_LISTEN | TB_SET_BUS | TB_SET_DB | TB_SET_KEEPALIVE | TB_SET_POLL |
                TB_SET_DRAIN | TB_SET_LOOPS | TB_SET_JWT | TB_SET_SSE_CAP | TB_SET_CORS |
                TB_SET_LOG | TB_SET_APPLY | TB_SET_LEASE | TB_SET_WORKER,
    .embedded = true,
    .usage = "[--listen HOST:PORT] [--db URL] [--poll S] [--hook PATH] ...",
};

/* Prints the demo tokens and the editor URL in one write, so they appear once and together. */
static int print_welcome(const tb_auth_t *auth, const char *address)
{
    char *admin = NULL, *viewer = NULL;
    double now = tb_clock_wall();
    unsigned admin_roles = 0, viewer_roles = 0;
    tb_auth_roles_parse("admin", &admin_roles);
    tb_auth_roles_parse("viewer", &viewer_roles);
    if (tb_auth_mint(auth, "admin", admin_roles, DEMO_TOKEN_TTL_S, now, &admin) ||
        tb_auth_mint(auth, "viewer", viewer_roles, DEMO_TOKEN_TTL_S, now, &viewer)) {
        free(admin);
        return TB_EXIT_FAILURE;
    }
    printf("topobus serve: no JWT secret configured, so this run uses a random one.\n"
           "These tokens are valid for 24 hours or until the process stops:\n"
           "admin token:  %s\n"
           "viewer token: %s\n"
           "editor:       http://%s/?token=%s\n",
           admin, viewer, address, admin);
    fflush(stdout);
    free(admin);
    free(viewer);
    return TB_EXIT_OK;
}

typedef struct serve_parts {
    tb_auth_t *auth;
    tb_store_t *gw_store, *mut_store, *relay_store;
    tb_gateway_t *gw;
    tb_mutator_t *mutator;
    tb_relay_t *relay;
    char worker_id[TB_STORE_WORKER_BUF_SIZE];
    int held; /* the worker id's hold (cmd_worker.c), or -1 */
} serve_parts_t;

static int build(tb_config_t *cfg, serve_parts_t *p, char *secret, bool *generated)
{
    char err[512];
    int rc = tb__cmd_check_mutator_settings(cfg);
    if (rc)
        return rc;
    if (!cfg->jwt_secret && !cfg->jwt_public_key_file) {
        tb_random_hex(secret, SECRET_BYTES);
        cfg->jwt_secret = secret;
        cfg->jwt_secret_len = strlen(secret);
        *generated = true;
    }
    if (tb_auth_create(&p->auth, cfg->jwt_secret, cfg->jwt_secret_len, cfg->jwt_public_key_file,
                       err, sizeof err)) {
        tb__cmd_error("%s", err);
        return TB_EXIT_USAGE;
    }
    rc = tb__cmd_worker_identity(cfg, "serve", p->worker_id, sizeof p->worker_id, &p->held);
    if (!rc)
        rc = tb__cmd_configure_bus(cfg, "topobus-serve");
    if (!rc)
        rc = tb__cmd_open_store(cfg, &p->gw_store);
    if (!rc)
        rc = tb__cmd_open_store(cfg, &p->mut_store);
    if (!rc)
        rc = tb__cmd_mutator_create(cfg, p->mut_store, p->worker_id, &p->mutator);
    if (!rc)
        rc = tb__cmd_relay_create(cfg, &p->relay, &p->relay_store);
    if (rc)
        return rc;
    if (p->relay) {
        tb_relay_watch_store(p->relay, p->gw_store);
        tb_relay_watch_store(p->relay, p->mut_store);
    }
    tb_gateway_deps_t deps = {.cfg = cfg, .auth = p->auth, .bus_provider = tb__cmd_app_bus,
                              .store = p->gw_store,
                              .metrics_extra = p->relay ? tb__cmd_relay_metrics : NULL,
                              .metrics_extra_ud = p->relay};
    tb_status st = tb_gateway_create(&p->gw, &deps, err, sizeof err);
    if (st) {
        tb__cmd_error("%s", err);
        return st == TB_EINVAL ? TB_EXIT_USAGE : TB_EXIT_FAILURE;
    }
    return TB_EXIT_OK;
}

int tb__cmd_serve(int argc, char **argv)
{
    tb__cmd_block_signals();
    tb_config_t cfg;
    int early = tb__cmd_load_settings(&serve_spec, argc, argv, &cfg);
    if (early >= 0)
        return early;
    serve_parts_t p = {.held = -1};
    char secret[2 * SECRET_BYTES + 1];
    bool generated = false;
    int rc = build(&cfg, &p, secret, &generated);
    if (rc)
        goto out;
    if ((p.relay && tb_relay_start(p.relay)) || tb_mutator_start(p.mutator) ||
        tb_gateway_start(p.gw)) {
        tb__cmd_error("cannot start the gateway and mutator threads");
        rc = TB_EXIT_FAILURE;
        goto out;
    }
    tb_config_log(&cfg, &serve_spec);
    if (generated) {
        rc = print_welcome(p.auth, tb_gateway_address(p.gw));
        if (rc)
            goto out;
    } else {
        printf("topobus serve: editor at http://%s/\n", tb_gateway_address(p.gw));
        fflush(stdout);
    }
    int sig = tb__cmd_wait_for_signal();
    tb_log(TB_LOG_NOTICE, "serve", "signal %d: shutting down", sig);
    rc = TB_EXIT_OK;
out:
    /* Gateway (drains its streams), then the mutator (finishes its mutation),
     * then the relay, then the bus (no more callbacks), then the stores. */
    tb_gateway_destroy(p.gw);
    tb_mutator_destroy(p.mutator);
    tb_relay_destroy(p.relay);
    tb_app_bus_close();
    tb_store_close(p.relay_store);
    tb_store_close(p.mut_store);
    tb_store_close(p.gw_store);
    tb_auth_destroy(p.auth);
    if (p.held >= 0)
        close(p.held);
    memset(secret, 0, sizeof secret);
    tb_config_cleanup(&cfg);
    return rc;
}
