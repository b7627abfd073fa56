/*
 * Resume cursors: `<16 lowercase hex epoch>-<decimal seq>`. Parsing is strict
 * because the text arrives from clients (Last-Event-ID).
 */
#include <inttypes.h>
#include <stdio.h>

#include "tb/cursor.h"

enum { EPOCH_DIGITS = 16, SEQ_MAX_DIGITS = 20 };

void tb_cursor_format(const tb_cursor_t *cursor, char *out)
{
    snprintf(out, TB_CURSOR_BUF_SIZE, "%016" PRIx64 "-%" PRIu64, cursor->epoch, cursor->seq);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

tb_status tb_cursor_parse(const char *text, size_t len, tb_cursor_t *out)
{
    if (!text || len < EPOCH_DIGITS + 2 || len > EPOCH_DIGITS + 1 + SEQ_MAX_DIGITS)
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
    const char *digits = text + EPOCH_DIGITS + 1;
    size_t ndigits = len - EPOCH_DIGITS - 1;
    if (ndigits > 1 && digits[0] == '0')
        return TB_EINVAL;
    uint64_t seq = 0;
    for (size_t i = 0; i < ndigits; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return TB_EINVAL;
        uint64_t d = (uint64_t)(digits[i] - '0');
        if (seq > (UINT64_MAX - d) / 10)
            return TB_EINVAL;
        seq = seq * 10 + d;
    }
    out->epoch = epoch;
    out->seq = seq;
    return TB_OK;
}
