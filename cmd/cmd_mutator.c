/*
 * `topobus mutator`: the mutation worker alone, against the configured store
 * and bus. Runs until SIGTERM or SIGINT, finishes the mutation in hand, and
 * exits 0.
 */
#include <unistd.h>

#include "cmd_int.h"
#include "tb/config.h"
#include "tb/log.h"
#include "tb/mutator.h"

static const tb_cli_spec_t mutator_spec = {
    .command = "mutator",
    .settings = TB_SET_BUS | TB_SET_DB | TB_SET_POLL | TB_SET_APPLY | TB_SET_LEASE |
                TB_SET_WORKER | TB_SET_LOG,
    .usage = "[--bus URL] [--db URL] [--poll S] [--hook PATH] [--hook-timeout S] [--lease S] "
             "[--worker-id ID] [--retention S]",
};

int tb__cmd_mutator(int argc, char **argv)
{
    tb__cmd_block_signals();
    tb_config_t cfg;
    int early = tb__cmd_load_settings(&mutator_spec, argc, argv, &cfg);
    if (early >= 0)
        return early;
    tb_store_t *store = NULL, *relay_store = NULL;
    tb_mutator_t *mutator = NULL;
    tb_relay_t *relay = NULL;
    char worker_id[TB_STORE_WORKER_BUF_SIZE];
    int held = -1;
    /* Every setting is checked before anything is opened or created. */
    int rc = tb__cmd_check_mutator_settings(&cfg);
    if (!rc)
        rc = tb__cmd_worker_identity(&cfg, "mutator", worker_id, sizeof worker_id, &held);
    if (!rc)
        rc = tb__cmd_configure_bus(&cfg, "topobus-mutator");
    if (rc)
        goto out;
    rc = tb__cmd_open_store(&cfg, &store);
    if (rc)
        goto out;
    rc = tb__cmd_mutator_create(&cfg, store, worker_id, &mutator);
    if (!rc)
        rc = tb__cmd_relay_create(&cfg, &relay, &relay_store);
    if (rc)
        goto out;
    if (relay)
        tb_relay_watch_store(relay, store);
    if ((relay && tb_relay_start(relay)) || tb_mutator_start(mutator)) {
        tb__cmd_error("cannot start the mutator threads");
        rc = TB_EXIT_FAILURE;
        goto out;
    }
    tb_config_log(&cfg, &mutator_spec);
    int sig = tb__cmd_wait_for_signal();
    tb_log(TB_LOG_NOTICE, "mutator", "signal %d: finishing the current mutation", sig);
    rc = TB_EXIT_OK;
out:
    /* The worker first (it uses both), then the relay, then the bus (no more callbacks),
     * then the stores. */
    tb_mutator_destroy(mutator);
    tb_relay_destroy(relay);
    tb_app_bus_close();
    tb_store_close(relay_store);
    tb_store_close(store);
    if (held >= 0)
        close(held);
    tb_config_cleanup(&cfg);
    return rc;
}
