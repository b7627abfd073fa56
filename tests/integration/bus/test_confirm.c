/*
 * Confirmed publishing against real nats-servers: a JetStream stream stores a
 * confirmed batch once and in order, a re-publish within the duplicate window
 * is confirmed without being stored again, a stopped server times out within
 * the deadline (also with more bytes than a hung connection's buffers hold)
 * and a retry afterwards is stored once, a killed server answers
 * TB_ECLOSED at once without anything being sent later, and a server without
 * JetStream gets core publishes (with the Nats-Msg-Id header) confirmed by a
 * flush. Each test starts and reaps its own server.
 */
#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cmocka.h>

#include "bus_wait.h"

enum { WAIT_MS = 5000, BATCH = 500, CONFIRM_MS = 10000, STALL_MS = 1000, MARGIN_MS = 500 };

#define STREAM "TBCONF"

/* BATCH envelopes over a few topologies, with items pointing at them. */
typedef struct batch {
    size_t n;
    tb_buf_t *bufs;
    char (*ids)[TB_EVENT_ID_LEN + 1];
    char (*topics)[TB_TOPIC_BUF_SIZE];
    tb_bus_confirm_item_t *items;
} batch_t;

/* n items; each payload carries pad bytes of padding beyond its few fields. */
static void batch_init_padded(batch_t *b, size_t n, size_t pad)
{
    b->n = n;
    b->bufs = calloc(n, sizeof *b->bufs);
    b->ids = calloc(n, sizeof *b->ids);
    b->topics = calloc(n, sizeof *b->topics);
    b->items = calloc(n, sizeof *b->items);
    assert_true(b->bufs && b->ids && b->topics && b->items);
    for (size_t i = 0; i < n; i++) {
        snprintf(b->topics[i], sizeof b->topics[i], "topology.t%zu.mutation.applied", i % 7);
        char *payload = malloc(pad + 96);
        assert_non_null(payload);
        int len =
            snprintf(payload, 96, "{\"mutation_id\":\"m%zu\",\"version\":%zu,\"pad\":\"", i, i + 1);
        memset(payload + len, 'p', pad);
        len += (int)pad;
        len += snprintf(payload + len, 8, "\"}");
        tb_event_t *ev = NULL;
        assert_int_equal(tb_event_create(&ev, b->topics[i], NULL, payload, (size_t)len, NULL),
                         TB_OK);
        free(payload);
        tb_buf_init(&b->bufs[i]);
        assert_int_equal(tb_envelope_encode(ev, &b->bufs[i]), TB_OK);
        tb_event_unref(ev);
        assert_int_equal(tb_bus_confirm_item_init(&b->items[i], b->topics[i], b->bufs[i].data,
                                                  b->bufs[i].len, b->ids[i]),
                         TB_OK);
    }
}

static void batch_init(batch_t *b, size_t n)
{
    batch_init_padded(b, n, 0);
}

static void batch_cleanup(batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        tb_buf_cleanup(&b->bufs[i]);
    free(b->bufs);
    free(b->ids);
    free(b->topics);
    free(b->items);
}

static void results_are(const batch_t *b, tb_status want)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->items[i].result != want)
            fail_msg("item %zu: %s, want %s", i, tb_status_str(b->items[i].result),
                     tb_status_str(want));
    }
}

static tb_bus_t *open_bus(const char *url, state_rec_t *rec)
{
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.stream_name = STREAM;
    o.stream_max_age_s = 600;
    o.stream_max_bytes = 64 * 1024 * 1024;
    o.stream_duplicates_s = 60;
    if (rec) {
        o.on_state = record_state;
        o.state_ud = rec;
    }
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, url, &o), TB_OK);
    assert_int_equal(tb_bus_state(bus), TB_BUS_UP);
    return bus;
}

/* An outside view of the stream, as any NATS client would have it. */
typedef struct observer {
    natsConnection *nc;
    jsCtx *js;
} observer_t;

static void observer_open(observer_t *ob, const char *url)
{
    assert_int_equal(natsConnection_ConnectTo(&ob->nc, url), NATS_OK);
    assert_int_equal(natsConnection_JetStream(&ob->js, ob->nc, NULL), NATS_OK);
}

static void observer_close(observer_t *ob)
{
    jsCtx_Destroy(ob->js);
    natsConnection_Destroy(ob->nc);
}

static uint64_t stream_msgs(observer_t *ob)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(js_GetStreamInfo(&si, ob->js, STREAM, NULL, &jerr), NATS_OK);
    uint64_t msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return msgs;
}

/* msg carries item's envelope bytes and its msg_id as the Nats-Msg-Id header. */
static void msg_is_item(natsMsg *msg, const tb_bus_confirm_item_t *item, size_t i)
{
    const char *id = NULL;
    assert_int_equal(natsMsgHeader_Get(msg, "Nats-Msg-Id", &id), NATS_OK);
    if (strcmp(id, item->msg_id) != 0)
        fail_msg("message %zu has Nats-Msg-Id %s, want %s", i, id, item->msg_id);
    assert_string_equal(natsMsg_GetSubject(msg), item->topic);
    assert_int_equal(natsMsg_GetDataLength(msg), (int)item->len);
    assert_memory_equal(natsMsg_GetData(msg), item->envelope, item->len);
}

/* The stream holds exactly the batch, each item once, in batch order. */
static void stream_holds_exactly(observer_t *ob, const batch_t *b)
{
    assert_int_equal(stream_msgs(ob), b->n);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = STREAM;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckPolicy = js_AckNone;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(js_SubscribeSync(&sub, ob->js, "topology.>", NULL, &so, &jerr), NATS_OK);
    for (size_t i = 0; i < b->n; i++) {
        natsMsg *msg = NULL;
        assert_int_equal(natsSubscription_NextMsg(&msg, sub, WAIT_MS), NATS_OK);
        jsMsgMetaData *md = NULL;
        assert_int_equal(natsMsg_GetMetaData(&md, msg), NATS_OK);
        assert_int_equal(md->Sequence.Stream, i + 1);
        jsMsgMetaData_Destroy(md);
        msg_is_item(msg, &b->items[i], i);
        natsMsg_Destroy(msg);
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
}

static void test_confirm_jetstream_batch_is_stored_once_in_order(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    batch_t b;
    batch_init(&b, BATCH);
    long long t0 = tb_test_now_ms();
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_OK);
    long long took = tb_test_now_ms() - t0;
    printf("confirmed %d items in %lld ms (%.0f items/s)\n", BATCH, took,
           took > 0 ? BATCH * 1000.0 / (double)took : 0.0);
    results_are(&b, TB_OK);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.confirmed, BATCH);
    assert_int_equal(st.confirm_failed, 0);
    observer_t ob;
    observer_open(&ob, srv.url);
    stream_holds_exactly(&ob, &b);
    observer_close(&ob);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

static void test_confirm_jetstream_republish_in_window_is_deduplicated(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    batch_t b;
    batch_init(&b, BATCH);
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_OK);
    /* The relay crashed before deleting its rows: the same batch comes again. */
    for (size_t i = 0; i < b.n; i++)
        b.items[i].result = TB_EIO;
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_OK);
    results_are(&b, TB_OK);
    /* So does another process's bus: the window is the stream's, not the connection's. */
    tb_bus_t *other = open_bus(srv.url, NULL);
    assert_int_equal(tb_bus_publish_confirmed(other, b.items, 10, CONFIRM_MS), TB_OK);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.confirmed, 2 * BATCH);
    observer_t ob;
    observer_open(&ob, srv.url);
    stream_holds_exactly(&ob, &b);
    observer_close(&ob);
    tb_bus_destroy(other);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

/* A stopped server keeps the TCP connection open and answers nothing: the call gives up at
 * its deadline, and once the server runs again a retry is confirmed and stored once. */
static void test_confirm_jetstream_stopped_server_times_out_then_retry_confirms(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    batch_t b;
    batch_init(&b, BATCH);
    assert_true(tb_test_nats_freeze(&srv, true));
    long long t0 = tb_test_now_ms();
    tb_status st = tb_bus_publish_confirmed(bus, b.items, b.n, STALL_MS);
    long long took = tb_test_now_ms() - t0;
    assert_true(tb_test_nats_freeze(&srv, false));
    assert_int_equal(st, TB_ETIMEDOUT);
    results_are(&b, TB_ETIMEDOUT);
    assert_true(took >= STALL_MS - 5);
    if (took > STALL_MS + MARGIN_MS)
        fail_msg("timed out after %lld ms, deadline %d ms", took, STALL_MS);
    tb_bus_stats_t stats;
    tb_bus_stats(bus, &stats);
    assert_int_equal(stats.confirm_failed, BATCH);

    /* The server now reads what was sent while it was stopped; the retry carries the same
     * ids, so the stream ends up with each envelope once whichever copy it stored. */
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_OK);
    results_are(&b, TB_OK);
    observer_t ob;
    observer_open(&ob, srv.url);
    stream_holds_exactly(&ob, &b);
    observer_close(&ob);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

/* Resumes a stopped server if the call under test has not returned in time, so that a
 * call blocked on the hung connection fails the test instead of hanging it. */
typedef struct watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool returned;
    pid_t pid;
    int after_ms;
} watchdog_t;

static void *watchdog_run(void *p)
{
    watchdog_t *w = p;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += w->after_ms / 1000;
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (!w->returned && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    if (!w->returned)
        kill(w->pid, SIGCONT);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void watchdog_disarm(watchdog_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->returned = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* More bytes than the kernel buffers of a hung connection hold (about 4 MiB on loopback):
 * without a bound on what awaits acks, a publish would block on the socket past any
 * deadline. */
/*
 * A big batch against a frozen server (SIGSTOP: connection open, nothing answers) keeps
 * its deadline, every item TB_ETIMEDOUT; once thawed, the same batch is confirmed.
 */
static void frozen_server_keeps_the_deadline(tb_test_nats_t *srv, tb_bus_t *bus, batch_t *b)
{
    assert_true(tb_test_nats_freeze(srv, true));
    watchdog_t w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                    .cv = PTHREAD_COND_INITIALIZER,
                    .pid = srv->pid,
                    .after_ms = STALL_MS + 5000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, watchdog_run, &w), 0);
    long long t0 = tb_test_now_ms();
    tb_status st = tb_bus_publish_confirmed(bus, b->items, b->n, STALL_MS);
    long long took = tb_test_now_ms() - t0;
    watchdog_disarm(&w);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(tb_test_nats_freeze(srv, false));
    if (took > STALL_MS + MARGIN_MS)
        fail_msg("returned after %lld ms, deadline %d ms", took, STALL_MS);
    assert_int_equal(st, TB_ETIMEDOUT);
    results_are(b, TB_ETIMEDOUT);
    assert_int_equal(tb_bus_publish_confirmed(bus, b->items, b->n, CONFIRM_MS), TB_OK);
}

static void test_confirm_jetstream_stopped_server_big_batch_keeps_its_deadline(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    batch_t b;
    batch_init_padded(&b, BATCH, 16 * 1024); /* 8 MiB */
    frozen_server_keeps_the_deadline(&srv, bus, &b);
    observer_t ob;
    observer_open(&ob, srv.url);
    stream_holds_exactly(&ob, &b);
    observer_close(&ob);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

static void test_confirm_killed_server_is_closed_at_once_and_nothing_follows(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    state_rec_t rec = {0};
    tb_bus_t *bus = open_bus(srv.url, &rec);
    batch_t first, b;
    batch_init(&first, 3);
    batch_init(&b, 50);
    assert_int_equal(tb_bus_publish_confirmed(bus, first.items, first.n, CONFIRM_MS), TB_OK);
    tb_test_nats_kill(&srv, SIGKILL);
    assert_true(wait_state(bus, TB_BUS_DOWN, WAIT_MS));
    long long t0 = tb_test_now_ms();
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_ECLOSED);
    long long took = tb_test_now_ms() - t0;
    results_are(&b, TB_ECLOSED);
    if (took > 100)
        fail_msg("TB_ECLOSED took %lld ms", took);
    /* Nothing of the refused batch was buffered: after the restart the stream holds only
     * the first batch, even once everything buffered has been flushed. */
    assert_true(tb_test_nats_restart(&srv));
    assert_true(wait_state(bus, TB_BUS_UP, WAIT_MS));
    assert_int_equal(tb_bus_drain(bus, WAIT_MS), TB_OK);
    observer_t ob;
    observer_open(&ob, srv.url);
    stream_holds_exactly(&ob, &first);
    observer_close(&ob);
    batch_cleanup(&first);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

/* No stream stores a topic outside topology.>: it can never be confirmed. */
static void test_confirm_jetstream_topic_outside_stream_is_einval(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, true));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    batch_t b;
    batch_init(&b, 3);
    b.items[1].topic = "system.mutator.health";
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_EINVAL);
    assert_int_equal(b.items[0].result, TB_OK);
    assert_int_equal(b.items[1].result, TB_EINVAL);
    assert_int_equal(b.items[2].result, TB_OK);
    observer_t ob;
    observer_open(&ob, srv.url);
    assert_int_equal(stream_msgs(&ob), 2);
    observer_close(&ob);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

static void test_confirm_core_without_jetstream_is_flushed_with_headers(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    assert_int_equal(natsConnection_ConnectTo(&nc, srv.url), NATS_OK);
    assert_int_equal(natsConnection_SubscribeSync(&sub, nc, "topology.>"), NATS_OK);
    assert_int_equal(natsConnection_Flush(nc), NATS_OK); /* the interest is at the server */
    batch_t b;
    batch_init(&b, BATCH);
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, b.n, CONFIRM_MS), TB_OK);
    results_are(&b, TB_OK);
    for (size_t i = 0; i < b.n; i++) {
        natsMsg *msg = NULL;
        assert_int_equal(natsSubscription_NextMsg(&msg, sub, WAIT_MS), NATS_OK);
        msg_is_item(msg, &b.items[i], i);
        natsMsg_Destroy(msg);
    }
    natsMsg *extra = NULL;
    assert_int_equal(natsSubscription_NextMsg(&extra, sub, 100), NATS_TIMEOUT);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

/* The same bound without JetStream: a hung server times the flush out by the deadline. */
static void test_confirm_core_stopped_server_big_batch_keeps_its_deadline(void **state)
{
    (void)state;
    tb_test_nats_t srv;
    assert_true(tb_test_nats_start(&srv, 0, false));
    tb_bus_t *bus = open_bus(srv.url, NULL);
    batch_t b;
    batch_init_padded(&b, BATCH, 16 * 1024);
    frozen_server_keeps_the_deadline(&srv, bus, &b);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
    tb_test_nats_stop(&srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confirm_jetstream_batch_is_stored_once_in_order),
        cmocka_unit_test(test_confirm_jetstream_republish_in_window_is_deduplicated),
        cmocka_unit_test(test_confirm_jetstream_stopped_server_times_out_then_retry_confirms),
        cmocka_unit_test(test_confirm_jetstream_stopped_server_big_batch_keeps_its_deadline),
        cmocka_unit_test(test_confirm_killed_server_is_closed_at_once_and_nothing_follows),
        cmocka_unit_test(test_confirm_jetstream_topic_outside_stream_is_einval),
        cmocka_unit_test(test_confirm_core_without_jetstream_is_flushed_with_headers),
        cmocka_unit_test(test_confirm_core_stopped_server_big_batch_keeps_its_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
