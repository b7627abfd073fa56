/*
 * The log sink. Its level and fd are the only mutable statics besides the bus
 * singleton; they are set once at startup before threads exist and read with
 * relaxed atomics afterwards. Each line is formatted into a stack buffer and
 * written with a single write() so concurrent lines never interleave.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tb/log.h"

enum { LOG_LINE_MAX = 2048 };

static atomic_int log_level = TB_LOG_INFO;
static atomic_int log_fd = 2;

static const char *const level_names[] = {"ERR", "WARN", "NOTICE", "INFO", "DEBUG"};

tb_status tb_log_level_parse(const char *name, tb_log_level *out)
{
    static const struct {
        const char *name;
        tb_log_level level;
    } names[] = {
        {"err", TB_LOG_ERR},       {"error", TB_LOG_ERR},   {"warn", TB_LOG_WARN},
        {"warning", TB_LOG_WARN},  {"notice", TB_LOG_NOTICE}, {"info", TB_LOG_INFO},
        {"debug", TB_LOG_DEBUG},
    };
    for (size_t i = 0; i < TB_ARRAY_LEN(names); i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].level;
            return TB_OK;
        }
    }
    return TB_EINVAL;
}

void tb_log_set_level(tb_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

void tb_log_set_fd(int fd)
{
    atomic_store_explicit(&log_fd, fd, memory_order_relaxed);
}

bool tb_log_enabled(tb_log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void tb_log(tb_log_level level, const char *component, const char *fmt, ...)
{
    if (!tb_log_enabled(level))
        return;
    char line[LOG_LINE_MAX];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    int head = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, now.tv_nsec / 1000000, level_names[level], component);
    if (head < 0 || (size_t)head >= sizeof line)
        return;
    va_list ap;
    va_start(ap, fmt);
    int body = vsnprintf(line + head, sizeof line - (size_t)head - 1, fmt, ap);
    va_end(ap);
    if (body < 0)
        return;
    size_t len = (size_t)head + (size_t)body;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep room for the newline */
    for (size_t i = (size_t)head; i < len; i++) {
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    }
    line[len++] = '\n';
    ssize_t n = write(atomic_load_explicit(&log_fd, memory_order_relaxed), line, len);
    (void)n; /* a failing log sink has nowhere to report to */
}
