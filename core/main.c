/* kontalkd: argv, start-up order, signals, shutdown order.
 *
 * Start-up: read and validate the config (core groups, then modules and
 * their groups); -t stops here. Then logging, the database check (schema
 * version), TLS, router, workers and loops; modules init (hooks and routes),
 * the router freezes, loop threads start, modules start, the admin socket
 * opens. Signals are blocked in every thread and taken synchronously by
 * the main thread with sigwaitinfo(), so no handler runs in async context.
 * Shutdown: modules stop (reverse order), the worker pool drains its queue
 * (done callbacks still reach the running loops), the loops stop and join,
 * modules are freed, then the pool (modules may hold job queues). */
#include "config.h"
#include "core/admin.h"
#include "core/core_conf.h"
#include "core/module.h"

#include <kontalk/job.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/router.h>
#include <kontalk/session.h>
#include <kontalk/tls.h>
#include <kontalk/xmlstream.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONFIG KT_SYSCONFDIR "/kontalk.conf"

static const char *const core_groups[] = {"core", "tls", "database", NULL};

static void usage(FILE *out)
{
    fprintf(out, "usage: kontalkd [-c FILE] [-t] [-f] [--version]\n"
                 "  -c, --config FILE  configuration (default " DEFAULT_CONFIG ")\n"
                 "  -t, --test         check the configuration and modules, then exit\n"
                 "  -f, --foreground   do not daemonise\n"
                 "      --version      print version and module ABI\n"
                 "      --settings     print the settings reference of the core and of the\n"
                 "                     modules the configuration loads, then exit\n");
}

/* A stanza queued for a session that ended before it was written: route it
 * again (another resource, offline storage, or a bounce), never drop it. */
static void reroute(struct kt_stanza *st, void *router)
{
    kt_router_dispatch(router, st);
}

static void *loop_thread(void *arg)
{
    kt_loop_run(arg);
    return NULL;
}

/* The settings reference (docs/configuration.md is generated from this). */
static void print_settings(const struct kt_modules *mods)
{
    struct kt_buf out = {0};
    kt_server_conf_describe(&out);
    for (unsigned i = 0; i < kt_modules_count(mods); i++) {
        const struct kt_module *m = kt_modules_get(mods, i);
        kt_buf_printf(&out, "\n### %s\n\n", m->name);
        if (m->settings)
            kt_settings_describe(m->settings, m->name, &out);
        else
            kt_buf_puts(&out, "No settings.\n");
    }
    fwrite(out.data, 1, out.len, stdout);
    kt_buf_free(&out);
}

/* tc must outlive the returned object (reloads read it again). */
static struct kt_tls *load_tls(const struct kt_server_conf *sc, struct kt_tls_conf *tc, char *err,
                               size_t errlen)
{
    if (!*sc->tls.certificate)
        return NULL;
    *tc = (struct kt_tls_conf){
        .certificate = sc->tls.certificate,
        .key = *sc->tls.key ? sc->tls.key : sc->tls.certificate,
        .request_client_cert = true,
    };
    return kt_tls_new(tc, err, errlen);
}

/* The schema must be exactly the one this binary was built for. */
static int check_database(const struct kt_db_conf *dbc, char *err, size_t errlen)
{
    struct kt_db *db = kt_db_new(dbc);
    int rc = -1;
    if (kt_db_connect(db, err, errlen) < 0)
        goto out;
    int have = kt_db_schema_version(db), want = kt_db_schema_latest();
    if (have < 0) {
        snprintf(err, errlen, "cannot read the schema version: %s", kt_db_error(db));
    } else if (have != want) {
        snprintf(err, errlen,
                 "database schema is at version %d, this kontalkd needs %d: run kontalkctl db "
                 "upgrade",
                 have, want);
    } else {
        rc = 0;
    }
out:
    kt_db_free(&db);
    return rc;
}

/* Without a log file, stderr stays open: a supervisor may be collecting it. */
static int daemonise(bool keep_stderr)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -1;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        if (!keep_stderr)
            dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    return chdir("/");
}

/* Waits for signals; returns when asked to stop. */
static void wait_for_signals(struct kt_server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        if (sig < 0)
            continue;
        if (sig == SIGHUP) {
            char err[512];
            if (kt_log_reopen() < 0)
                kt_log(KT_LOG_WARN, "SIGHUP: cannot reopen the log file");
            if (srv->core.tls && kt_tls_reload(srv->core.tls, err, sizeof(err)) < 0)
                kt_log(KT_LOG_ERROR, "SIGHUP: keeping the old certificates: %s", err);
            kt_log(KT_LOG_NOTICE, "reloaded log file and TLS certificates");
            continue;
        }
        kt_log(KT_LOG_NOTICE, "stopping (%s)", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"foreground", no_argument, NULL, 'f'},   {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {"settings", no_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    bool test = false, foreground = false, settings = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:tfh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': path = optarg; break;
        case 't': test = true; break;
        case 'f': foreground = true; break;
        case 'V': printf("kontalkd %s (module ABI %d)\n", PACKAGE_VERSION, KT_MODULE_ABI); return 0;
        case 'h': usage(stdout); return 0;
        case 'S': settings = true; break;
        default: usage(stderr); return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }

    char err[1024];
    int status = 1;
    struct kt_server_conf sc;
    struct kt_tls_conf tls_conf;
    struct kt_server srv = {0};
    struct kt_modules *mods = NULL;
    struct kt_admin *admin = NULL;
    pthread_t *threads = NULL;
    unsigned nthreads = 0;

    kt_xmlstream_global_init();
    if (kt_server_conf_load(&sc, path, err, sizeof(err)) < 0) {
        fprintf(stderr, "kontalkd: %s\n", err);
        goto out_conf;
    }
    mods = kt_modules_load(&sc.cfg, sc.core.modules_dir, core_groups, err, sizeof(err));
    if (!mods) {
        fprintf(stderr, "kontalkd: %s\n", err);
        goto out_conf;
    }
    if (settings) {
        print_settings(mods);
        status = 0;
        goto out;
    }
    srv.core.tls = load_tls(&sc, &tls_conf, err, sizeof(err));
    if (*sc.tls.certificate && !srv.core.tls) {
        fprintf(stderr, "kontalkd: %s\n", err);
        goto out;
    }
    if (test) {
        printf("configuration ok: %s\n", path);
        status = 0;
        goto out;
    }

    kt_log_threshold = (enum kt_log_level)sc.core.log_level;
    if (kt_log_open(sc.core.log_file) < 0) {
        fprintf(stderr, "kontalkd: cannot open log file %s: %s\n", sc.core.log_file,
                strerror(errno));
        goto out;
    }
    if (check_database(&sc.db, err, sizeof(err)) < 0) {
        kt_log(KT_LOG_ERROR, "%s", err);
        goto out;
    }
    srv.conf = &sc;
    srv.started = time(NULL);
    srv.module_names = kt_modules_names(mods);
    admin = kt_admin_new(&srv, sc.core.admin_socket, err, sizeof(err));
    if (!admin) {
        kt_log(KT_LOG_ERROR, "%s", err);
        goto out;
    }
    if (!foreground && daemonise(!*sc.core.log_file) < 0) {
        kt_log(KT_LOG_ERROR, "cannot daemonise: %s", strerror(errno));
        goto out;
    }

    /* Every thread created from here on inherits the blocked set. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    srv.core.host = sc.core.host;
    srv.core.network = sc.core.network;
    srv.core.config = &sc.cfg;
    srv.core.router = kt_router_new();
    srv.core.sessions = kt_sessions_new();
    kt_sessions_set_undeliverable(srv.core.sessions, reroute, srv.core.router);
    srv.core.workers = kt_workers_new((unsigned)sc.core.workers, &sc.db);
    srv.core.nloops = (unsigned)sc.core.io_threads;
    srv.core.loops = kt_calloc(srv.core.nloops, sizeof(*srv.core.loops));
    for (unsigned i = 0; i < srv.core.nloops; i++)
        srv.core.loops[i] = kt_loop_new(i);

    if (kt_modules_init(mods, &srv.core) < 0)
        goto stop;
    kt_router_freeze(srv.core.router);

    threads = kt_calloc(srv.core.nloops, sizeof(*threads));
    for (; nthreads < srv.core.nloops; nthreads++)
        if (pthread_create(&threads[nthreads], NULL, loop_thread, srv.core.loops[nthreads]) != 0) {
            kt_log(KT_LOG_ERROR, "cannot start I/O thread %u", nthreads);
            goto stop;
        }
    if (kt_modules_start(mods) < 0)
        goto stop;
    kt_admin_start(admin, srv.core.loops[0]);
    kt_log(KT_LOG_NOTICE,
           "kontalkd %s started: host %s, network %s, %u I/O threads, %lld workers, modules: %s",
           PACKAGE_VERSION, srv.core.host, srv.core.network, srv.core.nloops, sc.core.workers,
           kt_modules_names(mods));
    wait_for_signals(&srv);
    status = 0;

stop:
    kt_modules_stop(mods);
    /* Drain queued work while the loops still run its completions. With the
     * database away, queued jobs would wait forever: give up on them. */
    if (!kt_db_is_up())
        kt_db_stop();
    kt_workers_stop(srv.core.workers);
    for (unsigned i = 0; i < nthreads; i++)
        kt_loop_stop(srv.core.loops[i]);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    kt_admin_free(&admin);
    kt_modules_free(&mods); /* modules free their job queues before the pool goes */
    kt_workers_free(&srv.core.workers);
    for (unsigned i = 0; i < srv.core.nloops; i++)
        kt_loop_free(&srv.core.loops[i]);
    free(srv.core.loops);
    free(threads);
    free(srv.status);
    kt_sessions_free(&srv.core.sessions);
    kt_router_free(&srv.core.router);
    if (status == 0)
        kt_log(KT_LOG_NOTICE, "stopped");
out:
    kt_admin_free(&admin);
    kt_modules_free(&mods);
    kt_tls_free(&srv.core.tls);
out_conf:
    kt_server_conf_free(&sc);
    return status;
}
