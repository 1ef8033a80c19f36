/* Delivery of messages to this node's users (RFC 6121 §8.5).
 *
 * Messages to a bare JID go to the available resources with the highest
 * non-negative priority (all of them on a tie). With none: chat and normal
 * messages that are worth keeping are stored offline (offline.c), headlines
 * and chat-state-only messages are dropped (XEP-0085 §5.6), groupchat and
 * everything else is bounced with service-unavailable. A message to a full
 * JID whose resource is gone is handled as if sent to the bare JID
 * (§8.5.3.2.1), so what a closing stream did not acknowledge reaches another
 * device or offline storage; a full JID with a session falls through to the
 * route's deliver function (c2s), which writes it.
 *
 * Presence is in presence.c: it decides which resources are available. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>
#include <kontalk/session.h>

#include <stdlib.h>
#include <string.h>

#define MAX_TARGETS 32
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"

/* A user of this node: localpart@network (users are never @host). */
static bool local_user(const struct sm *sm, const struct kt_jid *jid)
{
    return jid && jid->local && strcmp(jid->domain, sm->core->network) == 0;
}


/* To the bare JID's best resources; false if there is none. */
static bool deliver_bare(struct sm *sm, struct kt_stanza *st, const struct kt_jid *to)
{
    struct kt_session *targets[MAX_TARGETS];
    unsigned n = sm_users_targets(sm->users, to, targets, MAX_TARGETS);
    bool any = false;
    for (unsigned i = 0; i < n; i++)
        any = kt_session_deliver(targets[i], st) || any;
    if (any)
        sm_push_delivered(sm, to, targets, n, st); /* all inactive or idle: push */
    for (unsigned i = 0; i < n; i++)
        kt_session_unref(&targets[i]);
    return any;
}

static enum kt_verdict message_in(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st);
    if (!local_user(sm, to))
        return KT_PASS;
    enum kt_stanza_type type = kt_stanza_type(st);
    if (to->resource) {
        struct kt_session *s = kt_sessions_find(sm->core->sessions, to);
        bool live = s != NULL;
        if (live)
            sm_push_delivered(sm, to, &s, 1, st);
        kt_session_unref(&s);
        if (live)
            return KT_PASS; /* the route (c2s) writes it to that stream */
        if (type == KT_TYPE_ERROR)
            return KT_HANDLED; /* an error for a gone resource: nobody to tell */
        if (type == KT_TYPE_GROUPCHAT) {
            kt_router_bounce(sm->core->router, st, KT_SE_SERVICE_UNAVAILABLE, NULL);
            return KT_HANDLED;
        }
    }
    if (type == KT_TYPE_ERROR) {
        deliver_bare(sm, st, to); /* best effort; errors are never bounced */
        return KT_HANDLED;
    }
    if (type != KT_TYPE_GROUPCHAT && deliver_bare(sm, st, to))
        return KT_HANDLED;
    if (type == KT_TYPE_HEADLINE || kt_xml_only_children_in(kt_stanza_xml(st), NS_CHATSTATES))
        return KT_HANDLED; /* RFC 6121 §8.5.2.2.1, XEP-0085 §5.6: dropped on purpose */
    if (sm->conf->offline_max > 0 && sm_offline_storable(st)) {
        sm_offline_store(sm, st);
        return KT_HANDLED;
    }
    kt_router_bounce(sm->core->router, st, KT_SE_SERVICE_UNAVAILABLE, NULL);
    return KT_HANDLED;
}

int sm_delivery_init(struct sm *sm)
{
    static const struct kt_match messages = {.kinds = KT_KIND_MESSAGE};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &messages, -100, message_in, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the delivery hooks");
        return -1;
    }
    return 0;
}
