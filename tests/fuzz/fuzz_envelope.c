/*
 * Envelope decoding of arbitrary bytes on a fixed subject. A decoded event
 * must re-encode, decode again to the same fields, and have a payload that is
 * one line of JSON (it goes into an SSE data line as is).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tb/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *subject = "topology.t1.mutation.applied";
    tb_event_t *ev = NULL;
    tb_envelope_error why;
    if (tb_envelope_decode(subject, (const char *)data, size, 1.0, &ev, &why) != TB_OK) {
        if (ev || why == TB_ENVELOPE_OK)
            abort();
        return 0;
    }
    if (strcmp(ev->topic, subject) != 0 || memchr(ev->payload, '\n', ev->payload_len) ||
        memchr(ev->payload, '\r', ev->payload_len))
        abort();
    if (!ev->id[0]) /* encoding needs an id; a foreign event may lack one */
        memset(ev->id, 'a', TB_EVENT_ID_LEN);
    tb_buf_t out;
    tb_buf_init(&out);
    if (tb_envelope_encode(ev, &out) != TB_OK)
        abort();
    tb_event_t *back = NULL;
    if (tb_envelope_decode(subject, out.data, out.len, 0, &back, &why) != TB_OK)
        abort();
    if (strcmp(back->payload, ev->payload) != 0 || strcmp(back->type, ev->type) != 0 ||
        strcmp(back->id, ev->id) != 0)
        abort();
    tb_event_unref(back);
    tb_buf_cleanup(&out);
    tb_event_unref(ev);
    return 0;
}
