/*
 * sse_pub: publishes events over keep-alive HTTP/1.1 POSTs, each stamped
 * with "sent":<CLOCK_MONOTONIC ns> at the moment it is written, either at a
 * fixed rate (--rate R events/s, spread over the connections) or as fast as
 * the server answers (--rate 0, one request in flight per connection).
 *
 * The body is {"sent":N,"seq":K} for nchan and epoll_bcast, and
 * {"topic":T,"payload":{"sent":N,"seq":K}} with --topic for the gateway's
 * POST /publish (with --token as the Bearer credential). One thread, one
 * epoll. Runs until SIGTERM/SIGINT or --max-seconds, then prints
 * "pub sent= ok= errors= late= seconds= rate=". Any 2xx counts as ok.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/epoll.h>

#include "bench_common.h"

enum { MAX_CONNS = 64, RESP_CAP = 8192 };

typedef struct conn {
    int fd;
    bool busy, connected;
    size_t rlen;
    char resp[RESP_CAP];
} conn_t;

static struct {
    const char *host, *path, *topic, *token;
    int port;
    unsigned conns, rate, max_seconds, pad;
    uint64_t seq, sent, ok, errors, late;
    conn_t c[MAX_CONNS];
} g = {.host = "127.0.0.1", .path = "/publish", .conns = 1, .rate = 20, .max_seconds = 3600};

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int open_conn(conn_t *c, int epfd)
{
    c->fd = bench_connect(g.host, g.port);
    if (c->fd < 0)
        return -1;
    c->busy = c->connected = false;
    c->rlen = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void reopen(conn_t *c, int epfd)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    g.errors++;
    if (open_conn(c, epfd) != 0)
        stop_flag = 1;
}

static void send_one(conn_t *c, int epfd)
{
    char body[512], req[2048];
    char pad[256];
    unsigned np = g.pad < sizeof pad - 1 ? g.pad : (unsigned)sizeof pad - 1;
    memset(pad, 'x', np);
    pad[np] = '\0';
    unsigned long long now = (unsigned long long)bench_now_ns();
    unsigned long long seq = (unsigned long long)++g.seq;
    int blen;
    if (g.topic)
        blen = snprintf(body, sizeof body,
                        "{\"topic\":\"%s\",\"payload\":{\"sent\":%llu,\"seq\":%llu,\"pad\":\"%s\"}}",
                        g.topic, now, seq, pad);
    else
        blen = snprintf(body, sizeof body, "{\"sent\":%llu,\"seq\":%llu,\"pad\":\"%s\"}", now, seq,
                        pad);
    char auth[1024] = "";
    if (g.token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", g.token);
    int len = snprintf(req, sizeof req,
                       "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                       "%sContent-Length: %d\r\n\r\n%s",
                       g.path, g.host, g.port, auth, blen, body);
    /* One request on an idle keep-alive connection always fits its socket buffer. */
    if (write(c->fd, req, (size_t)len) != len) {
        reopen(c, epfd);
        return;
    }
    c->busy = true;
    g.sent++;
}

/* Returns 1 when a whole response is in c->resp, 0 if more is needed, -1 on garbage. */
static int response_complete(conn_t *c)
{
    c->resp[c->rlen] = '\0';
    char *eoh = strstr(c->resp, "\r\n\r\n");
    if (!eoh)
        return c->rlen >= RESP_CAP - 1 ? -1 : 0;
    int status = 0;
    if (sscanf(c->resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    *eoh = '\0';
    char *cl = strcasestr(c->resp, "content-length:");
    bool chunked = strcasestr(c->resp, "chunked") != NULL;
    *eoh = '\r';
    size_t body = c->rlen - (size_t)(eoh + 4 - c->resp);
    if (cl && body < (size_t)atol(cl + 15))
        return 0;
    if (!cl && chunked && !strstr(eoh + 4, "0\r\n\r\n"))
        return 0;
    if (status >= 200 && status < 300)
        g.ok++;
    else
        g.errors++;
    return 1;
}

static void on_readable(conn_t *c, int epfd)
{
    ssize_t n = read(c->fd, c->resp + c->rlen, RESP_CAP - 1 - c->rlen);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        reopen(c, epfd);
        return;
    }
    c->rlen += (size_t)n;
    int done = response_complete(c);
    if (done < 0) {
        reopen(c, epfd);
    } else if (done > 0) {
        c->busy = false;
        c->rlen = 0;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sse_pub --port P [--host H] [--path /publish] [--rate R|0] [--conns C]\n"
                    "               [--topic T] [--token JWT] [--pad B] [--max-seconds S]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'h'},  {"port", 1, 0, 'p'},  {"path", 1, 0, 'u'},
        {"rate", 1, 0, 'r'},  {"conns", 1, 0, 'c'}, {"topic", 1, 0, 't'},
        {"token", 1, 0, 'k'}, {"pad", 1, 0, 'd'},   {"max-seconds", 1, 0, 'm'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': g.host = optarg; break;
        case 'p': g.port = atoi(optarg); break;
        case 'u': g.path = optarg; break;
        case 'r': g.rate = (unsigned)atoi(optarg); break;
        case 'c': g.conns = (unsigned)atoi(optarg); break;
        case 't': g.topic = optarg; break;
        case 'k': g.token = optarg; break;
        case 'd': g.pad = (unsigned)atoi(optarg); break;
        case 'm': g.max_seconds = (unsigned)atoi(optarg); break;
        default: usage();
        }
    }
    if (g.port <= 0 || g.conns == 0 || g.conns > MAX_CONNS)
        usage();
}

/* Sends what is due: every idle connection at full speed, or the ticks that have come at a rate. */
static void send_due(int epfd, uint64_t now, uint64_t *next_tick, uint64_t interval)
{
    for (unsigned i = 0; i < g.conns; i++) {
        conn_t *c = &g.c[i];
        if (!c->connected || c->busy)
            continue;
        if (g.rate == 0) {
            send_one(c, epfd);
            continue;
        }
        if (now < *next_tick)
            return;
        send_one(c, epfd);
        *next_tick += interval;
        if (*next_tick < now) {
            /* Behind by more than one tick: count it and do not burst to catch up. */
            g.late++;
            *next_tick = now + interval;
        }
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    for (unsigned i = 0; i < g.conns; i++) {
        if (open_conn(&g.c[i], epfd) != 0) {
            fprintf(stderr, "sse_pub: cannot connect to %s:%d\n", g.host, g.port);
            return 1;
        }
    }
    uint64_t begin = bench_now_ns(), interval = g.rate ? 1000000000u / g.rate : 0;
    uint64_t next_tick = begin;
    struct epoll_event evs[MAX_CONNS];
    while (!stop_flag) {
        uint64_t now = bench_now_ns();
        if (now - begin > (uint64_t)g.max_seconds * 1000000000u)
            break;
        send_due(epfd, now, &next_tick, interval);
        int timeout = 100;
        if (g.rate) {
            now = bench_now_ns();
            timeout = next_tick > now ? (int)((next_tick - now) / 1000000u) : 0;
        }
        int n = epoll_wait(epfd, evs, MAX_CONNS, timeout);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c->connected && (evs[i].events & EPOLLOUT)) {
                c->connected = true;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c, epfd);
        }
    }
    double secs = (double)(bench_now_ns() - begin) / 1e9;
    printf("pub sent=%llu ok=%llu errors=%llu late=%llu seconds=%.3f rate=%.0f\n",
           (unsigned long long)g.sent, (unsigned long long)g.ok, (unsigned long long)g.errors,
           (unsigned long long)g.late, secs, secs > 0 ? (double)g.ok / secs : 0.0);
    for (unsigned i = 0; i < g.conns; i++)
        close(g.c[i].fd);
    close(epfd);
    return 0;
}
