/*
 * PostgreSQL backend: the claims of deploys and teardowns, starting and
 * releasing claims, stale-claim recovery and retention pruning, each one
 * READ COMMITTED transaction (tb__pg_tx). Every time is the server's clock
 * (DB_NOW_MS in store_pg.c), so mutators on several hosts judge leases
 * alike.
 *
 * Locks: a transition claim takes the topology row with SKIP LOCKED (a
 * claimer never waits); finishing, releasing and recovering lock it and
 * wait. Ending a mutation's claim locks the mutation row, then its
 * topology's (the order of store_pg_mutation.c); recovery and a restarted
 * worker's release select their rows FOR UPDATE SKIP LOCKED, so a claim
 * being finished or recovered elsewhere is left to that transaction. Every
 * event is inserted under its topology's row lock (store_pg_outbox.c).
 */
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"
#include "tb/topic.h"

/* The deploy/teardown claim of a topology (TB_PG_TOPO_CLAIM_LOCK). */
typedef struct topo_claim {
    tb_topology_status status;
    int64_t version, seq, token, attempts;
    bool held, started;
    tb_store_claim_kind kind;
    char worker[TB_STORE_WORKER_BUF_SIZE];
} topo_claim_t;

/* Reads and locks (waiting) topology id's claim, inside a transaction. */
static tb_status topo_claim_read(tb_pg_store_t *q, const char *id, topo_claim_t *out,
                                 tb_store_err_t *err)
{
    memset(out, 0, sizeof *out);
    const char *values[] = {id};
    PGresult *res = NULL;
    tb_status st =
        tb__pg_query(q, TB_PG_TOPO_CLAIM_LOCK, 1, values, &res, "read topology claim", err);
    if (st)
        return st;
    if (PQntuples(res) == 0) {
        st = tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND, "no such topology");
    } else {
        const char *worker = tb__pg_text(res, 0, 3);
        out->version = tb__pg_int64(res, 0, 1);
        out->seq = tb__pg_int64(res, 0, 2);
        out->held = worker != NULL;
        out->token = tb__pg_int64(res, 0, 5);
        out->started = strcmp(tb__pg_text(res, 0, 6), "t") == 0;
        out->attempts = tb__pg_int64(res, 0, 7);
        if (tb_topology_status_parse(tb__pg_text(res, 0, 0), &out->status) ||
            (worker && (strlen(worker) >= sizeof out->worker ||
                        !tb__store_claim_kind_parse(tb__pg_text(res, 0, 4), &out->kind))))
            st = tb__pg_corrupt(q, "topology claim", id, err);
        else if (worker)
            memcpy(out->worker, worker, strlen(worker) + 1);
    }
    PQclear(res);
    return st;
}

static tb_status stale(const tb_store_claim_t *claim, tb_store_err_t *err)
{
    return tb__store_fail(err, TB_ECONFLICT, TB_STORE_R_STALE_CLAIM,
                          "the %s claim with token %lld is no longer %s's: it was recovered or "
                          "reclaimed",
                          tb_store_claim_kind_name(claim->kind), (long long)claim->token,
                          claim->worker);
}

static tb_status check_topo_claim(const topo_claim_t *tc, const tb_store_claim_t *claim,
                                  tb_store_err_t *err)
{
    if (tc->held && tc->kind == claim->kind && tc->token == claim->token &&
        strcmp(tc->worker, claim->worker) == 0)
        return TB_OK;
    return stale(claim, err);
}

static tb_status clear_topo_claim(tb_pg_store_t *q, const char *id, int64_t attempts,
                                  tb_store_err_t *err)
{
    tb_pg_int_t a = tb__pg_int(attempts);
    const char *values[] = {id, a.s};
    return tb__pg_command(q, TB_PG_TOPO_CLEAR_CLAIM, 2, values, "end topology claim", err);
}

/* Ends a topology's claim with status `to`, if it is still in the claimed status. */
static tb_status end_transition(tb_pg_store_t *q, const char *id, const topo_claim_t *tc,
                                tb_topology_status to, const char *reason,
                                tb_topology_status *now, tb_store_err_t *err)
{
    tb_status st = clear_topo_claim(q, id, 0, err);
    *now = tc->status;
    if (!st && tc->status == tb__store_claim_status(tc->kind)) {
        st = tb__pg_set_status(q, id, tc->status, to, tc->version, reason, err);
        *now = to;
    }
    return st;
}

/* Ends a topology's claim without a verdict (tb__store_claim_fate). */
static tb_status end_topo_claim(tb_pg_store_t *q, const char *id, const topo_claim_t *tc,
                                bool expired, tb_store_recovery_t *out, tb_store_err_t *err)
{
    tb__claim_fate fate = tb__store_claim_fate(tc->started, tc->attempts, expired);
    if (fate != TB__FATE_INTERRUPTED) {
        out->requeued++;
        return clear_topo_claim(q, id, tc->attempts + (fate == TB__FATE_REQUEUE_ONCE), err);
    }
    out->failed++;
    tb_topology_status to =
        tc->kind == TB_CLAIM_DEPLOY ? TB_TOPOLOGY_FAILED : TB_TOPOLOGY_TORN_DOWN;
    tb_topology_status now;
    return end_transition(q, id, tc, to, TB__STORE_INTERRUPTED, &now, err);
}

typedef struct claim_ctx {
    const char *topology_id, *worker;
    tb_store_claim_t *claim;
} claim_ctx_t;

static tb_status transition_claim_tx(tb_pg_store_t *q, void *ctx, json_t **doc,
                                     tb_store_err_t *err)
{
    claim_ctx_t *c = ctx;
    const char *values[] = {c->topology_id, NULL, NULL, NULL};
    PGresult *res = NULL;
    tb_status st = tb__pg_query(q, TB_PG_TOPO_TRY_LOCK, 1, values, &res, "lock topology", err);
    if (st)
        return st;
    bool locked = PQntuples(res) == 1;
    const char *status = locked ? tb__pg_text(res, 0, 1) : "";
    bool deploying = strcmp(status, "deploying") == 0;
    bool wanted = deploying || strcmp(status, "tearing_down") == 0;
    bool held = locked && strcmp(tb__pg_text(res, 0, 3), "t") == 0;
    int64_t token = locked ? tb__pg_int64(res, 0, 2) + 1 : 0;
    PQclear(res);
    bool busy = false;
    if (wanted && !held) {
        /* The hook must see the document after the mutation in flight, if any.
         * No mutation can be claimed meanwhile: claims need the row lock held here. */
        st = tb__pg_query(q, TB_PG_MUT_ANY_APPLYING, 1, values, &res,
                          "look for applying mutations", err);
        if (st)
            return st;
        busy = PQntuples(res) > 0;
        PQclear(res);
    }
    if (!wanted || held || busy)
        return tb__store_fail(err, TB_ENOTFOUND, TB_STORE_R_NOT_FOUND,
                              "no claimable deploy or teardown for this topology");
    c->claim->kind = deploying ? TB_CLAIM_DEPLOY : TB_CLAIM_TEARDOWN;
    c->claim->token = token;
    tb_pg_int_t tok = tb__pg_int(token);
    values[1] = tok.s;
    values[2] = tb_store_claim_kind_name(c->claim->kind);
    values[3] = c->worker;
    st = tb__pg_query(q, TB_PG_TOPO_SET_CLAIM, 4, values, &res, "claim topology", err);
    if (st)
        return st;
    st = tb__pg_topology_doc(q, res, doc, err);
    PQclear(res);
    return st;
}

tb_status tb__pg_transition_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err)
{
    claim_ctx_t c = {topology_id, worker, claim};
    return tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, transition_claim_tx, &c, doc, err);
}

tb_status tb__pg_claim_start(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err)
{
    tb_pg_store_t *q = tb__pg_from(s);
    bool mutation = claim->kind == TB_CLAIM_MUTATION;
    tb_pg_int_t tok = tb__pg_int(claim->token);
    const char *values[] = {mutation ? claim->mutation_id : claim->topology_id, tok.s,
                            claim->worker};
    PGresult *res = NULL;
    /* One statement, so atomic: it matches only while the claim is the caller's. */
    tb_status st = tb__pg_query(q, mutation ? TB_PG_MUT_START : TB_PG_TOPO_START, 3, values, &res,
                                "start claim", err);
    if (st)
        return st;
    if (atoi(PQcmdTuples(res)) != 1)
        st = stale(claim, err);
    PQclear(res);
    return st;
}

typedef struct end_ctx {
    const tb_store_claim_t *claim; /* one claim (release), or NULL */
    const char *worker;            /* every claim of a worker (release), or NULL */
    int64_t ahead_ms, lease_ms;    /* else: stale claims (recovery) */
    tb_store_recovery_t counts;
} end_ctx_t;

static tb_status release_one_tx(tb_pg_store_t *q, void *ctx, json_t **out, tb_store_err_t *err)
{
    (void)out;
    end_ctx_t *c = ctx;
    c->counts = (tb_store_recovery_t){0};
    const tb_store_claim_t *claim = c->claim;
    if (claim->kind == TB_CLAIM_MUTATION) {
        tb_pg_mut_claim_t mc;
        tb_status st = tb__pg_mut_claim_read(q, claim->mutation_id, &mc, err);
        if (!st)
            st = tb__pg_check_claim(&mc, claim, err);
        return st ? st
                  : tb__pg_end_mutation_claim(q, claim->mutation_id, &mc, false, &c->counts, err);
    }
    topo_claim_t tc;
    tb_status st = topo_claim_read(q, claim->topology_id, &tc, err);
    if (!st)
        st = check_topo_claim(&tc, claim, err);
    return st ? st : end_topo_claim(q, claim->topology_id, &tc, false, &c->counts, err);
}

tb_status tb__pg_claim_release(tb_store_t *s, const tb_store_claim_t *claim,
                               tb_store_recovery_t *out, tb_store_err_t *err)
{
    end_ctx_t c = {.claim = claim};
    json_t *unused = NULL;
    tb_status st = tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, release_one_tx, &c, &unused, err);
    *out = c.counts;
    return st;
}

/* The ids (column 0) of a result, as a new array. */
static json_t *ids_of(const PGresult *res)
{
    json_t *ids = json_array();
    for (int r = 0; r < PQntuples(res); r++)
        json_array_append_new(ids, json_string(tb__pg_text(res, r, 0)));
    return ids;
}

/* Selects (and locks) the claims to end, then ends each without a verdict. */
static tb_status end_many_tx(tb_pg_store_t *q, void *ctx, json_t **out, tb_store_err_t *err)
{
    (void)out;
    end_ctx_t *c = ctx;
    c->counts = (tb_store_recovery_t){0};
    bool expired = c->worker == NULL;
    tb_pg_int_t ahead = tb__pg_int(c->ahead_ms), lease = tb__pg_int(c->lease_ms);
    const char *by_worker[] = {c->worker};
    const char *by_age[] = {ahead.s, lease.s};
    PGresult *res = NULL;
    tb_status st = expired ? tb__pg_query(q, TB_PG_MUT_STALE, 2, by_age, &res, "find stale claims",
                                          err)
                           : tb__pg_query(q, TB_PG_MUT_OWNED, 1, by_worker, &res,
                                          "find a worker's claims", err);
    if (st)
        return st;
    json_t *ids = ids_of(res);
    PQclear(res);
    for (size_t i = 0; !st && i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        tb_pg_mut_claim_t mc;
        st = tb__pg_mut_claim_read(q, id, &mc, err);
        if (!st && mc.applying)
            st = tb__pg_end_mutation_claim(q, id, &mc, expired, &c->counts, err);
    }
    json_decref(ids);
    if (st)
        return st;
    st = expired ? tb__pg_query(q, TB_PG_TOPO_STALE, 2, by_age, &res, "find stale claims", err)
                 : tb__pg_query(q, TB_PG_TOPO_OWNED, 1, by_worker, &res, "find a worker's claims",
                                err);
    if (st)
        return st;
    ids = ids_of(res);
    PQclear(res);
    for (size_t i = 0; !st && i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        topo_claim_t tc;
        st = topo_claim_read(q, id, &tc, err);
        if (!st && tc.held)
            st = end_topo_claim(q, id, &tc, expired, &c->counts, err);
    }
    json_decref(ids);
    return st;
}

tb_status tb__pg_release_worker_claims(tb_store_t *s, const char *worker, tb_store_recovery_t *out,
                                       tb_store_err_t *err)
{
    end_ctx_t c = {.worker = worker};
    json_t *unused = NULL;
    tb_status st = tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, end_many_tx, &c, &unused, err);
    *out = st ? (tb_store_recovery_t){0} : c.counts;
    return st;
}

tb_status tb__pg_recover_stale(tb_store_t *s, int64_t ahead_ms, int64_t lease_ms,
                               tb_store_recovery_t *out, tb_store_err_t *err)
{
    end_ctx_t c = {.ahead_ms = ahead_ms, .lease_ms = lease_ms};
    json_t *unused = NULL;
    tb_status st = tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, end_many_tx, &c, &unused, err);
    *out = st ? (tb_store_recovery_t){0} : c.counts;
    return st;
}

typedef struct finish_ctx {
    const tb_store_claim_t *claim;
    bool ok;
    const char *reason;
    tb_topology_status now;
} finish_ctx_t;

static tb_status finish_tx(tb_pg_store_t *q, void *ctx, json_t **out, tb_store_err_t *err)
{
    (void)out;
    finish_ctx_t *c = ctx;
    topo_claim_t tc;
    tb_status st = topo_claim_read(q, c->claim->topology_id, &tc, err);
    if (!st)
        st = check_topo_claim(&tc, c->claim, err);
    if (st)
        return st;
    tb_topology_status to = c->claim->kind == TB_CLAIM_TEARDOWN ? TB_TOPOLOGY_TORN_DOWN
                            : c->ok                             ? TB_TOPOLOGY_ACTIVE
                                                                : TB_TOPOLOGY_FAILED;
    return end_transition(q, c->claim->topology_id, &tc, to, c->reason, &c->now, err);
}

tb_status tb__pg_transition_finish(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                   const char *reason, tb_topology_status *now,
                                   tb_store_err_t *err)
{
    finish_ctx_t c = {claim, ok, reason, TB_TOPOLOGY_ANY};
    json_t *unused = NULL;
    tb_status st = tb__pg_tx(tb__pg_from(s), TB_PG_BEGIN, finish_tx, &c, &unused, err);
    *now = c.now;
    return st;
}

tb_status tb__pg_mutation_prune(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                tb_store_err_t *err)
{
    tb_pg_int_t retention = tb__pg_int(retention_ms), limit = tb__pg_int(max);
    const char *values[] = {retention.s, limit.s};
    PGresult *res = NULL;
    /* One statement: its own short transaction. */
    tb_status st = tb__pg_query(tb__pg_from(s), TB_PG_MUT_PRUNE, 2, values, &res,
                                "prune settled mutations", err);
    if (st)
        return st;
    *deleted = atoi(PQcmdTuples(res));
    PQclear(res);
    return TB_OK;
}
