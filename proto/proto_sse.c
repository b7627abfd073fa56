/*
 * SSE framing (CONTRACT §3). Every formatter either appends a complete frame
 * or leaves the buffer as it was, so a caller never ships half a frame.
 */
#include <string.h>

#include "proto_int.h"
#include "tb/sse.h"

const char *tb_sse_event_name(const char *topic)
{
    const char *tail = tb__proto_after_two_tokens(topic);
    return tail ? tail : topic;
}

/* A field value must stay on its line: no CR, LF (or NUL, which would cut it short). */
static bool single_line(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

/* Commits or rolls back what was appended since mark. */
static tb_status finish(tb_buf_t *out, size_t mark)
{
    tb_status st = tb_buf_status(out);
    if (st)
        tb_buf_truncate(out, mark);
    return st;
}

static void append_data_lines(tb_buf_t *out, const char *data, size_t len)
{
    size_t start = 0;
    for (;;) {
        size_t end = start;
        while (end < len && data[end] != '\n' && data[end] != '\r')
            end++;
        tb_buf_append(out, "data: ", 6);
        tb_buf_append(out, data + start, end - start);
        tb_buf_append(out, "\n", 1);
        if (end == len)
            return;
        /* CRLF is one line break; a lone CR or LF is one too. */
        if (data[end] == '\r' && end + 1 < len && data[end + 1] == '\n')
            end++;
        start = end + 1;
    }
}

tb_status tb_sse_format_event(tb_buf_t *out, const char *id, const char *event, const char *data,
                              size_t data_len)
{
    if (tb_buf_status(out))
        return TB_EFULL;
    if ((id && !single_line(id)) || (event && (!*event || !single_line(event))))
        return TB_EINVAL;
    /* An embedded NUL would end the frame early for a C reader: refuse it. */
    if (data_len && memchr(data, '\0', data_len))
        return TB_EINVAL;
    size_t mark = out->len;
    if (id) {
        tb_buf_append(out, "id: ", 4);
        tb_buf_append_str(out, id);
        tb_buf_append(out, "\n", 1);
    }
    if (event) {
        tb_buf_append(out, "event: ", 7);
        tb_buf_append_str(out, event);
        tb_buf_append(out, "\n", 1);
    }
    append_data_lines(out, data, data_len);
    tb_buf_append(out, "\n", 1);
    return finish(out, mark);
}

tb_status tb_sse_format_comment(tb_buf_t *out, const char *text)
{
    if (tb_buf_status(out))
        return TB_EFULL;
    if (!single_line(text))
        return TB_EINVAL;
    size_t mark = out->len;
    tb_buf_append(out, ": ", 2);
    tb_buf_append_str(out, text);
    tb_buf_append(out, "\n\n", 2);
    return finish(out, mark);
}

tb_status tb_sse_format_retry(tb_buf_t *out, unsigned ms)
{
    if (tb_buf_status(out))
        return TB_EFULL;
    size_t mark = out->len;
    tb_buf_appendf(out, "retry: %u\n\n", ms);
    return finish(out, mark);
}

tb_status tb_sse_event_data(tb_buf_t *out, const tb_event_t *ev)
{
    if (tb_buf_status(out))
        return TB_EFULL;
    /* topic and type use only characters that need no JSON escaping (topic grammar). */
    size_t mark = out->len;
    tb_buf_appendf(out, "{\"topic\":\"%s\",\"type\":\"%s\",\"ts\":%.6f,\"payload\":", ev->topic,
                   ev->type, ev->ts);
    tb_buf_append(out, ev->payload, ev->payload_len);
    tb_buf_append(out, "}", 1);
    return finish(out, mark);
}
