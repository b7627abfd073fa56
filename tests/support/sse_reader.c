/* WHATWG-style SSE parsing for tests (HTML Living Standard, "event stream interpretation"). */
#include <stdlib.h>
#include <string.h>

#include "sse_reader.h"
#include "tb/alloc.h"
#include "tb/buf.h"

static void set_field(char **slot, const char *value, size_t len)
{
    free(*slot);
    *slot = tb_xstrndup(value, len);
}

static void handle_line(const char *line, size_t len, tb_sse_frame_t *f, tb_buf_t *data,
                        int *has_data)
{
    if (len > 0 && line[0] == ':') {
        f->comments++;
        return;
    }
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = colon ? len - name_len - 1 : 0;
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        tb_buf_append(data, value, value_len);
        tb_buf_append(data, "\n", 1);
        *has_data = 1;
    } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        set_field(&f->event, value, value_len);
    } else if (name_len == 2 && memcmp(line, "id", 2) == 0) {
        set_field(&f->id, value, value_len);
    } else if (name_len == 5 && memcmp(line, "retry", 5) == 0) {
        long ms = 0;
        for (size_t i = 0; i < value_len; i++) {
            if (value[i] < '0' || value[i] > '9')
                return; /* the standard ignores a non-numeric retry */
            ms = ms * 10 + (value[i] - '0');
        }
        f->retry = ms;
    }
}

size_t tb_sse_read_frame(const char *text, size_t len, tb_sse_frame_t *out)
{
    memset(out, 0, sizeof *out);
    out->retry = -1;
    tb_buf_t data;
    tb_buf_init(&data);
    int has_data = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n' && text[end] != '\r')
            end++;
        if (end == len)
            break; /* incomplete line */
        size_t next = end + 1;
        if (text[end] == '\r' && next < len && text[next] == '\n')
            next++;
        if (end == pos) {
            if (has_data) {
                if (data.len > 0)
                    tb_buf_truncate(&data, data.len - 1); /* drop the last LF */
                out->data = tb_buf_steal(&data, &out->data_len);
                return next;
            }
            /* A blank line without data resets the event name (dispatch of nothing). */
            free(out->event);
            out->event = NULL;
        } else {
            handle_line(text + pos, end - pos, out, &data, &has_data);
        }
        pos = next;
    }
    tb_buf_cleanup(&data);
    tb_sse_frame_cleanup(out);
    return 0;
}

void tb_sse_frame_cleanup(tb_sse_frame_t *frame)
{
    free(frame->id);
    free(frame->event);
    free(frame->data);
    frame->id = frame->event = frame->data = NULL;
}
