/*
 * A minimal SSE reader following the WHATWG event-stream parsing rules, used
 * by tests to check that what the formatter writes reads back as intended.
 */
#ifndef TB_TEST_SSE_READER_H
#define TB_TEST_SSE_READER_H

#include <stddef.h>

typedef struct tb_sse_frame {
    char *id;    /* new string, or NULL if the frame had no id field */
    char *event; /* new string, or NULL if none */
    char *data;  /* new string: data lines joined with LF */
    size_t data_len;
    int comments; /* comment lines seen before this frame was dispatched */
    long retry;   /* last retry value seen, -1 if none */
} tb_sse_frame_t;

/**
 * Reads the first dispatched frame from len bytes of text. Returns the number
 * of bytes consumed, or 0 if no complete frame is present.
 */
size_t tb_sse_read_frame(const char *text, size_t len, tb_sse_frame_t *out);

/** Frees the strings of a frame. */
void tb_sse_frame_cleanup(tb_sse_frame_t *frame);

#endif
