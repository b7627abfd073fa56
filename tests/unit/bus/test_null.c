/* The disabled bus: publishes vanish, subscriptions never fire, replay is gone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tb/bus.h"

static void on_event_fail(tb_event_t *ev, void *ud)
{
    (void)ev;
    (void)ud;
    fail_msg("the null bus delivered an event");
}

static void test_null_publish_is_noop_and_state_disabled(void **state)
{
    (void)state;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "none", NULL), TB_OK);
    assert_string_equal(tb_bus_backend(bus), "null");
    assert_int_equal(tb_bus_state(bus), TB_BUS_DISABLED);
    assert_string_equal(tb_bus_state_str(tb_bus_state(bus)), "disabled");
    static const tb_sub_handlers_t h = {.on_event = on_event_fail};
    tb_sub_t *sub = NULL;
    assert_int_equal(tb_bus_subscribe(bus, "topology.>", &h, NULL, &sub), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.t1.status", NULL, "{}", 2), TB_OK);
    assert_int_equal(tb_bus_publish(bus, "topology.*", NULL, "{}", 2), TB_EINVAL);
    assert_int_equal(tb_bus_drain(bus, 100), TB_OK);
    tb_cursor_t head;
    assert_int_equal(tb_bus_head(bus, &head), TB_OK);
    assert_true(head.epoch == tb_bus_epoch(bus));
    assert_int_equal(head.seq, 0);
    assert_int_equal(tb_bus_replay(bus, "topology.>", &head, on_event_fail, NULL), TB_ENOTFOUND);
    tb_bus_stats_t st;
    tb_bus_stats(bus, &st);
    assert_int_equal(st.published, 1);
    assert_int_equal(st.received, 0);
    assert_int_equal(tb_sub_dropped(sub), 0);
    tb_sub_close(sub);
    tb_bus_destroy(bus);
    tb_bus_destroy(NULL);
    tb_sub_close(NULL);
}

static void test_null_url_must_be_exact(void **state)
{
    (void)state;
    tb_bus_t *bus = NULL;
    assert_int_equal(tb_bus_create(&bus, "none2", NULL), TB_EINVAL);
    assert_int_equal(tb_bus_create(&bus, "mem://x", NULL), TB_EINVAL);
    assert_int_equal(tb_bus_create(&bus, "nats://", NULL), TB_EINVAL);
    assert_null(bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_publish_is_noop_and_state_disabled),
        cmocka_unit_test(test_null_url_must_be_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
