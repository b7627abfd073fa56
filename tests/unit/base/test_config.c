/* The settings loader: precedence, validation errors, subcommand options, secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "tb/config.h"

typedef struct sub_opts {
    const char *type;
    long count;
    bool follow;
} sub_opts_t;

static const tb_opt_t opts[] = {
    {"--type", TB_OPT_STRING, offsetof(sub_opts_t, type), 0, 0, "event type"},
    {"--count", TB_OPT_LONG, offsetof(sub_opts_t, count), 1, 1000, "stop after N"},
    {"--follow", TB_OPT_BOOL, offsetof(sub_opts_t, follow), 0, 0, "keep going"},
};

static const tb_cli_spec_t spec = {
    .command = "demo",
    .settings = TB_SET_LISTEN | TB_SET_BUS | TB_SET_KEEPALIVE | TB_SET_JWT | TB_SET_LOG,
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
    .min_args = 1,
    .max_args = 2,
    .usage = "ARG [ARG2]",
};

static const char *env_names[] = {"TOPOBUS_LISTEN", "TOPOBUS_BUS", "TOPOBUS_KEEPALIVE_S",
                                  "TOPOBUS_JWT_SECRET", "TOPOBUS_JWT_SECRET_FILE", "TOPOBUS_LOG",
                                  "TOPOBUS_DB"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
    return 0;
}

static tb_status load(int argc, char **argv, tb_config_t *cfg, sub_opts_t *so, const char **args,
                      size_t *nargs, char *err)
{
    bool help;
    memset(so, 0, sizeof *so);
    return tb_config_load(cfg, &spec, argc, argv, so, args, nargs, &help, err, 256);
}

static void test_config_defaults_env_then_flags(void **state)
{
    (void)state;
    tb_config_t cfg;
    sub_opts_t so;
    const char *args[2];
    size_t nargs;
    char err[256];
    char *argv1[] = {"demo", "x", NULL};
    assert_int_equal(load(2, argv1, &cfg, &so, args, &nargs, err), TB_OK);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.bus_url, "nats://127.0.0.1:4222");
    assert_string_equal(cfg.db_url, "sqlite:topobus.db");
    assert_int_equal(cfg.keepalive_s, 15);
    assert_int_equal(cfg.sse_max_per_user, 5);
    assert_true(cfg.loops >= 1);
    assert_null(cfg.jwt_secret);
    assert_int_equal(nargs, 1);
    assert_string_equal(args[0], "x");
    tb_config_cleanup(&cfg);

    setenv("TOPOBUS_KEEPALIVE_S", "30", 1);
    setenv("TOPOBUS_LISTEN", "0.0.0.0:9000", 1);
    setenv("TOPOBUS_LOG", "debug", 1);
    char *argv2[] = {"demo", "--keepalive", "2", "a", "--type=t.x", "b", "--count", "3",
                     "--follow", NULL};
    assert_int_equal(load(9, argv2, &cfg, &so, args, &nargs, err), TB_OK);
    assert_int_equal(cfg.keepalive_s, 2);           /* flag beats environment */
    assert_string_equal(cfg.listen, "0.0.0.0:9000"); /* environment beats default */
    assert_int_equal(cfg.log_level, TB_LOG_DEBUG);
    assert_string_equal(so.type, "t.x");
    assert_int_equal(so.count, 3);
    assert_true(so.follow);
    assert_int_equal(nargs, 2);
    tb_config_cleanup(&cfg);
}

static void expect_error(int argc, char **argv, const char *fragment)
{
    tb_config_t cfg;
    sub_opts_t so;
    const char *args[2];
    size_t nargs;
    char err[256];
    assert_int_equal(load(argc, argv, &cfg, &so, args, &nargs, err), TB_EINVAL);
    if (!strstr(err, fragment))
        fail_msg("error '%s' does not mention '%s'", err, fragment);
}

static void test_config_rejects_bad_values_naming_the_setting(void **state)
{
    (void)state;
    char *a1[] = {"demo", "x", "--keepalive", "0"};
    expect_error(4, a1, "--keepalive");
    char *a2[] = {"demo", "x", "--keepalive", "abc"};
    expect_error(4, a2, "--keepalive");
    char *a3[] = {"demo", "x", "--listen", "localhost"};
    expect_error(4, a3, "--listen");
    char *a4[] = {"demo", "x", "--listen", "127.0.0.1:70000"};
    expect_error(4, a4, "--listen");
    char *a5[] = {"demo", "x", "--bus", "redis://x"};
    expect_error(4, a5, "--bus");
    char *a6[] = {"demo", "x", "--db", "x.db"};
    expect_error(4, a6, "--db"); /* not in this command's mask: unknown */
    char *a7[] = {"demo", "x", "--nope"};
    expect_error(3, a7, "--nope");
    char *a8[] = {"demo"};
    expect_error(1, a8, "missing");
    char *a9[] = {"demo", "a", "b", "c"};
    expect_error(4, a9, "unexpected argument 'c'");
    char *a10[] = {"demo", "x", "--keepalive"};
    expect_error(3, a10, "needs a value");
    char *a11[] = {"demo", "x", "--follow=yes"};
    expect_error(3, a11, "takes no value");
    char *a12[] = {"demo", "x", "--count", "0"};
    expect_error(4, a12, "--count");
    char *a13[] = {"demo", "x", "--listen", "::1:80"};
    expect_error(4, a13, "--listen");
    setenv("TOPOBUS_KEEPALIVE_S", "-5", 1);
    char *a14[] = {"demo", "x"};
    expect_error(2, a14, "TOPOBUS_KEEPALIVE_S");
    unsetenv("TOPOBUS_KEEPALIVE_S");
    setenv("TOPOBUS_LOG", "chatty", 1);
    expect_error(2, a14, "TOPOBUS_LOG");
}

static void test_config_listen_accepts_ipv6_and_port_zero(void **state)
{
    (void)state;
    tb_config_t cfg;
    sub_opts_t so;
    const char *args[2];
    size_t nargs;
    char err[256];
    char *argv[] = {"demo", "--listen", "[::1]:0", "--", "--not-an-option"};
    assert_int_equal(load(5, argv, &cfg, &so, args, &nargs, err), TB_OK);
    assert_string_equal(cfg.listen, "[::1]:0");
    assert_string_equal(args[0], "--not-an-option");
    tb_config_cleanup(&cfg);
}

static void test_config_secret_from_env_or_file(void **state)
{
    (void)state;
    tb_config_t cfg;
    sub_opts_t so;
    const char *args[2];
    size_t nargs;
    char err[256];
    char *argv[] = {"demo", "x"};
    setenv("TOPOBUS_JWT_SECRET", "s3cret", 1);
    assert_int_equal(load(2, argv, &cfg, &so, args, &nargs, err), TB_OK);
    assert_string_equal(cfg.jwt_secret, "s3cret");
    assert_int_equal(cfg.jwt_secret_len, 6);
    tb_config_cleanup(&cfg);

    char path[] = "/tmp/tb_secret_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "from-file\n", 10), 10);
    close(fd);
    setenv("TOPOBUS_JWT_SECRET_FILE", path, 1);
    assert_int_equal(load(2, argv, &cfg, &so, args, &nargs, err), TB_EINVAL);
    assert_non_null(strstr(err, "both set"));
    unsetenv("TOPOBUS_JWT_SECRET");
    assert_int_equal(load(2, argv, &cfg, &so, args, &nargs, err), TB_OK);
    assert_string_equal(cfg.jwt_secret, "from-file");
    assert_int_equal(cfg.jwt_secret_len, 9);
    tb_config_cleanup(&cfg);
    assert_null(cfg.jwt_secret);

    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    assert_int_equal(load(2, argv, &cfg, &so, args, &nargs, err), TB_EINVAL);
    assert_non_null(strstr(err, "empty"));
    unlink(path);
    assert_int_equal(load(2, argv, &cfg, &so, args, &nargs, err), TB_EINVAL);
    assert_non_null(strstr(err, "TOPOBUS_JWT_SECRET_FILE"));
    unsetenv("TOPOBUS_JWT_SECRET_FILE");
}

static void test_config_embedded_bus_default_and_help(void **state)
{
    (void)state;
    tb_cli_spec_t serve = spec;
    serve.command = "serve";
    serve.embedded = true;
    serve.min_args = 0;
    tb_config_t cfg;
    sub_opts_t so;
    const char *args[2];
    size_t nargs;
    bool help;
    char err[256];
    char *argv[] = {"serve", "--help"};
    assert_int_equal(tb_config_load(&cfg, &serve, 2, argv, &so, args, &nargs, &help, err, 256),
                     TB_OK);
    assert_true(help);
    assert_string_equal(cfg.bus_url, "mem://");
    tb_config_cleanup(&cfg);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    tb_config_print_help(&serve, fds[1]);
    close(fds[1]);
    char out[4096] = {0};
    ssize_t n = read(fds[0], out, sizeof out - 1);
    close(fds[0]);
    assert_true(n > 0);
    assert_non_null(strstr(out, "usage: topobus serve"));
    assert_non_null(strstr(out, "TOPOBUS_KEEPALIVE_S"));
    assert_non_null(strstr(out, "--count"));
    assert_null(strstr(out, "TOPOBUS_DB")); /* not in the mask */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_config_defaults_env_then_flags, clear_env),
        cmocka_unit_test_setup(test_config_rejects_bad_values_naming_the_setting, clear_env),
        cmocka_unit_test_setup(test_config_listen_accepts_ipv6_and_port_zero, clear_env),
        cmocka_unit_test_setup(test_config_secret_from_env_or_file, clear_env),
        cmocka_unit_test_setup(test_config_embedded_bus_default_and_help, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
