/*
 * The mutator's graph ops on arbitrary bytes parsed as JSON
 * {"doc":{"nodes","links"},"op","payload"} (payloads come from outside,
 * through the HTTP API and the queue). Checks invariants, not only the
 * absence of crashes: the document and payload are never modified; the
 * verdict is deterministic; a success is a valid graph; a failure carries a
 * reason the store accepts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tb/envelope.h"
#include "tb/mutator.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dump(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

static void same_or_abort(char *before, const json_t *v)
{
    char *after = dump(v);
    if ((before == NULL) != (after == NULL) || (before && strcmp(before, after) != 0))
        abort();
    free(before);
    free(after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return 0;
    }
    const json_t *doc = json_object_get(root, "doc");
    const json_t *payload = json_object_get(root, "payload");
    const char *op = json_string_value(json_object_get(root, "op"));
    if (!doc)
        doc = root;
    char *doc_before = dump(doc);
    char *payload_before = dump(payload);
    json_t *out = NULL, *again = NULL;
    char reason[TB_MUTATOR_REASON_BUF_SIZE], reason2[TB_MUTATOR_REASON_BUF_SIZE];
    tb_status st = tb_mutator_apply_op(doc, op, payload, &out, reason);
    tb_status st2 = tb_mutator_apply_op(doc, op, payload, &again, reason2);
    if (st != st2)
        abort();
    if (st == TB_OK) {
        if (!out || tb_store_validate_graph(json_object_get(out, "nodes"),
                                            json_object_get(out, "links"), NULL) != TB_OK ||
            !json_equal(out, again))
            abort();
    } else {
        size_t len = strlen(reason);
        if (st != TB_EINVAL || out || len == 0 || len > TB_STORE_REASON_MAX ||
            !tb_utf8_valid(reason, len) || strcmp(reason, reason2) != 0)
            abort();
    }
    same_or_abort(doc_before, doc);
    same_or_abort(payload_before, payload);
    json_decref(out);
    json_decref(again);
    json_decref(root);
    return 0;
}
