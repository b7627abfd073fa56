/*
 * Allocation that never returns NULL: an out-of-memory condition aborts the
 * process, so callers have no out-of-memory paths to get wrong.
 */
#ifndef TB_ALLOC_H
#define TB_ALLOC_H

#include <stddef.h>

/** malloc that aborts on failure; a zero size still returns a unique pointer. Any thread. */
void *tb_xmalloc(size_t size);
/** calloc that aborts on failure or on n * size overflow. Any thread. */
void *tb_xcalloc(size_t n, size_t size);
/** realloc that aborts on failure. Any thread. */
void *tb_xrealloc(void *ptr, size_t size);
/** strdup that aborts on failure; returns a new string. Any thread. */
char *tb_xstrdup(const char *s);
/** Copies len bytes of s and a terminating NUL into a new string. Any thread. */
char *tb_xstrndup(const char *s, size_t len);

#endif
