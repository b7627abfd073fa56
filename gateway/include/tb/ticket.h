/*
 * Single-use SSE tickets (CONTRACT §4 `POST /auth/sse-ticket`): a short
 * random string standing for a principal for a short time, so a browser can
 * open an EventSource without putting a JWT in the URL. A ticket is valid
 * only in the process that minted it. Thread-safe: one mutex guards the table.
 */
#ifndef TB_TICKET_H
#define TB_TICKET_H

#include <stddef.h>

#include "tb/auth.h"

#define TB_TICKET_LEN 64 /* lowercase hex digits (256 random bits) */
#define TB_TICKET_TTL_S 60

typedef struct tb_tickets tb_tickets_t;

/** Creates a table holding at most capacity live tickets, each valid for ttl_s seconds. */
tb_status tb_tickets_create(tb_tickets_t **out, size_t capacity, double ttl_s);

/** Frees the table and every ticket in it. Accepts NULL. */
void tb_tickets_destroy(tb_tickets_t *t);

/**
 * Mints a ticket for p at time now into out (TB_TICKET_LEN + 1 bytes).
 * TB_EFULL if capacity live tickets exist even after dropping expired ones.
 * Any thread.
 */
tb_status tb_tickets_mint(tb_tickets_t *t, const tb_principal_t *p, double now, char *out);

/**
 * Redeems a ticket: on TB_OK *out is its principal and the ticket is gone.
 * TB_EAUTH for an unknown, used or expired ticket. Any thread.
 */
tb_status tb_tickets_redeem(tb_tickets_t *t, const char *ticket, double now, tb_principal_t *out);

/** Live tickets (including expired ones not yet swept). Any thread. */
size_t tb_tickets_count(tb_tickets_t *t);

#endif
