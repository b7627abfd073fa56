/*
 * `topobus gateway` as a real process for integration tests: started with
 * chosen settings in a fresh temporary directory (log file and SQLite
 * database), its bound address read from the first log line, stopped by PID
 * with a bounded wait and its exit status returned. Also tokens minted by
 * `topobus token`. The binary is found through TB_TOPOBUS (set by CTest).
 */
#ifndef TB_TEST_GATEWAY_PROC_H
#define TB_TEST_GATEWAY_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/** The secret tests start gateways with unless they pass another. */
#define TB_TEST_SECRET "topobus-integration-test-secret-0123456789"

typedef struct tb_test_gateway_opts {
    const char *listen;       /* NULL: "127.0.0.1:0" */
    const char *bus;          /* NULL: "none" */
    const char *db;           /* NULL: "sqlite:<dir>/gateway.db" */
    const char *secret;       /* NULL: TB_TEST_SECRET; "": no TOPOBUS_JWT_SECRET at all */
    const char *const *env;   /* more "NAME=value" for the child, NULL-terminated */
    const char *const *args;  /* more arguments after `gateway`, NULL-terminated */
    int loops;                /* 0: 2 */
} tb_test_gateway_opts_t;

typedef struct tb_test_gateway {
    pid_t pid;          /* -1 once stopped */
    int port;
    char host[64];      /* the bound host, without brackets ("127.0.0.1", "::1") */
    char address[96];   /* as logged: HOST:PORT or [V6]:PORT */
    char url[128];      /* "http://" + address */
    char dir[64];       /* temporary directory, removed by tb_test_gateway_cleanup */
    char log_path[128];
    char db_url[160];
} tb_test_gateway_t;

/** The topobus binary (TB_TOPOBUS); aborts the test if it is not set. */
const char *tb_test_topobus(void);

/**
 * Starts the gateway and waits (bounded) until its first log line names the
 * bound address and it logs "serving on". On false the process is stopped
 * and the log printed to stderr; call tb_test_gateway_cleanup in any case.
 */
bool tb_test_gateway_start(tb_test_gateway_t *g, const tb_test_gateway_opts_t *opts);

/**
 * Sends sig and reaps the process (SIGKILL after timeout_ms). Returns the
 * wait status, or -1 if it was not running. The directory stays for reading.
 */
int tb_test_gateway_stop(tb_test_gateway_t *g, int sig, int timeout_ms);

/** Kills the process if still running and removes the directory. Idempotent. */
void tb_test_gateway_cleanup(tb_test_gateway_t *g);

/** The log so far (new string, NUL-terminated). */
char *tb_test_gateway_log(const tb_test_gateway_t *g);

/** True once the log contains needle, false after timeout_ms. */
bool tb_test_gateway_wait_log(const tb_test_gateway_t *g, const char *needle, int timeout_ms);

/** base url + path into out (path includes any query string). */
const char *tb_test_gateway_url(const tb_test_gateway_t *g, const char *path, char *out,
                                size_t outlen);

/**
 * Runs `topobus gateway` with opts (it is expected to exit by itself, e.g. on
 * bad configuration) and returns its wait status; its output (stdout and
 * stderr) goes to out. Kills it after timeout_ms and returns -1.
 */
int tb_test_gateway_run(const tb_test_gateway_opts_t *opts, char *out, size_t outlen,
                        int timeout_ms);

/**
 * A token minted by `topobus token --sub sub --role roles --ttl ttl_s` with
 * secret (NULL: TB_TEST_SECRET). New string; aborts the test on failure.
 */
char *tb_test_token(const char *secret, const char *sub, const char *roles, long ttl_s);

/** utime + stime of pid in clock ticks (from /proc/<pid>/stat), or -1. */
long long tb_test_cpu_ticks(pid_t pid);

#endif
