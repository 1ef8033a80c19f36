/* Basic definitions every kontalkd file uses: symbol visibility, attributes,
 * an always-on assert and allocators that abort instead of returning NULL
 * (memory is bounded by configured limits, so out-of-memory is fatal). */
#ifndef KONTALK_BASE_H
#define KONTALK_BASE_H

#include <stdbool.h>
#include <stddef.h>

/* Symbols modules may call. The core is built with -fvisibility=hidden. */
#define KT_API __attribute__((visibility("default")))
#define KT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define KT_NORETURN __attribute__((noreturn))
#define KT_UNUSED __attribute__((unused))

#define KT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Prints file:line and the expression, then aborts. Never compiled out. */
KT_API KT_NORETURN void kt_assert_fail(const char *expr, const char *file, int line);
#define kt_assert(expr) \
    do { \
        if (!(expr)) \
            kt_assert_fail(#expr, __FILE__, __LINE__); \
    } while (0)

KT_API void *kt_malloc(size_t size);
KT_API void *kt_calloc(size_t n, size_t size);
KT_API void *kt_realloc(void *p, size_t size);
KT_API char *kt_strdup(const char *s);
KT_API char *kt_strndup(const char *s, size_t n);
/* kt_new(struct foo) -> zeroed struct foo * */
#define kt_new(type) ((type *)kt_calloc(1, sizeof(type)))

#endif
