/*
 * JWT verification: every rejection CONTRACT §5 and the gateway issue name
 * (none, other algorithms, bad signature, exp, nbf, sub, key confusion),
 * RS256/ES256 with generated keys, roles, minting and the claim checker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tb/auth.h"

static const char secret[] = "0123456789abcdef0123456789abcdef";
static const double now = 1800000000.0;

/* A token signed by libjwt with alg and key over the given claims (JSON object text). */
static char *make_token(jwt_alg_t alg, const void *key, size_t key_len, const char *claims)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, key, (int)key_len), 0);
    char *token = jwt_encode_str(jwt);
    assert_non_null(token);
    jwt_free(jwt);
    return token;
}

static char *hs256(const char *claims)
{
    return make_token(JWT_ALG_HS256, secret, strlen(secret), claims);
}

static tb_auth_t *secret_auth(void)
{
    tb_auth_t *a = NULL;
    char err[256];
    assert_int_equal(tb_auth_create(&a, secret, strlen(secret), NULL, err, sizeof err), TB_OK);
    return a;
}

static void expect_denied(const tb_auth_t *a, const char *token, const char *reason)
{
    tb_principal_t p;
    const char *why = NULL;
    assert_int_equal(tb_auth_verify(a, token, now, &p, &why), TB_EAUTH);
    assert_non_null(why);
    if (reason && strcmp(why, reason) != 0)
        fail_msg("expected '%s', got '%s'", reason, why);
}

static void test_auth_accepts_valid_hs256_with_roles(void **state)
{
    (void)state;
    tb_auth_t *a = secret_auth();
    char *t = hs256("{\"sub\":\"alice\",\"exp\":1800000600,\"role\":\"editor\"}");
    tb_principal_t p;
    const char *why = NULL;
    assert_int_equal(tb_auth_verify(a, t, now, &p, &why), TB_OK);
    assert_string_equal(p.sub, "alice");
    assert_true(tb_principal_has(&p, TB_ROLE_EDITOR));
    assert_false(tb_principal_has(&p, TB_ROLE_VIEWER));
    free(t);

    t = hs256("{\"sub\":\"bob\",\"exp\":1800000600.5,\"nbf\":1799999999,"
              "\"roles\":[\"viewer\",\"publisher\",\"unknown-role\"]}");
    assert_int_equal(tb_auth_verify(a, t, now, &p, &why), TB_OK);
    assert_true(tb_principal_has(&p, TB_ROLE_VIEWER));
    assert_true(tb_principal_has(&p, TB_ROLE_PUBLISHER));
    assert_false(tb_principal_has(&p, TB_ROLE_EDITOR));
    free(t);

    t = hs256("{\"sub\":\"root\",\"exp\":1800000600,\"role\":\"admin\"}");
    assert_int_equal(tb_auth_verify(a, t, now, &p, &why), TB_OK);
    assert_true(tb_principal_has(&p, TB_ROLE_VIEWER | TB_ROLE_EDITOR | TB_ROLE_PUBLISHER));
    free(t);
    tb_auth_destroy(a);
}

static void test_auth_rejects_none_other_algs_and_bad_signatures(void **state)
{
    (void)state;
    tb_auth_t *a = secret_auth();
    const char *claims = "{\"sub\":\"alice\",\"exp\":1800000600,\"role\":\"admin\"}";

    char *none = make_token(JWT_ALG_NONE, NULL, 0, claims);
    expect_denied(a, none, "algorithm not allowed");
    /* `none` header with a signature copied from a valid token. */
    char *valid = hs256(claims);
    const char *sig = strrchr(valid, '.');
    char forged[2048];
    snprintf(forged, sizeof forged, "%s%s", none, sig + 1);
    expect_denied(a, forged, "algorithm not allowed");

    char *hs384 = make_token(JWT_ALG_HS384, secret, strlen(secret), claims);
    expect_denied(a, hs384, "algorithm not allowed");
    char *hs512 = make_token(JWT_ALG_HS512, secret, strlen(secret), claims);
    expect_denied(a, hs512, "algorithm not allowed");

    char *other = make_token(JWT_ALG_HS256, "another-secret-another-secret!!", 31, claims);
    expect_denied(a, other, "bad signature");

    /* Tampered payload: swap in a different role, keep the signature. */
    char *tampered = hs256("{\"sub\":\"alice\",\"exp\":1800000600,\"role\":\"viewer\"}");
    char *dot1 = strchr(valid, '.'), *dot2 = strrchr(valid, '.');
    char *tdot1 = strchr(tampered, '.'), *tdot2 = strrchr(tampered, '.');
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(dot1 - valid), valid,
             (int)(tdot2 - tdot1), tdot1, dot2);
    expect_denied(a, forged, "bad signature");

    expect_denied(a, "", "malformed token");
    expect_denied(a, "abc", "malformed token");
    expect_denied(a, "a.b", "malformed token");
    expect_denied(a, "a.b.c.d", "malformed token");
    expect_denied(a, "!!!.e30.sig", "malformed token");
    expect_denied(a, NULL, "malformed token");
    char huge[TB_AUTH_TOKEN_MAX + 10];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    expect_denied(a, huge, "malformed token");
    free(none);
    free(valid);
    free(hs384);
    free(hs512);
    free(other);
    free(tampered);
    tb_auth_destroy(a);
}

static void test_auth_rejects_bad_claims(void **state)
{
    (void)state;
    tb_auth_t *a = secret_auth();
    const struct {
        const char *claims, *reason;
    } cases[] = {
        {"{\"exp\":1800000600,\"role\":\"viewer\"}", "sub claim missing or invalid"},
        {"{\"sub\":\"\",\"exp\":1800000600}", "sub claim missing or invalid"},
        {"{\"sub\":7,\"exp\":1800000600}", "sub claim missing or invalid"},
        {"{\"sub\":\"a\",\"role\":\"viewer\"}", "exp claim missing or not a number"},
        {"{\"sub\":\"a\",\"exp\":\"1800000600\"}", "exp claim missing or not a number"},
        {"{\"sub\":\"a\",\"exp\":1799999999}", "token expired"},
        {"{\"sub\":\"a\",\"exp\":1800000000}", "token expired"},
        {"{\"sub\":\"a\",\"exp\":1800000600,\"nbf\":1800000001}", "token not yet valid"},
        {"{\"sub\":\"a\",\"exp\":1800000600,\"nbf\":\"soon\"}", "nbf claim not a number"},
        {"{\"sub\":\"a\",\"exp\":1800000600,\"role\":[\"viewer\"]}", "role claim must be a string"},
        {"{\"sub\":\"a\",\"exp\":1800000600,\"roles\":\"viewer\"}",
         "roles claim must be an array of strings"},
        {"{\"sub\":\"a\",\"exp\":1800000600,\"roles\":[1]}", "roles claim must be an array of strings"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = hs256(cases[i].claims);
        expect_denied(a, t, cases[i].reason);
        free(t);
    }
    tb_auth_destroy(a);
}

/* Writes key's public (and private) PEM into temp files; returns the public path. */
static char *write_keys(EVP_PKEY *key, char **priv_pem, size_t *priv_len)
{
    static int n;
    char *path = malloc(64);
    snprintf(path, 64, "/tmp/tb_test_pub_%d_%d.pem", (int)getpid(), n++);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, key), 1);
    fclose(f);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
    char *data;
    long len = BIO_get_mem_data(bio, &data);
    *priv_pem = malloc((size_t)len + 1);
    memcpy(*priv_pem, data, (size_t)len);
    (*priv_pem)[len] = '\0';
    *priv_len = (size_t)len;
    BIO_free(bio);
    return path;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    *len = fread(buf, 1, 65535, f);
    fclose(f);
    return buf;
}

static void check_public_key_alg(EVP_PKEY *key, jwt_alg_t alg, jwt_alg_t wrong_alg)
{
    char *priv;
    size_t priv_len;
    char *path = write_keys(key, &priv, &priv_len);
    tb_auth_t *a = NULL;
    char err[256];
    assert_int_equal(tb_auth_create(&a, NULL, 0, path, err, sizeof err), TB_OK);
    const char *claims = "{\"sub\":\"svc\",\"exp\":1800000600,\"role\":\"publisher\"}";
    char *t = make_token(alg, priv, priv_len, claims);
    tb_principal_t p;
    const char *why = NULL;
    assert_int_equal(tb_auth_verify(a, t, now, &p, &why), TB_OK);
    assert_string_equal(p.sub, "svc");
    free(t);

    /* Key confusion: an HS256 token using the public key's PEM as the HMAC secret. */
    size_t pub_len;
    char *pub = read_file(path, &pub_len);
    t = make_token(JWT_ALG_HS256, pub, pub_len, claims);
    expect_denied(a, t, "algorithm not allowed");
    free(t);
    /* The other asymmetric algorithm is not allowed either. */
    if (wrong_alg != JWT_ALG_NONE) {
        EVP_PKEY *other = wrong_alg == JWT_ALG_RS256 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                                      : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        char *opriv;
        size_t opriv_len;
        char *opath = write_keys(other, &opriv, &opriv_len);
        t = make_token(wrong_alg, opriv, opriv_len, claims);
        expect_denied(a, t, "algorithm not allowed");
        free(t);
        unlink(opath);
        free(opath);
        free(opriv);
        EVP_PKEY_free(other);
    }
    /* A token signed by a different key of the right type. */
    EVP_PKEY *stranger = alg == JWT_ALG_RS256 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                              : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *spriv;
    size_t spriv_len;
    char *spath = write_keys(stranger, &spriv, &spriv_len);
    t = make_token(alg, spriv, spriv_len, claims);
    expect_denied(a, t, "bad signature");
    free(t);
    unlink(spath);
    free(spath);
    free(spriv);
    EVP_PKEY_free(stranger);

    tb_auth_destroy(a);
    unlink(path);
    free(path);
    free(priv);
    free(pub);
}

static void test_auth_public_keys_pin_rs256_and_es256(void **state)
{
    (void)state;
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(rsa);
    assert_non_null(ec);
    check_public_key_alg(rsa, JWT_ALG_RS256, JWT_ALG_ES256);
    check_public_key_alg(ec, JWT_ALG_ES256, JWT_ALG_RS256);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

static void test_auth_create_refuses_missing_or_bad_keys(void **state)
{
    (void)state;
    tb_auth_t *a = (tb_auth_t *)0x1;
    char err[256];
    assert_int_equal(tb_auth_create(&a, NULL, 0, NULL, err, sizeof err), TB_EINVAL);
    assert_null(a);
    assert_int_equal(tb_auth_create(&a, NULL, 0, "/nonexistent/key.pem", err, sizeof err),
                     TB_EINVAL);
    assert_non_null(strstr(err, "TOPOBUS_JWT_PUBLIC_KEY_FILE"));
    char path[] = "/tmp/tb_badkey_XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, "not a key\n", 10), 10);
    close(fd);
    assert_int_equal(tb_auth_create(&a, NULL, 0, path, err, sizeof err), TB_EINVAL);
    assert_non_null(strstr(err, "not a PEM public key"));
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    FILE *f = fopen(path, "w");
    PEM_write_PUBKEY(f, p384);
    fclose(f);
    assert_int_equal(tb_auth_create(&a, NULL, 0, path, err, sizeof err), TB_EINVAL);
    assert_non_null(strstr(err, "P-256"));
    EVP_PKEY_free(p384);
    unlink(path);
}

static void test_auth_mint_round_trips_and_validates_input(void **state)
{
    (void)state;
    tb_auth_t *a = secret_auth();
    char *t = NULL;
    assert_int_equal(tb_auth_mint(a, "carol", TB_ROLE_VIEWER | TB_ROLE_EDITOR, 600, now, &t), TB_OK);
    tb_principal_t p;
    const char *why;
    assert_int_equal(tb_auth_verify(a, t, now + 599, &p, &why), TB_OK);
    assert_string_equal(p.sub, "carol");
    assert_int_equal(p.roles, TB_ROLE_VIEWER | TB_ROLE_EDITOR);
    assert_int_equal(tb_auth_verify(a, t, now + 600, &p, &why), TB_EAUTH); /* ttl honoured */
    assert_string_equal(why, "token expired");
    free(t);
    assert_int_equal(tb_auth_mint(a, "", TB_ROLE_VIEWER, 600, now, &t), TB_EINVAL);
    assert_int_equal(tb_auth_mint(a, "x", 0, 600, now, &t), TB_EINVAL);
    assert_int_equal(tb_auth_mint(a, "x", TB_ROLE_VIEWER, 0, now, &t), TB_EINVAL);
    assert_null(t);
    tb_auth_destroy(a);
}

static void test_auth_roles_parse_and_json(void **state)
{
    (void)state;
    unsigned roles;
    assert_int_equal(tb_auth_roles_parse("viewer", &roles), TB_OK);
    assert_int_equal(roles, TB_ROLE_VIEWER);
    assert_int_equal(tb_auth_roles_parse("editor,publisher", &roles), TB_OK);
    assert_int_equal(roles, TB_ROLE_EDITOR | TB_ROLE_PUBLISHER);
    assert_int_equal(tb_auth_roles_parse("", &roles), TB_EINVAL);
    assert_int_equal(tb_auth_roles_parse("viewer,", &roles), TB_EINVAL);
    assert_int_equal(tb_auth_roles_parse("god", &roles), TB_EINVAL);
    char json[64];
    tb_auth_roles_json(TB_ROLE_ADMIN | TB_ROLE_VIEWER, json, sizeof json);
    assert_string_equal(json, "[\"viewer\",\"admin\"]");
    tb_auth_roles_json(0, json, sizeof json);
    assert_string_equal(json, "[]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_accepts_valid_hs256_with_roles),
        cmocka_unit_test(test_auth_rejects_none_other_algs_and_bad_signatures),
        cmocka_unit_test(test_auth_rejects_bad_claims),
        cmocka_unit_test(test_auth_public_keys_pin_rs256_and_es256),
        cmocka_unit_test(test_auth_create_refuses_missing_or_bad_keys),
        cmocka_unit_test(test_auth_mint_round_trips_and_validates_input),
        cmocka_unit_test(test_auth_roles_parse_and_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
