/*
 * A PostgreSQL server for tests (see pg_server.h). The postgres binary is
 * run directly as our child (not daemonised by pg_ctl), so the test owns
 * its PID, reaps it, and the server gets SIGQUIT (immediate shutdown, which
 * ends its sessions too) if the test process dies first. Every wait has a
 * deadline.
 */
#define _GNU_SOURCE /* setgroups, prctl, nftw */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_server.h"
#include "proc.h"

enum { READY_TIMEOUT_MS = 15000, INITDB_TIMEOUT_MS = 60000, STOP_TIMEOUT_MS = 10000 };

/* TB_PG_BINDIR, else the newest /usr/lib/postgresql/<N>/bin holding postgres. */
static bool find_bindir(char *out, size_t cap)
{
    const char *env = getenv("TB_PG_BINDIR");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return true;
    }
    DIR *d = opendir("/usr/lib/postgresql");
    int best = -1;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            int v = atoi(e->d_name);
            char probe[512];
            snprintf(probe, sizeof probe, "/usr/lib/postgresql/%s/bin/postgres", e->d_name);
            if (v > best && access(probe, X_OK) == 0)
                best = v;
        }
        closedir(d);
    }
    if (best < 0) {
        fprintf(stderr, "pg_server: no PostgreSQL server found (install the `postgresql` "
                        "package: scripts/deps.sh test, or set TB_PG_BINDIR)\n");
        return false;
    }
    snprintf(out, cap, "/usr/lib/postgresql/%d/bin", best);
    return true;
}

/* Forks and runs argv as the postgres user when we are root (PostgreSQL
 * refuses to run as root), output appended to log. */
static pid_t launch(const char *const argv[], const char *log, bool die_with_parent)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (geteuid() == 0 && !pw) {
        fprintf(stderr, "pg_server: running as root needs the `postgres` system user\n");
        return -1;
    }
    uid_t uid = pw ? pw->pw_uid : 0;
    gid_t gid = pw ? pw->pw_gid : 0;
    pid_t parent = getpid();
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror("pg_server: log");
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        if (pw && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
            _exit(126);
        /* After the credential change, which would clear it. */
        if (die_with_parent && (prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || getppid() != parent))
            _exit(126);
        /* execv's argv is char *const[]; it does not write to the strings. */
        execv(argv[0], (char **)(void *)(uintptr_t)argv);
        _exit(127);
    }
    close(fd);
    if (pid < 0)
        perror("pg_server: fork");
    return pid;
}

static bool own_dir(const char *path)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (pw && chown(path, pw->pw_uid, pw->pw_gid) != 0) {
        perror("pg_server: chown");
        return false;
    }
    return true;
}

static bool initdb(const tb_test_pg_t *pg, const char *bindir)
{
    char exe[512], data[300], log[300];
    snprintf(exe, sizeof exe, "%s/initdb", bindir);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(log, sizeof log, "%s/initdb.log", pg->dir);
    const char *const argv[] = {exe,     "-D",         data,       "-A",
                                "trust", "-U",         "postgres", "-E",
                                "UTF8",  "--locale=C", "-N",       "--no-instructions",
                                NULL};
    pid_t pid = launch(argv, log, true);
    if (pid < 0)
        return false;
    long long deadline = tb_test_now_ms() + INITDB_TIMEOUT_MS;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (tb_test_now_ms() > deadline) {
            tb_test_stop(pid, SIGKILL, 1000);
            fprintf(stderr, "pg_server: initdb did not finish (log %s)\n", log);
            return false;
        }
        tb_test_sleep_ms(20);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "pg_server: initdb failed (log %s)\n", log);
        return false;
    }
    return true;
}

static bool launch_server(tb_test_pg_t *pg)
{
    char bindir[400], exe[512], data[300], log[300], port[16];
    if (!find_bindir(bindir, sizeof bindir))
        return false;
    snprintf(exe, sizeof exe, "%s/postgres", bindir);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(log, sizeof log, "%s/server.log", pg->dir);
    snprintf(port, sizeof port, "%d", pg->port);
    /* Durability is not under test: fsync off keeps start-up and the
     * concurrency tests fast. */
    const char *const argv[] = {exe,
                                "-D",
                                data,
                                "-p",
                                port,
                                "-k",
                                pg->dir,
                                "-c",
                                "listen_addresses=127.0.0.1",
                                "-c",
                                "fsync=off",
                                "-c",
                                "full_page_writes=off",
                                "-c",
                                "max_connections=40",
                                NULL};
    pg->pid = launch(argv, log, true);
    if (pg->pid < 0) {
        pg->pid = 0;
        return false;
    }
    long long deadline = tb_test_now_ms() + READY_TIMEOUT_MS;
    while (PQping(pg->admin) != PQPING_OK) {
        int status;
        if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
            fprintf(stderr, "pg_server: postgres exited at start (log %s)\n", log);
            pg->pid = 0;
            return false;
        }
        if (tb_test_now_ms() > deadline) {
            fprintf(stderr, "pg_server: postgres not ready in time (log %s)\n", log);
            tb_test_pg_halt(pg, SIGQUIT);
            return false;
        }
        tb_test_sleep_ms(20);
    }
    return true;
}

static bool exec_on(const char *conninfo, const char *sql, char **first)
{
    if (first)
        *first = NULL;
    PGconn *c = PQconnectdb(conninfo);
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *res = PQexec(c, sql);
        ExecStatusType es = PQresultStatus(res);
        ok = es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK;
        if (ok && first && PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
            *first = strdup(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    if (!ok)
        fprintf(stderr, "pg_server: `%s` failed: %s", sql, PQerrorMessage(c));
    PQfinish(c);
    return ok;
}

bool tb_test_pg_exec(const tb_test_pg_t *pg, const char *sql, char **first)
{
    return exec_on(pg->url, sql, first);
}

bool tb_test_pg_start(tb_test_pg_t *pg)
{
    memset(pg, 0, sizeof *pg);
    char bindir[400];
    if (!find_bindir(bindir, sizeof bindir))
        return false;
    const char *tmp = getenv("TMPDIR");
    snprintf(pg->dir, sizeof pg->dir, "%s/tb_pg_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(pg->dir)) {
        perror("pg_server: mkdtemp");
        pg->dir[0] = '\0';
        return false;
    }
    pg->port = tb_test_free_port();
    snprintf(pg->url, sizeof pg->url,
             "postgres://postgres@127.0.0.1:%d/topobus?sslmode=disable&gssencmode=disable",
             pg->port);
    snprintf(pg->admin, sizeof pg->admin,
             "postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&gssencmode=disable",
             pg->port);
    if (!own_dir(pg->dir) || !initdb(pg, bindir) || !launch_server(pg) ||
        !exec_on(pg->admin, "CREATE DATABASE topobus", NULL)) {
        tb_test_pg_stop(pg);
        return false;
    }
    return true;
}

void tb_test_pg_halt(tb_test_pg_t *pg, int sig)
{
    if (pg->pid <= 0)
        return;
    tb_test_stop(pg->pid, sig, STOP_TIMEOUT_MS);
    pg->pid = 0;
}

bool tb_test_pg_restart(tb_test_pg_t *pg)
{
    tb_test_pg_halt(pg, SIGINT);
    return launch_server(pg);
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tb_test_pg_stop(tb_test_pg_t *pg)
{
    tb_test_pg_halt(pg, SIGINT);
    if (pg->dir[0])
        nftw(pg->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    pg->dir[0] = '\0';
}
