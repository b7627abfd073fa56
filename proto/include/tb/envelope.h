/*
 * The bus envelope of CONTRACT §2: building events for publishing, encoding
 * them to bytes, and decoding received bytes. Decoding trusts the subject the
 * transport delivered on, never the envelope's `topic` field.
 *
 * Pure except tb_event_create*, which read the wall clock and the CSPRNG for
 * `ts` and `id`.
 */
#ifndef TB_ENVELOPE_H
#define TB_ENVELOPE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "tb/buf.h"
#include "tb/event.h"

#define TB_ENVELOPE_MAX_BYTES (1024u * 1024u) /* largest envelope accepted */
#define TB_ENVELOPE_VERSION 1
#define TB_ENVELOPE_VERSION_TEXT "1" /* the same, for string literals */

/** Why a received envelope was rejected; each reason is counted separately. */
typedef enum tb_envelope_error {
    TB_ENVELOPE_OK = 0,
    TB_ENVELOPE_TOO_LARGE,   /* over TB_ENVELOPE_MAX_BYTES */
    TB_ENVELOPE_BAD_UTF8,    /* not valid UTF-8 */
    TB_ENVELOPE_BAD_JSON,    /* not parseable JSON */
    TB_ENVELOPE_NOT_OBJECT,  /* JSON, but not an object */
    TB_ENVELOPE_BAD_PAYLOAD, /* payload missing or not an object */
    TB_ENVELOPE_BAD_FIELD,   /* v, id, ts or type present with a wrong type or form */
    TB_ENVELOPE_BAD_VERSION, /* v is not 1 */
    TB_ENVELOPE_BAD_SUBJECT, /* the transport subject is not a valid topic */
    TB_ENVELOPE_ERROR_COUNT
} tb_envelope_error;

/** Stable snake_case name of a reason ("bad_utf8"), e.g. for metrics labels. */
const char *tb_envelope_error_str(tb_envelope_error err);

/** True if the len bytes at s are well-formed UTF-8 (no overlongs, no surrogates). */
bool tb_utf8_valid(const char *s, size_t len);

/** True if type is 1..255 bytes of [A-Za-z0-9_.-]. */
bool tb_event_type_valid(const char *type);

/**
 * Builds a new event for publishing from a payload given as JSON text, with a
 * fresh id and the current time. type NULL means the topic's derived type.
 * *out is a new event with one reference. TB_EINVAL (and *why set to a static
 * reason if why is not NULL) for an invalid topic or type, or a payload that
 * is not a JSON object.
 */
tb_status tb_event_create(tb_event_t **out, const char *topic, const char *type,
                          const char *payload_json, size_t payload_len, const char **why);

/** As tb_event_create with the payload as a jansson object (borrowed). */
tb_status tb_event_create_json(tb_event_t **out, const char *topic, const char *type,
                               const json_t *payload, const char **why);

/** Appends the envelope bytes of ev (compact JSON, no newline) to out. */
tb_status tb_envelope_encode(const tb_event_t *ev, tb_buf_t *out);

/**
 * Decodes len bytes received on subject. Missing optional fields are filled:
 * `ts` with now, `type` with the subject's derived type, `id` with "". On
 * success *out is a new event with one reference; otherwise *out is NULL,
 * *why names the reason and the status is TB_EINVAL.
 */
tb_status tb_envelope_decode(const char *subject, const char *data, size_t len, double now,
                             tb_event_t **out, tb_envelope_error *why);

#endif
