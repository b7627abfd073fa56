/*
 * Server-Sent Events framing (CONTRACT §3): event frames, comments and the
 * retry field, written into a tb_buf_t (growable, or fixed over a caller
 * array). A call that fails leaves the buffer exactly as it was.
 */
#ifndef TB_SSE_H
#define TB_SSE_H

#include <stddef.h>

#include "tb/buf.h"
#include "tb/event.h"

/**
 * The SSE event name of a topic: the tail after the first two tokens
 * (`topology.t1.mutation.applied` → `mutation.applied`); a topic with fewer
 * than three tokens is returned unchanged. Borrowed pointer into topic.
 */
const char *tb_sse_event_name(const char *topic);

/**
 * Appends one frame: `id: <id>\n` (if id), `event: <event>\n` (if event),
 * one `data: ` line per line of data (LF, CR and CRLF all split), then a
 * blank line. TB_EINVAL if id or event contains CR, LF or NUL, or event is
 * empty; TB_EFULL if a fixed buffer is too small.
 */
tb_status tb_sse_format_event(tb_buf_t *out, const char *id, const char *event, const char *data,
                              size_t data_len);

/** Appends `: <text>\n\n`. TB_EINVAL if text contains CR, LF or NUL; TB_EFULL as above. */
tb_status tb_sse_format_comment(tb_buf_t *out, const char *text);

/** Appends `retry: <ms>\n\n`. TB_EFULL as above. */
tb_status tb_sse_format_retry(tb_buf_t *out, unsigned ms);

/**
 * Appends the SSE data object of a bus event, `{"topic","type","ts","payload"}`,
 * as one line of JSON (no frame around it).
 */
tb_status tb_sse_event_data(tb_buf_t *out, const tb_event_t *ev);

#endif
