/*
 * The topic grammar of CONTRACT §1: validation of topics and subscription
 * patterns, NATS-style wildcard matching, topology ids and the topic
 * builders for every family. Pure functions over caller memory.
 */
#ifndef TB_TOPIC_H
#define TB_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#include "tb/base.h"

#define TB_TOPIC_MAX_LEN 255   /* bytes in a topic or pattern */
#define TB_TOPIC_MAX_TOKENS 16 /* tokens in a topic or pattern */
#define TB_TOKEN_MAX_LEN 64    /* bytes in one token (and in a topology id) */
#define TB_TOPIC_BUF_SIZE (TB_TOPIC_MAX_LEN + 1)
#define TB_TOPOLOGY_ID_BUF_SIZE (TB_TOKEN_MAX_LEN + 1)

/** The topic families the services publish (CONTRACT §1). */
typedef enum tb_topic_family {
    TB_TOPIC_MUTATION_ENQUEUED,
    TB_TOPIC_MUTATION_APPLYING,
    TB_TOPIC_MUTATION_APPLIED,
    TB_TOPIC_MUTATION_FAILED,
    TB_TOPIC_STATUS,
} tb_topic_family;

/**
 * Checks a topic for publishing: 1..16 tokens of 1..64 bytes of
 * [A-Za-z0-9_-], at most 255 bytes, no wildcards. On TB_EINVAL, *why (if
 * why is not NULL) gets a static human-readable reason.
 */
tb_status tb_topic_validate(const char *topic, const char **why);

/** As tb_topic_validate, but tokens may be `*`, and the last token may be `>`. */
tb_status tb_topic_validate_pattern(const char *pattern, const char **why);

/**
 * True if topic matches pattern with NATS semantics: `*` matches exactly one
 * token, `>` one or more trailing tokens. An invalid pattern or topic never
 * matches.
 */
bool tb_topic_match(const char *pattern, const char *topic);

/** True if id follows the token grammar (1..64 bytes of [A-Za-z0-9_-]). */
bool tb_topology_id_valid(const char *id);

/** As tb_topology_id_valid for len bytes that need not be NUL-terminated. */
bool tb_topology_id_valid_n(const char *id, size_t len);

/**
 * Writes `topology.<id>.<family tail>` into out (TB_TOPIC_BUF_SIZE bytes).
 * TB_EINVAL, with out set to "", if id is not a valid topology id.
 */
tb_status tb_topic_build(char *out, tb_topic_family family, const char *id);

/** Writes the pattern `topology.<id>.>` into out; TB_EINVAL for an invalid id. */
tb_status tb_topic_build_topology_pattern(char *out, const char *id);

/** Writes `system.<worker>.health` into out; TB_EINVAL for an invalid worker token. */
tb_status tb_topic_build_health(char *out, const char *worker);

/**
 * The envelope `type` of a topic (CONTRACT §2): the tail after
 * `topology.<id>.` for the topology family, else the whole topic. Returns a
 * pointer into topic (borrowed, valid as long as topic).
 */
const char *tb_topic_type(const char *topic);

/**
 * If topic is `topology.<id>.<tail>`, copies id into out
 * (TB_TOPOLOGY_ID_BUF_SIZE bytes) and returns TB_OK; else TB_EINVAL.
 */
tb_status tb_topic_topology_id(const char *topic, char *out);

#endif
