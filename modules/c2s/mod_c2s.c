/* mod_c2s: client connections (RFC 6120). This file is the module: its
 * settings, the listeners (STARTTLS and direct TLS, XEP-0368), accepting and
 * spreading connections over the I/O threads, per-IP accounting, the route
 * that delivers to bound resources, and shutdown. The stream state machine
 * is in stream.c, SASL in auth.c and sasl.c.
 *
 * Listeners live on loop 0 (accept rates are low); each accepted fd is
 * posted to the next loop round-robin and stays there. Per-IP counters are
 * shared by all loops under one mutex, touched once per connect, close and
 * failed authentication. */
#include "config.h"
#include "modules/c2s/c2s.h"

#include <kontalk/log.h>
#include <kontalk/module.h>
#include <kontalk/router.h>

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *const conflict_names[] = {"replace", "refuse", NULL};

static const struct kt_setting c2s_settings[] = {
    KT_SET_RAW("listen", "listeners: ( { port = 5222; tls = \"starttls\"|\"direct\"; "
                         "address = \"::\"; } )"),
    KT_SET_INT("max_stanza_preauth", struct c2s_conf, max_stanza_preauth, 8192, 1024, 1048576,
               "bytes of one stanza before authentication (policy-violation beyond)"),
    KT_SET_INT("max_stanza", struct c2s_conf, max_stanza, 262144, 1024, 16777216,
               "bytes of one stanza after authentication"),
    KT_SET_INT("max_depth", struct c2s_conf, max_depth, 32, 4, 1024, "element nesting depth"),
    KT_SET_INT("max_attrs", struct c2s_conf, max_attrs, 64, 4, 4096, "attributes per element"),
    KT_SET_INT("max_children", struct c2s_conf, max_children, 1024, 4, 1000000,
               "child nodes per element"),
    KT_SET_INT("auth_timeout", struct c2s_conf, auth_timeout, 30, 1, 3600,
               "seconds to authenticate and bind before connection-timeout"),
    KT_SET_INT("max_connections", struct c2s_conf, max_connections, 100000, 1, 10000000,
               "client connections in total"),
    KT_SET_INT("max_connections_per_ip", struct c2s_conf, max_connections_per_ip, 100, 1, 1000000,
               "client connections from one address"),
    KT_SET_INT("auth_attempts", struct c2s_conf, auth_attempts, 3, 1, 5,
               "failed SASL attempts on one connection before policy-violation"),
    KT_SET_INT("auth_attempts_per_ip", struct c2s_conf, auth_attempts_per_ip, 20, 1, 1000000,
               "failed SASL attempts from one address per minute before temporary-auth-failure"),
    KT_SET_INT("max_output", struct c2s_conf, max_output, 1048576, 4096, 1073741824,
               "bytes queued to a client that does not read before the stream is closed"),
    KT_SET_INT("rate", struct c2s_conf, rate, 0, 0, 1073741824,
               "bytes per second read from one connection (0 = unlimited)"),
    KT_SET_ENUM("resource_conflict", struct c2s_conf, resource_conflict, C2S_CONFLICT_REPLACE,
                conflict_names, "binding a resource that is in use replaces or is refused"),
    KT_SET_BOOL("allow_plain", struct c2s_conf, allow_plain, true,
                "offer SASL PLAIN (only ever over TLS)"),
    KT_SET_BOOL("strict_channel_binding", struct c2s_conf, strict_channel_binding, false,
                "refuse SCRAM with the 'y' flag while -PLUS is offered (RFC 5802 §6); off by "
                "default because clients that only know tls-unique send 'y' on TLS 1.3"),
    KT_SET_INT("ping_interval", struct c2s_conf, ping_interval, 300, 0, 86400,
               "seconds of silence before the server pings a client (0 = never)"),
    KT_SET_INT("ping_timeout", struct c2s_conf, ping_timeout, 60, 1, 3600,
               "seconds to answer a ping before connection-timeout"),
    KT_SET_INT("sm_resume_timeout", struct c2s_conf, sm_resume_timeout, 300, 0, 86400,
               "seconds a lost XEP-0198 session stays resumable (0 = no resumption)"),
    KT_SET_INT("sm_max_unacked", struct c2s_conf, sm_max_unacked, 1000, 10, 1000000,
               "stanzas a client may leave unacknowledged before policy-violation"),
    KT_SET_INT("csi_max_presence", struct c2s_conf, csi_max_presence, 100, 1, 100000,
               "presences held for an inactive client (XEP-0352) before they are flushed"),
    KT_SET_INT("idle_release", struct c2s_conf, idle_release, 1, 0, 86400,
               "seconds a stream is quiet before its XML parser is freed (0 = never); an idle "
               "session then costs several KB less"),
    KT_SET_END,
};

/* --- per-IP accounting --- */

static struct c2s_ip **ip_slot(struct c2s *c2s, const char *ip)
{
    unsigned h = 0;
    for (const char *p = ip; *p; p++)
        h = h * 31 + (unsigned char)*p;
    struct c2s_ip **e = &c2s->ips[h % KT_ARRAY_SIZE(c2s->ips)];
    while (*e && strcmp((*e)->ip, ip) != 0)
        e = &(*e)->next;
    return e;
}

static struct c2s_ip *ip_get(struct c2s *c2s, const char *ip)
{
    struct c2s_ip **e = ip_slot(c2s, ip);
    if (!*e) {
        *e = kt_new(struct c2s_ip);
        snprintf((*e)->ip, sizeof((*e)->ip), "%s", ip);
    }
    return *e;
}

/* Forgets an address with nothing to remember, so the table stays small. */
static void ip_maybe_drop(struct c2s *c2s, const char *ip, uint64_t now)
{
    struct c2s_ip **e = ip_slot(c2s, ip);
    if (*e && (*e)->conns == 0 && ((*e)->failures == 0 || now - (*e)->window_start_ms > 60000)) {
        struct c2s_ip *gone = *e;
        *e = gone->next;
        free(gone);
    }
}

bool c2s_ip_conn_open(struct c2s *c2s, const char *ip)
{
    pthread_mutex_lock(&c2s->lock);
    struct c2s_ip *e = ip_get(c2s, ip);
    bool ok = e->conns < (unsigned long long)c2s->conf->max_connections_per_ip;
    if (ok)
        e->conns++;
    else
        ip_maybe_drop(c2s, ip, kt_now_ms());
    pthread_mutex_unlock(&c2s->lock);
    return ok;
}

void c2s_ip_conn_close(struct c2s *c2s, const char *ip)
{
    pthread_mutex_lock(&c2s->lock);
    struct c2s_ip *e = ip_get(c2s, ip);
    if (e->conns > 0)
        e->conns--;
    ip_maybe_drop(c2s, ip, kt_now_ms());
    pthread_mutex_unlock(&c2s->lock);
}

/* Under lock: the address's failure count, in a one-minute window. */
static struct c2s_ip *ip_window(struct c2s *c2s, const char *ip)
{
    uint64_t now = kt_now_ms();
    struct c2s_ip *e = ip_get(c2s, ip);
    if (now - e->window_start_ms > 60000) {
        e->window_start_ms = now;
        e->failures = 0;
    }
    return e;
}

bool c2s_ip_auth_allowed(struct c2s *c2s, const char *ip)
{
    pthread_mutex_lock(&c2s->lock);
    bool ok = ip_window(c2s, ip)->failures < (unsigned long long)c2s->conf->auth_attempts_per_ip;
    pthread_mutex_unlock(&c2s->lock);
    return ok;
}

void c2s_ip_auth_failed(struct c2s *c2s, const char *ip)
{
    pthread_mutex_lock(&c2s->lock);
    ip_window(c2s, ip)->failures++;
    pthread_mutex_unlock(&c2s->lock);
    atomic_fetch_add(&c2s->auth_failures, 1);
}

/* --- listeners --- */

struct accepted {
    struct c2s *c2s;
    int fd;
    bool direct_tls;
};

static void accept_on_loop(struct kt_loop *loop, void *data)
{
    struct accepted *a = data;
    /* Accepted just as the server stops: shutdown has already swept this
     * loop, so a stream started now would outlive it. */
    if (atomic_load(&a->c2s->stopping))
        close(a->fd);
    else
        c2s_conn_accept(a->c2s, loop, a->fd, a->direct_tls);
    free(a);
}

static void listener_accept(struct kt_loop *loop, int fd, unsigned events, void *data)
{
    (void)loop;
    (void)events;
    struct c2s_listener *l = data;
    for (int i = 0; i < 64; i++) { /* a bounded batch, then other events get their turn */
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                kt_log(KT_LOG_WARN, "c2s: accept on port %d: %s", l->port, strerror(errno));
            return;
        }
        struct accepted *a = kt_new(struct accepted);
        a->c2s = l->c2s;
        a->fd = cfd;
        a->direct_tls = l->direct_tls;
        kt_loop_post(kt_core_next_loop(l->c2s->core), accept_on_loop, a);
    }
}

static int parse_listeners(struct c2s *c2s, const config_setting_t *group)
{
    /* libconfig 1.5 takes a non-const setting for lookups that do not modify it. */
    const config_setting_t *list =
        group ? config_setting_lookup((config_setting_t *)group, "listen") : NULL;
    char where[256];
    if (!list) {
        kt_log(KT_LOG_ERROR, "c2s: no listeners: set c2s.listen");
        return -1;
    }
    kt_setting_where(list, where, sizeof(where));
    if (!config_setting_is_list(list) && !config_setting_is_array(list)) {
        kt_log(KT_LOG_ERROR, "%s: c2s.listen: expected a list of groups", where);
        return -1;
    }
    unsigned n = (unsigned)config_setting_length(list);
    c2s->listeners = kt_calloc(n ? n : 1, sizeof(*c2s->listeners));
    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, i);
        struct c2s_listener *l = &c2s->listeners[c2s->nlisteners];
        int port = 0;
        const char *tls = "starttls", *address = "::";
        kt_setting_where(e, where, sizeof(where));
        if (!config_setting_is_group(e) || !config_setting_lookup_int(e, "port", &port) ||
            port < 1 || port > 65535) {
            kt_log(KT_LOG_ERROR, "%s: c2s.listen: each listener needs port = 1..65535", where);
            return -1;
        }
        for (int k = 0; k < config_setting_length(e); k++) {
            const char *key = config_setting_name(config_setting_get_elem(e, (unsigned)k));
            if (strcmp(key, "port") != 0 && strcmp(key, "tls") != 0 &&
                strcmp(key, "address") != 0) {
                kt_log(KT_LOG_ERROR, "%s: c2s.listen.%s: unknown setting (known: port, tls, "
                       "address)", where, key);
                return -1;
            }
        }
        config_setting_lookup_string(e, "tls", &tls);
        config_setting_lookup_string(e, "address", &address);
        if (strcmp(tls, "starttls") != 0 && strcmp(tls, "direct") != 0) {
            kt_log(KT_LOG_ERROR, "%s: c2s.listen.tls: expected \"starttls\" or \"direct\"", where);
            return -1;
        }
        l->port = port;
        l->direct_tls = strcmp(tls, "direct") == 0;
        snprintf(l->address, sizeof(l->address), "%s", address);
        l->fd = -1;
        l->c2s = c2s;
        c2s->nlisteners++;
    }
    return 0;
}

static void c2s_status(struct kt_buf *out, void *data)
{
    struct c2s *c2s = data;
    kt_buf_printf(out, "c2s: %u connections, %llu logins, %llu failed authentications\n",
                  atomic_load(&c2s->nconns), (unsigned long long)atomic_load(&c2s->logins),
                  (unsigned long long)atomic_load(&c2s->auth_failures));
}

static int c2s_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                    void **state_r)
{
    struct c2s *c2s = kt_new(struct c2s);
    c2s->core = core;
    c2s->conf = conf;
    pthread_mutex_init(&c2s->lock, NULL);
    pthread_cond_init(&c2s->all_closed, NULL);
    c2s->by_loop = kt_calloc(core->nloops, sizeof(*c2s->by_loop));
    c2s->sweep = kt_calloc(core->nloops, sizeof(*c2s->sweep));
    *state_r = c2s;
    if (!core->tls) {
        kt_log(KT_LOG_ERROR, "c2s: clients need TLS: set tls.certificate and tls.key");
        return -1;
    }
    if (parse_listeners(c2s, group) < 0)
        return -1;
    /* Stanzas to a bound resource of this node's users go to its stream.
     * mod_sm's LOCAL hooks (bare JIDs, roster, presence) run before this. */
    if (kt_route_add(core->router, core->network, KT_ROUTE_LOCAL, c2s_route_deliver, c2s) < 0 ||
        (strcmp(core->host, core->network) != 0 &&
         kt_route_add(core->router, core->host, KT_ROUTE_LOCAL, c2s_route_deliver, c2s) < 0)) {
        kt_log(KT_LOG_ERROR, "c2s: cannot bind the routes of %s and %s", core->network, core->host);
        return -1;
    }
    kt_core_status_add(core, c2s_status, c2s);
    return 0;
}

static void start_listeners_on_loop(struct kt_loop *loop, void *data)
{
    struct c2s *c2s = data;
    for (unsigned i = 0; i < c2s->nlisteners; i++) {
        struct c2s_listener *l = &c2s->listeners[i];
        l->io = kt_io_add(loop, l->fd, KT_IO_READ, listener_accept, l);
    }
}

/* Every idle_release/2 seconds, on each loop: free the parsers of streams
 * quiet for idle_release. Doing it after every stanza cost 80% more CPU per
 * message on busy streams (a new parser per stanza, bench/RESULTS.md); a
 * sweep keeps that cost to quiet streams, where it does not matter. */
static void sweep_tick(struct kt_loop *loop, void *data)
{
    struct c2s *c2s = data;
    unsigned i = kt_loop_index(loop);
    uint64_t idle_ms = (uint64_t)c2s->conf->idle_release * 1000;
    /* Freed parsers leave holes in the heap that glibc keeps; after a batch,
     * give the pages back (a login burst would otherwise keep its peak). */
    if (c2s_release_idle_parsers(c2s, i, idle_ms) >= 64)
        malloc_trim(0);
    c2s->sweep[i] = kt_timer_add(loop, idle_ms / 2 ? idle_ms / 2 : 1, sweep_tick, c2s);
}

static void sweep_stop(struct kt_loop *loop, void *data)
{
    struct c2s *c2s = data;
    kt_timer_cancel(&c2s->sweep[kt_loop_index(loop)]);
}

static int c2s_start(void *state)
{
    struct c2s *c2s = state;
    char err[256];
    for (unsigned i = 0; i < c2s->nlisteners; i++) {
        struct c2s_listener *l = &c2s->listeners[i];
        l->fd = kt_listen_tcp(l->address, l->port, 511, err, sizeof(err));
        if (l->fd < 0) {
            kt_log(KT_LOG_ERROR, "c2s: cannot listen on %s port %d: %s", l->address, l->port, err);
            return -1;
        }
        kt_log(KT_LOG_NOTICE, "c2s: listening on %s port %d (%s)", l->address, l->port,
               l->direct_tls ? "direct TLS" : "STARTTLS");
    }
    kt_loop_post(c2s->core->loops[0], start_listeners_on_loop, c2s);
    if (c2s->conf->idle_release > 0)
        for (unsigned i = 0; i < c2s->core->nloops; i++)
            kt_loop_post(c2s->core->loops[i], sweep_tick, c2s);
    return 0;
}

static void stop_listeners_on_loop(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct c2s *c2s = data;
    for (unsigned i = 0; i < c2s->nlisteners; i++) {
        struct c2s_listener *l = &c2s->listeners[i];
        kt_io_del(&l->io);
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
    }
}

/* No allocation: a post that never runs (the loop stopped first) leaks nothing. */
static void shutdown_on_loop(struct kt_loop *loop, void *data)
{
    c2s_shutdown_loop(data, kt_loop_index(loop));
}

/* Stops accepting, sends system-shutdown to every stream and waits (a
 * bounded time) until they are closed, while the loops still run. */
static void c2s_stop(void *state)
{
    struct c2s *c2s = state;
    atomic_store(&c2s->stopping, true);
    kt_loop_post(c2s->core->loops[0], stop_listeners_on_loop, c2s);
    for (unsigned i = 0; i < c2s->core->nloops; i++)
        kt_loop_post(c2s->core->loops[i], sweep_stop, c2s);
    for (unsigned i = 0; i < c2s->core->nloops; i++)
        kt_loop_post(c2s->core->loops[i], shutdown_on_loop, c2s);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    c2s_sm_shutdown(c2s);
    pthread_mutex_lock(&c2s->lock);
    while (atomic_load(&c2s->nconns) > 0 || atomic_load(&c2s->ndetached) > 0)
        if (pthread_cond_timedwait(&c2s->all_closed, &c2s->lock, &deadline) != 0)
            break;
    pthread_mutex_unlock(&c2s->lock);
    if (atomic_load(&c2s->nconns) > 0)
        kt_log(KT_LOG_WARN, "c2s: %u connections still open at shutdown",
               atomic_load(&c2s->nconns));
}

static void c2s_free(void *state)
{
    struct c2s *c2s = state;
    if (!c2s)
        return;
    for (unsigned i = 0; i < KT_ARRAY_SIZE(c2s->ips); i++)
        while (c2s->ips[i]) {
            struct c2s_ip *e = c2s->ips[i];
            c2s->ips[i] = e->next;
            free(e);
        }
    free(c2s->listeners);
    free(c2s->by_loop);
    free(c2s->sweep);
    pthread_cond_destroy(&c2s->all_closed);
    pthread_mutex_destroy(&c2s->lock);
    free(c2s);
}

KT_MODULE(c2s) = {
    KT_MODULE_HEADER,
    .name = "c2s",
    .settings = c2s_settings,
    .conf_size = sizeof(struct c2s_conf),
    .init = c2s_init,
    .start = c2s_start,
    .stop = c2s_stop,
    .free = c2s_free,
};
