/*
 * SSE round trip: an event name and data taken from arbitrary bytes are
 * formatted into a frame, which the test reader must parse back to the same
 * name and to the data with its line breaks normalised to LF.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse_reader.h"
#include "tb/alloc.h"
#include "tb/buf.h"
#include "tb/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Data with CRLF and CR replaced by LF: what an SSE reader reconstructs. */
static char *normalise(const char *s, size_t len, size_t *out_len)
{
    char *out = tb_xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r') {
            out[n++] = '\n';
            if (i + 1 < len && s[i + 1] == '\n')
                i++;
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size)
{
    /* First byte: length of the event name; the rest splits into name and data. */
    if (size == 0)
        return 0;
    size_t name_len = bytes[0] % 32;
    if (name_len > size - 1)
        name_len = size - 1;
    char *name = tb_xstrndup((const char *)bytes + 1, name_len);
    const char *data = (const char *)bytes + 1 + name_len;
    size_t data_len = size - 1 - name_len;

    tb_buf_t out;
    tb_buf_init(&out);
    /* The name is a C string: an embedded NUL ends it, as it would for any caller. */
    bool has_name = name[0] != '\0';
    tb_status st = tb_sse_format_event(&out, "0000000000000001-1", has_name ? name : NULL, data,
                                       data_len);
    bool name_ok = !strpbrk(name, "\r\n");
    bool data_ok = !memchr(data, '\0', data_len);
    if ((st == TB_OK) != (name_ok && data_ok))
        abort();
    if (st != TB_OK) {
        if (out.len != 0)
            abort(); /* nothing half-written */
        goto done;
    }
    tb_sse_frame_t frame;
    if (tb_sse_read_frame(out.data, out.len, &frame) != out.len)
        abort();
    size_t want_len;
    char *want = normalise(data, data_len, &want_len);
    if (frame.data_len != want_len || memcmp(frame.data, want, want_len) != 0)
        abort();
    if (has_name && (!frame.event || strcmp(frame.event, name) != 0))
        abort();
    if (!frame.id || strcmp(frame.id, "0000000000000001-1") != 0)
        abort();
    free(want);
    tb_sse_frame_cleanup(&frame);
done:
    tb_buf_cleanup(&out);
    free(name);
    return 0;
}
