/* Scratch directories, store URLs and small helpers for the store tests. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_fixture.h"
#include "tb/alloc.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "store fixture: %s: %s\n", what, detail);
    abort();
}

tb_store_t *tb_test_store_reopen(const tb_test_store_t *t, long lease_s)
{
    tb_store_options_t opts = {.lease_s = lease_s};
    tb_store_err_t err;
    tb_store_t *s = NULL;
    if (tb_store_open(&s, t->url, &opts, &err) != TB_OK)
        die("open", err.message);
    return s;
}

void tb_test_store_init(tb_test_store_t *t, long lease_s)
{
    memset(t, 0, sizeof *t);
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/tb_store_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(t->dir))
        die("mkdtemp", t->dir);
    const char *url = getenv("TB_STORE_TEST_URL");
    if (url && *url) {
        snprintf(t->url, sizeof t->url, "%s", url);
    } else {
        snprintf(t->url, sizeof t->url, "sqlite:%s/store.db", t->dir);
        t->own_db = true;
    }
    t->store = tb_test_store_reopen(t, lease_s);
}

/* Leaves no row pending or applying on a shared database, so the next test
 * starts from a quiet queue (recovery and pending-work counts are totals):
 * applying rows are failed, pending ones claimed and failed, through the
 * store's own calls only. */
static void quiesce(tb_store_t *s)
{
    json_t *list = NULL;
    if (tb_store_topology_list(s, &list, NULL) != TB_OK)
        die("quiesce", "list topologies");
    size_t i;
    json_t *entry;
    json_array_foreach(list, i, entry)
    {
        const char *tid = tb_store_doc_id(entry);
        json_t *rows = NULL, *row = NULL;
        if (tb_store_mutation_list(s, tid, "applying", &rows, NULL) != TB_OK)
            die("quiesce", tid);
        size_t k;
        json_t *r;
        json_array_foreach(rows, k, r)
        {
            tb_store_mutation_mark_failed(s, tb_store_row_id(r), "test cleanup", NULL, NULL);
        }
        json_decref(rows);
        while (tb_store_mutation_claim(s, tid, &row, NULL) == TB_OK) {
            tb_store_mutation_mark_failed(s, tb_store_row_id(row), "test cleanup", NULL, NULL);
            json_decref(row);
        }
    }
    json_decref(list);
}

void tb_test_store_cleanup(tb_test_store_t *t)
{
    if (t->store && !t->own_db)
        quiesce(t->store);
    tb_store_close(t->store);
    t->store = NULL;
    DIR *d = opendir(t->dir);
    if (d) {
        struct dirent *e;
        char path[600];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", t->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(t->dir);
}

char *tb_test_create_topology(tb_store_t *s, const char *name)
{
    json_t *doc = NULL;
    tb_store_err_t err;
    if (tb_store_topology_create(s, name, NULL, NULL, &doc, &err) != TB_OK)
        die("create topology", err.message);
    char *id = tb_xstrdup(tb_store_doc_id(doc));
    json_decref(doc);
    return id;
}

json_t *tb_test_json(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        die("test JSON", jerr.text);
    return v;
}

const char *tb_test_status(tb_store_t *s, const char *id, char *buf, size_t cap)
{
    json_t *doc = NULL;
    if (tb_store_topology_get(s, id, &doc, NULL) != TB_OK)
        die("get topology", id);
    snprintf(buf, cap, "%s", tb_store_doc_status(doc));
    json_decref(doc);
    return buf;
}

size_t tb_test_count_rows(tb_store_t *s, const char *id)
{
    json_t *rows = NULL;
    if (tb_store_mutation_list(s, id, NULL, &rows, NULL) != TB_OK)
        die("list mutations", id);
    size_t n = json_array_size(rows);
    json_decref(rows);
    return n;
}
