/*
 * nats_pub: publishes topobus envelopes straight to NATS, as any service
 * would in production (the plain NATS protocol over one TCP connection; no
 * client library). Each envelope's payload carries "sent":<CLOCK_MONOTONIC
 * ns> and "seq":K, stamped when it is written, so sse_load can time it.
 *
 * Subjects: --subject S, or --subjects FILE (one per line, used round-robin:
 * e.g. one event per topology). Pace, one of:
 *   --rate R       R events/s (default 20)
 *   --rate 0       as fast as the connection takes them (with --count)
 *   --window W     closed loop: at most W events published and not yet seen
 *                  on a probe stream (--probe-port P --probe-path PATH, an SSE
 *                  stream on the server under test), so the publisher runs
 *                  exactly as fast as the server delivers ("saturating").
 *                  Publishing starts once the probe has its first snapshot; a
 *                  later snapshot (a resync: what was queued for the probe is
 *                  gone) or a second without progress reopens the window, and
 *                  is counted as "late".
 *   --window W --counter-file F --streams N
 *                  closed loop on every stream: at most W events published
 *                  and not yet delivered to all N streams of sse_load
 *                  --counter-file F (its running total of deliveries); a
 *                  second without progress reopens the window ("late").
 * --count N stops after N events; otherwise it runs until SIGTERM/SIGINT or
 * --max-seconds. Ends with a PING/PONG round trip (the server has them all),
 * then prints "pub sent= ok= errors= late= seconds= rate=" like sse_pub.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/time.h>

#include "bench_common.h"

enum { OUT_CAP = 1 << 20, LINE_CAP = 4096, PROBE_CAP = 1 << 16 };

static struct {
    const char *host, *subject, *probe_host, *probe_path;
    int port, probe_port;
    unsigned rate, window, max_seconds, pad;
    uint64_t count;
    char **subjects;
    unsigned nsubjects;
    int fd, probe_fd;
    char out[OUT_CAP];
    size_t outlen;
    char in[LINE_CAP];
    size_t inlen;
    bool pong;
    uint64_t sent, late, probe_seq;
    unsigned probe_snapshots;
    const _Atomic uint64_t *counter; /* --counter-file: sse_load's total deliveries */
    uint64_t streams, counter_base;
    char probe_buf[PROBE_CAP];
    size_t probe_len;
    unsigned long long id_prefix;
} g = {.host = "127.0.0.1", .port = 4222, .rate = 20, .max_seconds = 3600,
       .probe_host = "127.0.0.1", .fd = -1, .probe_fd = -1};

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void die(const char *what)
{
    fprintf(stderr, "nats_pub: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void flush_out(void)
{
    size_t off = 0;
    while (off < g.outlen) {
        ssize_t n = write(g.fd, g.out + off, g.outlen - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = g.fd, .events = POLLOUT};
            poll(&p, 1, 100);
            continue;
        }
        if (n <= 0)
            die("write to nats");
        off += (size_t)n;
    }
    g.outlen = 0;
}

static void out_append(const char *data, size_t len)
{
    if (g.outlen + len > OUT_CAP)
        flush_out();
    memcpy(g.out + g.outlen, data, len);
    g.outlen += len;
}

/* Reads what the server sent: answers PING, notes PONG, reports -ERR. */
static void read_server(int wait_ms)
{
    struct pollfd p = {.fd = g.fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return;
    ssize_t n = read(g.fd, g.in + g.inlen, LINE_CAP - 1 - g.inlen);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fprintf(stderr, "nats_pub: the server closed the connection\n");
        exit(1);
    }
    g.inlen += (size_t)n;
    g.in[g.inlen] = '\0';
    char *line = g.in, *nl;
    while ((nl = strstr(line, "\r\n"))) {
        *nl = '\0';
        if (strcmp(line, "PING") == 0)
            out_append("PONG\r\n", 6);
        else if (strcmp(line, "PONG") == 0)
            g.pong = true;
        else if (strncmp(line, "-ERR", 4) == 0)
            fprintf(stderr, "nats_pub: server says %s\n", line);
        line = nl + 2;
    }
    g.inlen = strlen(line);
    memmove(g.in, line, g.inlen);
    if (g.inlen == LINE_CAP - 1)
        g.inlen = 0; /* an INFO longer than the buffer: nothing here needs it */
    if (g.outlen)
        flush_out();
}

static void round_trip(void)
{
    g.pong = false;
    out_append("PING\r\n", 6);
    flush_out();
    uint64_t deadline = bench_now_ns() + 30ull * 1000000000u;
    while (!g.pong && bench_now_ns() < deadline)
        read_server(100);
    if (!g.pong) {
        fprintf(stderr, "nats_pub: no PONG from the server\n");
        exit(1);
    }
}

static void nats_connect(void)
{
    g.fd = bench_connect(g.host, g.port);
    if (g.fd < 0)
        die("connect to nats");
    struct pollfd p = {.fd = g.fd, .events = POLLOUT};
    poll(&p, 1, 5000);
    static const char hello[] =
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"nats_pub\",\"lang\":\"c\"}\r\n";
    out_append(hello, sizeof hello - 1);
    round_trip();
}

static void publish_one(uint64_t seq)
{
    const char *subject = g.nsubjects ? g.subjects[(seq - 1) % g.nsubjects] : g.subject;
    /* The type is the topic's tail after topology.<id>. (CONTRACT §2). */
    const char *type = subject;
    const char *dot = strchr(subject, '.');
    if (dot && strncmp(subject, "topology.", 9) == 0 && (dot = strchr(dot + 1, '.')))
        type = dot + 1;
    char pad[257];
    unsigned np = g.pad < sizeof pad - 1 ? g.pad : (unsigned)sizeof pad - 1;
    memset(pad, 'x', np);
    pad[np] = '\0';
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char body[1024];
    int blen = snprintf(body, sizeof body,
                        "{\"v\":1,\"id\":\"%016llx%016llx\",\"topic\":\"%s\",\"type\":\"%s\","
                        "\"ts\":%ld.%06ld,\"payload\":{\"sent\":%llu,\"seq\":%llu,\"pad\":\"%s\"}}",
                        g.id_prefix, (unsigned long long)seq, subject, type, (long)tv.tv_sec,
                        (long)tv.tv_usec, (unsigned long long)bench_now_ns(),
                        (unsigned long long)seq, pad);
    char head[512];
    int hlen = snprintf(head, sizeof head, "PUB %s %d\r\n", subject, blen);
    out_append(head, (size_t)hlen);
    out_append(body, (size_t)blen);
    out_append("\r\n", 2);
    g.sent = seq;
}

/* ---- the probe stream (closed loop) ---------------------------------------- */

static void probe_open(void)
{
    g.probe_fd = bench_connect(g.probe_host, g.probe_port);
    if (g.probe_fd < 0)
        die("connect the probe");
    struct pollfd p = {.fd = g.probe_fd, .events = POLLOUT};
    poll(&p, 1, 5000);
    char req[2048];
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n",
                       g.probe_path, g.probe_host, g.probe_port);
    if (write(g.probe_fd, req, (size_t)len) != len)
        die("probe request");
}

/* Reads the probe stream and notes the highest "seq" it has seen. */
static void probe_read(void)
{
    for (;;) {
        ssize_t n = read(g.probe_fd, g.probe_buf + g.probe_len, PROBE_CAP - g.probe_len);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            fprintf(stderr, "nats_pub: the probe stream closed\n");
            exit(1);
        }
        g.probe_len += (size_t)n;
        /* Parse whole lines; keep a partial one for the next read. */
        char *p = g.probe_buf, *end = g.probe_buf + g.probe_len, *nl;
        while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
            uint64_t seq;
            if (bench_find_u64(p, nl, "\"seq\":", &seq) && seq > g.probe_seq) {
                g.probe_seq = seq;
            } else if ((size_t)(nl - p) >= 15 && memcmp(p, "event: snapshot", 15) == 0) {
                /* The first opens the stream; a later one replaced what was queued. */
                if (g.probe_snapshots++ > 0)
                    g.probe_seq = g.sent;
            }
            p = nl + 1;
        }
        g.probe_len = (size_t)(end - p);
        memmove(g.probe_buf, p, g.probe_len);
        if (g.probe_len == PROBE_CAP)
            g.probe_len = 0; /* a line this long is not one of ours */
    }
}

/* ---- the delivery counter (closed loop on every stream) ------------------------ */

static void open_counter(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(file);
    g.counter = mmap(NULL, sizeof *g.counter, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (g.counter == MAP_FAILED)
        die("mmap the counter");
}

/* Events every stream has received since this publisher started (deliveries / streams). */
static uint64_t delivered_everywhere(void)
{
    return (atomic_load_explicit(g.counter, memory_order_acquire) - g.counter_base) / g.streams;
}

/* ---- main ------------------------------------------------------------------ */

static void read_subjects(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die(file);
    char line[512];
    unsigned cap = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        if (g.nsubjects == cap) {
            cap = cap ? cap * 2 : 1024;
            g.subjects = realloc(g.subjects, cap * sizeof *g.subjects);
        }
        g.subjects[g.nsubjects++] = strdup(line);
    }
    fclose(f);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: nats_pub [--host H] [--port 4222] (--subject S | --subjects FILE)\n"
            "                [--rate R | --window W (--probe-port P --probe-path PATH |\n"
            "                                        --counter-file F --streams N)]\n"
            "                [--count N] [--pad B] [--max-seconds S]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},       {"subject", 1, 0, 's'},
        {"subjects", 1, 0, 'S'},   {"rate", 1, 0, 'r'},       {"window", 1, 0, 'w'},
        {"probe-port", 1, 0, 'P'}, {"probe-path", 1, 0, 'U'}, {"count", 1, 0, 'n'},
        {"pad", 1, 0, 'd'},        {"max-seconds", 1, 0, 'm'}, {"counter-file", 1, 0, 'C'},
        {"streams", 1, 0, 'N'},    {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': g.host = optarg; g.probe_host = optarg; break;
        case 'p': g.port = atoi(optarg); break;
        case 's': g.subject = optarg; break;
        case 'S': read_subjects(optarg); break;
        case 'r': g.rate = (unsigned)atoi(optarg); break;
        case 'w': g.window = (unsigned)atoi(optarg); break;
        case 'P': g.probe_port = atoi(optarg); break;
        case 'U': g.probe_path = optarg; break;
        case 'n': g.count = strtoull(optarg, NULL, 10); break;
        case 'd': g.pad = (unsigned)atoi(optarg); break;
        case 'm': g.max_seconds = (unsigned)atoi(optarg); break;
        case 'C': open_counter(optarg); break;
        case 'N': g.streams = strtoull(optarg, NULL, 10); break;
        default: usage();
        }
    }
    if (!g.subject && !g.nsubjects)
        usage();
    if (g.window && !g.counter && (!g.probe_port || !g.probe_path))
        usage();
    if (g.counter && !g.streams)
        usage();
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    g.id_prefix = (unsigned long long)bench_now_ns() ^ ((unsigned long long)getpid() << 40);
    nats_connect();
    if (g.counter)
        g.counter_base = atomic_load(g.counter);
    else if (g.window) {
        probe_open();
        uint64_t until = bench_now_ns() + 30ull * 1000000000u;
        while (!g.probe_snapshots && bench_now_ns() < until) {
            struct pollfd p = {.fd = g.probe_fd, .events = POLLIN};
            poll(&p, 1, 100);
            probe_read();
        }
        if (!g.probe_snapshots) {
            fprintf(stderr, "nats_pub: the probe stream never opened\n");
            return 1;
        }
    }
    uint64_t begin = bench_now_ns(), interval = g.rate ? 1000000000u / g.rate : 0;
    uint64_t next_tick = begin, seq = 0, progress_at = begin, progress_seq = 0;
    while (!stop_flag && (!g.count || seq < g.count)) {
        uint64_t now = bench_now_ns();
        if (now - begin > (uint64_t)g.max_seconds * 1000000000u)
            break;
        if (g.window && g.counter) {
            uint64_t done = delivered_everywhere();
            if (done != progress_seq) {
                progress_seq = done;
                progress_at = now;
            }
            if (seq - done >= g.window) {
                if (now - progress_at > 1000000000u) {
                    g.late++; /* nothing for a second: lost on the way; go on */
                    g.counter_base -= (seq - done) * g.streams;
                    continue;
                }
                read_server(0);
                nanosleep(&(struct timespec){0, 50000}, NULL);
                continue;
            }
            publish_one(++seq);
            flush_out();
        } else if (g.window) {
            struct pollfd p[2] = {{.fd = g.probe_fd, .events = POLLIN},
                                  {.fd = g.fd, .events = POLLIN}};
            if (g.probe_seq != progress_seq) {
                progress_seq = g.probe_seq;
                progress_at = now;
            }
            if (seq - g.probe_seq >= g.window && now - progress_at > 1000000000u) {
                g.late++; /* nothing for a second: lost on the way; open the window again */
                g.probe_seq = seq;
            }
            if (seq - g.probe_seq >= g.window) {
                poll(p, 2, 100);
                if (p[0].revents)
                    probe_read();
                if (p[1].revents)
                    read_server(0);
                continue;
            }
            publish_one(++seq);
            flush_out();
            probe_read();
        } else if (g.rate) {
            if (now < next_tick) {
                read_server((int)((next_tick - now) / 1000000u));
                continue;
            }
            publish_one(++seq);
            flush_out();
            next_tick += interval;
            if (next_tick < now) {
                g.late++; /* behind by more than one tick: no burst to catch up */
                next_tick = now + interval;
            }
        } else {
            publish_one(++seq);
            if (seq % 1024 == 0)
                read_server(0);
        }
    }
    round_trip();
    double secs = (double)(bench_now_ns() - begin) / 1e9;
    printf("pub sent=%llu ok=%llu errors=0 late=%llu seconds=%.3f rate=%.0f\n",
           (unsigned long long)g.sent, (unsigned long long)g.sent, (unsigned long long)g.late,
           secs, secs > 0 ? (double)g.sent / secs : 0.0);
    close(g.fd);
    if (g.probe_fd >= 0)
        close(g.probe_fd);
    return 0;
}
