/* Loading golden files for table-driven tests (paths under $TB_VECTORS_DIR). */
#ifndef TB_TEST_VECTORS_H
#define TB_TEST_VECTORS_H

#include <stddef.h>

/** Reads $TB_VECTORS_DIR/<relpath> into a new NUL-terminated string (free() it); NULL if absent. */
char *tb_test_read_vector(const char *relpath, size_t *len);

/** The vectors directory ($TB_VECTORS_DIR); aborts the test run if unset. */
const char *tb_test_vectors_dir(void);

#endif
