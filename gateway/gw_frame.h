/*
 * An SSE frame formatted once and shared by every session that sends it
 * (DESIGN "Fan-out"): immutable after creation, reference-counted with C11
 * atomics because loops on several threads hold references to one frame.
 *
 * A frame also records the topology version its event carries, so streams
 * can prove they continue the client's state (CONTRACT §3 "Resume"): every
 * change event (`mutation.*`, `status`) has a `version` field; a
 * `mutation.applied` announces a new version (exactly one per version), the
 * others repeat the version the topology had when they committed. Its `id:`
 * cursor carries the version a client that received every event of the
 * topology in order has after this one.
 */
#ifndef TB_GW_FRAME_H
#define TB_GW_FRAME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tb/cursor.h"
#include "tb/event.h"
#include "tb/topic.h"

typedef struct gw_frame {
    atomic_uint refs;
    uint64_t seq;    /* bus sequence of the event (0: none) */
    int64_t version; /* the topology version the event carries (TB_CURSOR_NO_VERSION: none) */
    bool applied;    /* a mutation.applied event: version is the one it makes */
    char topology[TB_TOPOLOGY_ID_BUF_SIZE]; /* the event's topology ("" for other topics) */
    size_t len;
    char data[]; /* len bytes of complete SSE frame text */
} gw_frame_t;

/**
 * A new frame with one reference holding a copy of len bytes, without a version or a
 * topology. Any thread.
 */
gw_frame_t *gw_frame_new(const char *data, size_t len, uint64_t seq);
/** Adds a reference; returns f. Any thread. */
gw_frame_t *gw_frame_ref(gw_frame_t *f);
/** Drops a reference; the last frees. Accepts NULL. Any thread. */
void gw_frame_unref(gw_frame_t *f);

/**
 * Formats bus event ev (borrowed) as a new frame: `id:` cursor, derived
 * name, data; the payload is parsed once here for its version, and the
 * topic for its topology. *reached is
 * the version a client that received every earlier event of the topology in
 * order has (TB_CURSOR_NO_VERSION: unknown); it is advanced past ev (to the
 * larger of it and ev's version) and stamped into the cursor. The caller owns
 * *reached and calls this in the order the frames reach clients. NULL if the
 * event cannot be framed (*reached unchanged). Any thread.
 */
gw_frame_t *gw_frame_format(uint64_t epoch, const tb_event_t *ev, int64_t *reached);

/**
 * The continuity rule of a stream at version *version (known, >= 0): true if
 * f may follow it, and *version becomes the version after f. An unversioned
 * frame continues; an applied of version w continues if w <= v (a duplicate,
 * harmless) or w == v + 1; another versioned frame continues if w <= v. False
 * means a version was never sent (a gap): *version is unchanged. With an
 * unknown *version the frame is adopted: true, and *version becomes its
 * version. Pure; any thread.
 */
bool gw_frame_continues(const gw_frame_t *f, int64_t *version);

#endif
