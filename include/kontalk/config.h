/* Settings tables. Core and modules declare their settings as rows
 * (key, type, offset into a struct, default, range); the core validates a
 * libconfig group against the table, reports unknown keys, wrong types and
 * out-of-range values with file:line, and fills the struct. String values
 * point into the loaded configuration (or the static default) and stay valid
 * for the life of the process: the caller keeps the config_t alive. */
#ifndef KONTALK_CONFIG_H
#define KONTALK_CONFIG_H

#include "base.h"
#include <libconfig.h>

enum kt_setting_type {
    KT_SETTING_END = 0,
    KT_SETTING_INT,    /* long long field */
    KT_SETTING_BOOL,   /* bool field */
    KT_SETTING_STRING, /* const char * field */
    KT_SETTING_ENUM,   /* int field: index into choices */
    KT_SETTING_GROUP,  /* nested group whose rows fill the same struct */
    KT_SETTING_RAW,    /* any value; the module reads it from the group itself */
};

struct kt_setting {
    const char *key;
    enum kt_setting_type type;
    size_t offset;
    long long def_int; /* INT, BOOL, ENUM (index) */
    const char *def_str;
    long long min, max;           /* INT range, inclusive */
    const char *const *choices;   /* ENUM: NULL-terminated names */
    const struct kt_setting *sub; /* GROUP */
    const char *help;             /* one line for the settings reference */
};

#define KT_SET_INT(k, ctype, field, def, lo, hi, h) \
    { .key = (k), .type = KT_SETTING_INT, .offset = offsetof(ctype, field), .def_int = (def), \
      .min = (lo), .max = (hi), .help = (h) }
#define KT_SET_BOOL(k, ctype, field, def, h) \
    { .key = (k), .type = KT_SETTING_BOOL, .offset = offsetof(ctype, field), .def_int = (def), \
      .help = (h) }
#define KT_SET_STR(k, ctype, field, def, h) \
    { .key = (k), .type = KT_SETTING_STRING, .offset = offsetof(ctype, field), .def_str = (def), \
      .help = (h) }
#define KT_SET_ENUM(k, ctype, field, def, names, h) \
    { .key = (k), .type = KT_SETTING_ENUM, .offset = offsetof(ctype, field), .def_int = (def), \
      .choices = (names), .help = (h) }
#define KT_SET_GROUP(k, table, h) { .key = (k), .type = KT_SETTING_GROUP, .sub = (table), .help = (h) }
#define KT_SET_RAW(k, h) { .key = (k), .type = KT_SETTING_RAW, .help = (h) }
#define KT_SET_END { .key = NULL, .type = KT_SETTING_END }

/* Fills conf with every default of table. */
KT_API void kt_settings_defaults(const struct kt_setting *table, void *conf);

/* Validates group (may be NULL: defaults only) against table and fills conf
 * (defaults first). path is the group's name for messages ("c2s").
 * On error, writes "file:line: path.key: reason" into err (size errlen)
 * and returns -1. */
KT_API int kt_settings_apply(const struct kt_setting *table, const config_setting_t *group,
                             const char *path, void *conf, char *err, size_t errlen);

/* "file:line" of a setting, for module-side messages about RAW values. */
KT_API void kt_setting_where(const config_setting_t *s, char *buf, size_t len);

/* Reads path into cfg (already config_init()ed), with @include resolved
 * relative to the file's directory. On error writes "file:line: text" (or
 * "path: cannot read: reason") into err and returns -1. */
KT_API int kt_config_load(config_t *cfg, const char *path, char *err, size_t errlen);

struct kt_buf;
/* Appends a markdown list of every row of table (keys prefixed by path,
 * groups recursed): type, default, range or choices, help. */
KT_API void kt_settings_describe(const struct kt_setting *table, const char *path,
                                 struct kt_buf *out);

#endif
