/* mod_sm: the session manager. This file is the module: settings, shared
 * helpers and the order in which the parts register their hooks. Each part
 * lives in its own file (see sm.h). */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>
#include <kontalk/module.h>
#include <kontalk/xmlstream.h>

#include <stdlib.h>
#include <string.h>

static const char *const sm_requires[] = {"c2s", NULL};

static const struct kt_setting sm_settings[] = {
    KT_SET_INT("offline_max", struct sm_conf, offline_max, 1000, 0, 1000000,
               "messages stored for an offline user (0 = no offline storage)"),
    KT_SET_INT("offline_expire", struct sm_conf, offline_expire, 604800, 60, 31536000,
               "seconds an offline message is kept"),
    KT_SET_INT("vcard_max", struct sm_conf, vcard_max, 65536, 1024, 16777216,
               "bytes of one vCard (vcard-temp)"),
    KT_SET_INT("roster_max", struct sm_conf, roster_max, 1000, 1, 1000000,
               "contacts in one roster (adding more is not-allowed)"),
    KT_SET_STR("key", struct sm_conf, key, "",
                  "the node's OpenPGP secret key file (kontalkctl key generate); \"\" = none"),
    KT_SET_INT("multicast_max", struct sm_conf, multicast_max, 50, 1, 10000,
               "addresses of one stanza to multicast@ (XEP-0033)"),
    KT_SET_INT("probe_max", struct sm_conf, probe_max, 1000, 1, 100000,
               "items of one roster match to probe@ (more is not-acceptable)"),
    KT_SET_INT("expire_days", struct sm_conf, expire_days, 30, 0, 36500,
               "days without a login before a key account is deleted (0 = never)"),
    KT_SET_INT("expire_check", struct sm_conf, expire_check, 86400, 1, 31536000,
               "seconds between two account-expiry runs"),
    KT_SET_RAW("trusted_keys", "public key files of the network's other nodes, whose "
                               "certifications of user keys count as this node's: [ \"a.asc\" ]"),
    KT_SET_GROUP("push", sm_push_settings, "push wake-ups (push@host)"),
    KT_SET_GROUP("register", sm_register_settings, "phone registration (jabber:iq:register)"),
    KT_SET_END,
};

void sm_feature_add(struct sm *sm, const char *var)
{
    sm->features = kt_realloc(sm->features, (sm->nfeatures + 1) * sizeof(*sm->features));
    sm->features[sm->nfeatures++] = var;
}

bool sm_is_local(const struct sm *sm, const struct kt_jid *jid)
{
    return jid && (strcmp(jid->domain, sm->core->host) == 0 ||
                   strcmp(jid->domain, sm->core->network) == 0);
}

bool sm_to_server(const struct sm *sm, const struct kt_stanza *st)
{
    const struct kt_jid *to = kt_stanza_to(st);
    return !to || (!to->local && !to->resource && sm_is_local(sm, to));
}

void sm_send(struct sm *sm, struct kt_stanza *st)
{
    kt_router_dispatch(sm->core->router, st);
}

void sm_send_presence(struct sm *sm, const char *type, const char *from, const char *to)
{
    struct kt_xml *p = kt_xml_new("presence", KT_NS_CLIENT);
    if (type)
        kt_xml_set_attr(p, "type", type);
    kt_xml_set_attr(p, "from", from);
    kt_xml_set_attr(p, "to", to);
    struct kt_stanza *st = kt_stanza_new(p);
    sm_send(sm, st);
    kt_stanza_unref(&st);
}

/* Stored bytes back into a stanza: one element after a synthetic header. */
struct parse_ctx {
    struct kt_xml *el;
};

static void parsed_element(void *data, struct kt_xml *el)
{
    struct parse_ctx *ctx = data;
    if (!ctx->el)
        ctx->el = el;
    else
        kt_xml_free(&el);
}

struct kt_stanza *sm_parse_stored(const char *bytes, size_t len)
{
    static const char header[] = "<stream:stream xmlns='jabber:client' "
                                 "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    static const struct kt_xmlstream_callbacks cb = {.element = parsed_element};
    struct kt_xmlstream_limits limits = {
        .max_stanza_bytes = len + 1024, .max_depth = 64, .max_attrs = 256, .max_children = 100000};
    struct parse_ctx ctx = {0};
    struct kt_xmlstream *xs = kt_xmlstream_new(&limits, &cb, &ctx);
    if (kt_xmlstream_feed(xs, header, sizeof(header) - 1) < 0 ||
        kt_xmlstream_feed(xs, bytes, len) < 0)
        kt_xml_free(&ctx.el);
    kt_xmlstream_free(&xs);
    return ctx.el ? kt_stanza_new(ctx.el) : NULL;
}

struct kt_jobq *sm_user_queue(struct sm *sm, const char *local)
{
    unsigned h = 0;
    for (const char *p = local; *p; p++)
        h = h * 31 + (unsigned char)*p;
    return sm->user_queues[h % SM_USER_QUEUES];
}

static int sm_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                   void **state_r)
{
    struct sm *sm = kt_new(struct sm);
    sm->core = core;
    sm->conf = conf;
    sm->started = time(NULL);
    sm->users = sm_users_new();
    sm->rcache = sm_rcache_new();
    for (unsigned i = 0; i < SM_USER_QUEUES; i++)
        sm->user_queues[i] = kt_jobq_new(core->workers);
    *state_r = sm;
    if (sm_offline_init(sm) < 0 || sm_delivery_init(sm) < 0 || sm_presence_init(sm) < 0 ||
        sm_roster_init(sm) < 0 || sm_userinfo_init(sm) < 0 || sm_services_init(sm) < 0 ||
        sm_vcard_init(sm) < 0 || sm_carbons_init(sm) < 0 || sm_blocking_init(sm) < 0 ||
        sm_keys_init(sm, group) < 0 || sm_pubkey_init(sm) < 0 || sm_register_init(sm) < 0 ||
        sm_named_init(sm) < 0 ||
        sm_network_init(sm) < 0 || sm_multicast_init(sm) < 0 ||
        sm_push_init(sm) < 0 || sm_expiry_init(sm) < 0 || sm_probe_init(sm) < 0 ||
        sm_disco_init(sm) < 0)
        return -1;
    kt_log(KT_LOG_NOTICE, "sm: loaded; delivery, offline storage, roster, subscriptions, "
                          "presence and the server's iq services work");
    return 0;
}

static int sm_start(void *state)
{
    sm_offline_start(state);
    sm_push_start(state);
    sm_expiry_start(state);
    return 0;
}

static void sm_stop(void *state)
{
    sm_expiry_stop(state);
    sm_push_stop(state);
    sm_offline_stop(state);
}

static void sm_free(void *state)
{
    struct sm *sm = state;
    if (!sm)
        return;
    for (unsigned i = 0; i < SM_USER_QUEUES; i++)
        kt_jobq_free(&sm->user_queues[i]);
    sm_expiry_free(sm);
    sm_push_free(sm);
    sm_blocking_free(sm);
    free(sm->services);
    sm_keys_free(sm);
    sm_users_free(&sm->users);
    sm_rcache_free(&sm->rcache);
    free(sm->features);
    free(sm);
}

KT_MODULE(sm) = {
    KT_MODULE_HEADER,
    .name = "sm",
    .requires = sm_requires,
    .settings = sm_settings,
    .conf_size = sizeof(struct sm_conf),
    .init = sm_init,
    .start = sm_start,
    .stop = sm_stop,
    .free = sm_free,
};
