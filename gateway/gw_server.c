/*
 * The gateway's process structure: the listening socket (ours, with
 * SO_REUSEPORT, because lws 4.1.6 cannot share a port between contexts), the
 * accept thread that deals connections round-robin to the loops' inboxes, and
 * N lws contexts each serviced by its own thread.
 *
 * Threads: create/start/stop/destroy run on the controlling thread; the
 * accept thread touches only the listening socket, the wake eventfd and the
 * inboxes; each loop thread owns its context. Shutdown order: stop accepting
 * → wait for in-flight requests (bounded) → stop and join loops → destroy
 * contexts → free queued messages.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gw_fanout.h"
#include "gw_int.h"
#include "gw_idem.h"
#include "gw_pool.h"
#include "gw_sse.h"
#include "gw_users.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

enum {
    LISTEN_BACKLOG = 4096,
    ACCEPT_BATCH = 64,
    STOP_WAIT_MS = 5000,
    ATTACH_RETRY_MS = 250, /* the provider's own backoff decides when a connect is tried */
    WATCH_STATE_MS = 250,  /* the bus state is looked at this often (a subscription that
                              failed is tried again at most once a second) */
    POOL_THREADS = 2,       /* store calls are serialised per store; two keep one slow call
                               from holding up the rest */
    POOL_CAPACITY = 4096,   /* store calls waiting; beyond it requests are answered 503 */
    TICKET_CAPACITY = 100000,
    HEADER_DATA_MAX = 12288, /* room for an 8 KiB bearer token plus ordinary headers */
    HEADER_POOL = 64,
    DRAIN_PASSES = 4, /* inbox passes per wake-up before other work gets a turn */
};

static const struct lws_protocols protocols[] = {
    {"tb-http", tb__gw_http_callback, sizeof(gw_request_t), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_emit(int level, const char *line)
{
    /* 4.1.6 logs this at ERR for every h1 SSE stream; it is harmless (see NOTES-libs §1). */
    if (strstr(line, "not h2 substream"))
        return;
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n')
        len--;
    tb_log(level & LLL_ERR ? TB_LOG_ERR : TB_LOG_WARN, "lws", "%.*s", (int)len, line);
}

/* Splits HOST:PORT or [V6]:PORT (validated by the config loader). */
static void split_listen(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(listen, ':');
    const char *h = listen;
    size_t hlen = (size_t)(colon - listen);
    if (h[0] == '[') {
        h++;
        hlen -= 2;
    }
    snprintf(host, hostlen, "%.*s", (int)hlen, h);
    snprintf(port, portlen, "%s", colon + 1);
}

static void format_address(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        port = ntohs(s6->sin6_port);
        snprintf(out, outlen, "[%s]:%u", ip, port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        port = ntohs(s4->sin_port);
        snprintf(out, outlen, "%s:%u", ip, port);
    }
}

static tb_status open_listener(tb_gateway_t *gw, char *err, size_t errlen)
{
    char host[128], port[16];
    split_listen(gw->deps.cfg->listen, host, sizeof host, port, sizeof port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--listen: cannot resolve %s: %s", host, gai_strerror(rc));
        return TB_EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    tb_status st = TB_OK;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        /* Several gateway processes may listen on one port; the kernel spreads connections. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        snprintf(err, errlen, "--listen: cannot create socket: %s", strerror(errno));
        st = TB_EIO;
    } else if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, LISTEN_BACKLOG)) {
        snprintf(err, errlen, "--listen: cannot listen on %s: %s", gw->deps.cfg->listen,
                 strerror(errno));
        st = TB_EIO;
    }
    freeaddrinfo(res);
    if (st) {
        if (fd >= 0)
            close(fd);
        return st;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    format_address(&bound, gw->address, sizeof gw->address);
    gw->listen_fd = fd;
    return TB_OK;
}

static tb_status create_loop(tb_gateway_t *gw, gw_loop_t *loop, unsigned index, char *err,
                             size_t errlen)
{
    loop->gw = gw;
    loop->index = index;
    atomic_init(&loop->stop, false);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.user = loop;
    info.timeout_secs = GW_REQUEST_TIMEOUT_S;        /* a request body must arrive within this */
    info.timeout_secs_ah_idle = GW_REQUEST_TIMEOUT_S; /* headers must arrive within this */
    info.keepalive_timeout = 5;
    info.max_http_header_data = HEADER_DATA_MAX;
    info.max_http_header_pool = HEADER_POOL;
    loop->ctx = lws_create_context(&info);
    if (!loop->ctx) {
        snprintf(err, errlen, "cannot create event loop %u", index);
        return TB_EBACKEND;
    }
    loop->vhost = lws_get_vhost_by_name(loop->ctx, "default");
    TB_ASSERT(loop->vhost);
    gw_inbox_init(&loop->inbox, GW_INBOX_CAPACITY);
    gw_inbox_set_context(&loop->inbox, loop->ctx);
    atomic_init(&loop->overflowed, false);
    if (tb__gw_sse_loop_init(loop)) {
        /* Undo this loop alone: the caller only tears down loops that were fully created. */
        lws_context_destroy(loop->ctx);
        tb__gw_sse_loop_cleanup(loop);
        gw_inbox_cleanup(&loop->inbox);
        memset(loop, 0, sizeof *loop);
        snprintf(err, errlen, "cannot watch stream sockets on event loop %u", index);
        return TB_EIO;
    }
    return TB_OK;
}

tb_status tb_gateway_create(tb_gateway_t **out, const tb_gateway_deps_t *deps, char *err,
                            size_t errlen)
{
    *out = NULL;
    tb_gateway_t *gw = tb_xcalloc(1, sizeof *gw);
    gw->deps = *deps;
    gw->listen_fd = -1;
    gw->accept_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    gw->started_at = tb_clock_wall();
    pthread_mutex_init(&gw->watch_mu, NULL);
    pthread_cond_init(&gw->watch_cv, NULL);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    tb_tickets_create(&gw->tickets, TICKET_CAPACITY, TB_TICKET_TTL_S);
    gw_fanout_create(&gw->fanout, gw);
    if (gw_pool_create(&gw->pool, POOL_THREADS, POOL_CAPACITY)) {
        snprintf(err, errlen, "cannot start the gateway's store workers");
        tb_gateway_destroy(gw);
        return TB_EIO;
    }
    gw_users_create(&gw->users);
    gw_idem_table_create(&gw->idem);

    tb_status st = gw->accept_wake_fd < 0 ? TB_EIO : open_listener(gw, err, errlen);
    if (st)
        goto fail;
    unsigned want = (unsigned)deps->cfg->loops;
    gw->loops = tb_xcalloc(want, sizeof *gw->loops);
    /* nloops counts only fully created loops, so a failure part-way cleans up exactly those. */
    for (unsigned i = 0; i < want; i++) {
        st = create_loop(gw, &gw->loops[i], i, err, errlen);
        if (st)
            goto fail;
        gw->nloops++;
    }
    *out = gw;
    return TB_OK;
fail:
    tb_gateway_destroy(gw);
    return st;
}

const char *tb_gateway_address(const tb_gateway_t *gw)
{
    return gw->address;
}

/* Handles what the inbox held: connections, finished store calls, bus events and notices. */
static void handle_messages(gw_loop_t *loop, gw_msg_t *m)
{
    while (m) {
        gw_msg_t *next = m->next;
        if (m->kind == GW_MSG_ADOPT) {
            lws_sock_file_fd_type desc;
            desc.sockfd = m->fd;
            m->fd = -1; /* lws owns it now, and closes it itself if adoption fails */
            if (!lws_adopt_descriptor_vhost(loop->vhost, LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP, desc,
                                            NULL, NULL))
                atomic_fetch_add(&loop->gw->counters.connections_refused, 1);
        } else if (m->kind == GW_MSG_JOB) {
            gw_job_t *job = m->job;
            m->job = NULL; /* delivered here, not freed with the message */
            gw_pool_deliver(job);
        } else {
            tb__gw_sse_handle_msg(loop, m);
        }
        gw_inbox_recycle(&loop->inbox, m);
        m = next;
    }
}

void tb__gw_loop_drain_inbox(gw_loop_t *loop)
{
    /* What arrives while this runs is taken too, without another wake-up; a loop that is
     * never left alone still returns to lws after a few passes (and wakes itself). */
    loop->batching = true;
    for (unsigned pass = 1;; pass++) {
        handle_messages(loop, gw_inbox_take_all(&loop->inbox));
        if (!gw_inbox_settle(&loop->inbox))
            break;
        if (pass == DRAIN_PASSES) {
            gw_inbox_wake(&loop->inbox);
            break;
        }
    }
    tb__gw_sse_check_overflow(loop);
    loop->batching = false;
    /* Everything the passes queued goes out now, one write per stream. */
    tb__gw_sse_flush(loop);
}

tb_bus_t *tb__gw_bus(tb_gateway_t *gw)
{
    return atomic_load_explicit(&gw->bus, memory_order_acquire);
}

int tb__gw_bus_state(tb_gateway_t *gw)
{
    tb_bus_t *bus = tb__gw_bus(gw);
    return bus ? (int)tb_bus_state(bus) : (int)TB_BUS_DOWN;
}

uint64_t tb__gw_bus_epoch(tb_gateway_t *gw)
{
    return atomic_load_explicit(&gw->bus_epoch, memory_order_acquire);
}

/*
 * The bus watcher: asks the provider for the bus until it answers (the
 * singleton limits real connect attempts to one per 2 s) and publishes it to
 * the loops; from then on reconnection is the bus backend's job. It also
 * makes the gateway's one bus subscription if it is not in place yet (the
 * bus was not reached at start, or a JetStream election was under way),
 * trying every second: subscribing blocks, so it never happens on a loop.
 */
/* Sleeps up to ms, or until tb_gateway_stop wakes it. */
static void watch_sleep(tb_gateway_t *gw, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&gw->watch_mu);
    while (!atomic_load(&gw->attach_stop) &&
           pthread_cond_timedwait(&gw->watch_cv, &gw->watch_mu, &ts) == 0) {
    }
    pthread_mutex_unlock(&gw->watch_mu);
}

/* Tells the loops when the bus state changed; they tell their streams. */
static void report_bus_state(tb_gateway_t *gw, int *last)
{
    int state = tb__gw_bus_state(gw);
    if (state == *last)
        return;
    *last = state;
    for (unsigned i = 0; i < gw->nloops; i++)
        gw_inbox_push_take(&gw->loops[i].inbox, gw_msg_new(GW_MSG_BUS));
}

static void *watch_main(void *arg)
{
    tb_gateway_t *gw = arg;
    int last_state = tb__gw_bus_state(gw);
    while (!atomic_load(&gw->attach_stop)) {
        if (!tb__gw_bus(gw)) {
            tb_bus_t *bus = gw->deps.bus_provider(gw->deps.bus_provider_ud);
            if (bus) {
                atomic_store_explicit(&gw->bus_epoch, tb_bus_epoch(bus), memory_order_release);
                atomic_store_explicit(&gw->bus, bus, memory_order_release);
                tb_log(TB_LOG_NOTICE, "gateway", "bus %s reached", tb_bus_backend(bus));
            }
        }
        gw_fanout_attach(gw->fanout);
        report_bus_state(gw, &last_state);
        watch_sleep(gw, tb__gw_bus(gw) ? WATCH_STATE_MS : ATTACH_RETRY_MS);
    }
    return NULL;
}

static void *loop_main(void *arg)
{
    gw_loop_t *loop = arg;
    while (!atomic_load(&loop->stop)) {
        if (lws_service(loop->ctx, 0) < 0)
            break;
    }
    return NULL;
}

/* Hands one accepted connection to the next loop. */
static void deal_connection(tb_gateway_t *gw, int fd)
{
    int one = 1;
    /* Adopted sockets miss the TCP_NODELAY lws sets on its own listener (NOTES-libs §10). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    gw_msg_t *msg = gw_msg_new(GW_MSG_ADOPT);
    msg->fd = fd;
    gw_loop_t *loop = &gw->loops[gw->next_loop++ % gw->nloops];
    if (gw_inbox_push_take(&loop->inbox, msg) == TB_OK)
        atomic_fetch_add(&gw->counters.connections_accepted, 1);
}

static void *accept_main(void *arg)
{
    tb_gateway_t *gw = arg;
    int64_t last_warn = 0;
    while (atomic_load(&gw->accepting)) {
        struct pollfd p[2] = {{.fd = gw->listen_fd, .events = POLLIN},
                              {.fd = gw->accept_wake_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            tb_log(TB_LOG_ERR, "gateway", "accept poll failed: %s", strerror(errno));
            break;
        }
        if (p[1].revents)
            break;
        for (int i = 0; i < ACCEPT_BATCH; i++) {
            int fd = accept4(gw->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                deal_connection(gw, fd);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: back off briefly instead of spinning on a readable socket. */
                atomic_fetch_add(&gw->counters.connections_refused, 1);
                if (tb_clock_mono_ms() - last_warn > 10000) {
                    tb_log(TB_LOG_WARN, "gateway", "cannot accept: %s", strerror(errno));
                    last_warn = tb_clock_mono_ms();
                }
                poll(NULL, 0, 50);
            }
            break;
        }
    }
    return NULL;
}

tb_status tb_gateway_start(tb_gateway_t *gw)
{
    /* Try once synchronously so an available bus is there before the first request. */
    tb_bus_t *bus = gw->deps.bus_provider(gw->deps.bus_provider_ud);
    if (bus) {
        atomic_store(&gw->bus_epoch, tb_bus_epoch(bus));
        atomic_store(&gw->bus, bus);
        gw_fanout_attach(gw->fanout); /* streams then open with the subscription in place */
    } else {
        tb_log(TB_LOG_WARN, "gateway", "bus unavailable; streams carry keepalives until it is");
    }
    if (pthread_create(&gw->attach_thread, NULL, watch_main, gw))
        return TB_EIO;
    gw->attach_started = true;
    /* Loops report the state they start with in snapshots; later changes reach them by sweep. */
    for (unsigned i = 0; i < gw->nloops; i++)
        gw->loops[i].bus_state = tb__gw_bus_state(gw);
    for (unsigned i = 0; i < gw->nloops; i++) {
        if (pthread_create(&gw->loops[i].thread, NULL, loop_main, &gw->loops[i]))
            return TB_EIO;
        gw->loops[i].thread_started = true;
    }
    atomic_store(&gw->accepting, true);
    if (pthread_create(&gw->accept_thread, NULL, accept_main, gw))
        return TB_EIO;
    gw->accept_started = true;
    tb_log(TB_LOG_NOTICE, "gateway", "serving on %s with %u event loop%s", gw->address, gw->nloops,
           gw->nloops == 1 ? "" : "s");
    return TB_OK;
}

static void stop_accepting(tb_gateway_t *gw)
{
    atomic_store(&gw->accepting, false);
    if (gw->accept_started) {
        uint64_t one = 1;
        ssize_t n = write(gw->accept_wake_fd, &one, sizeof one);
        (void)n;
        pthread_join(gw->accept_thread, NULL);
        gw->accept_started = false;
    }
    if (gw->listen_fd >= 0) {
        close(gw->listen_fd);
        gw->listen_fd = -1;
    }
}

void tb_gateway_stop(tb_gateway_t *gw)
{
    if (!gw || gw->stopped)
        return;
    gw->stopped = true;
    bool was_serving = gw->accept_started; /* a gateway that never started logs nothing */
    stop_accepting(gw);
    pthread_mutex_lock(&gw->watch_mu);
    atomic_store(&gw->attach_stop, true);
    pthread_cond_broadcast(&gw->watch_cv);
    pthread_mutex_unlock(&gw->watch_mu);
    if (gw->attach_started) {
        pthread_join(gw->attach_thread, NULL);
        gw->attach_started = false;
    }
    /* Close streams spread over the drain window (CONTRACT §3.8), then let other requests
     * finish; both waits are bounded. */
    for (unsigned i = 0; i < gw->nloops && gw->loops[i].thread_started; i++) {
        gw_inbox_push_take(&gw->loops[i].inbox, gw_msg_new(GW_MSG_DRAIN));
    }
    int64_t deadline = tb_clock_mono_ms() + gw->deps.cfg->drain_s * 1000 + STOP_WAIT_MS;
    while (atomic_load(&gw->counters.in_flight) > 0 && tb_clock_mono_ms() < deadline)
        poll(NULL, 0, 10);
    for (unsigned i = 0; i < gw->nloops; i++) {
        gw_loop_t *loop = &gw->loops[i];
        atomic_store(&loop->stop, true);
        gw_inbox_close(&loop->inbox);
        if (loop->ctx)
            lws_cancel_service(loop->ctx);
        if (loop->thread_started) {
            pthread_join(loop->thread, NULL);
            loop->thread_started = false;
        }
    }
    /* The inboxes refuse pushes now; after this no bus callback runs either. */
    gw_fanout_detach(gw->fanout);
    if (was_serving)
        tb_log(TB_LOG_NOTICE, "gateway", "stopped");
}

void tb_gateway_destroy(tb_gateway_t *gw)
{
    if (!gw)
        return;
    tb_gateway_stop(gw);
    /* Closing every connection (CLOSED_HTTP runs here, on this thread) makes pending jobs
     * forget their requests; then the workers finish what is queued, and what they send
     * back to the closed inboxes is freed with them. */
    for (unsigned i = 0; gw->loops && i < gw->nloops; i++) {
        if (gw->loops[i].ctx)
            lws_context_destroy(gw->loops[i].ctx);
    }
    gw_pool_destroy(gw->pool);
    for (unsigned i = 0; gw->loops && i < gw->nloops; i++) {
        tb__gw_sse_loop_cleanup(&gw->loops[i]);
        gw_inbox_cleanup(&gw->loops[i].inbox);
    }
    free(gw->loops);
    gw_fanout_destroy(gw->fanout);
    gw_users_destroy(gw->users);
    /* After the inboxes: their cleanup finished the last jobs, which left the table. */
    gw_idem_table_destroy(gw->idem);
    if (gw->listen_fd >= 0)
        close(gw->listen_fd);
    if (gw->accept_wake_fd >= 0)
        close(gw->accept_wake_fd);
    tb_tickets_destroy(gw->tickets);
    pthread_cond_destroy(&gw->watch_cv);
    pthread_mutex_destroy(&gw->watch_mu);
    free(gw);
}
