/* A growable byte buffer, always NUL-terminated for convenience. */
#ifndef KONTALK_BUF_H
#define KONTALK_BUF_H

#include "base.h"
#include <stdarg.h>

struct kt_buf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len;
    size_t cap;
};

KT_API void kt_buf_reserve(struct kt_buf *b, size_t extra);
KT_API void kt_buf_append(struct kt_buf *b, const void *data, size_t len);
KT_API void kt_buf_puts(struct kt_buf *b, const char *s);
KT_API void kt_buf_printf(struct kt_buf *b, const char *fmt, ...) KT_PRINTF(2, 3);
/* Appends s with & < > " ' escaped as XML requires (attribute-safe). */
KT_API void kt_buf_append_xml_escaped(struct kt_buf *b, const char *s, size_t len);
/* Drops the first n bytes (after a partial write). */
KT_API void kt_buf_consume(struct kt_buf *b, size_t n);
KT_API void kt_buf_reset(struct kt_buf *b); /* len = 0, keeps memory */
KT_API void kt_buf_free(struct kt_buf *b);  /* releases memory, b is reusable */
/* Transfers ownership of the data to the caller (NUL-terminated, never NULL). */
KT_API char *kt_buf_steal(struct kt_buf *b, size_t *len_r);

#endif
