/*
 * sse_load: holds N Server-Sent Event streams over plain HTTP/1.1 and
 * measures deliveries and publish→receive latency. Works against the
 * gateway, nginx + nchan (its EventSource endpoint) and epoll_bcast with the
 * same code; only the path differs. Chunked bodies (nginx) are decoded.
 *
 * A delivery is an SSE frame whose data carries "sent":<CLOCK_MONOTONIC ns>;
 * its latency is the time of the read() that completed it minus that stamp.
 * Snapshot frames (the gateway's resyncs) are counted apart.
 *
 * Paths: every stream asks for --path, or with --paths FILE stream k asks
 * for line k (mod the number of lines), e.g. one topology per stream.
 * --bind ADDR connects from that source address (127.0.0.x), so that many
 * client processes together can hold more streams than one address has
 * ephemeral ports.
 *
 * Threads: --threads workers, each with its own epoll and its own streams,
 * histogram and counters. The main thread only handles signals:
 *   SIGUSR1 opens the measured window, SIGUSR2 closes it and prints
 *   "window ..." (and writes the window's latency histogram to --hist-out,
 *   one "bucket count" line per non-empty bucket, for merging across
 *   processes), SIGHUP prints "count ..." (totals so far, nothing reset),
 *   SIGTERM/SIGINT (or --max-seconds) prints "total ..." and exits.
 * "ready connected=N failed=F seconds=S" is printed once every stream has
 * answered or the connect phase timed out (S: from start to that moment).
 *
 * --counter-file F keeps the running total of deliveries in F (8 bytes,
 * shared memory), so a publisher (nats_pub --counter-file) can hold back
 * until every stream has what it published: a closed loop on the slowest
 * stream rather than on one probe.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>

#include "bench_common.h"

enum { HDR_CAP = 4096, FRAME_CAP = 1024, READ_BUF = 256 * 1024, MAX_THREADS = 16 };
enum { ST_CONNECTING, ST_HEADERS, ST_BODY, ST_DEAD };
enum { CH_SIZE, CH_SIZE_EXT, CH_DATA, CH_DATA_END };

typedef struct stream {
    int fd;
    int state;
    bool chunked, frame_trunc;
    int ch_state;
    uint64_t ch_left;
    size_t hlen, flen, line_len;
    char *hdr;   /* only while reading headers */
    char *frame; /* the frame being assembled, at most FRAME_CAP bytes */
} stream_t;

typedef struct worker {
    pthread_t thread;
    int epfd;
    unsigned first, count; /* streams [first, first+count) of the global index */
    stream_t *streams;
    _Atomic uint64_t win_deliveries, total_deliveries, snapshots, connected, failed, closed;
    bench_hist_t hist;
} worker_t;

static struct {
    const char *host, *path, *bind, *hist_out;
    char **paths; /* --paths: one request path per line */
    unsigned npaths;
    _Atomic uint64_t *counter; /* --counter-file: total deliveries, shared with a publisher */
    int port;
    unsigned streams, threads, inflight, connect_timeout_s, max_seconds;
    atomic_bool measuring, stop;
    atomic_uint ready_threads;
    worker_t workers[MAX_THREADS];
} g = {.host = "127.0.0.1", .path = "/", .threads = 1, .inflight = 256,
       .connect_timeout_s = 120, .max_seconds = 3600};

static void stream_kill(worker_t *w, stream_t *s, bool was_live)
{
    if (s->fd >= 0) {
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
    if (was_live)
        atomic_fetch_add_explicit(&w->closed, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
    s->state = ST_DEAD;
    free(s->hdr);
    s->hdr = NULL;
}

static void frame_done(worker_t *w, stream_t *s, uint64_t now)
{
    uint64_t sent;
    const char *p = s->frame, *end = s->frame + s->flen;
    if (bench_find_u64(p, end, "\"sent\":", &sent)) {
        atomic_fetch_add_explicit(&w->total_deliveries, 1, memory_order_relaxed);
        if (atomic_load_explicit(&g.measuring, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&w->win_deliveries, 1, memory_order_relaxed);
            bench_hist_add(&w->hist, now > sent ? now - sent : 0);
        }
    } else if (memmem(p, s->flen, "event: snapshot", 15)) {
        atomic_fetch_add_explicit(&w->snapshots, 1, memory_order_relaxed);
    }
    s->flen = 0;
    s->frame_trunc = false;
}

/* Splits decoded body bytes into SSE frames (a blank line ends one). */
static void sse_feed(worker_t *w, stream_t *s, const char *p, size_t n, uint64_t now)
{
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *seg_end = nl ? nl + 1 : end;
        size_t seg = (size_t)(seg_end - p);
        size_t room = FRAME_CAP - s->flen;
        size_t take = seg < room ? seg : room;
        memcpy(s->frame + s->flen, p, take);
        s->flen += take;
        if (take < seg)
            s->frame_trunc = true;
        size_t content = nl ? (size_t)(nl - p) : seg;
        if (content > 0 && p[content - 1] == '\r')
            content--;
        s->line_len += content;
        if (nl) {
            if (s->line_len == 0 && s->flen > 1)
                frame_done(w, s, now);
            else if (s->line_len == 0)
                s->flen = 0; /* a stray blank line */
            s->line_len = 0;
        }
        p = seg_end;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes a chunked body; returns false at the terminal chunk. */
static bool chunked_feed(worker_t *w, stream_t *s, const char *p, size_t n, uint64_t now)
{
    const char *end = p + n;
    while (p < end) {
        switch (s->ch_state) {
        case CH_SIZE: {
            int v = hexval(*p);
            if (v >= 0) {
                s->ch_left = s->ch_left * 16 + (uint64_t)v;
                p++;
                break;
            }
            s->ch_state = CH_SIZE_EXT;
            break;
        }
        case CH_SIZE_EXT:
            if (*p++ == '\n') {
                if (s->ch_left == 0)
                    return false;
                s->ch_state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t avail = (size_t)(end - p);
            size_t take = avail < s->ch_left ? avail : (size_t)s->ch_left;
            sse_feed(w, s, p, take, now);
            p += take;
            s->ch_left -= take;
            if (s->ch_left == 0)
                s->ch_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (*p++ == '\n') {
                s->ch_state = CH_SIZE;
                s->ch_left = 0;
            }
            break;
        default:
            return false;
        }
    }
    return true;
}

/* Consumes response headers; returns the offset of the body in buf, or -1 on failure. */
static long headers_feed(worker_t *w, stream_t *s, const char *buf, size_t n)
{
    size_t take = n < HDR_CAP - 1 - s->hlen ? n : HDR_CAP - 1 - s->hlen;
    size_t before = s->hlen;
    memcpy(s->hdr + s->hlen, buf, take);
    s->hlen += take;
    s->hdr[s->hlen] = '\0';
    char *eoh = strstr(s->hdr, "\r\n\r\n");
    if (!eoh)
        return s->hlen == HDR_CAP - 1 ? -1 : (long)n;
    int status = 0;
    if (sscanf(s->hdr, "HTTP/1.%*d %d", &status) != 1 || status != 200)
        return -1;
    *eoh = '\0';
    for (char *h = strcasestr(s->hdr, "transfer-encoding:"); h; h = NULL)
        s->chunked = strcasestr(h, "chunked") != NULL;
    size_t body_off = (size_t)(eoh + 4 - s->hdr) - before;
    free(s->hdr);
    s->hdr = NULL;
    s->state = ST_BODY;
    s->frame = calloc(1, FRAME_CAP);
    atomic_fetch_add_explicit(&w->connected, 1, memory_order_relaxed);
    return (long)body_off;
}

static void on_readable(worker_t *w, stream_t *s, char *buf)
{
    ssize_t n = read(s->fd, buf, READ_BUF);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        stream_kill(w, s, s->state == ST_BODY);
        return;
    }
    uint64_t now = bench_now_ns();
    size_t off = 0;
    if (s->state == ST_HEADERS) {
        long b = headers_feed(w, s, buf, (size_t)n);
        if (b < 0) {
            stream_kill(w, s, false);
            return;
        }
        off = (size_t)b;
    }
    if (s->state != ST_BODY || off >= (size_t)n)
        return;
    if (!s->chunked)
        sse_feed(w, s, buf + off, (size_t)n - off, now);
    else if (!chunked_feed(w, s, buf + off, (size_t)n - off, now))
        stream_kill(w, s, true);
}

static void send_request(worker_t *w, stream_t *s)
{
    char req[2048];
    unsigned index = w->first + (unsigned)(s - w->streams);
    const char *path = g.npaths ? g.paths[index % g.npaths] : g.path;
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                       "Cache-Control: no-cache\r\n\r\n",
                       path, g.host, g.port);
    /* The request fits the empty socket buffer of a fresh connection. */
    if (len <= 0 || write(s->fd, req, (size_t)len) != len) {
        stream_kill(w, s, false);
        return;
    }
    s->state = ST_HEADERS;
    s->hdr = malloc(HDR_CAP);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static void on_event(worker_t *w, stream_t *s, uint32_t events, char *buf)
{
    if (s->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP)))
            stream_kill(w, s, false);
        else
            send_request(w, s);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(w, s, buf);
}

static unsigned pending(worker_t *w)
{
    /* Streams that have answered, either way; a closed stream counted as connected already. */
    return (unsigned)(atomic_load(&w->connected) + atomic_load(&w->failed));
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    char *buf = malloc(READ_BUF);
    struct epoll_event evs[512];
    unsigned opened = 0, limit = g.inflight / g.threads ? g.inflight / g.threads : 1;
    uint64_t deadline = bench_now_ns() + (uint64_t)g.connect_timeout_s * 1000000000u;
    bool ready = false;
    while (!atomic_load(&g.stop)) {
        while (opened < w->count && opened - pending(w) < limit) {
            stream_t *s = &w->streams[opened++];
            s->fd = bench_connect_from(g.bind, g.host, g.port);
            if (s->fd < 0) {
                stream_kill(w, s, false);
                continue;
            }
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->fd, &ev);
        }
        if (!ready && (pending(w) >= w->count || bench_now_ns() > deadline)) {
            ready = true;
            atomic_fetch_add(&g.ready_threads, 1);
        }
        int n = epoll_wait(w->epfd, evs, 512, 50);
        uint64_t before = atomic_load_explicit(&w->total_deliveries, memory_order_relaxed);
        for (int i = 0; i < n; i++)
            on_event(w, evs[i].data.ptr, evs[i].events, buf);
        uint64_t got = atomic_load_explicit(&w->total_deliveries, memory_order_relaxed) - before;
        if (g.counter && got)
            atomic_fetch_add_explicit(g.counter, got, memory_order_release);
    }
    free(buf);
    return NULL;
}

static void sum(uint64_t *deliv, uint64_t *total, uint64_t *snaps, uint64_t *conn, uint64_t *fail,
                uint64_t *closed, bench_hist_t *h)
{
    *deliv = *total = *snaps = *conn = *fail = *closed = 0;
    for (unsigned i = 0; i < g.threads; i++) {
        worker_t *w = &g.workers[i];
        *deliv += atomic_load(&w->win_deliveries);
        *total += atomic_load(&w->total_deliveries);
        *snaps += atomic_load(&w->snapshots);
        *conn += atomic_load(&w->connected);
        *fail += atomic_load(&w->failed);
        *closed += atomic_load(&w->closed);
        if (h)
            bench_hist_merge(h, &w->hist);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sse_load --port P [--host H] [--path /p | --paths FILE] [--bind ADDR]\n"
                    "                [--streams N] [--threads T] [--inflight K] [--connect-timeout S]\n"
                    "                [--max-seconds S] [--hist-out FILE] [--counter-file FILE]\n");
    exit(2);
}

static void read_paths(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "sse_load: cannot read %s\n", file);
        exit(2);
    }
    char line[2048];
    unsigned cap = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        if (g.npaths == cap) {
            cap = cap ? cap * 2 : 1024;
            g.paths = realloc(g.paths, cap * sizeof *g.paths);
        }
        g.paths[g.npaths++] = strdup(line);
    }
    fclose(f);
    if (g.npaths == 0) {
        fprintf(stderr, "sse_load: no paths in %s\n", file);
        exit(2);
    }
}

static void open_counter(const char *file)
{
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof *g.counter) != 0) {
        fprintf(stderr, "sse_load: cannot create %s\n", file);
        exit(2);
    }
    g.counter = mmap(NULL, sizeof *g.counter, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (g.counter == MAP_FAILED) {
        fprintf(stderr, "sse_load: cannot map %s\n", file);
        exit(2);
    }
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},     {"path", 1, 0, 'u'},
        {"streams", 1, 0, 'n'},  {"threads", 1, 0, 't'},  {"inflight", 1, 0, 'i'},
        {"connect-timeout", 1, 0, 'c'}, {"max-seconds", 1, 0, 'm'}, {"paths", 1, 0, 'P'},
        {"bind", 1, 0, 'b'},     {"hist-out", 1, 0, 'o'},  {"counter-file", 1, 0, 'C'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': g.host = optarg; break;
        case 'p': g.port = atoi(optarg); break;
        case 'u': g.path = optarg; break;
        case 'n': g.streams = (unsigned)atoi(optarg); break;
        case 't': g.threads = (unsigned)atoi(optarg); break;
        case 'i': g.inflight = (unsigned)atoi(optarg); break;
        case 'c': g.connect_timeout_s = (unsigned)atoi(optarg); break;
        case 'm': g.max_seconds = (unsigned)atoi(optarg); break;
        case 'P': read_paths(optarg); break;
        case 'b': g.bind = optarg; break;
        case 'o': g.hist_out = optarg; break;
        case 'C': open_counter(optarg); break;
        default: usage();
        }
    }
    if (g.port <= 0 || g.streams == 0 || g.threads == 0 || g.threads > MAX_THREADS)
        usage();
}

static void start_workers(void)
{
    unsigned per = g.streams / g.threads, extra = g.streams % g.threads, first = 0;
    for (unsigned i = 0; i < g.threads; i++) {
        worker_t *w = &g.workers[i];
        w->first = first;
        w->count = per + (i < extra ? 1 : 0);
        first += w->count;
        w->streams = calloc(w->count ? w->count : 1, sizeof *w->streams);
        for (unsigned k = 0; k < w->count; k++)
            w->streams[k].fd = -1;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
}

static void write_hist(const bench_hist_t *h)
{
    FILE *f = fopen(g.hist_out, "w");
    if (!f)
        return;
    for (unsigned i = 0; i < BH_BUCKETS; i++) {
        if (h->bucket[i])
            fprintf(f, "%u %llu\n", i, (unsigned long long)h->bucket[i]);
    }
    fclose(f);
}

static void print_window(double secs, double cpu)
{
    uint64_t d, t, sn, c, f, cl;
    bench_hist_t *h = calloc(1, sizeof *h);
    sum(&d, &t, &sn, &c, &f, &cl, h);
    if (g.hist_out)
        write_hist(h);
    printf("window seconds=%.3f deliveries=%llu dps=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f "
           "snapshots=%llu streams=%llu closed=%llu client_cpu_s=%.3f\n",
           secs, (unsigned long long)d, secs > 0 ? (double)d / secs : 0.0,
           (double)bench_hist_quantile(h, 0.5) / 1e3, (double)bench_hist_quantile(h, 0.99) / 1e3,
           (double)h->max / 1e3, (unsigned long long)sn, (unsigned long long)c,
           (unsigned long long)cl, cpu);
    fflush(stdout);
    free(h);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the workers */
    signal(SIGPIPE, SIG_IGN);
    start_workers();
    uint64_t begin = bench_now_ns(), t0 = 0;
    double cpu0 = 0;
    bool announced = false;
    for (;;) {
        if (!announced && atomic_load(&g.ready_threads) == g.threads) {
            uint64_t d, t, sn, c, f, cl;
            sum(&d, &t, &sn, &c, &f, &cl, NULL);
            printf("ready connected=%llu failed=%llu seconds=%.3f\n", (unsigned long long)c,
                   (unsigned long long)f, (double)(bench_now_ns() - begin) / 1e9);
            fflush(stdout);
            announced = true;
        }
        struct timespec tick = {0, 50 * 1000000};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGUSR1) {
            t0 = bench_now_ns();
            cpu0 = bench_cpu_s();
            atomic_store(&g.measuring, true);
        } else if (sig == SIGUSR2) {
            atomic_store(&g.measuring, false);
            uint64_t t1 = bench_now_ns();
            double cpu1 = bench_cpu_s();
            /* Let the workers finish the read they are in before reading their histograms. */
            nanosleep(&(struct timespec){0, 100 * 1000000}, NULL);
            print_window((double)(t1 - t0) / 1e9, cpu1 - cpu0);
        } else if (sig == SIGHUP) {
            uint64_t d, t, sn, c, f, cl;
            sum(&d, &t, &sn, &c, &f, &cl, NULL);
            printf("count deliveries=%llu snapshots=%llu connected=%llu closed=%llu\n",
                   (unsigned long long)t, (unsigned long long)sn, (unsigned long long)c,
                   (unsigned long long)cl);
            fflush(stdout);
        } else if (sig == SIGTERM || sig == SIGINT ||
                   bench_now_ns() - begin > (uint64_t)g.max_seconds * 1000000000u) {
            break;
        }
    }
    atomic_store(&g.stop, true);
    for (unsigned i = 0; i < g.threads; i++)
        pthread_join(g.workers[i].thread, NULL);
    uint64_t d, t, sn, c, f, cl;
    sum(&d, &t, &sn, &c, &f, &cl, NULL);
    printf("total deliveries=%llu snapshots=%llu connected=%llu failed=%llu closed=%llu\n",
           (unsigned long long)t, (unsigned long long)sn, (unsigned long long)c,
           (unsigned long long)f, (unsigned long long)cl);
    for (unsigned i = 0; i < g.threads; i++) {
        worker_t *w = &g.workers[i];
        for (unsigned k = 0; k < w->count; k++) {
            if (w->streams[k].fd >= 0)
                close(w->streams[k].fd);
            free(w->streams[k].hdr);
            free(w->streams[k].frame);
        }
        free(w->streams);
        close(w->epfd);
    }
    return 0;
}
