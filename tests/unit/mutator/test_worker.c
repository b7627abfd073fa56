/*
 * The worker against a real SQLite store and an in-process bus: what each
 * mutation and request does to the store and which events its writes record
 * (published by an outbox relay the test runs), in which order; the thread waking on bus events and polling without a bus;
 * the hook's verdict reaching the row; health; option checks. Claims: the
 * hook runs once per mutation, deploy and teardown with the claim's
 * variables and none of our secrets, never again on a poll pass or by
 * another worker; a verdict whose claim was taken back is refused; a
 * predecessor's claims under the same worker id are given back at start;
 * expected_version is compare-and-set at apply; settled rows are pruned.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store_fixture.h"
#include "tb/alloc.h"
#include "tb/bus.h"
#include "tb/clock.h"
#include "tb/mutator.h"
#include "tb/relay.h"

typedef struct fixture {
    tb_test_store_t store;
    tb_bus_t *bus;
    atomic_bool bus_hidden; /* the provider answers NULL, as while the bus is being opened */
    tb_sub_t *sub;
    pthread_mutex_t lock;
    json_t *events; /* [{"type","payload"}] in arrival order */
    char *topology;
    tb_relay_t *relay; /* publishes the outbox when the test says so (flush) */
} fixture_t;

static void on_event(tb_event_t *ev, void *ud)
{
    fixture_t *f = ud;
    json_t *e = json_pack("{s:s, s:s, s:o}", "topic", ev->topic, "type", ev->type, "payload",
                          json_loadb(ev->payload, ev->payload_len, 0, NULL));
    pthread_mutex_lock(&f->lock);
    json_array_append_new(f->events, e);
    pthread_mutex_unlock(&f->lock);
}

static tb_bus_t *provide(void *ud)
{
    fixture_t *f = ud;
    return atomic_load(&f->bus_hidden) ? NULL : f->bus;
}

static tb_bus_t *provide_relay_bus(void *ud)
{
    return ((fixture_t *)ud)->bus;
}

static int setup(void **state)
{
    fixture_t *f = tb_xcalloc(1, sizeof *f);
    tb_test_store_init(&f->store, 0);
    if (tb_bus_create(&f->bus, "mem://", NULL))
        return -1;
    pthread_mutex_init(&f->lock, NULL);
    f->events = json_array();
    tb_sub_handlers_t h = {.on_event = on_event};
    if (tb_bus_subscribe(f->bus, ">", &h, f, &f->sub))
        return -1;
    f->topology = tb_test_create_topology(f->store.store, "t");
    tb_relay_deps_t deps = {.store = f->store.store, .bus_provider = provide_relay_bus,
                            .bus_provider_ud = f};
    tb_relay_options_t ro = {.holder = "test", .lease_ms = 60000};
    if (tb_relay_create(&f->relay, &deps, &ro))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tb_relay_destroy(f->relay);
    tb_sub_close(f->sub);
    tb_bus_destroy(f->bus);
    tb_test_store_cleanup(&f->store);
    json_decref(f->events);
    pthread_mutex_destroy(&f->lock);
    free(f->topology);
    free(f);
    return 0;
}

static tb_mutator_t *make(fixture_t *f, const tb_mutator_options_t *opts, bool with_bus)
{
    tb_mutator_deps_t deps = {.store = f->store.store, .bus_provider = with_bus ? provide : NULL,
                              .bus_provider_ud = f};
    tb_mutator_t *m = NULL;
    assert_int_equal(tb_mutator_create(&m, &deps, opts), TB_OK);
    return m;
}

static char *enqueue(fixture_t *f, const char *op, const char *payload)
{
    json_t *p = tb_test_json(payload);
    json_t *row = NULL;
    tb_store_err_t err;
    assert_int_equal(tb_store_mutation_enqueue(f->store.store, f->topology, op, p,
                                               TB_STORE_NO_VERSION, &row, &err),
                     TB_OK);
    char *id = tb_xstrdup(tb_store_row_id(row));
    json_decref(row);
    json_decref(p);
    return id;
}

static void set_status(fixture_t *f, tb_topology_status to)
{
    assert_int_equal(tb_store_topology_transition(f->store.store, f->topology, TB_TOPOLOGY_ANY,
                                                  to, NULL, NULL, NULL),
                     TB_OK);
}

/* Publishes what the store's writes recorded so far. */
static void flush(fixture_t *f)
{
    assert_int_equal(tb_relay_run_once(f->relay), TB_OK);
}

/* Publishes what the setup wrote, then forgets it: the test looks at what follows. */
static void flush_and_forget(fixture_t *f)
{
    flush(f);
    pthread_mutex_lock(&f->lock);
    json_array_clear(f->events);
    pthread_mutex_unlock(&f->lock);
}

/* The types of the events seen on topology.<id>.*, comma-separated. */
static char *event_types(fixture_t *f)
{
    char buf[2048] = "";
    pthread_mutex_lock(&f->lock);
    size_t i;
    json_t *e;
    json_array_foreach(f->events, i, e) {
        if (strncmp(json_string_value(json_object_get(e, "topic")), "topology.", 9) != 0)
            continue;
        if (buf[0])
            strncat(buf, ",", sizeof buf - strlen(buf) - 1);
        const char *type = json_string_value(json_object_get(e, "type"));
        strncat(buf, type, sizeof buf - strlen(buf) - 1);
        if (strcmp(type, "status") == 0) {
            strncat(buf, ":", sizeof buf - strlen(buf) - 1);
            strncat(buf,
                    json_string_value(json_object_get(json_object_get(e, "payload"), "state")),
                    sizeof buf - strlen(buf) - 1);
        }
    }
    pthread_mutex_unlock(&f->lock);
    return tb_xstrdup(buf);
}

/* The payload of the index-th event (borrowed until the fixture goes). */
static json_t *event_payload(fixture_t *f, size_t index)
{
    pthread_mutex_lock(&f->lock);
    json_t *p = json_object_get(json_array_get(f->events, index), "payload");
    pthread_mutex_unlock(&f->lock);
    return p;
}

static json_t *row_of(fixture_t *f, const char *mid)
{
    json_t *rows = NULL;
    assert_int_equal(tb_store_mutation_list(f->store.store, f->topology, NULL, &rows, NULL), TB_OK);
    size_t i;
    json_t *r;
    json_t *found = NULL;
    json_array_foreach(rows, i, r) {
        if (strcmp(tb_store_row_id(r), mid) == 0)
            found = json_incref(r);
    }
    json_decref(rows);
    assert_non_null(found);
    return found;
}

static void assert_types(fixture_t *f, const char *want)
{
    char *got = event_types(f);
    if (strcmp(got, want) != 0)
        fail_msg("events: got %s, want %s", got, want);
    free(got);
}

static void test_worker_applies_and_publishes_in_order(void **state)
{
    fixture_t *f = *state;
    char *m1 = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    char *m2 = enqueue(f, "add_node", "{\"id\":\"b\",\"kind\":\"r\"}");
    flush_and_forget(f);
    tb_mutator_t *m = make(f, NULL, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    flush(f);
    assert_types(f, "mutation.applying,mutation.applied,mutation.applying,mutation.applied");
    assert_string_equal(json_string_value(json_object_get(event_payload(f, 0), "mutation_id")), m1);
    assert_string_equal(json_string_value(json_object_get(event_payload(f, 1), "mutation_id")), m1);
    assert_int_equal(json_integer_value(json_object_get(event_payload(f, 1), "version")), 1);
    assert_string_equal(json_string_value(json_object_get(event_payload(f, 3), "mutation_id")), m2);
    assert_int_equal(json_integer_value(json_object_get(event_payload(f, 3), "version")), 2);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(f->store.store, f->topology, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 2);
    assert_int_equal(json_array_size(json_object_get(doc, "nodes")), 2);
    json_decref(doc);
    tb_mutator_stats_t st;
    tb_mutator_stats(m, &st);
    assert_int_equal(st.applied, 2);
    assert_int_equal(st.publish_failed, 0);
    tb_mutator_destroy(m);
    free(m1);
    free(m2);
}

static void test_worker_failure_degrades_and_success_restores(void **state)
{
    fixture_t *f = *state;
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    set_status(f, TB_TOPOLOGY_ACTIVE);
    char *bad = enqueue(f, "add_link", "{\"id\":\"l\",\"from\":\"x\",\"to\":\"y\"}");
    char *good = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    flush_and_forget(f);
    tb_mutator_t *m = make(f, NULL, true);
    /* The failure stops this topology's drain for the pass; the next pass goes on. The
     * status changes while the row still holds the topology, so its event comes first. */
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    flush(f);
    assert_types(f, "mutation.applying,status:degraded,mutation.failed");
    json_t *row = row_of(f, bad);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(row, "error")), "from names node 'x'"));
    json_decref(row);
    json_t *status = event_payload(f, 1);
    assert_string_equal(json_string_value(json_object_get(status, "previous")), "active");
    assert_non_null(json_object_get(status, "reason"));
    assert_int_equal(json_integer_value(json_object_get(status, "version")), 0);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(f->store.store, f->topology, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 0);
    assert_string_equal(tb_store_doc_status(doc), "degraded");
    json_decref(doc);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    flush(f);
    assert_types(f, "mutation.applying,status:degraded,mutation.failed,"
                    "mutation.applying,status:active,mutation.applied");
    row = row_of(f, good);
    assert_string_equal(tb_store_row_state(row), "applied");
    json_decref(row);
    tb_mutator_destroy(m);
    free(bad);
    free(good);
}

static void test_worker_completes_deploy_and_teardown(void **state)
{
    fixture_t *f = *state;
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    flush_and_forget(f);
    tb_mutator_t *m = make(f, NULL, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    flush(f);
    assert_types(f, "status:active");
    assert_string_equal(json_string_value(json_object_get(event_payload(f, 0), "previous")),
                        "deploying");
    set_status(f, TB_TOPOLOGY_TEARING_DOWN);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    flush(f);
    assert_types(f, "status:active,status:tearing_down,status:torn_down");
    char buf[32];
    assert_string_equal(tb_test_status(f->store.store, f->topology, buf, sizeof buf), "torn_down");
    tb_mutator_destroy(m);
}

static void test_worker_fails_mutations_of_a_torn_down_topology(void **state)
{
    fixture_t *f = *state;
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    set_status(f, TB_TOPOLOGY_TEARING_DOWN);
    set_status(f, TB_TOPOLOGY_TORN_DOWN);
    tb_mutator_t *m = make(f, NULL, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    json_t *row = row_of(f, mid);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(row, "error")), "torn_down"));
    json_decref(row);
    tb_mutator_destroy(m);
    free(mid);
}

/* Writes an executable script and returns its path (new string). */
static char *write_hook(fixture_t *f, const char *name, const char *body)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", f->store.dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "#!/bin/sh\n%s\n", body);
    fclose(fp);
    chmod(path, 0755);
    return tb_xstrdup(path);
}

static void test_worker_hook_verdict_reaches_the_row(void **state)
{
    fixture_t *f = *state;
    char *hook = write_hook(f, "hook.sh",
                            "if grep -q '\"id\":\"bad\"'; then echo 'device refused bad' >&2; "
                            "exit 1; fi\nexit 0");
    tb_mutator_options_t opts = {.hook = hook, .hook_timeout_ms = 5000};
    tb_mutator_t *m = make(f, &opts, true);
    char *ok = enqueue(f, "add_node", "{\"id\":\"good\",\"kind\":\"r\"}");
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    char *no = enqueue(f, "add_node", "{\"id\":\"bad\",\"kind\":\"r\"}");
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    json_t *row = row_of(f, ok);
    assert_string_equal(tb_store_row_state(row), "applied");
    json_decref(row);
    row = row_of(f, no);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_string_equal(json_string_value(json_object_get(row, "error")), "device refused bad");
    json_decref(row);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(f->store.store, f->topology, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 1); /* a refused mutation leaves no trace */
    json_decref(doc);
    /* Deploy: the hook sees the document; a refusal fails the deploy with the reason. */
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    tb_mutator_destroy(m);
    char *deny = write_hook(f, "deny.sh", "cat >/dev/null; echo 'no capacity' >&2; exit 2");
    opts.hook = deny;
    m = make(f, &opts, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    char buf[32];
    assert_string_equal(tb_test_status(f->store.store, f->topology, buf, sizeof buf), "failed");
    tb_mutator_destroy(m);
    free(deny);
    free(hook);
    free(ok);
    free(no);
}

static void test_worker_missing_hook_fails_the_mutation(void **state)
{
    fixture_t *f = *state;
    tb_mutator_options_t opts = {.hook = "/nonexistent/hook", .hook_timeout_ms = 1000};
    tb_mutator_t *m = make(f, &opts, true);
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    json_t *row = row_of(f, mid);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(row, "error")), "cannot be run"));
    json_decref(row);
    tb_mutator_destroy(m);
    free(mid);
}

typedef struct wait_row {
    fixture_t *f;
    const char *mid;
} wait_row_t;

static bool row_applied(void *ud)
{
    wait_row_t *w = ud;
    json_t *row = row_of(w->f, w->mid);
    bool done = strcmp(tb_store_row_state(row), "applied") == 0;
    json_decref(row);
    return done;
}

static bool wait_for(bool (*cond)(void *), void *ud, int timeout_ms)
{
    int64_t end = tb_clock_mono_ms() + timeout_ms;
    while (tb_clock_mono_ms() < end) {
        if (cond(ud))
            return true;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return cond(ud);
}

static void test_worker_thread_wakes_on_enqueued_event(void **state)
{
    fixture_t *f = *state;
    tb_mutator_options_t opts = {.poll_ms = 60000};
    tb_mutator_t *m = make(f, &opts, true);
    assert_int_equal(tb_mutator_start(m), TB_OK);
    assert_int_equal(tb_mutator_start(m), TB_ECONFLICT);
    assert_int_equal(tb_mutator_run_once(m), TB_ECONFLICT);
    /* Let the first pass finish so only the event can trigger the next one. */
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    char topic[TB_TOPIC_BUF_SIZE];
    snprintf(topic, sizeof topic, "topology.%s.mutation.enqueued", f->topology);
    assert_int_equal(tb_bus_publish(f->bus, topic, NULL, "{}", 2), TB_OK);
    wait_row_t w = {f, mid};
    int64_t t0 = tb_clock_mono_ms();
    assert_true(wait_for(row_applied, &w, 5000));
    assert_true(tb_clock_mono_ms() - t0 < 2000);
    tb_mutator_stop(m);
    tb_mutator_stop(m);
    /* Health went out at start and at stop. */
    pthread_mutex_lock(&f->lock);
    size_t health = 0;
    size_t i;
    json_t *e;
    json_array_foreach(f->events, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "topic")), "system.mutator.health") != 0)
            continue;
        json_t *p = json_object_get(e, "payload");
        assert_string_equal(json_string_value(json_object_get(p, "worker")), "mutator");
        assert_int_equal(json_integer_value(json_object_get(p, "pid")), getpid());
        assert_true(json_is_integer(json_object_get(p, "uptime_s")));
        assert_true(json_is_string(json_object_get(p, "state")));
        health++;
    }
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(health, 2);
    tb_mutator_destroy(m);
    free(mid);
}

static bool status_is_active(void *ud)
{
    fixture_t *f = ud;
    char buf[32];
    return strcmp(tb_test_status(f->store.store, f->topology, buf, sizeof buf), "active") == 0;
}

/* A deploy requested while the mutator could not listen yet is announced to nobody: the
 * mutator finds it when it starts listening, not at the next poll a minute later. */
static void test_worker_finds_requests_made_before_it_listened(void **state)
{
    fixture_t *f = *state;
    atomic_store(&f->bus_hidden, true);
    tb_mutator_options_t opts = {.poll_ms = 60000};
    tb_mutator_t *m = make(f, &opts, true);
    assert_int_equal(tb_mutator_start(m), TB_OK);
    tb_mutator_stats_t st = {0};
    for (int i = 0; i < 500 && st.passes == 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        tb_mutator_stats(m, &st);
    }
    assert_true(st.passes > 0);
    struct timespec settle = {0, 200 * 1000000L}; /* the first pass finds no request */
    nanosleep(&settle, NULL);
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    char topic[TB_TOPIC_BUF_SIZE];
    snprintf(topic, sizeof topic, "topology.%s.status", f->topology);
    assert_int_equal(tb_bus_publish(f->bus, topic, NULL, "{\"state\":\"deploying\"}",
                                    strlen("{\"state\":\"deploying\"}")),
                     TB_OK);
    atomic_store(&f->bus_hidden, false);
    /* The provider is asked again about once a second. */
    assert_true(wait_for(status_is_active, f, 5000));
    tb_mutator_destroy(m);
}

/* The worker counts a step after the store call that made it returns, a moment after the
 * change is visible in the store: wait for the counters too. */
static bool applied_and_deployed(void *ud)
{
    tb_mutator_stats_t st;
    tb_mutator_stats(ud, &st);
    return st.applied == 1 && st.deployed == 1;
}

static void test_worker_thread_polls_without_a_bus(void **state)
{
    fixture_t *f = *state;
    tb_mutator_options_t opts = {.poll_ms = 200};
    tb_mutator_t *m = make(f, &opts, false);
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    assert_int_equal(tb_mutator_start(m), TB_OK);
    wait_row_t w = {f, mid};
    assert_true(wait_for(row_applied, &w, 3000));
    char buf[32];
    for (int i = 0; i < 300 && strcmp(tb_test_status(f->store.store, f->topology, buf, sizeof buf),
                                      "active") != 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_string_equal(buf, "active");
    assert_true(wait_for(applied_and_deployed, m, 3000));
    tb_mutator_stats_t st;
    tb_mutator_stats(m, &st);
    assert_int_equal(st.applied, 1);
    assert_int_equal(st.deployed, 1);
    assert_true(st.publish_failed > 0); /* no bus: its health is counted, never fatal */
    tb_mutator_destroy(m);
    free(mid);
}

static void test_worker_options_are_checked(void **state)
{
    fixture_t *f = *state;
    tb_mutator_t *m = NULL;
    tb_mutator_deps_t none = {0};
    assert_int_equal(tb_mutator_create(&m, &none, NULL), TB_EINVAL);
    tb_mutator_deps_t deps = {.store = f->store.store};
    tb_mutator_options_t opts = {.hook = "/bin/true", .hook_timeout_ms = 5000, .lease_ms = 5000};
    assert_int_equal(tb_mutator_create(&m, &deps, &opts), TB_EINVAL);
    opts.lease_ms = 6000;
    opts.worker = "a.b";
    assert_int_equal(tb_mutator_create(&m, &deps, &opts), TB_EINVAL);
    assert_null(m);
    opts.worker = "mutator-2";
    assert_int_equal(tb_mutator_create(&m, &deps, &opts), TB_OK);
    tb_mutator_stop(m); /* never started */
    tb_mutator_destroy(m);
    tb_mutator_destroy(NULL);
}

/* Lines of the file name in the store's scratch directory (0 if absent). */
static int count_lines(fixture_t *f, const char *name, const char *containing)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", f->store.dir, name);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, fp))
        n += !containing || strstr(line, containing) != NULL;
    fclose(fp);
    return n;
}

static void touch(fixture_t *f, const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", f->store.dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
}

/* A hook logging each call to calls.log; with wait_kind set, calls of that kind log
 * "started" and wait until the file "go" exists. */
static char *calls_hook(fixture_t *f, const char *wait_kind)
{
    char body[1400];
    snprintf(body, sizeof body,
             "cd '%s'\ncat > /dev/null\n"
             "echo \"$TOPOBUS_HOOK_KIND $TOPOBUS_HOOK_TOPOLOGY_ID ${TOPOBUS_HOOK_MUTATION_ID:--} "
             "$TOPOBUS_HOOK_CLAIM_TOKEN $TOPOBUS_HOOK_WORKER_ID "
             "secret=${TOPOBUS_JWT_SECRET:-none}\" >> calls.log\n"
             "if [ \"$TOPOBUS_HOOK_KIND\" = '%s' ]; then echo started >> started.log; "
             "while [ ! -f go ]; do sleep 0.02; done; fi\nexit 0",
             f->store.dir, wait_kind ? wait_kind : "none");
    return write_hook(f, "calls.sh", body);
}

typedef struct lines_wait {
    fixture_t *f;
    const char *name;
    int want;
} lines_wait_t;

static bool has_lines(void *ud)
{
    lines_wait_t *w = ud;
    return count_lines(w->f, w->name, NULL) >= w->want;
}

static void test_worker_hook_runs_once_per_claim_with_its_variables(void **state)
{
    fixture_t *f = *state;
    setenv("TOPOBUS_JWT_SECRET", "mints-admin-tokens", 1);
    char *hook = calls_hook(f, NULL);
    tb_mutator_options_t opts = {.hook = hook, .hook_timeout_ms = 5000, .worker_id = "unit-w1"};
    tb_mutator_t *m = make(f, &opts, true);
    assert_string_equal(tb_mutator_worker_id(m), "unit-w1");
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    /* The deploy first, then the mutation queued behind it; poll passes run nothing again. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(tb_mutator_run_once(m), TB_OK);
    tb_mutator_options_t other = opts;
    other.worker_id = "unit-w2";
    tb_mutator_t *m2 = make(f, &other, true);
    assert_int_equal(tb_mutator_run_once(m2), TB_OK);
    set_status(f, TB_TOPOLOGY_TEARING_DOWN);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    assert_int_equal(tb_mutator_run_once(m2), TB_OK);
    unsetenv("TOPOBUS_JWT_SECRET");
    char want[3][256];
    snprintf(want[0], sizeof want[0], "deploy %s - 1 unit-w1 secret=none\n", f->topology);
    snprintf(want[1], sizeof want[1], "mutation %s %s 2 unit-w1 secret=none\n", f->topology, mid);
    snprintf(want[2], sizeof want[2], "teardown %s - 3 unit-w1 secret=none\n", f->topology);
    char path[600];
    snprintf(path, sizeof path, "%s/calls.log", f->store.dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, fp)) {
        if (n < 3 && strcmp(line, want[n]) != 0)
            fail_msg("hook call %d: got %s want %s", n, line, want[n]);
        n++;
    }
    fclose(fp);
    assert_int_equal(n, 3);
    char buf[32];
    assert_string_equal(tb_test_status(f->store.store, f->topology, buf, sizeof buf), "torn_down");
    tb_mutator_destroy(m2);
    tb_mutator_destroy(m);
    free(mid);
    free(hook);
}

static void test_worker_running_deploy_is_never_run_again(void **state)
{
    fixture_t *f = *state;
    char *hook = calls_hook(f, "deploy");
    tb_mutator_options_t opts = {.hook = hook, .hook_timeout_ms = 10000, .lease_ms = 20000,
                                 .poll_ms = 50, .worker_id = "unit-a"};
    tb_mutator_t *a = make(f, &opts, false);
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    assert_int_equal(tb_mutator_start(a), TB_OK);
    lines_wait_t w = {f, "started.log", 1};
    assert_true(wait_for(has_lines, &w, 5000));
    /* While A's hook runs: another worker's passes, and A's own polls, find nothing. */
    tb_mutator_options_t other = opts;
    other.worker_id = "unit-b";
    tb_mutator_t *b = make(f, &other, false);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tb_mutator_run_once(b), TB_OK);
    tb_mutator_stats_t st;
    tb_mutator_stats(b, &st);
    assert_int_equal(st.deployed, 0);
    touch(f, "go");
    assert_true(wait_for(status_is_active, f, 5000));
    assert_int_equal(count_lines(f, "calls.log", "deploy"), 1);
    tb_mutator_destroy(a);
    tb_mutator_destroy(b);
    free(hook);
}

static bool refused_once(void *ud)
{
    tb_mutator_stats_t st;
    tb_mutator_stats(ud, &st);
    return st.stale_refused >= 1;
}

static void test_worker_verdict_of_a_claim_taken_back_is_refused(void **state)
{
    fixture_t *f = *state;
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    set_status(f, TB_TOPOLOGY_ACTIVE);
    char *hook = calls_hook(f, "mutation");
    tb_mutator_options_t opts = {.hook = hook, .hook_timeout_ms = 10000, .lease_ms = 20000,
                                 .poll_ms = 60000, .worker_id = "unit-paused"};
    tb_mutator_t *m = make(f, &opts, false);
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    assert_int_equal(tb_mutator_start(m), TB_OK);
    lines_wait_t w = {f, "started.log", 1};
    assert_true(wait_for(has_lines, &w, 5000));
    /* The worker stalls past its lease (a paused VM): recovery ends its started claim. */
    tb_store_recovery_t out;
    assert_int_equal(tb_store_recover_stale(f->store.store, 60000, &out, NULL), TB_OK);
    assert_int_equal(out.failed, 1);
    touch(f, "go");
    assert_true(wait_for(refused_once, m, 5000));
    tb_mutator_stop(m);
    /* Its late "applied" changed nothing: the row, the document and the status stand. */
    json_t *row = row_of(f, mid);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_string_equal(json_string_value(json_object_get(row, "error")), "interrupted");
    json_decref(row);
    json_t *doc = NULL;
    assert_int_equal(tb_store_topology_get(f->store.store, f->topology, &doc, NULL), TB_OK);
    assert_int_equal(tb_store_doc_version(doc), 0);
    assert_string_equal(tb_store_doc_status(doc), "degraded");
    json_decref(doc);
    tb_mutator_stats_t st;
    tb_mutator_stats(m, &st);
    assert_int_equal(st.applied, 0);
    assert_int_equal(count_lines(f, "calls.log", "mutation"), 1);
    tb_mutator_destroy(m);
    free(mid);
    free(hook);
}

static void test_worker_gives_back_claims_left_under_its_id(void **state)
{
    fixture_t *f = *state;
    char *mid = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    /* What a killed predecessor left: a claim under the same id, its hook never started. */
    json_t *row = NULL;
    tb_store_claim_t claim;
    assert_int_equal(tb_store_mutation_claim(f->store.store, f->topology, "unit-restart", &row,
                                             &claim, NULL),
                     TB_OK);
    json_decref(row);
    tb_mutator_options_t opts = {.worker_id = "unit-restart"};
    tb_mutator_t *m = make(f, &opts, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    row = row_of(f, mid);
    assert_string_equal(tb_store_row_state(row), "applied");
    assert_int_equal(json_integer_value(json_object_get(row, "attempts")), 0);
    json_decref(row);
    tb_mutator_stats_t st;
    tb_mutator_stats(m, &st);
    assert_int_equal(st.released, 1);
    tb_mutator_destroy(m);
    free(mid);
}

static void test_worker_expected_version_is_compare_and_set(void **state)
{
    fixture_t *f = *state;
    set_status(f, TB_TOPOLOGY_DEPLOYING);
    set_status(f, TB_TOPOLOGY_ACTIVE);
    char *m1 = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    json_t *p = tb_test_json("{\"id\":\"b\",\"kind\":\"r\"}");
    json_t *row = NULL;
    /* Both editors saw version 0; the first to apply wins. */
    assert_int_equal(tb_store_mutation_enqueue(f->store.store, f->topology, "add_node", p, 0, &row,
                                               NULL),
                     TB_OK);
    json_decref(p);
    char *m2 = tb_xstrdup(tb_store_row_id(row));
    json_decref(row);
    tb_mutator_t *m = make(f, NULL, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    row = row_of(f, m1);
    assert_string_equal(tb_store_row_state(row), "applied");
    json_decref(row);
    row = row_of(f, m2);
    assert_string_equal(tb_store_row_state(row), "failed");
    assert_string_equal(json_string_value(json_object_get(row, "error")),
                        "version_conflict: the topology is at version 1, not the expected 0");
    json_decref(row);
    /* A conflict is no fault of the deployment: the topology stays active. */
    char buf[32];
    assert_string_equal(tb_test_status(f->store.store, f->topology, buf, sizeof buf), "active");
    tb_mutator_destroy(m);
    free(m1);
    free(m2);
}

typedef struct prune_wait {
    fixture_t *f;
    tb_mutator_t *m;
} prune_wait_t;

static bool pass_pruned_all(void *ud)
{
    prune_wait_t *w = ud;
    assert_int_equal(tb_mutator_run_once(w->m), TB_OK);
    return tb_test_count_rows(w->f->store.store, w->f->topology) == 0;
}

static void test_worker_prunes_settled_rows_past_the_retention(void **state)
{
    fixture_t *f = *state;
    char *m1 = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}");
    char *m2 = enqueue(f, "add_node", "{\"id\":\"a\",\"kind\":\"r\"}"); /* fails */
    tb_mutator_options_t keep = {.retention_ms = TB_MUTATOR_KEEP_FOREVER};
    tb_mutator_t *m = make(f, &keep, true);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    assert_int_equal(tb_mutator_run_once(m), TB_OK);
    assert_int_equal(tb_test_count_rows(f->store.store, f->topology), 2);
    tb_mutator_destroy(m);
    tb_mutator_options_t opts = {.retention_ms = 1, .prune_interval_ms = 1};
    m = make(f, &opts, true);
    prune_wait_t w = {f, m};
    assert_true(wait_for(pass_pruned_all, &w, 5000));
    tb_mutator_stats_t st;
    tb_mutator_stats(m, &st);
    assert_int_equal(st.pruned, 2);
    tb_mutator_destroy(m);
    free(m1);
    free(m2);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_applies_and_publishes_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_failure_degrades_and_success_restores, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_completes_deploy_and_teardown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_fails_mutations_of_a_torn_down_topology, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_hook_verdict_reaches_the_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_missing_hook_fails_the_mutation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_thread_wakes_on_enqueued_event, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_finds_requests_made_before_it_listened, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_thread_polls_without_a_bus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_options_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_hook_runs_once_per_claim_with_its_variables,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_running_deploy_is_never_run_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_verdict_of_a_claim_taken_back_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_gives_back_claims_left_under_its_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_expected_version_is_compare_and_set, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_prunes_settled_rows_past_the_retention, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
