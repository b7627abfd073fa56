/*
 * Shared SSE frames; see gw_frame.h. Formatting parses an event's payload
 * once for its topology version, wherever the frame is built (the bus
 * callback for live events, a worker for a replay); no stream parses it again.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "gw_frame.h"
#include "tb/alloc.h"
#include "tb/sse.h"

gw_frame_t *gw_frame_new(const char *data, size_t len, uint64_t seq)
{
    gw_frame_t *f = tb_xmalloc(sizeof *f + len);
    atomic_init(&f->refs, 1);
    f->seq = seq;
    f->version = TB_CURSOR_NO_VERSION;
    f->applied = false;
    f->topology[0] = '\0';
    f->len = len;
    memcpy(f->data, data, len);
    return f;
}

gw_frame_t *gw_frame_ref(gw_frame_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void gw_frame_unref(gw_frame_t *f)
{
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free(f);
}

/* Change events (CONTRACT §1) carry the topology version; anything else carries none. */
static bool is_change_event(const char *name)
{
    static const char *const names[] = {"mutation.applied", "mutation.enqueued",
                                        "mutation.applying", "mutation.failed", "status"};
    for (size_t i = 0; i < TB_ARRAY_LEN(names); i++) {
        if (strcmp(name, names[i]) == 0)
            return true;
    }
    return false;
}

/* The version ev's payload carries: a non-negative integer `version`, else none. */
static int64_t event_version(const char *name, const tb_event_t *ev)
{
    if (!is_change_event(name))
        return TB_CURSOR_NO_VERSION;
    json_t *p = json_loadb(ev->payload, ev->payload_len, 0, NULL);
    json_t *v = json_object_get(p, "version");
    int64_t version = json_is_integer(v) && json_integer_value(v) >= 0
                          ? (int64_t)json_integer_value(v)
                          : TB_CURSOR_NO_VERSION;
    json_decref(p);
    return version;
}

gw_frame_t *gw_frame_format(uint64_t epoch, const tb_event_t *ev, int64_t *reached)
{
    const char *name = tb_sse_event_name(ev->topic);
    int64_t version = event_version(name, ev);
    int64_t after = version > *reached ? version : *reached;
    char cursor[TB_CURSOR_BUF_SIZE];
    tb_cursor_format(&(tb_cursor_t){epoch, ev->seq, after}, cursor);
    tb_buf_t data, frame;
    tb_buf_init(&data);
    tb_buf_init(&frame);
    tb_sse_event_data(&data, ev);
    gw_frame_t *f = NULL;
    if (tb_sse_format_event(&frame, cursor, name, data.data, data.len) == TB_OK) {
        f = gw_frame_new(frame.data, frame.len, ev->seq);
        f->version = version;
        f->applied = version >= 0 && strcmp(name, "mutation.applied") == 0;
        if (tb_topic_topology_id(ev->topic, f->topology) != TB_OK)
            f->topology[0] = '\0';
        *reached = after;
    }
    tb_buf_cleanup(&data);
    tb_buf_cleanup(&frame);
    return f;
}

bool gw_frame_continues(const gw_frame_t *f, int64_t *version)
{
    int64_t w = f->version;
    if (w < 0)
        return true;
    if (*version < 0 || w > *version) {
        /* Only an applied may raise a known version, and only by one. */
        if (*version >= 0 && !(f->applied && w == *version + 1))
            return false;
        *version = w;
    }
    return true;
}
