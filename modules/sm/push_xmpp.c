/* The XEP-0357 push provider ("xmpp"): a wake-up is a pubsub publish from
 * this node to the app server sm.push.app_server, on the node the device
 * registered (its registration id), with an empty urn:xmpp:push:summary
 * form, so the app server learns that something arrived, never what or
 * from whom:
 *   <iq type='set' from='HOST' to='APP_SERVER' id='push-N'>
 *     <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='REGID'><item>
 *       <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>
 *         <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
 *       </x></notification></item></publish></pubsub></iq>
 * The iq goes through the router (any thread may dispatch); its answer
 * comes back to the host, where nobody waits for it and it is dropped. The
 * publish itself is the whole attempt: the router bounces or routes it, so
 * there is nothing to retry here. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>

#include <stdio.h>
#include <stdlib.h>

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUSH0 "urn:xmpp:push:0"
#define NS_DATA "jabber:x:data"

struct xmpp {
    struct sm *sm;
    struct kt_jid *app_server;
    struct kt_jid *host;
    atomic_ulong ids;
};

static enum sm_push_result xmpp_wake(void *state, const char *reg_id)
{
    struct xmpp *x = state;
    char id[32];
    snprintf(id, sizeof(id), "push-%lu", atomic_fetch_add(&x->ids, 1) + 1);
    struct kt_xml *iq = kt_xml_new("iq", KT_NS_CLIENT);
    kt_xml_set_attr(iq, "type", "set");
    kt_xml_set_attr(iq, "id", id);
    kt_xml_set_attr(iq, "from", x->host->full);
    kt_xml_set_attr(iq, "to", x->app_server->full);
    struct kt_xml *publish =
        kt_xml_add_child(kt_xml_add_child(iq, "pubsub", NS_PUBSUB), "publish", NS_PUBSUB);
    kt_xml_set_attr(publish, "node", reg_id);
    struct kt_xml *n =
        kt_xml_add_child(kt_xml_add_child(publish, "item", NS_PUBSUB), "notification", NS_PUSH0);
    struct kt_xml *form = kt_xml_add_child(n, "x", NS_DATA);
    kt_xml_set_attr(form, "type", "submit");
    struct kt_xml *field = kt_xml_add_child(form, "field", NS_DATA);
    kt_xml_set_attr(field, "var", "FORM_TYPE");
    kt_xml_add_text(kt_xml_add_child(field, "value", NS_DATA), "urn:xmpp:push:summary", 21);
    struct kt_stanza *st = kt_stanza_new(iq);
    sm_send(x->sm, st);
    kt_stanza_unref(&st);
    return SM_PUSH_SENT;
}

static void xmpp_free(void *state)
{
    struct xmpp *x = state;
    if (!x)
        return;
    kt_jid_free(&x->app_server);
    kt_jid_free(&x->host);
    free(x);
}

int sm_push_xmpp_new(struct sm *sm, struct sm_push_provider *p_r)
{
    struct xmpp *x = kt_new(struct xmpp);
    x->sm = sm;
    x->app_server = kt_jid_parse(sm->conf->push.app_server);
    x->host = kt_jid_new(NULL, sm->core->host, NULL);
    atomic_init(&x->ids, 0);
    if (!x->app_server || !x->host) {
        kt_log(KT_LOG_ERROR, "sm.push.app_server: \"%s\" is not a JID", sm->conf->push.app_server);
        xmpp_free(x);
        return -1;
    }
    *p_r = (struct sm_push_provider){
        .name = "xmpp",
        .label = "XMPP push notifications (XEP-0357)",
        .wake = xmpp_wake,
        .free = xmpp_free,
        .state = x,
    };
    return 0;
}
