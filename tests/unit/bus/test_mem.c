/* The in-process bus: matching, unsubscribe during delivery, concurrency, replay, scale. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bus_int.h"
#include "tb/bus.h"

typedef struct seen {
    pthread_mutex_t mu;
    unsigned count;
    char last_topic[TB_TOPIC_BUF_SIZE];
    uint64_t last_seq;
} seen_t;

static void on_event_count(tb_event_t *ev, void *ud)
{
    seen_t *s = ud;
    pthread_mutex_lock(&s->mu);
    s->count++;
    strcpy(s->last_topic, ev->topic);
    s->last_seq = ev->seq;
    pthread_mutex_unlock(&s->mu);
}

static const tb_sub_handlers_t count_handlers = {.on_event = on_event_count};

static tb_bus_t *mem_bus(size_t ring)
{
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.ring_size = ring;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "mem://", &o), TB_OK);
    assert_string_equal(tb_bus_backend(bus), "mem");
    assert_int_equal(tb_bus_state(bus), TB_BUS_UP);
    return bus;
}

static void pub(tb_bus_t *bus, const char *topic)
{
    assert_int_equal(tb_bus_publish(bus, topic, NULL, "{}", 2), TB_OK);
}

static void test_mem_wildcards_match_as_nats(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *topic;
        bool match;
    } cases[] = {
        {"topology.t1.status", "topology.t1.status", true},
        {"topology.t1.status", "topology.t2.status", false},
        {"topology.*.status", "topology.t2.status", true},
        {"topology.*.status", "topology.t2.x.status", false},
        {"topology.>", "topology.a.status", true},
        {"topology.>", "topology", false},
        {"topology.t1.>", "topology.t1.mutation.applied", true},
        {"topology.t1.>", "topology.t2.mutation.applied", false},
        {"*.*.mutation.*", "topology.t9.mutation.failed", true},
        {"*.*.mutation.*", "topology.t9.mutation", false},
        {">", "system.mutator.health", true},
        {"*", "system", true},
        {"*", "system.x", false},
        {"topology.*.>", "topology.a.b", true},
        {"topology.*.>", "topology.a", false},
    };
    tb_bus_t *bus = mem_bus(16);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        seen_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
        tb_sub_t *sub;
        assert_int_equal(tb_bus_subscribe(bus, cases[i].pattern, &count_handlers, &s, &sub), TB_OK);
        pub(bus, cases[i].topic);
        if (s.count != (cases[i].match ? 1u : 0u))
            fail_msg("pattern %s topic %s: got %u events", cases[i].pattern, cases[i].topic,
                     s.count);
        tb_sub_close(sub);
    }
    tb_bus_destroy(bus);
}

static void test_mem_bad_input_is_einval(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(16);
    tb_sub_t *sub = NULL;
    seen_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(tb_bus_subscribe(bus, "topology.>.x", &count_handlers, &s, &sub), TB_EINVAL);
    assert_null(sub);
    assert_int_equal(tb_bus_publish(bus, "topology.*", NULL, "{}", 2), TB_EINVAL);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "[1]", 3), TB_EINVAL);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{", 1), TB_EINVAL);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", "bad type", "{}", 2), TB_EINVAL);
    tb_bus_t *other = NULL;
    assert_int_equal(tb_bus_create(&other, "redis://x", NULL), TB_EINVAL);
    assert_null(other);
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.ring_size = 0;
    assert_int_equal(tb_bus_create(&other, "mem://", &o), TB_EINVAL);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.published, 0);
    tb_bus_destroy(bus);
}

typedef struct closer {
    tb_sub_t *self;
    tb_sub_t *other;
    unsigned calls;
} closer_t;

static void on_event_close_self(tb_event_t *ev, void *ud)
{
    (void)ev;
    closer_t *c = ud;
    c->calls++;
    tb_sub_close(c->self); /* returns at once; freed after this callback */
    c->self = NULL;
    tb_sub_close(c->other);
    c->other = NULL;
}

static void test_mem_unsubscribe_during_delivery_stops_delivery(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(16);
    closer_t c = {0};
    seen_t other = {.mu = PTHREAD_MUTEX_INITIALIZER};
    static const tb_sub_handlers_t h = {.on_event = on_event_close_self};
    /* Subscribed second so the trie order does not decide the outcome: both orders are fine. */
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.>", &count_handlers, &other, &c.other),
                     TB_OK);
    assert_int_equal(tb_bus_subscribe(bus, "topology.*.status", &h, &c, &c.self), TB_OK);
    pub(bus, "topology.t1.status");
    pub(bus, "topology.t1.status");
    assert_int_equal(c.calls, 1);
    assert_true(other.count <= 1); /* closed by the first event's callback */
    tb_bus_destroy(bus);
}

static void on_event_publish(tb_event_t *ev, void *ud)
{
    tb_bus_t *bus = ud;
    if (strcmp(ev->topic, "topology.t1.a") == 0)
        assert_int_equal(tb_bus_publish(bus, "topology.t1.b", NULL, "{}", 2), TB_OK);
}

static void test_mem_callback_may_publish_and_destroy_closes_leftovers(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(16);
    static const tb_sub_handlers_t h = {.on_event = on_event_publish};
    tb_sub_t *a, *b;
    seen_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.a", &h, bus, &a), TB_OK);
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.b", &count_handlers, &s, &b), TB_OK);
    pub(bus, "topology.t1.a");
    assert_int_equal(s.count, 1);
    assert_int_equal(s.last_seq, 2);
    tb_bus_destroy(bus); /* a and b are still open: destroy closes them */
}

enum { THREADS = 6, PER_THREAD = 3000 };

typedef struct worker {
    tb_bus_t *bus;
    int index;
} worker_t;

static void *publisher(void *p)
{
    worker_t *w = p;
    char topic[64];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(topic, sizeof topic, "topology.w%d.status", w->index);
        assert_int_equal(tb_bus_publish(w->bus, topic, NULL, "{\"n\":1}", 7), TB_OK);
    }
    return NULL;
}

typedef struct seqs {
    pthread_mutex_t mu;
    unsigned char *hit;
    size_t n;
    unsigned dup;
} seqs_t;

static void on_event_seq(tb_event_t *ev, void *ud)
{
    seqs_t *s = ud;
    pthread_mutex_lock(&s->mu);
    if (ev->seq == 0 || ev->seq > s->n || s->hit[ev->seq - 1])
        s->dup++;
    else
        s->hit[ev->seq - 1] = 1;
    pthread_mutex_unlock(&s->mu);
}

static void test_mem_many_threads_publishing_deliver_each_once(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(1024);
    seqs_t s = {.mu = PTHREAD_MUTEX_INITIALIZER, .n = THREADS * PER_THREAD};
    s.hit = calloc(s.n, 1);
    static const tb_sub_handlers_t h = {.on_event = on_event_seq};
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.*.status", &h, &s, &sub), TB_OK);
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){bus, i};
        assert_int_equal(pthread_create(&th[i], NULL, publisher, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(s.dup, 0);
    for (size_t i = 0; i < s.n; i++)
        assert_int_equal(s.hit[i], 1);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.published, s.n);
    assert_int_equal(st.received, s.n);
    tb_cursor_t head;
    assert_int_equal(tb_bus_head(bus, &head), TB_OK);
    assert_int_equal(head.seq, s.n);
    assert_true(head.epoch == tb_bus_epoch(bus));
    tb_sub_close(sub);
    free(s.hit);
    tb_bus_destroy(bus);
}

typedef struct churn {
    tb_bus_t *bus;
    atomic_bool stop;
} churn_t;

static void *subscriber_churn(void *p)
{
    churn_t *c = p;
    seen_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    while (!atomic_load(&c->stop)) {
        tb_sub_t *sub;
        assert_int_equal(tb_bus_subscribe(c->bus, "topology.*.status", &count_handlers, &s, &sub),
                         TB_OK);
        tb_sub_close(sub);
    }
    return NULL;
}

static void test_mem_close_from_other_thread_waits_for_running_callbacks(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(64);
    churn_t c = {.bus = bus};
    atomic_init(&c.stop, false);
    pthread_t churner, pubs[2];
    worker_t w[2] = {{bus, 0}, {bus, 1}};
    assert_int_equal(pthread_create(&churner, NULL, subscriber_churn, &c), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&pubs[i], NULL, publisher, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(pubs[i], NULL);
    atomic_store(&c.stop, true);
    pthread_join(churner, NULL);
    tb_bus_destroy(bus);
}

typedef struct collected {
    uint64_t seqs[64];
    size_t n;
} collected_t;

static void on_replayed(tb_event_t *ev, void *ud)
{
    collected_t *c = ud;
    c->seqs[c->n++] = ev->seq;
}

static void test_mem_replay_after_cursor_and_gone(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(8);
    for (int i = 1; i <= 6; i++)
        pub(bus, i % 2 ? "topology.a.status" : "topology.b.status");
    tb_cursor_t after = {tb_bus_epoch(bus), 2, TB_CURSOR_NO_VERSION};
    collected_t c = {0};
    assert_int_equal(tb_bus_replay(bus, "topology.a.>", &after, on_replayed, &c), TB_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.seqs[0], 3);
    assert_int_equal(c.seqs[1], 5);
    /* At the head: nothing to replay, still TB_OK. */
    c.n = 0;
    after.seq = 6;
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_OK);
    assert_int_equal(c.n, 0);
    /* A sequence this bus never issued, or another epoch: gone. */
    after.seq = 7;
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_ENOTFOUND);
    after = (tb_cursor_t){tb_bus_epoch(bus) ^ 1, 3, TB_CURSOR_NO_VERSION};
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_ENOTFOUND);
    /* Overwrite the ring: events 1..5 are gone after 13 publishes into 8 slots. */
    for (int i = 0; i < 7; i++)
        pub(bus, "topology.a.status");
    after = (tb_cursor_t){tb_bus_epoch(bus), 4, TB_CURSOR_NO_VERSION};
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_ENOTFOUND);
    after.seq = 5; /* oldest kept is 6: everything after 5 is still there */
    c.n = 0;
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_OK);
    assert_int_equal(c.n, 8);
    assert_int_equal(c.seqs[0], 6);
    assert_int_equal(c.seqs[7], 13);
    assert_int_equal(tb_bus_replay(bus, "bad..pattern", &after, on_replayed, &c), TB_EINVAL);
    tb_bus_destroy(bus);
}

static void test_mem_ring_is_bounded_by_bytes_too(void **state)
{
    (void)state;
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.ring_size = 1000;
    o.ring_max_bytes = 3000; /* room for two 1 KiB payloads, not three */
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "mem://", &o), TB_OK);
    char payload[1100];
    snprintf(payload, sizeof payload, "{\"blob\":\"%01020d\"}", 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(tb_bus_publish(bus, "topology.a.big", NULL, payload, strlen(payload)),
                         TB_OK);
    collected_t c = {0};
    tb_cursor_t after = {tb_bus_epoch(bus), 2, TB_CURSOR_NO_VERSION}; /* 3 was evicted to stay under the bytes */
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_ENOTFOUND);
    after.seq = 3;
    assert_int_equal(tb_bus_replay(bus, "topology.>", &after, on_replayed, &c), TB_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.seqs[0], 4);
    assert_int_equal(c.seqs[1], 5);
    /* One event larger than the whole bound is still kept: the newest always stays. */
    o.ring_max_bytes = 10;
    tb_bus_t *tiny = NULL;
    assert_int_equal(tb_bus_create(&tiny, "mem://", &o), TB_OK);
    assert_int_equal(tb_bus_publish(tiny, "topology.a.big", NULL, payload, strlen(payload)), TB_OK);
    c.n = 0;
    after = (tb_cursor_t){tb_bus_epoch(tiny), 0, TB_CURSOR_NO_VERSION};
    assert_int_equal(tb_bus_replay(tiny, "topology.>", &after, on_replayed, &c), TB_OK);
    assert_int_equal(c.n, 1);
    tb_bus_destroy(tiny);
    tb_bus_destroy(bus);
}

static void test_mem_publish_event_copies_shared_events(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(8);
    seen_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &count_handlers, &s, &sub), TB_OK);
    tb_event_t *ev;
    assert_int_equal(tb_event_create(&ev, "topology.t1.status", NULL, "{\"a\":1}", 7, NULL), TB_OK);
    assert_int_equal(tb_bus_publish_event(bus, ev), TB_OK);
    assert_int_equal(ev->seq, 1); /* unshared: numbered in place */
    tb_event_ref(ev);              /* now shared: the bus must not write to it */
    assert_int_equal(tb_bus_publish_event(bus, ev), TB_OK);
    assert_int_equal(ev->seq, 1);
    assert_int_equal(s.last_seq, 2);
    tb_event_unref(ev);
    tb_event_unref(ev);
    tb_sub_close(sub);
    tb_bus_destroy(bus);
}

enum { SCALE_SUBS = 10000 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_mem_ten_thousand_subscriptions_publish_touches_only_matches(void **state)
{
    (void)state;
    tb_bus_t *bus = mem_bus(1024);
    tb_sub_t **subs = calloc(SCALE_SUBS, sizeof *subs);
    seen_t *seen = calloc(SCALE_SUBS, sizeof *seen);
    char pattern[64];
    for (int i = 0; i < SCALE_SUBS; i++) {
        pthread_mutex_init(&seen[i].mu, NULL);
        snprintf(pattern, sizeof pattern, "topology.t%d.>", i);
        assert_int_equal(tb_bus_subscribe(bus, pattern, &count_handlers, &seen[i], &subs[i]),
                         TB_OK);
    }
    /* The index walk for one topic visits the root, `topology`, `t1234` and the tail. */
    tb_mem_index_t *index;
    tb__mem_index_create(&index);
    for (int i = 0; i < SCALE_SUBS; i++)
        tb__mem_index_add(index, subs[i]);
    tb_sub_vec_t found = {0};
    size_t visited = tb__mem_index_match(index, "topology.t1234.mutation.applied", &found);
    assert_int_equal(found.len, 1);
    assert_ptr_equal(found.items[0], subs[1234]);
    assert_true(visited <= 4);
    tb__sub_unref(found.items[0]);
    free(found.items);
    for (int i = 0; i < SCALE_SUBS; i++)
        tb__mem_index_remove(index, subs[i]);
    tb__mem_index_destroy(index);

    enum { N = 100000 };
    double t0 = now_s();
    for (int i = 0; i < N; i++)
        tb_bus_publish(bus, "topology.t1234.status", NULL, "{\"v\":1}", 7);
    double per = (now_s() - t0) / N * 1e9;
    print_message("mem publish with %d subscriptions: %.0f ns per publish (1 match)\n",
                  SCALE_SUBS, per);
    assert_int_equal(seen[1234].count, N);
    assert_int_equal(seen[1233].count, 0);
    for (int i = 0; i < SCALE_SUBS; i++) {
        tb_sub_close(subs[i]);
        pthread_mutex_destroy(&seen[i].mu);
    }
    free(subs);
    free(seen);
    tb_bus_destroy(bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mem_wildcards_match_as_nats),
        cmocka_unit_test(test_mem_bad_input_is_einval),
        cmocka_unit_test(test_mem_unsubscribe_during_delivery_stops_delivery),
        cmocka_unit_test(test_mem_ring_is_bounded_by_bytes_too),
        cmocka_unit_test(test_mem_callback_may_publish_and_destroy_closes_leftovers),
        cmocka_unit_test(test_mem_many_threads_publishing_deliver_each_once),
        cmocka_unit_test(test_mem_close_from_other_thread_waits_for_running_callbacks),
        cmocka_unit_test(test_mem_replay_after_cursor_and_gone),
        cmocka_unit_test(test_mem_publish_event_copies_shared_events),
        cmocka_unit_test(test_mem_ten_thousand_subscriptions_publish_touches_only_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
