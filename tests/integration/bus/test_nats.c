/*
 * The nats backend against a real nats-server on a random loopback port:
 * pub/sub and wildcards, rejected envelopes, slow-consumer drops, a server
 * kill and restart (DOWN, UP, subscriptions receive again), the outage
 * buffer and its bound, and a first connect that succeeds later.
 */
#include <nats/nats.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "bus_wait.h"

enum { WAIT_MS = 5000 };

static tb_bus_t *open_bus(const char *url, tb_bus_options_t *o)
{
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, url, o), TB_OK);
    assert_string_equal(tb_bus_backend(bus), "nats");
    return bus;
}

static void test_nats_pubsub_and_wildcards(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    assert_int_equal(tb_bus_state(bus), TB_BUS_UP);
    collector_t star, tail, exact;
    collector_init(&star);
    collector_init(&tail);
    collector_init(&exact);
    tb_sub_t *s1, *s2, *s3;
    assert_int_equal(tb_bus_subscribe(bus, "topology.*.status", &collect_handlers, &star, &s1),
                     TB_OK);
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.>", &collect_handlers, &tail, &s2), TB_OK);
    assert_int_equal(tb_bus_subscribe(bus, "system.mutator.health", &collect_handlers, &exact, &s3),
                     TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK); /* subscriptions reached the server */
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{\"state\":\"active\"}", 18),
                     TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t2.status", NULL, "{}", 2), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.mutation.applied", NULL, "{\"version\":3}", 13),
                     TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1", NULL, "{}", 2), TB_OK); /* matches none */
    assert_int_equal(tb_bus_publish(bus, "system.mutator.health", NULL, "{\"pid\":1}", 9), TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    assert_true(wait_count(&star, 2, WAIT_MS));
    assert_true(wait_count(&tail, 2, WAIT_MS));
    assert_true(wait_count(&exact, 1, WAIT_MS));
    assert_string_equal(star.events[0]->topic, "topology.t1.status");
    assert_string_equal(star.events[0]->type, "status");
    assert_string_equal(star.events[0]->payload, "{\"state\":\"active\"}");
    assert_string_equal(star.events[1]->topic, "topology.t2.status");
    assert_string_equal(tail.events[1]->type, "mutation.applied");
    assert_string_equal(exact.events[0]->type, "system.mutator.health");
    /* Sequences without JetStream: per process, increasing, never 0. */
    assert_true(star.events[0]->seq > 0 && star.events[1]->seq > star.events[0]->seq);
    tb_cursor_t after = {tb_bus_epoch(bus), 1, TB_CURSOR_NO_VERSION};
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, collect_event, &star), TB_ENOTFOUND);
    /* Nothing else arrives: the bare topology.t1 matched neither pattern. */
    assert_int_equal(tb_bus_publish(bus, "topology.t9.status", NULL, "{}", 2), TB_OK);
    assert_true(wait_count(&star, 3, WAIT_MS));
    assert_int_equal(collector_count(&tail), 2);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.published, 6);
    assert_int_equal(st.received, 6);
    tb_sub_close(s1);
    tb_sub_close(s2);
    tb_sub_close(s3);
    tb_bus_destroy(bus);
    collector_cleanup(&star);
    collector_cleanup(&tail);
    collector_cleanup(&exact);
    tb_test_nats_stop(&srv);
}

/* Publishes raw bytes with nats.c itself, as a foreign client would. */
static void raw_publish(const char *url, const char *subject, const char *data)
{
    natsConnection *nc = NULL;
    assert_int_equal(natsConnection_ConnectTo(&nc, url), NATS_OK);
    assert_int_equal(natsConnection_PublishString(nc, subject, data), NATS_OK);
    assert_int_equal(natsConnection_FlushTimeout(nc, WAIT_MS), NATS_OK);
    natsConnection_Destroy(nc);
}

static void test_nats_bad_envelopes_are_counted_not_delivered(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    collector_t c;
    collector_init(&c);
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &collect_handlers, &c, &sub), TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    raw_publish(srv.url, "topology.t1.status", "not json");
    raw_publish(srv.url, "topology.t1.status", "[1,2]");
    raw_publish(srv.url, "topology.t1.status", "{\"payload\":3}");
    /* A foreign publisher's minimal envelope is accepted; the subject wins over `topic`. */
    raw_publish(srv.url, "topology.t1.status", "{\"topic\":\"topology.evil.status\",\"payload\":{}}");
    assert_true(wait_count(&c, 1, WAIT_MS));
    assert_string_equal(c.events[0]->topic, "topology.t1.status");
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.rejected[TB_ENVELOPE_BAD_JSON], 1);
    assert_int_equal(st.rejected[TB_ENVELOPE_NOT_OBJECT], 1);
    assert_int_equal(st.rejected[TB_ENVELOPE_BAD_PAYLOAD], 1);
    tb_sub_close(sub);
    tb_bus_destroy(bus);
    collector_cleanup(&c);
    tb_test_nats_stop(&srv);
}

typedef struct blocker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool release;
    atomic_uint seen;
    atomic_uint_fast64_t dropped;
} blocker_t;

static void on_event_block(tb_event_t *ev, void *ud)
{
    (void)ev;
    blocker_t *b = ud;
    atomic_fetch_add(&b->seen, 1);
    pthread_mutex_lock(&b->mu);
    while (!b->release)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void on_dropped_count(uint64_t count, void *ud)
{
    blocker_t *b = ud;
    atomic_fetch_add(&b->dropped, count);
}

static bool some_dropped(void *ud)
{
    blocker_t *b = ud;
    return atomic_load(&b->dropped) > 0;
}

static bool first_seen(void *ud)
{
    blocker_t *b = ud;
    return atomic_load(&b->seen) > 0;
}

static void test_nats_slow_consumer_drops_reported_per_subscription(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.sub_pending_msgs = 8;
    tb_bus_t *bus = open_bus(srv.url, &o);
    blocker_t b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    atomic_init(&b.seen, 0);
    atomic_init(&b.dropped, 0);
    static const tb_sub_handlers_t h = {.on_event = on_event_block, .on_dropped = on_dropped_count};
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &h, &b, &sub), TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
    assert_true(tb_test_wait_until(first_seen, &b, WAIT_MS)); /* the callback is now stuck */
    for (int i = 0; i < 100; i++)
        assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    assert_true(tb_test_wait_until(some_dropped, &b, WAIT_MS));
    pthread_mutex_lock(&b.mu);
    b.release = true;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    /* Counted before the handler runs, so the counters are never behind the reports. */
    assert_true(tb_sub_dropped(sub) >= atomic_load(&b.dropped));
    tb_sub_close(sub); /* no report after this */
    uint64_t dropped = atomic_load(&b.dropped);
    assert_true(dropped >= 1 && dropped <= 100);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_true(st.sub_dropped >= dropped && st.sub_dropped <= 100);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

static void test_nats_restart_down_up_and_subscriptions_survive(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    state_rec_t rec;
    atomic_init(&rec.state, -1);
    atomic_init(&rec.changes, 0);
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.on_state = record_state;
    o.state_ud = &rec;
    tb_bus_t *bus = open_bus(srv.url, &o);
    collector_t c;
    collector_init(&c);
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.*.status", &collect_handlers, &c, &sub), TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{\"n\":1}", 7), TB_OK);
    assert_true(wait_count(&c, 1, WAIT_MS));

    long long t0 = tb_test_now_ms();
    tb_test_nats_kill(&srv, SIGKILL);
    assert_true(wait_state(bus, TB_BUS_DOWN, WAIT_MS));
    print_message("state down %lld ms after the kill\n", tb_test_now_ms() - t0);
    assert_true(wait_recorded(&rec, TB_BUS_DOWN, WAIT_MS));
    /* Published during the outage: buffered, not an error. */
    assert_int_equal(tb_bus_publish(bus, "topology.t2.status", NULL, "{\"n\":2}", 7), TB_OK);

    assert_true(tb_test_nats_restart(&srv));
    assert_true(wait_state(bus, TB_BUS_UP, WAIT_MS));
    assert_true(wait_recorded(&rec, TB_BUS_UP, WAIT_MS));
    assert_true(atomic_load(&rec.changes) >= 2);
    /* The same subscription receives again: first the buffered event, then new ones. */
    assert_int_equal(tb_bus_publish(bus, "topology.t3.status", NULL, "{\"n\":3}", 7), TB_OK);
    assert_true(wait_count(&c, 3, WAIT_MS));
    assert_string_equal(c.events[1]->topic, "topology.t2.status");
    assert_string_equal(c.events[2]->topic, "topology.t3.status");
    tb_sub_close(sub);
    tb_bus_destroy(bus);
    collector_cleanup(&c);
    tb_test_nats_stop(&srv);
}

static void test_nats_silent_dead_server_is_noticed_by_pings(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    /* The defaults notice a silent peer within 10 s: pings every interval, DOWN once more
     * than max_pings_out are unanswered. */
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    assert_true(o.ping_interval_ms > 0 && o.max_pings_out > 0);
    assert_true((long long)o.ping_interval_ms * (o.max_pings_out + 1) <= 10000);
    o.ping_interval_ms = 300;
    o.max_pings_out = 2;
    tb_bus_t *bus = open_bus(srv.url, &o);
    assert_int_equal(tb_bus_state(bus), TB_BUS_UP);
    long long t0 = tb_test_now_ms();
    /* Frozen, not dead: the connection stays open and nothing answers on it. */
    assert_true(tb_test_nats_freeze(&srv, true));
    bool down = wait_state(bus, TB_BUS_DOWN, 5000);
    print_message("state down %lld ms after SIGSTOP (pings every 300 ms, 2 may be out)\n",
                  tb_test_now_ms() - t0);
    tb_test_nats_freeze(&srv, false);
    assert_true(down);
    assert_true(wait_state(bus, TB_BUS_UP, 10000));
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
    /* Out-of-range settings are refused. */
    tb_bus_t *bad = NULL;
    tb_bus_options_init(&o);
    o.ping_interval_ms = 50;
    assert_int_equal(tb_bus_create(&bad, "nats://127.0.0.1:1", &o), TB_EINVAL);
    tb_bus_options_init(&o);
    o.max_pings_out = 0;
    assert_int_equal(tb_bus_create(&bad, "nats://127.0.0.1:1", &o), TB_EINVAL);
    assert_null(bad);
}

static void test_nats_outage_buffer_is_bounded_and_drops_counted(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.publish_buffer_bytes = 4096;
    tb_bus_t *bus = open_bus(srv.url, &o);
    tb_test_nats_kill(&srv, SIGKILL);
    assert_true(wait_state(bus, TB_BUS_DOWN, WAIT_MS));
    unsigned ok = 0, full = 0;
    for (int i = 0; i < 200; i++) {
        tb_status st = tb_bus_publish(bus, "topology.t1.status", NULL, "{\"pad\":\"xxxxxxxxxxxx\"}", 22);
        ok += st == TB_OK;
        full += st == TB_EFULL;
    }
    assert_true(ok > 0);
    assert_true(full > 0);
    assert_int_equal(ok + full, 200);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.publish_dropped, full);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

static void test_nats_first_connect_retried_in_background(void **state)
{
    (void)state;
    int port = tb_test_free_port();
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.retry_first_connect = false;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, url, &o), TB_EIO);
    assert_null(bus);
    o.retry_first_connect = true;
    bus = open_bus(url, &o);
    assert_int_equal(tb_bus_state(bus), TB_BUS_DOWN);
    collector_t c;
    collector_init(&c);
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &collect_handlers, &c, &sub), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, port, false));
    assert_true(wait_state(bus, TB_BUS_UP, WAIT_MS));
    assert_true(wait_count(&c, 1, WAIT_MS)); /* published before the first connect */
    tb_sub_close(sub);
    tb_bus_destroy(bus);
    collector_cleanup(&c);
    tb_test_nats_stop(&srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nats_pubsub_and_wildcards),
        cmocka_unit_test(test_nats_bad_envelopes_are_counted_not_delivered),
        cmocka_unit_test(test_nats_slow_consumer_drops_reported_per_subscription),
        cmocka_unit_test(test_nats_restart_down_up_and_subscriptions_survive),
        cmocka_unit_test(test_nats_silent_dead_server_is_noticed_by_pings),
        cmocka_unit_test(test_nats_outage_buffer_is_bounded_and_drops_counted),
        cmocka_unit_test(test_nats_first_connect_retried_in_background),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
