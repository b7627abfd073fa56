/* Reading files in tests: any path, and golden files under $TB_VECTORS_DIR. */
#ifndef TB_TEST_VECTORS_H
#define TB_TEST_VECTORS_H

#include <stddef.h>

/** Reads path into a new NUL-terminated string (free() it); NULL if it cannot be opened. */
char *tb_test_read_file(const char *path, size_t *len);

/** Reads $TB_VECTORS_DIR/<relpath> into a new NUL-terminated string (free() it); NULL if absent. */
char *tb_test_read_vector(const char *relpath, size_t *len);

/** The vectors directory ($TB_VECTORS_DIR); aborts the test run if unset. */
const char *tb_test_vectors_dir(void);

#endif
