/* multicast@host: XEP-0033 fan-out as Kontalk uses it for group chat
 * (kontalk-protocol.md §2.12). A message or presence sent to the service
 * with an <addresses xmlns='http://jabber.org/protocol/address'/> header is
 * copied once per recipient address; each copy keeps the sender's 'from'
 * (stamped by c2s, so a copy is exactly what the sender would have sent
 * itself), loses the header, and is dispatched through the router, so
 * blocking, carbons, delivery, offline storage, bounces and remote domains
 * treat it like any other stanza from that sender.
 *
 * Contract:
 * - Only this node's own clients may use it (a live session for 'from'),
 *   else forbidden (XEP-0033 §2.2).
 * - The whole header is checked before the first copy leaves, so an error
 *   means nothing was sent: no or several <addresses/> (bad-request); a
 *   to/cc/bcc address without a type from the XEP, or without 'jid'
 *   (bad-request); a 'uri' address (jid-malformed, XEP-0033 §4.2: we know
 *   no URI scheme); a 'jid' that does not parse (jid-malformed); more than
 *   sm.multicast_max to/cc/bcc addresses (not-acceptable, XEP-0033 §8);
 *   none left to deliver to (bad-request).
 * - to, cc and bcc are all delivered. No copy carries the header (Kontalk's
 *   behaviour), so no recipient learns of another: bcc needs nothing more.
 *   replyto, replyroom, noreply and ofrom name nobody to deliver to and go
 *   with the header. An address marked delivered='true' is skipped (loop
 *   prevention, §4.5). The same JID twice gets one copy.
 * - iq get/set is refused with feature-not-implemented: XEP-0033 §3 keeps
 *   addresses out of iq, and a fan-out would answer one request with one
 *   reply per recipient and none from the service (RFC 6120 §8.2.3).
 *   iq results and errors to the service, and stanzas of type error, are
 *   dropped: nothing may answer them.
 * - Subscription presence never reaches the service as sent: the roster
 *   takes it first as a subscription to multicast@ itself. A subscribe is
 *   denied with unsubscribed (the service has no presence to share), the
 *   other subscription types and probes are dropped; send those to each
 *   contact.
 * - An unavailable presence without addresses is dropped silently: it is
 *   the server's own follow-up to an earlier multicast presence (RFC 6121
 *   §4.6.3); the recipients of that presence were tracked as directed
 *   presence by the copies themselves and get their own unavailable.
 * - Each copy holds a reference to the original until the copy is fully
 *   handled (kt_stanza_on_release), so the sender's XEP-0198 ack still
 *   means "delivered or stored" for every recipient. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/log.h>
#include <kontalk/session.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ADDRESS "http://jabber.org/protocol/address"

struct target {
    struct kt_jid *jid;
    unsigned idx; /* position in the header, to keep its order */
    bool dup;
};

static int target_cmp(const void *a, const void *b)
{
    const struct target *x = *(const struct target *const *)a;
    const struct target *y = *(const struct target *const *)b;
    int c = strcmp(x->jid->full, y->jid->full);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Marks every later occurrence of a JID as a duplicate (O(n log n): the
 * limit can be configured high). */
static void mark_duplicates(struct target *t, unsigned n)
{
    if (n < 2)
        return;
    struct target **order = kt_calloc(n, sizeof(*order));
    for (unsigned i = 0; i < n; i++)
        order[i] = &t[i];
    qsort(order, n, sizeof(*order), target_cmp);
    for (unsigned i = 1; i < n; i++)
        if (strcmp(order[i]->jid->full, order[i - 1]->jid->full) == 0)
            order[i]->dup = true;
    free(order);
}

static void targets_free(struct target *t, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        kt_jid_free(&t[i].jid);
    free(t);
}

static bool is_recipient_type(const char *type)
{
    return strcmp(type, "to") == 0 || strcmp(type, "cc") == 0 || strcmp(type, "bcc") == 0;
}

static bool is_other_type(const char *type)
{
    return strcmp(type, "replyto") == 0 || strcmp(type, "replyroom") == 0 ||
           strcmp(type, "noreply") == 0 || strcmp(type, "ofrom") == 0;
}

/* Reads the header into *t_r / *n_r. Returns KT_SE_NONE or the error for
 * the whole stanza, with a static or formatted text in text (len bytes). */
static enum kt_stanza_err parse_addresses(const struct sm *sm, const struct kt_xml *addresses,
                                          struct target **t_r, unsigned *n_r, char *text,
                                          size_t len)
{
    long long max = sm->conf->multicast_max, receivers = 0;
    struct target *t = NULL;
    unsigned n = 0, cap = 0, idx = 0;
    enum kt_stanza_err err = KT_SE_NONE;
    for (const struct kt_xml *a = kt_xml_first_element(addresses); a;
         a = kt_xml_next_element(a), idx++) {
        if (strcmp(a->name, "address") != 0 || !a->ns || strcmp(a->ns, NS_ADDRESS) != 0)
            continue; /* extensions we do not know are ignored (§4.7) */
        const char *type = kt_xml_attr(a, "type");
        if (!type || (!is_recipient_type(type) && !is_other_type(type))) {
            snprintf(text, len, "address %u: type must be to, cc, bcc, replyto, replyroom, "
                                "noreply or ofrom", idx + 1);
            err = KT_SE_BAD_REQUEST;
            break;
        }
        if (!is_recipient_type(type))
            continue;
        if (++receivers > max) {
            snprintf(text, len, "more than %lld addresses", max);
            err = KT_SE_NOT_ACCEPTABLE;
            break;
        }
        const char *delivered = kt_xml_attr(a, "delivered");
        if (delivered && strcmp(delivered, "true") == 0)
            continue;
        const char *jid = kt_xml_attr(a, "jid"), *uri = kt_xml_attr(a, "uri");
        if (uri && !jid) {
            snprintf(text, len, "address %u: uri addresses are not supported", idx + 1);
            err = KT_SE_JID_MALFORMED;
            break;
        }
        if (!jid || uri) {
            snprintf(text, len, "address %u: a 'jid' (and no 'uri') is required", idx + 1);
            err = KT_SE_BAD_REQUEST;
            break;
        }
        struct kt_jid *parsed = kt_jid_parse(jid);
        if (!parsed) {
            snprintf(text, len, "address %u: not a valid JID", idx + 1);
            err = KT_SE_JID_MALFORMED;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            t = kt_realloc(t, cap * sizeof(*t));
        }
        t[n++] = (struct target){.jid = parsed, .idx = idx};
    }
    if (!err && n == 0) {
        snprintf(text, len, "no address to deliver to");
        err = KT_SE_BAD_REQUEST;
    }
    if (err) {
        targets_free(t, n);
        return err;
    }
    *t_r = t;
    *n_r = n;
    return KT_SE_NONE;
}

static void release_original(void *data)
{
    struct kt_stanza *orig = data;
    kt_stanza_unref(&orig);
}

/* One copy per distinct target, in header order, without the header. */
/* The copy being dispatched on this thread (dispatch runs the IN stage on
 * the caller's thread): carbons.c sends no 'sent' carbon of it, since the
 * sender's other devices got one of the message to multicast@ already. */
static _Thread_local const struct kt_stanza *fanning_out;

bool sm_multicast_copy(const struct kt_stanza *st)
{
    return st && st == fanning_out;
}

static unsigned fan_out(struct sm *sm, struct kt_stanza *st, struct target *t, unsigned n)
{
    struct kt_stanza *tmpl = kt_stanza_copy(st);
    struct kt_xml *root = kt_stanza_xml_mut(tmpl), *a;
    while ((a = kt_xml_child(root, "addresses", NS_ADDRESS)))
        kt_xml_free(&a);
    kt_stanza_touch(tmpl);
    unsigned sent = 0;
    for (unsigned i = 0; i < n; i++) {
        if (t[i].dup)
            continue;
        struct kt_stanza *copy = kt_stanza_copy(tmpl);
        kt_stanza_set_to(copy, t[i].jid);
        kt_stanza_on_release(copy, release_original, kt_stanza_ref(st));
        fanning_out = copy;
        sm_send(sm, copy);
        fanning_out = NULL;
        kt_stanza_unref(&copy);
        sent++;
    }
    kt_stanza_unref(&tmpl);
    return sent;
}

/* A live session of this node sent it (c2s stamped 'from'). */
static bool from_own_client(struct sm *sm, const struct kt_jid *from)
{
    if (!from || !from->local || !from->resource || !sm_is_local(sm, from))
        return false;
    struct kt_session *s = kt_sessions_find(sm->core->sessions, from);
    bool ok = s != NULL;
    kt_session_unref(&s);
    return ok;
}

/* The roster took a subscribe to the service (a subscription to multicast@
 * itself) and sent it on from the user's bare JID: deny it, as for an
 * account that does not exist (RFC 6121 §3.1.3), so the item's pending
 * 'ask' is cleared. */
static void refuse_subscription(struct sm *sm, const struct kt_stanza *st)
{
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!from || !to)
        return;
    struct kt_jid *service = kt_jid_to_bare(to), *user = kt_jid_to_bare(from);
    struct kt_xml *p = kt_xml_new("presence", KT_NS_CLIENT);
    kt_xml_set_attr(p, "type", "unsubscribed");
    kt_xml_set_attr(p, "from", service->full);
    kt_xml_set_attr(p, "to", user->full);
    struct kt_stanza *reply = kt_stanza_new(p);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
    kt_jid_free(&service);
    kt_jid_free(&user);
}

static enum kt_verdict multicast_in(struct sm *sm, struct kt_stanza *st, void *data)
{
    (void)data;
    enum kt_stanza_kind kind = kt_stanza_kind(st);
    enum kt_stanza_type type = kt_stanza_type(st);
    if (type & (KT_TYPE_ERROR | KT_TYPE_RESULT))
        return KT_HANDLED; /* never answered */
    const struct kt_xml *root = kt_stanza_xml(st);
    const struct kt_xml *addresses = kt_xml_child(root, "addresses", NS_ADDRESS);
    if (kind == KT_KIND_PRESENCE && type == KT_TYPE_UNAVAILABLE && !addresses)
        return KT_HANDLED; /* directed-presence follow-up, see above */
    struct kt_router *router = sm->core->router;
    if (kind == KT_KIND_PRESENCE && !(type & (KT_TYPE_AVAILABLE | KT_TYPE_UNAVAILABLE))) {
        if (type == KT_TYPE_SUBSCRIBE)
            refuse_subscription(sm, st);
        return KT_HANDLED;
    }
    if (!from_own_client(sm, kt_stanza_from(st))) {
        kt_router_bounce(router, st, KT_SE_FORBIDDEN, "multicast is for this server's clients");
        return KT_HANDLED;
    }
    if (kind == KT_KIND_IQ) {
        kt_router_bounce(router, st, KT_SE_FEATURE_NOT_IMPLEMENTED,
                         "extended addressing is for message and presence (XEP-0033 §3)");
        return KT_HANDLED;
    }
    if (kind != KT_KIND_MESSAGE && kind != KT_KIND_PRESENCE)
        return KT_PASS;
    if (!addresses) {
        kt_router_bounce(router, st, KT_SE_BAD_REQUEST, "no <addresses/> header");
        return KT_HANDLED;
    }
    for (const struct kt_xml *o = kt_xml_next_element(addresses); o; o = kt_xml_next_element(o))
        if (strcmp(o->name, "addresses") == 0 && o->ns && strcmp(o->ns, NS_ADDRESS) == 0) {
            kt_router_bounce(router, st, KT_SE_BAD_REQUEST, "more than one <addresses/> header");
            return KT_HANDLED;
        }
    struct target *t = NULL;
    unsigned n = 0;
    char text[128];
    enum kt_stanza_err err = parse_addresses(sm, addresses, &t, &n, text, sizeof(text));
    if (err) {
        kt_router_bounce(router, st, err, text);
        return KT_HANDLED;
    }
    mark_duplicates(t, n);
    unsigned sent = fan_out(sm, st, t, n);
    kt_log(KT_LOG_DEBUG, "sm: multicast %s from %s to %u recipients", kt_stanza_name(st),
           kt_stanza_from(st)->full, sent);
    targets_free(t, n);
    return KT_HANDLED;
}

int sm_multicast_init(struct sm *sm)
{
    static const char *const features[] = {NS_ADDRESS, NULL};
    static const struct sm_service svc = {
        .name = "multicast",
        .category = "service",
        .type = "multicast",
        .label = "Multicast",
        .features = features,
        .fn = multicast_in,
    };
    sm_service_add(sm, &svc);
    return 0;
}
