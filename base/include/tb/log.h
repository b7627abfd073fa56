/*
 * The process log sink: one line per call, written with one write() so lines
 * from different threads never interleave. Secrets never go through here.
 */
#ifndef TB_LOG_H
#define TB_LOG_H

#include <stdbool.h>

#include "tb/base.h"

typedef enum tb_log_level {
    TB_LOG_ERR = 0,
    TB_LOG_WARN,
    TB_LOG_NOTICE,
    TB_LOG_INFO,
    TB_LOG_DEBUG,
} tb_log_level;

/** Parses "err", "warn", "notice", "info" or "debug" (also "error", "warning"). */
tb_status tb_log_level_parse(const char *name, tb_log_level *out);
/** Sets the most verbose level that is written. Call before starting threads. */
void tb_log_set_level(tb_log_level level);
/** Sends log lines to fd (default 2, stderr). Call before starting threads. */
void tb_log_set_fd(int fd);
/** True if a message at level would be written. Any thread. */
bool tb_log_enabled(tb_log_level level);
/**
 * Writes "<UTC time> <LEVEL> <component>: <message>\n". Newlines inside the
 * message are replaced so a line stays a line. Any thread.
 */
void tb_log(tb_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
