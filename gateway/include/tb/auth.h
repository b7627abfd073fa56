/*
 * Authentication (CONTRACT §5): JWT verification pinned to the configured key
 * type, claim checks that libjwt 1.10 does not do (exp, nbf, sub), roles, and
 * minting for `topobus token`. Tickets for EventSource are in tb/ticket.h.
 *
 * A tb_auth_t is immutable after creation and may be used from any thread.
 */
#ifndef TB_AUTH_H
#define TB_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "tb/base.h"

enum {
    TB_ROLE_VIEWER = 1u << 0,
    TB_ROLE_EDITOR = 1u << 1,
    TB_ROLE_PUBLISHER = 1u << 2,
    TB_ROLE_ADMIN = 1u << 3,
};

#define TB_AUTH_SUB_MAX 256     /* bytes in a `sub` claim */
#define TB_AUTH_TOKEN_MAX 8192  /* bytes in a token */

/** Who a request acts for. Plain data. */
typedef struct tb_principal {
    char sub[TB_AUTH_SUB_MAX + 1];
    unsigned roles; /* TB_ROLE_* bits as granted; use tb_principal_has to test */
} tb_principal_t;

/** True if p holds role, counting `admin` as every role. */
bool tb_principal_has(const tb_principal_t *p, unsigned role);

/**
 * Parses a role list: one of viewer, editor, publisher, admin, or several
 * separated by commas. TB_EINVAL for an unknown or empty name.
 */
tb_status tb_auth_roles_parse(const char *text, unsigned *out);

/** Writes the role names of `roles` as a JSON array text into out (at least 64 bytes). */
void tb_auth_roles_json(unsigned roles, char *out, size_t outlen);

/**
 * Checks a token's claims (the JSON payload) at time now: `sub` a non-empty
 * string of at most 256 bytes, `exp` a number later than now, `nbf` (if
 * present) a number not later than now, `role` a string or `roles` an array
 * of strings (unknown role names are ignored). Pure. TB_EAUTH with *why set
 * to a static reason on any failure.
 */
tb_status tb_auth_claims_check(const char *json, size_t len, double now, tb_principal_t *out,
                               const char **why);

/**
 * Reads the `alg` of a token's header without trusting anything else in it.
 * Pure. TB_EAUTH if the token is not three base64url segments with a JSON
 * object header holding a string `alg`. out gets the name (at most 15 bytes).
 */
tb_status tb_auth_peek_alg(const char *token, size_t len, char *out, size_t outlen);

typedef struct tb_auth tb_auth_t;

/**
 * Creates a verifier. secret (len bytes, may be NULL) enables HS256; pubkey_path
 * (may be NULL) a PEM public key enabling RS256 (RSA key) or ES256 (P-256 key).
 * At least one must be given. TB_EINVAL with err filled for an unreadable or
 * unsupported key.
 */
tb_status tb_auth_create(tb_auth_t **out, const char *secret, size_t len, const char *pubkey_path,
                         char *err, size_t errlen);

/** Frees the verifier. Accepts NULL. */
void tb_auth_destroy(tb_auth_t *auth);

/**
 * Verifies a token: its alg must be one the configured keys allow (never
 * `none`, never HS384/HS512, never an HMAC alg against a public key), its
 * signature must verify, and its claims must pass tb_auth_claims_check.
 * TB_EAUTH with *why (static) on failure. Any thread.
 */
tb_status tb_auth_verify(const tb_auth_t *auth, const char *token, double now,
                         tb_principal_t *out, const char **why);

/**
 * Mints an HS256 token for sub with roles, valid for ttl_s seconds from now.
 * *out is a new string (free()). TB_EINVAL if no secret is configured or the
 * input is invalid.
 */
tb_status tb_auth_mint(const tb_auth_t *auth, const char *sub, unsigned roles, long ttl_s,
                       double now, char **out);

#endif
