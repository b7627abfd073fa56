/*
 * Wiring shared by the long-running subcommands: opening the store with a
 * clear error, configuring the process bus, the gateway's bus provider, and
 * holding back startup log lines until the listening address is known.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmd_int.h"
#include "tb/bus.h"
#include "tb/log.h"

int tb__cmd_open_store(const tb_config_t *cfg, tb_store_t **out)
{
    tb_store_err_t err;
    tb_status st = tb_store_open(out, cfg->db_url, NULL, &err);
    if (st == TB_OK)
        return TB_EXIT_OK;
    tb__cmd_error("--db: cannot open %s: %s", cfg->db_url, err.message);
    return st == TB_EINVAL ? TB_EXIT_USAGE : TB_EXIT_FAILURE;
}

int tb__cmd_configure_bus(const tb_config_t *cfg)
{
    tb_bus_options_t opts;
    tb_bus_options_init(&opts);
    if (cfg->nats_pending_msgs > 0)
        opts.sub_pending_msgs = (int)cfg->nats_pending_msgs;
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
