/*
 * The bus envelope (CONTRACT §2). Events are built here for publishing and
 * decoded here from received bytes. Decoded events take their topic from the
 * transport subject (anti-spoofing); payloads are re-serialized compactly so
 * their text never contains CR or LF and can go into one SSE data line.
 */
#include <math.h>
#include <string.h>

#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/envelope.h"
#include "tb/random.h"

enum { JSON_DUMP_FLAGS = JSON_COMPACT | JSON_REAL_PRECISION(17) };

static const char *const error_names[TB_ENVELOPE_ERROR_COUNT] = {
    [TB_ENVELOPE_OK] = "ok",
    [TB_ENVELOPE_TOO_LARGE] = "too_large",
    [TB_ENVELOPE_BAD_UTF8] = "bad_utf8",
    [TB_ENVELOPE_BAD_JSON] = "bad_json",
    [TB_ENVELOPE_NOT_OBJECT] = "not_object",
    [TB_ENVELOPE_BAD_PAYLOAD] = "bad_payload",
    [TB_ENVELOPE_BAD_FIELD] = "bad_field",
    [TB_ENVELOPE_BAD_VERSION] = "bad_version",
    [TB_ENVELOPE_BAD_SUBJECT] = "bad_subject",
};

const char *tb_envelope_error_str(tb_envelope_error err)
{
    if ((size_t)err >= TB_ARRAY_LEN(error_names))
        return "unknown";
    return error_names[err];
}

bool tb_event_type_valid(const char *type)
{
    size_t len = strnlen(type, TB_TOPIC_MAX_LEN + 1);
    if (len == 0 || len > TB_TOPIC_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = type[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

static bool is_event_id(const char *s)
{
    if (strlen(s) != TB_EVENT_ID_LEN)
        return false;
    for (size_t i = 0; i < TB_EVENT_ID_LEN; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

/* A new event with one reference; takes ownership of payload (a malloc'd compact object). */
static tb_event_t *event_new(const char *topic, const char *type, double ts, char *payload)
{
    tb_event_t *ev = tb_xcalloc(1, sizeof *ev);
    atomic_init(&ev->refs, 1);
    strcpy(ev->topic, topic); /* callers validated the length */
    strcpy(ev->type, type);
    ev->ts = ts;
    ev->payload = payload;
    ev->payload_len = strlen(payload);
    return ev;
}

static tb_status create_checked(tb_event_t **out, const char *topic, const char *type,
                                const json_t *payload, const char **why)
{
    const char *reason = NULL;
    if (tb_topic_validate(topic, &reason)) {
        if (why)
            *why = reason;
        return TB_EINVAL;
    }
    if (!type)
        type = tb_topic_type(topic);
    if (!tb_event_type_valid(type)) {
        if (why)
            *why = "type must be 1..255 bytes of A-Z a-z 0-9 _ - .";
        return TB_EINVAL;
    }
    if (!json_is_object(payload)) {
        if (why)
            *why = "payload must be a JSON object";
        return TB_EINVAL;
    }
    char *text = json_dumps(payload, JSON_DUMP_FLAGS);
    if (!text) {
        if (why)
            *why = "payload cannot be serialized";
        return TB_EINVAL;
    }
    tb_event_t *ev = event_new(topic, type, tb_clock_wall(), text);
    tb_random_hex(ev->id, TB_EVENT_ID_LEN / 2);
    *out = ev;
    return TB_OK;
}

tb_status tb_event_create_json(tb_event_t **out, const char *topic, const char *type,
                               const json_t *payload, const char **why)
{
    *out = NULL;
    return create_checked(out, topic, type, payload, why);
}

tb_status tb_event_create(tb_event_t **out, const char *topic, const char *type,
                          const char *payload_json, size_t payload_len, const char **why)
{
    *out = NULL;
    if (payload_len > TB_ENVELOPE_MAX_BYTES || !tb_utf8_valid(payload_json, payload_len)) {
        if (why)
            *why = "payload must be valid UTF-8 and at most 1 MiB";
        return TB_EINVAL;
    }
    json_t *payload =
        json_loadb(payload_json, payload_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (!payload) {
        if (why)
            *why = "payload is not valid JSON";
        return TB_EINVAL;
    }
    tb_status st = create_checked(out, topic, type, payload, why);
    json_decref(payload);
    return st;
}

/* Appends t (epoch seconds, >= 0) with six decimals, as "%.6f" would. */
static void append_micros(tb_buf_t *out, double t)
{
    if (!(t >= 0.0) || t > 9e15) {
        tb_buf_appendf(out, "%.6f", t); /* never for a clock reading; kept exact anyway */
        return;
    }
    uint64_t us = (uint64_t)(t * 1e6 + 0.5);
    char digits[32];
    size_t n = 0;
    for (int i = 0; i < 6; i++, us /= 10)
        digits[n++] = (char)('0' + us % 10);
    digits[n++] = '.';
    do {
        digits[n++] = (char)('0' + us % 10);
        us /= 10;
    } while (us > 0);
    char text[32];
    for (size_t i = 0; i < n; i++)
        text[i] = digits[n - 1 - i];
    tb_buf_append(out, text, n);
}

tb_status tb_envelope_encode(const tb_event_t *ev, tb_buf_t *out)
{
    if (tb_buf_status(out))
        return TB_EFULL;
    /* topic, type and id are limited to characters JSON strings need not escape. */
    size_t mark = out->len;
    /* Plain appends: this runs for every published event, and printf of a double costs
     * more than the rest of the envelope together. */
    tb_buf_append_str(out, "{\"v\":" TB_ENVELOPE_VERSION_TEXT ",\"id\":\"");
    tb_buf_append_str(out, ev->id);
    tb_buf_append_str(out, "\",\"topic\":\"");
    tb_buf_append_str(out, ev->topic);
    tb_buf_append_str(out, "\",\"type\":\"");
    tb_buf_append_str(out, ev->type);
    tb_buf_append_str(out, "\",\"ts\":");
    append_micros(out, ev->ts);
    tb_buf_append_str(out, ",\"payload\":");
    tb_buf_append(out, ev->payload, ev->payload_len);
    tb_buf_append(out, "}", 1);
    tb_status st = tb_buf_status(out);
    if (st)
        tb_buf_truncate(out, mark);
    return st;
}

static tb_envelope_error decode_fields(const json_t *root, tb_event_t *fields, double now)
{
    const json_t *v = json_object_get(root, "v");
    if (v) {
        if (!json_is_integer(v))
            return TB_ENVELOPE_BAD_FIELD;
        if (json_integer_value(v) != TB_ENVELOPE_VERSION)
            return TB_ENVELOPE_BAD_VERSION;
    }
    const json_t *id = json_object_get(root, "id");
    fields->id[0] = '\0';
    if (id) {
        if (!json_is_string(id) || !is_event_id(json_string_value(id)))
            return TB_ENVELOPE_BAD_FIELD;
        strcpy(fields->id, json_string_value(id));
    }
    const json_t *ts = json_object_get(root, "ts");
    fields->ts = now;
    if (ts) {
        if (!json_is_number(ts))
            return TB_ENVELOPE_BAD_FIELD;
        double value = json_number_value(ts);
        if (!isfinite(value) || value < 0)
            return TB_ENVELOPE_BAD_FIELD;
        fields->ts = value;
    }
    const json_t *type = json_object_get(root, "type");
    if (type) {
        if (!json_is_string(type) || !tb_event_type_valid(json_string_value(type)))
            return TB_ENVELOPE_BAD_FIELD;
        strcpy(fields->type, json_string_value(type));
    }
    return TB_ENVELOPE_OK;
}

static tb_status decode_fail(tb_envelope_error *why, tb_envelope_error err)
{
    *why = err;
    return TB_EINVAL;
}

tb_status tb_envelope_decode(const char *subject, const char *data, size_t len, double now,
                             tb_event_t **out, tb_envelope_error *why)
{
    *out = NULL;
    *why = TB_ENVELOPE_OK;
    if (tb_topic_validate(subject, NULL))
        return decode_fail(why, TB_ENVELOPE_BAD_SUBJECT);
    if (len > TB_ENVELOPE_MAX_BYTES)
        return decode_fail(why, TB_ENVELOPE_TOO_LARGE);
    if (!tb_utf8_valid(data, len))
        return decode_fail(why, TB_ENVELOPE_BAD_UTF8);
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (!root)
        return decode_fail(why, TB_ENVELOPE_BAD_JSON);
    tb_envelope_error err = TB_ENVELOPE_OK;
    char *payload_text = NULL;
    tb_event_t fields = {.type = ""};
    if (!json_is_object(root)) {
        err = TB_ENVELOPE_NOT_OBJECT;
        goto out;
    }
    const json_t *payload = json_object_get(root, "payload");
    if (!json_is_object(payload)) {
        err = TB_ENVELOPE_BAD_PAYLOAD;
        goto out;
    }
    err = decode_fields(root, &fields, now);
    if (err)
        goto out;
    payload_text = json_dumps(payload, JSON_DUMP_FLAGS);
    if (!payload_text) {
        err = TB_ENVELOPE_BAD_PAYLOAD;
        goto out;
    }
    const char *type = fields.type[0] ? fields.type : tb_topic_type(subject);
    tb_event_t *ev = event_new(subject, type, fields.ts, payload_text);
    strcpy(ev->id, fields.id);
    *out = ev;
out:
    json_decref(root);
    return err ? decode_fail(why, err) : TB_OK;
}
