/*
 * Shared set-up for the store tests. The suite is backend-neutral: it runs
 * against TB_STORE_TEST_URL when that is set (e.g. a PostgreSQL URL), else
 * against a fresh SQLite file in a private directory under $TMPDIR. A URL
 * given there should name an empty database: the concurrency and crash
 * tests drain every pending row they can see, and cleanup leaves no row
 * pending or applying for the next test on the same database.
 */
#ifndef TB_TEST_STORE_FIXTURE_H
#define TB_TEST_STORE_FIXTURE_H

#include <stdbool.h>

#include "tb/store.h"

typedef struct tb_test_store {
    char dir[256];   /* private scratch directory, removed by cleanup */
    char url[512];   /* the store URL under test */
    bool own_db;     /* the URL names a file in dir (the SQLite default) */
    tb_store_t *store;
} tb_test_store_t;

/** Makes the scratch directory and URL, opens the store with lease_s (0 = default). */
void tb_test_store_init(tb_test_store_t *t, long lease_s);
/**
 * On a shared database (TB_STORE_TEST_URL), first fails every row left
 * pending or applying; then closes the store and removes the scratch
 * directory and any SQLite files in it.
 */
void tb_test_store_cleanup(tb_test_store_t *t);
/** Reopens t->store (e.g. in a child after fork()); aborts the test on failure. */
tb_store_t *tb_test_store_reopen(const tb_test_store_t *t, long lease_s);

/** Creates a topology named name with no graph; returns its id as a new string (free it). */
char *tb_test_create_topology(tb_store_t *s, const char *name);
/** Parses JSON text that the test wrote; aborts on a syntax error. New reference. */
json_t *tb_test_json(const char *text);
/** The status of topology id, read back through the store. */
const char *tb_test_status(tb_store_t *s, const char *id, char *buf, size_t cap);
/** Number of mutation rows of a topology. */
size_t tb_test_count_rows(tb_store_t *s, const char *id);

/** Opens another handle (connection) on t's database; no_outbox as in tb_store_options_t. */
tb_store_t *tb_test_store_open_with(const tb_test_store_t *t, bool no_outbox);
/** Deletes every outbox row, so a test on a shared database sees only its own. */
void tb_test_outbox_drain(tb_store_t *s);

/** cmocka setup: a new tb_test_store_t (lease 0: the default) in *state, outbox emptied. */
int tb_test_store_setup(void **state);
/** cmocka teardown for tb_test_store_setup. */
int tb_test_store_teardown(void **state);
/** The store of a tb_test_store_setup state (borrowed). */
tb_store_t *tb_test_store_of(void **state);
/** Sleeps ms milliseconds (between polls of a bounded wait). */
void tb_test_store_nap_ms(long ms);
/**
 * The outbox rows of topology id, in seq order, each checked (seq rising,
 * age 0..60 s, the envelope decodes on the row's topic with v 1, its id is
 * the row's msg_id, its topic and type fields match; aborts otherwise).
 * A new array of {"seq","type","id","payload"}, type being the envelope's
 * ("mutation.applied", "status").
 */
json_t *tb_test_outbox_events(tb_store_t *s, const char *id);

#endif
