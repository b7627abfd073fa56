/*
 * The system under test of bench_mutator, one per --mode:
 *   serve        `topobus serve` (in-process bus, gateway and mutator) on SQLite;
 *   nats-sqlite  `nats-server -js` + `topobus gateway` + `topobus mutator`, three
 *                processes sharing one SQLite file;
 *   nats-pg      the same on a private PostgreSQL server (tests/support/pg_server.h).
 * Every process is a child of the bench, started on free loopback ports and
 * stopped by PID: by bench_target_stop, or by the signal guard (SIGINT, SIGTERM,
 * SIGHUP, SIGABRT, SIGSEGV) if the run ends any other way.
 */
#ifndef TB_BENCH_MUTATOR_MODES_H
#define TB_BENCH_MUTATOR_MODES_H

#include <stdbool.h>
#include <sys/types.h>

#include "pg_server.h"
#include "proc.h"

typedef enum bench_mode { BENCH_SERVE, BENCH_NATS_SQLITE, BENCH_NATS_PG } bench_mode_t;

typedef struct bench_target {
    bench_mode_t mode;
    char dir[256];                 /* scratch: the SQLite file and the processes' logs */
    char base[64];                 /* http://127.0.0.1:<port> */
    char secret[96];               /* TOPOBUS_JWT_SECRET of the gateway (or serve) */
    char token[1024];              /* an admin JWT signed with secret */
    pid_t serve, gateway, mutator; /* 0 when not running */
    tb_test_nats_t nats;           /* nats modes */
    tb_test_pg_t pg;               /* nats-pg */
} bench_target_t;

/** Sets *out from "serve", "nats-sqlite" or "nats-pg"; false for any other name. */
bool bench_mode_parse(const char *name, bench_mode_t *out);

/** The --mode name of mode (static). */
const char *bench_mode_name(bench_mode_t mode);

/** Installs the signal guard that stops the live target's processes by PID. Once, at start. */
void bench_guard_install(void);

/**
 * Starts every process of mode in a fresh scratch directory and waits until
 * the gateway accepts and (nats modes) the mutator listens on the bus.
 * False with a message on stderr if anything fails to start; whatever did
 * start is stopped again. One target is live at a time.
 */
bool bench_target_start(bench_target_t *t, bench_mode_t mode);

/**
 * CPU time (user + system, ms) used so far by every process of the target:
 * serve, or gateway + mutator + nats-server, plus the PostgreSQL postmaster and
 * its backends in nats-pg. Differences over a window give the server-side cost
 * of the work done in it, a figure a loaded machine disturbs far less than rates.
 */
long long bench_target_cpu_ms(const bench_target_t *t);

/** Stops every process with SIGTERM (SIGKILL after 10 s), reaps it, removes the scratch. */
void bench_target_stop(bench_target_t *t);

#endif
