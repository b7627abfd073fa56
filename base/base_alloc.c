/*
 * Aborting allocators. Running out of memory is not a condition this service
 * can recover from meaningfully, so it ends the process with a message
 * instead of spreading NULL checks through every caller.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tb/alloc.h"

static _Noreturn void out_of_memory(size_t size)
{
    static const char msg[] = "topobus: out of memory\n";
    (void)size;
    /* write() rather than stdio: stdio may itself need memory. */
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    abort();
}

void *tb_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

void *tb_xcalloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        out_of_memory(SIZE_MAX);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        out_of_memory(n * size);
    return p;
}

void *tb_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

char *tb_xstrndup(const char *s, size_t len)
{
    char *p = tb_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *tb_xstrdup(const char *s)
{
    return tb_xstrndup(s, strlen(s));
}
