/* A minimal TAP producer for unit tests: ok(cond, fmt...) prints one test
 * line; done_testing() prints the plan and returns the exit status.
 * Header-only so each test is one file. */
#ifndef KT_TEST_TAP_H
#define KT_TEST_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_count;
static int tap_failed;

__attribute__((format(printf, 4, 5), unused)) static int tap_ok(int cond, const char *file, int line,
                                                         const char *fmt, ...)
{
    va_list ap;
    tap_count++;
    printf("%sok %d - ", cond ? "" : "not ", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        tap_failed++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout);
    return cond;
}
#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, name) \
    do { \
        long long g_ = (long long)(got), w_ = (long long)(want); \
        if (!ok(g_ == w_, "%s", name)) \
            printf("#   got %lld, want %lld\n", g_, w_); \
    } while (0)
#define is_str(got, want, name) \
    do { \
        const char *g_ = (got), *w_ = (want); \
        int eq_ = (g_ == NULL && w_ == NULL) || (g_ && w_ && strcmp(g_, w_) == 0); \
        if (!ok(eq_, "%s", name)) \
            printf("#   got '%s', want '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)
#define diag(...) \
    do { \
        printf("# "); \
        printf(__VA_ARGS__); \
        printf("\n"); \
    } while (0)

static inline int done_testing(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

#endif
