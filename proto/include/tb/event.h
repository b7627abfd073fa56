/*
 * tb_event_t: one bus event, immutable once shared. It is the only
 * reference-counted type; N SSE sessions on several threads may hold
 * references to one event. The envelope codec (tb/envelope.h) builds them.
 */
#ifndef TB_EVENT_H
#define TB_EVENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tb/topic.h"

#define TB_EVENT_ID_LEN 32 /* lowercase hex digits */

typedef struct tb_event {
    atomic_uint refs;
    char id[TB_EVENT_ID_LEN + 1]; /* "" when a foreign publisher sent none */
    char topic[TB_TOPIC_BUF_SIZE]; /* the transport's subject, never the envelope's field */
    char type[TB_TOPIC_BUF_SIZE];
    double ts;          /* epoch seconds */
    char *payload;      /* compact JSON object text: no CR or LF, NUL-terminated */
    size_t payload_len; /* bytes in payload, excluding the NUL */
    uint64_t seq;       /* bus sequence; set by the bus before the event is shared, 0 if none */
} tb_event_t;

/** Adds a reference and returns ev. Any thread. */
tb_event_t *tb_event_ref(tb_event_t *ev);

/** Drops a reference; the last one frees the event. Accepts NULL. Any thread. */
void tb_event_unref(tb_event_t *ev);

#endif
