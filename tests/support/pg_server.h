/*
 * A throwaway PostgreSQL server for tests: initdb in a scratch directory,
 * the postgres binary started as our child on a free loopback port (as the
 * `postgres` system user when the tests run as root), one database
 * `topobus`, stopped by PID and removed at the end. The server is told to
 * quit if the test process dies, so a killed test leaves no server behind.
 * Binaries come from TB_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin
 * (Debian's `postgresql` package; scripts/deps.sh test installs it). A
 * missing server is a failure, never a skip.
 */
#ifndef TB_TEST_PG_SERVER_H
#define TB_TEST_PG_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct tb_test_pg {
    pid_t pid; /* the postmaster (our child), 0 while stopped */
    int port;
    char dir[256];   /* scratch: data/, the Unix socket and server.log */
    char url[320];   /* postgres://postgres@127.0.0.1:<port>/topobus?sslmode=disable */
    char admin[320]; /* the same server's `postgres` database */
} tb_test_pg_t;

/** Creates the cluster, starts it, waits until it answers and creates `topobus`. */
bool tb_test_pg_start(tb_test_pg_t *pg);

/**
 * Stops the server: sig SIGINT is a fast shutdown (sessions are ended),
 * SIGQUIT an immediate one (as a crash). Reaped by PID; SIGKILL after 10 s.
 */
void tb_test_pg_halt(tb_test_pg_t *pg, int sig);

/** Starts the same cluster again on the same port and waits until it answers. */
bool tb_test_pg_restart(tb_test_pg_t *pg);

/** Stops the server if it runs and removes the scratch directory. Accepts a zeroed pg. */
void tb_test_pg_stop(tb_test_pg_t *pg);

/**
 * Runs sql on a new connection to `topobus`. *first (may be NULL) gets the
 * first column of the first row as a new string (free it), or NULL.
 * False (with the error on stderr) if it fails.
 */
bool tb_test_pg_exec(const tb_test_pg_t *pg, const char *sql, char **first);

#endif
