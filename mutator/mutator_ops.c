/*
 * The graph ops of CONTRACT §4 over jansson documents. Every op works on
 * deep copies of the input's nodes and links, so the caller's document is
 * never touched, whatever happens; the result is checked once more by the
 * store's validator, which is the single authority on what a valid graph is.
 * Pure functions; any thread.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mutator_int.h"
#include "tb/topic.h"

typedef struct op_field {
    const char *key;
    int type; /* JSON_STRING or JSON_OBJECT */
    bool required;
} op_field_t;

typedef struct op_ctx {
    json_t *nodes; /* owned copies */
    json_t *links;
    const json_t *payload;
    const char *op;
    char *reason;
} op_ctx_t;

typedef tb_status (*op_fn)(op_ctx_t *c);

typedef struct op_def {
    const char *name;
    const op_field_t *fields;
    size_t nfields;
    op_fn apply;
} op_def_t;

static tb_status refuse(op_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static tb_status refuse(op_ctx_t *c, const char *fmt, ...)
{
    int head = snprintf(c->reason, TB_MUTATOR_REASON_BUF_SIZE, "%s: ", c->op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason + head, TB_MUTATOR_REASON_BUF_SIZE - (size_t)head, fmt, ap);
    va_end(ap);
    return TB_EINVAL;
}

/* True if el's member key is the string id. The input document need not be
 * valid (a damaged row): a missing or non-string member never matches, and
 * the final validation refuses the result. */
static bool names(const json_t *el, const char *key, const char *id)
{
    const char *v = json_string_value(json_object_get(el, key));
    return v && strcmp(v, id) == 0;
}

/* Index of the element of arr whose "id" is id, or -1. */
static long find_by_id(const json_t *arr, const char *id)
{
    size_t i;
    const json_t *el;
    json_array_foreach(arr, i, el) {
        if (names(el, "id", id))
            return (long)i;
    }
    return -1;
}

static const char *str(const op_ctx_t *c, const char *key)
{
    return json_string_value(json_object_get(c->payload, key));
}

static tb_status add_node(op_ctx_t *c)
{
    if (find_by_id(c->nodes, str(c, "id")) >= 0)
        return refuse(c, "a node with id '%s' already exists", str(c, "id"));
    json_array_append_new(c->nodes, json_deep_copy(c->payload));
    return TB_OK;
}

static tb_status update_node(op_ctx_t *c)
{
    const json_t *label = json_object_get(c->payload, "label");
    const json_t *props = json_object_get(c->payload, "props");
    if (!label && !props)
        return refuse(c, "the payload must carry label or props (or both)");
    long i = find_by_id(c->nodes, str(c, "id"));
    if (i < 0)
        return refuse(c, "there is no node with id '%s'", str(c, "id"));
    json_t *node = json_array_get(c->nodes, (size_t)i);
    if (label)
        json_object_set_new(node, "label", json_deep_copy(label));
    if (props)
        json_object_set_new(node, "props", json_deep_copy(props));
    return TB_OK;
}

static tb_status remove_node(op_ctx_t *c)
{
    const char *id = str(c, "id");
    long i = find_by_id(c->nodes, id);
    if (i < 0)
        return refuse(c, "there is no node with id '%s'", id);
    json_array_remove(c->nodes, (size_t)i);
    /* The node's links go with it: walk backwards so removal keeps indices valid. */
    for (size_t j = json_array_size(c->links); j-- > 0;) {
        const json_t *l = json_array_get(c->links, j);
        if (names(l, "from", id) || names(l, "to", id))
            json_array_remove(c->links, j);
    }
    return TB_OK;
}

static tb_status add_link(op_ctx_t *c)
{
    if (find_by_id(c->links, str(c, "id")) >= 0)
        return refuse(c, "a link with id '%s' already exists", str(c, "id"));
    if (find_by_id(c->nodes, str(c, "from")) < 0)
        return refuse(c, "from names node '%s', which does not exist", str(c, "from"));
    if (find_by_id(c->nodes, str(c, "to")) < 0)
        return refuse(c, "to names node '%s', which does not exist", str(c, "to"));
    json_array_append_new(c->links, json_deep_copy(c->payload));
    return TB_OK;
}

static tb_status remove_link(op_ctx_t *c)
{
    long i = find_by_id(c->links, str(c, "id"));
    if (i < 0)
        return refuse(c, "there is no link with id '%s'", str(c, "id"));
    json_array_remove(c->links, (size_t)i);
    return TB_OK;
}

static const op_field_t add_node_fields[] = {
    {"id", JSON_STRING, true}, {"kind", JSON_STRING, true},
    {"label", JSON_STRING, false}, {"props", JSON_OBJECT, false}};
static const op_field_t update_node_fields[] = {
    {"id", JSON_STRING, true}, {"label", JSON_STRING, false}, {"props", JSON_OBJECT, false}};
static const op_field_t id_only_fields[] = {{"id", JSON_STRING, true}};
static const op_field_t add_link_fields[] = {
    {"id", JSON_STRING, true}, {"from", JSON_STRING, true},
    {"to", JSON_STRING, true}, {"props", JSON_OBJECT, false}};

static const op_def_t ops[] = {
    {"add_node", add_node_fields, TB_ARRAY_LEN(add_node_fields), add_node},
    {"update_node", update_node_fields, TB_ARRAY_LEN(update_node_fields), update_node},
    {"remove_node", id_only_fields, TB_ARRAY_LEN(id_only_fields), remove_node},
    {"add_link", add_link_fields, TB_ARRAY_LEN(add_link_fields), add_link},
    {"remove_link", id_only_fields, TB_ARRAY_LEN(id_only_fields), remove_link},
};

/* Field presence and types; ids in the token grammar. Lengths are left to the validator. */
static tb_status check_payload(op_ctx_t *c, const op_def_t *def)
{
    if (!json_is_object(c->payload))
        return refuse(c, "the payload must be an object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)(uintptr_t)c->payload, key, v) {
        bool known = false;
        for (size_t i = 0; i < def->nfields && !known; i++)
            known = strcmp(def->fields[i].key, key) == 0;
        if (!known)
            return refuse(c, "unknown field '%.64s' in the payload", key);
    }
    for (size_t i = 0; i < def->nfields; i++) {
        const op_field_t *f = &def->fields[i];
        v = json_object_get(c->payload, f->key);
        if (!v) {
            if (f->required)
                return refuse(c, "%s is required", f->key);
            continue;
        }
        if (f->type == JSON_OBJECT && !json_is_object(v))
            return refuse(c, "%s must be an object", f->key);
        if (f->type == JSON_STRING && !json_is_string(v))
            return refuse(c, "%s must be a string", f->key);
        bool is_id = strcmp(f->key, "id") == 0 || strcmp(f->key, "from") == 0 ||
                     strcmp(f->key, "to") == 0;
        if (is_id && !tb_topology_id_valid_n(json_string_value(v), json_string_length(v)))
            return refuse(c, "%s must be 1..64 bytes of [A-Za-z0-9_-]", f->key);
    }
    return TB_OK;
}

/* A copy of doc's member `key`, which must be an array or absent. */
static json_t *copy_array(const json_t *doc, const char *key)
{
    const json_t *v = json_object_get(doc, key);
    if (!v)
        return json_array();
    return json_is_array(v) ? json_deep_copy(v) : NULL;
}

static tb_status apply(const json_t *doc, const char *op, const json_t *payload, json_t **out,
                       char *reason);

tb_status tb_mutator_apply_op(const json_t *doc, const char *op, const json_t *payload,
                              json_t **out, char *reason)
{
    tb_status st = apply(doc, op, payload, out, reason);
    if (st) {
        /* Quoted input may be cut inside a UTF-8 sequence; the store wants clean text. */
        char raw[TB_MUTATOR_REASON_BUF_SIZE];
        memcpy(raw, reason, sizeof raw);
        tb__mutator_reason_clean(reason, raw, strlen(raw), "the op was refused");
    }
    return st;
}

static tb_status apply(const json_t *doc, const char *op, const json_t *payload, json_t **out,
                       char *reason)
{
    *out = NULL;
    reason[0] = '\0';
    op_ctx_t c = {.payload = payload, .op = op ? op : "(null)", .reason = reason};
    const op_def_t *def = NULL;
    for (size_t i = 0; op && i < TB_ARRAY_LEN(ops) && !def; i++)
        def = strcmp(ops[i].name, op) == 0 ? &ops[i] : NULL;
    if (!def) {
        snprintf(reason, TB_MUTATOR_REASON_BUF_SIZE,
                 "unknown op '%.64s' (add_node, update_node, remove_node, add_link, remove_link)",
                 c.op);
        return TB_EINVAL;
    }
    tb_status st = check_payload(&c, def);
    if (st)
        return st;
    if (!json_is_object(doc))
        return refuse(&c, "the document is not an object");
    c.nodes = copy_array(doc, "nodes");
    c.links = copy_array(doc, "links");
    if (!c.nodes || !c.links) {
        st = refuse(&c, "the document's nodes and links must be arrays");
        goto out;
    }
    st = def->apply(&c);
    if (st)
        goto out;
    tb_store_err_t err;
    if (tb_store_validate_graph(c.nodes, c.links, &err)) {
        st = refuse(&c, "the result would be invalid: %s", err.message);
        goto out;
    }
    *out = json_pack("{s:O, s:O}", "nodes", c.nodes, "links", c.links);
out:
    json_decref(c.nodes);
    json_decref(c.links);
    return st;
}
