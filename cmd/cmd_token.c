/*
 * `topobus token --sub S --role R [--ttl SECONDS]`: prints an HS256 token
 * signed with the configured secret, for scripts and first steps.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cmd_int.h"
#include "tb/auth.h"
#include "tb/clock.h"
#include "tb/config.h"

typedef struct token_opts {
    const char *sub;
    const char *role;
    long ttl_s;
} token_opts_t;

static const tb_opt_t token_options[] = {
    {"--sub", TB_OPT_STRING, offsetof(token_opts_t, sub), 0, 0, "subject (user or service name)"},
    {"--role", TB_OPT_STRING, offsetof(token_opts_t, role), 0, 0,
     "viewer, editor, publisher, admin, or a comma-separated list"},
    {"--ttl", TB_OPT_LONG, offsetof(token_opts_t, ttl_s), 1, 31L * 24 * 3600,
     "seconds until the token expires (default 3600)"},
};

static const tb_cli_spec_t token_spec = {
    .command = "token",
    .settings = TB_SET_JWT | TB_SET_LOG,
    .opts = token_options,
    .nopts = TB_ARRAY_LEN(token_options),
    .usage = "--sub S --role R [--ttl SECONDS]",
};

int tb__cmd_token(int argc, char **argv)
{
    tb_config_t cfg;
    token_opts_t opts = {.ttl_s = 3600};
    const char *args[1];
    size_t nargs;
    bool help;
    char err[512];
    if (tb_config_load(&cfg, &token_spec, argc, argv, &opts, args, &nargs, &help, err, sizeof err)) {
        tb__cmd_error("%s", err);
        return TB_EXIT_USAGE;
    }
    int rc = TB_EXIT_USAGE;
    tb_auth_t *auth = NULL;
    unsigned roles = 0;
    char *token = NULL;
    if (help) {
        tb_config_print_help(&token_spec, 1);
        rc = TB_EXIT_OK;
        goto out;
    }
    if (!opts.sub || !opts.role) {
        tb__cmd_error("token: --sub and --role are required");
        goto out;
    }
    if (tb_auth_roles_parse(opts.role, &roles)) {
        tb__cmd_error("--role: '%s' is not viewer, editor, publisher, admin or a list of them",
                      opts.role);
        goto out;
    }
    if (!cfg.jwt_secret) {
        tb__cmd_error("TOPOBUS_JWT_SECRET: not set (token signs with the shared secret)");
        goto out;
    }
    if (tb_auth_create(&auth, cfg.jwt_secret, cfg.jwt_secret_len, NULL, err, sizeof err)) {
        tb__cmd_error("%s", err);
        goto out;
    }
    if (tb_auth_mint(auth, opts.sub, roles, opts.ttl_s, tb_clock_wall(), &token)) {
        tb__cmd_error("--sub: must be 1 to %d bytes", TB_AUTH_SUB_MAX);
        goto out;
    }
    printf("%s\n", token);
    rc = TB_EXIT_OK;
out:
    free(token);
    tb_auth_destroy(auth);
    tb_config_cleanup(&cfg);
    return rc;
}
