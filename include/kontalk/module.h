/* The module ABI. A module is a shared object exporting one
 *     const struct kt_module kt_module_<name>
 * built with KT_MODULE(name) = { ... }. The loader checks abi and size
 * before calling anything, orders modules by `requires`, then:
 *   init   (main thread, in dependency order): validate nothing more than the
 *          settings table did, register hooks and routes, allocate state;
 *   start  (main thread, I/O threads running): listen, connect, arm timers;
 *   stop   (main thread, reverse order): stop accepting, close streams;
 *   free   (main thread, reverse order, threads joined): undo init.
 * Any function pointer may be NULL. init/start return 0 or -1 (logged by
 * the module; the server then exits 1). */
#ifndef KONTALK_MODULE_H
#define KONTALK_MODULE_H

#include "base.h"
#include "config.h"

/* Bump on any incompatible change under include/kontalk/. */
#define KT_MODULE_ABI 1

struct kt_core;

struct kt_module {
    unsigned abi;                      /* KT_MODULE_ABI the module was built with */
    size_t size;                       /* sizeof(struct kt_module): catches header skew */
    const char *name;                  /* "c2s": config group and log tag */
    const char *const *requires;       /* NULL-terminated module names, or NULL */
    const struct kt_setting *settings; /* NULL if none */
    size_t conf_size;                  /* bytes of the struct the settings fill */
    int (*init)(struct kt_core *core, const void *conf, const config_setting_t *group,
                void **state_r);
    int (*start)(void *state);
    void (*stop)(void *state);
    void (*free)(void *state);
};

#define KT_MODULE(n) \
    KT_API extern const struct kt_module kt_module_##n; \
    KT_API const struct kt_module kt_module_##n

/* Designated-initialiser helper for the two header fields. */
#define KT_MODULE_HEADER .abi = KT_MODULE_ABI, .size = sizeof(struct kt_module)

#endif
