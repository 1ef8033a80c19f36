/* Allocators that abort on failure, and the always-on assert. Memory use is
 * bounded by configured limits, so a failed allocation is a fatal condition
 * rather than an error path every caller would have to handle untested. */
#include "config.h"
#include <kontalk/base.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kt_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "kontalkd: assertion failed at %s:%d: %s\n", file, line, expr);
    abort();
}

static KT_NORETURN void oom(size_t size)
{
    fprintf(stderr, "kontalkd: out of memory allocating %zu bytes\n", size);
    abort();
}

void *kt_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *kt_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *kt_realloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q)
        oom(size);
    return q;
}

char *kt_strdup(const char *s)
{
    return kt_strndup(s, strlen(s));
}

char *kt_strndup(const char *s, size_t n)
{
    char *p = kt_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
