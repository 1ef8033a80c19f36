/* Message Carbons (XEP-0280): every carbons-enabled resource of a user sees
 * both sides of the user's conversations.
 *
 * Enabling: an iq set <enable/> or <disable/> (urn:xmpp:carbons:2) without
 * 'to' or to the sender's own bare JID flips the flag of the sending
 * resource in users.c. Repeated requests succeed (§8.1). Only this node's
 * users can do it (anyone else: not-allowed); a get is bad-request.
 *
 * Which messages are copied (§6's suggested rules): type chat, or type
 * normal with a <body>. Never: errors, groupchat and headlines, messages from
 * a MUC (they carry muc#user), messages that already are carbons (they hold
 * <sent/> or <received/>, so copies cannot loop), and messages marked
 * <private xmlns='urn:xmpp:carbons:2'/> or <no-copy xmlns='urn:xmpp:hints'/>
 * (XEP-0334). The <private/> element is left in place: the stanza is shared
 * by then, and §7's removal is only a SHOULD.
 *
 * Sent copies (§7): an IN hook sees every message a local session sends,
 * whatever its destination, and copies it to the sender's other
 * carbons-enabled resources. It runs after blocking's IN hook, so a message
 * refused because of the blocklist is not copied; a message a user sends to
 * their own account is copied only on the receiving side.
 * Received copies (§6): a LOCAL hook above delivery.c's (-100) predicts what
 * delivery will do and copies to the carbons-enabled resources that will
 * not get the original: for a full JID with a session, all of them but that
 * one; otherwise (bare JID, or a full JID whose resource is gone, which
 * delivery handles as bare) all but the highest-priority available
 * resources sm_users_targets names. The prediction and delivery read
 * users.c one after the other, so a presence change in between can make a
 * resource get both or neither; that is the usual race of a new session.
 *
 * Copies go straight to the target sessions (kt_session_deliver), not
 * through the router, so no hook sees them twice. Known limit: a message
 * that the core routes again (its recipient's stream closed before writing
 * it) passes the hooks again and is copied again. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>
#include <kontalk/session.h>

#include <stdlib.h>
#include <string.h>

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define MAX_COPIES 32

/* A user of this node: localpart@network. */
static bool local_user(const struct sm *sm, const struct kt_jid *jid)
{
    return jid && jid->local && strcmp(jid->domain, sm->core->network) == 0;
}

static bool eligible(const struct kt_stanza *st)
{
    const struct kt_xml *root = kt_stanza_xml(st);
    enum kt_stanza_type type = kt_stanza_type(st);
    if (type == KT_TYPE_NORMAL) {
        if (!kt_xml_child(root, "body", KT_NS_CLIENT) && !kt_xml_child(root, "body", KT_NS_SERVER))
            return false;
    } else if (type != KT_TYPE_CHAT) {
        return false;
    }
    return !kt_xml_child(root, "private", NS_CARBONS) && !kt_xml_child(root, "sent", NS_CARBONS) &&
           !kt_xml_child(root, "received", NS_CARBONS) &&
           !kt_xml_child(root, "no-copy", NS_HINTS) && !kt_xml_child(root, "x", NS_MUC_USER);
}

/* A forwarded stanza is written inside a client stream: a copy that came
 * from a server stream gets jabber:client in place of jabber:server. */
static void to_client_ns(struct kt_xml *el)
{
    if (el->ns && strcmp(el->ns, KT_NS_SERVER) == 0) {
        free(el->ns);
        el->ns = kt_strdup(KT_NS_CLIENT);
    }
    for (struct kt_xml *c = kt_xml_first_element(el); c; c = kt_xml_next_element(c))
        to_client_ns(c);
}

/* <message from=bare to=target type=...><sent|received><forwarded>original */
static struct kt_stanza *wrap(const struct kt_stanza *orig, const char *bare, const char *to,
                              const char *how)
{
    struct kt_xml *root = kt_xml_new("message", KT_NS_CLIENT);
    kt_xml_set_attr(root, "from", bare);
    kt_xml_set_attr(root, "to", to);
    const char *type = kt_xml_attr(kt_stanza_xml(orig), "type");
    if (type)
        kt_xml_set_attr(root, "type", type);
    struct kt_xml *fwd = kt_xml_add_child(kt_xml_add_child(root, how, NS_CARBONS), "forwarded",
                                          NS_FORWARD);
    struct kt_xml *copy = kt_xml_copy(kt_stanza_xml(orig));
    to_client_ns(copy);
    kt_xml_append(fwd, copy);
    return kt_stanza_new(root);
}

/* Sends a copy to each target and drops the references. */
static void send_copies(const struct kt_stanza *orig, const struct kt_jid *user,
                        struct kt_session **targets, unsigned n, const char *how)
{
    for (unsigned i = 0; i < n; i++) {
        struct kt_stanza *c = wrap(orig, user->bare, kt_session_jid(targets[i])->full, how);
        kt_session_deliver(targets[i], c); /* a session that just ended misses it */
        kt_stanza_unref(&c);
        kt_session_unref(&targets[i]);
    }
}

/* --- sent copies (IN) --- */

static enum kt_verdict carbons_sent(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!local_user(sm, from) || !from->resource || !to || !eligible(st) ||
        sm_multicast_copy(st))
        return KT_PASS;
    if (to->local && kt_jid_bare_equal(to, from))
        return KT_PASS; /* to oneself: the receiving side copies it */
    struct kt_session *self = kt_sessions_find(sm->core->sessions, from);
    struct kt_session *targets[MAX_COPIES];
    unsigned n = sm_users_carbon_targets(sm->users, from, self, targets, MAX_COPIES);
    kt_session_unref(&self);
    send_copies(st, from, targets, n, "sent");
    return KT_PASS;
}

/* --- received copies (LOCAL, before delivery) --- */

static bool among(struct kt_session *s, struct kt_session **set, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (set[i] == s)
            return true;
    return false;
}

static enum kt_verdict carbons_received(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st);
    if (!local_user(sm, to) || !eligible(st))
        return KT_PASS;
    struct kt_session *gets[MAX_COPIES];
    unsigned ngets = 0;
    struct kt_session *direct = to->resource ? kt_sessions_find(sm->core->sessions, to) : NULL;
    if (direct)
        gets[ngets++] = direct;
    else
        ngets = sm_users_targets(sm->users, to, gets, MAX_COPIES);
    struct kt_session *cands[MAX_COPIES], *targets[MAX_COPIES];
    unsigned ncands = sm_users_carbon_targets(sm->users, to, NULL, cands, MAX_COPIES), n = 0;
    for (unsigned i = 0; i < ncands; i++) {
        if (among(cands[i], gets, ngets))
            kt_session_unref(&cands[i]);
        else
            targets[n++] = cands[i];
    }
    for (unsigned i = 0; i < ngets; i++)
        kt_session_unref(&gets[i]);
    send_copies(st, to, targets, n, "received");
    return KT_PASS;
}

/* --- enable / disable --- */

static enum kt_verdict carbons_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!from)
        return KT_PASS;
    if (to && !(to->local && !to->resource && kt_jid_bare_equal(to, from)))
        return KT_PASS; /* addressed to someone else: not a request to us */
    if (!local_user(sm, from) || !from->resource) {
        kt_router_bounce(sm->core->router, st, KT_SE_NOT_ALLOWED,
                         "carbons are for this server's own clients");
        return KT_HANDLED;
    }
    if (kt_stanza_type(st) != KT_TYPE_SET) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, "enable and disable are iq set");
        return KT_HANDLED;
    }
    struct kt_session *s = kt_sessions_find(sm->core->sessions, from);
    if (!s)
        return KT_HANDLED; /* its stream is gone: nobody to answer */
    bool enable = strcmp(kt_stanza_payload_name(st), "enable") == 0;
    sm_users_set_carbons(sm->users, s, enable);
    kt_session_unref(&s);
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
    return KT_HANDLED;
}

int sm_carbons_init(struct sm *sm)
{
    static const struct kt_match enable = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET | KT_TYPE_SET, .ns = NS_CARBONS, .name = "enable"};
    static const struct kt_match disable = {.kinds = KT_KIND_IQ,
                                            .types = KT_TYPE_GET | KT_TYPE_SET,
                                            .ns = NS_CARBONS,
                                            .name = "disable"};
    static const struct kt_match messages = {.kinds = KT_KIND_MESSAGE,
                                             .types = KT_TYPE_CHAT | KT_TYPE_NORMAL};
    struct kt_router *r = sm->core->router;
    if (kt_hook_add(r, KT_HOOK_LOCAL, &enable, 0, carbons_iq, sm) < 0 ||
        kt_hook_add(r, KT_HOOK_LOCAL, &disable, 0, carbons_iq, sm) < 0 ||
        kt_hook_add(r, KT_HOOK_IN, &messages, SM_PRIO_CARBONS, carbons_sent, sm) < 0 ||
        kt_hook_add(r, KT_HOOK_LOCAL, &messages, SM_PRIO_CARBONS, carbons_received, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the carbons handlers");
        return -1;
    }
    sm_feature_add(sm, NS_CARBONS);
    return 0;
}
