/* Settings tables: validate a libconfig group against a table of rows
 * (key, type, offset, default, range) and fill a caller's struct.
 *
 * kt_settings_apply() first writes every default, then walks every child of
 * the group, so unknown keys are reported rather than silently ignored; each
 * message starts with "file:line: path.key:" taken from the libconfig tree
 * ("<config>" when the configuration was read from a string). GROUP rows
 * recurse into a nested group that fills the same struct; RAW rows accept
 * any value and leave it to the module.
 *
 * String values point into the libconfig tree (or to the table's static
 * default): the caller keeps the config_t alive for as long as the filled
 * struct is used, normally the life of the process.
 *
 * kt_config_load() reads a file with @include resolved relative to the
 * file's own directory; kt_settings_describe() renders a table as the
 * markdown settings reference. */
#include "config.h"
#include <kontalk/buf.h>
#include <kontalk/config.h>

#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *conf_field(void *conf, const struct kt_setting *row)
{
    return (char *)conf + row->offset;
}

void kt_settings_defaults(const struct kt_setting *table, void *conf)
{
    for (const struct kt_setting *row = table; row->key; row++) {
        switch (row->type) {
        case KT_SETTING_INT:
            *(long long *)conf_field(conf, row) = row->def_int;
            break;
        case KT_SETTING_BOOL:
            *(bool *)conf_field(conf, row) = row->def_int != 0;
            break;
        case KT_SETTING_STRING:
            *(const char **)conf_field(conf, row) = row->def_str;
            break;
        case KT_SETTING_ENUM:
            *(int *)conf_field(conf, row) = (int)row->def_int;
            break;
        case KT_SETTING_GROUP:
            kt_settings_defaults(row->sub, conf);
            break;
        case KT_SETTING_RAW:
        case KT_SETTING_END:
            break;
        }
    }
}

/* libconfig records an @include'd file by the name written in the
 * directive, although it opened it relative to the include directory: put
 * that directory back so the message names a file the user can open. The
 * main file (filenames[0]) is named as the caller gave it. */
static bool conf_needs_dir(const config_t *cfg, const char *file, bool is_main)
{
    return file && file[0] != '/' && !is_main && cfg && cfg->include_dir &&
           strcmp(cfg->include_dir, ".") != 0;
}

void kt_setting_where(const config_setting_t *s, char *buf, size_t len)
{
    const char *file = config_setting_source_file(s);
    const config_t *cfg = s->config;
    bool is_main = cfg && cfg->num_filenames > 0 && file == cfg->filenames[0];
    unsigned line = config_setting_source_line(s);

    if (conf_needs_dir(cfg, file, is_main))
        snprintf(buf, len, "%s/%s:%u", cfg->include_dir, file, line);
    else
        snprintf(buf, len, "%s:%u", file ? file : "<config>", line);
}

/* Writes "file:line: path.key: " followed by the formatted reason. key may
 * be NULL when the message is about the group itself. */
KT_PRINTF(6, 7)
static int conf_error(char *err, size_t errlen, const config_setting_t *s, const char *path,
                      const char *key, const char *fmt, ...)
{
    char where[4096 + 32];
    struct kt_buf b = {0};
    va_list ap;
    char reason[1024];

    if (!err || errlen == 0)
        return -1;
    kt_setting_where(s, where, sizeof(where));
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    kt_buf_printf(&b, "%s: ", where);
    if (path && *path)
        kt_buf_printf(&b, "%s%s%s: ", path, key ? "." : "", key ? key : "");
    else if (key)
        kt_buf_printf(&b, "%s: ", key);
    kt_buf_puts(&b, reason);
    snprintf(err, errlen, "%s", b.data);
    kt_buf_free(&b);
    return -1;
}

/* "a, b, c" of the keys of table. */
static void conf_list_keys(const struct kt_setting *table, struct kt_buf *out)
{
    for (const struct kt_setting *row = table; row->key; row++)
        kt_buf_printf(out, "%s%s", row == table ? "" : ", ", row->key);
    if (!table->key)
        kt_buf_puts(out, "none");
}

/* "\"x\", \"y\"" of an enum's choices. */
static void conf_list_choices(const char *const *choices, struct kt_buf *out)
{
    for (size_t i = 0; choices && choices[i]; i++)
        kt_buf_printf(out, "%s\"%s\"", i ? ", " : "", choices[i]);
}

static const struct kt_setting *conf_find(const struct kt_setting *table, const char *key)
{
    for (const struct kt_setting *row = table; row->key; row++) {
        if (strcmp(row->key, key) == 0)
            return row;
    }
    return NULL;
}

static int conf_apply_group(const struct kt_setting *table, const config_setting_t *group,
                            const char *path, void *conf, char *err, size_t errlen);

/* Checks one value s against its row and stores it. */
static int conf_apply_one(const struct kt_setting *row, const config_setting_t *s, const char *path,
                          void *conf, char *err, size_t errlen)
{
    int type = config_setting_type(s);
    struct kt_buf list = {0};
    int rc = 0;

    switch (row->type) {
    case KT_SETTING_INT: {
        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
            return conf_error(err, errlen, s, path, row->key, "expected an integer");
        long long v = config_setting_get_int64(s);
        if (v < row->min || v > row->max)
            return conf_error(err, errlen, s, path, row->key,
                              "value %lld out of range [%lld, %lld]", v, row->min, row->max);
        *(long long *)conf_field(conf, row) = v;
        return 0;
    }
    case KT_SETTING_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            return conf_error(err, errlen, s, path, row->key, "expected a boolean");
        *(bool *)conf_field(conf, row) = config_setting_get_bool(s) != 0;
        return 0;
    case KT_SETTING_STRING:
        if (type != CONFIG_TYPE_STRING)
            return conf_error(err, errlen, s, path, row->key, "expected a string");
        *(const char **)conf_field(conf, row) = config_setting_get_string(s);
        return 0;
    case KT_SETTING_ENUM: {
        conf_list_choices(row->choices, &list);
        if (type != CONFIG_TYPE_STRING) {
            rc = conf_error(err, errlen, s, path, row->key, "expected one of %s",
                            list.data ? list.data : "");
            goto out;
        }
        const char *v = config_setting_get_string(s);
        for (int i = 0; row->choices && row->choices[i]; i++) {
            if (strcmp(row->choices[i], v) == 0) {
                *(int *)conf_field(conf, row) = i;
                goto out;
            }
        }
        rc = conf_error(err, errlen, s, path, row->key, "invalid value \"%s\", expected one of %s",
                        v, list.data ? list.data : "");
        goto out;
    }
    case KT_SETTING_GROUP: {
        if (type != CONFIG_TYPE_GROUP)
            return conf_error(err, errlen, s, path, row->key, "expected a group");
        if (path && *path)
            kt_buf_printf(&list, "%s.%s", path, row->key);
        else
            kt_buf_puts(&list, row->key);
        rc = conf_apply_group(row->sub, s, list.data, conf, err, errlen);
        goto out;
    }
    case KT_SETTING_RAW:
        return 0;
    case KT_SETTING_END:
        break;
    }
    kt_assert(!"unknown setting type");
out:
    kt_buf_free(&list);
    return rc;
}

/* Walks every member of group; defaults are already in conf. */
static int conf_apply_group(const struct kt_setting *table, const config_setting_t *group,
                            const char *path, void *conf, char *err, size_t errlen)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *key = config_setting_name(s);
        const struct kt_setting *row = conf_find(table, key);

        if (!row) {
            struct kt_buf known = {0};
            conf_list_keys(table, &known);
            conf_error(err, errlen, s, path, key, "unknown setting (known: %s)", known.data);
            kt_buf_free(&known);
            return -1;
        }
        if (conf_apply_one(row, s, path, conf, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int kt_settings_apply(const struct kt_setting *table, const config_setting_t *group,
                      const char *path, void *conf, char *err, size_t errlen)
{
    kt_assert(table != NULL && conf != NULL);
    kt_settings_defaults(table, conf);
    if (!group)
        return 0;
    if (config_setting_type(group) != CONFIG_TYPE_GROUP)
        return conf_error(err, errlen, group, path, NULL, "expected a group");
    return conf_apply_group(table, group, path, conf, err, errlen);
}

int kt_config_load(config_t *cfg, const char *path, char *err, size_t errlen)
{
    char *copy;

    kt_assert(cfg != NULL && path != NULL);
    /* dirname() may modify its argument; "." for a bare file name. */
    copy = kt_strdup(path);
    config_set_include_dir(cfg, dirname(copy));
    free(copy);

    errno = 0;
    if (config_read_file(cfg, path) == CONFIG_TRUE)
        return 0;
    if (!err || errlen == 0)
        return -1;
    if (config_error_type(cfg) == CONFIG_ERR_FILE_IO) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot read: %s", path, e ? strerror(e) : "I/O error");
        return -1;
    }
    const char *file = config_error_file(cfg);
    const char *text = config_error_text(cfg);
    if (!file)
        file = path;
    if (conf_needs_dir(cfg, file, strcmp(file, path) == 0))
        snprintf(err, errlen, "%s/%s:%d: %s", cfg->include_dir, file, config_error_line(cfg),
                 text ? text : "syntax error");
    else
        snprintf(err, errlen, "%s:%d: %s", file, config_error_line(cfg),
                 text ? text : "syntax error");
    return -1;
}

static const char *conf_type_name(enum kt_setting_type t)
{
    switch (t) {
    case KT_SETTING_INT:
        return "integer";
    case KT_SETTING_BOOL:
        return "boolean";
    case KT_SETTING_STRING:
        return "string";
    case KT_SETTING_ENUM:
        return "enum";
    case KT_SETTING_GROUP:
        return "group";
    case KT_SETTING_RAW:
        return "any";
    case KT_SETTING_END:
        break;
    }
    return "?";
}

void kt_settings_describe(const struct kt_setting *table, const char *path, struct kt_buf *out)
{
    for (const struct kt_setting *row = table; row->key; row++) {
        struct kt_buf full = {0};
        if (path && *path)
            kt_buf_printf(&full, "%s.%s", path, row->key);
        else
            kt_buf_puts(&full, row->key);

        kt_buf_printf(out, "- `%s` (%s", full.data, conf_type_name(row->type));
        switch (row->type) {
        case KT_SETTING_INT:
            kt_buf_printf(out, ", default %lld, range [%lld, %lld]", row->def_int, row->min,
                          row->max);
            break;
        case KT_SETTING_BOOL:
            kt_buf_printf(out, ", default %s", row->def_int ? "true" : "false");
            break;
        case KT_SETTING_STRING:
            if (row->def_str)
                kt_buf_printf(out, ", default \"%s\"", row->def_str);
            else
                kt_buf_puts(out, ", no default");
            break;
        case KT_SETTING_ENUM:
            kt_buf_puts(out, ", one of ");
            conf_list_choices(row->choices, out);
            if (row->choices && row->def_int >= 0)
                kt_buf_printf(out, ", default \"%s\"", row->choices[row->def_int]);
            break;
        case KT_SETTING_GROUP:
        case KT_SETTING_RAW:
        case KT_SETTING_END:
            break;
        }
        kt_buf_printf(out, ")%s%s\n", row->help ? ": " : "", row->help ? row->help : "");
        if (row->type == KT_SETTING_GROUP)
            kt_settings_describe(row->sub, full.data, out);
        kt_buf_free(&full);
    }
}
