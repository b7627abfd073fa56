/*
 * epoll_bcast: the raw limit for SSE fan-out. A bare HTTP/1.1 server with no
 * auth, no routing and no queue bounds beyond a per-client byte cap:
 *   GET <anything>   becomes an SSE subscriber (200, text/event-stream);
 *   POST <anything>  with a Content-Length body is broadcast to every
 *                    subscriber as "data: <body>\n\n" and answered 202.
 * Keep-alive for POSTs. Each of --threads threads owns an epoll, a
 * SO_REUSEPORT listener on the same port (the kernel spreads connections)
 * and its subscribers. A POST is formatted once per thread: the receiving
 * thread appends it to its own subscribers and hands a copy to each other
 * thread's inbox (mutex FIFO, eventfd written only on empty → non-empty).
 * Frames are appended to a per-client output buffer and written after each
 * epoll batch, so everything queued for a client goes out in one write().
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "bench_common.h"

enum { MAX_THREADS = 16, IN_CAP = 16384, OUT_MAX = 1 << 20, BATCH = 512 };
enum { K_LISTEN, K_WAKE, K_REQ, K_SUB };

typedef struct frame {
    struct frame *next;
    size_t len;
    char data[];
} frame_t;

typedef struct client {
    int kind, fd;
    size_t inlen, outlen, outoff, outcap;
    char *in, *out;
    unsigned sub_index;
    bool dirty, want_out;
} client_t;

typedef struct worker {
    pthread_t thread;
    int epfd, lfd, wakefd;
    client_t listen_tag, wake_tag;
    client_t **subs, **dirty;
    unsigned nsubs, capsubs, ndirty, nclients, capdirty;
    pthread_mutex_t lock;
    frame_t *head, *tail; /* the inbox, under lock */
} worker_t;

static struct {
    int port;
    unsigned threads;
    worker_t w[MAX_THREADS];
} g = {.threads = 1};

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void client_free(worker_t *w, client_t *c)
{
    w->nclients--;
    free(c->in);
    free(c->out);
    free(c);
}

static void client_close(worker_t *w, client_t *c)
{
    if (c->kind == K_SUB) {
        w->subs[c->sub_index] = w->subs[--w->nsubs];
        w->subs[c->sub_index]->sub_index = c->sub_index;
    }
    /* A closed client may still sit in the dirty list: mark it and free it after the flush. */
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (!c->dirty)
        client_free(w, c);
}

static void out_append(worker_t *w, client_t *c, const char *p, size_t n)
{
    if (c->outlen + n > OUT_MAX) {
        client_close(w, c); /* too slow: the raw limit does not resync, it drops */
        return;
    }
    if (c->outlen + n > c->outcap) {
        if (c->outoff > 0) {
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
        }
        while (c->outlen + n > c->outcap)
            c->outcap = c->outcap ? c->outcap * 2 : 1024;
        c->out = realloc(c->out, c->outcap);
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
    if (!c->dirty) {
        c->dirty = true;
        w->dirty[w->ndirty++] = c;
    }
}

static void broadcast_local(worker_t *w, const char *p, size_t n)
{
    /* Walk backwards: a client dropped for slowness is swapped with the last one. */
    for (unsigned i = w->nsubs; i-- > 0;)
        out_append(w, w->subs[i], p, n);
}

static void inbox_push(worker_t *to, const char *p, size_t n)
{
    frame_t *f = malloc(sizeof *f + n);
    f->next = NULL;
    f->len = n;
    memcpy(f->data, p, n);
    pthread_mutex_lock(&to->lock);
    bool was_empty = to->head == NULL;
    if (to->tail)
        to->tail->next = f;
    else
        to->head = f;
    to->tail = f;
    pthread_mutex_unlock(&to->lock);
    if (was_empty) {
        uint64_t one = 1;
        if (write(to->wakefd, &one, sizeof one) < 0)
            perror("epoll_bcast: eventfd");
    }
}

static void inbox_drain(worker_t *w)
{
    uint64_t v;
    if (read(w->wakefd, &v, sizeof v) < 0 && errno != EAGAIN)
        perror("epoll_bcast: eventfd");
    pthread_mutex_lock(&w->lock);
    frame_t *f = w->head;
    w->head = w->tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (f) {
        frame_t *next = f->next;
        broadcast_local(w, f->data, f->len);
        free(f);
        f = next;
    }
}

static void publish(worker_t *w, const char *body, size_t n)
{
    char *frame = malloc(n + 8);
    memcpy(frame, "data: ", 6);
    memcpy(frame + 6, body, n);
    memcpy(frame + 6 + n, "\n\n", 2);
    for (unsigned i = 0; i < g.threads; i++) {
        if (&g.w[i] != w)
            inbox_push(&g.w[i], frame, n + 8);
    }
    broadcast_local(w, frame, n + 8);
    free(frame);
}

static void make_sub(worker_t *w, client_t *c)
{
    static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n: hi\n\n";
    c->kind = K_SUB;
    free(c->in);
    c->in = NULL;
    c->inlen = 0;
    if (w->nsubs == w->capsubs) {
        w->capsubs = w->capsubs ? w->capsubs * 2 : 1024;
        w->subs = realloc(w->subs, w->capsubs * sizeof *w->subs);
    }
    c->sub_index = w->nsubs;
    w->subs[w->nsubs++] = c;
    out_append(w, c, hdr, sizeof hdr - 1);
}

/* Handles whole requests in c->in; returns false if the client was closed. */
static bool handle_requests(worker_t *w, client_t *c)
{
    static const char accepted[] = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
    for (;;) {
        char *eoh = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!eoh)
            return true;
        size_t hlen = (size_t)(eoh + 4 - c->in);
        if (strncmp(c->in, "GET ", 4) == 0) {
            make_sub(w, c);
            return true;
        }
        *eoh = '\0';
        char *cl = strcasestr(c->in, "content-length:");
        size_t blen = cl ? (size_t)atol(cl + 15) : 0;
        *eoh = '\r';
        if (hlen + blen > IN_CAP) {
            client_close(w, c);
            return false;
        }
        if (c->inlen < hlen + blen)
            return true;
        publish(w, c->in + hlen, blen);
        out_append(w, c, accepted, sizeof accepted - 1);
        memmove(c->in, c->in + hlen + blen, c->inlen - hlen - blen);
        c->inlen -= hlen + blen;
    }
}

static void on_client(worker_t *w, client_t *c, uint32_t events)
{
    if (events & EPOLLOUT)
        c->want_out = false; /* the flush below retries what is left */
    if (events & EPOLLOUT && !c->dirty && c->outlen > c->outoff) {
        c->dirty = true;
        w->dirty[w->ndirty++] = c;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
        return;
    char sink[4096];
    char *dst = c->kind == K_SUB ? sink : c->in + c->inlen;
    size_t room = c->kind == K_SUB ? sizeof sink : IN_CAP - c->inlen;
    ssize_t n = read(c->fd, dst, room);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        client_close(w, c);
        return;
    }
    if (c->kind == K_REQ) {
        c->inlen += (size_t)n;
        handle_requests(w, c);
    }
}

static void accept_all(worker_t *w)
{
    for (;;) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        bench_set_nodelay(fd);
        client_t *c = calloc(1, sizeof *c);
        c->kind = K_REQ;
        c->fd = fd;
        c->in = malloc(IN_CAP);
        /* Every client can be dirty at once, so the dirty list grows with the clients. */
        if (++w->nclients > w->capdirty) {
            w->capdirty = w->capdirty ? w->capdirty * 2 : 1024;
            w->dirty = realloc(w->dirty, w->capdirty * sizeof *w->dirty);
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* Writes each dirty client's pending bytes in one write(); waits for EPOLLOUT on a short one. */
static void flush(worker_t *w)
{
    for (unsigned i = 0; i < w->ndirty; i++) {
        client_t *c = w->dirty[i];
        c->dirty = false;
        if (c->fd < 0) {
            client_free(w, c);
            continue;
        }
        if (c->want_out)
            continue;
        ssize_t n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0 && errno != EAGAIN) {
            client_close(w, c);
            continue;
        }
        c->outoff += n > 0 ? (size_t)n : 0;
        if (c->outoff == c->outlen) {
            c->outoff = c->outlen = 0;
        } else {
            c->want_out = true;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET,
                                     .data.ptr = c};
            epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    w->ndirty = 0;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct epoll_event evs[BATCH];
    while (!stop_flag) {
        int n = epoll_wait(w->epfd, evs, BATCH, 200);
        for (int i = 0; i < n; i++) {
            client_t *c = evs[i].data.ptr;
            if (c->kind == K_LISTEN)
                accept_all(w);
            else if (c->kind == K_WAKE)
                inbox_drain(w);
            else if (c->fd >= 0)
                on_client(w, c, evs[i].events);
        }
        flush(w);
    }
    return NULL;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        perror("epoll_bcast: listen");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", 1, 0, 'p'}, {"threads", 1, 0, 't'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'p')
            g.port = atoi(optarg);
        else if (c == 't')
            g.threads = (unsigned)atoi(optarg);
        else
            return 2;
    }
    if (g.port <= 0 || g.threads == 0 || g.threads > MAX_THREADS) {
        fprintf(stderr, "usage: epoll_bcast --port P [--threads T]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    for (unsigned i = 0; i < g.threads; i++) {
        worker_t *w = &g.w[i];
        pthread_mutex_init(&w->lock, NULL);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->lfd = listen_on(g.port);
        w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        w->listen_tag.kind = K_LISTEN;
        w->wake_tag.kind = K_WAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->listen_tag};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev);
        ev.data.ptr = &w->wake_tag;
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev);
    }
    printf("epoll_bcast listening on 127.0.0.1:%d with %u thread%s\n", g.port, g.threads,
           g.threads == 1 ? "" : "s");
    fflush(stdout);
    for (unsigned i = 0; i < g.threads; i++)
        pthread_create(&g.w[i].thread, NULL, worker_main, &g.w[i]);
    for (unsigned i = 0; i < g.threads; i++)
        pthread_join(g.w[i].thread, NULL);
    return 0;
}
