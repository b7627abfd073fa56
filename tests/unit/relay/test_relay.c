/*
 * The outbox relay on SQLite and the in-process bus: every store write's
 * event reaches subscribers in commit order and leaves the outbox; only the
 * lease holder publishes and another takes over once it gives the lease
 * up; a commit wakes the relay thread at once (no timer), also one made in
 * a process whose relay had no bus yet (its doorbell rings once the bus is
 * up); a row the bus can never accept is set aside without holding back the
 * rows behind it.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store_fixture.h"
#include "tb/bus.h"
#include "tb/clock.h"
#include "tb/relay.h"
#include "tb/store.h"

typedef struct seen {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    json_t *events; /* [{"type","payload"}] in arrival order */
} seen_t;

static void on_event(tb_event_t *ev, void *ud)
{
    seen_t *s = ud;
    json_t *p = json_loadb(ev->payload, ev->payload_len, 0, NULL);
    pthread_mutex_lock(&s->lock);
    json_array_append_new(s->events, json_pack("{s:s, s:o}", "type", ev->type, "payload",
                                               p ? p : json_null()));
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Waits until at least n events arrived or timeout_ms passed; returns the count. */
static size_t wait_events(seen_t *s, size_t n, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (json_array_size(s->events) < n &&
           pthread_cond_timedwait(&s->cond, &s->lock, &ts) == 0) {
    }
    size_t got = json_array_size(s->events);
    pthread_mutex_unlock(&s->lock);
    return got;
}

typedef struct fixture {
    tb_test_store_t t;
    tb_store_t *store;
    tb_bus_t *bus;
    tb_sub_t *sub;
    seen_t seen;
    atomic_bool bus_hidden; /* provide_late_bus answers NULL, as while connecting */
} fixture_t;

static tb_bus_t *provide_late_bus(void *ud)
{
    fixture_t *f = ud;
    return atomic_load(&f->bus_hidden) ? NULL : f->bus;
}

static tb_bus_t *provide_bus(void *ud)
{
    return ((fixture_t *)ud)->bus;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    tb_test_store_init(&f->t, 60);
    f->store = tb_test_store_reopen(&f->t, 60);
    assert_int_equal(tb_bus_create(&f->bus, "mem://", NULL), TB_OK);
    pthread_mutex_init(&f->seen.lock, NULL);
    pthread_cond_init(&f->seen.cond, NULL);
    f->seen.events = json_array();
    tb_sub_handlers_t h = {.on_event = on_event};
    assert_int_equal(tb_bus_subscribe(f->bus, "topology.>", &h, &f->seen, &f->sub), TB_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tb_sub_close(f->sub);
    tb_bus_destroy(f->bus);
    tb_store_close(f->store);
    tb_test_store_cleanup(&f->t);
    json_decref(f->seen.events);
    pthread_cond_destroy(&f->seen.cond);
    pthread_mutex_destroy(&f->seen.lock);
    free(f);
    return 0;
}

static tb_relay_t *relay_new(fixture_t *f, const char *holder, tb_store_t *store)
{
    tb_relay_t *r = NULL;
    tb_relay_deps_t deps = {.store = store, .bus_provider = provide_bus, .bus_provider_ud = f};
    tb_relay_options_t opts = {.holder = holder, .lease_ms = 1000, .confirm_timeout_ms = 200};
    assert_int_equal(tb_relay_create(&r, &deps, &opts), TB_OK);
    return r;
}

/* Creates an active topology with one applied and one failed mutation; returns its id. */
static void write_history(tb_store_t *s, char *id)
{
    json_t *doc = NULL, *row = NULL;
    assert_int_equal(tb_store_topology_create(s, "relay", NULL, NULL, &doc, NULL), TB_OK);
    strcpy(id, tb_store_doc_id(doc));
    json_decref(doc);
    assert_int_equal(tb_store_topology_transition(s, id, TB_TOPOLOGY_PENDING,
                                                  TB_TOPOLOGY_DEPLOYING, NULL, NULL, NULL),
                     TB_OK);
    assert_int_equal(tb_store_topology_transition(s, id, TB_TOPOLOGY_DEPLOYING,
                                                  TB_TOPOLOGY_ACTIVE, NULL, NULL, NULL),
                     TB_OK);
    json_t *p = json_pack("{s:s, s:s}", "id", "n1", "kind", "router");
    assert_int_equal(tb_store_mutation_enqueue(s, id, "add_node", p, TB_STORE_NO_VERSION, NULL,
                                               NULL),
                     TB_OK);
    assert_int_equal(tb_store_mutation_enqueue(s, id, "add_node", p, TB_STORE_NO_VERSION, NULL,
                                               NULL),
                     TB_OK);
    json_decref(p);
    tb_store_claim_t c;
    assert_int_equal(tb_store_mutation_claim(s, id, "test", &row, &c, NULL), TB_OK);
    json_t *next = json_pack("{s:[{s:s, s:s}], s:[]}", "nodes", "id", "n1", "kind", "router",
                             "links");
    assert_int_equal(tb_store_mutation_mark_applied(s, &c, next, 1, NULL, NULL), TB_OK);
    json_decref(next);
    json_decref(row);
    assert_int_equal(tb_store_mutation_claim(s, id, "test", &row, &c, NULL), TB_OK);
    assert_int_equal(tb_store_mutation_mark_failed(s, &c, "duplicate node id", false, NULL, NULL),
                     TB_OK);
    json_decref(row);
}

static const char *const history[] = {
    "status", "status", "mutation.enqueued", "mutation.enqueued", "mutation.applying",
    "mutation.applied", "mutation.applying", "mutation.failed",
};

static void test_relay_publishes_every_change_in_commit_order_and_empties_the_outbox(void **state)
{
    fixture_t *f = *state;
    char id[TB_STORE_ID_BUF_SIZE];
    write_history(f->store, id);
    tb_relay_t *r = relay_new(f, "a", f->store);
    assert_int_equal(tb_relay_run_once(r), TB_OK);
    assert_int_equal(wait_events(&f->seen, 8, 1000), 8);
    for (size_t i = 0; i < 8; i++) {
        json_t *e = json_array_get(f->seen.events, i);
        assert_string_equal(json_string_value(json_object_get(e, "type")), history[i]);
        json_t *v = json_object_get(json_object_get(e, "payload"), "version");
        assert_true(json_is_integer(v));
        assert_int_equal(json_integer_value(v), i >= 5 ? 1 : 0);
    }
    tb_relay_stats_t st;
    tb_relay_stats(r, &st);
    assert_int_equal(st.confirmed, 8);
    assert_int_equal(st.depth, 0);
    assert_true(st.holding);
    tb_relay_destroy(r);
}

static void test_relay_only_the_lease_holder_publishes_until_it_gives_the_lease_up(void **state)
{
    fixture_t *f = *state;
    tb_store_t *other = tb_test_store_reopen(&f->t, 60);
    tb_relay_t *a = relay_new(f, "a", f->store);
    tb_relay_t *b = relay_new(f, "b", other);
    assert_int_equal(tb_relay_run_once(a), TB_OK); /* a holds the lease now */
    char id[TB_STORE_ID_BUF_SIZE];
    write_history(f->store, id);
    assert_int_equal(tb_relay_run_once(b), TB_ECONFLICT);
    assert_int_equal(json_array_size(f->seen.events), 0);
    tb_relay_stop(a); /* gives the lease up: b need not wait for it to expire */
    assert_int_equal(tb_relay_run_once(b), TB_OK);
    assert_int_equal(wait_events(&f->seen, 8, 1000), 8);
    tb_relay_stats_t sa, sb;
    tb_relay_stats(a, &sa);
    tb_relay_stats(b, &sb);
    assert_int_equal(sa.confirmed, 0);
    assert_int_equal(sb.confirmed, 8);
    tb_relay_destroy(a);
    tb_relay_destroy(b);
    tb_store_close(other);
}

static void test_relay_thread_wakes_on_a_commit_not_on_its_timer(void **state)
{
    fixture_t *f = *state;
    tb_relay_t *r = NULL;
    tb_relay_deps_t deps = {.store = f->store, .bus_provider = provide_bus, .bus_provider_ud = f};
    /* A long lease: its timer would not fire within the wait below. */
    tb_relay_options_t opts = {.holder = "w", .lease_ms = 60000, .confirm_timeout_ms = 200};
    assert_int_equal(tb_relay_create(&r, &deps, &opts), TB_OK);
    assert_int_equal(tb_relay_start(r), TB_OK);
    tb_relay_stats_t st;
    for (int i = 0; i < 200 && (tb_relay_stats(r, &st), !st.holding); i++)
        nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
    assert_true(st.holding);
    int64_t t0 = tb_clock_mono_ms();
    char id[TB_STORE_ID_BUF_SIZE];
    write_history(f->store, id);
    assert_int_equal(wait_events(&f->seen, 8, 5000), 8);
    assert_true(tb_clock_mono_ms() - t0 < 5000);
    tb_relay_destroy(r);
}

static void test_relay_holder_finds_rows_whose_doorbell_never_rang(void **state)
{
    fixture_t *f = *state;
    tb_relay_t *r = NULL;
    tb_relay_deps_t deps = {.store = f->store, .bus_provider = provide_bus, .bus_provider_ud = f};
    tb_relay_options_t opts = {.holder = "h", .lease_ms = 600, .confirm_timeout_ms = 200};
    assert_int_equal(tb_relay_create(&r, &deps, &opts), TB_OK);
    assert_int_equal(tb_relay_start(r), TB_OK);
    /* Another process writes (its own handle, nobody listening to it): no wake-up, no
     * doorbell. The holder must still publish, within a lease renewal. */
    tb_store_t *other = tb_test_store_reopen(&f->t, 60);
    char id[TB_STORE_ID_BUF_SIZE];
    write_history(other, id);
    assert_int_equal(wait_events(&f->seen, 8, 5000), 8);
    tb_relay_destroy(r);
    tb_store_close(other);
}

static bool holds_lease(void *ud)
{
    tb_relay_stats_t st;
    tb_relay_stats(ud, &st);
    return st.holding;
}

static bool wait_cond(bool (*cond)(void *), void *ud, int timeout_ms)
{
    int64_t end = tb_clock_mono_ms() + timeout_ms;
    while (!cond(ud) && tb_clock_mono_ms() < end)
        nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
    return cond(ud);
}

static void test_relay_commit_before_the_bus_is_up_still_rings_the_holder(void **state)
{
    fixture_t *f = *state;
    /* The holder: a long lease, so only a doorbell can make it publish in time. */
    tb_relay_t *a = NULL;
    tb_relay_deps_t deps = {.store = f->store, .bus_provider = provide_bus, .bus_provider_ud = f};
    tb_relay_options_t opts = {.holder = "holder", .lease_ms = 60000, .confirm_timeout_ms = 200};
    assert_int_equal(tb_relay_create(&a, &deps, &opts), TB_OK);
    assert_int_equal(tb_relay_start(a), TB_OK);
    assert_true(wait_cond(holds_lease, a, 5000));
    /* Another process starts and writes before its bus is connected. */
    atomic_store(&f->bus_hidden, true);
    tb_store_t *other = tb_test_store_reopen(&f->t, 60);
    tb_relay_t *b = NULL;
    tb_relay_deps_t late = {.store = other, .bus_provider = provide_late_bus,
                            .bus_provider_ud = f};
    opts.holder = "late";
    assert_int_equal(tb_relay_create(&b, &late, &opts), TB_OK);
    assert_int_equal(tb_relay_start(b), TB_OK);
    char id[TB_STORE_ID_BUF_SIZE];
    write_history(other, id);
    /* Its bus comes up (asked again about once a second): the holder hears of the rows. */
    atomic_store(&f->bus_hidden, false);
    assert_int_equal(wait_events(&f->seen, 8, 5000), 8);
    tb_relay_destroy(b);
    tb_relay_destroy(a);
    tb_store_close(other);
}

static void test_relay_sets_aside_a_row_the_bus_refuses_and_publishes_the_rest(void **state)
{
    fixture_t *f = *state;
    char id[TB_STORE_ID_BUF_SIZE];
    write_history(f->store, id);
    /* A row no bus accepts (not an envelope), in the middle of the history. */
    char path[512];
    snprintf(path, sizeof path, "%s", f->t.url + strlen("sqlite:"));
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "UPDATE outbox SET envelope = 'not json' WHERE seq = "
                                      "(SELECT seq FROM outbox ORDER BY seq LIMIT 1 OFFSET 3)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    /* And one the store cannot even read back as a row (a topic over 255 bytes). */
    assert_int_equal(sqlite3_exec(db, "UPDATE outbox SET topic = printf('%.300c', 'x') WHERE seq = "
                                      "(SELECT seq FROM outbox ORDER BY seq LIMIT 1 OFFSET 5)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    tb_relay_t *r = relay_new(f, "a", f->store);
    assert_int_equal(tb_relay_run_once(r), TB_OK);
    assert_int_equal(wait_events(&f->seen, 6, 1000), 6);
    tb_relay_stats_t st;
    tb_relay_stats(r, &st);
    assert_int_equal(st.set_aside, 2);
    assert_int_equal(st.set_aside_rows, 2);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.confirmed, 6);
    tb_relay_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_relay_publishes_every_change_in_commit_order_and_empties_the_outbox, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_relay_only_the_lease_holder_publishes_until_it_gives_the_lease_up, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_relay_thread_wakes_on_a_commit_not_on_its_timer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_holder_finds_rows_whose_doorbell_never_rang,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_relay_commit_before_the_bus_is_up_still_rings_the_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_relay_sets_aside_a_row_the_bus_refuses_and_publishes_the_rest, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
