/*
 * Real processes for integration tests: free loopback ports, spawning by
 * posix_spawn, waiting for a TCP port to accept, and stopping by PID with
 * a bounded wait. Also a nats-server wrapper built on these. Every wait has
 * a deadline; nothing sleeps and hopes.
 */
#ifndef TB_TEST_PROC_H
#define TB_TEST_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/** A loopback TCP port that was free a moment ago (bound to 0, then released). */
int tb_test_free_port(void);

/**
 * Starts argv[0] (searched in PATH, then /usr/sbin and /usr/local/sbin)
 * with argv; stdout and stderr go to log_path (appended) or /dev/null if
 * NULL. Returns the PID, or -1 (with a message on stderr) if it cannot start.
 */
pid_t tb_test_spawn(const char *const argv[], const char *log_path);

/**
 * As tb_test_spawn, with env ("NAME=value" strings, NULL-terminated, may be
 * NULL) replacing or adding to this process's environment; "NAME=" with an
 * empty value removes NAME.
 */
pid_t tb_test_spawn_env(const char *const argv[], const char *const env[], const char *log_path);

/** Full path of an executable found as tb_test_spawn would, or NULL. Static buffer. */
const char *tb_test_which(const char *name);

/** True once 127.0.0.1:port accepts a connection, false after timeout_ms. */
bool tb_test_wait_port(int port, int timeout_ms);

/** True once nothing accepts on 127.0.0.1:port any more, false after timeout_ms. */
bool tb_test_wait_port_closed(int port, int timeout_ms);

/**
 * Sends sig to pid and reaps it; if it has not exited after timeout_ms,
 * sends SIGKILL and reaps it. Returns the wait status, or -1 if pid is not
 * our child.
 */
int tb_test_stop(pid_t pid, int sig, int timeout_ms);

/** True once every thread of pid is stopped (SIGSTOP took effect), false after timeout_ms. */
bool tb_test_wait_stopped(pid_t pid, int timeout_ms);

/** Polls cond(ud) every few milliseconds until true or timeout_ms passes. */
bool tb_test_wait_until(bool (*cond)(void *ud), void *ud, int timeout_ms);

/** Milliseconds on the monotonic clock. */
long long tb_test_now_ms(void);
/** Sleeps ms milliseconds, through signals. */
void tb_test_sleep_ms(int ms);

/** A nats-server started by a test. */
typedef struct tb_test_nats {
    pid_t pid;
    int port;
    bool jetstream;
    int monitor_port;    /* the HTTP monitoring port (-m), 0 if none */
    char store_dir[128]; /* JetStream store (removed by tb_test_nats_stop) */
    char url[64];        /* nats://127.0.0.1:<port> */
    bool frozen;         /* SIGSTOPped by tb_test_nats_freeze */
} tb_test_nats_t;

/**
 * Starts nats-server on 127.0.0.1 (port 0 picks a free one) with JetStream
 * in a fresh store directory when jetstream is set (kept across restarts
 * of the same tb_test_nats_t), and waits until it accepts. A missing
 * nats-server aborts the test run: it is a failure, never a skip.
 */
bool tb_test_nats_start(tb_test_nats_t *n, int port, bool jetstream);

/**
 * As tb_test_nats_start on a free port, with the HTTP monitoring endpoint
 * (/connz, /jsz, ...) on another free port, n->monitor_port (kept across
 * restarts).
 */
bool tb_test_nats_start_monitored(tb_test_nats_t *n, bool jetstream);

/**
 * Freezes the server (SIGSTOP: a silent dead peer, its connections open and
 * unanswered) or thaws it (SIGCONT). Freezing returns once every thread of
 * the server has stopped (a signal takes effect a little after kill()
 * returns, later on a loaded machine), false if that takes over 5 s.
 * Stopping or killing a frozen server thaws it first.
 */
bool tb_test_nats_freeze(tb_test_nats_t *n, bool frozen);

/** Kills the server (sig: SIGKILL for a crash, SIGTERM for a stop) and reaps it. */
void tb_test_nats_kill(tb_test_nats_t *n, int sig);

/** Starts the same server again on the same port and store. */
bool tb_test_nats_restart(tb_test_nats_t *n);

/** Kills the server if running and removes its store. */
void tb_test_nats_stop(tb_test_nats_t *n);

#endif
