/* The core's own settings (groups core, tls, database) and the private
 * server object behind the public struct kt_core. Shared by kontalkd and
 * kontalkctl, which read the same kontalk.conf. */
#ifndef KT_CORE_CORE_CONF_H
#define KT_CORE_CORE_CONF_H

#include <kontalk/config.h>
#include <kontalk/core.h>
#include <kontalk/db.h>

#include <libconfig.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

struct kt_core_conf {
    const char *host;
    const char *network;
    long long io_threads;
    long long workers;
    const char *modules_dir;
    int log_level;
    const char *log_file;
    const char *admin_socket;
    long long scram_iterations;
};

struct kt_tls_settings {
    const char *certificate;
    const char *key;
};

/* Everything the core reads from kontalk.conf. Strings point into cfg. */
struct kt_server_conf {
    config_t cfg;
    const char *path;
    struct kt_core_conf core;
    struct kt_tls_settings tls;
    struct kt_db_conf db;
};

/* Reads path and validates the core groups (core, tls, database). Top-level
 * keys other than these and "modules" are left to the module loader.
 * On error: message "file:line: ..." in err, -1. Call kt_server_conf_free
 * in both cases. */
int kt_server_conf_load(struct kt_server_conf *sc, const char *path, char *err, size_t errlen);
void kt_server_conf_free(struct kt_server_conf *sc);

/* Writes the settings reference of the core groups (markdown). */
void kt_server_conf_describe(struct kt_buf *out);

struct kt_status_entry {
    kt_status_fn fn;
    void *data;
};

/* The running server: the public kt_core first, so a struct kt_core *
 * handed to modules converts back (kt_server_of). */
struct kt_server {
    struct kt_core core;
    struct kt_server_conf *conf;
    time_t started;
    atomic_uint connections;
    atomic_uint next_loop;
    struct kt_status_entry *status;
    unsigned nstatus;
    const char *module_names; /* "c2s sm ..." for status */
    kt_external_auth_fn external_auth;
    void *external_auth_data;
    kt_register_fn register_fn;
    void *register_data;
};

static inline struct kt_server *kt_server_of(struct kt_core *core)
{
    return (struct kt_server *)core;
}

/* Appends the core's status lines (version, uptime, ...) and every
 * module's. Runs on an I/O thread; does not block. */
void kt_server_status(struct kt_server *srv, struct kt_buf *out);

#endif
