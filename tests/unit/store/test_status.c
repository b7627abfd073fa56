/*
 * The topology status machine (CONTRACT §4): the pure table against an
 * independent listing of the legal edges, then every (from, to) pair through
 * the store, where an illegal transition must fail and change nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_fixture.h"

#define N_STATUS TB_TOPOLOGY_ANY

/* The contract's edges, written out independently of the implementation's table. */
static const struct {
    tb_topology_status from, to;
} legal[] = {
    {TB_TOPOLOGY_PENDING, TB_TOPOLOGY_DEPLOYING},
    {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_ACTIVE},
    {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_FAILED},
    {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_TEARING_DOWN},
    {TB_TOPOLOGY_ACTIVE, TB_TOPOLOGY_DEGRADED},
    {TB_TOPOLOGY_ACTIVE, TB_TOPOLOGY_TEARING_DOWN},
    {TB_TOPOLOGY_DEGRADED, TB_TOPOLOGY_ACTIVE},
    {TB_TOPOLOGY_DEGRADED, TB_TOPOLOGY_TEARING_DOWN},
    {TB_TOPOLOGY_FAILED, TB_TOPOLOGY_TEARING_DOWN},
    {TB_TOPOLOGY_TEARING_DOWN, TB_TOPOLOGY_TORN_DOWN},
};

/* A legal path from pending to each status. */
static const tb_topology_status paths[N_STATUS][4] = {
    [TB_TOPOLOGY_PENDING] = {TB_TOPOLOGY_ANY},
    [TB_TOPOLOGY_DEPLOYING] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_ANY},
    [TB_TOPOLOGY_ACTIVE] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_ACTIVE, TB_TOPOLOGY_ANY},
    [TB_TOPOLOGY_DEGRADED] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_ACTIVE, TB_TOPOLOGY_DEGRADED,
                              TB_TOPOLOGY_ANY},
    [TB_TOPOLOGY_FAILED] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_FAILED, TB_TOPOLOGY_ANY},
    [TB_TOPOLOGY_TEARING_DOWN] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_TEARING_DOWN,
                                  TB_TOPOLOGY_ANY},
    [TB_TOPOLOGY_TORN_DOWN] = {TB_TOPOLOGY_DEPLOYING, TB_TOPOLOGY_TEARING_DOWN,
                               TB_TOPOLOGY_TORN_DOWN, TB_TOPOLOGY_ANY},
};

static bool listed(tb_topology_status from, tb_topology_status to)
{
    for (size_t i = 0; i < TB_ARRAY_LEN(legal); i++) {
        if (legal[i].from == from && legal[i].to == to)
            return true;
    }
    return false;
}

static void test_status_table_matches_contract(void **state)
{
    (void)state;
    for (int f = 0; f < N_STATUS; f++) {
        for (int t = 0; t < N_STATUS; t++) {
            if (tb_topology_transition_legal(f, t) != listed(f, t))
                fail_msg("%s -> %s", tb_topology_status_name(f), tb_topology_status_name(t));
        }
        assert_false(tb_topology_transition_legal(f, TB_TOPOLOGY_ANY));
        assert_false(tb_topology_transition_legal(TB_TOPOLOGY_ANY, f));
    }
    assert_true(tb_topology_status_mutable(TB_TOPOLOGY_PENDING));
    assert_true(tb_topology_status_mutable(TB_TOPOLOGY_ACTIVE));
    assert_true(tb_topology_status_mutable(TB_TOPOLOGY_DEGRADED));
    assert_false(tb_topology_status_mutable(TB_TOPOLOGY_DEPLOYING));
    assert_false(tb_topology_status_mutable(TB_TOPOLOGY_FAILED));
    assert_false(tb_topology_status_mutable(TB_TOPOLOGY_TEARING_DOWN));
    assert_false(tb_topology_status_mutable(TB_TOPOLOGY_TORN_DOWN));
}

static char *topology_in(tb_store_t *s, tb_topology_status target)
{
    char *id = tb_test_create_topology(s, "machine");
    for (int i = 0; paths[target][i] != TB_TOPOLOGY_ANY; i++) {
        tb_store_err_t err;
        if (tb_store_topology_transition(s, id, TB_TOPOLOGY_ANY, paths[target][i], NULL, NULL,
                                         &err))
            fail_msg("walking to %s: %s", tb_topology_status_name(target), err.message);
    }
    return id;
}

static void test_status_every_pair_through_store(void **state)
{
    (void)state;
    tb_test_store_t t;
    tb_test_store_init(&t, 0);
    int legal_seen = 0, illegal_seen = 0;
    for (int f = 0; f < N_STATUS; f++) {
        for (int to = 0; to < N_STATUS; to++) {
            char *id = topology_in(t.store, f);
            json_t *before = NULL;
            assert_int_equal(tb_store_topology_get(t.store, id, &before, NULL), TB_OK);
            tb_topology_status prev = TB_TOPOLOGY_ANY;
            tb_store_err_t err;
            tb_status st = tb_store_topology_transition(t.store, id, f, to, NULL, &prev, &err);
            char buf[32];
            const char *now = tb_test_status(t.store, id, buf, sizeof buf);
            assert_int_equal(prev, f);
            if (listed(f, to)) {
                legal_seen++;
                if (st != TB_OK)
                    fail_msg("%s -> %s: %s", tb_topology_status_name(f),
                             tb_topology_status_name(to), err.message);
                assert_string_equal(now, tb_topology_status_name(to));
            } else {
                illegal_seen++;
                assert_int_equal(st, TB_ECONFLICT);
                assert_int_equal(err.reason, TB_STORE_R_ILLEGAL_TRANSITION);
                assert_non_null(strstr(err.message, tb_topology_status_name(f)));
                json_t *after = NULL;
                assert_int_equal(tb_store_topology_get(t.store, id, &after, NULL), TB_OK);
                assert_true(json_equal(before, after));
                json_decref(after);
            }
            json_decref(before);
            free(id);
        }
    }
    assert_int_equal(legal_seen, (int)TB_ARRAY_LEN(legal));
    assert_int_equal(illegal_seen, N_STATUS * N_STATUS - (int)TB_ARRAY_LEN(legal));
    tb_test_store_cleanup(&t);
}

static void test_status_expected_from_mismatch_wrong_state(void **state)
{
    (void)state;
    tb_test_store_t t;
    tb_test_store_init(&t, 0);
    char *id = topology_in(t.store, TB_TOPOLOGY_ACTIVE);
    tb_store_err_t err;
    /* degraded -> active is legal, but the topology is active, not degraded. */
    assert_int_equal(tb_store_topology_transition(t.store, id, TB_TOPOLOGY_DEGRADED,
                                                  TB_TOPOLOGY_ACTIVE, NULL, NULL, &err),
                     TB_ECONFLICT);
    assert_int_equal(err.reason, TB_STORE_R_WRONG_STATE);
    assert_int_equal(tb_store_topology_transition(t.store, id, TB_TOPOLOGY_ANY, TB_TOPOLOGY_ANY,
                                                  NULL, NULL, &err),
                     TB_EINVAL);
    assert_int_equal(tb_store_topology_transition(t.store, "t_0000000000000000",
                                                  TB_TOPOLOGY_ANY, TB_TOPOLOGY_ACTIVE, NULL,
                                                  NULL, &err),
                     TB_ENOTFOUND);
    assert_int_equal(tb_store_topology_transition(t.store, "../x", TB_TOPOLOGY_ANY,
                                                  TB_TOPOLOGY_ACTIVE, NULL, NULL, &err),
                     TB_ENOTFOUND);
    char buf[32];
    assert_string_equal(tb_test_status(t.store, id, buf, sizeof buf), "active");
    free(id);
    tb_test_store_cleanup(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_table_matches_contract),
        cmocka_unit_test(test_status_every_pair_through_store),
        cmocka_unit_test(test_status_expected_from_mismatch_wrong_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
