/*
 * An SSE frame formatted once and shared by every session that sends it
 * (DESIGN "Fan-out"): immutable after creation, reference-counted with C11
 * atomics because loops on several threads hold references to one frame.
 */
#ifndef TB_GW_FRAME_H
#define TB_GW_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_frame {
    atomic_uint refs;
    uint64_t seq; /* bus sequence of the event (0: none) */
    int64_t version; /* the topology version a mutation.applied event announces (0: none) */
    size_t len;
    char data[]; /* len bytes of complete SSE frame text */
} gw_frame_t;

/** A new frame with one reference holding a copy of len bytes. Any thread. */
gw_frame_t *gw_frame_new(const char *data, size_t len, uint64_t seq);
/** Adds a reference; returns f. Any thread. */
gw_frame_t *gw_frame_ref(gw_frame_t *f);
/** Drops a reference; the last frees. Accepts NULL. Any thread. */
void gw_frame_unref(gw_frame_t *f);

#endif
