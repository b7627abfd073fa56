/* Shared SSE frames; see gw_frame.h. */
#include <stdlib.h>
#include <string.h>

#include "gw_frame.h"
#include "tb/alloc.h"

gw_frame_t *gw_frame_new(const char *data, size_t len, uint64_t seq)
{
    gw_frame_t *f = tb_xmalloc(sizeof *f + len);
    atomic_init(&f->refs, 1);
    f->seq = seq;
    f->version = 0;
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
