/*
 * Idempotency-Key on the gateway; see gw_idem.h. The table of keys being
 * processed is shared by every loop (and emptied by jobs finished at
 * shutdown): one mutex guards it, a leaf lock held for a lookup only.
 * Store calls run on workers only.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_idem.h"
#include "tb/alloc.h"
#include "tb/log.h"

enum { BUCKETS = 1024 };

struct gw_idem_entry {
    gw_idem_entry_t *next;
    size_t bucket;
    char hash[TB_STORE_IDEM_HASH_LEN + 1];
    size_t user_len;
    char id[]; /* user, NUL, key, NUL */
};

struct gw_idem_table {
    pthread_mutex_t lock;
    size_t count;
    gw_idem_entry_t *buckets[BUCKETS];
};

void gw_idem_table_create(gw_idem_table_t **out)
{
    gw_idem_table_t *t = tb_xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    *out = t;
}

void gw_idem_table_destroy(gw_idem_table_t *t)
{
    if (!t)
        return;
    TB_ASSERT(t->count == 0);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

size_t gw_idem_table_count(gw_idem_table_t *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static size_t bucket_of(const char *user, const char *key)
{
    size_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        h = h * 33 + *p;
    h = h * 33; /* the separator */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = h * 33 + *p;
    return h % BUCKETS;
}

static bool entry_is(const gw_idem_entry_t *e, const char *user, const char *key)
{
    return strcmp(e->id, user) == 0 && strcmp(e->id + e->user_len + 1, key) == 0;
}

/* ---- parsing ---------------------------------------------------------------- */

static bool key_valid(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    if (n == 0 || n > TB_STORE_IDEM_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x20 || k[i] > 0x7e)
            return false;
    }
    return true;
}

/* The request hash: SHA-256 over method, LF, path, LF, body; lowercase hex into out. */
static void request_hash(const gw_request_t *req, char out[TB_STORE_IDEM_HASH_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    TB_ASSERT(ctx);
    int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, req->method_name, strlen(req->method_name)) &&
             EVP_DigestUpdate(ctx, "\n", 1) &&
             EVP_DigestUpdate(ctx, req->path, strlen(req->path)) &&
             EVP_DigestUpdate(ctx, "\n", 1) &&
             (req->body.len == 0 || EVP_DigestUpdate(ctx, req->body.data, req->body.len)) &&
             EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    /* SHA-256 of memory cannot fail short of a broken libcrypto. */
    TB_ASSERT(ok && len * 2 == TB_STORE_IDEM_HASH_LEN);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[TB_STORE_IDEM_HASH_LEN] = '\0';
}

bool gw_idem_parse(gw_request_t *req, const tb_principal_t *p, gw_idem_t *idem)
{
    memset(idem, 0, sizeof *idem);
    if (!req->idem_key_given)
        return true;
    if (!key_valid(req->idem_key)) {
        tb__gw_reply_error(req, 400, "invalid_idempotency_key",
                           "Idempotency-Key must be 1 to 255 printable ASCII characters");
        return false;
    }
    snprintf(idem->rec.user, sizeof idem->rec.user, "%s", p->sub);
    snprintf(idem->rec.key, sizeof idem->rec.key, "%s", req->idem_key);
    request_hash(req, idem->rec.hash);
    idem->on = true;
    return true;
}

/* ---- the answers the key itself gives ----------------------------------------- */

static char *error_text(const char *code, const char *message)
{
    json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

static const char in_flight_msg[] =
    "a request with this Idempotency-Key is still being processed; retry shortly";
static const char reused_msg[] = "this Idempotency-Key was used with a different request";

bool gw_idem_claim(gw_request_t *req, gw_idem_t *idem)
{
    if (!idem->on)
        return true;
    gw_idem_table_t *t = req->gw->idem;
    const char *user = idem->rec.user, *key = idem->rec.key;
    size_t b = bucket_of(user, key), ulen = strlen(user), klen = strlen(key);
    pthread_mutex_lock(&t->lock);
    gw_idem_entry_t *e = t->buckets[b];
    while (e && !entry_is(e, user, key))
        e = e->next;
    bool same = e && strcmp(e->hash, idem->rec.hash) == 0;
    if (!e) {
        e = tb_xcalloc(1, sizeof *e + ulen + klen + 2);
        memcpy(e->id, user, ulen + 1);
        memcpy(e->id + ulen + 1, key, klen + 1);
        e->user_len = ulen;
        memcpy(e->hash, idem->rec.hash, sizeof e->hash);
        e->bucket = b;
        e->next = t->buckets[b];
        t->buckets[b] = e;
        t->count++;
        idem->entry = e;
        pthread_mutex_unlock(&t->lock);
        return true;
    }
    pthread_mutex_unlock(&t->lock);
    if (same) {
        atomic_fetch_add(&req->gw->counters.idem_in_flight, 1);
        tb__gw_add_header(req, "retry-after:", "1");
        tb__gw_reply_error(req, 409, "idempotency_key_in_flight", in_flight_msg);
    } else {
        atomic_fetch_add(&req->gw->counters.idem_reused, 1);
        tb__gw_reply_error(req, 422, "idempotency_key_reused", reused_msg);
    }
    return false;
}

void gw_idem_close(tb_gateway_t *gw, gw_idem_t *idem)
{
    gw_idem_entry_t *e = idem->entry;
    if (!e)
        return;
    idem->entry = NULL;
    gw_idem_table_t *t = gw->idem;
    pthread_mutex_lock(&t->lock);
    gw_idem_entry_t **link = &t->buckets[e->bucket];
    while (*link != e)
        link = &(*link)->next;
    *link = e->next;
    t->count--;
    pthread_mutex_unlock(&t->lock);
    free(e);
}

/* ---- the store's part (workers) --------------------------------------------- */

bool gw_idem_reserve(tb_gateway_t *gw, gw_idem_t *idem, int *status, char **text, bool *retry_after)
{
    tb_store_err_t err;
    tb_status st = tb_store_idem_reserve(gw->deps.store, idem->rec.user, idem->rec.key,
                                         idem->rec.hash, &idem->rec, &err);
    if (st) {
        atomic_fetch_add(&gw->counters.store_errors, 1);
        tb_log(TB_LOG_WARN, "api", "Idempotency-Key reservation failed: %s (%s)", tb_status_str(st),
               err.message);
        *status = 503;
        *text = error_text("store_unavailable", "the store is not answering; retry shortly");
        *retry_after = true;
        return false;
    }
    switch (idem->rec.outcome) {
    case TB_IDEM_RESERVED:
        idem->reserved = true;
        return true;
    case TB_IDEM_REPLAY:
        atomic_fetch_add(&gw->counters.idem_replayed, 1);
        idem->replayed = true;
        *status = idem->rec.status;
        *text = idem->rec.body;
        idem->rec.body = NULL;
        return false;
    case TB_IDEM_IN_FLIGHT:
        atomic_fetch_add(&gw->counters.idem_in_flight, 1);
        *status = 409;
        *text = error_text("idempotency_key_in_flight", in_flight_msg);
        *retry_after = true;
        return false;
    case TB_IDEM_MISMATCH:
        break;
    }
    atomic_fetch_add(&gw->counters.idem_reused, 1);
    *status = 422;
    *text = error_text("idempotency_key_reused", reused_msg);
    return false;
}

tb_store_answer_t gw_idem_answer(const gw_idem_t *idem, int status, tb_store_answer_cb build,
                                 void *ud)
{
    tb_store_answer_t a = {
        .rec = idem->on ? &idem->rec : NULL, .status = status, .build = build, .ud = ud};
    return a;
}

void gw_idem_settle(tb_gateway_t *gw, gw_idem_t *idem, int status, const char *text)
{
    if (!idem->reserved || idem->answered)
        return;
    tb_store_err_t err;
    /* A 5xx is no answer: the client should retry, and its retry must be able to run. */
    tb_status st = status >= 500
                       ? tb_store_idem_release(gw->deps.store, &idem->rec, &err)
                       : tb_store_idem_record(gw->deps.store, &idem->rec, status, text, &err);
    if (st)
        tb_log(TB_LOG_WARN, "api", "Idempotency-Key answer %d not %s: %s (%s)", status,
               status >= 500 ? "released" : "recorded", tb_status_str(st), err.message);
}
