/*
 * The apply hook: an operator's command that takes a mutation (or, on
 * deploy and teardown, the document) as JSON on stdin and says yes (exit 0)
 * or no. It is spawned without a shell in its own process group with the
 * default signal mask (our processes block SIGTERM/SIGINT for sigwait, and a
 * child would inherit that) and a minimal environment (CONTRACT §6): PATH,
 * HOME, LANG and TZ from ours, plus the caller's TOPOBUS_HOOK_* variables,
 * never our secrets. The caller's thread feeds stdin and collects stderr
 * through non-blocking pipes with poll(), keeping the last 512 bytes in a
 * ring, and enforces the deadline. Once the verdict is taken (exit or
 * timeout) the whole process group is killed with SIGKILL before the hook is
 * reaped: the leader stays a zombie until then, so its process group id
 * cannot have been reused. Nothing here is shared between threads; each
 * call owns its pipes.
 */
#define _GNU_SOURCE /* pipe2: close-on-exec from birth, so no other child inherits a pipe */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mutator_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/envelope.h"

#define HOOK_ENV_MAX 16
#define HOOK_ENV_PREFIX "TOPOBUS_HOOK_"
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* What the hook inherits from our environment, no more (CONTRACT §6). */
static const char *const passed_on[] = {"PATH", "HOME", "LANG", "TZ"};

typedef struct hook_io {
    int in_fd;  /* our end of the child's stdin, -1 once closed */
    int err_fd; /* our end of the child's stderr, -1 at EOF */
    const char *input;
    size_t len, written;
    char ring[TB_MUTATOR_HOOK_STDERR_MAX];
    size_t ring_len;  /* bytes held, up to the ring size */
    size_t ring_head; /* next write position */
} hook_io_t;

void tb__mutator_reason_clean(char *out, const char *text, size_t len, const char *fallback)
{
    size_t n = 0;
    size_t cap = TB_MUTATOR_REASON_BUF_SIZE - 1;
    for (size_t i = 0; i < len && n < cap;) {
        unsigned char ch = (unsigned char)text[i];
        size_t seq = ch < 0x80 ? 1 : ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc0 ? 2 : 0;
        if (seq > 1 && i + seq <= len && n + seq <= cap && tb_utf8_valid(text + i, seq)) {
            memcpy(out + n, text + i, seq);
            n += seq;
            i += seq;
            continue;
        }
        if (seq == 1 && ch >= 0x20 && ch != 0x7f)
            out[n++] = (char)ch;
        else if (seq == 1)
            out[n++] = ' '; /* newlines and tabs read best as spaces in one line */
        else
            out[n++] = '?';
        i++;
    }
    size_t start = 0;
    while (start < n && out[start] == ' ')
        start++;
    while (n > start && out[n - 1] == ' ')
        n--;
    memmove(out, out + start, n - start);
    n -= start;
    if (n == 0) {
        snprintf(out, TB_MUTATOR_REASON_BUF_SIZE, "%s", fallback);
        return;
    }
    out[n] = '\0';
}

static void ring_put(hook_io_t *io, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        io->ring[io->ring_head] = data[i];
        io->ring_head = (io->ring_head + 1) % sizeof io->ring;
        if (io->ring_len < sizeof io->ring)
            io->ring_len++;
    }
}

/* The ring's content in order, into out (sizeof ring bytes); returns its length. */
static size_t ring_get(const hook_io_t *io, char *out)
{
    size_t start = (io->ring_head + sizeof io->ring - io->ring_len) % sizeof io->ring;
    for (size_t i = 0; i < io->ring_len; i++)
        out[i] = io->ring[(start + i) % sizeof io->ring];
    return io->ring_len;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Writes what the pipe takes now; closes stdin when done or when the child stopped reading. */
static void pump_input(hook_io_t *io)
{
    while (io->in_fd >= 0 && io->written < io->len) {
        ssize_t n = write(io->in_fd, io->input + io->written, io->len - io->written);
        if (n > 0) {
            io->written += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else {
            close_fd(&io->in_fd); /* EPIPE: the hook does not want the rest */
            return;
        }
    }
    close_fd(&io->in_fd);
}

static void pump_stderr(hook_io_t *io)
{
    char chunk[4096];
    while (io->err_fd >= 0) {
        ssize_t n = read(io->err_fd, chunk, sizeof chunk);
        if (n > 0)
            ring_put(io, chunk, (size_t)n);
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            return;
        else
            close_fd(&io->err_fd);
    }
}

static int set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* The hook's environment in env (HOOK_ENV_MAX + 1 slots, NULL-terminated);
 * the strings that need storage live in store (freed by the caller). */
static void hook_environment(const char *const *extra, char **env, char **store)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < TB_ARRAY_LEN(passed_on); i++) {
        const char *v = getenv(passed_on[i]);
        if (!v && strcmp(passed_on[i], "PATH") == 0)
            v = DEFAULT_PATH;
        if (!v)
            continue;
        size_t len = strlen(passed_on[i]) + strlen(v) + 2;
        store[k] = tb_xmalloc(len);
        snprintf(store[k], len, "%s=%s", passed_on[i], v);
        env[n++] = store[k++];
    }
    for (size_t i = 0; extra && extra[i] && n < HOOK_ENV_MAX; i++) {
        /* Only our own hook variables: nothing else may slip through this door. */
        TB_ASSERT(strncmp(extra[i], HOOK_ENV_PREFIX, strlen(HOOK_ENV_PREFIX)) == 0);
        env[n++] = (char *)(uintptr_t)extra[i];
    }
    env[n] = NULL;
}

static int spawn_hook(const char *path, char *const *env, int in_rd, int err_wr, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&fa, in_rd, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, err_wr, 2);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    char *argv[] = {(char *)(uintptr_t)path, NULL};
    int rc = posix_spawn(pid, path, &fa, &attr, argv, env);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* True once the child has exited; it is left unreaped (a zombie holding its pid). */
static bool exited_unreaped(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
        if (errno != EINTR)
            return true; /* not ours to wait for any more: nothing left to supervise */
    }
    return info.si_pid == pid;
}

/*
 * Feeds and drains the child until it exits or the deadline passes. Returns
 * true once it exited, false on timeout (it still runs). Either way it is
 * not reaped yet.
 */
static bool supervise(hook_io_t *io, pid_t pid, int64_t deadline_ms)
{
    for (;;) {
        if (exited_unreaped(pid)) {
            pump_stderr(io); /* what it wrote just before exiting */
            return true;
        }
        int64_t left = deadline_ms - tb_clock_mono_ms();
        if (left <= 0)
            return false;
        struct pollfd fds[2];
        nfds_t n = 0;
        if (io->in_fd >= 0)
            fds[n++] = (struct pollfd){.fd = io->in_fd, .events = POLLOUT};
        if (io->err_fd >= 0)
            fds[n++] = (struct pollfd){.fd = io->err_fd, .events = POLLIN};
        /* Short ticks: a child may exit while a grandchild keeps stderr open. */
        int tick = left < 20 ? (int)left : 20;
        if (n == 0) {
            struct timespec ts = {0, (long)tick * 1000000L};
            nanosleep(&ts, NULL);
        } else if (poll(fds, n, tick) > 0) {
            pump_input(io);
            pump_stderr(io);
        }
    }
}

/* Blocks SIGPIPE for this thread while we write into a pipe a hook may have closed. */
static void sigpipe_block(sigset_t *saved)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, saved);
}

static void sigpipe_restore(const sigset_t *saved)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) && !sigismember(saved, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&set, NULL, &zero); /* consume ours before unblocking */
    }
    pthread_sigmask(SIG_SETMASK, saved, NULL);
}

static tb_status verdict(const hook_io_t *io, int wstatus, char *reason)
{
    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        reason[0] = '\0';
        return TB_OK;
    }
    char fallback[96];
    if (WIFEXITED(wstatus))
        snprintf(fallback, sizeof fallback, "apply hook exited with status %d",
                 WEXITSTATUS(wstatus));
    else
        snprintf(fallback, sizeof fallback, "apply hook was killed by signal %d",
                 WTERMSIG(wstatus));
    char tail[TB_MUTATOR_HOOK_STDERR_MAX];
    size_t len = ring_get(io, tail);
    tb__mutator_reason_clean(reason, tail, len, fallback);
    return TB_EIO;
}

/* Kills whatever is left of the hook's process group, then reaps the leader. */
static int kill_group_and_reap(pid_t pid)
{
    kill(-pid, SIGKILL);
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    return wstatus;
}

tb_status tb_mutator_hook_run(const char *path, const char *const *env, const char *input,
                              size_t len, long timeout_ms, char *reason)
{
    int in_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    hook_io_t io = {.in_fd = -1, .err_fd = -1, .input = input, .len = len};
    tb_status st = TB_EIO;
    char *env_store[TB_ARRAY_LEN(passed_on)] = {0};
    char *hook_env[HOOK_ENV_MAX + 1];
    hook_environment(env, hook_env, env_store);
    if (pipe2(in_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE, "apply hook: cannot create pipes: %s",
                 strerror(errno));
        goto out;
    }
    pid_t pid;
    int rc = spawn_hook(path, hook_env, in_pipe[0], err_pipe[1], &pid);
    close_fd(&in_pipe[0]);
    close_fd(&err_pipe[1]);
    if (rc) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE, "apply hook %.900s cannot be run: %s", path,
                 strerror(rc));
        st = TB_ENOTFOUND;
        goto out;
    }
    io.in_fd = in_pipe[1];
    io.err_fd = err_pipe[0];
    in_pipe[1] = err_pipe[0] = -1;
    set_nonblock(io.in_fd);
    set_nonblock(io.err_fd);
    sigset_t saved;
    sigpipe_block(&saved);
    pump_input(&io);
    bool exited = supervise(&io, pid, tb_clock_mono_ms() + timeout_ms);
    sigpipe_restore(&saved);
    /* The verdict is taken: the whole group goes, also after a normal exit,
     * so nothing the hook started (`sleep 1000 &`) outlives it. */
    int wstatus = kill_group_and_reap(pid);
    if (exited) {
        st = verdict(&io, wstatus, reason);
    } else {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE,
                 "apply hook timed out after %ld ms and was killed", timeout_ms);
        st = TB_ETIMEDOUT;
    }
out:
    for (size_t i = 0; i < TB_ARRAY_LEN(env_store); i++)
        free(env_store[i]);
    close_fd(&io.in_fd);
    close_fd(&io.err_fd);
    close_fd(&in_pipe[0]);
    close_fd(&in_pipe[1]);
    close_fd(&err_pipe[0]);
    close_fd(&err_pipe[1]);
    return st;
}
