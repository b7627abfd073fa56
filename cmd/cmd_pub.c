/*
 * `topobus pub TOPIC JSON [--type T] [--bus URL]`: publishes one envelope
 * on the configured bus and waits until it has left the process.
 */
#include <string.h>

#include "cmd_int.h"
#include "tb/bus.h"
#include "tb/config.h"
#include "tb/envelope.h"

enum { DRAIN_MS = 5000 };

typedef struct pub_opts {
    const char *type;
} pub_opts_t;

static const tb_opt_t pub_opt_table[] = {
    {"--type", TB_OPT_STRING, offsetof(pub_opts_t, type), 0, 0,
     "envelope type (default: derived from the topic)"},
};

static const tb_cli_spec_t pub_spec = {
    .command = "pub",
    .settings = TB_SET_BUS | TB_SET_LOG,
    .opts = pub_opt_table,
    .nopts = TB_ARRAY_LEN(pub_opt_table),
    .min_args = 2,
    .max_args = 2,
    .usage = "TOPIC JSON [--type T] [--bus URL]",
};

int tb__cmd_pub(int argc, char **argv)
{
    tb_config_t cfg;
    pub_opts_t opts = {0};
    const char *args[2];
    size_t nargs;
    bool help;
    char err[256];
    if (tb_config_load(&cfg, &pub_spec, argc, argv, &opts, args, &nargs, &help, err, sizeof err)) {
        tb__cmd_error("%s", err);
        return TB_EXIT_USAGE;
    }
    if (help) {
        tb_config_print_help(&pub_spec, 1);
        return TB_EXIT_OK;
    }
    tb_log_set_level(cfg.log_level);
    /* Validate everything before touching the network: bad input is exit 2, not a bus error. */
    const char *why = NULL;
    tb_event_t *ev = NULL;
    if (tb_event_create(&ev, args[0], opts.type, args[1], strlen(args[1]), &why)) {
        tb__cmd_error("pub: %s", why ? why : "invalid event");
        tb_config_cleanup(&cfg);
        return TB_EXIT_USAGE;
    }
    int rc = TB_EXIT_FAILURE;
    tb_bus_options_t bo;
    tb_bus_options_init(&bo);
    bo.client_name = "topobus-pub";
    bo.retry_first_connect = false;
    tb_bus_t *bus = NULL;
    tb_status st = tb_bus_create(&bus, cfg.bus_url, &bo);
    if (st) {
        tb__cmd_error("pub: cannot open bus %s: %s", cfg.bus_url, tb_status_str(st));
        /* A malformed URL is bad configuration (exit 2); an unreachable bus is a failure. */
        if (st == TB_EINVAL)
            rc = TB_EXIT_USAGE;
        goto out;
    }
    st = tb_bus_publish_event(bus, ev);
    if (st == TB_OK)
        st = tb_bus_drain(bus, DRAIN_MS);
    if (st) {
        tb__cmd_error("pub: publish failed: %s", tb_status_str(st));
        goto out;
    }
    rc = TB_EXIT_OK;
out:
    tb_bus_destroy(bus);
    tb_event_unref(ev);
    tb_config_cleanup(&cfg);
    return rc;
}
