/* Presence (RFC 6121 §4).
 *
 * Broadcast presence (no 'to') from a local resource records its
 * availability and priority (users.c) and goes to the contacts with a
 * 'from' subscription and to the user's other available resources. The
 * first available presence of a resource also probes the contacts with a
 * 'to' subscription, shows the new resource its siblings' presence, and
 * hands it the subscription requests and (priority >= 0) the offline
 * messages that waited for it. Unavailable presence, sent by the client or
 * by c2s when the stream ends, goes to the same people.
 *
 * Probes to a local user are answered only for contacts the user lets see
 * its presence ('from'): each available resource's last presence, or
 * unavailable when it has none. Presence to a local bare JID goes to its
 * available resources; to a full JID, c2s's route writes it.
 *
 * The contact lists come from the subscription cache (roster.c) through a
 * job on the user's queue, so they are consistent with subscription changes
 * queued before.
 * Directed presence is routed as addressed and remembered per resource, so
 * the resource's unavailable presence reaches its recipients too. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/session.h>

#include <stdlib.h>
#include <string.h>

#define MAX_RES 32

static bool local_user(const struct sm *sm, const struct kt_jid *jid)
{
    return jid && jid->local && strcmp(jid->domain, sm->core->network) == 0;
}

static int parse_priority(const struct kt_stanza *st)
{
    const struct kt_xml *p = kt_xml_child(kt_stanza_xml(st), "priority", NULL);
    if (!p)
        return 0;
    char *text = kt_xml_text(p);
    char *end;
    long v = strtol(text, &end, 10);
    bool ok = end != text && *end == '\0';
    free(text);
    if (!ok)
        return 0;
    return v < -128 ? -128 : v > 127 ? 127 : (int)v;
}

/* A copy of st addressed to `to`, unless either side blocks the other
 * (XEP-0191 §3.4: a blocked contact gets no presence). */
static void send_copy(struct sm *sm, struct kt_stanza *st, const char *to)
{
    struct kt_jid *j = kt_jid_parse(to);
    if (!j)
        return;
    const struct kt_jid *from = kt_stanza_from(st);
    if (from && (sm_blocking_is_blocked(sm, from, j) || sm_blocking_is_blocked(sm, j, from))) {
        kt_jid_free(&j);
        return;
    }
    struct kt_stanza *copy = kt_stanza_copy(st);
    kt_stanza_set_to(copy, j);
    sm_send(sm, copy);
    kt_stanza_unref(&copy);
    kt_jid_free(&j);
}

struct broadcast {
    struct sm *sm;
    struct kt_stanza *st;
    struct kt_session *session;
    char *local;
    bool initial; /* first available presence of this resource */
    char **subscribers, **contacts;
    unsigned nsubscribers, ncontacts;
};

static void broadcast_run(struct kt_db *db, void *data)
{
    struct broadcast *b = data;
    b->subscribers = sm_roster_contacts(b->sm, db, b->local, SM_SUB_FROM, &b->nsubscribers);
    if (b->initial)
        b->contacts = sm_roster_contacts(b->sm, db, b->local, SM_SUB_TO, &b->ncontacts);
}

static void broadcast_done(void *data)
{
    struct broadcast *b = data;
    struct sm *sm = b->sm;
    const struct kt_jid *me = kt_session_jid(b->session);
    for (unsigned i = 0; i < b->nsubscribers; i++)
        send_copy(sm, b->st, b->subscribers[i]);
    /* The user's other available resources see it too (§4.2.2, §4.4.2). */
    struct kt_session *res[MAX_RES];
    unsigned n = sm_users_resources(sm->users, me, true, res, MAX_RES);
    for (unsigned i = 0; i < n; i++) {
        if (res[i] != b->session)
            kt_session_deliver(res[i], b->st);
        kt_session_unref(&res[i]);
    }
    if (b->initial) {
        struct kt_jid *bare = kt_jid_to_bare(me);
        for (unsigned i = 0; i < b->ncontacts; i++) {
            struct kt_jid *contact = kt_jid_parse(b->contacts[i]);
            bool blocked = !contact || sm_blocking_is_blocked(sm, bare, contact);
            kt_jid_free(&contact);
            if (blocked)
                continue;
            struct kt_xml *p = kt_xml_new("presence", KT_NS_CLIENT);
            kt_xml_set_attr(p, "type", "probe");
            kt_xml_set_attr(p, "from", bare->full);
            kt_xml_set_attr(p, "to", b->contacts[i]);
            struct kt_stanza *probe = kt_stanza_new(p);
            sm_send(sm, probe);
            kt_stanza_unref(&probe);
        }
        /* ... and the new resource sees its siblings (§4.2.2). */
        struct kt_stanza *pres[MAX_RES];
        unsigned np = sm_users_presences(sm->users, bare, pres, MAX_RES);
        for (unsigned i = 0; i < np; i++) {
            if (!kt_jid_equal(kt_stanza_from(pres[i]), me)) {
                struct kt_stanza *copy = kt_stanza_copy(pres[i]);
                kt_stanza_set_to(copy, me);
                kt_session_deliver(b->session, copy);
                kt_stanza_unref(&copy);
            }
            kt_stanza_unref(&pres[i]);
        }
        kt_jid_free(&bare);
        sm_roster_send_pending(sm, b->session);
    }
    sm_roster_contacts_free(b->subscribers);
    sm_roster_contacts_free(b->contacts);
    kt_stanza_unref(&b->st);
    kt_session_unref(&b->session);
    free(b->local);
    free(b);
}

/* LOCAL: broadcast presence from one of our users' resources. */
static enum kt_verdict broadcast_in(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st);
    if (kt_stanza_to(st) || !local_user(sm, from) || !from->resource)
        return KT_PASS;
    struct kt_session *s = kt_sessions_find(sm->core->sessions, from);
    if (!s)
        return KT_HANDLED; /* the stream is already gone */
    bool available = kt_stanza_type(st) == KT_TYPE_AVAILABLE, was_available;
    int prio = available ? parse_priority(st) : 0;
    if (sm_users_presence(sm->users, s, available ? st : NULL, prio, &was_available))
        sm_offline_deliver(sm, s);
    if (!available && !was_available) {
        kt_session_unref(&s);
        return KT_HANDLED; /* never announced: nothing to take back */
    }
    if (!available) {
        /* Those it sent directed presence to learn it is gone (§4.6.3). */
        unsigned nd;
        char **directed = sm_users_directed_take(sm->users, s, &nd);
        for (unsigned i = 0; i < nd; i++) {
            send_copy(sm, st, directed[i]);
            free(directed[i]);
        }
        free(directed);
        /* The user's last available resource left: that is the last logout
         * that last activity (XEP-0012) reports. */
        struct kt_session *others[1];
        unsigned n = sm_users_resources(sm->users, from, true, others, 1);
        if (n) {
            kt_session_unref(&others[0]);
        } else {
            sm_userinfo_logout(sm, from);
            sm_roster_forget(sm, from->local);
            sm_keys_forget(sm, from->local);
        }
    }
    struct broadcast *b = kt_new(struct broadcast);
    b->sm = sm;
    b->st = kt_stanza_ref(st);
    b->session = s;
    b->local = kt_strdup(from->local);
    b->initial = available && !was_available;
    kt_job_submit(sm->core->workers, sm_user_queue(sm, from->local), broadcast_run,
                  broadcast_done, b);
    return KT_HANDLED;
}

struct probe {
    struct sm *sm;
    struct kt_stanza *st;
    struct kt_jid *owner;
    bool allowed;
};

static void probe_run(struct kt_db *db, void *data)
{
    struct probe *p = data;
    int sub = sm_roster_sub(p->sm, db, p->owner->local, kt_stanza_from(p->st)->bare);
    p->allowed = sub > 0 && (sub & SM_SUB_FROM);
}

static void probe_done(void *data)
{
    struct probe *p = data;
    struct sm *sm = p->sm;
    if (p->allowed) {
        const char *prober = kt_stanza_from(p->st)->full;
        struct kt_stanza *pres[MAX_RES];
        unsigned n = sm_users_presences(sm->users, p->owner, pres, MAX_RES);
        for (unsigned i = 0; i < n; i++) {
            send_copy(sm, pres[i], prober);
            kt_stanza_unref(&pres[i]);
        }
        if (n == 0) {
            struct kt_xml *x = kt_xml_new("presence", KT_NS_CLIENT);
            kt_xml_set_attr(x, "type", "unavailable");
            kt_xml_set_attr(x, "from", p->owner->full);
            kt_xml_set_attr(x, "to", prober);
            struct kt_stanza *u = kt_stanza_new(x);
            sm_send(sm, u);
            kt_stanza_unref(&u);
        }
    }
    kt_stanza_unref(&p->st);
    kt_jid_free(&p->owner);
    free(p);
}

/* LOCAL: a probe for one of our users (§4.3.2). */
static enum kt_verdict probe_in(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st), *from = kt_stanza_from(st);
    if (!local_user(sm, to) || !from)
        return KT_PASS;
    struct probe *p = kt_new(struct probe);
    p->sm = sm;
    p->st = kt_stanza_ref(st);
    p->owner = kt_jid_to_bare(to);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, to->local), probe_run, probe_done, p);
    return KT_HANDLED;
}

/* LOCAL: presence addressed to one of our users' bare JID (§8.5.2.1.1). */
static enum kt_verdict directed_in(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st);
    if (!local_user(sm, to) || to->resource)
        return KT_PASS; /* full JIDs: the route writes them */
    struct kt_session *res[MAX_RES];
    unsigned n = sm_users_resources(sm->users, to, true, res, MAX_RES);
    for (unsigned i = 0; i < n; i++) {
        kt_session_deliver(res[i], st);
        kt_session_unref(&res[i]);
    }
    return KT_HANDLED;
}

struct unblocked {
    struct sm *sm;
    struct kt_jid *user, *contact;
    bool subscribed;
};

static void unblocked_run(struct kt_db *db, void *data)
{
    struct unblocked *u = data;
    int sub = sm_roster_sub(u->sm, db, u->user->local, u->contact->bare);
    u->subscribed = sub > 0 && (sub & SM_SUB_FROM);
}

static void unblocked_done(void *data)
{
    struct unblocked *u = data;
    if (u->subscribed) {
        struct kt_stanza *pres[MAX_RES];
        unsigned n = sm_users_presences(u->sm->users, u->user, pres, MAX_RES);
        for (unsigned i = 0; i < n; i++) {
            send_copy(u->sm, pres[i], u->contact->full);
            kt_stanza_unref(&pres[i]);
        }
    }
    kt_jid_free(&u->user);
    kt_jid_free(&u->contact);
    free(u);
}

void sm_presence_block_changed(struct sm *sm, const struct kt_jid *user,
                               const struct kt_jid *contact, bool blocked)
{
    if (!blocked) {
        struct unblocked *u = kt_new(struct unblocked);
        u->sm = sm;
        u->user = kt_jid_to_bare(user);
        u->contact = kt_jid_dup(contact);
        kt_job_submit(sm->core->workers, sm_user_queue(sm, user->local), unblocked_run,
                      unblocked_done, u);
        return;
    }
    /* Unavailable reveals nothing, so no subscription check is needed; it
     * must pass the blocking check that would now refuse it. */
    struct kt_stanza *pres[MAX_RES];
    unsigned n = sm_users_presences(sm->users, user, pres, MAX_RES);
    for (unsigned i = 0; i < n; i++) {
        struct kt_xml *x = kt_xml_new("presence", KT_NS_CLIENT);
        kt_xml_set_attr(x, "type", "unavailable");
        kt_xml_set_attr(x, "from", kt_stanza_from(pres[i])->full);
        kt_xml_set_attr(x, "to", contact->full);
        struct kt_stanza *st = kt_stanza_new(x);
        sm_blocking_send_unchecked(sm, st);
        kt_stanza_unref(&st);
        kt_stanza_unref(&pres[i]);
    }
}

/* IN: directed presence from one of our resources (to anyone but its own
 * user): remembered, so that its unavailable reaches them too (§4.6.3). */
static enum kt_verdict directed_out(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!to || !local_user(sm, from) || !from->resource || kt_jid_bare_equal(to, from))
        return KT_PASS;
    struct kt_session *s = kt_sessions_find(sm->core->sessions, from);
    if (s) {
        sm_users_directed(sm->users, s, to->full, kt_stanza_type(st) == KT_TYPE_AVAILABLE);
        kt_session_unref(&s);
    }
    return KT_PASS;
}

int sm_presence_init(struct sm *sm)
{
    static const struct kt_match broadcast = {
        .kinds = KT_KIND_PRESENCE, .types = KT_TYPE_AVAILABLE | KT_TYPE_UNAVAILABLE};
    static const struct kt_match probe = {.kinds = KT_KIND_PRESENCE, .types = KT_TYPE_PROBE};
    if (kt_hook_add(sm->core->router, KT_HOOK_IN, &broadcast, 0, directed_out, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &broadcast, 10, broadcast_in, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &broadcast, 0, directed_in, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &probe, 0, probe_in, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the presence hooks");
        return -1;
    }
    return 0;
}
