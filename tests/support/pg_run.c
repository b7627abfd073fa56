/*
 * tb_pg_run TEST [ARGS…]: starts a private PostgreSQL server (pg_server.h),
 * runs TEST with TB_STORE_TEST_URL naming its empty `topobus` database,
 * stops the server by PID and removes it, and exits with TEST's status.
 * This is how CTest runs the store conformance suite a second time against
 * PostgreSQL: each test binary gets its own server, so tests stay
 * independent under `ctest -j`.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_server.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TEST [ARGS...]\n", argv[0]);
        return 2;
    }
    tb_test_pg_t pg;
    if (!tb_test_pg_start(&pg))
        return 1;
    if (setenv("TB_STORE_TEST_URL", pg.url, 1) != 0) {
        tb_test_pg_stop(&pg);
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[1], argv + 1);
        perror("tb_pg_run: exec");
        _exit(127);
    }
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    tb_test_pg_stop(&pg);
    if (pid < 0)
        return 1;
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "tb_pg_run: %s died of signal %d\n", argv[1], WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
