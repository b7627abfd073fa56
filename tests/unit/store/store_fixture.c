/* Scratch directories, store URLs and small helpers for the store tests. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_fixture.h"
#include "tb/alloc.h"
#include "tb/envelope.h"

#define OUTBOX_READ_MAX 10000

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
 * starts from a quiet queue (recovery and pending-work counts are totals),
 * through the store's own calls only: a deploy in progress is failed (its
 * queue would wait for it), every claim is ended as if its lease had run
 * out long ago, and what is pending then is claimed and failed. */
static void quiesce(tb_store_t *s)
{
    json_t *list = NULL;
    if (tb_store_topology_list(s, &list, NULL) != TB_OK)
        die("quiesce", "list topologies");
    size_t i;
    json_t *entry;
    json_array_foreach(list, i, entry)
    {
        if (strcmp(tb_store_doc_status(entry), "deploying") == 0)
            tb_store_topology_transition(s, tb_store_doc_id(entry), TB_TOPOLOGY_DEPLOYING,
                                         TB_TOPOLOGY_FAILED, "test cleanup", NULL, NULL);
    }
    const int64_t long_ago = 10LL * 365 * 24 * 3600 * 1000;
    for (int round = 0; round < 2; round++) {
        if (tb_store_recover_stale(s, long_ago, NULL, NULL) != TB_OK)
            die("quiesce", "recover");
    }
    json_array_foreach(list, i, entry)
    {
        const char *tid = tb_store_doc_id(entry);
        json_t *row = NULL;
        tb_store_claim_t claim;
        while (tb_store_mutation_claim(s, tid, "test-cleanup", &row, &claim, NULL) == TB_OK) {
            tb_store_mutation_mark_failed(s, &claim, "test cleanup", false, NULL, NULL);
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

tb_store_t *tb_test_store_open_with(const tb_test_store_t *t, bool no_outbox)
{
    tb_store_options_t opts = {.no_outbox = no_outbox};
    tb_store_err_t err;
    tb_store_t *s = NULL;
    if (tb_store_open(&s, t->url, &opts, &err) != TB_OK)
        die("open", err.message);
    return s;
}

void tb_test_outbox_drain(tb_store_t *s)
{
    for (;;) {
        tb_outbox_row_t *rows = NULL;
        size_t n = 0;
        tb_store_err_t err;
        if (tb_store_outbox_read(s, OUTBOX_READ_MAX, &rows, &n, &err) != TB_OK)
            die("read outbox", err.message);
        if (n == 0)
            return;
        int64_t *seqs = tb_xcalloc(n, sizeof *seqs);
        for (size_t i = 0; i < n; i++)
            seqs[i] = rows[i].seq;
        tb_store_outbox_rows_free(rows, n);
        if (tb_store_outbox_delete(s, seqs, n, &err) != TB_OK)
            die("delete outbox rows", err.message);
        free(seqs);
    }
}

/* Checks one outbox row and returns it as {"seq","type","id","payload"}. */
static json_t *outbox_event(const tb_outbox_row_t *r)
{
    char where[128];
    snprintf(where, sizeof where, "outbox row %lld (age %lld ms, len %zu, msg_id %s)",
             (long long)r->seq, (long long)r->age_ms, r->len, r->msg_id);
    if (r->age_ms < 0 || r->age_ms >= 60000 || strlen(r->envelope) != r->len ||
        strlen(r->msg_id) != TB_EVENT_ID_LEN)
        die(where, "bad age, length or msg_id");
    tb_event_t *ev = NULL;
    tb_envelope_error why = TB_ENVELOPE_OK;
    if (tb_envelope_decode(r->topic, r->envelope, r->len, 0, &ev, &why) != TB_OK)
        die(where, tb_envelope_error_str(why));
    json_t *env = tb_test_json(r->envelope);
    const char *topic = json_string_value(json_object_get(env, "topic"));
    const char *id = json_string_value(json_object_get(env, "id"));
    const char *type = json_string_value(json_object_get(env, "type"));
    if (strcmp(ev->id, r->msg_id) != 0 || !id || strcmp(id, r->msg_id) != 0)
        die(where, "the envelope's id is not the row's msg_id");
    if (!topic || strcmp(topic, r->topic) != 0 || !type || strcmp(type, ev->type) != 0 ||
        json_integer_value(json_object_get(env, "v")) != 1)
        die(where, "the envelope's v, topic or type is wrong");
    json_t *e = json_pack("{s:I, s:s, s:s, s:O}", "seq", (json_int_t)r->seq, "type", ev->type, "id",
                          ev->id, "payload", json_object_get(env, "payload"));
    json_decref(env);
    tb_event_unref(ev);
    return e;
}

json_t *tb_test_outbox_events(tb_store_t *s, const char *id)
{
    char prefix[TB_TOPIC_BUF_SIZE];
    snprintf(prefix, sizeof prefix, "topology.%s.", id);
    tb_outbox_row_t *rows = NULL;
    size_t n = 0;
    tb_store_err_t err;
    if (tb_store_outbox_read(s, OUTBOX_READ_MAX, &rows, &n, &err) != TB_OK)
        die("read outbox", err.message);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && rows[i].seq <= rows[i - 1].seq)
            die("read outbox", "rows out of seq order");
        if (strncmp(rows[i].topic, prefix, strlen(prefix)) == 0)
            json_array_append_new(out, outbox_event(&rows[i]));
    }
    tb_store_outbox_rows_free(rows, n);
    return out;
}

int tb_test_store_setup(void **state)
{
    tb_test_store_t *t = tb_xmalloc(sizeof *t);
    tb_test_store_init(t, 0);
    tb_test_outbox_drain(t->store);
    *state = t;
    return 0;
}

int tb_test_store_teardown(void **state)
{
    tb_test_store_t *t = *state;
    tb_test_store_cleanup(t);
    free(t);
    return 0;
}

tb_store_t *tb_test_store_of(void **state)
{
    return ((tb_test_store_t *)*state)->store;
}

void tb_test_store_nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
