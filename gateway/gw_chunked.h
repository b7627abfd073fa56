/*
 * A decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
 * libwebsockets 4.1.6 hands an h1 server the chunked bytes as they arrive,
 * framing included, and never reports the end of such a body, so the
 * gateway decodes them itself. Pure: no I/O, no allocation beyond the
 * caller's buffer.
 */
#ifndef TB_GW_CHUNKED_H
#define TB_GW_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#include "tb/buf.h"

typedef enum gw_chunked_result {
    GW_CHUNKED_MORE = 0,  /* everything consumed; the body continues */
    GW_CHUNKED_DONE,      /* the last chunk and the trailers ended the body */
    GW_CHUNKED_TOO_LARGE, /* the decoded body would exceed max */
    GW_CHUNKED_BAD,       /* malformed framing */
} gw_chunked_result;

typedef struct gw_chunked {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    unsigned digits;    /* hex digits of the current size line */
} gw_chunked_t;

/** Prepares a decoder for a new body. */
void gw_chunked_init(gw_chunked_t *c);

/**
 * Decodes len bytes of framed body, appending the payload to out, which may
 * hold at most max bytes. After DONE, *used says how many bytes of in
 * belonged to the body (the rest is not this body's). Any thread.
 */
gw_chunked_result gw_chunked_feed(gw_chunked_t *c, const char *in, size_t len, tb_buf_t *out,
                                  size_t max, size_t *used);

#endif
