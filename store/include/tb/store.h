/*
 * The store (DESIGN "The store"): topologies, their mutation queue, the
 * status machine of CONTRACT §4, optimistic versions and atomic claims.
 * Backend-neutral: tb_store_open picks a backend by URL (`sqlite:PATH`,
 * `postgres://user:pass@host:port/db`); callers never see which.
 *
 * Outputs are jansson values in the exact shapes of CONTRACT §4, so the HTTP
 * layer can send them as they are:
 *   document      {"id","name","status","version","nodes","links","created_at","updated_at"}
 *   mutation row  {"id","topology_id","op","payload","state","error","attempts",
 *                  "created_at","updated_at"}
 *   list entry    {"id","name","status","version","updated_at"}
 * Timestamps are RFC 3339 UTC strings with milliseconds
 * ("2025-11-22T08:13:20.123Z"). A new topology has version 0; every applied
 * mutation adds one. `error` is null unless the row failed. `attempts`
 * counts claims lost without a word from their worker (see "Claims").
 *
 * Threads: a tb_store_t may be called from any thread; calls on one store
 * are serialised by its mutex. Open one store per process (or per thread
 * that must not wait for others); several processes may share one file or
 * one PostgreSQL database.
 *
 * Unavailable database (PostgreSQL): a call that finds its connection lost,
 * refused or not answering within the timeouts fails at once with
 * TB_ECLOSED (reason TB_STORE_R_BACKEND, message "the database is
 * unavailable (…)"): nothing was done, or, for a write whose connection
 * dropped after it was sent, its outcome is unknown. The next call
 * reconnects by itself (after a failed attempt, calls within the next
 * 500 ms fail at once without trying), so callers answer 503 and retry; no
 * reopen is needed. No call waits longer than the connect timeout (3 s
 * unless the URL sets connect_timeout) plus the busy timeout plus 1 s.
 * SQLite never returns TB_ECLOSED.
 */
#ifndef TB_STORE_H
#define TB_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "tb/base.h"
#include "tb/event.h"
#include "tb/topic.h"

#define TB_STORE_NAME_MAX 200             /* bytes of a topology name (UTF-8) */
#define TB_STORE_TEXT_MAX 200             /* bytes of a node kind or label */
#define TB_STORE_DOC_MAX (1024 * 1024)    /* bytes of a serialised {"nodes","links"} */
#define TB_STORE_PAYLOAD_MAX (64 * 1024)  /* bytes of a serialised mutation payload */
#define TB_STORE_REASON_MAX 1024          /* bytes of a failure reason */
#define TB_STORE_ID_BUF_SIZE 19           /* "t_"/"m_" + 16 hex + NUL */
#define TB_STORE_LEASE_DEFAULT_S 60       /* claim lease before recovery */
#define TB_STORE_BUSY_TIMEOUT_DEFAULT_MS 5000
#define TB_STORE_NO_VERSION (-1)          /* enqueue without an expected version */

typedef struct tb_store tb_store_t;

/** Topology status (CONTRACT §4). */
typedef enum tb_topology_status {
    TB_TOPOLOGY_PENDING,
    TB_TOPOLOGY_DEPLOYING,
    TB_TOPOLOGY_ACTIVE,
    TB_TOPOLOGY_DEGRADED,
    TB_TOPOLOGY_FAILED,
    TB_TOPOLOGY_TEARING_DOWN,
    TB_TOPOLOGY_TORN_DOWN,
    TB_TOPOLOGY_ANY, /* "any current status" for tb_store_topology_transition; never stored */
} tb_topology_status;

/** Mutation state (CONTRACT §4). */
typedef enum tb_mutation_state {
    TB_MUTATION_PENDING,
    TB_MUTATION_APPLYING,
    TB_MUTATION_APPLIED,
    TB_MUTATION_FAILED,
} tb_mutation_state;

/** Why a call failed, finer than tb_status; the HTTP layer maps it to its codes. */
typedef enum tb_store_reason {
    TB_STORE_R_NONE = 0,
    TB_STORE_R_INVALID,            /* TB_EINVAL: input breaks a documented rule */
    TB_STORE_R_NOT_FOUND,          /* TB_ENOTFOUND */
    TB_STORE_R_NOT_MUTABLE,        /* TB_ECONFLICT: topology status does not accept mutations */
    TB_STORE_R_VERSION_CONFLICT,   /* TB_ECONFLICT: current/expected are set */
    TB_STORE_R_ILLEGAL_TRANSITION, /* TB_ECONFLICT: the status machine forbids it */
    TB_STORE_R_WRONG_STATE,        /* TB_ECONFLICT: status or mutation state is not the expected one */
    TB_STORE_R_SCHEMA_TOO_NEW,     /* TB_EINVAL at open: the file was written by a newer binary */
    TB_STORE_R_BUSY,               /* TB_ETIMEDOUT: the database stayed locked past the timeout */
    TB_STORE_R_BACKEND,            /* TB_EBACKEND: the backend failed (logged there) */
    TB_STORE_R_STALE_CLAIM,        /* TB_ECONFLICT: the claim is no longer the caller's */
} tb_store_reason;

/** Details of a failure; every out-param `err` may be NULL. */
typedef struct tb_store_err {
    tb_store_reason reason;
    int64_t current;  /* TB_STORE_R_VERSION_CONFLICT: the topology's version */
    int64_t expected; /* TB_STORE_R_VERSION_CONFLICT: the version the caller expected */
    char message[256]; /* one human-readable sentence, "" on success */
} tb_store_err_t;

typedef struct tb_store_options {
    int64_t lease_s;        /* claim lease for tb_store_recover_stale; 0 = 60 s */
    int busy_timeout_ms;    /* wait for a locked database; 0 = 5000 ms (PostgreSQL: also
                               the statement timeout) */
    bool no_outbox;         /* write no change events: for a process without a bus, whose
                               events nobody would relay (see "The outbox" below) */
    bool sqlite_normal_sync; /* SQLite: synchronous=NORMAL instead of FULL: a commit survives a
                                process crash but may be lost with the machine's power */
    int64_t idempotency_ttl_ms;   /* how long an Idempotency-Key answer is kept; 0 = 24 h
                                     (shorter only for tests: CONTRACT §4 says 24 h) */
    int64_t idempotency_lease_ms; /* how long a reservation blocks its key without an answer
                                     (its owner may have crashed); 0 = 60 s; < the TTL */
} tb_store_options_t;

/** Stable snake_case code of a reason ("version_conflict", "not_mutable", ...); never NULL. */
const char *tb_store_reason_code(tb_store_reason reason);

/** Name of a status ("tearing_down"); "any" for TB_TOPOLOGY_ANY. Never NULL. */
const char *tb_topology_status_name(tb_topology_status st);
/** Parses a status name (not "any"); TB_EINVAL for anything else. */
tb_status tb_topology_status_parse(const char *name, tb_topology_status *out);
/** True if the status machine of CONTRACT §4 allows from → to. */
bool tb_topology_transition_legal(tb_topology_status from, tb_topology_status to);
/** True if mutations may be enqueued in this status (pending, active, degraded). */
bool tb_topology_status_mutable(tb_topology_status st);

/** Name of a state ("applying"); never NULL. */
const char *tb_mutation_state_name(tb_mutation_state st);
/** Parses a state name; TB_EINVAL for anything else. */
tb_status tb_mutation_state_parse(const char *name, tb_mutation_state *out);
/** True if op is one of the CONTRACT §4 ops (add_node, update_node, remove_node, add_link, remove_link). */
bool tb_mutation_op_valid(const char *op);

/**
 * Checks nodes and links against CONTRACT §4: arrays of objects with exactly
 * the documented fields and types, node and link ids in the token grammar and
 * unique, links between existing nodes, kind/label at most TB_STORE_TEXT_MAX
 * bytes, props objects. Either may be NULL (an empty array). Pure; any thread.
 * TB_OK or TB_EINVAL with err->message naming the first offence.
 */
tb_status tb_store_validate_graph(const json_t *nodes, const json_t *links, tb_store_err_t *err);

/**
 * Opens the store named by url (`sqlite:PATH`, PATH created if missing; or
 * `postgres://` / `postgresql://` URL in libpq's URI form, database created
 * beforehand), runs forward schema migrations and prepares every
 * statement. opts may be NULL for defaults. *out is a new store, or NULL on
 * failure. TB_EINVAL (bad URL or options, unknown scheme, schema newer than
 * this binary: reason TB_STORE_R_SCHEMA_TOO_NEW), TB_ECLOSED (PostgreSQL
 * server unreachable or refusing the login), TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_open(tb_store_t **out, const char *url, const tb_store_options_t *opts,
                        tb_store_err_t *err);

/** Closes the store and frees it. Accepts NULL. No call may be running on it. */
void tb_store_close(tb_store_t *s);

/** The backend's name ("sqlite", "postgres"). Borrowed, static. */
const char *tb_store_backend(const tb_store_t *s);

/**
 * Creates a topology with a fresh id (`t_` + 16 hex), status pending and
 * version 0. nodes and links may be NULL (empty). *doc is a new document.
 * TB_EINVAL (name not 1..TB_STORE_NAME_MAX bytes of UTF-8 without control
 * characters, invalid graph, document over TB_STORE_DOC_MAX), TB_ETIMEDOUT,
 * TB_EBACKEND.
 */
tb_status tb_store_topology_create(tb_store_t *s, const char *name, const json_t *nodes,
                                   const json_t *links, json_t **doc, tb_store_err_t *err);

/** *doc is a new document. TB_ENOTFOUND (also for a malformed id), TB_ETIMEDOUT, TB_EBACKEND. */
tb_status tb_store_topology_get(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err);

/** *list is a new array of list entries, oldest topology first. TB_ETIMEDOUT, TB_EBACKEND. */
tb_status tb_store_topology_list(tb_store_t *s, json_t **list, tb_store_err_t *err);

/**
 * Moves topology id to status `to` if the status machine allows it from the
 * current status and, unless expected_from is TB_TOPOLOGY_ANY, the current
 * status is expected_from, and records the `status` event {"state",
 * "previous","version","reason"?} in the outbox in the same transaction.
 * reason (may be NULL; 1..TB_STORE_REASON_MAX bytes of UTF-8) says why.
 * *previous (may be NULL) gets the status before. Changes nothing on error.
 * TB_EINVAL (to is ANY, bad reason), TB_ENOTFOUND, TB_ECONFLICT
 * (TB_STORE_R_WRONG_STATE: current != expected_from;
 * TB_STORE_R_ILLEGAL_TRANSITION), TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_topology_transition(tb_store_t *s, const char *id,
                                       tb_topology_status expected_from, tb_topology_status to,
                                       const char *reason, tb_topology_status *previous,
                                       tb_store_err_t *err);

/**
 * Enqueues a mutation (`m_` + 16 hex, state pending) on topology_id. op must
 * be a CONTRACT op, payload an object of at most TB_STORE_PAYLOAD_MAX bytes.
 * expected_version is a version or TB_STORE_NO_VERSION: the topology must be
 * at it now, and it is stored with the row, so the mutation applies only if
 * the topology is still at it when its turn comes (compare-and-set; see
 * tb_store_mutation_mark_applied). *row (may be NULL) is the new row. TB_EINVAL, TB_ENOTFOUND, TB_ECONFLICT (TB_STORE_R_NOT_MUTABLE
 * or TB_STORE_R_VERSION_CONFLICT with current/expected), TB_ETIMEDOUT,
 * TB_EBACKEND.
 */
tb_status tb_store_mutation_enqueue(tb_store_t *s, const char *topology_id, const char *op,
                                    const json_t *payload, int64_t expected_version, json_t **row,
                                    tb_store_err_t *err);

/**
 * *rows is a new array of the topology's mutation rows, oldest first, only
 * those in `state` unless state is NULL. TB_EINVAL (state is not a known
 * state name), TB_ENOTFOUND, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_mutation_list(tb_store_t *s, const char *topology_id, const char *state,
                                 json_t **rows, tb_store_err_t *err);

/** *rows is a new array of the rows pending or applying, oldest first. As tb_store_mutation_list. */
tb_status tb_store_mutation_in_flight(tb_store_t *s, const char *topology_id, json_t **rows,
                                      tb_store_err_t *err);

/**
 * The SSE snapshot read in one consistent transaction: *snap is a new
 * {"topology_id","status","version","in_flight":[rows]}; the caller adds
 * "bus". TB_ENOTFOUND, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_snapshot(tb_store_t *s, const char *topology_id, json_t **snap,
                            tb_store_err_t *err);

/**
 * *ids is a new array of the ids (strings) of topologies with at least one
 * pending mutation, the one waiting longest first. TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_topologies_with_pending(tb_store_t *s, json_t **ids, tb_store_err_t *err);

/*
 * Claims (DESIGN "The store"). A mutation, and the deploy or teardown of a
 * topology, is worked on only under a claim: one atomic statement gives it
 * to one worker, records who holds it (`claimed_by`, the worker's id: 1..64
 * bytes of [A-Za-z0-9_.:-], stable across the worker's restarts) and hands
 * out a fencing token. Every claim of a topology (its mutations, deploys and
 * teardowns alike) gets a larger token than the one before, so a hook may
 * pass it on to a system that refuses older ones. Finishing a claim needs
 * its token: a worker whose claim was taken from it (its lease ran out, it
 * was stopped or restarted) is refused with TB_ECONFLICT, reason
 * TB_STORE_R_STALE_CLAIM, and nothing of its verdict is written.
 *
 * Before it starts its side effect (the apply hook) a worker marks the claim
 * started (tb_store_claim_start). A claim that ends without a verdict ends by
 * that mark:
 *   - not started: the work goes back to the queue. Given back by its worker
 *     (tb_store_claim_release, tb_store_release_worker_claims) it keeps its
 *     `attempts`; taken back after the lease (tb_store_recover_stale) it
 *     counts one attempt, and the second such loss fails it as below;
 *   - started: it is never run again (the side effect may have happened):
 *     a mutation fails with error "interrupted" (attempts + 1), a deploy
 *     fails and a teardown ends torn down, both with reason "interrupted".
 * A requeued mutation records `mutation.enqueued` again (same mutation_id,
 * with "attempts" and "requeued":true); an interrupted one records
 * `mutation.failed` and, if its topology was active, `status` → degraded.
 * Leases are judged by the database's clock, never the caller's.
 */

#define TB_STORE_WORKER_MAX 64
#define TB_STORE_WORKER_BUF_SIZE (TB_STORE_WORKER_MAX + 1)
#define TB_STORE_PRUNE_MAX 10000 /* rows one tb_store_mutation_prune call may delete */

/** What a claim is for. */
typedef enum tb_store_claim_kind {
    TB_CLAIM_MUTATION,
    TB_CLAIM_DEPLOY,   /* the topology is deploying */
    TB_CLAIM_TEARDOWN, /* the topology is tearing down */
} tb_store_claim_kind;

/** A claim as handed out; finishing it needs it unchanged. Plain data. */
typedef struct tb_store_claim {
    tb_store_claim_kind kind;
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    char mutation_id[TB_STORE_ID_BUF_SIZE]; /* TB_CLAIM_MUTATION; "" otherwise */
    char worker[TB_STORE_WORKER_BUF_SIZE];  /* who holds it */
    int64_t token;                          /* the fencing token (> 0) */
    int64_t expected_version; /* TB_CLAIM_MUTATION: the version it may apply to, or
                                 TB_STORE_NO_VERSION */
} tb_store_claim_t;

/** What recovery or a release did. */
typedef struct tb_store_recovery {
    int requeued; /* claims whose work went back to the queue */
    int failed;   /* claims ended as "interrupted" */
} tb_store_recovery_t;

/** "mutation", "deploy", "teardown". Never NULL. */
const char *tb_store_claim_kind_name(tb_store_claim_kind kind);

/** True if id is a worker id: 1..64 bytes of [A-Za-z0-9_.:-]. */
bool tb_store_worker_id_valid(const char *id);

/**
 * Atomically claims the oldest pending mutation of topology_id for worker
 * (one statement; two claimers never get the same row) and moves it to
 * applying, recording mutation.applying. Mutations of one topology are
 * applied in order: nothing is claimed while another of its rows is
 * applying, while it is deploying, or while its deploy or teardown is
 * claimed. *row is the new claimed row, *claim the claim. TB_EINVAL (bad
 * worker id), TB_ENOTFOUND (nothing claimable, or no such topology),
 * TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_mutation_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **row, tb_store_claim_t *claim, tb_store_err_t *err);

/**
 * Claims the pending deploy (status deploying) or teardown (tearing_down)
 * of topology_id for worker: granted when nobody holds it and no mutation of
 * the topology is applying (so the hook sees the document after it). *doc
 * is the new document, *claim the claim (kind TB_CLAIM_DEPLOY or
 * TB_CLAIM_TEARDOWN). Nothing is recorded in the outbox. TB_EINVAL,
 * TB_ENOTFOUND (nothing claimable), TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_transition_claim(tb_store_t *s, const char *topology_id, const char *worker,
                                    json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err);

/**
 * Marks claim's side effect started: from now on, losing the claim fails it
 * as interrupted instead of running it again. TB_ECONFLICT
 * (TB_STORE_R_STALE_CLAIM: the claim is no longer the caller's: do not start),
 * TB_EINVAL, TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_claim_start(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err);

/**
 * Gives a claim back without a verdict (after a store error, or at
 * shutdown): as described above, a claim not started goes back to the
 * queue keeping its attempts; a started one ends interrupted. *out (may be
 * NULL) says which. TB_ECONFLICT (TB_STORE_R_STALE_CLAIM), TB_EINVAL,
 * TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_claim_release(tb_store_t *s, const tb_store_claim_t *claim,
                                 tb_store_recovery_t *out, tb_store_err_t *err);

/**
 * Releases, as tb_store_claim_release, every claim held by worker: what a
 * restarted worker (same id) calls first, so its predecessor's work is not
 * left waiting for the lease. Only call it while this worker holds no live
 * claim. *out (may be NULL) gets the counts. TB_EINVAL, TB_ECLOSED,
 * TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_release_worker_claims(tb_store_t *s, const char *worker,
                                         tb_store_recovery_t *out, tb_store_err_t *err);

/**
 * Marks a claimed mutation applied and stores the topology's new nodes and
 * links (taken from `doc`, an object with "nodes" and "links" arrays, e.g. a
 * document as returned by get; other members are ignored) with new_version,
 * which must be the current version + 1, in one transaction; a degraded
 * topology becomes active again (recording `status` before
 * `mutation.applied`). The mutation's expected version, if it has one, must
 * still be the topology's version. *row (may be NULL) is the updated row.
 * TB_EINVAL (bad graph or size), TB_ENOTFOUND, TB_ECONFLICT
 * (TB_STORE_R_STALE_CLAIM; TB_STORE_R_VERSION_CONFLICT), TB_ECLOSED,
 * TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_mutation_mark_applied(tb_store_t *s, const tb_store_claim_t *claim,
                                         const json_t *doc, int64_t new_version, json_t **row,
                                         tb_store_err_t *err);

/**
 * Marks a claimed mutation failed with reason (1..TB_STORE_REASON_MAX bytes
 * of UTF-8). The document is unchanged. With degrade, an active topology
 * becomes degraded (recording `status` with the reason before
 * `mutation.failed`). *row (may be NULL) is the updated row. TB_EINVAL,
 * TB_ENOTFOUND, TB_ECONFLICT (TB_STORE_R_STALE_CLAIM), TB_ECLOSED,
 * TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_mutation_mark_failed(tb_store_t *s, const tb_store_claim_t *claim,
                                        const char *reason, bool degrade, json_t **row,
                                        tb_store_err_t *err);

/**
 * Finishes a claimed deploy or teardown: a deploy becomes active (ok) or
 * failed, a teardown torn_down (either way: the status machine has no other
 * way out of tearing_down), recording `status` with reason (may be NULL;
 * 1..TB_STORE_REASON_MAX bytes). If the topology left the claimed status
 * meanwhile (a teardown requested during a deploy), the claim ends and the
 * status stays. *now (may be NULL) gets the status afterwards. TB_EINVAL,
 * TB_ENOTFOUND, TB_ECONFLICT (TB_STORE_R_STALE_CLAIM), TB_ECLOSED,
 * TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_transition_finish(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                     const char *reason, tb_topology_status *now,
                                     tb_store_err_t *err);

/**
 * Stale-claim recovery: every claim (mutation, deploy, teardown) held for
 * longer than the lease, by the database's clock, ends as described above
 * (requeued once if never started, else interrupted). ahead_ms (>= 0)
 * judges the leases as if that much later: 0 in production; tests look past
 * a lease without waiting for it. *out (may be NULL) gets the counts.
 * TB_EINVAL, TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_recover_stale(tb_store_t *s, int64_t ahead_ms, tb_store_recovery_t *out,
                                 tb_store_err_t *err);

/**
 * Retention: deletes up to max (1..TB_STORE_PRUNE_MAX) settled mutation
 * rows (applied or failed) last updated more than retention_ms (>= 0) ago
 * by the database's clock, oldest first, in one short transaction. Pending
 * and applying rows are never touched. *deleted (may be NULL) gets the
 * count; a full batch means there may be more. TB_EINVAL, TB_ECLOSED,
 * TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_mutation_prune(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                  tb_store_err_t *err);

/*
 * The outbox (CONTRACT §2, DESIGN "The store"). Every write above that
 * changes a topology or a mutation row also writes the event that records
 * it, in the same transaction: enqueue → mutation.enqueued, claim →
 * mutation.applying, mark_applied → mutation.applied, mark_failed →
 * mutation.failed, transition → status; claims ending without a verdict as
 * described under "Claims" above. Each payload carries "version", the
 * topology's version once the change is committed. A relay (relay/) reads
 * the rows in commit order per topology, publishes them and deletes each
 * once the bus confirmed it. One relay at a time holds the store-wide
 * outbox lease; times are the database's clock, not the callers'.
 */

#define TB_OUTBOX_REASON_MAX 200 /* bytes of the reason a row is set aside */

/** One committed change event waiting for the bus. */
typedef struct tb_outbox_row {
    int64_t seq;                        /* commit order (per topology) */
    char topic[TB_TOPIC_BUF_SIZE];      /* topology.<id>.<tail> */
    char msg_id[TB_EVENT_ID_LEN + 1];   /* the envelope's id */
    char *envelope;                     /* the envelope bytes, NUL-terminated; owned by the row */
    size_t len;
    int64_t age_ms;                     /* since the commit, by the database's clock */
} tb_outbox_row_t;

/** Called after a commit that wrote outbox rows, on the committing thread, without locks. */
typedef void (*tb_store_outbox_cb)(void *ud);

/**
 * Sets (cb non-NULL) or clears the listener told about every commit of this
 * store handle that wrote outbox rows: the relay's in-process wake-up. Call
 * while no other call runs on s (at wiring time).
 */
void tb_store_set_outbox_listener(tb_store_t *s, tb_store_outbox_cb cb, void *ud);

/**
 * Takes or renews the store-wide outbox lease for holder (1..64 bytes of
 * [A-Za-z0-9_.:-]) for ttl_ms (100..600000), by the database's clock:
 * granted when the lease is free, expired or already the holder's. *held
 * says whether holder holds it now. TB_EINVAL, TB_ECLOSED, TB_ETIMEDOUT,
 * TB_EBACKEND.
 */
tb_status tb_store_outbox_lease(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                                tb_store_err_t *err);

/** Gives the lease up if holder holds it (at shutdown), so another relay takes over at once. */
tb_status tb_store_outbox_release(tb_store_t *s, const char *holder, tb_store_err_t *err);

/**
 * Reads up to max (1..10000) of the oldest outbox rows, in seq order.
 * *rows is a new array of *n rows (NULL when none), freed with
 * tb_store_outbox_rows_free. TB_EINVAL, TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_outbox_read(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                               tb_store_err_t *err);

/** Frees what tb_store_outbox_read returned. Accepts NULL. */
void tb_store_outbox_rows_free(tb_outbox_row_t *rows, size_t n);

/** Deletes the n (≤ 10000) rows with these seqs (published and confirmed); absent ones are ignored. */
tb_status tb_store_outbox_delete(tb_store_t *s, const int64_t *seqs, size_t n,
                                 tb_store_err_t *err);

/**
 * Moves row seq out of the outbox into the set-aside table with reason
 * (1..TB_OUTBOX_REASON_MAX bytes; e.g. "invalid_envelope"), for a row the
 * bus can never accept; it no longer blocks the rows behind it. TB_OK also
 * if the row is gone already.
 */
tb_status tb_store_outbox_set_aside(tb_store_t *s, int64_t seq, const char *reason,
                                    tb_store_err_t *err);

/** Rows waiting and the age of the oldest (0 when empty), in ms by the database's clock. */
tb_status tb_store_outbox_stats(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                                int64_t *set_aside, tb_store_err_t *err);

/*
 * Idempotency-Key records (CONTRACT §4, DESIGN "The store"). A request that
 * carries a key first reserves (user, key) with the hash of the request, in
 * a transaction of its own, before it changes anything. Then it records its
 * answer: a change records it in the change's own transaction (the
 * *_answered calls below), so a committed change always has its answer and
 * a crash can never leave one without the other; an answer that changed
 * nothing (a 4xx) is recorded afterwards (tb_store_idem_record); an answer
 * not worth keeping (a 5xx: the client should retry) gives the reservation
 * up (tb_store_idem_release). A repeat of (user, key) within the TTL (24 h)
 * gets the recorded answer; with another request hash it is a mismatch;
 * while the reservation is held it is in flight. A reservation whose owner
 * never answers (a crash) lapses after the lease (60 s) and the key can be
 * reserved again. Every reservation carries a fencing token: recording
 * needs it, so an owner whose lease lapsed and was taken over can never
 * record over the new owner, and its change is rolled back instead. Leases
 * and ages are the database's clock. Expired rows are pruned in small
 * batches whenever a key is reserved anew.
 */

#define TB_STORE_IDEM_KEY_MAX 255      /* bytes of a key: printable ASCII (0x20..0x7e) */
#define TB_STORE_IDEM_USER_MAX 256     /* bytes of a user (a token's `sub`), UTF-8 */
#define TB_STORE_IDEM_HASH_LEN 64      /* a request hash: lowercase hex SHA-256 */
#define TB_STORE_IDEM_TOKEN_LEN 32     /* a reservation's fencing token: lowercase hex */
#define TB_STORE_IDEM_BODY_MAX (2 * 1024 * 1024) /* bytes of a recorded answer body */
#define TB_STORE_IDEM_TTL_DEFAULT_S (24 * 3600)
#define TB_STORE_IDEM_LEASE_DEFAULT_S 60
#define TB_STORE_IDEM_PRUNE_MAX 10000  /* rows one tb_store_idem_prune call may delete */

/** What a reservation attempt found. */
typedef enum tb_idem_outcome {
    TB_IDEM_RESERVED = 0, /* the key is now this caller's: do the work, then record or release */
    TB_IDEM_REPLAY,       /* answered before, with this request hash: status and body */
    TB_IDEM_IN_FLIGHT,    /* reserved by an earlier request with this hash, not answered yet */
    TB_IDEM_MISMATCH,     /* used before with another request hash (answered or in flight) */
} tb_idem_outcome;

/** A key, its request and what tb_store_idem_reserve found. Plain data. */
typedef struct tb_store_idem {
    char user[TB_STORE_IDEM_USER_MAX + 1];
    char key[TB_STORE_IDEM_KEY_MAX + 1];
    char hash[TB_STORE_IDEM_HASH_LEN + 1];
    char token[TB_STORE_IDEM_TOKEN_LEN + 1]; /* RESERVED: this caller's fencing token */
    tb_idem_outcome outcome;
    int status; /* REPLAY: the recorded status */
    char *body; /* REPLAY: the recorded body (new; tb_store_idem_cleanup frees it), else NULL */
} tb_store_idem_t;

/**
 * Reserves key for user with the request's hash (TB_STORE_IDEM_HASH_LEN
 * lowercase hex), in one transaction: a key never seen, or whose answer is
 * older than the TTL, or whose reservation lapsed, becomes this caller's
 * (RESERVED, with a fresh token); otherwise *out says what holds it
 * (REPLAY with the answer, IN_FLIGHT, MISMATCH). Reserving anew also prunes
 * a few expired rows. *out is filled (call tb_store_idem_cleanup) also on
 * error; user, key and hash may point into *out (a reservation made
 * again). TB_EINVAL (user not 1..256 bytes of UTF-8, key not 1..255
 * printable ASCII, bad hash), TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_idem_reserve(tb_store_t *s, const char *user, const char *key,
                                const char *hash, tb_store_idem_t *out, tb_store_err_t *err);

/**
 * Records the answer (status 100..599, body up to TB_STORE_IDEM_BODY_MAX
 * bytes of UTF-8) of the reservation rec (RESERVED) that changed nothing.
 * TB_ECONFLICT (reason wrong_state) if the reservation is no longer rec's:
 * answered already, or lapsed and reserved by another request, or pruned.
 * TB_EINVAL, TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_idem_record(tb_store_t *s, const tb_store_idem_t *rec, int status,
                               const char *body, tb_store_err_t *err);

/**
 * Gives the reservation rec up unanswered, so the key can be used again at
 * once (after a 5xx). TB_OK also if it is no longer rec's, or was answered
 * (a change that committed although the caller saw a failure keeps its
 * answer). TB_EINVAL, TB_ECLOSED, TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_idem_release(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err);

/**
 * Deletes up to max (1..TB_STORE_IDEM_PRUNE_MAX) rows older than the TTL,
 * oldest first; *pruned (may be NULL) gets the count. TB_EINVAL, TB_ECLOSED,
 * TB_ETIMEDOUT, TB_EBACKEND.
 */
tb_status tb_store_idem_prune(tb_store_t *s, int max, int *pruned, tb_store_err_t *err);

/** Frees rec->body and clears it. Accepts NULL. */
void tb_store_idem_cleanup(tb_store_idem_t *rec);

/**
 * Builds the answer body recorded for a change from the call's result
 * (borrowed: the document, the mutation row, or for a transition
 * {"id","status","previous"}). Returns a new string (malloc), or NULL to
 * fail the call. Runs once, inside the call's transaction, under the
 * store's lock, on the calling thread: it must only format, never block or
 * call the store.
 */
typedef char *(*tb_store_answer_cb)(const json_t *result, void *ud);

/** The answer a change records in its transaction (the *_answered calls). */
typedef struct tb_store_answer {
    const tb_store_idem_t *rec; /* the caller's reservation (outcome RESERVED) */
    int status;                 /* the status recorded with the body: 100..599 */
    tb_store_answer_cb build;   /* the body from the result */
    void *ud;                   /* passed to build */
    char *body;                 /* out: on TB_OK the body recorded (new: free it), else NULL */
    bool lost;                  /* out: the reservation was no longer the caller's (answered,
                                   or lapsed and taken over): nothing was changed, and the
                                   call failed with TB_ECONFLICT (reason wrong_state) */
} tb_store_answer_t;

/**
 * tb_store_topology_create, tb_store_topology_transition and
 * tb_store_mutation_enqueue with the same arguments, validation, results and
 * statuses, which in the same transaction also record answer's status and
 * the body built from the result for the reservation answer->rec: both are
 * committed or neither is. On any failure nothing is recorded and the
 * reservation stays in flight (record or release it). Also TB_EINVAL for an
 * invalid answer, and TB_ECONFLICT with answer->lost set (see there).
 */
tb_status tb_store_topology_create_answered(tb_store_t *s, const char *name, const json_t *nodes,
                                            const json_t *links, tb_store_answer_t *answer,
                                            json_t **doc, tb_store_err_t *err);
tb_status tb_store_topology_transition_answered(tb_store_t *s, const char *id,
                                                tb_topology_status expected_from,
                                                tb_topology_status to, const char *reason,
                                                tb_store_answer_t *answer,
                                                tb_topology_status *previous, tb_store_err_t *err);
tb_status tb_store_mutation_enqueue_answered(tb_store_t *s, const char *topology_id,
                                             const char *op, const json_t *payload,
                                             int64_t expected_version, tb_store_answer_t *answer,
                                             json_t **row, tb_store_err_t *err);

/* Typed accessors over the rows and documents above. Returned strings are
 * borrowed from the json value (valid while it lives); NULL/-1 if absent. */
const char *tb_store_doc_id(const json_t *doc);
const char *tb_store_doc_status(const json_t *doc);
int64_t tb_store_doc_version(const json_t *doc);
const char *tb_store_row_id(const json_t *row);
const char *tb_store_row_topology_id(const json_t *row);
const char *tb_store_row_op(const json_t *row);
const char *tb_store_row_state(const json_t *row);
/** The row's payload object, borrowed. */
const json_t *tb_store_row_payload(const json_t *row);

#endif
