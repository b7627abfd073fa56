/*
 * Settings (CONTRACT §6) from one table: defaults, then TOPOBUS_* environment
 * variables, then command-line flags. Each subcommand names the settings it
 * uses (a mask) and may add its own options through the same parser; unknown
 * flags are errors. After loading, the config is read-only.
 *
 * String values are borrowed from argv, the environment or static defaults
 * (all live as long as the process), except the JWT secret read from a file,
 * which the config owns until tb_config_cleanup.
 */
#ifndef TB_CONFIG_H
#define TB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "tb/base.h"
#include "tb/log.h"

/** Which shared settings a subcommand accepts. */
enum {
    TB_SET_LISTEN = 1u << 0,
    TB_SET_BUS = 1u << 1,
    TB_SET_DB = 1u << 2,
    TB_SET_KEEPALIVE = 1u << 3,
    TB_SET_POLL = 1u << 4,
    TB_SET_DRAIN = 1u << 5,
    TB_SET_LOOPS = 1u << 6,
    TB_SET_JWT = 1u << 7,
    TB_SET_SSE_CAP = 1u << 8,
    TB_SET_CORS = 1u << 9,
    TB_SET_LOG = 1u << 10,
    TB_SET_APPLY = 1u << 11, /* apply hook and its timeout (the mutator) */
    TB_SET_LEASE = 1u << 12, /* claim lease before stale-claim recovery (the mutator) */
    TB_SET_WORKER = 1u << 13, /* worker id and retention of settled mutations (the mutator) */
};

typedef struct tb_config {
    const char *listen;       /* HOST:PORT or [v6]:PORT */
    const char *bus_url;      /* mem://, nats://..., none */
    const char *db_url;       /* sqlite:PATH or postgres://... */
    const char *sqlite_synchronous; /* "full" (every commit synced) or "normal" */
    long keepalive_s;         /* SSE keepalive after this much silence */
    long poll_s;              /* mutator fallback poll */
    long drain_s;             /* gateway shutdown drain window */
    long loops;               /* gateway event loops */
    const char *jwt_secret;   /* NULL if not configured */
    size_t jwt_secret_len;
    const char *jwt_public_key_file; /* NULL if not configured */
    long sse_max_per_user;    /* 0 = no cap */
    const char *cors_origins; /* NULL if none */
    long nats_pending_msgs;   /* per-subscription NATS queue before drops (0: the bus default) */
    long nats_replicas;       /* replicas of the JetStream stream when this process creates it */
    tb_log_level log_level;
    const char *apply_hook;   /* command run for each mutation and deploy; NULL if none */
    long apply_timeout_s;     /* the hook is killed after this long */
    long lease_s;             /* a claim older than this is recovered (0 = store default) */
    const char *worker_id;    /* who holds this process's claims; NULL: derived (cmd/) */
    long retention_s;         /* settled mutations older than this are pruned (0 = never) */
    char *owned_secret;       /* secret read from TOPOBUS_JWT_SECRET_FILE */
} tb_config_t;

typedef enum tb_opt_type {
    TB_OPT_STRING, /* const char * */
    TB_OPT_LONG,   /* long within [min, max] */
    TB_OPT_BOOL,   /* bool, a flag without a value */
} tb_opt_type;

/** One option of a subcommand: a flag writing into the subcommand's own struct. */
typedef struct tb_opt {
    const char *flag; /* "--count" */
    tb_opt_type type;
    size_t offset; /* into the struct passed as `extra` */
    long min, max; /* TB_OPT_LONG bounds */
    const char *help;
} tb_opt_t;

/** What a subcommand's command line looks like. */
typedef struct tb_cli_spec {
    const char *command;      /* "pub" */
    unsigned settings;        /* TB_SET_* mask */
    bool embedded;            /* true for `serve`: bus default mem:// */
    const tb_opt_t *opts;     /* subcommand options (may be NULL) */
    size_t nopts;
    size_t min_args, max_args; /* positional arguments */
    const char *usage;        /* "TOPIC JSON [--type T]" */
} tb_cli_spec_t;

/**
 * Fills cfg from defaults, the environment and argv (argv[0] is the
 * subcommand name). Positional arguments are stored in args (up to
 * spec->max_args, borrowed from argv) and counted in *nargs. Subcommand
 * options are written into `extra`. On TB_EINVAL, err holds one line naming
 * the setting and what is wrong. `--help` sets *help and returns TB_OK.
 */
tb_status tb_config_load(tb_config_t *cfg, const tb_cli_spec_t *spec, int argc, char **argv,
                         void *extra, const char **args, size_t *nargs, bool *help, char *err,
                         size_t errlen);

/** Frees what cfg owns. Accepts NULL. */
void tb_config_cleanup(tb_config_t *cfg);

/** Writes the help text for spec (usage, options, settings) to fd. */
void tb_config_print_help(const tb_cli_spec_t *spec, int fd);

/** Logs the effective settings of spec's mask at INFO, secrets redacted. */
void tb_config_log(const tb_config_t *cfg, const tb_cli_spec_t *spec);

#endif
