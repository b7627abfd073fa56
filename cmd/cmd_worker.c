/*
 * The worker id of a process that claims work (`topobus mutator`, `serve`):
 * who holds its claims in the store, the same across its restarts, so a
 * restarted process recognises and gives back its predecessor's claims at
 * once (tb_mutator_start) instead of waiting out the lease.
 *
 * `--worker-id` / TOPOBUS_WORKER_ID names it; by default it is derived from
 * the host name and the process's role: `HOST:mutator`, `HOST:serve`. A
 * second process of the same role on the same host takes the next free
 * slot, `HOST:mutator:2` and so on. A slot is held through an abstract Unix
 * socket named after the id, bound for the process's life: the kernel frees
 * it the moment the process dies, so an id is never held by two live
 * processes on one host (that would let one give back the other's claims),
 * and a restarted process finds its predecessor's id free again. Main
 * thread, at start.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmd_int.h"
#include "tb/log.h"

enum { HOST_MAX = 48, SLOTS = 64 };

/* Binds the abstract socket of id: 1 held, 0 taken by a live process, -1 error (errno). */
static int hold(const char *id, int *fd)
{
    *fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0)
        return -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    /* sun_path[0] = '\0': the abstract namespace, no file, gone with the process. */
    int n = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "topobus.worker.%s", id);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (bind(*fd, (struct sockaddr *)&addr, len) == 0)
        return 1;
    int saved = errno;
    close(*fd);
    *fd = -1;
    errno = saved;
    return saved == EADDRINUSE ? 0 : -1;
}

/* The host name in the worker id grammar. */
static void host_token(char *out, size_t cap)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    size_t n = 0;
    for (const char *p = host; *p && n + 1 < cap && n < HOST_MAX; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        out[n++] = ok ? c : '-';
    }
    out[n] = '\0';
}

int tb__cmd_worker_identity(const tb_config_t *cfg, const char *role, char *out, size_t cap,
                            int *held)
{
    *held = -1;
    if (cfg->worker_id) {
        snprintf(out, cap, "%s", cfg->worker_id);
        int r = hold(out, held);
        if (r == 1)
            return TB_EXIT_OK;
        if (r == 0)
            tb__cmd_error("--worker-id: '%s' is in use by another running process on this host; "
                          "give each process its own",
                          out);
        else
            tb__cmd_error("--worker-id: cannot hold '%s': %s", out, strerror(errno));
        return r == 0 ? TB_EXIT_USAGE : TB_EXIT_FAILURE;
    }
    char host[HOST_MAX + 1];
    host_token(host, sizeof host);
    for (int slot = 1; slot <= SLOTS; slot++) {
        if (slot == 1)
            snprintf(out, cap, "%s:%s", host, role);
        else
            snprintf(out, cap, "%s:%s:%d", host, role, slot);
        int r = hold(out, held);
        if (r == 1)
            return TB_EXIT_OK;
        if (r < 0) {
            tb__cmd_error("cannot hold a worker id: %s (set --worker-id)", strerror(errno));
            return TB_EXIT_FAILURE;
        }
    }
    tb__cmd_error("more than %d %s processes on this host: set --worker-id", SLOTS, role);
    return TB_EXIT_FAILURE;
}
