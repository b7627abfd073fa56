/*
 * `topobus gateway` and `topobus token` as child processes of a test (see
 * gateway_proc.h). Every wait is bounded; every child is stopped by PID.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gateway_proc.h"
#include "proc.h"

enum { START_TIMEOUT_MS = 15000, MAX_ENV = 32, MAX_ARGS = 32, MAX_LIVE = 64 };

/*
 * Gateways started and not yet stopped. A failed assertion leaves its test
 * before the test's own cleanup; at exit these are killed by PID and their
 * directories removed, so a failing test never leaves a gateway behind.
 */
static struct {
    pid_t pid;
    char dir[64];
} live[MAX_LIVE]; /* copies: a test's own struct may be gone with its stack frame */

/* Records g's current pid under its directory, or forgets the directory (on false). */
static void track(const tb_test_gateway_t *g, bool on)
{
    size_t slot = MAX_LIVE;
    for (size_t i = 0; i < MAX_LIVE; i++) {
        if (strcmp(live[i].dir, g->dir) == 0) {
            slot = i;
            break;
        }
        if (slot == MAX_LIVE && live[i].dir[0] == '\0')
            slot = i;
    }
    if (slot == MAX_LIVE)
        return;
    live[slot].pid = g->pid;
    snprintf(live[slot].dir, sizeof live[slot].dir, "%s", on ? g->dir : "");
}

static void reap_live(void)
{
    for (size_t i = 0; i < MAX_LIVE; i++) {
        if (!live[i].dir[0])
            continue;
        tb_test_gateway_t g;
        memset(&g, 0, sizeof g);
        g.pid = live[i].pid;
        snprintf(g.dir, sizeof g.dir, "%s", live[i].dir);
        tb_test_gateway_cleanup(&g);
    }
}

const char *tb_test_topobus(void)
{
    const char *p = getenv("TB_TOPOBUS");
    if (!p || !*p) {
        fprintf(stderr, "TB_TOPOBUS is not set (CTest sets it to the topobus binary)\n");
        abort();
    }
    return p;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    if (!text)
        abort();
    if (f) {
        size_t n;
        while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
            len += n;
            if (cap - len - 1 == 0) {
                cap *= 2;
                text = realloc(text, cap);
                if (!text)
                    abort();
            }
        }
        fclose(f);
    }
    text[len] = '\0';
    return text;
}

char *tb_test_gateway_log(const tb_test_gateway_t *g)
{
    return read_file(g->log_path);
}

static bool has_name(const char *const *env, const char *entry)
{
    size_t len = strcspn(entry, "=");
    for (size_t i = 0; env && env[i]; i++) {
        if (strncmp(env[i], entry, len) == 0 && env[i][len] == '=')
            return true;
    }
    return false;
}

/* The child's environment: a clean auth setup unless opts say otherwise. */
static void build_env(const tb_test_gateway_opts_t *o, char *secret_buf, size_t buflen,
                      const char *env[MAX_ENV])
{
    size_t n = 0;
    for (size_t i = 0; o->env && o->env[i] && n < MAX_ENV - 8; i++)
        env[n++] = o->env[i];
    const char *secret = o->secret ? o->secret : TB_TEST_SECRET;
    snprintf(secret_buf, buflen, "TOPOBUS_JWT_SECRET=%s", secret);
    const char *base[] = {secret_buf, "TOPOBUS_JWT_SECRET_FILE=", "TOPOBUS_JWT_PUBLIC_KEY_FILE=",
                          "TOPOBUS_CORS_ORIGINS=", "TOPOBUS_LOG="};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        if (!has_name(o->env, base[i]))
            env[n++] = base[i];
    }
    env[n] = NULL;
}

/* argv for `topobus gateway` with opts; strings live in g or opts. */
static void build_argv(const tb_test_gateway_opts_t *o, tb_test_gateway_t *g, char *loops,
                       const char *argv[MAX_ARGS])
{
    size_t n = 0;
    argv[n++] = tb_test_topobus();
    argv[n++] = "gateway";
    argv[n++] = "--listen";
    argv[n++] = o->listen ? o->listen : "127.0.0.1:0";
    argv[n++] = "--bus";
    argv[n++] = o->bus ? o->bus : "none";
    argv[n++] = "--db";
    argv[n++] = o->db ? o->db : g->db_url;
    snprintf(loops, 16, "%d", o->loops > 0 ? o->loops : 2);
    argv[n++] = "--loops";
    argv[n++] = loops;
    for (size_t i = 0; o->args && o->args[i] && n < MAX_ARGS - 1; i++)
        argv[n++] = o->args[i];
    argv[n] = NULL;
}

static pid_t spawn_gateway(tb_test_gateway_t *g, const tb_test_gateway_opts_t *o)
{
    char secret[512], loops[16];
    const char *env[MAX_ENV], *argv[MAX_ARGS];
    build_env(o, secret, sizeof secret, env);
    build_argv(o, g, loops, argv);
    return tb_test_spawn_env(argv, env, g->log_path);
}

static bool make_dir(tb_test_gateway_t *g)
{
    memset(g, 0, sizeof *g);
    g->pid = -1;
    snprintf(g->dir, sizeof g->dir, "/tmp/tb-gw-XXXXXX");
    if (!mkdtemp(g->dir))
        return false;
    snprintf(g->log_path, sizeof g->log_path, "%s/gateway.log", g->dir);
    snprintf(g->db_url, sizeof g->db_url, "sqlite:%s/gateway.db", g->dir);
    return true;
}

/* Reads "listening on ADDR" from the first line; false if it is not there (yet). */
static bool parse_address(tb_test_gateway_t *g, const char *log)
{
    const char *eol = strchr(log, '\n');
    const char *at = strstr(log, "listening on ");
    if (!eol || !at || at > eol)
        return false;
    at += strlen("listening on ");
    size_t len = strcspn(at, " \n");
    snprintf(g->address, sizeof g->address, "%.*s", (int)len, at);
    const char *colon = strrchr(g->address, ':');
    if (!colon)
        return false;
    g->port = atoi(colon + 1);
    const char *h = g->address;
    size_t hlen = (size_t)(colon - h);
    if (h[0] == '[') {
        h++;
        hlen -= 2;
    }
    snprintf(g->host, sizeof g->host, "%.*s", (int)hlen, h);
    snprintf(g->url, sizeof g->url, "http://%s", g->address);
    return g->port > 0;
}

static bool exited(pid_t pid)
{
    int status;
    return waitpid(pid, &status, WNOHANG) == pid;
}

bool tb_test_gateway_start(tb_test_gateway_t *g, const tb_test_gateway_opts_t *opts)
{
    tb_test_gateway_opts_t none = {0};
    const tb_test_gateway_opts_t *o = opts ? opts : &none;
    if (!make_dir(g))
        return false;
    static bool registered;
    if (!registered) {
        atexit(reap_live);
        registered = true;
    }
    g->pid = spawn_gateway(g, o);
    track(g, true);
    if (g->pid < 0)
        return false;
    long long deadline = tb_test_now_ms() + START_TIMEOUT_MS;
    bool ok = false;
    while (tb_test_now_ms() < deadline) {
        char *log = tb_test_gateway_log(g);
        ok = strstr(log, "serving on ") && parse_address(g, log);
        free(log);
        if (ok)
            return true;
        if (exited(g->pid)) {
            g->pid = -1;
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    char *log = tb_test_gateway_log(g);
    fprintf(stderr, "gateway did not start; its log:\n%s\n", log);
    free(log);
    if (g->pid > 0)
        tb_test_stop(g->pid, SIGKILL, 2000);
    g->pid = -1;
    track(g, true); /* the directory stays registered until cleanup */
    return false;
}

int tb_test_gateway_stop(tb_test_gateway_t *g, int sig, int timeout_ms)
{
    if (g->pid <= 0)
        return -1;
    int status = tb_test_stop(g->pid, sig, timeout_ms);
    g->pid = -1;
    track(g, true);
    return status;
}

void tb_test_gateway_cleanup(tb_test_gateway_t *g)
{
    tb_test_gateway_stop(g, SIGKILL, 2000);
    if (!g->dir[0])
        return;
    DIR *d = opendir(g->dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", g->dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(g->dir);
    track(g, false);
    g->dir[0] = '\0';
}

typedef struct log_wait {
    const tb_test_gateway_t *g;
    const char *needle;
} log_wait_t;

static bool log_has(void *ud)
{
    log_wait_t *w = ud;
    char *log = tb_test_gateway_log(w->g);
    bool found = strstr(log, w->needle) != NULL;
    free(log);
    return found;
}

bool tb_test_gateway_wait_log(const tb_test_gateway_t *g, const char *needle, int timeout_ms)
{
    log_wait_t w = {g, needle};
    return tb_test_wait_until(log_has, &w, timeout_ms);
}

const char *tb_test_gateway_url(const tb_test_gateway_t *g, const char *path, char *out,
                                size_t outlen)
{
    snprintf(out, outlen, "%s%s", g->url, path);
    return out;
}

/* Waits for pid to exit by itself within timeout_ms; -1 (after SIGKILL) if it does not. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    long long deadline = tb_test_now_ms() + timeout_ms;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (tb_test_now_ms() >= deadline) {
            tb_test_stop(pid, SIGKILL, 2000);
            return -1;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int tb_test_gateway_run(const tb_test_gateway_opts_t *opts, char *out, size_t outlen,
                        int timeout_ms)
{
    tb_test_gateway_t g;
    if (!make_dir(&g))
        return -1;
    pid_t pid = spawn_gateway(&g, opts);
    int status = pid > 0 ? wait_exit(pid, timeout_ms) : -1;
    char *log = tb_test_gateway_log(&g);
    snprintf(out, outlen, "%s", log);
    free(log);
    tb_test_gateway_cleanup(&g);
    return status;
}

char *tb_test_token(const char *secret, const char *sub, const char *roles, long ttl_s)
{
    char dir[] = "/tmp/tb-token-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char out_path[64], ttl[32], env_secret[512];
    snprintf(out_path, sizeof out_path, "%s/token", dir);
    snprintf(ttl, sizeof ttl, "%ld", ttl_s);
    snprintf(env_secret, sizeof env_secret, "TOPOBUS_JWT_SECRET=%s",
             secret ? secret : TB_TEST_SECRET);
    const char *argv[] = {tb_test_topobus(), "token", "--sub", sub, "--role", roles, "--ttl",
                          ttl, NULL};
    const char *env[] = {env_secret, "TOPOBUS_JWT_SECRET_FILE=", NULL};
    pid_t pid = tb_test_spawn_env(argv, env, out_path);
    int status = pid > 0 ? wait_exit(pid, 10000) : -1;
    char *token = read_file(out_path);
    unlink(out_path);
    rmdir(dir);
    token[strcspn(token, "\n")] = '\0';
    if (status != 0 || strncmp(token, "eyJ", 3) != 0) {
        fprintf(stderr, "topobus token failed (status %d): %s\n", status, token);
        abort();
    }
    return token;
}

long long tb_test_cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *stat = read_file(path);
    /* Fields after the command name (which may hold spaces) start after the last ')'. */
    const char *p = strrchr(stat, ')');
    long long utime = -1, stime = -1;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &utime,
                    &stime) == 2) {
        free(stat);
        return utime + stime;
    }
    free(stat);
    return -1;
}
