/* The module loader: dlopen() each module listed in `modules`, check its
 * ABI, order by `requires`, validate its settings group, and drive the
 * init/start/stop/free lifecycle. Main thread only. */
#ifndef KT_CORE_MODULE_H
#define KT_CORE_MODULE_H

#include <kontalk/core.h>
#include <kontalk/module.h>

#include <libconfig.h>

struct kt_modules;

/* Loads the modules named in cfg's `modules` list from dir, in dependency
 * order, and validates each module's settings group. Also rejects top-level
 * groups that belong to no loaded module (known_groups: NULL-terminated
 * names the core owns). Returns NULL with a message in err. */
struct kt_modules *kt_modules_load(const config_t *cfg, const char *dir,
                                   const char *const *known_groups, char *err, size_t errlen);
/* init in order; on failure, frees what was initialised and returns -1. */
int kt_modules_init(struct kt_modules *mods, struct kt_core *core);
int kt_modules_start(struct kt_modules *mods);
void kt_modules_stop(struct kt_modules *mods);   /* reverse order */
void kt_modules_free(struct kt_modules **mods); /* free() in reverse order, then unload */
/* "c2s sm net" in load order (owned by mods). */
const char *kt_modules_names(const struct kt_modules *mods);
unsigned kt_modules_count(const struct kt_modules *mods);
const struct kt_module *kt_modules_get(const struct kt_modules *mods, unsigned i);

#endif
