/*
 * The chunked request-body decoder (see gw_chunked.h): a byte state machine
 * over the caller's buffer. Chunk extensions and trailer fields are read and
 * ignored; sizes are hex, at most 8 digits (far past the body limit).
 */
#include "gw_chunked.h"

enum {
    ST_SIZE = 0, /* hex digits of a chunk size */
    ST_EXT,      /* `;name=value` after the size, up to CR */
    ST_SIZE_LF,  /* LF after the size line */
    ST_DATA,     /* chunk payload */
    ST_DATA_CR,  /* CR after the payload */
    ST_DATA_LF,  /* LF after the payload */
    ST_TRAILER,  /* start of a trailer line, or the final CRLF */
    ST_TRAILER_LINE,
    ST_FINAL_LF,
    MAX_DIGITS = 8,
};

void gw_chunked_init(gw_chunked_t *c)
{
    c->state = ST_SIZE;
    c->remaining = 0;
    c->digits = 0;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One byte of framing (every state but DATA); returns MORE, DONE or BAD. */
static gw_chunked_result step(gw_chunked_t *c, char ch, size_t have, size_t max)
{
    switch (c->state) {
    case ST_SIZE: {
        int v = hex_value(ch);
        if (v >= 0) {
            if (c->digits >= MAX_DIGITS)
                return GW_CHUNKED_TOO_LARGE;
            c->remaining = c->remaining * 16 + (uint64_t)v;
            c->digits++;
            return GW_CHUNKED_MORE;
        }
        if (c->digits == 0 || (ch != ';' && ch != '\r'))
            return GW_CHUNKED_BAD;
        if (c->remaining > max - have)
            return GW_CHUNKED_TOO_LARGE;
        c->state = ch == ';' ? ST_EXT : ST_SIZE_LF;
        return GW_CHUNKED_MORE;
    }
    case ST_EXT:
        if (ch == '\r')
            c->state = ST_SIZE_LF;
        return GW_CHUNKED_MORE;
    case ST_SIZE_LF:
        if (ch != '\n')
            return GW_CHUNKED_BAD;
        c->state = c->remaining ? ST_DATA : ST_TRAILER;
        return GW_CHUNKED_MORE;
    case ST_DATA_CR:
        c->state = ST_DATA_LF;
        return ch == '\r' ? GW_CHUNKED_MORE : GW_CHUNKED_BAD;
    case ST_DATA_LF:
        c->state = ST_SIZE;
        c->digits = 0;
        return ch == '\n' ? GW_CHUNKED_MORE : GW_CHUNKED_BAD;
    case ST_TRAILER:
        c->state = ch == '\r' ? ST_FINAL_LF : ST_TRAILER_LINE;
        return GW_CHUNKED_MORE;
    case ST_TRAILER_LINE:
        if (ch == '\n')
            c->state = ST_TRAILER;
        return GW_CHUNKED_MORE;
    case ST_FINAL_LF:
        return ch == '\n' ? GW_CHUNKED_DONE : GW_CHUNKED_BAD;
    default:
        return GW_CHUNKED_BAD;
    }
}

gw_chunked_result gw_chunked_feed(gw_chunked_t *c, const char *in, size_t len, tb_buf_t *out,
                                  size_t max, size_t *used)
{
    size_t i = 0;
    while (i < len) {
        if (c->state == ST_DATA) {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            tb_buf_append(out, in + i, n);
            c->remaining -= n;
            i += n;
            if (c->remaining == 0)
                c->state = ST_DATA_CR;
            continue;
        }
        gw_chunked_result r = step(c, in[i++], out->len, max);
        if (r != GW_CHUNKED_MORE) {
            *used = i;
            return r;
        }
    }
    *used = i;
    return GW_CHUNKED_MORE;
}
