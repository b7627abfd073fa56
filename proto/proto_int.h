/* Helpers shared between proto's source files; not part of the public API. */
#ifndef TB_PROTO_INT_H
#define TB_PROTO_INT_H

/** Pointer just after the second dot of s, or NULL if s has fewer than three tokens. */
const char *tb__proto_after_two_tokens(const char *s);

#endif
