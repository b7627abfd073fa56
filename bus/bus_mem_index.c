/*
 * The mem backend's subscription index: a trie keyed by topic tokens. Each
 * node has a hash table of literal children, one `*` child, the
 * subscriptions whose pattern ends at the node, and those whose pattern ends
 * in `>` right after it. Matching a topic walks at most the literal and `*`
 * branches its tokens select, so 10,000 subscriptions on distinct
 * topologies cost a publish a handful of node visits, not 10,000 matches.
 *
 * Not thread-safe; the mem backend holds its rwlock around every call. The
 * index stores borrowed subscription pointers (the bus keeps them alive).
 */
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"
#include "tb/alloc.h"

enum { MIN_BUCKETS = 4 };

typedef struct node node_t;

struct node {
    char *token;      /* this node's literal token; NULL for the root and `*` nodes */
    size_t token_len;
    node_t *parent;
    node_t *hnext;    /* next in the parent's bucket chain */
    node_t **buckets; /* literal children */
    size_t nbuckets, nchildren;
    node_t *star;     /* the `*` child */
    tb_sub_vec_t exact; /* patterns ending here */
    tb_sub_vec_t rest;  /* patterns ending in `>` after this node */
};

struct tb_mem_index {
    node_t root;
};

typedef struct token {
    const char *s;
    size_t len;
} token_t;

void tb__sub_vec_push(tb_sub_vec_t *v, tb_sub_t *sub)
{
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 4;
        v->items = tb_xrealloc(v->items, v->cap * sizeof *v->items);
    }
    v->items[v->len++] = sub;
}

static void vec_remove(tb_sub_vec_t *v, const tb_sub_t *sub)
{
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i] == sub) {
            v->items[i] = v->items[--v->len];
            return;
        }
    }
    TB_ASSERT(!"subscription missing from its index node");
}

static size_t split(const char *s, token_t *out)
{
    size_t n = 0;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        TB_ASSERT(n < TB_TOPIC_MAX_TOKENS);
        out[n++] = (token_t){s, len};
        if (!dot)
            return n;
        s = dot + 1;
    }
}

static size_t hash_token(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

static node_t *child_find(const node_t *n, const char *s, size_t len)
{
    if (!n->nbuckets)
        return NULL;
    for (node_t *c = n->buckets[hash_token(s, len) % n->nbuckets]; c; c = c->hnext) {
        if (c->token_len == len && memcmp(c->token, s, len) == 0)
            return c;
    }
    return NULL;
}

static void rehash(node_t *n, size_t nbuckets)
{
    node_t **buckets = tb_xcalloc(nbuckets, sizeof *buckets);
    for (size_t i = 0; i < n->nbuckets; i++) {
        node_t *c = n->buckets[i];
        while (c) {
            node_t *next = c->hnext;
            size_t b = hash_token(c->token, c->token_len) % nbuckets;
            c->hnext = buckets[b];
            buckets[b] = c;
            c = next;
        }
    }
    free(n->buckets);
    n->buckets = buckets;
    n->nbuckets = nbuckets;
}

static node_t *child_get(node_t *n, const token_t *t)
{
    if (t->len == 1 && t->s[0] == '*') {
        if (!n->star) {
            n->star = tb_xcalloc(1, sizeof *n->star);
            n->star->parent = n;
        }
        return n->star;
    }
    node_t *c = child_find(n, t->s, t->len);
    if (c)
        return c;
    if (n->nchildren >= n->nbuckets)
        rehash(n, n->nbuckets ? n->nbuckets * 2 : MIN_BUCKETS);
    c = tb_xcalloc(1, sizeof *c);
    c->token = tb_xstrndup(t->s, t->len);
    c->token_len = t->len;
    c->parent = n;
    size_t b = hash_token(t->s, t->len) % n->nbuckets;
    c->hnext = n->buckets[b];
    n->buckets[b] = c;
    n->nchildren++;
    return c;
}

static void node_free(node_t *n)
{
    free(n->token);
    free(n->buckets);
    free(n->exact.items);
    free(n->rest.items);
    free(n);
}

static bool node_empty(const node_t *n)
{
    return n->nchildren == 0 && !n->star && n->exact.len == 0 && n->rest.len == 0;
}

/* Unlinks and frees empty nodes from n up to (not including) the root. */
static void prune(node_t *n)
{
    while (n->parent && node_empty(n)) {
        node_t *p = n->parent;
        if (p->star == n) {
            p->star = NULL;
        } else {
            node_t **link = &p->buckets[hash_token(n->token, n->token_len) % p->nbuckets];
            while (*link != n)
                link = &(*link)->hnext;
            *link = n->hnext;
            p->nchildren--;
        }
        node_free(n);
        n = p;
    }
}

/* The node a pattern's subscription lives on and which list; creates nodes if asked. */
static node_t *locate(tb_mem_index_t *index, const char *pattern, bool create, bool *rest)
{
    token_t toks[TB_TOPIC_MAX_TOKENS];
    size_t n = split(pattern, toks);
    *rest = toks[n - 1].len == 1 && toks[n - 1].s[0] == '>';
    size_t walk = *rest ? n - 1 : n;
    node_t *node = &index->root;
    for (size_t i = 0; i < walk; i++) {
        node = create ? child_get(node, &toks[i])
                      : (toks[i].len == 1 && toks[i].s[0] == '*')
                            ? node->star
                            : child_find(node, toks[i].s, toks[i].len);
        TB_ASSERT(node);
    }
    return node;
}

void tb__mem_index_create(tb_mem_index_t **out)
{
    *out = tb_xcalloc(1, sizeof **out);
}

static void free_subtree(node_t *n)
{
    for (size_t i = 0; i < n->nbuckets; i++) {
        node_t *c = n->buckets[i];
        while (c) {
            node_t *next = c->hnext;
            free_subtree(c);
            c = next;
        }
    }
    if (n->star)
        free_subtree(n->star);
    if (n->parent)
        node_free(n);
}

void tb__mem_index_destroy(tb_mem_index_t *index)
{
    if (!index)
        return;
    free_subtree(&index->root);
    free(index->root.buckets);
    free(index->root.exact.items);
    free(index->root.rest.items);
    free(index);
}

void tb__mem_index_add(tb_mem_index_t *index, tb_sub_t *sub)
{
    bool rest;
    node_t *node = locate(index, sub->pattern, true, &rest);
    tb__sub_vec_push(rest ? &node->rest : &node->exact, sub);
}

void tb__mem_index_remove(tb_mem_index_t *index, tb_sub_t *sub)
{
    bool rest;
    node_t *node = locate(index, sub->pattern, false, &rest);
    vec_remove(rest ? &node->rest : &node->exact, sub);
    prune(node);
}

static void take_all(const tb_sub_vec_t *v, tb_sub_vec_t *out)
{
    for (size_t i = 0; i < v->len; i++) {
        tb__sub_ref(v->items[i]);
        tb__sub_vec_push(out, v->items[i]);
    }
}

/* Each pattern aligns with a topic in at most one way, so no subscription is found twice. */
static size_t match(const node_t *n, const token_t *toks, size_t ntoks, size_t i, tb_sub_vec_t *out)
{
    size_t visited = 1;
    if (i == ntoks) {
        take_all(&n->exact, out);
        return visited;
    }
    take_all(&n->rest, out); /* `>` needs at least one more token: i < ntoks holds */
    const node_t *c = child_find(n, toks[i].s, toks[i].len);
    if (c)
        visited += match(c, toks, ntoks, i + 1, out);
    if (n->star)
        visited += match(n->star, toks, ntoks, i + 1, out);
    return visited;
}

size_t tb__mem_index_match(const tb_mem_index_t *index, const char *topic, tb_sub_vec_t *out)
{
    token_t toks[TB_TOPIC_MAX_TOKENS];
    size_t n = split(topic, toks);
    return match(&index->root, toks, n, 0, out);
}
