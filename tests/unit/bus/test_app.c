/*
 * The process bus singleton: lazy connect on first use, a 2 s backoff after
 * a failed connect (with an injected clock), and a bus that appears later
 * picked up without a restart (a real nats-server started mid-test).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus_int.h"
#include "proc.h"
#include "tb/bus.h"

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static void test_app_first_call_connects_and_close_is_idempotent(void **state)
{
    (void)state;
    tb_app_bus_close(); /* before any use: harmless */
    assert_null(tb_app_bus()); /* not configured */
    assert_int_equal(tb_app_bus_configure("mem://", NULL), TB_OK);
    unsigned before = tb__app_bus_attempts();
    tb_bus_t *bus = tb_app_bus();
    assert_non_null(bus);
    assert_string_equal(tb_bus_backend(bus), "mem");
    assert_ptr_equal(tb_app_bus(), bus);
    assert_int_equal(tb__app_bus_attempts(), before + 1);
    assert_int_equal(tb_app_bus_configure("none", NULL), TB_ECONFLICT);
    tb_app_bus_close();
    tb_app_bus_close();
    assert_null(tb_app_bus()); /* closed stays closed */
}

static void test_app_failed_connect_retried_only_after_backoff(void **state)
{
    (void)state;
    tb__app_bus_set_clock(fake_clock);
    fake_now = 1000000;
    int port = tb_test_free_port(); /* nothing listens there yet */
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.connect_timeout_ms = 500;
    assert_int_equal(tb_app_bus_configure(url, &o), TB_OK);
    unsigned base = tb__app_bus_attempts();
    assert_null(tb_app_bus());
    assert_int_equal(tb__app_bus_attempts(), base + 1);
    /* Within 2 s: answered from the backoff, no new attempt. */
    fake_now += 1999;
    assert_null(tb_app_bus());
    assert_null(tb_app_bus());
    assert_int_equal(tb__app_bus_attempts(), base + 1);
    /* The server appears; the next call after the backoff finds it. */
    tb_test_nats_t nats;
    assert_true(tb_test_nats_start(&nats, port, false));
    assert_null(tb_app_bus()); /* still inside the backoff */
    assert_int_equal(tb__app_bus_attempts(), base + 1);
    fake_now += 1;
    tb_bus_t *bus = tb_app_bus();
    assert_non_null(bus);
    assert_int_equal(tb__app_bus_attempts(), base + 2);
    assert_string_equal(tb_bus_backend(bus), "nats");
    assert_int_equal(tb_bus_state(bus), TB_BUS_UP);
    assert_ptr_equal(tb_app_bus(), bus);
    tb_app_bus_close();
    tb_app_bus_close();
    tb_test_nats_stop(&nats);
    tb__app_bus_set_clock(NULL);
}

typedef struct first_caller {
    tb_bus_t *bus;
} first_caller_t;

static void *call_app_bus(void *arg)
{
    first_caller_t *c = arg;
    c->bus = tb_app_bus();
    return NULL;
}

/* A second caller during a slow connect waits for that attempt instead of answering NULL at
 * once: at startup the gateway, the mutator and the outbox relay all ask together. */
static void test_app_second_caller_waits_for_the_connect_in_flight(void **state)
{
    (void)state;
    /* A server that accepts (the kernel completes the handshake) and never says a word. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", ntohs(a.sin_port));
    tb_bus_options_t o;
    tb_bus_options_init(&o);
    o.connect_timeout_ms = 800;
    assert_int_equal(tb_app_bus_configure(url, &o), TB_OK);
    unsigned base = tb__app_bus_attempts();
    first_caller_t first = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, call_app_bus, &first), 0);
    while (tb__app_bus_attempts() == base)
        tb_test_sleep_ms(5); /* the first caller is connecting now */
    long long t0 = tb_test_now_ms();
    assert_null(tb_app_bus());
    long long waited = tb_test_now_ms() - t0;
    pthread_join(t, NULL);
    assert_null(first.bus);
    /* It waited for the attempt in flight (800 ms, begun just before), not answered at once. */
    assert_true(waited >= 200);
    assert_int_equal(tb__app_bus_attempts(), base + 1); /* and did not start another */
    tb_app_bus_close();
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_app_first_call_connects_and_close_is_idempotent),
        cmocka_unit_test(test_app_failed_connect_retried_only_after_backoff),
        cmocka_unit_test(test_app_second_caller_waits_for_the_connect_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
