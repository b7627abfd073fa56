/*
 * Idempotency-Key on the gateway (CONTRACT §4). The routes that create or
 * change something (gw_api.c) take the header; a request's key travels in
 * its store job as a gw_idem_t through four steps:
 *
 *   loop     gw_idem_parse: the key's syntax (400), the request hash
 *            (SHA-256 of method, path and body) and the user (`sub`);
 *            gw_idem_claim: this process's table of keys being processed,
 *            so a duplicate arriving meanwhile is 409 (or 422 for another
 *            request) at once, without waiting for the store;
 *   worker   gw_idem_reserve: the store's reservation, or the recorded
 *            answer, 409 or 422 when another process has the key;
 *            the work records its answer with its change (gw_idem_answer);
 *            gw_idem_settle: records any other answer, or gives the
 *            reservation up after a 5xx (the client should retry);
 *   loop     gw_idem_close: leaves the table.
 *
 * The table has one mutex, a leaf lock.
 */
#ifndef TB_GW_IDEM_H
#define TB_GW_IDEM_H

#include <stdbool.h>
#include <stddef.h>

#include "gw_int.h"
#include "tb/auth.h"
#include "tb/store.h"

typedef struct gw_idem_table gw_idem_table_t;
typedef struct gw_idem_entry gw_idem_entry_t;

/** A request's key on its way through the gateway. Plain data, kept in the request's job. */
typedef struct gw_idem {
    bool on;                /* the request carries a valid key */
    tb_store_idem_t rec;    /* user, key and hash; then the store's reservation or answer */
    gw_idem_entry_t *entry; /* this process's table entry, until gw_idem_close */
    bool reserved;          /* the store reserved the key for this request */
    bool answered;          /* the answer was recorded with the change (or is not ours to
                               record: the reservation was lost) */
    bool replayed;          /* the reply is the answer recorded for an earlier request */
} gw_idem_t;

void gw_idem_table_create(gw_idem_table_t **out);
/** Frees the table. Accepts NULL. Every entry must be closed. */
void gw_idem_table_destroy(gw_idem_table_t *t);
/** Keys being processed in this process now. Any thread. */
size_t gw_idem_table_count(gw_idem_table_t *t);

/**
 * Reads req's Idempotency-Key for the authenticated user p, and hashes the
 * request (method, path and the raw body, which must be complete). No
 * header: idem->on stays false. True, or false with the 400 reply set for a
 * key that is not 1..255 printable ASCII. Loop thread.
 */
bool gw_idem_parse(gw_request_t *req, const tb_principal_t *p, gw_idem_t *idem);

/**
 * Enters idem's key in this process's table (nothing for a request without
 * a key). False, with the reply set, when the table holds the key already:
 * 409 `idempotency_key_in_flight` for the same request, 422
 * `idempotency_key_reused` for another. Loop thread.
 */
bool gw_idem_claim(gw_request_t *req, gw_idem_t *idem);

/** Leaves the table (idempotent; nothing without an entry). Any thread. */
void gw_idem_close(tb_gateway_t *gw, gw_idem_t *idem);

/**
 * Reserves the key in the store. True: do the work. False: *status and
 * *text (new) are the reply: the recorded answer (idem->replayed), 409, 422,
 * or 503 (*retry_after set) when the store does not answer. Worker thread.
 */
bool gw_idem_reserve(tb_gateway_t *gw, gw_idem_t *idem, int *status, char **text,
                     bool *retry_after);

/**
 * The answer of a change: status and the body build makes of the store's
 * result; with a key it is recorded in the change's transaction
 * (tb_store_*_answered). Without a key .rec is NULL. Worker thread.
 */
tb_store_answer_t gw_idem_answer(const gw_idem_t *idem, int status, tb_store_answer_cb build,
                                 void *ud);

/**
 * After the work replied (status, text): records the reply for the key,
 * unless the change recorded it already; after a 5xx gives the reservation
 * up instead. A store failure here is logged: the reservation then lapses
 * after its lease. Nothing for a request without a reservation. Worker
 * thread.
 */
void gw_idem_settle(tb_gateway_t *gw, gw_idem_t *idem, int status, const char *text);

#endif
