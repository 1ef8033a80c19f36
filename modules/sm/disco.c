/* Service discovery (XEP-0030) of the node itself: disco#info answers with
 * the identity server/im and the features the other parts registered with
 * sm_feature_add, disco#items with the named services (name@host, named.c). Both answer only requests addressed to the server; a 'node'
 * attribute names nothing we serve, so it gets item-not-found. Disco of a
 * user's bare JID is the roster part's (it depends on subscriptions) and
 * falls through here.
 *
 * sm_disco_init runs after every other part, so the feature list is
 * complete: it is sorted and deduplicated in place once, then only read by
 * the I/O threads. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* Checks that apply to both requests; returns KT_HANDLED when st was
 * answered with an error, KT_PASS when the caller should build the result.
 * *mine_r says whether st is ours at all. */
static enum kt_verdict check_request(struct sm *sm, struct kt_stanza *st, bool *mine_r)
{
    *mine_r = kt_stanza_from(st) && sm_to_server(sm, st);
    if (!*mine_r)
        return KT_PASS;
    if (kt_stanza_type(st) == KT_TYPE_SET) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST,
                         "service discovery defines only iq get");
        return KT_HANDLED;
    }
    const struct kt_xml *query = kt_xml_first_element(kt_stanza_xml(st));
    if (kt_xml_attr(query, "node")) {
        kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND, NULL);
        return KT_HANDLED;
    }
    return KT_PASS;
}

struct kt_xml *sm_disco_info_query(struct kt_stanza *reply, const char *category,
                                   const char *type, const char *name)
{
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_DISCO_INFO);
    struct kt_xml *id = kt_xml_add_child(q, "identity", NS_DISCO_INFO);
    kt_xml_set_attr(id, "category", category);
    kt_xml_set_attr(id, "type", type);
    if (name)
        kt_xml_set_attr(id, "name", name);
    return q;
}

void sm_disco_feature(struct kt_xml *query, const char *var)
{
    kt_xml_set_attr(kt_xml_add_child(query, "feature", NS_DISCO_INFO), "var", var);
}

static enum kt_verdict disco_info(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    bool mine;
    if (check_request(sm, st, &mine) == KT_HANDLED)
        return KT_HANDLED;
    if (!mine)
        return KT_PASS;
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *q = sm_disco_info_query(reply, "server", "im", "kontalkd");
    for (unsigned i = 0; i < sm->nfeatures; i++)
        sm_disco_feature(q, sm->features[i]);
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
    return KT_HANDLED;
}

static enum kt_verdict disco_items(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    bool mine;
    if (check_request(sm, st, &mine) == KT_HANDLED)
        return KT_HANDLED;
    if (!mine)
        return KT_PASS;
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_DISCO_ITEMS);
    for (unsigned i = 0; i < sm->nservices; i++) {
        struct kt_xml *item = kt_xml_add_child(q, "item", NS_DISCO_ITEMS);
        char jid[1100];
        snprintf(jid, sizeof(jid), "%s@%s", sm->services[i]->name, sm->core->host);
        kt_xml_set_attr(item, "jid", jid);
        kt_xml_set_attr(item, "name", sm->services[i]->label);
    }
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
    return KT_HANDLED;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int sm_disco_init(struct sm *sm)
{
    static const struct kt_match info = {.kinds = KT_KIND_IQ,
                                         .types = KT_TYPE_GET | KT_TYPE_SET,
                                         .ns = NS_DISCO_INFO,
                                         .name = "query"};
    static const struct kt_match items = {.kinds = KT_KIND_IQ,
                                          .types = KT_TYPE_GET | KT_TYPE_SET,
                                          .ns = NS_DISCO_ITEMS,
                                          .name = "query"};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &info, 0, disco_info, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &items, 0, disco_items, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the service discovery handlers");
        return -1;
    }
    sm_feature_add(sm, NS_DISCO_INFO);
    sm_feature_add(sm, NS_DISCO_ITEMS);
    qsort(sm->features, sm->nfeatures, sizeof(*sm->features), cmp_str);
    unsigned n = 0;
    for (unsigned i = 0; i < sm->nfeatures; i++) {
        if (n == 0 || strcmp(sm->features[n - 1], sm->features[i]) != 0)
            sm->features[n++] = sm->features[i];
    }
    sm->nfeatures = n;
    return 0;
}
