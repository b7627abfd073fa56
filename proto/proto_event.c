/*
 * Event lifetime. An event has one owner until it is shared; after that it is
 * immutable and freed by whichever thread drops the last reference.
 */
#include <stdlib.h>

#include "tb/event.h"

tb_event_t *tb_event_ref(tb_event_t *ev)
{
    atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
    return ev;
}

void tb_event_unref(tb_event_t *ev)
{
    if (!ev)
        return;
    /* acq_rel: the freeing thread must see every write made before other unrefs. */
    if (atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) == 1) {
        free(ev->payload);
        free(ev);
    }
}
