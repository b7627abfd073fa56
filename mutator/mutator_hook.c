/*
 * The apply hook: an operator's command that takes a mutation (or, on
 * deploy, the document) as JSON on stdin and says yes (exit 0) or no. It is
 * spawned without a shell in its own process group with the default signal
 * mask (our processes block SIGTERM/SIGINT for sigwait, and a child would
 * inherit that). The caller's thread feeds stdin and collects stderr through
 * non-blocking pipes with poll(), keeping the last 512 bytes in a ring, and
 * enforces the deadline: SIGKILL to the group, then the child is reaped.
 * Nothing here is shared between threads; each call owns its pipes.
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
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mutator_int.h"
#include "tb/clock.h"
#include "tb/envelope.h"

extern char **environ;

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

static int spawn_hook(const char *path, int in_rd, int err_wr, pid_t *pid)
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
    int rc = posix_spawn(pid, path, &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/*
 * Feeds and drains the child until it exits or the deadline passes. Returns
 * true with *wstatus once reaped, false on timeout (the child still runs).
 */
static bool supervise(hook_io_t *io, pid_t pid, int64_t deadline_ms, int *wstatus)
{
    for (;;) {
        pid_t r = waitpid(pid, wstatus, WNOHANG);
        if (r == pid) {
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

tb_status tb_mutator_hook_run(const char *path, const char *input, size_t len, long timeout_ms,
                              char *reason)
{
    int in_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    hook_io_t io = {.in_fd = -1, .err_fd = -1, .input = input, .len = len};
    tb_status st = TB_EIO;
    if (pipe2(in_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE, "apply hook: cannot create pipes: %s",
                 strerror(errno));
        goto out;
    }
    pid_t pid;
    int rc = spawn_hook(path, in_pipe[0], err_pipe[1], &pid);
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
    int wstatus = 0;
    bool exited = supervise(&io, pid, tb_clock_mono_ms() + timeout_ms, &wstatus);
    sigpipe_restore(&saved);
    if (exited) {
        st = verdict(&io, wstatus, reason);
    } else {
        /* The whole group: a script's own children must not outlive the verdict. */
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
            ;
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE,
                 "apply hook timed out after %ld ms and was killed", timeout_ms);
        st = TB_ETIMEDOUT;
    }
out:
    close_fd(&io.in_fd);
    close_fd(&io.err_fd);
    close_fd(&in_pipe[0]);
    close_fd(&in_pipe[1]);
    close_fd(&err_pipe[0]);
    close_fd(&err_pipe[1]);
    return st;
}
