/* Rosters (RFC 6121 §2) and presence subscriptions (§3, appendix A).
 *
 * Every change is a job on the owner's user queue (sm_user_queue): run()
 * reads the one row concerned, applies the state machine, writes it back
 * and bumps the owner's roster version inside a transaction; done(), on
 * the I/O thread, sends what the change implies: the iq result, roster
 * pushes to the owner's interested resources, the routed subscription
 * stanza, automatic replies, presence. One queue per owner keeps a user's
 * changes in order; the two sides of a subscription between two local users
 * are two jobs on two queues, each touching only its owner's row.
 *
 * Outbound subscription stanzas (from a local user) are taken by an IN hook
 * before routing and sent on with the user's bare JID as 'from' (§3.1.2);
 * inbound ones (to a local user) by a LOCAL hook. A roster get reads the
 * database; presence reads the subscription cache below. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/buf.h>
#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/session.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROSTER "jabber:iq:roster"
#define SUB_TO SM_SUB_TO
#define SUB_FROM SM_SUB_FROM
#define MAX_RES 32
#define CONTACT_MAX 255
#define NAME_MAX_LEN 255
#define GROUP_MAX_LEN 255

struct item {
    char *contact;
    char *name;
    char *groups; /* '\n'-separated, or NULL */
    int sub;
    bool ask, approved, in_roster;
    char *pending_in; /* the stored request, or NULL */
    size_t pending_len;
};

static void item_clear(struct item *it)
{
    free(it->contact);
    free(it->name);
    free(it->groups);
    free(it->pending_in);
    memset(it, 0, sizeof(*it));
}

static const char *sub_name(int sub)
{
    static const char *const names[] = {"none", "to", "from", "both"};
    return names[sub & 3];
}

/* <item/> as RFC 6121 §2.1.2 describes it; remove = subscription='remove'. */
static void item_xml(struct kt_xml *query, const struct item *it, bool remove)
{
    struct kt_xml *x = kt_xml_add_child(query, "item", NS_ROSTER);
    kt_xml_set_attr(x, "jid", it->contact);
    if (remove) {
        kt_xml_set_attr(x, "subscription", "remove");
        return;
    }
    if (it->name)
        kt_xml_set_attr(x, "name", it->name);
    kt_xml_set_attr(x, "subscription", sub_name(it->sub));
    if (it->ask)
        kt_xml_set_attr(x, "ask", "subscribe");
    if (it->approved)
        kt_xml_set_attr(x, "approved", "true");
    for (const char *g = it->groups; g && *g;) {
        const char *nl = strchr(g, '\n');
        size_t len = nl ? (size_t)(nl - g) : strlen(g);
        kt_xml_add_text(kt_xml_add_child(x, "group", NS_ROSTER), g, len);
        g = nl ? nl + 1 : g + len;
    }
}

/* --- database (worker side) --- */

static int item_load(struct kt_db *db, const char *owner, const char *contact, struct item *it)
{
    struct kt_db_param p[] = {KT_DB_P_STR(owner), KT_DB_P_STR(contact)};
    struct kt_db_result *r = NULL;
    memset(it, 0, sizeof(*it));
    it->contact = kt_strdup(contact);
    if (kt_db_query(db,
                    "SELECT in_roster, name, groups_, subscription, ask, approved, pending_in "
                    "FROM roster WHERE owner = ? AND contact = ?",
                    p, 2, &r) < 0)
        return -1;
    if (r->nrows == 1) {
        it->in_roster = kt_db_int(r, 0, 0) != 0;
        if (kt_db_value(r, 0, 1))
            it->name = kt_strdup(kt_db_value(r, 0, 1));
        if (kt_db_value(r, 0, 2) && *kt_db_value(r, 0, 2))
            it->groups = kt_strdup(kt_db_value(r, 0, 2));
        it->sub = (int)kt_db_int(r, 0, 3) & 3;
        it->ask = kt_db_int(r, 0, 4) != 0;
        it->approved = kt_db_int(r, 0, 5) != 0;
        if (kt_db_value(r, 0, 6)) {
            it->pending_len = r->lens[6];
            it->pending_in = kt_strndup(kt_db_value(r, 0, 6), it->pending_len);
        }
    }
    kt_db_result_free(&r);
    return 0;
}

/* Writes it (or deletes the row when it holds no state) and bumps the
 * owner's version; returns the new version or -1. */
static long long item_save(struct kt_db *db, const char *owner, const struct item *it)
{
    struct kt_db_param o = KT_DB_P_STR(owner);
    struct kt_db_result *r = NULL;
    long long ver = -1;
    if (kt_db_exec(db,
                   "INSERT INTO roster_version (owner, ver) VALUES (?, 1) "
                   "ON DUPLICATE KEY UPDATE ver = ver + 1",
                   &o, 1, NULL, NULL) < 0 ||
        kt_db_query(db, "SELECT ver FROM roster_version WHERE owner = ?", &o, 1, &r) < 0 ||
        r->nrows != 1)
        goto out;
    ver = kt_db_int(r, 0, 0);
    bool empty = !it->in_roster && !it->sub && !it->ask && !it->approved && !it->pending_in;
    if (empty) {
        struct kt_db_param p[] = {KT_DB_P_STR(owner), KT_DB_P_STR(it->contact)};
        if (kt_db_exec(db, "DELETE FROM roster WHERE owner = ? AND contact = ?", p, 2, NULL,
                       NULL) < 0)
            ver = -1;
        goto out;
    }
    struct kt_db_param p[] = {
        KT_DB_P_STR(owner),
        KT_DB_P_STR(it->contact),
        KT_DB_P_INT(it->in_roster),
        it->name ? KT_DB_P_STR(it->name) : KT_DB_P_NULL,
        it->groups ? KT_DB_P_STR(it->groups) : KT_DB_P_NULL,
        KT_DB_P_INT(it->sub),
        KT_DB_P_INT(it->ask),
        KT_DB_P_INT(it->approved),
        it->pending_in ? KT_DB_P_BLOB(it->pending_in, it->pending_len) : KT_DB_P_NULL,
        KT_DB_P_INT(ver),
    };
    if (kt_db_exec(db,
                   "REPLACE INTO roster (owner, contact, in_roster, name, groups_, subscription, "
                   "ask, approved, pending_in, ver) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   p, KT_ARRAY_SIZE(p), NULL, NULL) < 0)
        ver = -1;
out:
    kt_db_result_free(&r);
    return ver;
}

/* --- the subscription cache ---
 * What presence needs on every change (who sees the user, whom the user
 * sees) is kept in memory per owner while the owner has sessions: loaded
 * from the database by the first job that needs it, updated by every
 * roster change after its commit, dropped when the owner's last resource
 * leaves (sm_roster_forget). Jobs for one owner are serialised by its user
 * queue, so a load never races a change of the same owner; the shard mutex
 * only protects the table itself against the I/O thread's forget. */

#define RC_SHARDS 16
#define RC_BUCKETS 256

struct rc_contact {
    char *jid;
    int sub;
};

struct rc_owner {
    char *owner;
    struct rc_contact *v;
    unsigned n, cap;
    struct rc_owner *next;
};

struct sm_rcache {
    struct {
        pthread_mutex_t lock;
        struct rc_owner *buckets[RC_BUCKETS];
    } shards[RC_SHARDS];
};

static unsigned rc_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct rc_owner **rc_slot(struct sm_rcache *c, unsigned h, const char *owner)
{
    struct rc_owner **p = &c->shards[h % RC_SHARDS].buckets[(h / RC_SHARDS) % RC_BUCKETS];
    while (*p && strcmp((*p)->owner, owner) != 0)
        p = &(*p)->next;
    return p;
}

static void rc_owner_free(struct rc_owner *o)
{
    for (unsigned i = 0; i < o->n; i++)
        free(o->v[i].jid);
    free(o->v);
    free(o->owner);
    free(o);
}

static void rc_set(struct rc_owner *o, const char *jid, int sub)
{
    for (unsigned i = 0; i < o->n; i++)
        if (strcmp(o->v[i].jid, jid) == 0) {
            if (sub) {
                o->v[i].sub = sub;
            } else {
                free(o->v[i].jid);
                o->v[i] = o->v[--o->n];
            }
            return;
        }
    if (!sub)
        return;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 8;
        o->v = kt_realloc(o->v, o->cap * sizeof(*o->v));
    }
    o->v[o->n++] = (struct rc_contact){kt_strdup(jid), sub};
}

struct sm_rcache *sm_rcache_new(void)
{
    struct sm_rcache *c = kt_new(struct sm_rcache);
    for (unsigned i = 0; i < RC_SHARDS; i++)
        pthread_mutex_init(&c->shards[i].lock, NULL);
    return c;
}

void sm_rcache_free(struct sm_rcache **cp)
{
    struct sm_rcache *c = *cp;
    if (!c)
        return;
    for (unsigned i = 0; i < RC_SHARDS; i++) {
        for (unsigned b = 0; b < RC_BUCKETS; b++)
            while (c->shards[i].buckets[b]) {
                struct rc_owner *o = c->shards[i].buckets[b];
                c->shards[i].buckets[b] = o->next;
                rc_owner_free(o);
            }
        pthread_mutex_destroy(&c->shards[i].lock);
    }
    free(c);
    *cp = NULL;
}

void sm_roster_forget(struct sm *sm, const char *owner)
{
    unsigned h = rc_hash(owner);
    pthread_mutex_lock(&sm->rcache->shards[h % RC_SHARDS].lock);
    struct rc_owner **p = rc_slot(sm->rcache, h, owner);
    struct rc_owner *gone = *p;
    if (gone)
        *p = gone->next;
    pthread_mutex_unlock(&sm->rcache->shards[h % RC_SHARDS].lock);
    if (gone)
        rc_owner_free(gone);
}

/* After a committed change: keep a loaded cache in step. */
static void rc_changed(struct sm *sm, const char *owner, const char *contact, int sub)
{
    unsigned h = rc_hash(owner);
    pthread_mutex_lock(&sm->rcache->shards[h % RC_SHARDS].lock);
    struct rc_owner *o = *rc_slot(sm->rcache, h, owner);
    if (o)
        rc_set(o, contact, sub);
    pthread_mutex_unlock(&sm->rcache->shards[h % RC_SHARDS].lock);
}

/* Worker side: makes sure owner's subscriptions are cached. -1 on a
 * database error. */
static int rc_load(struct sm *sm, struct kt_db *db, const char *owner)
{
    unsigned h = rc_hash(owner);
    pthread_mutex_lock(&sm->rcache->shards[h % RC_SHARDS].lock);
    bool cached = *rc_slot(sm->rcache, h, owner) != NULL;
    pthread_mutex_unlock(&sm->rcache->shards[h % RC_SHARDS].lock);
    if (cached)
        return 0;
    struct kt_db_param p = KT_DB_P_STR(owner);
    struct kt_db_result *r = NULL;
    if (kt_db_query(db, "SELECT contact, subscription FROM roster WHERE owner = ? "
                        "AND subscription <> 0",
                    &p, 1, &r) < 0)
        return -1;
    struct rc_owner *o = kt_new(struct rc_owner);
    o->owner = kt_strdup(owner);
    for (unsigned i = 0; i < r->nrows; i++)
        rc_set(o, kt_db_value(r, i, 0), (int)kt_db_int(r, i, 1) & 3);
    kt_db_result_free(&r);
    pthread_mutex_lock(&sm->rcache->shards[h % RC_SHARDS].lock);
    struct rc_owner **slot = rc_slot(sm->rcache, h, owner);
    if (!*slot) {
        *slot = o;
        o = NULL;
    }
    pthread_mutex_unlock(&sm->rcache->shards[h % RC_SHARDS].lock);
    if (o)
        rc_owner_free(o);
    return 0;
}

char **sm_roster_contacts(struct sm *sm, struct kt_db *db, const char *owner, int mask,
                          unsigned *n_r)
{
    *n_r = 0;
    if (rc_load(sm, db, owner) < 0)
        return NULL;
    unsigned h = rc_hash(owner);
    pthread_mutex_lock(&sm->rcache->shards[h % RC_SHARDS].lock);
    struct rc_owner *o = *rc_slot(sm->rcache, h, owner);
    char **v = kt_calloc((o ? o->n : 0) + 1, sizeof(*v));
    for (unsigned i = 0; o && i < o->n; i++)
        if (o->v[i].sub & mask)
            v[(*n_r)++] = kt_strdup(o->v[i].jid);
    pthread_mutex_unlock(&sm->rcache->shards[h % RC_SHARDS].lock);
    return v;
}

int sm_roster_sub(struct sm *sm, struct kt_db *db, const char *owner, const char *contact)
{
    unsigned h = rc_hash(owner);
    int sub = -2; /* not cached */
    pthread_mutex_lock(&sm->rcache->shards[h % RC_SHARDS].lock);
    struct rc_owner *o = *rc_slot(sm->rcache, h, owner);
    for (unsigned i = 0; o && i < o->n && sub == -2; i++)
        if (strcmp(o->v[i].jid, contact) == 0)
            sub = o->v[i].sub;
    if (o && sub == -2)
        sub = 0;
    pthread_mutex_unlock(&sm->rcache->shards[h % RC_SHARDS].lock);
    if (sub != -2)
        return sub;
    /* Not cached (e.g. a probe for a user who is offline): one row, and the
     * cache is left alone so that it only holds users with sessions. */
    struct kt_db_param p[] = {KT_DB_P_STR(owner), KT_DB_P_STR(contact)};
    struct kt_db_result *r = NULL;
    if (kt_db_query(db, "SELECT subscription FROM roster WHERE owner = ? AND contact = ?", p, 2,
                    &r) < 0)
        return -1;
    sub = r->nrows ? (int)kt_db_int(r, 0, 0) & 3 : 0;
    kt_db_result_free(&r);
    return sub;
}

void sm_roster_contacts_free(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

/* --- sending (I/O thread) --- */

static void push(struct sm *sm, const struct kt_jid *owner, const struct item *it, bool remove,
                 long long ver)
{
    struct kt_session *res[MAX_RES];
    unsigned n = sm_users_interested(sm->users, owner, res, MAX_RES);
    static atomic_ulong seq;
    for (unsigned i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "push%lu", atomic_fetch_add(&seq, 1));
        struct kt_xml *iq = kt_xml_new("iq", KT_NS_CLIENT);
        kt_xml_set_attr(iq, "type", "set");
        kt_xml_set_attr(iq, "id", id);
        kt_xml_set_attr(iq, "to", kt_session_jid(res[i])->full);
        struct kt_xml *q = kt_xml_add_child(iq, "query", NS_ROSTER);
        char v[32];
        snprintf(v, sizeof(v), "%lld", ver);
        kt_xml_set_attr(q, "ver", v);
        item_xml(q, it, remove);
        struct kt_stanza *st = kt_stanza_new(iq);
        kt_session_deliver(res[i], st);
        kt_stanza_unref(&st);
        kt_session_unref(&res[i]);
    }
}

/* A presence of type `type` from -> to, routed. */
/* Each available resource's presence (or unavailable from each) to contact. */
static void presence_to_contact(struct sm *sm, const struct kt_jid *owner, const char *contact,
                                bool unavailable)
{
    struct kt_stanza *pres[MAX_RES];
    unsigned n = sm_users_presences(sm->users, owner, pres, MAX_RES);
    struct kt_jid *to = kt_jid_parse(contact);
    for (unsigned i = 0; i < n; i++) {
        if (to && unavailable) {
            sm_send_presence(sm, "unavailable", kt_stanza_from(pres[i])->full, contact);
        } else if (to) {
            struct kt_stanza *copy = kt_stanza_copy(pres[i]);
            kt_stanza_set_to(copy, to);
            sm_send(sm, copy);
            kt_stanza_unref(&copy);
        }
        kt_stanza_unref(&pres[i]);
    }
    kt_jid_free(&to);
}

static void deliver_to_available(struct sm *sm, const struct kt_jid *owner, struct kt_stanza *st)
{
    struct kt_session *res[MAX_RES];
    unsigned n = sm_users_resources(sm->users, owner, true, res, MAX_RES);
    for (unsigned i = 0; i < n; i++) {
        kt_session_deliver(res[i], st);
        kt_session_unref(&res[i]);
    }
}

/* --- jobs --- */

enum op {
    OP_GET,
    OP_SET,
    OP_REMOVE,
    OP_OUT, /* outbound subscription stanza */
    OP_IN,  /* inbound subscription stanza */
    OP_PENDING, /* deliver stored requests to a new session */
};

struct job {
    struct sm *sm;
    enum op op;
    struct kt_stanza *st;
    struct kt_jid *owner; /* bare */
    struct item it;       /* the requested change (set) / result */
    enum kt_stanza_type type;
    bool changed, route, auto_subscribed, send_presence, send_unavailable, deliver, unknown_owner;
    bool push_remove;
    long long ver;
    enum kt_stanza_err err;
    struct kt_db_result *rows; /* get, pending */
    long long current_ver;
    struct kt_session *session; /* pending */
};

static void job_free(struct job *j)
{
    kt_stanza_unref(&j->st);
    kt_jid_free(&j->owner);
    item_clear(&j->it);
    kt_db_result_free(&j->rows);
    kt_session_unref(&j->session);
    free(j);
}

static void run_get(struct kt_db *db, struct job *j)
{
    struct kt_db_param o = KT_DB_P_STR(j->owner->local);
    struct kt_db_result *v = NULL;
    if (kt_db_query(db, "SELECT ver FROM roster_version WHERE owner = ?", &o, 1, &v) < 0 ||
        kt_db_query(db,
                    "SELECT contact, name, groups_, subscription, ask, approved FROM roster "
                    "WHERE owner = ? AND in_roster = 1 ORDER BY contact",
                    &o, 1, &j->rows) < 0) {
        j->err = KT_SE_INTERNAL_SERVER_ERROR;
    } else {
        j->current_ver = v->nrows ? kt_db_int(v, 0, 0) : 0;
    }
    kt_db_result_free(&v);
}

/* The state machine on the owner's row (RFC 6121 appendix A). */
static void apply(struct job *j, struct item *it)
{
    int sub = it->sub;
    bool ask = it->ask, approved = it->approved, pending = it->pending_in != NULL;
    switch (j->op == OP_OUT ? (int)j->type : -(int)j->type) {
    case KT_TYPE_SUBSCRIBE: /* the owner asks to see the contact */
        if (!(sub & SUB_TO)) {
            it->ask = true;
            it->in_roster = true;
        }
        j->route = true;
        break;
    case KT_TYPE_SUBSCRIBED: /* the owner lets the contact see it */
        if (pending) {
            it->sub |= SUB_FROM;
            it->in_roster = true; /* §3.1.5: approving adds the contact */
            free(it->pending_in);
            it->pending_in = NULL;
            it->approved = false;
            j->route = j->send_presence = true;
        } else if (!(sub & SUB_FROM)) {
            it->approved = true; /* pre-approval (§3.4): not routed */
        }
        break;
    case KT_TYPE_UNSUBSCRIBE:
        if ((sub & SUB_TO) || ask) {
            it->sub &= ~SUB_TO;
            it->ask = false;
            j->route = true;
        }
        break;
    case KT_TYPE_UNSUBSCRIBED:
        if (sub & SUB_FROM) {
            it->sub &= ~SUB_FROM;
            j->route = j->send_unavailable = true;
        } else if (pending) {
            free(it->pending_in);
            it->pending_in = NULL;
            j->route = true;
        } else if (approved) {
            it->approved = false;
        }
        break;
    case -KT_TYPE_SUBSCRIBE: /* the contact asks to see the owner */
        if (sub & SUB_FROM) {
            j->auto_subscribed = true;
        } else if (approved) {
            it->sub |= SUB_FROM;
            it->approved = false;
            j->auto_subscribed = j->send_presence = true;
        } else {
            size_t len;
            const char *wire = kt_stanza_wire(j->st, &len);
            free(it->pending_in);
            it->pending_in = kt_strndup(wire, len);
            it->pending_len = len;
            j->deliver = true;
        }
        break;
    case -KT_TYPE_SUBSCRIBED:
        if (ask) {
            it->sub |= SUB_TO;
            it->ask = false;
            j->deliver = true;
        }
        break;
    case -KT_TYPE_UNSUBSCRIBE:
        if (sub & SUB_FROM) {
            it->sub &= ~SUB_FROM;
            j->deliver = j->send_unavailable = true;
        } else if (pending) {
            free(it->pending_in);
            it->pending_in = NULL;
            j->deliver = true;
        }
        break;
    case -KT_TYPE_UNSUBSCRIBED:
        if ((sub & SUB_TO) || ask) {
            it->sub &= ~SUB_TO;
            it->ask = false;
            j->deliver = true;
        }
        break;
    default:
        break;
    }
    j->changed = it->sub != sub || it->ask != ask || it->approved != approved ||
                 (it->pending_in != NULL) != pending || j->op == OP_SET || j->op == OP_REMOVE;
}

/* One attempt; returns the MariaDB error number of a failure (0: done). */
static unsigned run_change_once(struct kt_db *db, struct job *j);

/* The owner's queue already serialises its changes, so no row locks are
 * taken; a deadlock or lock timeout between owners (InnoDB gap locks on
 * the roster_version upsert) is retried: it is transient, and giving up
 * would lose a subscription stanza. */
static void run_change(struct kt_db *db, struct job *j)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        unsigned err = run_change_once(db, j);
        if (err != 1213 && err != 1205) /* ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT */
            return;
        j->err = KT_SE_NONE;
        j->changed = j->route = j->auto_subscribed = j->send_presence = false;
        j->send_unavailable = j->deliver = j->push_remove = false;
    }
    kt_log(KT_LOG_ERROR, "sm: roster change for %s kept deadlocking", j->owner->local);
}

static unsigned run_change_once(struct kt_db *db, struct job *j)
{
    struct item cur;
    const char *contact = j->it.contact;
    if (kt_db_begin(db) < 0 || item_load(db, j->owner->local, contact, &cur) < 0)
        goto fail;
    bool was_in_roster = cur.in_roster;
    if (j->op == OP_SET) {
        cur.in_roster = true;
        free(cur.name);
        cur.name = j->it.name ? kt_strdup(j->it.name) : NULL;
        free(cur.groups);
        cur.groups = j->it.groups ? kt_strdup(j->it.groups) : NULL;
        j->changed = true;
        if (!was_in_roster) {
            struct kt_db_param p[] = {KT_DB_P_STR(j->owner->local)};
            struct kt_db_result *r = NULL;
            if (kt_db_query(db, "SELECT COUNT(*) FROM roster WHERE owner = ? AND in_roster = 1",
                            p, 1, &r) < 0) {
                item_clear(&cur);
                goto fail;
            }
            bool full = kt_db_int(r, 0, 0) >= j->sm->conf->roster_max;
            kt_db_result_free(&r);
            if (full) {
                item_clear(&cur);
                kt_db_rollback(db);
                j->err = KT_SE_NOT_ALLOWED;
                return 0;
            }
        }
    } else if (j->op == OP_REMOVE) {
        if (!was_in_roster) {
            item_clear(&cur);
            kt_db_rollback(db);
            j->err = KT_SE_ITEM_NOT_FOUND;
            return 0;
        }
        /* §2.5.2: cancel both directions, then forget the item. */
        j->send_unavailable = (cur.sub & SUB_FROM) != 0;
        j->it.sub = cur.sub;
        j->it.ask = cur.ask;
        j->it.pending_in = cur.pending_in ? kt_strdup("") : NULL; /* only "there was one" */
        cur.sub = 0;
        cur.ask = cur.approved = cur.in_roster = false;
        free(cur.pending_in);
        cur.pending_in = NULL;
        j->changed = j->push_remove = true;
    } else {
        apply(j, &cur);
    }
    if (j->changed) {
        j->ver = item_save(db, j->owner->local, &cur);
        if (j->ver < 0)
            goto fail_cur;
    }
    if (kt_db_commit(db) < 0)
        goto fail_cur;
    if (j->changed)
        rc_changed(j->sm, j->owner->local, contact, cur.sub);
    if (j->op != OP_REMOVE) {
        char *contact_copy = kt_strdup(contact);
        item_clear(&j->it);
        j->it = cur;
        if (!j->it.contact)
            j->it.contact = contact_copy;
        else
            free(contact_copy);
        j->push_remove = !cur.in_roster && was_in_roster;
    } else {
        item_clear(&cur);
    }
    return 0;
fail_cur:
    item_clear(&cur);
fail:;
    unsigned dberr = kt_db_errno(db);
    kt_db_rollback(db);
    /* A foreign key error means the owner has no account. */
    j->unknown_owner = dberr == 1452;
    j->err = KT_SE_INTERNAL_SERVER_ERROR;
    if (!j->unknown_owner && dberr != 1213 && dberr != 1205)
        kt_log(KT_LOG_ERROR, "sm: roster change for %s failed: %s", j->owner->local,
               kt_db_error(db));
    return dberr;
}

static void run_pending(struct kt_db *db, struct job *j)
{
    struct kt_db_param o = KT_DB_P_STR(j->owner->local);
    kt_db_query(db, "SELECT pending_in FROM roster WHERE owner = ? AND pending_in IS NOT NULL",
                &o, 1, &j->rows);
}

static void job_run(struct kt_db *db, void *data)
{
    struct job *j = data;
    if (j->op == OP_GET)
        run_get(db, j);
    else if (j->op == OP_PENDING)
        run_pending(db, j);
    else
        run_change(db, j);
}

static void reply_result(struct sm *sm, struct job *j, struct kt_xml *payload)
{
    struct kt_stanza *r = kt_stanza_iq_result(j->st);
    if (payload)
        kt_xml_append(kt_stanza_xml_mut(r), payload);
    kt_stanza_touch(r);
    sm_send(sm, r);
    kt_stanza_unref(&r);
}

static void done_get(struct job *j)
{
    const char *asked = kt_xml_attr(kt_xml_first_element(kt_stanza_xml(j->st)), "ver");
    char ver[32];
    snprintf(ver, sizeof(ver), "%lld", j->current_ver);
    if (asked && strcmp(asked, ver) == 0) {
        reply_result(j->sm, j, NULL); /* XEP-0237 / §2.6.3: unchanged, empty result */
        return;
    }
    struct kt_xml *q = kt_xml_new("query", NS_ROSTER);
    kt_xml_set_attr(q, "ver", ver);
    for (unsigned i = 0; i < j->rows->nrows; i++) {
        struct item it = {
            .contact = (char *)kt_db_value(j->rows, i, 0),
            .name = (char *)kt_db_value(j->rows, i, 1),
            .groups = (char *)kt_db_value(j->rows, i, 2),
            .sub = (int)kt_db_int(j->rows, i, 3),
            .ask = kt_db_int(j->rows, i, 4) != 0,
            .approved = kt_db_int(j->rows, i, 5) != 0,
        };
        item_xml(q, &it, false);
    }
    reply_result(j->sm, j, q);
}

static void job_done(void *data)
{
    struct job *j = data;
    struct sm *sm = j->sm;
    if (j->op == OP_GET) {
        if (j->err)
            kt_router_bounce(sm->core->router, j->st, j->err, NULL);
        else
            done_get(j);
        job_free(j);
        return;
    }
    if (j->op == OP_PENDING) {
        for (unsigned i = 0; j->rows && i < j->rows->nrows; i++) {
            struct kt_stanza *st = sm_parse_stored(kt_db_value(j->rows, i, 0), j->rows->lens[i]);
            if (st)
                kt_session_deliver(j->session, st);
            kt_stanza_unref(&st);
        }
        job_free(j);
        return;
    }
    const char *owner_bare = j->owner->bare, *contact = j->it.contact;
    if (j->err) {
        if (j->op == OP_IN && j->unknown_owner && j->type == KT_TYPE_SUBSCRIBE)
            sm_send_presence(sm, "unsubscribed", owner_bare, contact); /* §3.1.3: no such user */
        else if (j->op == OP_SET || j->op == OP_REMOVE)
            kt_router_bounce(sm->core->router, j->st, j->err, NULL);
        job_free(j);
        return;
    }
    if (j->op == OP_SET || j->op == OP_REMOVE)
        reply_result(sm, j, NULL);
    if (j->changed && (j->it.in_roster || j->push_remove || j->op == OP_REMOVE))
        push(sm, j->owner, &j->it, j->push_remove || j->op == OP_REMOVE, j->ver);
    if (j->op == OP_REMOVE) {
        if (j->it.sub & SUB_FROM || j->it.pending_in)
            sm_send_presence(sm, "unsubscribed", owner_bare, contact);
        if (j->it.sub & SUB_TO || j->it.ask)
            sm_send_presence(sm, "unsubscribe", owner_bare, contact);
    }
    if (j->route) {
        /* §3.1.2: stamped with the bare JID, and routed as addressed. */
        struct kt_stanza *out = kt_stanza_copy(j->st);
        kt_stanza_set_from(out, j->owner);
        sm_send(sm, out);
        kt_stanza_unref(&out);
    }
    if (j->auto_subscribed)
        sm_send_presence(sm, "subscribed", owner_bare, contact);
    if (j->deliver)
        deliver_to_available(sm, j->owner, j->st);
    if (j->send_presence)
        presence_to_contact(sm, j->owner, contact, false);
    if (j->send_unavailable)
        presence_to_contact(sm, j->owner, contact, true);
    job_free(j);
}

static void submit(struct sm *sm, struct job *j)
{
    j->sm = sm;
    kt_job_submit(sm->core->workers, sm_user_queue(sm, j->owner->local), job_run, job_done, j);
}

/* --- hooks --- */

static bool local_user(const struct sm *sm, const struct kt_jid *jid)
{
    return jid && jid->local && strcmp(jid->domain, sm->core->network) == 0;
}

static bool valid_groups(const struct kt_xml *item, char **groups_r)
{
    struct kt_buf b = {0};
    for (const struct kt_xml *g = kt_xml_first_element(item); g; g = kt_xml_next_element(g)) {
        if (strcmp(g->name, "group") != 0)
            continue;
        char *text = kt_xml_text(g);
        bool ok = *text && strlen(text) <= GROUP_MAX_LEN && !strchr(text, '\n');
        /* duplicates are not allowed (§2.1.2.5 says they are an error) */
        if (ok && b.data) {
            for (const char *p = b.data; *p;) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p) : strlen(p);
                if (len == strlen(text) && memcmp(p, text, len) == 0)
                    ok = false;
                p = nl ? nl + 1 : p + len;
            }
        }
        if (ok)
            kt_buf_printf(&b, "%s%s", b.len ? "\n" : "", text);
        free(text);
        if (!ok) {
            kt_buf_free(&b);
            return false;
        }
    }
    *groups_r = b.data ? kt_buf_steal(&b, NULL) : NULL;
    return true;
}

static enum kt_verdict roster_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st);
    const struct kt_jid *to = kt_stanza_to(st);
    if (!local_user(sm, from) || !from->resource)
        return KT_PASS;
    /* Only the owner's own roster: no 'to', its bare JID (or the server). */
    if (to && !sm_to_server(sm, st) && (to->resource || !kt_jid_bare_equal(to, from))) {
        kt_router_bounce(sm->core->router, st, KT_SE_FORBIDDEN, NULL); /* §2.1.5 */
        return KT_HANDLED;
    }
    struct job *j = kt_new(struct job);
    j->st = kt_stanza_ref(st);
    j->owner = kt_jid_to_bare(from);
    if (kt_stanza_type(st) == KT_TYPE_GET) {
        struct kt_session *s = kt_sessions_find(sm->core->sessions, from);
        if (s)
            sm_users_set_interested(sm->users, s);
        kt_session_unref(&s);
        j->op = OP_GET;
        submit(sm, j);
        return KT_HANDLED;
    }
    /* set: exactly one item (§2.3.3) */
    const struct kt_xml *q = kt_xml_first_element(kt_stanza_xml(st));
    const struct kt_xml *item = kt_xml_child(q, "item", NS_ROSTER);
    const char *jid = item ? kt_xml_attr(item, "jid") : NULL;
    struct kt_jid *contact = jid ? kt_jid_parse(jid) : NULL;
    enum kt_stanza_err err = KT_SE_NONE;
    unsigned nitems = 0;
    for (const struct kt_xml *c = kt_xml_first_element(q); c; c = kt_xml_next_element(c))
        nitems++;
    const char *sub = item ? kt_xml_attr(item, "subscription") : NULL;
    const char *name = item ? kt_xml_attr(item, "name") : NULL;
    if (nitems != 1 || !item || !contact || contact->resource)
        err = KT_SE_BAD_REQUEST;
    else if (strlen(contact->bare) > CONTACT_MAX || (name && strlen(name) > NAME_MAX_LEN))
        err = KT_SE_NOT_ACCEPTABLE;
    else if (kt_jid_bare_equal(contact, from))
        err = KT_SE_NOT_ALLOWED; /* one's own JID is not a contact */
    else if (sub && strcmp(sub, "remove") != 0 && strcmp(sub, "none") != 0 &&
             strcmp(sub, "both") != 0 && strcmp(sub, "to") != 0 && strcmp(sub, "from") != 0)
        err = KT_SE_BAD_REQUEST;
    else if (!valid_groups(item, &j->it.groups))
        err = KT_SE_NOT_ACCEPTABLE;
    if (err) {
        kt_jid_free(&contact);
        job_free(j);
        kt_router_bounce(sm->core->router, st, err, NULL);
        return KT_HANDLED;
    }
    j->op = sub && strcmp(sub, "remove") == 0 ? OP_REMOVE : OP_SET;
    j->it.contact = kt_strdup(contact->bare);
    j->it.name = name && *name ? kt_strdup(name) : NULL;
    kt_jid_free(&contact);
    submit(sm, j);
    return KT_HANDLED;
}

#define SUBSCRIPTION_TYPES \
    (KT_TYPE_SUBSCRIBE | KT_TYPE_SUBSCRIBED | KT_TYPE_UNSUBSCRIBE | KT_TYPE_UNSUBSCRIBED)

/* IN: a local user's subscription stanza, before it is routed. */
static enum kt_verdict subscription_out(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!local_user(sm, from) || !from->resource)
        return KT_PASS; /* already stamped bare: on its way */
    if (!to || kt_jid_bare_equal(to, from) || strlen(to->bare) > CONTACT_MAX)
        return KT_HANDLED; /* nothing sensible to subscribe to: ignored (§3.1.1) */
    struct job *j = kt_new(struct job);
    j->op = OP_OUT;
    j->type = kt_stanza_type(st);
    j->st = kt_stanza_ref(st);
    j->owner = kt_jid_to_bare(from);
    j->it.contact = kt_strdup(to->bare);
    /* The stanza goes on to the contact addressed to the bare JID (§3.1.2). */
    if (to->resource) {
        struct kt_stanza *bare = kt_stanza_copy(st);
        struct kt_jid *tb = kt_jid_to_bare(to);
        kt_stanza_set_to(bare, tb);
        kt_jid_free(&tb);
        kt_stanza_unref(&j->st);
        j->st = bare;
    }
    submit(sm, j);
    return KT_HANDLED;
}

/* LOCAL: a subscription stanza for a local user. */
static enum kt_verdict subscription_in(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!local_user(sm, to) || !from || strlen(from->bare) > CONTACT_MAX)
        return KT_PASS;
    struct job *j = kt_new(struct job);
    j->op = OP_IN;
    j->type = kt_stanza_type(st);
    j->owner = kt_jid_to_bare(to);
    j->it.contact = kt_strdup(from->bare);
    /* Kept as the contact's bare JID: what the owner sees and answers. */
    struct kt_stanza *copy = kt_stanza_copy(st);
    struct kt_jid *fb = kt_jid_to_bare(from);
    kt_stanza_set_from(copy, fb);
    kt_stanza_set_to(copy, j->owner);
    kt_jid_free(&fb);
    j->st = copy;
    submit(sm, j);
    return KT_HANDLED;
}

void sm_roster_send_pending(struct sm *sm, struct kt_session *s)
{
    struct job *j = kt_new(struct job);
    j->op = OP_PENDING;
    j->owner = kt_jid_to_bare(kt_session_jid(s));
    j->session = kt_session_ref(s);
    submit(sm, j);
}

int sm_roster_init(struct sm *sm)
{
    static const struct kt_match iq = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET | KT_TYPE_SET, .ns = NS_ROSTER, .name = "query"};
    static const struct kt_match subs = {.kinds = KT_KIND_PRESENCE, .types = SUBSCRIPTION_TYPES};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &iq, 0, roster_iq, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_IN, &subs, 0, subscription_out, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &subs, 0, subscription_in, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the roster hooks");
        return -1;
    }
    return 0;
}
