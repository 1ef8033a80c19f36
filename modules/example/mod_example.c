/* mod_example: the skeleton module. Copy this file to start a new module.
 *
 * It shows each part of the module API:
 *   - a settings table (validated by the core, filled into struct example_conf);
 *   - a route: the domain "example.<host>" belongs to this module;
 *   - hooks: an IN hook that counts every stanza entering the router, and a
 *     LOCAL hook that answers <iq type='get'><hello xmlns='urn:kontalk:example:0'/></iq>
 *     sent to example.<host>;
 *   - a deliver function: messages to example.<host> are echoed to the sender;
 *   - a status line for `kontalkctl status`;
 *   - the lifecycle: init (register), start/stop (nothing to do here), free.
 * Hooks and deliver functions run on I/O threads, concurrently: module state
 * they touch must be atomic or locked, and they must never block. */
#include "config.h"
#include <kontalk/core.h>
#include <kontalk/log.h>
#include <kontalk/module.h>
#include <kontalk/router.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXAMPLE_NS "urn:kontalk:example:0"

struct example_conf {
    const char *greeting;
    long long max_echo;
};

static const struct kt_setting example_settings[] = {
    KT_SET_STR("greeting", struct example_conf, greeting, "hello",
               "text of the hello reply and prefix of echoed messages"),
    KT_SET_INT("max_echo", struct example_conf, max_echo, 1000, 0, 1000000,
               "messages echoed before the module answers resource-constraint"),
    KT_SET_END,
};

struct example {
    struct kt_core *core;
    const struct example_conf *conf;
    char domain[300];
    atomic_ullong seen;
    atomic_ullong echoed;
};

/* IN stage, lowest priority: sees everything, takes nothing. */
static enum kt_verdict example_count(struct kt_stanza *st, void *data)
{
    (void)st;
    struct example *ex = data;
    atomic_fetch_add_explicit(&ex->seen, 1, memory_order_relaxed);
    return KT_PASS;
}

/* LOCAL stage: the hello iq. The match already checked kind, type and ns;
 * the domain check keeps the hook to our own service. */
static enum kt_verdict example_hello(struct kt_stanza *st, void *data)
{
    struct example *ex = data;
    const struct kt_jid *to = kt_stanza_to(st);
    if (!to || strcmp(to->domain, ex->domain) != 0)
        return KT_PASS;
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *hello = kt_xml_add_child(kt_stanza_xml_mut(reply), "hello", EXAMPLE_NS);
    kt_xml_add_text(hello, ex->conf->greeting, strlen(ex->conf->greeting));
    kt_stanza_touch(reply);
    kt_router_dispatch(ex->core->router, reply);
    kt_stanza_unref(&reply);
    return KT_HANDLED;
}

/* Route deliver function: echo messages; everything else falls through
 * (the router then bounces an iq or message with service-unavailable). */
static enum kt_verdict example_deliver(struct kt_stanza *st, void *data)
{
    struct example *ex = data;
    if (kt_stanza_kind(st) != KT_KIND_MESSAGE || kt_stanza_type(st) == KT_TYPE_ERROR ||
        !kt_stanza_from(st))
        return KT_PASS;
    if (atomic_load(&ex->echoed) >= (unsigned long long)ex->conf->max_echo) {
        kt_router_bounce(ex->core->router, st, KT_SE_RESOURCE_CONSTRAINT, NULL);
        return KT_HANDLED;
    }
    struct kt_stanza *echo = kt_stanza_copy(st);
    kt_stanza_set_to(echo, kt_stanza_from(st));
    kt_stanza_set_from(echo, kt_stanza_to(st));
    kt_router_dispatch(ex->core->router, echo);
    kt_stanza_unref(&echo);
    atomic_fetch_add_explicit(&ex->echoed, 1, memory_order_relaxed);
    return KT_HANDLED;
}

static void example_status(struct kt_buf *out, void *data)
{
    struct example *ex = data;
    kt_buf_printf(out, "example: %llu stanzas seen, %llu echoed\n",
                  (unsigned long long)atomic_load(&ex->seen),
                  (unsigned long long)atomic_load(&ex->echoed));
}

static int example_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                        void **state_r)
{
    (void)group; /* everything we need is in conf */
    struct example *ex = kt_new(struct example);
    ex->core = core;
    ex->conf = conf;
    snprintf(ex->domain, sizeof(ex->domain), "example.%s", core->host);

    static const struct kt_match any = {0};
    static const struct kt_match hello = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET, .ns = EXAMPLE_NS, .name = "hello"};
    if (kt_hook_add(core->router, KT_HOOK_IN, &any, -1000, example_count, ex) < 0 ||
        kt_hook_add(core->router, KT_HOOK_LOCAL, &hello, 0, example_hello, ex) < 0 ||
        kt_route_add(core->router, ex->domain, KT_ROUTE_LOCAL, example_deliver, ex) < 0) {
        kt_log(KT_LOG_ERROR, "example: cannot register hooks or the route %s", ex->domain);
        free(ex);
        return -1;
    }
    kt_core_status_add(core, example_status, ex);
    kt_log(KT_LOG_INFO, "example: serving %s", ex->domain);
    *state_r = ex;
    return 0;
}

static void example_free(void *state)
{
    free(state);
}

KT_MODULE(example) = {
    KT_MODULE_HEADER,
    .name = "example",
    .settings = example_settings,
    .conf_size = sizeof(struct example_conf),
    .init = example_init,
    .free = example_free,
};
