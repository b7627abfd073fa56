/* See harness.h. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sse_reader.h"
#include "tb/alloc.h"
#include "tb/auth.h"
#include "tb/buf.h"
#include "tb/clock.h"

void h_dir_make(char *dir, size_t cap, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, cap, "%s/tb-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (!mkdtemp(dir))
        abort();
}

void h_dir_remove(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static pid_t spawned[64];
static size_t nspawned;

void h_reap_all(void)
{
    for (size_t i = 0; i < nspawned; i++)
        tb_test_stop(spawned[i], SIGKILL, 1000); /* -1 for those already reaped */
    nspawned = 0;
}

pid_t h_topobus(const char *log, const char *const *args)
{
    const char *other = getenv("TB_TEST_TOPOBUS_BIN");
    const char *argv[32] = {other && *other ? other : TB_TOPOBUS_BIN};
    size_t n = 1;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = tb_test_spawn(argv, log);
    if (pid < 0)
        abort();
    if (nspawned < sizeof spawned / sizeof spawned[0])
        spawned[nspawned++] = pid;
    return pid;
}

char *h_mint(const char *secret, const char *roles)
{
    tb_auth_t *auth = NULL;
    char err[256];
    unsigned r = 0;
    char *token = NULL;
    if (tb_auth_create(&auth, secret, strlen(secret), NULL, err, sizeof err) ||
        tb_auth_roles_parse(roles, &r) ||
        tb_auth_mint(auth, "test", r, 600, tb_clock_wall(), &token)) {
        fprintf(stderr, "h_mint: cannot mint a token: %s\n", err);
        abort();
    }
    tb_auth_destroy(auth);
    return token;
}

void h_write_file(const char *path, const char *text, bool script)
{
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fprintf(f, "%s%s", script ? "#!/bin/sh\n" : "", text);
    fclose(f);
    chmod(path, script ? 0755 : 0644);
}

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    tb_buf_append(ud, data, size * n);
    return size * n;
}

json_t *h_http(const char *method, const char *base, const char *path, const char *token,
               const char *body, long *status)
{
    CURL *c = curl_easy_init();
    char url[1024], auth[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdr = curl_slist_append(hdr, auth);
    }
    tb_buf_t b;
    tb_buf_init(&b);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    *status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    json_t *out = b.len ? json_loadb(b.data, b.len, JSON_DECODE_ANY, NULL) : NULL;
    tb_buf_cleanup(&b);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return out;
}

static size_t on_stream(char *data, size_t size, size_t n, void *ud)
{
    h_sse_t *s = ud;
    pthread_mutex_lock(&s->lock);
    if (s->stop) {
        pthread_mutex_unlock(&s->lock);
        return 0; /* aborts the transfer */
    }
    s->buf = tb_xrealloc(s->buf, s->len + size * n + 1);
    memcpy(s->buf + s->len, data, size * n);
    s->len += size * n;
    tb_sse_frame_t f;
    size_t used;
    while ((used = tb_sse_read_frame(s->buf, s->len, &f)) > 0) {
        if (f.event) {
            json_t *fr = json_pack("{s:s, s:I, s:o*}", "event", f.event, "at_ms",
                                   (json_int_t)tb_test_now_ms(),
                                   "data", json_loadb(f.data, f.data_len, 0, NULL));
            json_array_append_new(s->frames, fr);
        }
        tb_sse_frame_cleanup(&f);
        memmove(s->buf, s->buf + used, s->len - used);
        s->len -= used;
    }
    pthread_mutex_unlock(&s->lock);
    return size * n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    h_sse_t *s = ud;
    pthread_mutex_lock(&s->lock);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop ? 1 : 0;
}

static void *stream_main(void *arg)
{
    h_sse_t *s = arg;
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, s->url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_perform(c);
    curl_easy_cleanup(c);
    pthread_mutex_lock(&s->lock);
    s->done = true;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

bool h_sse_open(h_sse_t *s, const char *base, const char *id, const char *token)
{
    memset(s, 0, sizeof *s);
    snprintf(s->url, sizeof s->url, "%s/topologies/%s/events?token=%s", base, id, token);
    pthread_mutex_init(&s->lock, NULL);
    s->frames = json_array();
    if (pthread_create(&s->thread, NULL, stream_main, s))
        abort();
    return h_sse_wait(s, "snapshot", NULL, 5000) >= 0;
}

void h_sse_close(h_sse_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    json_decref(s->frames);
    free(s->buf);
    pthread_mutex_destroy(&s->lock);
}

json_t *h_sse_frame(h_sse_t *s, size_t i)
{
    pthread_mutex_lock(&s->lock);
    json_t *f = json_incref(json_array_get(s->frames, i));
    pthread_mutex_unlock(&s->lock);
    return f;
}

static int find_frame(h_sse_t *s, const char *event, const char *mid)
{
    int found = -1;
    pthread_mutex_lock(&s->lock);
    size_t i;
    json_t *f;
    json_array_foreach(s->frames, i, f) {
        if (strcmp(json_string_value(json_object_get(f, "event")), event) != 0)
            continue;
        const char *m = json_string_value(
            json_object_get(json_object_get(json_object_get(f, "data"), "payload"), "mutation_id"));
        if (!mid || (m && strcmp(m, mid) == 0)) {
            found = (int)i;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}


int h_sse_wait(h_sse_t *s, const char *event, const char *mid, int timeout_ms)
{
    long long end = tb_test_now_ms() + timeout_ms;
    int i;
    while ((i = find_frame(s, event, mid)) < 0 && tb_test_now_ms() < end)
        tb_test_sleep_ms(5);
    return i;
}

bool h_wait_status(const char *base, const char *id, const char *token, const char *want,
                   int timeout_ms)
{
    char path[256];
    snprintf(path, sizeof path, "/topologies/%s", id);
    long long end = tb_test_now_ms() + timeout_ms;
    do {
        long code;
        json_t *doc = h_http("GET", base, path, token, NULL, &code);
        const char *st = json_string_value(json_object_get(doc, "status"));
        bool ok = code == 200 && st && strcmp(st, want) == 0;
        json_decref(doc);
        if (ok)
            return true;
        tb_test_sleep_ms(20);
    } while (tb_test_now_ms() < end);
    return false;
}
