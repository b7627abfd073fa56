/*
 * Outbox order across connections (CONTRACT §2: per topology, change events
 * are published in commit order), on the backend named by
 * TB_STORE_TEST_URL. Two store handles (two connections, as two processes
 * would have) write one topology from two threads while a third handle
 * reads the outbox the way the relay does. Checked: the final seq order is
 * the mutation rows' order and each mutation's life (enqueued, applying,
 * applied or failed), applied versions are consecutive; and the reader
 * never sees a row appear behind one it has already seen. On PostgreSQL
 * (sequence values drawn at insert, not commit) this is what the writers'
 * topology row lock guarantees.
 *
 * Threads: the racers and the watcher only record failures; cmocka asserts
 * run on the main thread after the joins.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "store_fixture.h"
#include "tb/clock.h"

#define N_RACE 100 /* rows each racer writes */
#define RACE_LIMIT_MS 30000

typedef struct racer {
    tb_store_t *s;
    const char *tid;
    bool applies; /* claims rows and applies the even ones, fails the odd ones; else enqueues */
    char failure[320];
} racer_t;

static tb_status enqueue_one(racer_t *r, const json_t *payload, tb_store_err_t *err)
{
    return tb_store_mutation_enqueue(r->s, r->tid, "add_node", payload, TB_STORE_NO_VERSION, NULL,
                                     err);
}

/* Claims the next row and finishes it; TB_ENOTFOUND when there is none yet. */
static tb_status finish_one(racer_t *r, int index, tb_store_err_t *err)
{
    json_t *row = NULL, *doc = NULL;
    tb_store_claim_t c;
    tb_status st = tb_store_mutation_claim(r->s, r->tid, "racer", &row, &c, err);
    if (st)
        return st;
    if (index % 2 == 1) {
        st = tb_store_mutation_mark_failed(r->s, &c, "odd one out", false, NULL, err);
    } else {
        st = tb_store_topology_get(r->s, r->tid, &doc, err);
        if (!st)
            st = tb_store_mutation_mark_applied(r->s, &c, doc,
                                                tb_store_doc_version(doc) + 1, NULL, err);
    }
    json_decref(doc);
    json_decref(row);
    return st;
}

static void *racer_main(void *arg)
{
    racer_t *r = arg;
    json_t *payload = tb_test_json("{\"id\":\"n\",\"kind\":\"k\"}");
    int64_t deadline = tb_clock_mono_ms() + RACE_LIMIT_MS;
    int done = 0;
    while (done < N_RACE) {
        tb_store_err_t err;
        tb_status st = r->applies ? finish_one(r, done, &err) : enqueue_one(r, payload, &err);
        if (st == TB_ENOTFOUND && r->applies && tb_clock_mono_ms() < deadline) {
            tb_test_store_nap_ms(1); /* nothing pending yet, or the other handle holds the topology */
            continue;
        }
        if (st) {
            snprintf(r->failure, sizeof r->failure, "after %d rows: %s", done, err.message);
            break;
        }
        done++;
    }
    json_decref(payload);
    return NULL;
}

typedef struct watcher {
    tb_store_t *s;
    const char *tid;
    atomic_bool stop;
    int reads;
    char failure[320];
} watcher_t;

/* Reads the outbox like the relay (without deleting) until told to stop.
 * Rows of one topology must become visible in seq order: a read may show
 * new rows only behind every row seen before. */
static void *watcher_main(void *arg)
{
    watcher_t *w = arg;
    int64_t max_seen = 0;
    size_t seen = 0;
    while (!atomic_load(&w->stop) && !w->failure[0]) {
        json_t *evs = tb_test_outbox_events(w->s, w->tid);
        size_t old = 0;
        for (size_t i = 0; i < json_array_size(evs); i++) {
            if (json_integer_value(json_object_get(json_array_get(evs, i), "seq")) <= max_seen)
                old++;
        }
        if (old != seen)
            snprintf(w->failure, sizeof w->failure,
                     "read %d: %zu rows at or below seq %lld, %zu before: one committed late",
                     w->reads, old, (long long)max_seen, seen);
        seen = json_array_size(evs);
        if (seen)
            max_seen = json_integer_value(json_object_get(json_array_get(evs, seen - 1), "seq"));
        json_decref(evs);
        w->reads++;
    }
    return NULL;
}

/* Runs an enqueuer on t->store and a second racer (enqueuer or applier) on
 * a second handle, watched through a third. */
static void race(tb_test_store_t *t, const char *tid, bool second_applies)
{
    tb_store_t *s2 = tb_test_store_open_with(t, false);
    tb_store_t *s3 = tb_test_store_open_with(t, false);
    racer_t r[2] = {{.s = t->store, .tid = tid}, {.s = s2, .tid = tid, .applies = second_applies}};
    watcher_t w = {.s = s3, .tid = tid};
    atomic_init(&w.stop, false);
    pthread_t th[3];
    assert_int_equal(pthread_create(&th[2], NULL, watcher_main, &w), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    atomic_store(&w.stop, true);
    assert_int_equal(pthread_join(th[2], NULL), 0);
    tb_store_close(s3);
    tb_store_close(s2);
    for (int i = 0; i < 2; i++) {
        if (r[i].failure[0])
            fail_msg("racer %d: %s", i, r[i].failure);
    }
    if (w.failure[0])
        fail_msg("watcher: %s", w.failure);
    printf("# the watcher read the outbox %d times during the race\n", w.reads);
}

static const char *str_of(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    assert_non_null(v);
    return v;
}

static void test_outbox_race_two_connections_enqueue_in_mutation_order(void **state)
{
    tb_test_store_t *t = *state;
    char *tid = tb_test_create_topology(t->store, "race");
    race(t, tid, false);
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(t->store, tid, NULL, &rows, NULL), TB_OK);
    json_t *evs = tb_test_outbox_events(t->store, tid);
    assert_int_equal(json_array_size(rows), 2 * N_RACE);
    assert_int_equal(json_array_size(evs), 2 * N_RACE);
    /* The outbox's seq order is the mutation rows' order (oldest first). */
    for (size_t i = 0; i < json_array_size(rows); i++) {
        const json_t *e = json_array_get(evs, i);
        assert_string_equal(str_of(e, "type"), "mutation.enqueued");
        const char *want = tb_store_row_id(json_array_get(rows, i));
        const char *got = str_of(json_object_get(e, "payload"), "mutation_id");
        if (strcmp(want, got) != 0)
            fail_msg("event %zu is for %s, but mutation %zu is %s", i, got, i, want);
    }
    json_decref(evs);
    json_decref(rows);
    free(tid);
}

/* Where a mutation's event stands in its life: enqueued 0, applying 1, finished 2. */
static int stage_of(const char *type)
{
    if (strcmp(type, "mutation.enqueued") == 0)
        return 0;
    if (strcmp(type, "mutation.applying") == 0)
        return 1;
    return 2;
}

static void test_outbox_race_enqueue_against_apply_in_commit_order(void **state)
{
    tb_test_store_t *t = *state;
    char *tid = tb_test_create_topology(t->store, "race");
    race(t, tid, true);
    json_t *evs = tb_test_outbox_events(t->store, tid);
    assert_int_equal(json_array_size(evs), 3 * N_RACE);
    /* Per mutation: enqueued, applying, then applied or failed. The applied
     * versions are consecutive in seq order, and every event carries the
     * version of the moment it committed. */
    json_t *next = json_object(); /* mutation id → the stage its next event must have */
    int64_t version = 0;
    int applied = 0, failed = 0;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        const json_t *e = json_array_get(evs, i);
        const json_t *p = json_object_get(e, "payload");
        const char *type = str_of(e, "type");
        const char *mid = str_of(p, "mutation_id");
        const json_t *at = json_object_get(next, mid);
        int stage = stage_of(type);
        if ((at ? json_integer_value(at) : 0) != stage || (stage == 0 && at))
            fail_msg("event %zu (%s of %s) is out of order", i, type, mid);
        json_object_set_new(next, mid, json_integer(stage + 1));
        if (strcmp(type, "mutation.applied") == 0) {
            version++;
            applied++;
        } else if (strcmp(type, "mutation.failed") == 0) {
            failed++;
        }
        if (json_integer_value(json_object_get(p, "version")) != version)
            fail_msg("event %zu (%s) has version %lld, expected %lld", i, type,
                     (long long)json_integer_value(json_object_get(p, "version")),
                     (long long)version);
    }
    assert_int_equal(applied, N_RACE / 2);
    assert_int_equal(failed, N_RACE / 2);
    json_decref(next);
    json_decref(evs);
    free(tid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outbox_race_two_connections_enqueue_in_mutation_order,
                                        tb_test_store_setup, tb_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_outbox_race_enqueue_against_apply_in_commit_order,
                                        tb_test_store_setup, tb_test_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
