/*
 * Topic grammar, wildcard matching and topic builders (CONTRACT §1).
 * Pure functions: no allocation, no globals beyond const tables.
 */
#include <stdio.h>
#include <string.h>

#include "proto_int.h"
#include "tb/topic.h"

static const char topology_prefix[] = "topology.";
enum { TOPOLOGY_PREFIX_LEN = sizeof topology_prefix - 1 };

static const char *const family_tails[] = {
    [TB_TOPIC_MUTATION_ENQUEUED] = "mutation.enqueued",
    [TB_TOPIC_MUTATION_APPLYING] = "mutation.applying",
    [TB_TOPIC_MUTATION_APPLIED] = "mutation.applied",
    [TB_TOPIC_MUTATION_FAILED] = "mutation.failed",
    [TB_TOPIC_STATUS] = "status",
};

static bool is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

bool tb_topology_id_valid_n(const char *id, size_t len)
{
    if (!id || len == 0 || len > TB_TOKEN_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_token_char(id[i]))
            return false;
    }
    return true;
}

bool tb_topology_id_valid(const char *id)
{
    return id && tb_topology_id_valid_n(id, strnlen(id, TB_TOKEN_MAX_LEN + 1));
}

static tb_status reject(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return TB_EINVAL;
}

/* Validates one token [s, s + len) that ends the subject iff `last`. */
static tb_status check_token(const char *s, size_t len, bool pattern, bool last, const char **why)
{
    if (len == 0)
        return reject(why, "empty token (leading, trailing or double dot)");
    if (len > TB_TOKEN_MAX_LEN)
        return reject(why, "token longer than 64 bytes");
    if (len == 1 && (s[0] == '*' || s[0] == '>')) {
        if (!pattern)
            return reject(why, "wildcard in a topic (only patterns may use * and >)");
        if (s[0] == '>' && !last)
            return reject(why, "'>' must be the last token");
        return TB_OK;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_token_char(s[i]))
            return reject(why, "invalid character (tokens use A-Z a-z 0-9 _ -)");
    }
    return TB_OK;
}

static tb_status check_subject(const char *s, bool pattern, const char **why)
{
    if (!s)
        return reject(why, "missing");
    size_t len = strnlen(s, TB_TOPIC_MAX_LEN + 1);
    if (len == 0)
        return reject(why, "empty");
    if (len > TB_TOPIC_MAX_LEN)
        return reject(why, "longer than 255 bytes");
    size_t tokens = 0;
    size_t start = 0;
    for (;;) {
        size_t end = start;
        while (end < len && s[end] != '.')
            end++;
        if (++tokens > TB_TOPIC_MAX_TOKENS)
            return reject(why, "more than 16 tokens");
        tb_status st = check_token(s + start, end - start, pattern, end == len, why);
        if (st)
            return st;
        if (end == len)
            return TB_OK;
        start = end + 1;
    }
}

tb_status tb_topic_validate(const char *topic, const char **why)
{
    return check_subject(topic, false, why);
}

tb_status tb_topic_validate_pattern(const char *pattern, const char **why)
{
    return check_subject(pattern, true, why);
}

bool tb_topic_match(const char *pattern, const char *topic)
{
    if (check_subject(pattern, true, NULL) || check_subject(topic, false, NULL))
        return false;
    const char *p = pattern;
    const char *t = topic;
    for (;;) {
        size_t plen = strcspn(p, ".");
        size_t tlen = strcspn(t, ".");
        /* Validation guarantees t is at a non-empty token, so `>` has its one token. */
        if (plen == 1 && p[0] == '>')
            return true;
        bool any = plen == 1 && p[0] == '*';
        if (!any && (plen != tlen || memcmp(p, t, plen) != 0))
            return false;
        bool p_done = p[plen] == '\0';
        bool t_done = t[tlen] == '\0';
        if (p_done || t_done)
            return p_done && t_done;
        p += plen + 1;
        t += tlen + 1;
    }
}

tb_status tb_topic_build(char *out, tb_topic_family family, const char *id)
{
    out[0] = '\0';
    if ((size_t)family >= TB_ARRAY_LEN(family_tails) || !tb_topology_id_valid(id))
        return TB_EINVAL;
    snprintf(out, TB_TOPIC_BUF_SIZE, "%s%s.%s", topology_prefix, id, family_tails[family]);
    return TB_OK;
}

tb_status tb_topic_build_topology_pattern(char *out, const char *id)
{
    out[0] = '\0';
    if (!tb_topology_id_valid(id))
        return TB_EINVAL;
    snprintf(out, TB_TOPIC_BUF_SIZE, "%s%s.>", topology_prefix, id);
    return TB_OK;
}

tb_status tb_topic_build_health(char *out, const char *worker)
{
    out[0] = '\0';
    if (!tb_topology_id_valid(worker))
        return TB_EINVAL;
    snprintf(out, TB_TOPIC_BUF_SIZE, "system.%s.health", worker);
    return TB_OK;
}

const char *tb__proto_after_two_tokens(const char *s)
{
    const char *first = strchr(s, '.');
    if (!first)
        return NULL;
    const char *second = strchr(first + 1, '.');
    if (!second || second[1] == '\0')
        return NULL;
    return second + 1;
}

const char *tb_topic_type(const char *topic)
{
    if (strncmp(topic, topology_prefix, TOPOLOGY_PREFIX_LEN) != 0)
        return topic;
    const char *tail = tb__proto_after_two_tokens(topic);
    return tail ? tail : topic;
}

tb_status tb_topic_topology_id(const char *topic, char *out)
{
    out[0] = '\0';
    if (strncmp(topic, topology_prefix, TOPOLOGY_PREFIX_LEN) != 0)
        return TB_EINVAL;
    const char *id = topic + TOPOLOGY_PREFIX_LEN;
    const char *dot = strchr(id, '.');
    if (!dot || dot[1] == '\0' || !tb_topology_id_valid_n(id, (size_t)(dot - id)))
        return TB_EINVAL;
    memcpy(out, id, (size_t)(dot - id));
    out[dot - id] = '\0';
    return TB_OK;
}
