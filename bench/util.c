/* util.c: allocation that aborts on failure, a byte buffer, the clock and messages.
 *
 * The bench is a standalone program (it must not link libktcore), so it carries these few
 * helpers itself.  Out of memory ends the run: a benchmark has no degraded mode worth reporting.
 */
#include "config.h"

#include "bench.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *bench_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        bench_die("out of memory");
    return p;
}

void *bench_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        bench_die("out of memory");
    return p;
}

void *bench_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        bench_die("out of memory");
    return p;
}

char *bench_strdup(const char *s)
{
    size_t l = strlen(s) + 1;
    return memcpy(bench_malloc(l), s, l);
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kontalk-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void bench_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kontalk-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void bbuf_reserve(struct bbuf *b, size_t n)
{
    if (b->off + b->len + n <= b->cap)
        return;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->len + n <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
        cap *= 2;
    b->data = bench_realloc(b->data, cap);
    b->cap = cap;
}

void bbuf_add(struct bbuf *b, const void *p, size_t n)
{
    bbuf_reserve(b, n);
    memcpy(b->data + b->off + b->len, p, n);
    b->len += n;
}

void bbuf_printf(struct bbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    bbuf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->off + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void bbuf_consume(struct bbuf *b, size_t n)
{
    if (n >= b->len) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}

void bbuf_free(struct bbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
