/* Named services of the node: the Kontalk components addressed as
 * name@host (probe@, network@, multicast@, push@; also name@network, the
 * address a client bound to the network domain may use). Service localparts
 * never collide with users' (40 hex digits).
 *
 * One LOCAL hook, before every user-facing part, takes each stanza addressed
 * to a registered name: disco#info is answered here from the service's
 * identity and features, disco#items with an empty list, everything else
 * goes to the service's handler; what the handler passes on gets
 * service-unavailable (RFC 6120 §8.3.3.19), so nothing addressed to a
 * service falls through to user delivery. The node's disco#items lists the
 * services (disco.c reads sm->services). */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>

#include <stdlib.h>
#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

void sm_service_add(struct sm *sm, const struct sm_service *svc)
{
    sm->services = kt_realloc(sm->services, (sm->nservices + 1) * sizeof(*sm->services));
    sm->services[sm->nservices++] = svc;
}

const struct sm_service *sm_service_of(const struct sm *sm, const struct kt_jid *to)
{
    if (!to || !to->local || !sm_is_local(sm, to))
        return NULL;
    for (unsigned i = 0; i < sm->nservices; i++) {
        if (strcmp(sm->services[i]->name, to->local) == 0)
            return sm->services[i];
    }
    return NULL;
}

static void disco_reply(struct sm *sm, struct kt_stanza *st, const struct sm_service *svc,
                        bool info)
{
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    if (info) {
        struct kt_xml *q = sm_disco_info_query(reply, svc->category, svc->type, svc->label);
        sm_disco_feature(q, NS_DISCO_INFO);
        for (const char *const *f = svc->features; f && *f; f++)
            sm_disco_feature(q, *f);
    } else {
        kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_DISCO_ITEMS);
    }
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
}

static enum kt_verdict service_in(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct sm_service *svc = sm_service_of(sm, kt_stanza_to(st));
    if (!svc)
        return KT_PASS;
    if (kt_stanza_kind(st) == KT_KIND_IQ && kt_stanza_type(st) == KT_TYPE_GET) {
        const char *ns = kt_stanza_ns(st);
        const struct kt_xml *query = kt_xml_first_element(kt_stanza_xml(st));
        bool info = ns && strcmp(ns, NS_DISCO_INFO) == 0;
        if ((info || (ns && strcmp(ns, NS_DISCO_ITEMS) == 0)) && !kt_xml_attr(query, "node")) {
            disco_reply(sm, st, svc, info);
            return KT_HANDLED;
        }
    }
    if (svc->fn && svc->fn(sm, st, svc->data) == KT_HANDLED)
        return KT_HANDLED;
    kt_router_bounce(sm->core->router, st, KT_SE_SERVICE_UNAVAILABLE, NULL);
    return KT_HANDLED;
}

int sm_named_init(struct sm *sm)
{
    static const struct kt_match any = {.kinds = KT_KIND_MESSAGE | KT_KIND_PRESENCE | KT_KIND_IQ};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &any, SM_PRIO_SERVICES, service_in, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the named services handler");
        return -1;
    }
    return 0;
}
