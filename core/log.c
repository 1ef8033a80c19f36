/* Logging: one formatted line per call, written with a single write() so
 * lines from different threads never interleave. */
#include "config.h"
#include <kontalk/log.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum kt_log_level kt_log_threshold = KT_LOG_INFO;

static int log_fd = 2;
static char *log_path;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"error", "warn", "notice", "info", "debug"};

int kt_log_level_parse(const char *name)
{
    for (unsigned i = 0; i < KT_ARRAY_SIZE(level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void kt_log_write(enum kt_log_level level, const char *prefix, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s%s", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], prefix ? prefix : "",
                     prefix ? ": " : "");
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    va_end(ap);
    if (n > 0)
        len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;
    if (len >= sizeof(line) - 1)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    pthread_mutex_lock(&log_lock);
    ssize_t KT_UNUSED w = write(log_fd, line, len);
    pthread_mutex_unlock(&log_lock);
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

int kt_log_open(const char *path)
{
    int fd = 2;
    if (path && *path) {
        fd = open_path(path);
        if (fd < 0)
            return -1;
    }
    pthread_mutex_lock(&log_lock);
    if (log_fd != 2)
        close(log_fd);
    log_fd = fd;
    free(log_path);
    log_path = path && *path ? kt_strdup(path) : NULL;
    pthread_mutex_unlock(&log_lock);
    return 0;
}

int kt_log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    int rc = 0;
    if (log_path) {
        int fd = open_path(log_path);
        if (fd >= 0) {
            close(log_fd);
            log_fd = fd;
        } else {
            rc = -1;
        }
    }
    pthread_mutex_unlock(&log_lock);
    return rc;
}
