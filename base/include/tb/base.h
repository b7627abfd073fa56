/*
 * Shared vocabulary of every module: the one status enum, invariant checks
 * and small structural macros. Nothing here allocates or does I/O.
 */
#ifndef TB_BASE_H
#define TB_BASE_H

#include <stddef.h>

/** Result of every fallible call. TB_OK is zero so `if (st)` reads as "failed". */
typedef enum tb_status {
    TB_OK = 0,
    TB_EINVAL,    /* input violates a documented rule */
    TB_ENOTFOUND, /* the named thing does not exist */
    TB_ECONFLICT, /* state or version does not allow the request */
    TB_EIO,       /* an operating-system call failed */
    TB_ETIMEDOUT, /* a deadline passed */
    TB_ECLOSED,   /* the object is shut down */
    TB_EFULL,     /* a bounded buffer or queue has no room */
    TB_EAUTH,     /* credentials missing or rejected */
    TB_EBACKEND,  /* a third-party backend reported an error (logged there) */
} tb_status;

/** Stable lower-case name of a status ("ok", "einval", ...); never NULL. Any thread. */
const char *tb_status_str(tb_status st);

#define TB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define tb_container_of(ptr, type, member)                                                        \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/** Aborts with file and line when an invariant breaks. Stays on in every build. */
#define TB_ASSERT(cond)                                                                           \
    ((cond) ? (void)0 : tb_assert_fail(#cond, __FILE__, __LINE__))

_Noreturn void tb_assert_fail(const char *expr, const char *file, int line);

#endif
