/*
 * Per-user stream counts for the SSE cap (TOPOBUS_SSE_MAX_PER_USER). Shared
 * by every loop: one mutex guards the table (a leaf lock).
 */
#ifndef TB_GW_USERS_H
#define TB_GW_USERS_H

#include <stddef.h>

typedef struct gw_users gw_users_t;
typedef struct gw_user_slot gw_user_slot_t;

void gw_users_create(gw_users_t **out);
void gw_users_destroy(gw_users_t *u);
/**
 * Takes one stream slot for sub if it holds fewer than cap (0: no cap).
 * Returns the slot to release later, or NULL when the user is at the cap.
 */
gw_user_slot_t *gw_users_acquire(gw_users_t *u, const char *sub, long cap);
/** Gives a slot back; the user's entry goes when its count reaches zero. */
void gw_users_release(gw_users_t *u, gw_user_slot_t *slot);

#endif
