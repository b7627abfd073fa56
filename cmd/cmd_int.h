/*
 * The subcommand table shared by main.c and the cmd_*.c files. Each
 * subcommand gets argv starting at its own name and returns the process exit
 * code (CONTRACT §6: 0 clean, 2 bad configuration, 1 other failures).
 */
#ifndef TB_CMD_INT_H
#define TB_CMD_INT_H

#include <stdbool.h>

#include "tb/bus.h"
#include "tb/config.h"
#include "tb/mutator.h"
#include "tb/relay.h"
#include "tb/store.h"

enum { TB_EXIT_OK = 0, TB_EXIT_FAILURE = 1, TB_EXIT_USAGE = 2 };

typedef int (*tb_cmd_fn)(int argc, char **argv);

typedef struct tb_cmd {
    const char *name;
    const char *summary;
    tb_cmd_fn run;
} tb_cmd_t;

/** The subcommands, in help order; defined in main.c. */
extern const tb_cmd_t tb__cmd_table[];
extern const unsigned tb__cmd_count;

/* Subcommands, each in its cmd_<name>.c. */
int tb__cmd_token(int argc, char **argv);
int tb__cmd_gateway(int argc, char **argv);
int tb__cmd_mutator(int argc, char **argv);
int tb__cmd_serve(int argc, char **argv);

/**
 * Loads the settings of a long-running subcommand (no arguments or options of
 * its own) and applies the log level. Returns -1 to go on, or the exit code
 * to return at once: 2 after one line naming a bad setting, 0 after --help.
 */
int tb__cmd_load_settings(const tb_cli_spec_t *spec, int argc, char **argv, tb_config_t *cfg);
/** Opens cfg->db_url; on failure prints one line and returns the exit code (else 0). */
int tb__cmd_open_store(const tb_config_t *cfg, tb_store_t **out);
/** True when the bus is disabled (`--bus none`): no outbox is written, no relay runs. */
bool tb__cmd_bus_disabled(const tb_config_t *cfg);
/**
 * Opens the relay's own store handle and creates (not starts) the outbox
 * relay on the process bus; both stay NULL with the bus disabled. Exit code
 * as above.
 */
int tb__cmd_relay_create(const tb_config_t *cfg, tb_relay_t **relay, tb_store_t **store);
/** tb_gateway_deps_t.metrics_extra for a relay (ud). */
void tb__cmd_relay_metrics(tb_buf_t *out, void *ud);
/**
 * Configures the process bus from cfg->bus_url, its connection named name
 * ("topobus-gateway", ...: what NATS monitoring shows); exit code as above.
 */
int tb__cmd_configure_bus(const tb_config_t *cfg, const char *name);
/** Checks the mutator's settings together (lease vs hook timeout); exit code as above. */
int tb__cmd_check_mutator_settings(const tb_config_t *cfg);
/**
 * Picks this process's worker id (cmd_worker.c) into out (cap bytes):
 * cfg->worker_id, else HOST:ROLE (HOST:ROLE:N for the Nth process of that
 * role on the host), and holds it for the process's life through *held (an
 * fd to close at exit, or -1). Exit code as above: 2 if the id given is held
 * by another live process on this host.
 */
int tb__cmd_worker_identity(const tb_config_t *cfg, const char *role, char *out, size_t cap,
                            int *held);
/**
 * Creates (not starts) the mutator from cfg's poll, lease, hook and
 * retention settings with the process bus, under worker_id; on a bad
 * combination prints one line and returns the exit code (else 0).
 */
int tb__cmd_mutator_create(const tb_config_t *cfg, tb_store_t *store, const char *worker_id,
                           tb_mutator_t **out);
/** Bus provider of the gateway and the mutator: the process bus, or NULL while unavailable. */
tb_bus_t *tb__cmd_app_bus(void *ud);

/**
 * Sends log lines to a memory file until tb__cmd_log_release, so a startup
 * failure prints only its one error line and a successful start can print
 * the listening address first. Call before any thread starts. Returns the
 * held fd, or -1 if holding is not possible (lines then go to stderr).
 */
int tb__cmd_log_hold(void);
/** Sends log lines to stderr again; the held lines stay held. */
void tb__cmd_log_release(int held);
/** Releases if needed, copies the held lines to stderr if replay, and closes held. */
void tb__cmd_log_drop_held(int held, bool replay);

/** Blocks SIGINT/SIGTERM in this and all later threads; ignores SIGPIPE. Call first. */
void tb__cmd_block_signals(void);
/** Waits for SIGINT or SIGTERM (blocked by tb__cmd_block_signals) and returns it. */
int tb__cmd_wait_for_signal(void);
/** `topobus pub` (cmd_pub.c). */
int tb__cmd_pub(int argc, char **argv);
/** `topobus sub` (cmd_sub.c). */
int tb__cmd_sub(int argc, char **argv);

/** Writes "topobus: <msg>\n" to stderr in one write. */
void tb__cmd_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
