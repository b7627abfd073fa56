/*
 * Growable or fixed byte buffers. A buffer has one owner and no locking; a
 * growable buffer owns its memory until tb_buf_cleanup or tb_buf_steal.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb/alloc.h"
#include "tb/buf.h"

void tb_buf_init(tb_buf_t *b)
{
    memset(b, 0, sizeof *b);
}

void tb_buf_init_fixed(tb_buf_t *b, char *mem, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->data = mem;
    b->cap = cap;
    b->fixed = true;
    if (cap > 0)
        mem[0] = '\0';
    else
        b->overflowed = true;
}

void tb_buf_cleanup(tb_buf_t *b)
{
    if (!b)
        return;
    if (!b->fixed)
        free(b->data);
    memset(b, 0, sizeof *b);
}

void tb_buf_reset(tb_buf_t *b)
{
    tb_buf_truncate(b, 0);
}

void tb_buf_truncate(tb_buf_t *b, size_t len)
{
    TB_ASSERT(len <= b->len);
    b->len = len;
    b->overflowed = b->fixed && b->cap == 0;
    if (b->cap > 0)
        b->data[len] = '\0';
}

/* Makes room for `extra` more bytes plus the NUL; false if a fixed buffer cannot. */
static bool reserve(tb_buf_t *b, size_t extra)
{
    if (b->overflowed)
        return false;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    if (b->fixed) {
        b->overflowed = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = tb_xrealloc(b->data, cap);
    b->cap = cap;
    return true;
}

void tb_buf_append(tb_buf_t *b, const void *mem, size_t len)
{
    if (!reserve(b, len))
        return;
    if (len)
        memcpy(b->data + b->len, mem, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void tb_buf_append_str(tb_buf_t *b, const char *s)
{
    tb_buf_append(b, s, strlen(s));
}

void tb_buf_appendf(tb_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

tb_status tb_buf_status(const tb_buf_t *b)
{
    return b->overflowed ? TB_EFULL : TB_OK;
}

char *tb_buf_steal(tb_buf_t *b, size_t *len)
{
    TB_ASSERT(!b->fixed);
    char *data = b->data ? b->data : tb_xstrdup("");
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return data;
}
