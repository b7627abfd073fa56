/*
 * Resume cursors: `<16 lowercase hex epoch>-<decimal seq>[-<decimal version>]`.
 * Parsing is strict because the text arrives from clients (Last-Event-ID):
 * one canonical text per cursor, so whatever parses formats back the same.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tb/cursor.h"

enum { EPOCH_DIGITS = 16, MAX_DIGITS = 20 };

void tb_cursor_format(const tb_cursor_t *cursor, char *out)
{
    if (cursor->version < 0)
        snprintf(out, TB_CURSOR_BUF_SIZE, "%016" PRIx64 "-%" PRIu64, cursor->epoch, cursor->seq);
    else
        snprintf(out, TB_CURSOR_BUF_SIZE, "%016" PRIx64 "-%" PRIu64 "-%" PRId64, cursor->epoch,
                 cursor->seq, cursor->version);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* A decimal of n bytes, no sign, no leading zero, at most max. */
static bool parse_decimal(const char *digits, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > MAX_DIGITS || (n > 1 && digits[0] == '0'))
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < n; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return false;
        uint64_t d = (uint64_t)(digits[i] - '0');
        if (value > (max - d) / 10)
            return false;
        value = value * 10 + d;
    }
    *out = value;
    return true;
}

tb_status tb_cursor_parse(const char *text, size_t len, tb_cursor_t *out)
{
    if (!text || len < EPOCH_DIGITS + 2 || len > TB_CURSOR_BUF_SIZE - 1)
        return TB_EINVAL;
    uint64_t epoch = 0;
    for (size_t i = 0; i < EPOCH_DIGITS; i++) {
        int v = hex_value(text[i]);
        if (v < 0)
            return TB_EINVAL;
        epoch = epoch << 4 | (uint64_t)v;
    }
    if (text[EPOCH_DIGITS] != '-')
        return TB_EINVAL;
    const char *rest = text + EPOCH_DIGITS + 1;
    size_t nrest = len - EPOCH_DIGITS - 1;
    const char *dash = memchr(rest, '-', nrest);
    size_t nseq = dash ? (size_t)(dash - rest) : nrest;
    uint64_t seq;
    if (!parse_decimal(rest, nseq, UINT64_MAX, &seq))
        return TB_EINVAL;
    int64_t version = TB_CURSOR_NO_VERSION;
    if (dash) {
        uint64_t v;
        if (!parse_decimal(dash + 1, nrest - nseq - 1, INT64_MAX, &v))
            return TB_EINVAL;
        version = (int64_t)v;
    }
    out->epoch = epoch;
    out->seq = seq;
    out->version = version;
    return TB_OK;
}
