/*
 * Process harness for integration tests (see proc.h). Children are started
 * with posix_spawn and always stopped by PID and reaped by the test.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

extern char **environ;

enum { POLL_MS = 10, START_TIMEOUT_MS = 10000 };

long long tb_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tb_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

bool tb_test_wait_until(bool (*cond)(void *ud), void *ud, int timeout_ms)
{
    long long deadline = tb_test_now_ms() + timeout_ms;
    for (;;) {
        if (cond(ud))
            return true;
        if (tb_test_now_ms() >= deadline)
            return false;
        tb_test_sleep_ms(POLL_MS);
    }
}

int tb_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

const char *tb_test_which(const char *name)
{
    static char found[4096];
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? name : NULL;
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/usr/bin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/%s", d, name);
        if (access(found, X_OK) == 0)
            return found;
    }
    return NULL;
}

/* environ without the names set in env ("NAME=value"), then env: a new array of borrowed strings. */
static char **merged_env(const char *const env[])
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    while (env && env[m])
        m++;
    char **out = calloc(n + m + 1, sizeof *out);
    if (!out)
        abort();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool overridden = false;
        for (size_t j = 0; j < m && !overridden; j++) {
            size_t len = strcspn(env[j], "=");
            overridden = strncmp(environ[i], env[j], len) == 0 && environ[i][len] == '=';
        }
        if (!overridden)
            out[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++) {
        /* "NAME=" without a value removes NAME from the child's environment. */
        if (env[j][strcspn(env[j], "=") + 1] != '\0')
            out[k++] = (char *)(uintptr_t)env[j];
    }
    return out;
}

pid_t tb_test_spawn_env(const char *const argv[], const char *const env[], const char *log_path)
{
    const char *exe = tb_test_which(argv[0]);
    if (!exe) {
        fprintf(stderr, "spawn: %s not found in PATH\n", argv[0]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const char *out = log_path ? log_path : "/dev/null";
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    /* posix_spawn's argv is char *const[]; it does not write to the strings. */
    char **args = (char **)(void *)(uintptr_t)argv;
    char **envp = merged_env(env);
    int rc = posix_spawn(&pid, exe, &fa, NULL, args, envp);
    free(envp);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "spawn %s: %s\n", exe, strerror(rc));
        return -1;
    }
    return pid;
}

pid_t tb_test_spawn(const char *const argv[], const char *log_path)
{
    return tb_test_spawn_env(argv, NULL, log_path);
}

static bool port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

bool tb_test_wait_port(int port, int timeout_ms)
{
    long long deadline = tb_test_now_ms() + timeout_ms;
    while (!port_accepts(port)) {
        if (tb_test_now_ms() >= deadline)
            return false;
        tb_test_sleep_ms(POLL_MS);
    }
    return true;
}

bool tb_test_wait_port_closed(int port, int timeout_ms)
{
    long long deadline = tb_test_now_ms() + timeout_ms;
    while (port_accepts(port)) {
        if (tb_test_now_ms() >= deadline)
            return false;
        tb_test_sleep_ms(POLL_MS);
    }
    return true;
}

int tb_test_stop(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    long long deadline = tb_test_now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (tb_test_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return status;
        }
        tb_test_sleep_ms(POLL_MS);
    }
}

/* nats-servers running; killed by PID at exit if a failed assertion skipped the stop. */
static pid_t live_nats[16];

static void reap_nats(void)
{
    for (size_t i = 0; i < sizeof live_nats / sizeof live_nats[0]; i++) {
        if (live_nats[i] > 0)
            tb_test_stop(live_nats[i], SIGKILL, 2000);
    }
}

static void track_nats(pid_t old_pid, pid_t new_pid)
{
    static bool registered;
    if (!registered) {
        atexit(reap_nats);
        registered = true;
    }
    for (size_t i = 0; i < sizeof live_nats / sizeof live_nats[0]; i++) {
        if (live_nats[i] == old_pid) {
            live_nats[i] = new_pid;
            return;
        }
    }
}

static bool nats_launch(tb_test_nats_t *n)
{
    char port[16], mport[16];
    snprintf(port, sizeof port, "%d", n->port);
    snprintf(mport, sizeof mport, "%d", n->monitor_port);
    const char *argv[12] = {"nats-server", "-a", "127.0.0.1", "-p", port};
    size_t argc = 5;
    if (n->jetstream) {
        argv[argc++] = "-js";
        argv[argc++] = "-sd";
        argv[argc++] = n->store_dir;
    }
    if (n->monitor_port > 0) {
        argv[argc++] = "-m";
        argv[argc++] = mport;
    }
    argv[argc] = NULL;
    n->pid = tb_test_spawn(argv, NULL);
    if (n->pid < 0)
        return false;
    track_nats(0, n->pid);
    if (!tb_test_wait_port(n->port, START_TIMEOUT_MS)) {
        fprintf(stderr, "nats-server did not accept on port %d\n", n->port);
        tb_test_stop(n->pid, SIGKILL, 1000);
        track_nats(n->pid, 0);
        n->pid = -1;
        return false;
    }
    if (n->monitor_port > 0 && !tb_test_wait_port(n->monitor_port, START_TIMEOUT_MS)) {
        fprintf(stderr, "nats-server monitoring did not accept on port %d\n", n->monitor_port);
        return false; /* still tracked: tb_test_nats_stop or the exit hook kills it */
    }
    return true;
}

static bool nats_start(tb_test_nats_t *n, int port, bool jetstream, bool monitored)
{
    memset(n, 0, sizeof *n);
    n->pid = -1;
    if (!tb_test_which("nats-server")) {
        fprintf(stderr, "nats-server is not installed: run scripts/deps.sh test\n");
        abort();
    }
    n->port = port ? port : tb_test_free_port();
    n->jetstream = jetstream;
    if (monitored)
        n->monitor_port = tb_test_free_port();
    snprintf(n->url, sizeof n->url, "nats://127.0.0.1:%d", n->port);
    if (jetstream) {
        snprintf(n->store_dir, sizeof n->store_dir, "/tmp/tb-nats-XXXXXX");
        if (!mkdtemp(n->store_dir))
            return false;
    }
    return nats_launch(n);
}

bool tb_test_nats_start(tb_test_nats_t *n, int port, bool jetstream)
{
    return nats_start(n, port, jetstream, false);
}

bool tb_test_nats_start_monitored(tb_test_nats_t *n, bool jetstream)
{
    return nats_start(n, 0, jetstream, true);
}

/* True if every thread of pid shows state T (stopped) in /proc. */
static bool threads_stopped(void *ud)
{
    pid_t pid = *(const pid_t *)ud;
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool all = true;
    int seen = 0;
    for (struct dirent *e; all && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[400], buf[512];
        snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        buf[len > 0 ? len : 0] = '\0';
        /* "tid (comm) S ...": the state follows the last ')'. */
        const char *rp = strrchr(buf, ')');
        all = rp && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
        seen++;
    }
    closedir(d);
    return all && seen > 0;
}

bool tb_test_wait_stopped(pid_t pid, int timeout_ms)
{
    return tb_test_wait_until(threads_stopped, &pid, timeout_ms);
}

bool tb_test_nats_freeze(tb_test_nats_t *n, bool frozen)
{
    if (n->pid <= 0 || kill(n->pid, frozen ? SIGSTOP : SIGCONT) != 0)
        return false;
    n->frozen = frozen;
    return !frozen || tb_test_wait_stopped(n->pid, 5000);
}

void tb_test_nats_kill(tb_test_nats_t *n, int sig)
{
    if (n->frozen)
        tb_test_nats_freeze(n, false); /* a stopped process would not act on sig */
    if (n->pid > 0) {
        tb_test_stop(n->pid, sig, 5000);
        track_nats(n->pid, 0);
    }
    n->pid = -1;
}

bool tb_test_nats_restart(tb_test_nats_t *n)
{
    tb_test_nats_kill(n, SIGKILL);
    return nats_launch(n);
}

void tb_test_nats_stop(tb_test_nats_t *n)
{
    tb_test_nats_kill(n, SIGTERM);
    if (n->store_dir[0]) {
        const char *rm[] = {"rm", "-rf", n->store_dir, NULL};
        pid_t pid = tb_test_spawn(rm, NULL);
        if (pid > 0)
            tb_test_stop(pid, 0, 10000);
        n->store_dir[0] = '\0';
    }
}
