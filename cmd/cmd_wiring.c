/*
 * Wiring shared by the long-running subcommands: opening the store with a
 * clear error, configuring the process bus, the bus provider of the gateway,
 * the mutator and the outbox relay, the mutator's options, and holding back
 * startup log lines
 * until the listening address is known.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmd_int.h"
#include "tb/bus.h"
#include "tb/log.h"

int tb__cmd_load_settings(const tb_cli_spec_t *spec, int argc, char **argv, tb_config_t *cfg)
{
    const char *args[1];
    size_t nargs;
    bool help;
    char err[512];
    if (tb_config_load(cfg, spec, argc, argv, NULL, args, &nargs, &help, err, sizeof err)) {
        tb__cmd_error("%s", err);
        return TB_EXIT_USAGE;
    }
    if (help) {
        tb_config_print_help(spec, 1);
        tb_config_cleanup(cfg);
        return TB_EXIT_OK;
    }
    tb_log_set_level(cfg->log_level);
    return -1;
}

bool tb__cmd_bus_disabled(const tb_config_t *cfg)
{
    return strcmp(cfg->bus_url, "none") == 0;
}

int tb__cmd_open_store(const tb_config_t *cfg, tb_store_t **out)
{
    tb_store_err_t err;
    /* Without a bus nothing would ever publish change events: write none. */
    tb_store_options_t opts = {.lease_s = cfg->lease_s,
                               .no_outbox = tb__cmd_bus_disabled(cfg),
                               .sqlite_normal_sync = strcmp(cfg->sqlite_synchronous, "normal") == 0};
    tb_status st = tb_store_open(out, cfg->db_url, &opts, &err);
    if (st == TB_OK)
        return TB_EXIT_OK;
    tb__cmd_error("--db: cannot open %s: %s", cfg->db_url, err.message);
    return st == TB_EINVAL ? TB_EXIT_USAGE : TB_EXIT_FAILURE;
}

int tb__cmd_relay_create(const tb_config_t *cfg, tb_relay_t **relay, tb_store_t **store)
{
    *relay = NULL;
    *store = NULL;
    if (tb__cmd_bus_disabled(cfg))
        return TB_EXIT_OK;
    int rc = tb__cmd_open_store(cfg, store);
    if (rc)
        return rc;
    tb_relay_deps_t deps = {.store = *store, .bus_provider = tb__cmd_app_bus};
    if (tb_relay_create(relay, &deps, NULL)) {
        tb__cmd_error("cannot create the outbox relay");
        return TB_EXIT_FAILURE;
    }
    return TB_EXIT_OK;
}

void tb__cmd_relay_metrics(tb_buf_t *out, void *ud)
{
    tb_relay_metrics(ud, out);
}

int tb__cmd_configure_bus(const tb_config_t *cfg, const char *name)
{
    tb_bus_options_t opts;
    tb_bus_options_init(&opts);
    opts.client_name = name;
    if (cfg->nats_pending_msgs > 0)
        opts.sub_pending_msgs = (int)cfg->nats_pending_msgs;
    opts.stream_replicas = (int)cfg->nats_replicas;
    if (tb_app_bus_configure(cfg->bus_url, &opts)) {
        tb__cmd_error("--bus: '%s' is not a usable bus URL", cfg->bus_url);
        return TB_EXIT_USAGE;
    }
    return TB_EXIT_OK;
}

tb_bus_t *tb__cmd_app_bus(void *ud)
{
    (void)ud;
    return tb_app_bus();
}

int tb__cmd_log_hold(void)
{
    int fd = memfd_create("topobus-startup-log", MFD_CLOEXEC);
    if (fd >= 0)
        tb_log_set_fd(fd);
    return fd;
}

void tb__cmd_log_release(int held)
{
    if (held >= 0)
        tb_log_set_fd(2);
}

void tb__cmd_log_drop_held(int held, bool replay)
{
    if (held < 0)
        return;
    tb__cmd_log_release(held);
    char buf[4096];
    ssize_t n;
    if (replay && lseek(held, 0, SEEK_SET) == 0) {
        while ((n = read(held, buf, sizeof buf)) > 0) {
            if (write(2, buf, (size_t)n) != n)
                break;
        }
    }
    close(held);
}

int tb__cmd_check_mutator_settings(const tb_config_t *cfg)
{
    if (cfg->apply_hook && cfg->lease_s <= cfg->apply_timeout_s) {
        tb__cmd_error("--lease: %ld s must be longer than the hook timeout (%ld s), or a slow "
                      "hook's claim would be taken for a crashed one",
                      cfg->lease_s, cfg->apply_timeout_s);
        return TB_EXIT_USAGE;
    }
    return TB_EXIT_OK;
}

int tb__cmd_mutator_create(const tb_config_t *cfg, tb_store_t *store, const char *worker_id,
                           tb_mutator_t **out)
{
    int rc = tb__cmd_check_mutator_settings(cfg);
    if (rc)
        return rc;
    if (cfg->apply_hook && access(cfg->apply_hook, X_OK) != 0)
        tb_log(TB_LOG_WARN, "mutator",
               "apply hook %s is not an executable file: mutations and deploys will fail",
               cfg->apply_hook);
    tb_mutator_deps_t deps = {.store = store, .bus_provider = tb__cmd_app_bus};
    tb_mutator_options_t opts = {
        .poll_ms = cfg->poll_s * 1000,
        .lease_ms = cfg->lease_s * 1000,
        .hook = cfg->apply_hook,
        .hook_timeout_ms = cfg->apply_timeout_s * 1000,
        .worker_id = worker_id,
        .retention_ms = cfg->retention_s > 0 ? (long long)cfg->retention_s * 1000
                                             : TB_MUTATOR_KEEP_FOREVER,
    };
    if (tb_mutator_create(out, &deps, &opts)) {
        tb__cmd_error("cannot create the mutator with these settings");
        return TB_EXIT_USAGE;
    }
    return TB_EXIT_OK;
}
