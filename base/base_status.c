/*
 * Status names and the assertion failure path. Both are used from every
 * thread and touch no shared state.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tb/base.h"

const char *tb_status_str(tb_status st)
{
    switch (st) {
    case TB_OK:
        return "ok";
    case TB_EINVAL:
        return "einval";
    case TB_ENOTFOUND:
        return "enotfound";
    case TB_ECONFLICT:
        return "econflict";
    case TB_EIO:
        return "eio";
    case TB_ETIMEDOUT:
        return "etimedout";
    case TB_ECLOSED:
        return "eclosed";
    case TB_EFULL:
        return "efull";
    case TB_EAUTH:
        return "eauth";
    case TB_EBACKEND:
        return "ebackend";
    }
    return "unknown";
}

void tb_assert_fail(const char *expr, const char *file, int line)
{
    /* stdio is acceptable here: the process is about to abort. */
    fprintf(stderr, "assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}
