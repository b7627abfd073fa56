/*
 * Resume cursors (CONTRACT §3 "Resume"): `<epoch>-<seq>-<version>`, where the
 * epoch is 16 lowercase hex digits naming the bus instance (or JetStream
 * stream), seq is a decimal bus sequence, and version is the topology version
 * a client that received every event of its topology up to that one, in
 * order, has reached. A cursor whose version is unknown is written in the
 * older two-part form `<epoch>-<seq>`, which still parses, as an unknown
 * version. Opaque to clients.
 */
#ifndef TB_CURSOR_H
#define TB_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "tb/base.h"

#define TB_CURSOR_NO_VERSION INT64_C(-1) /* the version is not known */
#define TB_CURSOR_BUF_SIZE 58 /* 16 + '-' + 20 digits + '-' + 19 digits + NUL */

typedef struct tb_cursor {
    uint64_t epoch;
    uint64_t seq;
    int64_t version; /* >= 0, or TB_CURSOR_NO_VERSION (any negative value reads as unknown) */
} tb_cursor_t;

/**
 * Writes the cursor text into out (TB_CURSOR_BUF_SIZE bytes): three parts,
 * or two when the version is unknown (negative). Any thread.
 */
void tb_cursor_format(const tb_cursor_t *cursor, char *out);

/**
 * Parses len bytes of text into *out. Accepts exactly 16 lowercase hex
 * digits, '-', a decimal sequence, and optionally '-' and a decimal version;
 * decimals have no sign or leading zeros, the sequence fits in 64 bits and
 * the version in int64_t. Without the version part, out->version is
 * TB_CURSOR_NO_VERSION. TB_EINVAL for anything else (out untouched). Any thread.
 */
tb_status tb_cursor_parse(const char *text, size_t len, tb_cursor_t *out);

#endif
