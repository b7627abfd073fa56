/*
 * The store's vocabulary, independent of any backend: status and state
 * names, the status machine of CONTRACT §4, the op list, reason codes,
 * timestamps and the typed accessors over rows and documents. Pure, except
 * tb__store_now_ms, which reads the wall clock. Any thread.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store_int.h"
#include "tb/clock.h"

static const char *const status_names[] = {
    [TB_TOPOLOGY_PENDING] = "pending",           [TB_TOPOLOGY_DEPLOYING] = "deploying",
    [TB_TOPOLOGY_ACTIVE] = "active",             [TB_TOPOLOGY_DEGRADED] = "degraded",
    [TB_TOPOLOGY_FAILED] = "failed",             [TB_TOPOLOGY_TEARING_DOWN] = "tearing_down",
    [TB_TOPOLOGY_TORN_DOWN] = "torn_down",       [TB_TOPOLOGY_ANY] = "any",
};

static const char *const state_names[] = {
    [TB_MUTATION_PENDING] = "pending",
    [TB_MUTATION_APPLYING] = "applying",
    [TB_MUTATION_APPLIED] = "applied",
    [TB_MUTATION_FAILED] = "failed",
};

static const char *const op_names[] = {
    "add_node", "update_node", "remove_node", "add_link", "remove_link",
};

#define BIT(s) (1u << (s))

/* Legal successors of each status: pending → deploying → active ⇄ degraded;
 * deploying → failed; active/degraded/failed/deploying → tearing_down →
 * torn_down, which is terminal. */
static const unsigned next_states[] = {
    [TB_TOPOLOGY_PENDING] = BIT(TB_TOPOLOGY_DEPLOYING),
    [TB_TOPOLOGY_DEPLOYING] =
        BIT(TB_TOPOLOGY_ACTIVE) | BIT(TB_TOPOLOGY_FAILED) | BIT(TB_TOPOLOGY_TEARING_DOWN),
    [TB_TOPOLOGY_ACTIVE] = BIT(TB_TOPOLOGY_DEGRADED) | BIT(TB_TOPOLOGY_TEARING_DOWN),
    [TB_TOPOLOGY_DEGRADED] = BIT(TB_TOPOLOGY_ACTIVE) | BIT(TB_TOPOLOGY_TEARING_DOWN),
    [TB_TOPOLOGY_FAILED] = BIT(TB_TOPOLOGY_TEARING_DOWN),
    [TB_TOPOLOGY_TEARING_DOWN] = BIT(TB_TOPOLOGY_TORN_DOWN),
    [TB_TOPOLOGY_TORN_DOWN] = 0,
};

const char *tb_topology_status_name(tb_topology_status st)
{
    if ((unsigned)st < TB_ARRAY_LEN(status_names))
        return status_names[st];
    return "unknown";
}

tb_status tb_topology_status_parse(const char *name, tb_topology_status *out)
{
    for (unsigned i = 0; name && i < TB_TOPOLOGY_ANY; i++) {
        if (strcmp(name, status_names[i]) == 0) {
            *out = (tb_topology_status)i;
            return TB_OK;
        }
    }
    return TB_EINVAL;
}

bool tb_topology_transition_legal(tb_topology_status from, tb_topology_status to)
{
    if ((unsigned)from >= TB_ARRAY_LEN(next_states) || (unsigned)to >= TB_TOPOLOGY_ANY)
        return false;
    return (next_states[from] & BIT(to)) != 0;
}

bool tb_topology_status_mutable(tb_topology_status st)
{
    return st == TB_TOPOLOGY_PENDING || st == TB_TOPOLOGY_ACTIVE || st == TB_TOPOLOGY_DEGRADED;
}

const char *tb_mutation_state_name(tb_mutation_state st)
{
    if ((unsigned)st < TB_ARRAY_LEN(state_names))
        return state_names[st];
    return "unknown";
}

tb_status tb_mutation_state_parse(const char *name, tb_mutation_state *out)
{
    for (unsigned i = 0; name && i < TB_ARRAY_LEN(state_names); i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (tb_mutation_state)i;
            return TB_OK;
        }
    }
    return TB_EINVAL;
}

bool tb_mutation_op_valid(const char *op)
{
    for (size_t i = 0; op && i < TB_ARRAY_LEN(op_names); i++) {
        if (strcmp(op, op_names[i]) == 0)
            return true;
    }
    return false;
}

const char *tb_store_reason_code(tb_store_reason reason)
{
    switch (reason) {
    case TB_STORE_R_NONE:
        return "none";
    case TB_STORE_R_INVALID:
        return "invalid";
    case TB_STORE_R_NOT_FOUND:
        return "not_found";
    case TB_STORE_R_NOT_MUTABLE:
        return "not_mutable";
    case TB_STORE_R_VERSION_CONFLICT:
        return "version_conflict";
    case TB_STORE_R_ILLEGAL_TRANSITION:
        return "illegal_transition";
    case TB_STORE_R_WRONG_STATE:
        return "wrong_state";
    case TB_STORE_R_SCHEMA_TOO_NEW:
        return "schema_too_new";
    case TB_STORE_R_BUSY:
        return "busy";
    case TB_STORE_R_BACKEND:
        return "backend";
    case TB_STORE_R_STALE_CLAIM:
        return "stale_claim";
    }
    return "unknown";
}

static const char *const claim_kind_names[] = {
    [TB_CLAIM_MUTATION] = "mutation",
    [TB_CLAIM_DEPLOY] = "deploy",
    [TB_CLAIM_TEARDOWN] = "teardown",
};

const char *tb_store_claim_kind_name(tb_store_claim_kind kind)
{
    if ((unsigned)kind < TB_ARRAY_LEN(claim_kind_names))
        return claim_kind_names[kind];
    return "unknown";
}

bool tb__store_claim_kind_parse(const char *name, tb_store_claim_kind *out)
{
    if (name && strcmp(name, "deploy") == 0)
        *out = TB_CLAIM_DEPLOY;
    else if (name && strcmp(name, "teardown") == 0)
        *out = TB_CLAIM_TEARDOWN;
    else
        return false;
    return true;
}

tb_topology_status tb__store_claim_status(tb_store_claim_kind kind)
{
    switch (kind) {
    case TB_CLAIM_DEPLOY:
        return TB_TOPOLOGY_DEPLOYING;
    case TB_CLAIM_TEARDOWN:
        return TB_TOPOLOGY_TEARING_DOWN;
    case TB_CLAIM_MUTATION:
        break;
    }
    return TB_TOPOLOGY_ANY;
}

bool tb_store_worker_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > TB_STORE_WORKER_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

tb__claim_fate tb__store_claim_fate(bool started, int64_t attempts, bool expired)
{
    /* A side effect that may have happened is never run again. */
    if (started)
        return TB__FATE_INTERRUPTED;
    /* Given back by its worker: nothing happened and nothing was lost. */
    if (!expired)
        return TB__FATE_REQUEUE;
    /* Lost without a word: once more, then it is not worth another worker. */
    return attempts == 0 ? TB__FATE_REQUEUE_ONCE : TB__FATE_INTERRUPTED;
}

tb_status tb__store_fail(tb_store_err_t *err, tb_status st, tb_store_reason reason,
                         const char *fmt, ...)
{
    err->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return st;
}

int64_t tb__store_now_ms(void)
{
    return (int64_t)(tb_clock_wall() * 1000.0);
}

json_t *tb__store_time_json(int64_t ms)
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* Sized for any int the fields could hold, not only real dates. */
    char buf[96];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return json_string(buf);
}

static const char *get_string(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

const char *tb_store_doc_id(const json_t *doc)
{
    return get_string(doc, "id");
}

const char *tb_store_doc_status(const json_t *doc)
{
    return get_string(doc, "status");
}

int64_t tb_store_doc_version(const json_t *doc)
{
    const json_t *v = json_object_get(doc, "version");
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

const char *tb_store_row_id(const json_t *row)
{
    return get_string(row, "id");
}

const char *tb_store_row_topology_id(const json_t *row)
{
    return get_string(row, "topology_id");
}

const char *tb_store_row_op(const json_t *row)
{
    return get_string(row, "op");
}

const char *tb_store_row_state(const json_t *row)
{
    return get_string(row, "state");
}

const json_t *tb_store_row_payload(const json_t *row)
{
    const json_t *p = json_object_get(row, "payload");
    return json_is_object(p) ? p : NULL;
}
