/*
 * The pure half of authentication: reading a token's header `alg`, checking
 * its claims and parsing roles. No keys, no I/O; fuzzed by fuzz_jwt_claims.
 */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "tb/auth.h"
#include "tb/buf.h"

enum { HEADER_MAX = 1024 };

static const struct {
    const char *name;
    unsigned bit;
} role_names[] = {
    {"viewer", TB_ROLE_VIEWER},
    {"editor", TB_ROLE_EDITOR},
    {"publisher", TB_ROLE_PUBLISHER},
    {"admin", TB_ROLE_ADMIN},
};

bool tb_principal_has(const tb_principal_t *p, unsigned role)
{
    return (p->roles & TB_ROLE_ADMIN) || (p->roles & role) == role;
}

static unsigned role_bit(const char *name, size_t len)
{
    for (size_t i = 0; i < TB_ARRAY_LEN(role_names); i++) {
        if (strlen(role_names[i].name) == len && memcmp(role_names[i].name, name, len) == 0)
            return role_names[i].bit;
    }
    return 0;
}

tb_status tb_auth_roles_parse(const char *text, unsigned *out)
{
    unsigned roles = 0;
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        unsigned bit = role_bit(p, len);
        if (!bit)
            return TB_EINVAL;
        roles |= bit;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *out = roles;
    return TB_OK;
}

void tb_auth_roles_json(unsigned roles, char *out, size_t outlen)
{
    tb_buf_t b;
    tb_buf_init_fixed(&b, out, outlen);
    tb_buf_append_str(&b, "[");
    bool first = true;
    for (size_t i = 0; i < TB_ARRAY_LEN(role_names); i++) {
        if (!(roles & role_names[i].bit))
            continue;
        tb_buf_appendf(&b, "%s\"%s\"", first ? "" : ",", role_names[i].name);
        first = false;
    }
    tb_buf_append_str(&b, "]");
}

static tb_status deny(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return TB_EAUTH;
}

static tb_status read_roles(const json_t *root, unsigned *out, const char **why)
{
    unsigned roles = 0;
    const json_t *role = json_object_get(root, "role");
    const json_t *list = json_object_get(root, "roles");
    if (role) {
        if (!json_is_string(role))
            return deny(why, "role claim must be a string");
        roles |= role_bit(json_string_value(role), json_string_length(role));
    }
    if (list) {
        if (!json_is_array(list))
            return deny(why, "roles claim must be an array of strings");
        size_t i;
        const json_t *item;
        json_array_foreach(list, i, item) {
            if (!json_is_string(item))
                return deny(why, "roles claim must be an array of strings");
            roles |= role_bit(json_string_value(item), json_string_length(item));
        }
    }
    *out = roles;
    return TB_OK;
}

tb_status tb_auth_claims_check(const char *json, size_t len, double now, tb_principal_t *out,
                               const char **why)
{
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    tb_status st = TB_OK;
    if (!json_is_object(root)) {
        st = deny(why, "claims are not a JSON object");
        goto out;
    }
    const json_t *sub = json_object_get(root, "sub");
    const json_t *exp = json_object_get(root, "exp");
    const json_t *nbf = json_object_get(root, "nbf");
    if (!json_is_string(sub) || json_string_length(sub) == 0 ||
        json_string_length(sub) > TB_AUTH_SUB_MAX || strlen(json_string_value(sub)) !=
                                                         json_string_length(sub)) {
        st = deny(why, "sub claim missing or invalid");
        goto out;
    }
    if (!json_is_number(exp) || !isfinite(json_number_value(exp))) {
        st = deny(why, "exp claim missing or not a number");
        goto out;
    }
    if (json_number_value(exp) <= now) {
        st = deny(why, "token expired");
        goto out;
    }
    if (nbf && (!json_is_number(nbf) || !isfinite(json_number_value(nbf)))) {
        st = deny(why, "nbf claim not a number");
        goto out;
    }
    if (nbf && json_number_value(nbf) > now) {
        st = deny(why, "token not yet valid");
        goto out;
    }
    unsigned roles;
    st = read_roles(root, &roles, why);
    if (st)
        goto out;
    memset(out, 0, sizeof *out);
    memcpy(out->sub, json_string_value(sub), json_string_length(sub));
    out->roles = roles;
out:
    json_decref(root);
    return st;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes unpadded base64url; false on a bad character, a bad length or overflow. */
static bool b64url_decode(const char *in, size_t len, char *out, size_t cap, size_t *outlen)
{
    if (len % 4 == 1)
        return false;
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(in[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return false;
            out[n++] = (char)((acc >> bits) & 0xFF);
        }
    }
    *outlen = n;
    return true;
}

tb_status tb_auth_peek_alg(const char *token, size_t len, char *out, size_t outlen)
{
    if (len == 0 || len > TB_AUTH_TOKEN_MAX)
        return TB_EAUTH;
    const char *dot1 = memchr(token, '.', len);
    if (!dot1)
        return TB_EAUTH;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return TB_EAUTH;
    char header[HEADER_MAX];
    size_t header_len;
    if (!b64url_decode(token, (size_t)(dot1 - token), header, sizeof header, &header_len))
        return TB_EAUTH;
    json_t *root = json_loadb(header, header_len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *alg = json_object_get(root, "alg");
    tb_status st = TB_EAUTH;
    if (json_is_object(root) && json_is_string(alg) && json_string_length(alg) < outlen &&
        json_string_length(alg) > 0) {
        memcpy(out, json_string_value(alg), json_string_length(alg) + 1);
        st = TB_OK;
    }
    json_decref(root);
    return st;
}
