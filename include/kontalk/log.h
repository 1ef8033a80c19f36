/* Leveled logging to stderr or a file. Thread-safe; one line per call.
 * Never log passwords, keys, tokens or message bodies. */
#ifndef KONTALK_LOG_H
#define KONTALK_LOG_H

#include "base.h"

enum kt_log_level {
    KT_LOG_ERROR,
    KT_LOG_WARN,
    KT_LOG_NOTICE,
    KT_LOG_INFO,
    KT_LOG_DEBUG,
};

/* Current threshold; messages above it are not formatted at all. */
KT_API extern enum kt_log_level kt_log_threshold;

/* prefix: NULL, or a per-connection tag such as "c2s[42] alice@kontalk.net/phone". */
KT_API void kt_log_write(enum kt_log_level level, const char *prefix, const char *fmt, ...)
    KT_PRINTF(3, 4);

#define kt_log(level, ...) \
    do { \
        if ((level) <= kt_log_threshold) \
            kt_log_write((level), NULL, __VA_ARGS__); \
    } while (0)
#define kt_log_prefix(level, prefix, ...) \
    do { \
        if ((level) <= kt_log_threshold) \
            kt_log_write((level), (prefix), __VA_ARGS__); \
    } while (0)

/* "error", "warn", "notice", "info", "debug" -> level; -1 if unknown. */
KT_API int kt_log_level_parse(const char *name);
/* path NULL = stderr. Returns -1 (and keeps the old target) if it cannot open. */
KT_API int kt_log_open(const char *path);
/* SIGHUP: reopen the same path (log rotation). */
KT_API int kt_log_reopen(void);

#endif
