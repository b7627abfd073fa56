/*
 * Helpers shared by the bench tools (sse_load, sse_pub, epoll_bcast): the
 * monotonic clock, socket set-up and a log-linear latency histogram. Header
 * only, so each tool stays one translation unit plus this file. Nothing here
 * is thread-safe on its own; each thread owns its histogram and merges it at
 * the end.
 */
#ifndef TB_BENCH_COMMON_H
#define TB_BENCH_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* 64 sub-buckets per power of two: a percentile is exact to within 1.6 %. */
enum { BH_SUB_BITS = 6, BH_SUB = 1 << BH_SUB_BITS, BH_EXPS = 40, BH_BUCKETS = BH_EXPS * BH_SUB };

typedef struct bench_hist {
    uint64_t bucket[BH_BUCKETS];
    uint64_t count;
    uint64_t max;
} bench_hist_t;

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double bench_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline unsigned bench_hist_index(uint64_t v)
{
    if (v < BH_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - BH_SUB_BITS;
    unsigned idx = (shift + 1) * BH_SUB + (unsigned)((v >> shift) & (BH_SUB - 1));
    return idx < BH_BUCKETS ? idx : BH_BUCKETS - 1;
}

/* The lower bound of bucket idx (the inverse of bench_hist_index). */
static inline uint64_t bench_hist_value(unsigned idx)
{
    if (idx < BH_SUB)
        return idx;
    unsigned shift = idx / BH_SUB - 1;
    return ((uint64_t)BH_SUB + idx % BH_SUB) << shift;
}

static inline void bench_hist_add(bench_hist_t *h, uint64_t v)
{
    h->bucket[bench_hist_index(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

static inline void bench_hist_merge(bench_hist_t *into, const bench_hist_t *from)
{
    for (unsigned i = 0; i < BH_BUCKETS; i++)
        into->bucket[i] += from->bucket[i];
    into->count += from->count;
    if (from->max > into->max)
        into->max = from->max;
}

/* The value at quantile q (0..1); 0 for an empty histogram. */
static inline uint64_t bench_hist_quantile(const bench_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)(h->count - 1)) + 1, seen = 0;
    for (unsigned i = 0; i < BH_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank)
            return bench_hist_value(i);
    }
    return h->max;
}

static inline int bench_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static inline void bench_set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Starts a non-blocking connect to host:port from source address src (NULL: any); returns
 * the fd or -1. */
static inline int bench_connect_from(const char *src, const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    bench_set_nodelay(fd);
    if (src) {
        struct sockaddr_in from = {.sin_family = AF_INET, .sin_port = 0};
        if (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&from, sizeof from) != 0) {
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Starts a non-blocking connect to host:port; returns the fd or -1. */
static inline int bench_connect(const char *host, int port)
{
    return bench_connect_from(NULL, host, port);
}

/* Parses "<digits>" after key in [p, end); returns 1 and sets *out if found. */
static inline int bench_find_u64(const char *p, const char *end, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    while (p + klen <= end) {
        const char *hit = memchr(p, key[0], (size_t)(end - p));
        if (!hit || hit + klen > end)
            return 0;
        if (memcmp(hit, key, klen) == 0) {
            const char *d = hit + klen;
            uint64_t v = 0;
            int any = 0;
            while (d < end && *d >= '0' && *d <= '9') {
                v = v * 10 + (uint64_t)(*d - '0');
                d++;
                any = 1;
            }
            if (any) {
                *out = v;
                return 1;
            }
        }
        p = hit + 1;
    }
    return 0;
}

#endif
