/* SSE tickets: single use, expiry, capacity, concurrent minting and redeeming. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>

#include "tb/ticket.h"

static tb_principal_t alice = {.sub = "alice", .roles = TB_ROLE_VIEWER};

static void test_ticket_is_single_use_and_bound_to_principal(void **state)
{
    (void)state;
    tb_tickets_t *t = NULL;
    assert_int_equal(tb_tickets_create(&t, 16, 60), TB_OK);
    char ticket[TB_TICKET_LEN + 1];
    assert_int_equal(tb_tickets_mint(t, &alice, 1000, ticket), TB_OK);
    assert_int_equal(strlen(ticket), TB_TICKET_LEN);
    tb_principal_t p;
    assert_int_equal(tb_tickets_redeem(t, ticket, 1001, &p), TB_OK);
    assert_string_equal(p.sub, "alice");
    assert_int_equal(p.roles, TB_ROLE_VIEWER);
    assert_int_equal(tb_tickets_redeem(t, ticket, 1001, &p), TB_EAUTH);
    assert_int_equal(tb_tickets_count(t), 0);
    tb_tickets_destroy(t);
}

static void test_ticket_expires_and_rejects_garbage(void **state)
{
    (void)state;
    tb_tickets_t *t = NULL;
    assert_int_equal(tb_tickets_create(&t, 16, 60), TB_OK);
    char ticket[TB_TICKET_LEN + 1];
    tb_principal_t p;
    assert_int_equal(tb_tickets_mint(t, &alice, 1000, ticket), TB_OK);
    assert_int_equal(tb_tickets_redeem(t, ticket, 1060, &p), TB_EAUTH);
    assert_int_equal(tb_tickets_count(t), 0); /* swept on the way */
    assert_int_equal(tb_tickets_redeem(t, "", 1000, &p), TB_EAUTH);
    assert_int_equal(tb_tickets_redeem(t, NULL, 1000, &p), TB_EAUTH);
    assert_int_equal(tb_tickets_redeem(t, "zz", 1000, &p), TB_EAUTH);
    char upper[TB_TICKET_LEN + 1];
    memset(upper, 'A', TB_TICKET_LEN);
    upper[TB_TICKET_LEN] = '\0';
    assert_int_equal(tb_tickets_redeem(t, upper, 1000, &p), TB_EAUTH);
    tb_tickets_destroy(t);
}

static void test_ticket_capacity_bounds_memory_and_recovers_after_expiry(void **state)
{
    (void)state;
    tb_tickets_t *t = NULL;
    assert_int_equal(tb_tickets_create(&t, 3, 60), TB_OK);
    char ticket[TB_TICKET_LEN + 1];
    for (int i = 0; i < 3; i++)
        assert_int_equal(tb_tickets_mint(t, &alice, 1000, ticket), TB_OK);
    assert_int_equal(tb_tickets_mint(t, &alice, 1000, ticket), TB_EFULL);
    assert_int_equal(tb_tickets_count(t), 3);
    /* Once the old ones expire, minting sweeps them and succeeds. */
    assert_int_equal(tb_tickets_mint(t, &alice, 1061, ticket), TB_OK);
    assert_int_equal(tb_tickets_count(t), 1);
    tb_tickets_destroy(t);
    tb_tickets_destroy(NULL);
}

typedef struct worker {
    tb_tickets_t *t;
    int redeemed;
} worker_t;

static void *mint_and_redeem(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 2000; i++) {
        char ticket[TB_TICKET_LEN + 1];
        tb_principal_t p;
        if (tb_tickets_mint(w->t, &alice, 1000, ticket) == TB_OK &&
            tb_tickets_redeem(w->t, ticket, 1000, &p) == TB_OK)
            w->redeemed++;
    }
    return NULL;
}

static void test_ticket_table_is_thread_safe(void **state)
{
    (void)state;
    tb_tickets_t *t = NULL;
    assert_int_equal(tb_tickets_create(&t, 100000, 60), TB_OK);
    pthread_t threads[4];
    worker_t workers[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (worker_t){.t = t};
        pthread_create(&threads[i], NULL, mint_and_redeem, &workers[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(workers[i].redeemed, 2000);
    }
    assert_int_equal(tb_tickets_count(t), 0);
    tb_tickets_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticket_is_single_use_and_bound_to_principal),
        cmocka_unit_test(test_ticket_expires_and_rejects_garbage),
        cmocka_unit_test(test_ticket_capacity_bounds_memory_and_recovers_after_expiry),
        cmocka_unit_test(test_ticket_table_is_thread_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
