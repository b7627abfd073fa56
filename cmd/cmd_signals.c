/*
 * Shutdown signals for long-running subcommands. SIGINT and SIGTERM are
 * blocked in every thread (the mask is inherited by threads created later)
 * and collected by the main thread with sigwait, so no handler ever runs in
 * the middle of library code. SIGPIPE is ignored: a vanished peer is an
 * error on the write, not a process kill.
 */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

#include "cmd_int.h"

void tb__cmd_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int tb__cmd_wait_for_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}
