/*
 * Idempotency-Key records, the backend-neutral part (store.h
 * "Idempotency-Key records"): validates every argument once, draws the
 * reservations' fencing tokens, prunes a few expired rows whenever a key is
 * reserved anew, and runs the *_answered calls.
 *
 * An *_answered call is the public call it extends, run inside one wrapping
 * write transaction (the backend's wrap_begin: the call's own begin and
 * commit join it), followed by the answer's record in that transaction, and
 * committed once (wrap_end). The store's mutex is recursive for this: the
 * wrapper holds it across the public call, which takes it again, so no
 * other call can run inside the wrapping transaction. Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tb/envelope.h"
#include "tb/random.h"

enum {
    PRUNE_BATCH = 16, /* expired rows deleted per new reservation: more than one per insert,
                         so the table never grows past a TTL's worth of keys */
    STATUS_MIN = 100,
    STATUS_MAX = 599,
};

#define TTL_MAX_MS ((int64_t)30 * 24 * 3600 * 1000)

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

static bool hex_valid(const char *h, size_t len)
{
    if (!h || strlen(h) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return false;
    }
    return true;
}

static bool user_valid(const char *u)
{
    size_t n = u ? strlen(u) : 0;
    return n > 0 && n <= TB_STORE_IDEM_USER_MAX && tb_utf8_valid(u, n);
}

static tb_status invalid(tb_store_err_t *err, const char *what)
{
    return tb__store_fail(err, TB_EINVAL, TB_STORE_R_INVALID, "%s", what);
}

/* The user, key and hash of a request. */
static tb_status check_request(const char *user, const char *key, const char *hash,
                               tb_store_err_t *err)
{
    if (!user_valid(user))
        return invalid(err, "the user must be 1..256 bytes of UTF-8");
    if (!key_valid(key))
        return invalid(err, "an Idempotency-Key is 1..255 bytes of printable ASCII");
    if (!hex_valid(hash, TB_STORE_IDEM_HASH_LEN))
        return invalid(err, "a request hash is 64 lowercase hex digits (SHA-256)");
    return TB_OK;
}

/* A reservation as tb_store_idem_reserve returned it. */
static tb_status check_reservation(const tb_store_idem_t *rec, tb_store_err_t *err)
{
    if (!rec)
        return invalid(err, "no reservation given");
    tb_status st = check_request(rec->user, rec->key, rec->hash, err);
    if (st)
        return st;
    if (rec->outcome != TB_IDEM_RESERVED || !hex_valid(rec->token, TB_STORE_IDEM_TOKEN_LEN))
        return invalid(err, "the Idempotency-Key was not reserved by this request");
    return TB_OK;
}

static tb_status check_answer(int status, const char *body, tb_store_err_t *err)
{
    if (status < STATUS_MIN || status > STATUS_MAX)
        return invalid(err, "an answer's status is 100..599");
    size_t n = body ? strlen(body) : 0;
    if (!body || n > TB_STORE_IDEM_BODY_MAX || !tb_utf8_valid(body, n))
        return invalid(err, "an answer's body is at most 2 MiB of UTF-8");
    return TB_OK;
}

tb_status tb__store_idem_check_options(const tb_store_options_t *opts, tb_store_err_t *err)
{
    if (!opts)
        return TB_OK;
    int64_t ttl = opts->idempotency_ttl_ms, lease = opts->idempotency_lease_ms;
    if (ttl < 0 || ttl > TTL_MAX_MS || lease < 0 || lease > TTL_MAX_MS)
        return invalid(err, "the Idempotency-Key TTL and lease must be 0..30 days (0: default)");
    int64_t eff_ttl = ttl ? ttl : (int64_t)TB_STORE_IDEM_TTL_DEFAULT_S * 1000;
    int64_t eff_lease = lease ? lease : (int64_t)TB_STORE_IDEM_LEASE_DEFAULT_S * 1000;
    if (eff_lease >= eff_ttl)
        return invalid(err, "the Idempotency-Key lease must be shorter than its TTL");
    return TB_OK;
}

void tb__store_idem_init(tb_store_t *s, const tb_store_options_t *opts)
{
    s->idem_ttl_ms = (int64_t)TB_STORE_IDEM_TTL_DEFAULT_S * 1000;
    s->idem_lease_ms = (int64_t)TB_STORE_IDEM_LEASE_DEFAULT_S * 1000;
    if (opts && opts->idempotency_ttl_ms > 0)
        s->idem_ttl_ms = opts->idempotency_ttl_ms;
    if (opts && opts->idempotency_lease_ms > 0)
        s->idem_lease_ms = opts->idempotency_lease_ms;
}

bool tb__store_idem_row_holds(const tb_store_t *s, bool answered, int64_t created_at,
                              int64_t lease_until, int64_t now_ms)
{
    if (created_at <= now_ms - s->idem_ttl_ms)
        return false;
    return answered || lease_until > now_ms;
}

void tb_store_idem_cleanup(tb_store_idem_t *rec)
{
    if (!rec)
        return;
    free(rec->body);
    rec->body = NULL;
}

tb_status tb_store_idem_reserve(tb_store_t *s, const char *user, const char *key, const char *hash,
                                tb_store_idem_t *out, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    /* The inputs may be out's own fields (a reservation made again): copy them first. */
    tb_store_idem_t rec;
    memset(&rec, 0, sizeof rec);
    tb_status st = check_request(user, key, hash, err);
    if (!st) {
        memcpy(rec.user, user, strlen(user) + 1);
        memcpy(rec.key, key, strlen(key) + 1);
        memcpy(rec.hash, hash, TB_STORE_IDEM_HASH_LEN + 1);
    }
    *out = rec;
    if (st)
        return st;
    char token[TB_STORE_IDEM_TOKEN_LEN + 1];
    tb_random_hex(token, TB_STORE_IDEM_TOKEN_LEN / 2);
    pthread_mutex_lock(&s->lock);
    st = s->ops->idem_reserve(s, out, token, err);
    if (!st && out->outcome == TB_IDEM_RESERVED) {
        /* Amortised upkeep in its own transaction: a failure here (logged by the
         * backend) costs the reservation nothing. */
        tb_store_err_t ignored;
        int pruned = 0;
        memset(&ignored, 0, sizeof ignored);
        s->ops->idem_prune(s, PRUNE_BATCH, &pruned, &ignored);
    }
    pthread_mutex_unlock(&s->lock);
    if (st) {
        tb_store_idem_cleanup(out);
        out->token[0] = '\0';
    }
    return st;
}

static tb_status lost(tb_store_err_t *err)
{
    return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_WRONG_STATE,
                          "the Idempotency-Key reservation is no longer this request's");
}

tb_status tb_store_idem_record(tb_store_t *s, const tb_store_idem_t *rec, int status,
                               const char *body, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_status st = check_reservation(rec, err);
    if (!st)
        st = check_answer(status, body, err);
    if (st)
        return st;
    bool gone = false;
    pthread_mutex_lock(&s->lock);
    st = s->ops->idem_record(s, rec, status, body, &gone, err);
    pthread_mutex_unlock(&s->lock);
    return !st && gone ? lost(err) : st;
}

tb_status tb_store_idem_release(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    tb_status st = check_reservation(rec, err);
    if (st)
        return st;
    pthread_mutex_lock(&s->lock);
    st = s->ops->idem_release(s, rec, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

tb_status tb_store_idem_prune(tb_store_t *s, int max, int *pruned, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    int n = 0;
    if (max < 1 || max > TB_STORE_IDEM_PRUNE_MAX)
        return invalid(err, "a prune deletes 1..10000 rows");
    pthread_mutex_lock(&s->lock);
    tb_status st = s->ops->idem_prune(s, max, &n, err);
    pthread_mutex_unlock(&s->lock);
    if (pruned)
        *pruned = st ? 0 : n;
    return st;
}

/* ---- changes that record their answer ------------------------------------- */

/* A public call to extend: runs it (under the recursive lock) and leaves its result. */
typedef tb_status (*change_fn)(tb_store_t *s, void *ctx, json_t **result, tb_store_err_t *err);

/* Builds answer's body from result and records it, inside the wrapping transaction. */
static tb_status record_answer(tb_store_t *s, tb_store_answer_t *a, const json_t *result,
                               tb_store_err_t *err)
{
    a->body = a->build(result, a->ud);
    tb_status st = check_answer(a->status, a->body, err);
    if (st)
        return st;
    bool gone = false;
    st = s->ops->idem_record(s, a->rec, a->status, a->body, &gone, err);
    if (!st && gone) {
        a->lost = true;
        st = lost(err);
    }
    return st;
}

static tb_status answered(tb_store_t *s, tb_store_answer_t *a, change_fn fn, void *ctx,
                          json_t **result, tb_store_err_t *err)
{
    *result = NULL;
    if (!a)
        return invalid(err, "no answer given");
    a->body = NULL;
    a->lost = false;
    tb_status st = check_reservation(a->rec, err);
    if (!st && (a->status < STATUS_MIN || a->status > STATUS_MAX || !a->build))
        st = invalid(err, "an answer needs a status of 100..599 and a builder");
    if (st)
        return st;
    pthread_mutex_lock(&s->lock);
    st = s->ops->wrap_begin(s, err);
    if (st) {
        pthread_mutex_unlock(&s->lock);
        return st;
    }
    st = fn(s, ctx, result, err);
    if (!st)
        st = record_answer(s, a, *result, err);
    /* A failure above is what the caller hears; ending without a commit never fails. */
    tb_store_err_t scratch;
    memset(&scratch, 0, sizeof scratch);
    tb_status end = s->ops->wrap_end(s, st == TB_OK, st ? &scratch : err);
    if (!st)
        st = end;
    if (st) {
        free(a->body);
        a->body = NULL;
        json_decref(*result);
        *result = NULL;
    }
    tb__store_unlock_and_notify(s);
    return st;
}

typedef struct create_ctx {
    const char *name;
    const json_t *nodes, *links;
} create_ctx_t;

static tb_status create_change(tb_store_t *s, void *ctx, json_t **doc, tb_store_err_t *err)
{
    const create_ctx_t *c = ctx;
    return tb_store_topology_create(s, c->name, c->nodes, c->links, doc, err);
}

tb_status tb_store_topology_create_answered(tb_store_t *s, const char *name, const json_t *nodes,
                                            const json_t *links, tb_store_answer_t *answer,
                                            json_t **doc, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    create_ctx_t c = {name, nodes, links};
    return answered(s, answer, create_change, &c, doc, err);
}

typedef struct transition_ctx {
    const char *id;
    tb_topology_status expected_from, to;
    const char *reason;
    tb_topology_status previous;
} transition_ctx_t;

static tb_status transition_change(tb_store_t *s, void *ctx, json_t **result, tb_store_err_t *err)
{
    transition_ctx_t *c = ctx;
    tb_status st = tb_store_topology_transition(s, c->id, c->expected_from, c->to, c->reason,
                                                &c->previous, err);
    if (st)
        return st;
    *result = json_pack("{s:s, s:s, s:s}", "id", c->id, "status", tb_topology_status_name(c->to),
                        "previous", tb_topology_status_name(c->previous));
    return TB_OK;
}

tb_status tb_store_topology_transition_answered(tb_store_t *s, const char *id,
                                                tb_topology_status expected_from,
                                                tb_topology_status to, const char *reason,
                                                tb_store_answer_t *answer,
                                                tb_topology_status *previous, tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    transition_ctx_t c = {id, expected_from, to, reason, TB_TOPOLOGY_ANY};
    json_t *result = NULL;
    tb_status st = answered(s, answer, transition_change, &c, &result, err);
    json_decref(result);
    if (previous)
        *previous = c.previous;
    return st;
}

typedef struct enqueue_ctx {
    const char *topology_id, *op;
    const json_t *payload;
    int64_t expected_version;
} enqueue_ctx_t;

static tb_status enqueue_change(tb_store_t *s, void *ctx, json_t **row, tb_store_err_t *err)
{
    const enqueue_ctx_t *c = ctx;
    return tb_store_mutation_enqueue(s, c->topology_id, c->op, c->payload, c->expected_version, row,
                                     err);
}

tb_status tb_store_mutation_enqueue_answered(tb_store_t *s, const char *topology_id, const char *op,
                                             const json_t *payload, int64_t expected_version,
                                             tb_store_answer_t *answer, json_t **row,
                                             tb_store_err_t *err)
{
    tb_store_err_t scratch;
    err = tb__store_err_reset(err, &scratch);
    enqueue_ctx_t c = {topology_id, op, payload, expected_version};
    json_t *result = NULL;
    tb_status st = answered(s, answer, enqueue_change, &c, &result, err);
    if (row)
        *row = result;
    else
        json_decref(result);
    return st;
}
