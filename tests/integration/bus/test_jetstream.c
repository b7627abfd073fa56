/*
 * The nats backend with JetStream (nats-server -js): live events carry
 * stream sequences, the epoch names the stream, replay after a cursor
 * filtered by pattern, and "gone" for another epoch or a purged sequence;
 * a JetStream that stops answering is left alone and asked again later;
 * a stream leader change makes stream subscriptions resync.
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

static tb_bus_t *open_bus_wait(const char *url, int request_timeout_ms)
{
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.connect_timeout_ms = request_timeout_ms;
    o.stream_name = "TBTEST";
    o.stream_max_age_s = 600;
    o.stream_max_bytes = 1024 * 1024;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, url, &o), TB_OK);
    return bus;
}

static tb_bus_t *open_bus(const char *url)
{
    return open_bus_wait(url, 2000);
}

static uint64_t js_skipped(tb_bus_t *bus)
{
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    return st.js_skipped;
}

static void purge(const char *url)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    assert_int_equal(natsConnection_ConnectTo(&nc, url), NATS_OK);
    assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    assert_int_equal(js_PurgeStream(js, "TBTEST", NULL, NULL), NATS_OK);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

static void test_jetstream_live_sequences_replay_and_gone(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url);
    collector_t live;
    collector_init(&live);
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.>", &collect_handlers, &live, &sub), TB_OK);
    for (int i = 1; i <= 6; i++)
        assert_int_equal(tb_bus_publish(bus, i % 2 ? "topology.t1.status" : "topology.t2.status",
                                        NULL, "{}", 2),
                         TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    assert_true(wait_count(&live, 3, WAIT_MS));
    /* Live events carry the stream sequence: t1 went out 1st, 3rd and 5th. */
    assert_int_equal(live.events[0]->seq, 1);
    assert_int_equal(live.events[1]->seq, 3);
    assert_int_equal(live.events[2]->seq, 5);
    tb_cursor_t head;
    assert_int_equal(tb_bus_head(bus, &head), TB_OK);
    assert_true(head.epoch == tb_bus_epoch(bus));
    assert_int_equal(head.seq, 6);

    /* Another bus on the same stream shares the epoch: cursors survive a gateway restart. */
    tb_bus_t *other = open_bus(srv.url);
    assert_true(tb_bus_epoch(other) == tb_bus_epoch(bus));

    collector_t replayed;
    collector_init(&replayed);
    tb_cursor_t after = {tb_bus_epoch(bus), 1, TB_CURSOR_NO_VERSION};
    assert_int_equal(tb_bus_replay(other, "topology.t1.>", &after, collect_event, &replayed), TB_OK);
    assert_int_equal(replayed.n, 2);
    assert_int_equal(replayed.events[0]->seq, 3);
    assert_int_equal(replayed.events[1]->seq, 5);
    assert_string_equal(replayed.events[1]->topic, "topology.t1.status");
    collector_cleanup(&replayed);
    collector_init(&replayed);
    /* Nothing after the head, and nothing matching after 5: TB_OK, no events. */
    after.seq = 6;
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, collect_event, &replayed), TB_OK);
    after.seq = 5;
    assert_int_equal(tb_bus_replay(bus, "topology.t1.>", &after, collect_event, &replayed), TB_OK);
    assert_int_equal(replayed.n, 0);
    /* Gone: a foreign epoch, a future sequence, a pattern outside the stream. */
    tb_cursor_t foreign = {tb_bus_epoch(bus) ^ 0x10, 1, TB_CURSOR_NO_VERSION};
    assert_int_equal(tb_bus_replay(bus, "topology.>", &foreign, collect_event, &replayed),
                     TB_ENOTFOUND);
    after.seq = 99;
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, collect_event, &replayed),
                     TB_ENOTFOUND);
    after.seq = 1;
    assert_int_equal(tb_bus_replay(bus, "system.>", &after, collect_event, &replayed),
                     TB_ENOTFOUND);

    /* Purged: sequences 1..6 are discarded, so replay after 2 is gone; after 6 is fine. */
    purge(srv.url);
    after.seq = 2;
    assert_int_equal(tb_bus_replay(bus, "topology.t1.>", &after, collect_event, &replayed),
                     TB_ENOTFOUND);
    after.seq = 6;
    assert_int_equal(tb_bus_replay(bus, "topology.t1.>", &after, collect_event, &replayed), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{\"after\":\"purge\"}", 17),
                     TB_OK);
    assert_true(wait_count(&live, 4, WAIT_MS));
    assert_int_equal(live.events[3]->seq, 7);
    assert_int_equal(tb_bus_replay(bus, "topology.t1.>", &after, collect_event, &replayed), TB_OK);
    assert_int_equal(replayed.n, 1);
    assert_int_equal(replayed.events[0]->seq, 7);
    assert_string_equal(replayed.events[0]->payload, "{\"after\":\"purge\"}");

    tb_sub_close(sub);
    tb_bus_destroy(other);
    tb_bus_destroy(bus);
    collector_cleanup(&replayed);
    collector_cleanup(&live);
    tb_test_nats_stop(&srv);
}

static void test_jetstream_ordered_subscription_survives_restart(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url);
    collector_t live;
    collector_init(&live);
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.*.status", &collect_handlers, &live, &sub),
                     TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
    assert_true(wait_count(&live, 1, WAIT_MS));
    assert_true(tb_test_nats_restart(&srv));
    assert_true(wait_state(bus, TB_BUS_UP, WAIT_MS));
    /* The ordered consumer may need a heartbeat interval to notice and re-create itself. */
    long long deadline = tb_test_now_ms() + 15000;
    while (collector_count(&live) < 2 && tb_test_now_ms() < deadline) {
        assert_int_equal(tb_bus_publish(bus, "topology.t2.status", NULL, "{}", 2), TB_OK);
        wait_count(&live, 2, 500);
    }
    assert_true(collector_count(&live) >= 2);
    assert_true(live.events[1]->seq >= 2);
    tb_sub_close(sub);
    tb_bus_destroy(bus);
    collector_cleanup(&live);
    tb_test_nats_stop(&srv);
}

/* A stopped server holds the connection open but answers nothing, as a JetStream cluster
 * electing a leader does: after one request goes unanswered, the next fail at once. */
static void test_jetstream_not_answering_is_left_alone_then_asked_again(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus_wait(srv.url, 500);
    purge(srv.url);
    collector_t live;
    collector_init(&live);
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.>", &collect_handlers, &live, &sub),
                     TB_OK);
    tb_cursor_t start;
    assert_int_equal(tb_bus_head(bus, &start), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{\"n\":1}", 7), TB_OK);
    assert_true(wait_count(&live, 1, WAIT_MS));

    assert_true(tb_test_nats_freeze(&srv, true));
    collector_t replayed;
    collector_init(&replayed);
    assert_int_equal(tb_bus_replay(bus, "topology.t1.>", &start, collect_event, &replayed),
                     TB_ETIMEDOUT);
    uint64_t skipped = js_skipped(bus);
    assert_int_equal(tb_bus_replay(bus, "topology.t1.>", &start, collect_event, &replayed),
                     TB_ETIMEDOUT);
    assert_true(js_skipped(bus) > skipped); /* answered without asking */
    skipped = js_skipped(bus);
    tb_sub_t *other = NULL;
    assert_int_equal(tb_bus_subscribe(bus, "topology.t2.>", &collect_handlers, &live, &other),
                     TB_EBACKEND);
    assert_true(js_skipped(bus) > skipped);
    assert_int_equal(replayed.n, 0);

    assert_true(tb_test_nats_freeze(&srv, false));
    /* After the quiet period one request probes, and replays work again. */
    tb_status st = TB_ETIMEDOUT;
    for (long long end = tb_test_now_ms() + 10000; st != TB_OK && tb_test_now_ms() < end;) {
        st = tb_bus_replay(bus, "topology.t1.>", &start, collect_event, &replayed);
        if (st != TB_OK)
            tb_test_sleep_ms(100);
    }
    assert_int_equal(st, TB_OK);
    assert_int_equal(replayed.n, 1);
    assert_string_equal(replayed.events[0]->payload, "{\"n\":1}");
    /* The live subscription carries on (its consumer rebuilt if it was lost meanwhile). */
    size_t before = collector_count(&live);
    long long deadline = tb_test_now_ms() + 15000;
    while (collector_count(&live) == before && tb_test_now_ms() < deadline) {
        assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
        wait_count(&live, (unsigned)before + 1, 500);
    }
    assert_true(collector_count(&live) > before);
    tb_sub_close(sub);
    tb_bus_destroy(bus);
    collector_cleanup(&live);
    collector_cleanup(&replayed);
    tb_test_nats_stop(&srv);
}

/* What a stream stored without a leader is lost without a trace but the new leader's
 * advisory: on it, stream subscriptions hear that events may be lost; core ones do not. */
static void test_jetstream_leader_change_resyncs_stream_subscriptions(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url);
    collector_t stream, core;
    collector_init(&stream);
    collector_init(&core);
    tb_sub_t *in_stream, *outside;
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.>", &collect_handlers, &stream, &in_stream),
                     TB_OK);
    assert_int_equal(tb_bus_subscribe(bus, "system.>", &collect_handlers, &core, &outside), TB_OK);
    natsConnection *nc = NULL;
    assert_int_equal(natsConnection_ConnectTo(&nc, srv.url), NATS_OK);
    /* Another stream's leader change is none of our business. */
    assert_int_equal(natsConnection_PublishString(
                         nc, "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.OTHER", "{}"),
                     NATS_OK);
    assert_int_equal(natsConnection_PublishString(
                         nc, "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.TBTEST", "{}"),
                     NATS_OK);
    assert_int_equal(natsConnection_Flush(nc), NATS_OK);
    tb_bus_stats_t st = {0};
    for (long long end = tb_test_now_ms() + WAIT_MS;
         atomic_load(&stream.dropped) == 0 && tb_test_now_ms() < end;)
        tb_test_sleep_ms(10);
    assert_int_equal(atomic_load(&stream.dropped), 1);
    assert_int_equal(atomic_load(&core.dropped), 0);
    tb_bus_stats(bus, &st);
    assert_int_equal(st.js_leader_changes, 1);
    natsConnection_Destroy(nc);
    tb_sub_close(in_stream);
    tb_sub_close(outside);
    tb_bus_destroy(bus);
    collector_cleanup(&stream);
    collector_cleanup(&core);
    tb_test_nats_stop(&srv);
}

/* A replay whose first event holds its thread (and so its replay place) for a while. */
typedef struct slow_replay {
    tb_bus_t *bus;
    atomic_bool inside;
    tb_status st;
} slow_replay_t;

static void hold_event(tb_event_t *ev, void *ud)
{
    (void)ev;
    slow_replay_t *r = ud;
    if (!atomic_exchange(&r->inside, true))
        tb_test_sleep_ms(800);
}

static void *slow_replay_main(void *arg)
{
    slow_replay_t *r = arg;
    tb_cursor_t after = {tb_bus_epoch(r->bus), 0, TB_CURSOR_NO_VERSION};
    r->st = tb_bus_replay(r->bus, "topology.>", &after, hold_event, r);
    return NULL;
}

static bool slow_is_inside(void *ud)
{
    return atomic_load(&((slow_replay_t *)ud)->inside);
}

static void test_jetstream_replays_are_bounded_in_number_and_time(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.stream_name = "TBTEST";
    o.stream_max_age_s = 600;
    o.stream_max_bytes = 1024 * 1024;
    o.connect_timeout_ms = 300;
    o.replay_max = 1;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, srv.url, &o), TB_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    tb_test_sleep_ms(200); /* the stream has stored them */

    /* One replay holds the only place: another waits its time out, then says so. */
    slow_replay_t slow = {.bus = bus};
    atomic_init(&slow.inside, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_replay_main, &slow), 0);
    assert_true(tb_test_wait_until(slow_is_inside, &slow, WAIT_MS));
    collector_t got;
    collector_init(&got);
    tb_cursor_t after = {tb_bus_epoch(bus), 0, TB_CURSOR_NO_VERSION};
    long long t0 = tb_test_now_ms();
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, collect_event, &got), TB_ETIMEDOUT);
    long long waited = tb_test_now_ms() - t0;
    assert_true(waited >= 250 && waited < 2000);
    assert_int_equal(got.n, 0);
    pthread_join(t, NULL);
    /* The slow one ran out of time itself (its place was held, not its deadline moved). */
    assert_int_not_equal(slow.st, TB_OK);

    /* The place is free again. */
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, collect_event, &got), TB_OK);
    assert_int_equal(got.n, 3);
    collector_cleanup(&got);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

/* A want handler that takes only topology t2, counting what it was asked. */
static atomic_int asked;

static bool want_t2(const char *topic, void *ud)
{
    (void)ud;
    atomic_fetch_add(&asked, 1);
    return strncmp(topic, "topology.t2.", 12) == 0;
}

static void test_jetstream_want_skips_events_before_they_are_decoded(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url);
    collector_t live;
    collector_init(&live);
    tb_sub_handlers_t h = collect_handlers;
    h.want = want_t2;
    tb_sub_t *sub;
    atomic_init(&asked, 0);
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &h, &live, &sub), TB_OK);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(tb_bus_publish(bus, i % 2 ? "topology.t1.status" : "topology.t2.status",
                                        NULL, "{}", 2),
                         TB_OK);
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    assert_true(wait_count(&live, 2, WAIT_MS));
    tb_test_sleep_ms(200);
    assert_int_equal(atomic_load(&asked), 4);
    assert_int_equal(live.n, 2);
    /* The wanted ones keep their stream sequences. */
    assert_int_equal(live.events[0]->seq, 2);
    assert_int_equal(live.events[1]->seq, 4);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.received, 2);
    tb_sub_close(sub);
    collector_cleanup(&live);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jetstream_live_sequences_replay_and_gone),
        cmocka_unit_test(test_jetstream_ordered_subscription_survives_restart),
        cmocka_unit_test(test_jetstream_not_answering_is_left_alone_then_asked_again),
        cmocka_unit_test(test_jetstream_leader_change_resyncs_stream_subscriptions),
        cmocka_unit_test(test_jetstream_replays_are_bounded_in_number_and_time),
        cmocka_unit_test(test_jetstream_want_skips_events_before_they_are_decoded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
