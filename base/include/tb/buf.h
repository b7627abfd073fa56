/*
 * A byte buffer that is either growable (heap, owned) or fixed (a caller's
 * array). Writers append; a fixed buffer that runs out of room marks itself
 * overflowed and ignores further appends, so a formatter can write freely
 * and check once at the end.
 */
#ifndef TB_BUF_H
#define TB_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "tb/base.h"

typedef struct tb_buf {
    char *data;      /* always NUL-terminated when cap > 0 */
    size_t len;      /* bytes written, excluding the NUL */
    size_t cap;      /* bytes available in data, including room for the NUL */
    bool fixed;      /* data belongs to the caller and never grows */
    bool overflowed; /* a fixed buffer refused an append */
} tb_buf_t;

/** Initialises an empty growable buffer; no allocation until the first append. */
void tb_buf_init(tb_buf_t *b);
/** Initialises a buffer over the caller's array (borrowed for the buffer's life). */
void tb_buf_init_fixed(tb_buf_t *b, char *mem, size_t cap);
/** Frees a growable buffer's memory; a fixed buffer is left to its owner. Accepts NULL. */
void tb_buf_cleanup(tb_buf_t *b);
/** Forgets the content but keeps the memory. */
void tb_buf_reset(tb_buf_t *b);
/**
 * Cuts the content back to len bytes (len <= b->len) and clears an overflow,
 * so a formatter that failed can leave the buffer as it found it.
 */
void tb_buf_truncate(tb_buf_t *b, size_t len);
/** Appends len bytes. */
void tb_buf_append(tb_buf_t *b, const void *mem, size_t len);
/** Appends a NUL-terminated string. */
void tb_buf_append_str(tb_buf_t *b, const char *s);
/** Appends printf-formatted text. */
void tb_buf_appendf(tb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** TB_EFULL if a fixed buffer overflowed since init or reset, else TB_OK. */
tb_status tb_buf_status(const tb_buf_t *b);
/**
 * Hands the growable buffer's memory to the caller (a new string, free() it)
 * and leaves b empty. Never NULL: an empty buffer yields "".
 */
char *tb_buf_steal(tb_buf_t *b, size_t *len);

#endif
