/* The core's settings tables, the config file loader shared by kontalkd and
 * kontalkctl, and the kt_core services modules call (loop choice,
 * connection gauge, status lines). */
#include "config.h"
#include "core/core_conf.h"

#include <kontalk/job.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/module.h>
#include <kontalk/router.h>
#include <kontalk/session.h>

#include <string.h>

static const char *const log_level_names[] = {"error", "warn", "notice", "info", "debug", NULL};

static const struct kt_setting core_settings[] = {
    KT_SET_STR("host", struct kt_core_conf, host, "localhost", "this node's host name"),
    KT_SET_STR("network", struct kt_core_conf, network, "kontalk.test",
               "the network domain every user belongs to (user@network)"),
    KT_SET_INT("io_threads", struct kt_core_conf, io_threads, 2, 1, 64,
               "I/O threads (epoll loops); connections are pinned to one"),
    KT_SET_INT("workers", struct kt_core_conf, workers, 4, 1, 256,
               "worker threads for blocking work, each with one database connection"),
    KT_SET_STR("modules_dir", struct kt_core_conf, modules_dir, KT_MODULES_DIR,
               "directory holding mod_<name>.so"),
    KT_SET_ENUM("log_level", struct kt_core_conf, log_level, KT_LOG_INFO, log_level_names,
                "least important level logged"),
    KT_SET_STR("log_file", struct kt_core_conf, log_file, "",
               "log file (reopened on SIGHUP); empty = stderr"),
    KT_SET_STR("admin_socket", struct kt_core_conf, admin_socket, "/run/kontalk/admin.sock",
               "unix socket kontalkctl status talks to"),
    KT_SET_INT("scram_iterations", struct kt_core_conf, scram_iterations, 4096, 4096, 10000000,
               "PBKDF2 iterations for new password accounts"),
    KT_SET_END,
};

static const struct kt_setting tls_settings[] = {
    KT_SET_STR("certificate", struct kt_tls_settings, certificate, "",
               "PEM certificate chain of this node (empty: no TLS)"),
    KT_SET_STR("key", struct kt_tls_settings, key, "",
               "PEM private key (empty: read it from the certificate file)"),
    KT_SET_END,
};

static const struct kt_setting db_settings[] = {
    KT_SET_STR("host", struct kt_db_conf, host, "localhost", "MariaDB host (when socket is empty)"),
    KT_SET_INT("port", struct kt_db_conf, port, 3306, 1, 65535, "MariaDB TCP port"),
    KT_SET_STR("socket", struct kt_db_conf, socket, "", "MariaDB unix socket (preferred when set)"),
    KT_SET_STR("name", struct kt_db_conf, name, "kontalk", "database name"),
    KT_SET_STR("user", struct kt_db_conf, user, "kontalk", "database user"),
    KT_SET_STR("password", struct kt_db_conf, password, "", "database password"),
    KT_SET_INT("connect_timeout", struct kt_db_conf, connect_timeout, 5, 1, 300,
               "seconds to wait for a connection"),
    KT_SET_END,
};

struct group_def {
    const char *name;
    const struct kt_setting *table;
    size_t offset;
};

static const struct group_def core_groups[] = {
    {"core", core_settings, offsetof(struct kt_server_conf, core)},
    {"tls", tls_settings, offsetof(struct kt_server_conf, tls)},
    {"database", db_settings, offsetof(struct kt_server_conf, db)},
};

int kt_server_conf_load(struct kt_server_conf *sc, const char *path, char *err, size_t errlen)
{
    memset(sc, 0, sizeof(*sc));
    config_init(&sc->cfg);
    sc->path = path;
    if (kt_config_load(&sc->cfg, path, err, errlen) < 0)
        return -1;
    for (unsigned i = 0; i < KT_ARRAY_SIZE(core_groups); i++) {
        const struct group_def *g = &core_groups[i];
        const config_setting_t *s = config_lookup(&sc->cfg, g->name);
        if (s && !config_setting_is_group(s)) {
            char where[256];
            kt_setting_where(s, where, sizeof(where));
            snprintf(err, errlen, "%s: %s: expected a group", where, g->name);
            return -1;
        }
        if (kt_settings_apply(g->table, s, g->name, (char *)sc + g->offset, err, errlen) < 0)
            return -1;
    }
    return 0;
}

void kt_server_conf_free(struct kt_server_conf *sc)
{
    config_destroy(&sc->cfg);
}

void kt_server_conf_describe(struct kt_buf *out)
{
    for (unsigned i = 0; i < KT_ARRAY_SIZE(core_groups); i++) {
        kt_buf_printf(out, "%s### %s\n\n", i ? "\n" : "", core_groups[i].name);
        kt_settings_describe(core_groups[i].table, core_groups[i].name, out);
    }
}

struct kt_loop *kt_core_next_loop(struct kt_core *core)
{
    struct kt_server *srv = kt_server_of(core);
    unsigned i = atomic_fetch_add_explicit(&srv->next_loop, 1, memory_order_relaxed);
    return core->loops[i % core->nloops];
}

void kt_core_conn_opened(struct kt_core *core)
{
    atomic_fetch_add_explicit(&kt_server_of(core)->connections, 1, memory_order_relaxed);
}

void kt_core_conn_closed(struct kt_core *core)
{
    atomic_fetch_sub_explicit(&kt_server_of(core)->connections, 1, memory_order_relaxed);
}

void kt_core_set_external_auth(struct kt_core *core, kt_external_auth_fn fn, void *data)
{
    struct kt_server *srv = kt_server_of(core);
    kt_assert(srv->external_auth == NULL); /* one verifier per server */
    srv->external_auth = fn;
    srv->external_auth_data = data;
}

kt_external_auth_fn kt_core_external_auth(struct kt_core *core, void **data_r)
{
    struct kt_server *srv = kt_server_of(core);
    *data_r = srv->external_auth_data;
    return srv->external_auth;
}

void kt_core_set_register(struct kt_core *core, kt_register_fn fn, void *data)
{
    struct kt_server *srv = kt_server_of(core);
    kt_assert(srv->register_fn == NULL); /* one registration service per server */
    srv->register_fn = fn;
    srv->register_data = data;
}

kt_register_fn kt_core_register(struct kt_core *core, void **data_r)
{
    struct kt_server *srv = kt_server_of(core);
    *data_r = srv->register_data;
    return srv->register_fn;
}

void kt_core_status_add(struct kt_core *core, kt_status_fn fn, void *data)
{
    struct kt_server *srv = kt_server_of(core);
    srv->status = kt_realloc(srv->status, (srv->nstatus + 1) * sizeof(*srv->status));
    srv->status[srv->nstatus++] = (struct kt_status_entry){fn, data};
}

void kt_server_status(struct kt_server *srv, struct kt_buf *out)
{
    struct kt_router_stats rs;
    long up = (long)(time(NULL) - srv->started);
    kt_router_stats(srv->core.router, &rs);
    kt_buf_printf(out, "version: %s\n", PACKAGE_VERSION);
    kt_buf_printf(out, "module ABI: %d\n", KT_MODULE_ABI);
    kt_buf_printf(out, "host: %s\nnetwork: %s\n", srv->core.host, srv->core.network);
    kt_buf_printf(out, "uptime: %lds\n", up);
    kt_buf_printf(out, "connections: %u\n",
                  atomic_load_explicit(&srv->connections, memory_order_relaxed));
    kt_buf_printf(out, "sessions: %u\n", kt_sessions_count(srv->core.sessions));
    kt_buf_printf(out, "modules: %s\n", srv->module_names ? srv->module_names : "");
    kt_buf_printf(out, "io threads: %u\n", srv->core.nloops);
    kt_buf_printf(out, "workers: %lld (pending jobs: %u)\n", srv->conf->core.workers,
                  kt_workers_pending(srv->core.workers));
    kt_buf_printf(out, "database: %s (reconnects: %llu)\n", kt_db_is_up() ? "up" : "down",
                  kt_db_reconnects());
    kt_buf_printf(out, "stanzas: dispatched %llu, bounced %llu, dropped %llu\n", rs.dispatched,
                  rs.bounced, rs.dropped);
    for (unsigned i = 0; i < srv->nstatus; i++)
        srv->status[i].fn(out, srv->status[i].data);
}
