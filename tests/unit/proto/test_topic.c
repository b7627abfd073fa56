/* Topic grammar, matching (golden table in tests/vectors/topics.tsv) and builders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tb/sse.h"
#include "tb/topic.h"
#include "vectors.h"

static void test_topic_match_vectors_match_expected(void **state)
{
    (void)state;
    size_t len;
    char *text = tb_test_read_vector("topics.tsv", &len);
    assert_non_null(text);
    int cases = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        char *tab1 = strchr(line, '\t');
        assert_non_null(tab1);
        char *tab2 = strchr(tab1 + 1, '\t');
        assert_non_null(tab2);
        *tab1 = *tab2 = '\0';
        bool expected = tab2[1] == '1';
        bool got = tb_topic_match(line, tab1 + 1);
        if (got != expected)
            fail_msg("pattern '%s' topic '%s': expected %d, got %d", line, tab1 + 1, expected,
                     got);
        cases++;
    }
    assert_true(cases >= 40);
    free(text);
}

static void test_topic_validate_accepts_and_rejects_per_grammar(void **state)
{
    (void)state;
    char long_token[70], long_topic[300], tokens17[64];
    memset(long_token, 'a', 65);
    long_token[65] = '\0';
    memset(long_topic, 'a', 256);
    for (int i = 63; i < 256; i += 64)
        long_topic[i] = '.'; /* 64-byte... tokens stay legal, only the length breaks */
    long_topic[256] = '\0';
    strcpy(tokens17, "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q");
    const struct {
        const char *s;
        bool topic_ok, pattern_ok;
    } cases[] = {
        {"topology.t42.mutation.applied", true, true},
        {"a", true, true},
        {"A-Z_a-z.0-9", true, true},
        {"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", true, true},
        {tokens17, false, false},
        {long_token, false, false},
        {long_topic, false, false},
        {"", false, false},
        {".", false, false},
        {"a.", false, false},
        {".a", false, false},
        {"a..b", false, false},
        {"a b", false, false},
        {"a.%2e", false, false},
        {"a/b", false, false},
        {"é", false, false},
        {"*", false, true},
        {">", false, true},
        {"a.*.c", false, true},
        {"a.>", false, true},
        {"a.>.c", false, false},
        {">.a", false, false},
        {"a.b*", false, false},
        {"a.>b", false, false},
        {"a.**", false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = NULL;
        tb_status st = tb_topic_validate(cases[i].s, &why);
        if ((st == TB_OK) != cases[i].topic_ok)
            fail_msg("topic '%s': expected %d", cases[i].s, cases[i].topic_ok);
        if (st != TB_OK)
            assert_non_null(why);
        why = NULL;
        st = tb_topic_validate_pattern(cases[i].s, &why);
        if ((st == TB_OK) != cases[i].pattern_ok)
            fail_msg("pattern '%s': expected %d", cases[i].s, cases[i].pattern_ok);
        if (st != TB_OK)
            assert_non_null(why);
    }
    assert_int_equal(tb_topic_validate(NULL, NULL), TB_EINVAL);
    /* Exactly 255 bytes is legal. */
    long_topic[255] = '\0';
    long_topic[254] = 'a';
    assert_int_equal(tb_topic_validate(long_topic, NULL), TB_OK);
    /* Exactly 64 bytes in a token is legal. */
    long_token[64] = '\0';
    assert_int_equal(tb_topic_validate(long_token, NULL), TB_OK);
}

static void test_topology_id_valid_follows_token_grammar(void **state)
{
    (void)state;
    char id64[65], id65[66];
    memset(id64, 'x', 64);
    id64[64] = '\0';
    memset(id65, 'x', 65);
    id65[65] = '\0';
    assert_true(tb_topology_id_valid("t42"));
    assert_true(tb_topology_id_valid("t_0123456789abcdef"));
    assert_true(tb_topology_id_valid("A-b_9"));
    assert_true(tb_topology_id_valid(id64));
    const char *bad[] = {"", "a.b", "*", ">", "%2e", "a b", "a/b", "..", id65, "é"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (tb_topology_id_valid(bad[i]))
            fail_msg("id '%s' should be invalid", bad[i]);
    }
    assert_false(tb_topology_id_valid(NULL));
    assert_true(tb_topology_id_valid_n("abc.def", 3));
    assert_false(tb_topology_id_valid_n("abc.def", 4));
    assert_false(tb_topology_id_valid_n("abc", 0));
}

static void test_topic_build_every_family_and_refuses_bad_ids(void **state)
{
    (void)state;
    char out[TB_TOPIC_BUF_SIZE];
    const struct {
        tb_topic_family family;
        const char *expected;
    } families[] = {
        {TB_TOPIC_MUTATION_ENQUEUED, "topology.t42.mutation.enqueued"},
        {TB_TOPIC_MUTATION_APPLYING, "topology.t42.mutation.applying"},
        {TB_TOPIC_MUTATION_APPLIED, "topology.t42.mutation.applied"},
        {TB_TOPIC_MUTATION_FAILED, "topology.t42.mutation.failed"},
        {TB_TOPIC_STATUS, "topology.t42.status"},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        assert_int_equal(tb_topic_build(out, families[i].family, "t42"), TB_OK);
        assert_string_equal(out, families[i].expected);
        assert_int_equal(tb_topic_validate(out, NULL), TB_OK);
    }
    const char *bad[] = {"a.b", "*", ">", "", "%2e", "a b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strcpy(out, "junk");
        assert_int_equal(tb_topic_build(out, TB_TOPIC_STATUS, bad[i]), TB_EINVAL);
        assert_string_equal(out, "");
        assert_int_equal(tb_topic_build_topology_pattern(out, bad[i]), TB_EINVAL);
        assert_string_equal(out, "");
        assert_int_equal(tb_topic_build_health(out, bad[i]), TB_EINVAL);
    }
    assert_int_equal(tb_topic_build(out, (tb_topic_family)99, "t42"), TB_EINVAL);
    assert_int_equal(tb_topic_build_topology_pattern(out, "t1"), TB_OK);
    assert_string_equal(out, "topology.t1.>");
    assert_true(tb_topic_match(out, "topology.t1.status"));
    assert_false(tb_topic_match(out, "topology.t10.status"));
    assert_int_equal(tb_topic_build_health(out, "mutator"), TB_OK);
    assert_string_equal(out, "system.mutator.health");
}

static void test_topic_type_and_sse_name_derivation(void **state)
{
    (void)state;
    const struct {
        const char *topic, *type, *sse;
    } cases[] = {
        {"topology.t42.mutation.applied", "mutation.applied", "mutation.applied"},
        {"topology.t42.status", "status", "status"},
        {"topology.t42.a.b.c", "a.b.c", "a.b.c"},
        {"topology.t42", "topology.t42", "topology.t42"},
        {"topology", "topology", "topology"},
        {"system.mutator.health", "system.mutator.health", "health"},
        {"a.b", "a.b", "a.b"},
        {"a", "a", "a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(tb_topic_type(cases[i].topic), cases[i].type);
        assert_string_equal(tb_sse_event_name(cases[i].topic), cases[i].sse);
    }
}

static void test_topic_topology_id_extracts_or_rejects(void **state)
{
    (void)state;
    char id[TB_TOPOLOGY_ID_BUF_SIZE];
    assert_int_equal(tb_topic_topology_id("topology.t42.status", id), TB_OK);
    assert_string_equal(id, "t42");
    assert_int_equal(tb_topic_topology_id("topology.t_1-x.mutation.applied", id), TB_OK);
    assert_string_equal(id, "t_1-x");
    const char *bad[] = {"topology.t42", "topology.t42.", "system.t42.status", "topology..status",
                         "topologyx.t42.status", "topology.a b.status"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tb_topic_topology_id(bad[i], id), TB_EINVAL);
        assert_string_equal(id, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_match_vectors_match_expected),
        cmocka_unit_test(test_topic_validate_accepts_and_rejects_per_grammar),
        cmocka_unit_test(test_topology_id_valid_follows_token_grammar),
        cmocka_unit_test(test_topic_build_every_family_and_refuses_bad_ids),
        cmocka_unit_test(test_topic_type_and_sse_name_derivation),
        cmocka_unit_test(test_topic_topology_id_extracts_or_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
