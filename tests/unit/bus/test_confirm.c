/*
 * Confirmed publishing without a server: validation in bus.c (seen through a
 * recording backend built on bus_int.h), the DOWN short cut, serialisation,
 * the mem and null backends, and tb_bus_confirm_item_init.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bus_int.h"
#include "tb/bus.h"

enum { N_ITEMS = 5 };

/* ---- a recording backend ------------------------------------------------------------- */

typedef struct fake_bus {
    tb_bus_t base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned calls;
    size_t items_seen;
    const char *last_msg_id;
    int inside;     /* calls running now */
    int max_inside; /* most calls ever running at once */
    bool hold;      /* publish_confirmed waits until this is cleared */
} fake_bus_t;

static fake_bus_t *fake_of(tb_bus_t *bus)
{
    return tb_container_of(bus, fake_bus_t, base);
}

static void fake_destroy(tb_bus_t *bus)
{
    fake_bus_t *f = fake_of(bus);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    tb__bus_base_cleanup(bus);
    free(f);
}

static tb_status fake_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts);

static tb_status fake_publish(tb_bus_t *bus, tb_event_t *ev)
{
    (void)bus;
    (void)ev;
    return TB_OK;
}

static tb_status fake_subscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    (void)bus;
    (void)sub;
    return TB_OK;
}

static void fake_unsubscribe(tb_bus_t *bus, tb_sub_t *sub)
{
    (void)bus;
    (void)sub;
}

static tb_status fake_drain(tb_bus_t *bus, int timeout_ms)
{
    (void)bus;
    (void)timeout_ms;
    return TB_OK;
}

static tb_status fake_head(tb_bus_t *bus, tb_cursor_t *out)
{
    *out = (tb_cursor_t){bus->epoch, 0, TB_CURSOR_NO_VERSION};
    return TB_OK;
}

static tb_status fake_replay(tb_bus_t *bus, const char *pattern, const tb_cursor_t *after,
                             tb_bus_event_cb on_event, void *ud)
{
    (void)bus;
    (void)pattern;
    (void)after;
    (void)on_event;
    (void)ud;
    return TB_ENOTFOUND;
}

static void fake_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *const *items, size_t n,
                                   int64_t deadline_ms)
{
    (void)deadline_ms;
    fake_bus_t *f = fake_of(bus);
    pthread_mutex_lock(&f->mu);
    f->calls++;
    f->items_seen += n;
    f->last_msg_id = n ? items[n - 1]->msg_id : NULL;
    if (++f->inside > f->max_inside)
        f->max_inside = f->inside;
    pthread_cond_broadcast(&f->cv);
    while (f->hold)
        pthread_cond_wait(&f->cv, &f->mu);
    f->inside--;
    pthread_mutex_unlock(&f->mu);
    for (size_t i = 0; i < n; i++)
        items[i]->result = TB_OK;
}

static const struct tb_bus_ops fake_ops = {
    .name = "fake",
    .create = fake_create,
    .destroy = fake_destroy,
    .publish = fake_publish,
    .subscribe = fake_subscribe,
    .unsubscribe = fake_unsubscribe,
    .drain = fake_drain,
    .head = fake_head,
    .replay = fake_replay,
    .publish_confirmed = fake_publish_confirmed,
};

static tb_status fake_create(tb_bus_t **out, const char *url, const tb_bus_options_t *opts)
{
    (void)url;
    fake_bus_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tb__bus_base_init(&f->base, &fake_ops, opts);
    f->base.epoch = 1;
    atomic_store(&f->base.state, TB_BUS_UP);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    *out = &f->base;
    return TB_OK;
}

static fake_bus_t *new_fake(void)
{
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    tb_bus_t *bus = NULL;
    assert_int_equal(fake_ops.create(&bus, "fake", &o), TB_OK);
    return fake_of(bus);
}

/* ---- envelopes -------------------------------------------------------------------------- */

/* N_ITEMS envelopes on topology.t1.status with payloads {"n":i}, and their items. */
typedef struct batch {
    tb_event_t *ev[N_ITEMS];
    tb_buf_t buf[N_ITEMS];
    char ids[N_ITEMS][TB_EVENT_ID_LEN + 1];
    tb_bus_confirm_item_t items[N_ITEMS];
} batch_t;

static void batch_init(batch_t *b)
{
    for (int i = 0; i < N_ITEMS; i++) {
        char payload[32];
        int len = snprintf(payload, sizeof payload, "{\"n\":%d}", i);
        assert_int_equal(
            tb_event_create(&b->ev[i], "topology.t1.status", NULL, payload, (size_t)len, NULL),
            TB_OK);
        tb_buf_init(&b->buf[i]);
        assert_int_equal(tb_envelope_encode(b->ev[i], &b->buf[i]), TB_OK);
        assert_int_equal(tb_bus_confirm_item_init(&b->items[i], "topology.t1.status",
                                                  b->buf[i].data, b->buf[i].len, b->ids[i]),
                         TB_OK);
        b->items[i].result = TB_EIO; /* must be overwritten */
    }
}

static void batch_cleanup(batch_t *b)
{
    for (int i = 0; i < N_ITEMS; i++) {
        tb_buf_cleanup(&b->buf[i]);
        tb_event_unref(b->ev[i]);
    }
}

static void stats_are(tb_bus_t *bus, uint64_t confirmed, uint64_t failed)
{
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.confirmed, confirmed);
    assert_int_equal(st.confirm_failed, failed);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_confirm_item_init_reads_the_envelope_id(void **state)
{
    (void)state;
    batch_t b;
    batch_init(&b);
    assert_string_equal(b.items[0].msg_id, b.ev[0]->id);
    assert_ptr_equal(b.items[0].msg_id, b.ids[0]);
    assert_ptr_equal(b.items[0].envelope, b.buf[0].data);
    assert_int_equal(b.items[0].len, b.buf[0].len);
    tb_bus_confirm_item_t item = {.len = 42};
    char id[TB_EVENT_ID_LEN + 1];
    static const char no_id[] = "{\"v\":1,\"payload\":{}}";
    assert_int_equal(
        tb_bus_confirm_item_init(&item, "topology.t1.status", no_id, sizeof no_id - 1, id),
        TB_EINVAL);
    assert_int_equal(tb_bus_confirm_item_init(&item, "topology.t1.status", "nope", 4, id),
                     TB_EINVAL);
    assert_int_equal(tb_bus_confirm_item_init(&item, "topology.*", b.buf[0].data, b.buf[0].len, id),
                     TB_EINVAL);
    assert_int_equal(item.len, 42); /* untouched on failure */
    batch_cleanup(&b);
}

static void test_confirm_invalid_items_never_reach_the_backend(void **state)
{
    (void)state;
    fake_bus_t *f = new_fake();
    char big_id[66];
    memset(big_id, 'a', 65);
    big_id[65] = '\0';
    static const char env[] = "{\"v\":1,\"id\":\"x\",\"payload\":{}}";
    tb_bus_confirm_item_t items[] = {
        {"topology.*", "id1", env, sizeof env - 1, TB_OK},                    /* wildcard topic */
        {"topology..x", "id2", env, sizeof env - 1, TB_OK},                   /* empty token */
        {NULL, "id3", env, sizeof env - 1, TB_OK},                            /* no topic */
        {"topology.t1.status", "a.b", env, sizeof env - 1, TB_OK},            /* dot in id */
        {"topology.t1.status", "", env, sizeof env - 1, TB_OK},               /* empty id */
        {"topology.t1.status", big_id, env, sizeof env - 1, TB_OK},           /* 65-byte id */
        {"topology.t1.status", NULL, env, sizeof env - 1, TB_OK},             /* no id */
        {"topology.t1.status", "id8", env, TB_ENVELOPE_MAX_BYTES + 1, TB_OK}, /* oversized */
        {"topology.t1.status", "id9", NULL, 10, TB_OK},                       /* no envelope */
        {"topology.t1.status", "id10", env, 0, TB_OK},                        /* empty envelope */
        {"topology.t1.status", "ok_ID-64", env, sizeof env - 1, TB_EIO},      /* valid */
    };
    size_t n = TB_ARRAY_LEN(items);
    assert_int_equal(tb_bus_publish_confirmed(&f->base, items, n, 1000), TB_EINVAL);
    for (size_t i = 0; i + 1 < n; i++)
        assert_int_equal(items[i].result, TB_EINVAL);
    assert_int_equal(items[n - 1].result, TB_OK);
    assert_int_equal(f->calls, 1);
    assert_int_equal(f->items_seen, 1); /* only the valid one */
    assert_string_equal(f->last_msg_id, "ok_ID-64");
    stats_are(&f->base, 1, n - 1);

    /* A batch with nothing valid never calls the backend at all. */
    assert_int_equal(tb_bus_publish_confirmed(&f->base, items, 3, 1000), TB_EINVAL);
    assert_int_equal(f->calls, 1);
    /* Nothing to do is success. */
    assert_int_equal(tb_bus_publish_confirmed(&f->base, items, 0, 1000), TB_OK);
    assert_int_equal(f->calls, 1);
    tb_bus_destroy(&f->base);
}

static void test_confirm_bad_arguments_are_einval(void **state)
{
    (void)state;
    fake_bus_t *f = new_fake();
    batch_t b;
    batch_init(&b);
    assert_int_equal(tb_bus_publish_confirmed(NULL, b.items, N_ITEMS, 100), TB_EINVAL);
    assert_int_equal(b.items[0].result, TB_EINVAL);
    assert_int_equal(tb_bus_publish_confirmed(&f->base, NULL, 3, 100), TB_EINVAL);
    assert_int_equal(tb_bus_publish_confirmed(&f->base, b.items, N_ITEMS, -1), TB_EINVAL);
    for (int i = 0; i < N_ITEMS; i++)
        assert_int_equal(b.items[i].result, TB_EINVAL);
    assert_int_equal(f->calls, 0);
    stats_are(&f->base, 0, N_ITEMS);
    batch_cleanup(&b);
    tb_bus_destroy(&f->base);
}

static void test_confirm_down_bus_is_closed_and_sends_nothing(void **state)
{
    (void)state;
    fake_bus_t *f = new_fake();
    batch_t b;
    batch_init(&b);
    b.items[3].msg_id = "not.valid";
    atomic_store(&f->base.state, TB_BUS_DOWN);
    assert_int_equal(tb_bus_publish_confirmed(&f->base, b.items, N_ITEMS, 1000), TB_ECLOSED);
    for (int i = 0; i < N_ITEMS; i++)
        assert_int_equal(b.items[i].result, i == 3 ? TB_EINVAL : TB_ECLOSED);
    assert_int_equal(f->calls, 0);
    stats_are(&f->base, 0, N_ITEMS);
    atomic_store(&f->base.state, TB_BUS_UP);
    b.items[3].msg_id = b.ids[3];
    assert_int_equal(tb_bus_publish_confirmed(&f->base, b.items, N_ITEMS, 1000), TB_OK);
    assert_int_equal(f->calls, 1);
    stats_are(&f->base, N_ITEMS, N_ITEMS);
    batch_cleanup(&b);
    tb_bus_destroy(&f->base);
}

typedef struct caller {
    tb_bus_t *bus;
    batch_t *b;
    int timeout_ms;
    tb_status st;
} caller_t;

static void *call_confirmed(void *p)
{
    caller_t *c = p;
    c->st = tb_bus_publish_confirmed(c->bus, c->b->items, N_ITEMS, c->timeout_ms);
    return NULL;
}

/* A second caller waits for the first; if the first holds the bus past its deadline it
 * gives up with TB_ETIMEDOUT, and the backend never runs two batches at once. */
static void test_confirm_calls_are_serialised_within_the_deadline(void **state)
{
    (void)state;
    fake_bus_t *f = new_fake();
    batch_t b1, b2;
    batch_init(&b1);
    batch_init(&b2);
    f->hold = true;
    caller_t first = {&f->base, &b1, 10000, TB_EIO};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, call_confirmed, &first), 0);
    pthread_mutex_lock(&f->mu);
    while (f->inside == 0)
        pthread_cond_wait(&f->cv, &f->mu); /* bounded by the test's CTest timeout */
    pthread_mutex_unlock(&f->mu);
    /* The first call holds the bus: this one's 50 ms run out while waiting for it. */
    assert_int_equal(tb_bus_publish_confirmed(&f->base, b2.items, N_ITEMS, 50), TB_ETIMEDOUT);
    for (int i = 0; i < N_ITEMS; i++)
        assert_int_equal(b2.items[i].result, TB_ETIMEDOUT);
    /* Released, the first finishes; a second caller on another thread then runs after it. */
    caller_t second = {&f->base, &b2, 10000, TB_EIO};
    pthread_t t2;
    assert_int_equal(pthread_create(&t2, NULL, call_confirmed, &second), 0);
    pthread_mutex_lock(&f->mu);
    f->hold = false;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    assert_int_equal(first.st, TB_OK);
    assert_int_equal(second.st, TB_OK);
    assert_int_equal(f->calls, 2);
    assert_int_equal(f->max_inside, 1);
    batch_cleanup(&b1);
    batch_cleanup(&b2);
    tb_bus_destroy(&f->base);
}

typedef struct seen {
    unsigned n;
    char payloads[N_ITEMS][32];
    char ids[N_ITEMS][TB_EVENT_ID_LEN + 1];
    uint64_t seqs[N_ITEMS];
} seen_t;

static void on_event_record(tb_event_t *ev, void *ud)
{
    seen_t *s = ud;
    if (s->n < N_ITEMS) {
        snprintf(s->payloads[s->n], sizeof s->payloads[0], "%s", ev->payload);
        strcpy(s->ids[s->n], ev->id);
        s->seqs[s->n] = ev->seq;
    }
    s->n++;
}

static const tb_sub_handlers_t record_handlers = {.on_event = on_event_record};

static void test_confirm_mem_delivers_in_order_before_returning(void **state)
{
    (void)state;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "mem://", NULL), TB_OK);
    seen_t seen = {0};
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.t1.>", &record_handlers, &seen, &sub), TB_OK);
    batch_t b;
    batch_init(&b);
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, N_ITEMS, 1000), TB_OK);
    assert_int_equal(seen.n, N_ITEMS); /* delivered synchronously */
    for (int i = 0; i < N_ITEMS; i++) {
        char want[32];
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_int_equal(b.items[i].result, TB_OK);
        assert_string_equal(seen.payloads[i], want);
        assert_string_equal(seen.ids[i], b.ev[i]->id); /* the envelope id survives */
        assert_int_equal(seen.seqs[i], (uint64_t)i + 1);
    }
    stats_are(bus, N_ITEMS, 0);
    tb_cursor_t head;
    assert_int_equal(tb_bus_head(bus, &head), TB_OK);
    assert_int_equal(head.seq, N_ITEMS); /* and kept for replay */
    tb_sub_close(sub);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
}

static void test_confirm_mem_undecodable_item_fails_alone(void **state)
{
    (void)state;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "mem://", NULL), TB_OK);
    seen_t seen = {0};
    tb_sub_t *sub;
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &record_handlers, &seen, &sub), TB_OK);
    batch_t b;
    batch_init(&b);
    static const char not_json[] = "{\"v\":1,\"payload\":";
    static const char array_payload[] = "{\"v\":1,\"payload\":[]}";
    b.items[1].envelope = not_json;
    b.items[1].len = sizeof not_json - 1;
    b.items[3].envelope = array_payload;
    b.items[3].len = sizeof array_payload - 1;
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, N_ITEMS, 1000), TB_EINVAL);
    static const tb_status want[N_ITEMS] = {TB_OK, TB_EINVAL, TB_OK, TB_EINVAL, TB_OK};
    for (int i = 0; i < N_ITEMS; i++)
        assert_int_equal(b.items[i].result, want[i]);
    assert_int_equal(seen.n, 3);
    assert_string_equal(seen.payloads[0], "{\"n\":0}");
    assert_string_equal(seen.payloads[1], "{\"n\":2}");
    assert_string_equal(seen.payloads[2], "{\"n\":4}");
    stats_are(bus, 3, 2);
    tb_sub_close(sub);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
}

static void test_confirm_null_confirms_everything_valid(void **state)
{
    (void)state;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "none", NULL), TB_OK);
    batch_t b;
    batch_init(&b);
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, N_ITEMS, 0), TB_OK);
    for (int i = 0; i < N_ITEMS; i++)
        assert_int_equal(b.items[i].result, TB_OK);
    b.items[2].topic = "topology.>";
    assert_int_equal(tb_bus_publish_confirmed(bus, b.items, N_ITEMS, 0), TB_EINVAL);
    assert_int_equal(b.items[2].result, TB_EINVAL);
    assert_int_equal(b.items[4].result, TB_OK);
    stats_are(bus, 2 * N_ITEMS - 1, 1);
    batch_cleanup(&b);
    tb_bus_destroy(bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confirm_item_init_reads_the_envelope_id),
        cmocka_unit_test(test_confirm_invalid_items_never_reach_the_backend),
        cmocka_unit_test(test_confirm_bad_arguments_are_einval),
        cmocka_unit_test(test_confirm_down_bus_is_closed_and_sends_nothing),
        cmocka_unit_test(test_confirm_calls_are_serialised_within_the_deadline),
        cmocka_unit_test(test_confirm_mem_delivers_in_order_before_returning),
        cmocka_unit_test(test_confirm_mem_undecodable_item_fails_alone),
        cmocka_unit_test(test_confirm_null_confirms_everything_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
