/*
 * Resume cursors (CONTRACT §3 "Resume"): `<epoch>-<seq>`, where the epoch is
 * 16 lowercase hex digits naming the bus instance (or JetStream stream) and
 * seq is a decimal sequence. Opaque to clients.
 */
#ifndef TB_CURSOR_H
#define TB_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "tb/base.h"

#define TB_CURSOR_BUF_SIZE 38 /* 16 + '-' + 20 digits + NUL */

typedef struct tb_cursor {
    uint64_t epoch;
    uint64_t seq;
} tb_cursor_t;

/** Writes the cursor text into out (TB_CURSOR_BUF_SIZE bytes). */
void tb_cursor_format(const tb_cursor_t *cursor, char *out);

/**
 * Parses len bytes of text. TB_EINVAL for anything but exactly 16 lowercase
 * hex digits, '-', and a decimal number without sign or leading zeros that
 * fits in 64 bits.
 */
tb_status tb_cursor_parse(const char *text, size_t len, tb_cursor_t *out);

#endif
