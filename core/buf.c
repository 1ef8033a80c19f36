/* Growable byte buffer. Growth doubles, so appends are amortised O(1). */
#include "config.h"
#include <kontalk/buf.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kt_buf_reserve(struct kt_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = kt_realloc(b->data, cap);
    b->cap = cap;
}

void kt_buf_append(struct kt_buf *b, const void *data, size_t len)
{
    kt_buf_reserve(b, len);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void kt_buf_puts(struct kt_buf *b, const char *s)
{
    kt_buf_append(b, s, strlen(s));
}

void kt_buf_printf(struct kt_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    kt_assert(n >= 0);
    if ((size_t)n < sizeof(small)) {
        kt_buf_append(b, small, (size_t)n);
        return;
    }
    kt_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kt_buf_append_xml_escaped(struct kt_buf *b, const char *s, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        default: continue;
        }
        kt_buf_append(b, s + start, i - start);
        kt_buf_puts(b, rep);
        start = i + 1;
    }
    kt_buf_append(b, s + start, len - start);
}

void kt_buf_consume(struct kt_buf *b, size_t n)
{
    kt_assert(n <= b->len);
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    if (b->data)
        b->data[b->len] = '\0';
}

void kt_buf_reset(struct kt_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void kt_buf_free(struct kt_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *kt_buf_steal(struct kt_buf *b, size_t *len_r)
{
    if (!b->data) {
        kt_buf_reserve(b, 0);
        b->data[0] = '\0';
    }
    char *p = b->data;
    if (len_r)
        *len_r = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
