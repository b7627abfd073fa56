/*
 * Inside the store: the backend vtable, the base struct every backend embeds
 * first, and the helpers the backend-neutral files share. store.c validates
 * every argument once and serialises calls with the base mutex; backends
 * receive only valid input and never validate again.
 */
#ifndef TB_STORE_INT_H
#define TB_STORE_INT_H

#include <pthread.h>
#include <stdarg.h>

#include "tb/store.h"

/** Every slot is mandatory. Inputs are validated; err is never NULL. */
struct tb_store_ops {
    /* Backend name for logs and tb_store_backend ("sqlite"). */
    const char *name;
    /* URL prefix selecting the backend ("sqlite:", "postgres"). */
    const char *scheme;
    /* Opens target (the URL after the scheme), migrates and prepares; *out is the base. */
    tb_status (*open)(tb_store_t **out, const char *target, const tb_store_options_t *opts,
                      tb_store_err_t *err);
    /* Frees everything; s is not NULL. */
    void (*close)(tb_store_t *s);
    /* Inserts a pending topology with version 0; graph_text is {"nodes","links"}. */
    tb_status (*topology_create)(tb_store_t *s, const char *id, const char *name,
                                 const char *graph_text, json_t **doc, tb_store_err_t *err);
    /* Reads one document. */
    tb_status (*topology_get)(tb_store_t *s, const char *id, json_t **doc, tb_store_err_t *err);
    /* Reads every list entry, oldest first. */
    tb_status (*topology_list)(tb_store_t *s, json_t **list, tb_store_err_t *err);
    /* Checks and applies a status change in one read-then-write transaction. */
    tb_status (*topology_transition)(tb_store_t *s, const char *id,
                                     tb_topology_status expected_from, tb_topology_status to,
                                     const char *reason, tb_topology_status *previous,
                                     tb_store_err_t *err);
    /* Checks status and version, inserts the row; one transaction. */
    tb_status (*mutation_enqueue)(tb_store_t *s, const char *id, const char *topology_id,
                                  const char *op, const char *payload_text,
                                  int64_t expected_version, json_t **row, tb_store_err_t *err);
    /* Rows of a topology, oldest first; state < 0 means every state. */
    tb_status (*mutation_list)(tb_store_t *s, const char *topology_id, int state, json_t **rows,
                               tb_store_err_t *err);
    /* Status, version and in-flight rows in one read transaction. */
    tb_status (*snapshot)(tb_store_t *s, const char *topology_id, json_t **snap,
                          tb_store_err_t *err);
    /* Ids of topologies with pending rows. */
    tb_status (*topologies_with_pending)(tb_store_t *s, json_t **ids, tb_store_err_t *err);
    /* The atomic claim statement; fills claim (kind, ids, worker, token, expected version). */
    tb_status (*mutation_claim)(tb_store_t *s, const char *topology_id, const char *worker,
                                json_t **row, tb_store_claim_t *claim, tb_store_err_t *err);
    /* Claims a topology's pending deploy or teardown; *doc is the document. */
    tb_status (*transition_claim)(tb_store_t *s, const char *topology_id, const char *worker,
                                  json_t **doc, tb_store_claim_t *claim, tb_store_err_t *err);
    /* Marks a live claim's side effect started; stale: TB_STORE_R_STALE_CLAIM. */
    tb_status (*claim_start)(tb_store_t *s, const tb_store_claim_t *claim, tb_store_err_t *err);
    /* Ends one live claim without a verdict (tb__store_claim_fate, not expired). */
    tb_status (*claim_release)(tb_store_t *s, const tb_store_claim_t *claim,
                               tb_store_recovery_t *out, tb_store_err_t *err);
    /* Ends every claim worker holds without a verdict, as claim_release. */
    tb_status (*release_worker_claims)(tb_store_t *s, const char *worker,
                                       tb_store_recovery_t *out, tb_store_err_t *err);
    /* Row applied plus the topology's graph, version and restored status; one transaction. */
    tb_status (*mutation_mark_applied)(tb_store_t *s, const tb_store_claim_t *claim,
                                       const char *graph_text, int64_t new_version,
                                       json_t **row, tb_store_err_t *err);
    /* Row failed with reason, and the topology degraded if asked and active. */
    tb_status (*mutation_mark_failed)(tb_store_t *s, const tb_store_claim_t *claim,
                                      const char *reason, bool degrade, json_t **row,
                                      tb_store_err_t *err);
    /* Ends a deploy/teardown claim with its status change. */
    tb_status (*transition_finish)(tb_store_t *s, const tb_store_claim_t *claim, bool ok,
                                   const char *reason, tb_topology_status *now,
                                   tb_store_err_t *err);
    /* Ends every claim older than the lease (judged ahead_ms later), expired. */
    tb_status (*recover_stale)(tb_store_t *s, int64_t ahead_ms, int64_t lease_ms,
                               tb_store_recovery_t *out, tb_store_err_t *err);
    /* Deletes up to max settled rows older than retention_ms. */
    tb_status (*mutation_prune)(tb_store_t *s, int64_t retention_ms, int max, int *deleted,
                                tb_store_err_t *err);
    /* Takes or renews the outbox lease by the database's clock; *held says who won. */
    tb_status (*outbox_lease)(tb_store_t *s, const char *holder, int64_t ttl_ms, bool *held,
                              tb_store_err_t *err);
    /* Ends holder's lease, if it holds it. */
    tb_status (*outbox_release)(tb_store_t *s, const char *holder, tb_store_err_t *err);
    /* The oldest rows in seq order; *rows is NULL when there are none. */
    tb_status (*outbox_read)(tb_store_t *s, size_t max, tb_outbox_row_t **rows, size_t *n,
                             tb_store_err_t *err);
    /* Deletes rows by seq in one transaction. */
    tb_status (*outbox_delete)(tb_store_t *s, const int64_t *seqs, size_t n, tb_store_err_t *err);
    /* Moves one row to the set-aside table with a reason, in one transaction. */
    tb_status (*outbox_set_aside)(tb_store_t *s, int64_t seq, const char *reason,
                                  tb_store_err_t *err);
    /* Depth, oldest row's age (database clock) and set-aside count. */
    tb_status (*outbox_stats)(tb_store_t *s, int64_t *depth, int64_t *oldest_age_ms,
                              int64_t *set_aside, tb_store_err_t *err);
    /* Idempotency-Key records (store_*_idempotency.c); rec's user, key and hash are set. */
    /* Reserves (user, key) for token or reads what holds it: rec->outcome, token or answer. */
    tb_status (*idem_reserve)(tb_store_t *s, tb_store_idem_t *rec, const char *token,
                              tb_store_err_t *err);
    /* Answers rec's reservation (rec->token); *lost if no unanswered one holds that token. */
    tb_status (*idem_record)(tb_store_t *s, const tb_store_idem_t *rec, int status,
                             const char *body, bool *lost, tb_store_err_t *err);
    /* Deletes rec's reservation if it is still unanswered. */
    tb_status (*idem_release)(tb_store_t *s, const tb_store_idem_t *rec, tb_store_err_t *err);
    /* Deletes up to max rows older than the TTL, oldest first. */
    tb_status (*idem_prune)(tb_store_t *s, int max, int *pruned, tb_store_err_t *err);
    /* Opens a write transaction that every following call on s joins until wrap_end: their
     * own begin and commit do nothing, a rollback ends it (store_idempotency.c). */
    tb_status (*wrap_begin)(tb_store_t *s, tb_store_err_t *err);
    /* Commits (commit set) or rolls back the wrapping transaction; a commit that wrote outbox
     * rows sets outbox_written. Without commit it never fails. */
    tb_status (*wrap_end)(tb_store_t *s, bool commit, tb_store_err_t *err);
};

/** The base every backend struct embeds first. Owned by store.c after open. */
struct tb_store {
    const struct tb_store_ops *ops;
    pthread_mutex_t lock; /* serialises calls on this store (one connection) */
    int64_t lease_ms;
    bool outbox;          /* change events are written (not tb_store_options_t.no_outbox) */
    bool outbox_written;  /* under lock: the running call committed outbox rows */
    tb_store_outbox_cb outbox_cb;
    void *outbox_ud;
    int64_t idem_ttl_ms;   /* Idempotency-Key answers are kept this long */
    int64_t idem_lease_ms; /* an unanswered reservation holds its key this long */
};

/** A change event ready for an outbox insert (store_outbox.c). */
typedef struct tb__store_event {
    char topology_id[TB_TOPOLOGY_ID_BUF_SIZE];
    char topic[TB_TOPIC_BUF_SIZE];
    char msg_id[TB_EVENT_ID_LEN + 1];
    char *envelope; /* new; tb__store_event_cleanup frees it */
} tb__store_event_t;

/**
 * Builds the envelope of a change event: family's topic of topology_id with
 * payload (taken, also on failure). TB_EINVAL (logged) if it cannot be
 * encoded, which a valid row never causes.
 */
tb_status tb__store_event_build(tb__store_event_t *out, tb_topic_family family,
                                const char *topology_id, json_t *payload_take);
void tb__store_event_cleanup(tb__store_event_t *ev);

/**
 * The payload of a mutation event for row (a mutation row as the backends
 * return it): enqueued/applying {"mutation_id","op","payload","version"},
 * applied {"mutation_id","op","version"}, failed
 * {"mutation_id","op","reason","version"}. New reference.
 */
json_t *tb__store_mutation_payload(const json_t *row, tb_topic_family family, int64_t version,
                                   const char *reason);

/**
 * The payload of the mutation.enqueued event a requeued row records: as for
 * enqueue, plus "attempts" and "requeued":true. New reference.
 */
json_t *tb__store_requeued_payload(const json_t *row, int64_t version);

/** The payload of a status event: {"state","previous","version","reason"?}. New reference. */
json_t *tb__store_status_payload(tb_topology_status to, tb_topology_status from, int64_t version,
                                 const char *reason);

extern const struct tb_store_ops tb__store_sqlite_ops;
extern const struct tb_store_ops tb__store_pg_ops;

/** Fills err (reason and printf-formatted message) and returns st. err may not be NULL. */
tb_status tb__store_fail(tb_store_err_t *err, tb_status st, tb_store_reason reason,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/**
 * The enqueue admission rule, the same on every backend: the topology's
 * status accepts mutations (else not_mutable) and, unless expected is
 * TB_STORE_NO_VERSION, it is at that version (else version_conflict, with
 * err->current and err->expected set). TB_OK or TB_ECONFLICT.
 */
tb_status tb__store_check_enqueue(tb_topology_status status, int64_t version, int64_t expected,
                                  tb_store_err_t *err);

/** How a claim that ends without a verdict ends (see "Claims" in tb/store.h). */
typedef enum tb__claim_fate {
    TB__FATE_REQUEUE,      /* back to the queue, attempts unchanged */
    TB__FATE_REQUEUE_ONCE, /* back to the queue, attempts + 1 */
    TB__FATE_INTERRUPTED,  /* ended as "interrupted" (attempts + 1) */
} tb__claim_fate;

/**
 * The one rule for a claim ending without a verdict: started is whether its
 * side effect began, attempts its count so far, expired whether its lease
 * ran out (else its worker gave it back).
 */
tb__claim_fate tb__store_claim_fate(bool started, int64_t attempts, bool expired);

/** The reason recorded for a claim that ended without a verdict. */
#define TB__STORE_INTERRUPTED "interrupted"

/** The status a claim of kind is for (deploying, tearing_down; ANY for a mutation). */
tb_topology_status tb__store_claim_status(tb_store_claim_kind kind);

/** Parses "deploy"/"teardown" (a stored claim_kind); false for anything else. */
bool tb__store_claim_kind_parse(const char *name, tb_store_claim_kind *out);

/**
 * Checks the Idempotency-Key options of opts (may be NULL) at open
 * (store_idempotency.c). TB_OK or TB_EINVAL with err filled.
 */
tb_status tb__store_idem_check_options(const tb_store_options_t *opts, tb_store_err_t *err);
/** Sets s's Idempotency-Key TTL and lease from opts (may be NULL: the defaults). */
void tb__store_idem_init(tb_store_t *s, const tb_store_options_t *opts);

/**
 * Whether a stored Idempotency-Key row still holds its key at now_ms (every
 * backend's rule, by its database's clock): its answer is younger than the
 * TTL, or, unanswered, its lease has not lapsed.
 */
bool tb__store_idem_row_holds(const tb_store_t *s, bool answered, int64_t created_at,
                              int64_t lease_until, int64_t now_ms);

/**
 * Ends a call that may have committed outbox rows: unlocks s->lock, then
 * tells the outbox listener. The store.c wrappers end this way.
 */
void tb__store_unlock_and_notify(tb_store_t *s);

/** err, or scratch when err is NULL, cleared. */
tb_store_err_t *tb__store_err_reset(tb_store_err_t *err, tb_store_err_t *scratch);

/** Epoch milliseconds now (wall clock). */
int64_t tb__store_now_ms(void);

/** A new JSON string of epoch milliseconds as RFC 3339 UTC ("2025-11-22T08:13:20.123Z"). */
json_t *tb__store_time_json(int64_t ms);

/**
 * Validates a graph and serialises it as the compact {"nodes","links"} text
 * stored in a row (*text is new, free() it). TB_EINVAL past TB_STORE_DOC_MAX.
 */
tb_status tb__store_graph_text(const json_t *nodes, const json_t *links, char **text,
                               tb_store_err_t *err);

/**
 * Checks a caller's text: 1..max bytes of UTF-8 without control characters
 * (tab and newline allowed unless single_line). what names it in the message.
 */
tb_status tb__store_check_text(const char *s, size_t max, bool single_line, const char *what,
                               tb_store_err_t *err);

#endif
