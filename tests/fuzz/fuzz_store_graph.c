/*
 * The store's graph validator (nodes and links, CONTRACT §4) on arbitrary
 * bytes parsed as JSON. Checks invariants, not only the absence of crashes:
 * the verdict is deterministic; a valid graph stays valid after a compact
 * serialise/parse round trip (what the store writes and reads back); a
 * failure always carries a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tb/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const json_t *nodes, const json_t *links)
{
    tb_store_err_t err;
    tb_status st = tb_store_validate_graph(nodes, links, &err);
    if (tb_store_validate_graph(nodes, links, NULL) != st)
        abort();
    if (st != TB_OK) {
        if (st != TB_EINVAL || err.reason != TB_STORE_R_INVALID || err.message[0] == '\0')
            abort();
        return;
    }
    json_t *graph = json_object();
    json_object_set_new(graph, "nodes",
                        nodes ? json_incref((json_t *)(uintptr_t)nodes) : json_array());
    json_object_set_new(graph, "links",
                        links ? json_incref((json_t *)(uintptr_t)links) : json_array());
    char *text = json_dumps(graph, JSON_COMPACT);
    json_decref(graph);
    json_t *back = json_loads(text, JSON_ALLOW_NUL, NULL);
    free(text);
    if (!back ||
        tb_store_validate_graph(json_object_get(back, "nodes"), json_object_get(back, "links"),
                                NULL) != TB_OK)
        abort();
    json_decref(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!root)
        return 0;
    if (json_is_object(root))
        check(json_object_get(root, "nodes"), json_object_get(root, "links"));
    else
        check(root, NULL); /* any other value stands for a nodes member */
    json_decref(root);
    return 0;
}
