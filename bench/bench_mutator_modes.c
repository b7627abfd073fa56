/*
 * The processes bench_mutator measures (see bench_mutator_modes.h). Each is
 * spawned with its own environment (log level, JWT secret), logs into the
 * target's scratch directory, and is stopped by PID.
 *
 * The signal guard: `live` points at the started target; a fatal signal in
 * any thread kills and reaps that target's PIDs (postgres gets SIGQUIT, its
 * immediate shutdown), removes its scratch directories, and re-raises. The
 * main thread fills in and clears PIDs with SIGINT/SIGTERM/SIGHUP blocked,
 * so the guard never signals a PID that was already reaped. A SIGKILL of the
 * bench itself leaves topobus and nats-server running (postgres is told to
 * quit with its parent by pg_server.c).
 */
#include <pthread.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_mutator_modes.h"
#include "harness.h"
#include "tb/auth.h"
#include "tb/clock.h"

enum { START_MS = 10000, STOP_MS = 10000 };

/* The only mutable global of the bench: read by the signal handler. */
static bench_target_t *volatile live;

static const char *const mode_names[] = {
    [BENCH_SERVE] = "serve",
    [BENCH_NATS_SQLITE] = "nats-sqlite",
    [BENCH_NATS_PG] = "nats-pg",
};

bool bench_mode_parse(const char *name, bench_mode_t *out)
{
    for (size_t i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++) {
        if (strcmp(name, mode_names[i]) == 0) {
            *out = (bench_mode_t)i;
            return true;
        }
    }
    return false;
}

const char *bench_mode_name(bench_mode_t mode)
{
    return mode_names[mode];
}

/* Async-signal-safe from here to on_fatal: kill, waitpid, write, fork, execv, signal, raise. */
static void kill_reap(pid_t pid, int sig)
{
    if (pid <= 0) /* -1 is "not running" for nats; kill(-1) would signal everything */
        return;
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

/* Removes the scratch directories with rm (fork and execv are async-signal-safe). Each path
 * is complete: it is written before `live` is set, or with the guard held off. */
static void remove_scratch(const bench_target_t *t)
{
    const char *argv[6] = {"rm", "-rf", "--"};
    size_t n = 3;
    const char *dirs[] = {t->dir, t->nats.store_dir, t->pg.dir};
    for (size_t i = 0; i < 3; i++) {
        if (strstr(dirs[i], "/tb-") || strstr(dirs[i], "/tb_pg_"))
            argv[n++] = dirs[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execv("/bin/rm", (char **)(void *)(uintptr_t)argv);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

static void on_fatal(int sig)
{
    const char msg[] = "bench_mutator: stopping its processes\n";
    bench_target_t *t = live;
    if (t) {
        ssize_t said = write(2, msg, sizeof msg - 1);
        (void)said; /* nothing to do if stderr is gone */
        kill_reap(t->mutator, SIGKILL);
        kill_reap(t->gateway, SIGKILL);
        kill_reap(t->serve, SIGKILL);
        kill_reap(t->nats.pid, SIGKILL);
        kill_reap(t->pg.pid, SIGQUIT);
        remove_scratch(t);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void bench_guard_install(void)
{
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], on_fatal);
}

/* Blocks the asynchronous signals the guard handles (restore with *old). */
static void guard_hold(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void guard_release(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Stops *pid (SIGTERM, then SIGKILL) and clears it without a window for the guard. */
static void stop_pid(pid_t *pid)
{
    sigset_t old;
    guard_hold(&old);
    tb_test_stop(*pid, SIGTERM, STOP_MS);
    *pid = 0;
    guard_release(&old);
}

/* Starts `topobus args...` logging at level into <dir>/<name>.log; the PID is stored in *pid
 * with the guard held off, so it is never running unseen. */
static bool spawn(bench_target_t *t, pid_t *pid, const char *name, const char *level,
                  const char *const *args)
{
    char log[320], lvl[48], sec[160];
    snprintf(log, sizeof log, "%s/%s.log", t->dir, name);
    snprintf(lvl, sizeof lvl, "TOPOBUS_LOG=%s", level);
    snprintf(sec, sizeof sec, "TOPOBUS_JWT_SECRET=%s", t->secret);
    const char *const env[] = {lvl, sec, "TOPOBUS_JWT_SECRET_FILE=", NULL};
    const char *argv[16] = {TB_TOPOBUS_BIN};
    for (size_t i = 0; args[i] && i + 2 < sizeof argv / sizeof argv[0]; i++)
        argv[i + 1] = args[i];
    sigset_t old;
    guard_hold(&old);
    pid_t p = tb_test_spawn_env(argv, env, log);
    *pid = p > 0 ? p : 0;
    guard_release(&old);
    if (p <= 0)
        fprintf(stderr, "bench_mutator: cannot start topobus %s\n", name);
    return p > 0;
}

/* A fresh secret and an admin token signed with it, valid for a day. */
static bool make_credentials(bench_target_t *t)
{
    snprintf(t->secret, sizeof t->secret, "bench-%ld-%lld-0123456789abcdef0123456789abcdef",
             (long)getpid(), tb_test_now_ms());
    tb_auth_t *auth = NULL;
    char err[256], *token = NULL;
    unsigned roles = 0;
    bool ok = tb_auth_create(&auth, t->secret, strlen(t->secret), NULL, err, sizeof err) == TB_OK &&
              tb_auth_roles_parse("admin", &roles) == TB_OK &&
              tb_auth_mint(auth, "bench", roles, 24 * 3600, tb_clock_wall(), &token) == TB_OK &&
              strlen(token) < sizeof t->token;
    if (ok)
        snprintf(t->token, sizeof t->token, "%s", token);
    free(token);
    tb_auth_destroy(auth);
    return ok;
}

/* True once <dir>/<name>.log holds text. */
static bool wait_log(const bench_target_t *t, const char *name, const char *text)
{
    char log[320];
    snprintf(log, sizeof log, "%s/%s.log", t->dir, name);
    for (long long end = tb_test_now_ms() + START_MS; tb_test_now_ms() < end;
         tb_test_sleep_ms(20)) {
        char *got = tb_test_read_file(log, NULL);
        bool found = got && strstr(got, text);
        free(got);
        if (found)
            return true;
    }
    fprintf(stderr, "bench_mutator: no \"%s\" in %s\n", text, log);
    return false;
}

static bool start_serve(bench_target_t *t, const char *listen, const char *db)
{
    const char *args[] = {"serve", "--listen", listen, "--db", db, "--drain", "0", NULL};
    return spawn(t, &t->serve, "serve", "warn", args);
}

/* nats-server -js, then the gateway (which migrates the store first), then the mutator. */
static bool start_split(bench_target_t *t, const char *listen, const char *db, int port)
{
    sigset_t old;
    guard_hold(&old);
    bool ok = tb_test_nats_start(&t->nats, 0, true);
    guard_release(&old);
    if (!ok) {
        fprintf(stderr, "bench_mutator: nats-server -js did not start\n");
        return false;
    }
    const char *gw[] = {"gateway", "--listen", listen,    "--bus", t->nats.url,
                        "--db",    db,         "--drain", "0",     NULL};
    if (!spawn(t, &t->gateway, "gateway", "warn", gw) || !tb_test_wait_port(port, START_MS))
        return false;
    /* Info level for its one "listening" line: the worker logs nothing per mutation. */
    const char *mut[] = {"mutator", "--bus", t->nats.url, "--db", db, NULL};
    return spawn(t, &t->mutator, "mutator", "info", mut) &&
           wait_log(t, "mutator", "listening on the nats bus");
}

static bool start_pg(bench_target_t *t)
{
    sigset_t old;
    guard_hold(&old);
    bool ok = tb_test_pg_start(&t->pg);
    guard_release(&old);
    if (!ok)
        fprintf(stderr, "bench_mutator: the private PostgreSQL server did not start\n");
    return ok;
}

/* Every process stopped, the servers' scratch removed; t->dir is kept. */
static void stop_all(bench_target_t *t)
{
    stop_pid(&t->mutator);
    stop_pid(&t->gateway);
    stop_pid(&t->serve);
    sigset_t old;
    guard_hold(&old);
    tb_test_nats_stop(&t->nats);
    tb_test_pg_stop(&t->pg);
    guard_release(&old);
}

bool bench_target_start(bench_target_t *t, bench_mode_t mode)
{
    memset(t, 0, sizeof *t);
    t->mode = mode;
    t->nats.pid = -1;
    h_dir_make(t->dir, sizeof t->dir, "bench");
    if (!make_credentials(t)) {
        fprintf(stderr, "bench_mutator: cannot mint a token\n");
        h_dir_remove(t->dir);
        return false;
    }
    char db[400], listen[64];
    int port = tb_test_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(t->base, sizeof t->base, "http://127.0.0.1:%d", port);
    live = t;
    bool ok;
    if (mode == BENCH_SERVE) {
        snprintf(db, sizeof db, "sqlite:%s/topobus.db", t->dir);
        ok = start_serve(t, listen, db) && tb_test_wait_port(port, START_MS);
    } else if (mode == BENCH_NATS_SQLITE) {
        snprintf(db, sizeof db, "sqlite:%s/topobus.db", t->dir);
        ok = start_split(t, listen, db, port);
    } else {
        ok = start_pg(t);
        snprintf(db, sizeof db, "%s", t->pg.url);
        ok = ok && start_split(t, listen, db, port);
    }
    if (!ok) {
        stop_all(t);
        live = NULL;
        fprintf(stderr, "bench_mutator: %s did not start; logs kept in %s\n", bench_mode_name(mode),
                t->dir);
    }
    return ok;
}

void bench_target_stop(bench_target_t *t)
{
    stop_all(t);
    live = NULL;
    h_dir_remove(t->dir);
}

/* utime + stime of pid in clock ticks, 0 if it is gone; *ppid (may be NULL) gets its parent. */
static long long pid_ticks(pid_t pid, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which ends with the last ')'. */
    const char *p = strrchr(buf, ')');
    int parent = 0;
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &parent, &ut,
                     &st) != 3)
        return 0;
    if (ppid)
        *ppid = parent;
    return (long long)(ut + st);
}

/* pid's ticks plus those of its children (PostgreSQL backends are the postmaster's). */
static long long tree_ticks(pid_t pid)
{
    if (pid <= 0)
        return 0;
    long long ticks = pid_ticks(pid, NULL);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        pid_t child = (pid_t)atoi(e->d_name), parent = 0;
        if (child > 0 && child != pid) {
            long long t = pid_ticks(child, &parent);
            if (parent == pid)
                ticks += t;
        }
    }
    if (d)
        closedir(d);
    return ticks;
}

long long bench_target_cpu_ms(const bench_target_t *t)
{
    long long ticks = pid_ticks(t->serve, NULL) + pid_ticks(t->gateway, NULL) +
                      pid_ticks(t->mutator, NULL) + pid_ticks(t->nats.pid, NULL) +
                      tree_ticks(t->pg.pid);
    return ticks * 1000 / sysconf(_SC_CLK_TCK);
}
