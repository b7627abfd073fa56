/*
 * Token verification and minting with libjwt 1.10. The library checks only
 * signatures, and accepts `alg: none` when handed a NULL key, so this file
 * decides the algorithm itself from the configured keys before libjwt sees
 * the token, checks libjwt agreed, and then checks the claims (gw_claims.c).
 * Immutable after creation; safe from any thread.
 */
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb/alloc.h"
#include "tb/auth.h"
#include "tb/buf.h"

enum { PEM_MAX = 64 * 1024 };

struct tb_auth {
    unsigned char *secret; /* HS256 key, NULL if none */
    size_t secret_len;
    char *pubkey_pem; /* PEM text, NULL if none */
    size_t pubkey_len;
    jwt_alg_t pubkey_alg; /* JWT_ALG_RS256 or JWT_ALG_ES256 */
};

static tb_status fail(char *err, size_t errlen, const char *msg, const char *path)
{
    snprintf(err, errlen, "TOPOBUS_JWT_PUBLIC_KEY_FILE: %s: %s", path, msg);
    return TB_EINVAL;
}

/* Reads the PEM file and pins the algorithm to the key's type. */
static tb_status load_pubkey(tb_auth_t *a, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "cannot open", path);
    tb_buf_t pem;
    tb_buf_init(&pem);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && pem.len <= PEM_MAX)
        tb_buf_append(&pem, chunk, n);
    fclose(f);
    tb_status st = TB_OK;
    BIO *bio = BIO_new_mem_buf(pem.data ? pem.data : "", (int)pem.len);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    if (pem.len > PEM_MAX) {
        st = fail(err, errlen, "larger than 64 KiB", path);
    } else if (!key) {
        st = fail(err, errlen, "not a PEM public key", path);
    } else if (EVP_PKEY_base_id(key) == EVP_PKEY_RSA) {
        a->pubkey_alg = JWT_ALG_RS256;
    } else if (EVP_PKEY_base_id(key) == EVP_PKEY_EC) {
        char group[64] = "";
        size_t glen = 0;
        EVP_PKEY_get_group_name(key, group, sizeof group, &glen);
        if (strcmp(group, "prime256v1") == 0)
            a->pubkey_alg = JWT_ALG_ES256;
        else
            st = fail(err, errlen, "EC keys must use the P-256 curve (ES256)", path);
    } else {
        st = fail(err, errlen, "only RSA (RS256) and P-256 EC (ES256) keys are supported", path);
    }
    EVP_PKEY_free(key);
    BIO_free(bio);
    if (st == TB_OK)
        a->pubkey_pem = tb_buf_steal(&pem, &a->pubkey_len);
    tb_buf_cleanup(&pem);
    return st;
}

tb_status tb_auth_create(tb_auth_t **out, const char *secret, size_t len, const char *pubkey_path,
                         char *err, size_t errlen)
{
    *out = NULL;
    if ((!secret || len == 0) && !pubkey_path) {
        snprintf(err, errlen, "TOPOBUS_JWT_SECRET: no key configured (set a secret or a public key)");
        return TB_EINVAL;
    }
    tb_auth_t *a = tb_xcalloc(1, sizeof *a);
    if (secret && len > 0) {
        a->secret = tb_xmalloc(len);
        memcpy(a->secret, secret, len);
        a->secret_len = len;
    }
    if (pubkey_path) {
        tb_status st = load_pubkey(a, pubkey_path, err, errlen);
        if (st) {
            tb_auth_destroy(a);
            return st;
        }
    }
    *out = a;
    return TB_OK;
}

void tb_auth_destroy(tb_auth_t *a)
{
    if (!a)
        return;
    if (a->secret) {
        memset(a->secret, 0, a->secret_len); /* keep the key out of freed memory */
        free(a->secret);
    }
    free(a->pubkey_pem);
    free(a);
}

tb_status tb_auth_verify(const tb_auth_t *a, const char *token, double now, tb_principal_t *out,
                         const char **why)
{
    size_t len = token ? strnlen(token, TB_AUTH_TOKEN_MAX + 1) : 0;
    char alg_name[16];
    if (len == 0 || len > TB_AUTH_TOKEN_MAX || tb_auth_peek_alg(token, len, alg_name, sizeof alg_name)) {
        *why = "malformed token";
        return TB_EAUTH;
    }
    /* The key is chosen by the algorithm this deployment allows, never the other way round:
     * a public key handed to an HMAC check would become a forgeable secret. */
    jwt_alg_t alg = jwt_str_alg(alg_name);
    const unsigned char *key = NULL;
    size_t key_len = 0;
    if (alg == JWT_ALG_HS256 && a->secret) {
        key = a->secret;
        key_len = a->secret_len;
    } else if (a->pubkey_pem && alg == a->pubkey_alg) {
        key = (const unsigned char *)a->pubkey_pem;
        key_len = a->pubkey_len;
    } else {
        *why = "algorithm not allowed";
        return TB_EAUTH;
    }
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, key, (int)key_len) != 0 || !jwt) {
        *why = "bad signature";
        return TB_EAUTH;
    }
    tb_status st = TB_EAUTH;
    char *claims = NULL;
    if (jwt_get_alg(jwt) != alg) {
        *why = "algorithm not allowed";
        goto out;
    }
    claims = jwt_get_grants_json(jwt, NULL);
    if (!claims) {
        *why = "claims missing";
        goto out;
    }
    st = tb_auth_claims_check(claims, strlen(claims), now, out, why);
out:
    free(claims);
    jwt_free(jwt);
    return st;
}

tb_status tb_auth_mint(const tb_auth_t *a, const char *sub, unsigned roles, long ttl_s, double now,
                       char **out)
{
    *out = NULL;
    size_t sub_len = sub ? strlen(sub) : 0;
    if (!a->secret || sub_len == 0 || sub_len > TB_AUTH_SUB_MAX || ttl_s <= 0 || roles == 0)
        return TB_EINVAL;
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt) != 0)
        return TB_EBACKEND;
    char roles_json[96];
    char grants[160];
    tb_auth_roles_json(roles, roles_json, sizeof roles_json);
    snprintf(grants, sizeof grants, "{\"roles\":%s}", roles_json);
    tb_status st = TB_EBACKEND;
    long iat = (long)now;
    if (jwt_add_grant(jwt, "sub", sub) || jwt_add_grant_int(jwt, "iat", iat) ||
        jwt_add_grant_int(jwt, "exp", iat + ttl_s) || jwt_add_grants_json(jwt, grants) ||
        jwt_set_alg(jwt, JWT_ALG_HS256, a->secret, (int)a->secret_len))
        goto out;
    char *token = jwt_encode_str(jwt);
    if (!token)
        goto out;
    *out = token;
    st = TB_OK;
out:
    jwt_free(jwt);
    return st;
}
