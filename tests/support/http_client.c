/*
 * HTTP and raw TCP clients for integration tests (see http_client.h). Each
 * call owns its curl handle; curl_global_init runs once. Safe to call from
 * several test threads at a time.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"

typedef struct grow {
    char *data;
    size_t len, cap;
} grow_t;

typedef struct transfer {
    const tb_http_request_t *req;
    grow_t body, headers;
    const char *upload;
    size_t upload_len, upload_off;
    bool stopped;
} transfer_t;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void grow_append(grow_t *g, const char *data, size_t len)
{
    if (g->len + len + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 1024;
        while (cap < g->len + len + 1)
            cap *= 2;
        g->data = realloc(g->data, cap);
        if (!g->data)
            abort();
        g->cap = cap;
    }
    memcpy(g->data + g->len, data, len);
    g->len += len;
    g->data[g->len] = '\0';
}

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
    transfer_t *t = ud;
    size_t len = size * n;
    grow_append(&t->body, data, len);
    if (t->req->on_body && !t->req->on_body(data, len, t->req->ud)) {
        t->stopped = true;
        return 0; /* makes curl end the transfer (CURLE_WRITE_ERROR, reported as success) */
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    transfer_t *t = ud;
    size_t len = size * n;
    /* A new status line starts a new block (after 100 Continue or a redirect). */
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        t->headers.len = 0;
    grow_append(&t->headers, data, len);
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    transfer_t *t = ud;
    size_t want = size * n, left = t->upload_len - t->upload_off;
    size_t len = left < want ? left : want;
    memcpy(buf, t->upload + t->upload_off, len);
    t->upload_off += len;
    return len;
}

static struct curl_slist *build_headers(const tb_http_request_t *req)
{
    /* lws does not answer `Expect: 100-continue`; curl would wait a second for it. */
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    char line[9000];
    if (req->bearer) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", req->bearer);
        list = curl_slist_append(list, line);
    }
    if (req->body)
        list = curl_slist_append(list, "Content-Type: application/json");
    if (req->chunked)
        list = curl_slist_append(list, "Transfer-Encoding: chunked");
    for (size_t i = 0; req->headers && req->headers[i]; i++)
        list = curl_slist_append(list, req->headers[i]);
    return list;
}

static void set_body(CURL *c, const tb_http_request_t *req, transfer_t *t)
{
    t->upload = req->body;
    t->upload_len = req->body_len ? req->body_len : strlen(req->body);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (req->chunked) {
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, t);
    } else {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->upload_len);
    }
}

bool tb_http_do(const tb_http_request_t *req, tb_http_response_t *out)
{
    pthread_once(&curl_once, curl_init);
    memset(out, 0, sizeof *out);
    transfer_t t = {.req = req};
    CURL *c = curl_easy_init();
    if (!c)
        abort();
    struct curl_slist *headers = build_headers(req);
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* send `%2e` and `..` as written */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    if (req->body)
        set_body(c, req, &t);
    const char *method = req->method ? req->method : req->body ? "POST" : "GET";
    if (!req->body && strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    } else if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, req->body ? "POST" : "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->stopped = t.stopped;
    out->error = t.stopped && rc == CURLE_WRITE_ERROR ? 0 : (int)rc;
    out->headers = t.headers.data ? t.headers.data : strdup("");
    out->body = t.body.data ? t.body.data : strdup("");
    out->body_len = t.body.len;
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return out->status != 0;
}

long tb_http_get(const char *url, const char *bearer, tb_http_response_t *out)
{
    tb_http_request_t req = {.url = url, .bearer = bearer};
    tb_http_do(&req, out);
    return out->status;
}

long tb_http_post(const char *url, const char *bearer, const char *json, tb_http_response_t *out)
{
    tb_http_request_t req = {.method = "POST", .url = url, .bearer = bearer, .body = json};
    tb_http_do(&req, out);
    return out->status;
}

bool tb_http_header(const tb_http_response_t *r, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        size_t len = strcspn(line, "\r\n");
        if (len > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(len - (size_t)(v - line)), v);
            return true;
        }
        line += len;
        line += strspn(line, "\r\n");
    }
    return false;
}

void tb_http_response_cleanup(tb_http_response_t *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

int tb_test_tcp_connect(const char *host, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        len = sizeof *s6;
    } else if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        len = sizeof *s4;
    } else {
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool tb_test_tcp_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool tb_test_tcp_wait_closed(int fd, int timeout_ms, char *got, size_t gotlen)
{
    long long deadline = now_ms() + timeout_ms;
    size_t kept = 0;
    if (got && gotlen)
        got[0] = '\0';
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return true;
        if (n > 0 && got && kept + 1 < gotlen) {
            size_t take = (size_t)n < gotlen - 1 - kept ? (size_t)n : gotlen - 1 - kept;
            memcpy(got + kept, buf, take);
            kept += take;
            got[kept] = '\0';
        }
    }
}
