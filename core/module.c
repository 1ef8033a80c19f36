/* Module loader. A module is <modules_dir>/mod_<name>.so exporting
 * `const struct kt_module kt_module_<name>`. The loader reads abi before
 * anything else (a module built against another ABI may have another
 * struct layout), then size and name, then sorts the list so that every
 * module comes after the modules it requires (stable: otherwise the order
 * of the `modules` list). Settings are validated here, so `kontalkd -t`
 * checks module groups too. Modules are dlopen()ed RTLD_LOCAL: they see
 * the core's KT_API symbols (kontalkd is linked -export-dynamic) but not
 * each other's. */
#include "config.h"
#include "core/module.h"

#include <kontalk/buf.h>
#include <kontalk/log.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loaded {
    const struct kt_module *mod;
    void *handle;
    void *conf;
    void *state;
    bool inited;
    bool started;
};

struct kt_modules {
    struct loaded *items;
    unsigned n;
    char *names;
};

static bool valid_module_name(const char *name)
{
    if (!*name || strlen(name) > 64)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static void unload_all(struct kt_modules *mods)
{
    for (unsigned i = 0; i < mods->n; i++) {
        free(mods->items[i].conf);
        /* Keeping the objects mapped until exit would keep symbols for leak
         * reports; KT_KEEP_MODULES=1 does that (used under valgrind). */
        if (mods->items[i].handle && !getenv("KT_KEEP_MODULES"))
            dlclose(mods->items[i].handle);
    }
    free(mods->items);
    free(mods->names);
    free(mods);
}

static int load_one(struct loaded *l, const char *dir, const char *name, const char *where,
                    char *err, size_t errlen)
{
    char path[4096], sym[128];
    snprintf(path, sizeof(path), "%s/mod_%s.so", dir, name);
    snprintf(sym, sizeof(sym), "kt_module_%s", name);
    l->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!l->handle) {
        snprintf(err, errlen, "%s: module '%s': cannot load %s: %s", where, name, path,
                 dlerror());
        return -1;
    }
    const struct kt_module *m = dlsym(l->handle, sym);
    if (!m) {
        snprintf(err, errlen, "%s: module '%s': %s does not export %s", where, name, path, sym);
        return -1;
    }
    if (m->abi != KT_MODULE_ABI) {
        snprintf(err, errlen,
                 "%s: module '%s': built for module ABI %u, this kontalkd has ABI %d: "
                 "rebuild the module against this kontalkd's headers",
                 where, name, m->abi, KT_MODULE_ABI);
        return -1;
    }
    if (m->size != sizeof(struct kt_module)) {
        snprintf(err, errlen,
                 "%s: module '%s': struct kt_module is %zu bytes, expected %zu (header skew): "
                 "rebuild the module",
                 where, name, m->size, sizeof(struct kt_module));
        return -1;
    }
    if (!m->name || strcmp(m->name, name) != 0) {
        snprintf(err, errlen, "%s: module '%s': its descriptor names it '%s'", where, name,
                 m->name ? m->name : "(null)");
        return -1;
    }
    l->mod = m;
    return 0;
}

static int find(const struct kt_modules *mods, const char *name)
{
    for (unsigned i = 0; i < mods->n; i++)
        if (mods->items[i].mod && strcmp(mods->items[i].mod->name, name) == 0)
            return (int)i;
    return -1;
}

/* Stable topological sort: repeatedly take the first module (in list order)
 * whose requirements are all placed. */
static int sort_by_requires(struct kt_modules *mods, char *err, size_t errlen)
{
    for (unsigned i = 0; i < mods->n; i++) {
        const struct kt_module *m = mods->items[i].mod;
        for (const char *const *r = m->requires; r && *r; r++)
            if (find(mods, *r) < 0) {
                snprintf(err, errlen, "module '%s' requires module '%s', which is not loaded",
                         m->name, *r);
                return -1;
            }
    }
    struct loaded *sorted = kt_calloc(mods->n, sizeof(*sorted));
    bool *placed = kt_calloc(mods->n, sizeof(*placed));
    unsigned done = 0;
    while (done < mods->n) {
        bool progress = false;
        for (unsigned i = 0; i < mods->n && !progress; i++) {
            if (placed[i])
                continue;
            bool ready = true;
            for (const char *const *r = mods->items[i].mod->requires; r && *r; r++)
                if (!placed[find(mods, *r)])
                    ready = false;
            if (ready) {
                sorted[done++] = mods->items[i];
                placed[i] = true;
                progress = true;
            }
        }
        if (!progress) {
            for (unsigned i = 0; i < mods->n; i++)
                if (!placed[i]) {
                    snprintf(err, errlen, "module '%s' is part of a dependency cycle",
                             mods->items[i].mod->name);
                    break;
                }
            free(sorted);
            free(placed);
            return -1;
        }
    }
    free(mods->items);
    mods->items = sorted;
    free(placed);
    return 0;
}

static int check_top_level(const config_t *cfg, const struct kt_modules *mods,
                           const char *const *known, char *err, size_t errlen)
{
    const config_setting_t *root = config_root_setting(cfg);
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        bool ok = strcmp(name, "modules") == 0 || find(mods, name) >= 0;
        for (const char *const *k = known; !ok && k && *k; k++)
            ok = strcmp(name, *k) == 0;
        if (!ok) {
            char where[256];
            kt_setting_where(s, where, sizeof(where));
            snprintf(err, errlen, "%s: %s: unknown setting (not a core group and no loaded "
                     "module has this name)", where, name);
            return -1;
        }
    }
    return 0;
}

struct kt_modules *kt_modules_load(const config_t *cfg, const char *dir,
                                   const char *const *known_groups, char *err, size_t errlen)
{
    struct kt_modules *mods = kt_new(struct kt_modules);
    const config_setting_t *list = config_lookup(cfg, "modules");
    char where[256] = "modules";
    if (list) {
        kt_setting_where(list, where, sizeof(where));
        if (!config_setting_is_array(list) && !config_setting_is_list(list)) {
            snprintf(err, errlen, "%s: modules: expected a list of module names", where);
            goto fail;
        }
        mods->n = (unsigned)config_setting_length(list);
    }
    mods->items = kt_calloc(mods->n ? mods->n : 1, sizeof(*mods->items));
    for (unsigned i = 0; i < mods->n; i++) {
        const char *name = config_setting_get_string_elem(list, (int)i);
        if (!name || !valid_module_name(name)) {
            snprintf(err, errlen, "%s: modules: element %u is not a module name", where, i + 1);
            goto fail;
        }
        if (find(mods, name) >= 0) {
            snprintf(err, errlen, "%s: modules: '%s' is listed twice", where, name);
            goto fail;
        }
        if (load_one(&mods->items[i], dir, name, where, err, errlen) < 0)
            goto fail;
    }
    if (sort_by_requires(mods, err, errlen) < 0)
        goto fail;
    if (check_top_level(cfg, mods, known_groups, err, errlen) < 0)
        goto fail;
    struct kt_buf names = {0};
    for (unsigned i = 0; i < mods->n; i++) {
        struct loaded *l = &mods->items[i];
        const config_setting_t *group = config_lookup(cfg, l->mod->name);
        if (group && !config_setting_is_group(group)) {
            kt_setting_where(group, where, sizeof(where));
            snprintf(err, errlen, "%s: %s: expected a group", where, l->mod->name);
            kt_buf_free(&names);
            goto fail;
        }
        if (l->mod->conf_size)
            l->conf = kt_calloc(1, l->mod->conf_size);
        if (l->mod->settings) {
            if (kt_settings_apply(l->mod->settings, group, l->mod->name, l->conf, err, errlen) <
                0) {
                kt_buf_free(&names);
                goto fail;
            }
        } else if (group && config_setting_length(group) > 0) {
            const config_setting_t *first = config_setting_get_elem(group, 0);
            kt_setting_where(first, where, sizeof(where));
            snprintf(err, errlen, "%s: %s.%s: unknown setting (module '%s' has no settings)",
                     where, l->mod->name, config_setting_name(first), l->mod->name);
            kt_buf_free(&names);
            goto fail;
        }
        kt_buf_printf(&names, "%s%s", i ? " " : "", l->mod->name);
    }
    mods->names = kt_buf_steal(&names, NULL);
    return mods;
fail:
    unload_all(mods);
    return NULL;
}

int kt_modules_init(struct kt_modules *mods, struct kt_core *core)
{
    for (unsigned i = 0; i < mods->n; i++) {
        struct loaded *l = &mods->items[i];
        if (l->mod->init && l->mod->init(core, l->conf, config_lookup(core->config, l->mod->name),
                                         &l->state) < 0) {
            kt_log(KT_LOG_ERROR, "module '%s' failed to initialise", l->mod->name);
            return -1;
        }
        l->inited = true;
    }
    return 0;
}

int kt_modules_start(struct kt_modules *mods)
{
    for (unsigned i = 0; i < mods->n; i++) {
        struct loaded *l = &mods->items[i];
        if (l->mod->start && l->mod->start(l->state) < 0) {
            kt_log(KT_LOG_ERROR, "module '%s' failed to start", l->mod->name);
            return -1;
        }
        l->started = true;
    }
    return 0;
}

void kt_modules_stop(struct kt_modules *mods)
{
    for (unsigned i = mods->n; i-- > 0;) {
        struct loaded *l = &mods->items[i];
        if (l->started && l->mod->stop)
            l->mod->stop(l->state);
        l->started = false;
    }
}

void kt_modules_free(struct kt_modules **modsp)
{
    struct kt_modules *mods = *modsp;
    if (!mods)
        return;
    kt_modules_stop(mods);
    for (unsigned i = mods->n; i-- > 0;) {
        struct loaded *l = &mods->items[i];
        if (l->inited && l->mod->free)
            l->mod->free(l->state);
        l->inited = false;
    }
    unload_all(mods);
    *modsp = NULL;
}

const char *kt_modules_names(const struct kt_modules *mods)
{
    return mods->names;
}

unsigned kt_modules_count(const struct kt_modules *mods)
{
    return mods->n;
}

const struct kt_module *kt_modules_get(const struct kt_modules *mods, unsigned i)
{
    return i < mods->n ? mods->items[i].mod : NULL;
}
