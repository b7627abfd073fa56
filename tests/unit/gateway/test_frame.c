/*
 * Shared SSE frames and topology versions: which events carry a version,
 * the version stamped into each frame's cursor, and the continuity rule a
 * stream applies to each frame (CONTRACT §3 "Resume"). Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gw_frame.h"
#include "tb/envelope.h"

#define NOV TB_CURSOR_NO_VERSION
#define EPOCH UINT64_C(0xab)
#define SEQ 42

static const struct {
    const char *topic;
    const char *payload;
    int64_t reached;  /* before the event */
    int64_t version;  /* the event's own */
    bool applied;
    int64_t stamped;  /* in the cursor, and reached after */
} format_cases[] = {
    {"topology.t1.mutation.applied", "{\"version\":4}", 3, 4, true, 4},
    {"topology.t1.mutation.applied", "{\"version\":4}", NOV, 4, true, 4},
    {"topology.t1.mutation.applied", "{\"version\":0}", NOV, 0, true, 0},
    {"topology.t1.mutation.applied", "{\"version\":2}", 4, 2, true, 4}, /* a duplicate */
    {"topology.t1.status", "{\"state\":\"active\",\"version\":7}", 5, 7, false, 7},
    {"topology.t1.status", "{\"state\":\"active\",\"version\":5}", 5, 5, false, 5},
    {"topology.t1.mutation.enqueued", "{\"mutation_id\":\"m\",\"version\":5}", 5, 5, false, 5},
    {"topology.t1.mutation.applying", "{\"mutation_id\":\"m\",\"version\":5}", 5, 5, false, 5},
    {"topology.t1.mutation.failed", "{\"mutation_id\":\"m\",\"version\":6}", 5, 6, false, 6},
    /* No valid version: nothing to learn, the cursor carries what was reached. */
    {"topology.t1.status", "{\"state\":\"active\"}", 5, NOV, false, 5},
    {"topology.t1.status", "{\"version\":\"5\"}", 5, NOV, false, 5},
    {"topology.t1.status", "{\"version\":-1}", 5, NOV, false, 5},
    {"topology.t1.status", "{\"version\":1.5}", 5, NOV, false, 5},
    {"topology.t1.status", "{\"version\":null}", 5, NOV, false, 5},
    {"topology.t1.mutation.applied", "{\"version\":true}", 5, NOV, false, 5},
    /* Other events carry no version, whatever their payload says. */
    {"topology.t1.deploy.progress", "{\"version\":9}", 5, NOV, false, 5},
    {"topology.t1.mutation.custom", "{\"version\":9}", 5, NOV, false, 5},
    {"topology.t1.step", "{\"i\":1}", NOV, NOV, false, NOV},
};

static void test_frame_format_stamps_the_version_reached(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof format_cases / sizeof format_cases[0]; i++) {
        const char *payload = format_cases[i].payload;
        tb_event_t *ev = NULL;
        assert_int_equal(tb_event_create(&ev, format_cases[i].topic, NULL, payload,
                                         strlen(payload), NULL),
                         TB_OK);
        ev->seq = SEQ;
        int64_t reached = format_cases[i].reached;
        gw_frame_t *f = gw_frame_format(EPOCH, ev, &reached);
        assert_non_null(f);
        if (f->version != format_cases[i].version || f->applied != format_cases[i].applied ||
            reached != format_cases[i].stamped)
            fail_msg("case %zu: version %lld applied %d reached %lld", i, (long long)f->version,
                     f->applied, (long long)reached);
        char cursor[TB_CURSOR_BUF_SIZE], head[128];
        tb_cursor_format(&(tb_cursor_t){EPOCH, SEQ, format_cases[i].stamped}, cursor);
        snprintf(head, sizeof head, "id: %s\nevent: %s\n", cursor, format_cases[i].topic + 12);
        if (f->len < strlen(head) || memcmp(f->data, head, strlen(head)) != 0)
            fail_msg("case %zu: frame starts '%.*s', want '%s'", i, (int)strlen(head), f->data,
                     head);
        assert_true(f->seq == SEQ);
        gw_frame_unref(f);
        tb_event_unref(ev);
    }
    /* The cursor of an unknown version is the two-part form. */
    tb_event_t *ev = NULL;
    assert_int_equal(tb_event_create(&ev, "topology.t1.step", NULL, "{}", 2, NULL), TB_OK);
    ev->seq = 7;
    int64_t reached = NOV;
    gw_frame_t *f = gw_frame_format(EPOCH, ev, &reached);
    assert_memory_equal(f->data, "id: 00000000000000ab-7\n", 23);
    gw_frame_unref(f);
    tb_event_unref(ev);
}

static const struct {
    int64_t at;      /* the version the stream reached */
    int64_t version; /* the frame's */
    bool applied;
    bool continues;
    int64_t after;
} rule_cases[] = {
    {5, NOV, false, true, 5},  /* unversioned */
    {NOV, NOV, false, true, NOV},
    {5, 6, true, true, 6},     /* the next version */
    {5, 5, true, true, 5},     /* duplicates are forwarded, harmless */
    {5, 3, true, true, 5},
    {5, 7, true, false, 5},    /* 6 was lost */
    {5, 100, true, false, 5},
    {0, 1, true, true, 1},
    {0, 0, true, true, 0},
    {0, 2, true, false, 0},
    {5, 5, false, true, 5},    /* a change at the version reached */
    {5, 2, false, true, 5},
    {5, 6, false, false, 5},   /* its applied never came */
    {5, 7, false, false, 5},
    {NOV, 9, true, true, 9},   /* unknown: the first versioned frame is adopted */
    {NOV, 9, false, true, 9},
    {NOV, 0, true, true, 0},
};

static void test_frame_continues_applies_the_version_rule(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rule_cases / sizeof rule_cases[0]; i++) {
        gw_frame_t *f = gw_frame_new("x", 1, 1);
        f->version = rule_cases[i].version;
        f->applied = rule_cases[i].applied;
        int64_t v = rule_cases[i].at;
        bool ok = gw_frame_continues(f, &v);
        if (ok != rule_cases[i].continues || v != rule_cases[i].after)
            fail_msg("case %zu: continues %d, version %lld", i, ok, (long long)v);
        gw_frame_unref(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_format_stamps_the_version_reached),
        cmocka_unit_test(test_frame_continues_applies_the_version_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
