/*
 * An HTTP client for integration tests (libcurl, one easy handle per call):
 * any method, custom headers, query strings as part of the URL, bodies sent
 * whole or chunked, a deadline per transfer, and a body callback that sees
 * a streaming response (SSE) piece by piece and may end it. Plus raw TCP
 * sockets for what a well-behaved client cannot do (trickling bytes,
 * stalling), with bounded waits.
 */
#ifndef TB_TEST_HTTP_CLIENT_H
#define TB_TEST_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tb_http_request {
    const char *method;         /* NULL: GET, or POST when body is set */
    const char *url;            /* absolute, with any query string */
    const char *bearer;         /* adds `Authorization: Bearer <bearer>` */
    const char *const *headers; /* extra "Name: value" lines, NULL-terminated */
    const char *body;           /* NULL: no body */
    size_t body_len;            /* 0 with a body: strlen(body) */
    bool chunked;               /* send the body with Transfer-Encoding: chunked */
    long timeout_ms;            /* the whole transfer; 0: 5000 */
    /* Called with each piece of the response body as it arrives (the body is
     * collected as well); returning false ends the transfer without error. */
    bool (*on_body)(const char *data, size_t len, void *ud);
    void *ud;
} tb_http_request_t;

typedef struct tb_http_response {
    long status;    /* 0 if no response arrived */
    int error;      /* the CURLcode, 0 on success (also when on_body stopped the transfer) */
    char *headers;  /* the header block of the final response (new string) */
    char *body;     /* NUL-terminated (new string) */
    size_t body_len;
    bool stopped;   /* on_body asked to stop */
} tb_http_response_t;

/** Performs req; fills *out (clean it up in any case). True if a response status arrived. */
bool tb_http_do(const tb_http_request_t *req, tb_http_response_t *out);

/** GET url with an optional bearer token; returns the status (0: none). */
long tb_http_get(const char *url, const char *bearer, tb_http_response_t *out);

/** POST url with a JSON body (may be NULL) and an optional bearer token; returns the status. */
long tb_http_post(const char *url, const char *bearer, const char *json, tb_http_response_t *out);

/** Copies the value of header name (case-insensitive) into out; false if absent. */
bool tb_http_header(const tb_http_response_t *r, const char *name, char *out, size_t outlen);

/** Frees the strings of a response. Accepts a zeroed response. */
void tb_http_response_cleanup(tb_http_response_t *r);

/** A blocking TCP connection to host (IPv4 or IPv6 literal) and port, or -1. */
int tb_test_tcp_connect(const char *host, int port);

/** Writes all of len bytes; false on error. */
bool tb_test_tcp_send(int fd, const void *data, size_t len);

/**
 * Reads and discards what the peer sends until it closes the connection
 * (EOF or reset): true if that happened within timeout_ms. If got is not
 * NULL, the first gotlen-1 bytes read are stored there, NUL-terminated.
 */
bool tb_test_tcp_wait_closed(int fd, int timeout_ms, char *got, size_t gotlen);

#endif
