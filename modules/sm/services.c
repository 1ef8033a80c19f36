/* The small IQ services the node answers itself: ping (XEP-0199), software
 * version (XEP-0092), entity time (XEP-0202) and last activity (XEP-0012,
 * the node's uptime). Each is a KT_HOOK_LOCAL handler for iq get/set with
 * its payload; it answers only stanzas addressed to the server (no 'to', the
 * host or the network domain, see sm_to_server) and passes everything else
 * on, so a user's resources or other parts of sm can take them.
 *
 * One exception to "to the server only": a ping to the sender's own bare JID
 * is answered by the server on the account's behalf (RFC 6120 §10.3.3 lets
 * the server handle an iq to a bare JID; a client checking its connection
 * often pings itself). Pings to another user's bare JID fall through.
 *
 * These protocols define only "get": a "set" is answered with bad-request.
 * The version answer gives no <os/> on purpose (it would tell attackers
 * what the host runs). Handlers run on I/O threads and only read immutable
 * state, so they need no locks. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>

#include <stdio.h>
#include <string.h>

#define NS_PING "urn:xmpp:ping"
#define NS_VERSION "jabber:iq:version"
#define NS_TIME "urn:xmpp:time"
#define NS_LAST "jabber:iq:last"

#define SOFTWARE_NAME "kontalkd"

/* Whether st is a request this service may answer: addressed to the server,
 * and coming from somewhere (a reply must go back to someone). */
static bool for_server(const struct sm *sm, const struct kt_stanza *st)
{
    return kt_stanza_from(st) && sm_to_server(sm, st);
}

/* Answers a "set" with bad-request; returns whether it did. */
static bool refuse_set(struct sm *sm, const struct kt_stanza *st, const char *ns)
{
    if (kt_stanza_type(st) != KT_TYPE_SET)
        return false;
    char text[96];
    snprintf(text, sizeof(text), "%s defines only iq get", ns);
    kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, text);
    return true;
}

static void add_text_child(struct kt_xml *parent, const char *name, const char *text)
{
    struct kt_xml *el = kt_xml_add_child(parent, name, parent->ns);
    kt_xml_add_text(el, text, strlen(text));
}

/* Sends a result built on the I/O thread and drops our reference. */
static void send_result(struct sm *sm, struct kt_stanza **reply)
{
    kt_stanza_touch(*reply);
    sm_send(sm, *reply);
    kt_stanza_unref(reply);
}

static enum kt_verdict ping_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st), *from = kt_stanza_from(st);
    bool self = to && from && to->local && !to->resource && kt_jid_bare_equal(to, from);
    if (!self && !for_server(sm, st))
        return KT_PASS;
    if (refuse_set(sm, st, NS_PING))
        return KT_HANDLED;
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    send_result(sm, &reply);
    return KT_HANDLED;
}

static enum kt_verdict version_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    if (!for_server(sm, st))
        return KT_PASS;
    if (refuse_set(sm, st, NS_VERSION))
        return KT_HANDLED;
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_VERSION);
    add_text_child(q, "name", SOFTWARE_NAME);
    add_text_child(q, "version", PACKAGE_VERSION);
    send_result(sm, &reply);
    return KT_HANDLED;
}

static enum kt_verdict time_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    if (!for_server(sm, st))
        return KT_PASS;
    if (refuse_set(sm, st, NS_TIME))
        return KT_HANDLED;
    /* The node keeps UTC; the offset is therefore always +00:00. */
    time_t now = time(NULL);
    struct tm tm;
    char utc[32];
    if (!gmtime_r(&now, &tm) || strftime(utc, sizeof(utc), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        kt_router_bounce(sm->core->router, st, KT_SE_INTERNAL_SERVER_ERROR, NULL);
        return KT_HANDLED;
    }
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *t = kt_xml_add_child(kt_stanza_xml_mut(reply), "time", NS_TIME);
    add_text_child(t, "tzo", "+00:00");
    add_text_child(t, "utc", utc);
    send_result(sm, &reply);
    return KT_HANDLED;
}

/* XEP-0012 §5: last activity of a server is its uptime. A user's last
 * logout (a query to a bare JID) needs subscription checks and is left to
 * the roster part. */
static enum kt_verdict last_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    if (!for_server(sm, st))
        return KT_PASS;
    if (refuse_set(sm, st, NS_LAST))
        return KT_HANDLED;
    time_t now = time(NULL);
    long long up = now > sm->started ? (long long)(now - sm->started) : 0;
    char secs[32];
    snprintf(secs, sizeof(secs), "%lld", up);
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_LAST);
    kt_xml_set_attr(q, "seconds", secs);
    send_result(sm, &reply);
    return KT_HANDLED;
}

int sm_services_init(struct sm *sm)
{
    static const struct {
        const char *ns, *name;
        kt_stanza_fn fn;
    } services[] = {
        {NS_PING, "ping", ping_iq},
        {NS_VERSION, "query", version_iq},
        {NS_TIME, "time", time_iq},
        {NS_LAST, "query", last_iq},
    };
    for (size_t i = 0; i < KT_ARRAY_SIZE(services); i++) {
        struct kt_match m = {.kinds = KT_KIND_IQ,
                             .types = KT_TYPE_GET | KT_TYPE_SET,
                             .ns = services[i].ns,
                             .name = services[i].name};
        if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &m, 0, services[i].fn, sm) < 0) {
            kt_log(KT_LOG_ERROR, "sm: cannot register the %s handler", services[i].ns);
            return -1;
        }
        sm_feature_add(sm, services[i].ns);
    }
    return 0;
}
