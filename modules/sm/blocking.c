/* Blocking Command (XEP-0191): each user's blocklist, kept in the
 * `blocklist` table and cached in memory, and its enforcement.
 *
 * Requests (LOCAL hook): an iq without 'to' or to the sender's own bare JID.
 * get <blocklist/> answers the cached list and marks the requesting resource
 * as one that gets pushes (§3.3: pushes go to resources that requested the
 * list). set <block/> (at least one item, else bad-request; at most
 * BLOCKLIST_MAX items in the list, else resource-constraint), set <unblock/>
 * with items or empty (unblock all). A JID that does not parse is
 * jid-malformed. Writes run on the user's job queue; when they are stored
 * the cache is updated, the result sent and the change pushed.
 *
 * Enforcement (IN hook, before anything else sees the stanza): a stanza that
 * a local resource sends to a JID its user blocks is refused with
 * not-acceptable and <blocked xmlns='urn:xmpp:blocking:errors'/> (message,
 * iq get/set) or dropped (presence, iq result, errors): §3.4 says it MUST
 * NOT be routed. A stanza to a local user from a JID that user blocks is
 * dropped (presence, iq result/error) or answered with service-unavailable
 * (message, iq get/set), so the user looks offline. JIDs match by §3.7:
 * full JID, bare JID (any resource), domain/resource, domain (also its
 * users and subdomains). The user's own resources and the server itself are
 * never blocked. Doing it in IN rather than LOCAL means nothing else (carbons,
 * offline storage, roster) ever sees a blocked stanza, and a held stanza can
 * simply be dispatched again.
 *
 * The cache: a sharded hash (like users.c) of bare JID -> entry. An entry is
 * created, and its list loaded by a job on the user's queue, by the first
 * stanza that needs it: one from the user (including the initial presence,
 * so the list is ready when presence is broadcast) or to the user (so a
 * blocked contact's message is not stored offline for a user who is not
 * connected). Until the load completes, every stanza that needs the entry
 * is held in it, in arrival order, and dispatched again once the list is
 * there: nothing slips through before the list is known, at the price of
 * one database round trip for the first stanza. While an entry flushes its
 * held stanzas, newcomers queue behind them, so order is kept. A failed load
 * bounces what was held (internal-server-error; presence is dropped) and
 * forgets the entry, so the next stanza tries again. An account that does
 * not exist gets no entry kept (its held stanzas go on to be bounced by
 * delivery). Entries are dropped lazily, when a new entry is made in the
 * same bucket: one idle for IDLE_MS whose user has no resource in users.c
 * and no live resource that requested the list.
 *
 * sm_blocking_is_blocked (for presence broadcast) reads the cache and never
 * waits: an unknown or still loading user blocks nobody. Since a resource's
 * initial presence is held until its user's list is loaded, the broadcast
 * that follows it always sees the list. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"
#define SHARDS 32
#define BUCKETS 256
#define BLOCKLIST_MAX 1000
#define IDLE_MS (300 * 1000)

enum bl_state {
    BL_LOADING,  /* the load job is queued; stanzas wait in pending */
    BL_FLUSHING, /* loaded; the held stanzas are being dispatched again */
    BL_LOADED,
};

struct bl_user {
    struct kt_jid *jid; /* bare */
    enum bl_state state;
    struct kt_jid **items;
    unsigned nitems;
    struct kt_jid **requested; /* full JIDs that asked for the list */
    unsigned nrequested;
    struct kt_stanza **pending;
    unsigned npending;
    uint64_t used_ms;
    struct bl_user *next;
};

struct sm_blocking {
    struct sm *sm;
    atomic_uint push_id;
    struct {
        pthread_mutex_t lock;
        struct bl_user *buckets[BUCKETS];
    } shards[SHARDS];
};

/* The entry whose held stanzas this thread is dispatching again: they pass
 * its check instead of queueing behind themselves. */
static _Thread_local struct bl_user *tl_flushing;
/* Set while this file sends its own error replies, which must not be
 * checked (a bounce to a blocked contact would be refused). */
static _Thread_local bool tl_bypass;

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static bool local_user(const struct sm *sm, const struct kt_jid *jid)
{
    return jid && jid->local && strcmp(jid->domain, sm->core->network) == 0;
}

static void jids_free(struct kt_jid **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        kt_jid_free(&v[i]);
    free(v);
}

static void entry_free(struct bl_user *e)
{
    jids_free(e->items, e->nitems);
    jids_free(e->requested, e->nrequested);
    for (unsigned i = 0; i < e->npending; i++)
        kt_stanza_unref(&e->pending[i]);
    free(e->pending);
    kt_jid_free(&e->jid);
    free(e);
}

/* --- matching (§3.7) --- */

static bool matches(const struct kt_jid *item, const struct kt_jid *c)
{
    if (item->local) {
        if (!c->local || strcmp(item->bare, c->bare) != 0)
            return false;
        return !item->resource || (c->resource && strcmp(item->resource, c->resource) == 0);
    }
    if (item->resource)
        return !c->local && c->resource && strcmp(item->domain, c->domain) == 0 &&
               strcmp(item->resource, c->resource) == 0;
    size_t il = strlen(item->domain), cl = strlen(c->domain);
    if (cl == il)
        return strcmp(item->domain, c->domain) == 0;
    return cl > il && c->domain[cl - il - 1] == '.' && strcmp(c->domain + cl - il, item->domain) == 0;
}

static bool list_blocks(const struct bl_user *e, const struct kt_jid *contact)
{
    for (unsigned i = 0; contact && i < e->nitems; i++)
        if (matches(e->items[i], contact))
            return true;
    return false;
}

/* --- the cache --- */

/* Under the shard lock. */
static struct bl_user **slot_of(struct sm_blocking *b, unsigned h, const char *bare)
{
    struct bl_user **p = &b->shards[h % SHARDS].buckets[(h / SHARDS) % BUCKETS];
    while (*p && strcmp((*p)->jid->bare, bare) != 0)
        p = &(*p)->next;
    return p;
}

/* Under the shard lock: whether e can go (see the file comment). */
static bool evictable(struct sm_blocking *b, struct bl_user *e, uint64_t now)
{
    if (e->state != BL_LOADED || now - e->used_ms < IDLE_MS)
        return false;
    struct kt_session *s = NULL;
    if (sm_users_resources(b->sm->users, e->jid, false, &s, 1)) {
        kt_session_unref(&s);
        return false;
    }
    for (unsigned i = 0; i < e->nrequested; i++) {
        s = kt_sessions_find(b->sm->core->sessions, e->requested[i]);
        bool live = s != NULL;
        kt_session_unref(&s);
        if (live)
            return false;
    }
    return true;
}

static void sweep_bucket(struct sm_blocking *b, unsigned h, uint64_t now)
{
    struct bl_user **p = &b->shards[h % SHARDS].buckets[(h / SHARDS) % BUCKETS];
    while (*p) {
        if (evictable(b, *p, now)) {
            struct bl_user *gone = *p;
            *p = gone->next;
            entry_free(gone);
        } else {
            p = &(*p)->next;
        }
    }
}

static void hold(struct bl_user *e, struct kt_stanza *st)
{
    e->pending = kt_realloc(e->pending, (e->npending + 1) * sizeof(*e->pending));
    e->pending[e->npending++] = kt_stanza_ref(st);
}

static void load_submit(struct sm_blocking *b, struct bl_user *e);

/* The loaded entry of user's account with its shard lock held (*lock_r), or
 * NULL when st was held until the list is loaded (nothing locked). */
static struct bl_user *acquire(struct sm_blocking *b, const struct kt_jid *user,
                               struct kt_stanza *st, pthread_mutex_t **lock_r)
{
    unsigned h = hash(user->bare);
    pthread_mutex_t *lock = &b->shards[h % SHARDS].lock;
    uint64_t now = kt_now_ms();
    pthread_mutex_lock(lock);
    struct bl_user **p = slot_of(b, h, user->bare);
    struct bl_user *e = *p;
    if (!e) {
        sweep_bucket(b, h, now);
        e = kt_new(struct bl_user);
        e->jid = kt_jid_to_bare(user);
        e->state = BL_LOADING;
        e->used_ms = now;
        e->next = b->shards[h % SHARDS].buckets[(h / SHARDS) % BUCKETS];
        b->shards[h % SHARDS].buckets[(h / SHARDS) % BUCKETS] = e;
        hold(e, st);
        load_submit(b, e);
        pthread_mutex_unlock(lock);
        return NULL;
    }
    if (e->state == BL_LOADING || (e->state == BL_FLUSHING && tl_flushing != e)) {
        hold(e, st);
        pthread_mutex_unlock(lock);
        return NULL;
    }
    e->used_ms = now;
    *lock_r = lock;
    return e;
}

/* Whether user's list is known and blocks contact; false with *held_r set
 * when st was held for the load. */
static bool check(struct sm_blocking *b, const struct kt_jid *user, const struct kt_jid *contact,
                  struct kt_stanza *st, bool *held_r)
{
    pthread_mutex_t *lock;
    struct bl_user *e = acquire(b, user, st, &lock);
    *held_r = e == NULL;
    if (!e)
        return false;
    bool blocked = list_blocks(e, contact);
    pthread_mutex_unlock(lock);
    return blocked;
}

bool sm_blocking_is_blocked(struct sm *sm, const struct kt_jid *user, const struct kt_jid *contact)
{
    struct sm_blocking *b = sm->blocking;
    unsigned h = hash(user->bare);
    pthread_mutex_lock(&b->shards[h % SHARDS].lock);
    struct bl_user *e = *slot_of(b, h, user->bare);
    bool blocked = e && e->state != BL_LOADING && list_blocks(e, contact);
    pthread_mutex_unlock(&b->shards[h % SHARDS].lock);
    return blocked;
}

/* --- loading --- */

struct load_job {
    struct sm_blocking *b;
    struct bl_user *e; /* stays while LOADING or FLUSHING: never swept */
    char *local;
    struct kt_db_result *rows;
};

static void load_run(struct kt_db *db, void *data)
{
    struct load_job *j = data;
    struct kt_db_param p = KT_DB_P_STR(j->local);
    /* The join tells "no such account" (no row) from "empty list" (NULL). */
    if (kt_db_query(db,
                    "SELECT b.jid FROM users u LEFT JOIN blocklist b ON b.owner = u.localpart "
                    "WHERE u.localpart = ?",
                    &p, 1, &j->rows) < 0)
        kt_log(KT_LOG_ERROR, "sm: cannot load the blocklist of %s: %s", j->local,
               kt_db_error(db));
}

static void bounce_held(struct sm *sm, struct kt_stanza *st)
{
    enum kt_stanza_kind kind = kt_stanza_kind(st);
    if (kind == KT_KIND_MESSAGE || (kind == KT_KIND_IQ && (kt_stanza_type(st) &
                                                           (KT_TYPE_GET | KT_TYPE_SET)))) {
        tl_bypass = true;
        kt_router_bounce(sm->core->router, st, KT_SE_INTERNAL_SERVER_ERROR, NULL);
        tl_bypass = false;
    }
}

static void load_done(void *data)
{
    struct load_job *j = data;
    struct sm_blocking *b = j->b;
    struct bl_user *e = j->e;
    bool failed = j->rows == NULL, exists = j->rows && j->rows->nrows > 0;
    unsigned h = hash(e->jid->bare);
    pthread_mutex_t *lock = &b->shards[h % SHARDS].lock;

    pthread_mutex_lock(lock);
    kt_assert(e->state == BL_LOADING);
    e->state = BL_FLUSHING;
    for (unsigned i = 0; exists && i < j->rows->nrows; i++) {
        const char *s = kt_db_value(j->rows, i, 0);
        if (!s)
            continue; /* the account's row with no item */
        struct kt_jid *item = kt_jid_parse(s);
        if (!item) {
            kt_log(KT_LOG_WARN, "sm: unreadable blocklist item of %s ignored", j->local);
            continue;
        }
        e->items = kt_realloc(e->items, (e->nitems + 1) * sizeof(*e->items));
        e->items[e->nitems++] = item;
    }
    pthread_mutex_unlock(lock);

    /* Dispatch what was held, then whatever queued meanwhile, until none is
     * left; only then do newcomers go straight through. */
    for (;;) {
        pthread_mutex_lock(lock);
        struct kt_stanza **held = e->pending;
        unsigned n = e->npending;
        e->pending = NULL;
        e->npending = 0;
        if (n == 0) {
            if (failed || !exists) {
                struct bl_user **p = slot_of(b, h, e->jid->bare);
                kt_assert(*p == e);
                *p = e->next;
                entry_free(e);
            } else {
                e->state = BL_LOADED;
            }
            pthread_mutex_unlock(lock);
            free(held);
            break;
        }
        pthread_mutex_unlock(lock);
        struct bl_user *outer = tl_flushing;
        tl_flushing = e;
        for (unsigned i = 0; i < n; i++) {
            if (failed)
                bounce_held(b->sm, held[i]);
            else
                kt_router_dispatch(b->sm->core->router, held[i]);
            kt_stanza_unref(&held[i]);
        }
        tl_flushing = outer;
        free(held);
    }
    kt_db_result_free(&j->rows);
    free(j->local);
    free(j);
}

/* Under e's shard lock (the job only queues). */
static void load_submit(struct sm_blocking *b, struct bl_user *e)
{
    struct load_job *j = kt_new(struct load_job);
    j->b = b;
    j->e = e;
    j->local = kt_strdup(e->jid->local);
    kt_job_submit(b->sm->core->workers, sm_user_queue(b->sm, j->local), load_run, load_done, j);
}

/* --- enforcement --- */

/* The sender blocks the recipient: never routed (§3.4). */
static void refuse(struct sm *sm, const struct kt_stanza *st)
{
    enum kt_stanza_kind kind = kt_stanza_kind(st);
    enum kt_stanza_type type = kt_stanza_type(st);
    if (kind == KT_KIND_PRESENCE || type == KT_TYPE_ERROR ||
        (kind == KT_KIND_IQ && !(type & (KT_TYPE_GET | KT_TYPE_SET))))
        return;
    struct kt_stanza *err = kt_stanza_error_reply(st, KT_SE_NOT_ACCEPTABLE, NULL);
    if (!err)
        return;
    struct kt_xml *error = kt_stanza_xml_mut(err)->last; /* the <error/> just appended */
    kt_xml_add_child(error, "blocked", NS_BLOCKING_ERRORS);
    kt_stanza_touch(err);
    tl_bypass = true;
    sm_send(sm, err);
    tl_bypass = false;
    kt_stanza_unref(&err);
}

/* The recipient blocks the sender: the recipient looks offline (§3.4). */
static void drop_inbound(struct sm *sm, const struct kt_stanza *st)
{
    enum kt_stanza_kind kind = kt_stanza_kind(st);
    enum kt_stanza_type type = kt_stanza_type(st);
    if (kind == KT_KIND_MESSAGE || (kind == KT_KIND_IQ && (type & (KT_TYPE_GET | KT_TYPE_SET)))) {
        tl_bypass = true;
        kt_router_bounce(sm->core->router, st, KT_SE_SERVICE_UNAVAILABLE, NULL);
        tl_bypass = false;
    }
}

void sm_blocking_send_unchecked(struct sm *sm, struct kt_stanza *st)
{
    tl_bypass = true;
    sm_send(sm, st);
    tl_bypass = false;
}

static enum kt_verdict blocking_in(struct kt_stanza *st, void *data)
{
    struct sm_blocking *b = data;
    struct sm *sm = b->sm;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!from || tl_bypass)
        return KT_PASS;
    if (to && to->local && from->local && kt_jid_bare_equal(to, from))
        return KT_PASS; /* between one user's own resources */
    bool held;
    /* Outbound: what a local resource sends to a contact, and its presence
     * broadcast (no 'to'), which needs the list loaded first. */
    if (local_user(sm, from) && from->resource &&
        ((!to && kt_stanza_kind(st) == KT_KIND_PRESENCE) || (to && !sm_to_server(sm, st)))) {
        bool blocked = check(b, from, to, st, &held);
        if (held)
            return KT_HANDLED;
        if (blocked) {
            refuse(sm, st);
            return KT_HANDLED;
        }
    }
    /* Inbound: to a local user from anyone but the server itself. */
    if (local_user(sm, to) && !(!from->local && sm_is_local(sm, from))) {
        bool blocked = check(b, to, from, st, &held);
        if (held)
            return KT_HANDLED;
        if (blocked) {
            drop_inbound(sm, st);
            return KT_HANDLED;
        }
    }
    return KT_PASS;
}

/* --- requests --- */

enum bl_op { OP_BLOCK, OP_UNBLOCK, OP_UNBLOCK_ALL };

struct write_job {
    struct sm_blocking *b;
    struct kt_stanza *st; /* the request */
    char *local;
    enum bl_op op;
    struct kt_jid **jids;
    unsigned n;
    bool failed;
};

static void write_run(struct kt_db *db, void *data)
{
    struct write_job *j = data;
    static const char *const sql[] = {
        [OP_BLOCK] = "INSERT IGNORE INTO blocklist (owner, jid_hash, jid) "
                     "VALUES (?, UNHEX(SHA2(?, 256)), ?)",
        [OP_UNBLOCK] = "DELETE FROM blocklist WHERE owner = ? AND jid_hash = UNHEX(SHA2(?, 256))",
        [OP_UNBLOCK_ALL] = "DELETE FROM blocklist WHERE owner = ?",
    };
    unsigned rounds = j->op == OP_UNBLOCK_ALL ? 1 : j->n;
    /* Each statement is idempotent, so a retry after a lost connection is
     * harmless. */
    for (unsigned i = 0; i < rounds; i++) {
        const char *jid = j->op == OP_UNBLOCK_ALL ? "" : j->jids[i]->full;
        struct kt_db_param p[] = {KT_DB_P_STR(j->local), KT_DB_P_STR(jid), KT_DB_P_STR(jid)};
        unsigned np = j->op == OP_BLOCK ? 3 : j->op == OP_UNBLOCK ? 2 : 1;
        if (kt_db_exec(db, sql[j->op], p, np, NULL, NULL) < 0) {
            kt_log(KT_LOG_ERROR, "sm: cannot change the blocklist of %s: %s", j->local,
                   kt_db_error(db));
            j->failed = true;
            return;
        }
    }
}

static bool has_jid(struct kt_jid **v, unsigned n, const struct kt_jid *jid)
{
    for (unsigned i = 0; i < n; i++)
        if (kt_jid_equal(v[i], jid))
            return true;
    return false;
}

/* Under the lock: the change applied to the cached list. */
static void apply(struct bl_user *e, const struct write_job *j)
{
    if (j->op == OP_UNBLOCK_ALL) {
        jids_free(e->items, e->nitems);
        e->items = NULL;
        e->nitems = 0;
        return;
    }
    for (unsigned i = 0; i < j->n; i++) {
        if (j->op == OP_BLOCK) {
            if (!has_jid(e->items, e->nitems, j->jids[i])) {
                e->items = kt_realloc(e->items, (e->nitems + 1) * sizeof(*e->items));
                e->items[e->nitems++] = kt_jid_dup(j->jids[i]);
            }
            continue;
        }
        unsigned k = 0;
        for (unsigned m = 0; m < e->nitems; m++) {
            if (kt_jid_equal(e->items[m], j->jids[i]))
                kt_jid_free(&e->items[m]);
            else
                e->items[k++] = e->items[m];
        }
        e->nitems = k;
    }
}

static struct kt_stanza *push_for(struct sm_blocking *b, const struct write_job *j,
                                  const struct kt_jid *user, const struct kt_jid *to)
{
    char id[32];
    snprintf(id, sizeof(id), "blocking-push-%u", atomic_fetch_add(&b->push_id, 1));
    struct kt_xml *root = kt_xml_new("iq", KT_NS_CLIENT);
    kt_xml_set_attr(root, "type", "set");
    kt_xml_set_attr(root, "id", id);
    kt_xml_set_attr(root, "from", user->bare);
    kt_xml_set_attr(root, "to", to->full);
    struct kt_xml *el = kt_xml_add_child(root, j->op == OP_BLOCK ? "block" : "unblock",
                                         NS_BLOCKING);
    for (unsigned i = 0; j->op != OP_UNBLOCK_ALL && i < j->n; i++)
        kt_xml_set_attr(kt_xml_add_child(el, "item", NS_BLOCKING), "jid", j->jids[i]->full);
    return kt_stanza_new(root);
}

static void write_done(void *data)
{
    struct write_job *j = data;
    struct sm_blocking *b = j->b;
    struct sm *sm = b->sm;
    if (j->failed) {
        kt_router_bounce(sm->core->router, j->st, KT_SE_INTERNAL_SERVER_ERROR, NULL);
        goto out;
    }
    const struct kt_jid *user = kt_stanza_from(j->st);
    struct kt_session **targets = NULL;
    unsigned ntargets = 0;
    unsigned h = hash(user->bare);
    pthread_mutex_lock(&b->shards[h % SHARDS].lock);
    struct bl_user *e = *slot_of(b, h, user->bare);
    /* A LOADING entry was created after this write was queued: its load
     * reads the new list. No entry: the next load will. */
    if (e && e->state != BL_LOADING) {
        apply(e, j);
        targets = kt_calloc(e->nrequested ? e->nrequested : 1, sizeof(*targets));
        unsigned k = 0;
        for (unsigned i = 0; i < e->nrequested; i++) {
            struct kt_session *s = kt_sessions_find(sm->core->sessions, e->requested[i]);
            if (s) {
                targets[ntargets++] = s;
                e->requested[k++] = e->requested[i];
            } else {
                kt_jid_free(&e->requested[i]); /* that resource is gone */
            }
        }
        e->nrequested = k;
    }
    pthread_mutex_unlock(&b->shards[h % SHARDS].lock);

    struct kt_stanza *reply = kt_stanza_iq_result(j->st);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
    for (unsigned i = 0; i < ntargets; i++) {
        struct kt_stanza *push = push_for(b, j, user, kt_session_jid(targets[i]));
        kt_session_deliver(targets[i], push);
        kt_stanza_unref(&push);
        kt_session_unref(&targets[i]);
    }
    free(targets);
    /* §3.4/§3.5: a newly blocked contact sees the user go offline, an
     * unblocked one gets its presence again (if subscribed). */
    if (j->op == OP_BLOCK || j->op == OP_UNBLOCK)
        for (unsigned i = 0; i < j->n; i++)
            sm_presence_block_changed(sm, user, j->jids[i], j->op == OP_BLOCK);
out:
    kt_stanza_unref(&j->st);
    jids_free(j->jids, j->n);
    free(j->local);
    free(j);
}

/* The items of a block/unblock request; -1 with the error sent. */
static int parse_items(struct sm *sm, struct kt_stanza *st, struct kt_jid ***jids_r, unsigned *n_r)
{
    const struct kt_xml *cmd = kt_xml_first_element(kt_stanza_xml(st));
    struct kt_jid **jids = NULL;
    unsigned n = 0;
    for (const struct kt_xml *c = kt_xml_first_element(cmd); c; c = kt_xml_next_element(c)) {
        if (strcmp(c->name, "item") != 0 || !c->ns || strcmp(c->ns, NS_BLOCKING) != 0)
            continue;
        const char *s = kt_xml_attr(c, "jid");
        struct kt_jid *jid = s ? kt_jid_parse(s) : NULL;
        if (!jid) {
            jids_free(jids, n);
            kt_router_bounce(sm->core->router, st, s ? KT_SE_JID_MALFORMED : KT_SE_BAD_REQUEST,
                             s ? NULL : "an item needs a jid");
            return -1;
        }
        if (has_jid(jids, n, jid)) {
            kt_jid_free(&jid);
            continue;
        }
        jids = kt_realloc(jids, (n + 1) * sizeof(*jids));
        jids[n++] = jid;
    }
    *jids_r = jids;
    *n_r = n;
    return 0;
}

static enum kt_verdict blocking_iq(struct kt_stanza *st, void *data)
{
    struct sm_blocking *b = data;
    struct sm *sm = b->sm;
    const struct kt_jid *from = kt_stanza_from(st), *to = kt_stanza_to(st);
    if (!from)
        return KT_PASS;
    if (to && !(to->local && !to->resource && kt_jid_bare_equal(to, from)))
        return KT_PASS; /* addressed to someone else */
    if (!local_user(sm, from) || !from->resource) {
        kt_router_bounce(sm->core->router, st, KT_SE_NOT_ALLOWED, NULL);
        return KT_HANDLED;
    }
    const char *name = kt_stanza_payload_name(st);
    bool get = kt_stanza_type(st) == KT_TYPE_GET, list = strcmp(name, "blocklist") == 0;
    if (get != list) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST,
                         list ? "the blocklist is read with iq get"
                              : "block and unblock are iq set");
        return KT_HANDLED;
    }
    struct kt_jid **jids = NULL;
    unsigned n = 0;
    if (!list) {
        if (parse_items(sm, st, &jids, &n) < 0)
            return KT_HANDLED;
        if (n == 0 && strcmp(name, "block") == 0) {
            kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, "block names no item");
            return KT_HANDLED;
        }
    }
    pthread_mutex_t *lock;
    struct bl_user *e = acquire(b, from, st, &lock);
    if (!e) {
        jids_free(jids, n);
        return KT_HANDLED; /* answered when dispatched again, once loaded */
    }
    if (list) {
        struct kt_stanza *reply = kt_stanza_iq_result(st);
        struct kt_xml *el = kt_xml_add_child(kt_stanza_xml_mut(reply), "blocklist", NS_BLOCKING);
        for (unsigned i = 0; i < e->nitems; i++)
            kt_xml_set_attr(kt_xml_add_child(el, "item", NS_BLOCKING), "jid", e->items[i]->full);
        if (!has_jid(e->requested, e->nrequested, from)) {
            e->requested = kt_realloc(e->requested, (e->nrequested + 1) * sizeof(*e->requested));
            e->requested[e->nrequested++] = kt_jid_dup(from);
        }
        pthread_mutex_unlock(lock);
        kt_stanza_touch(reply);
        sm_send(sm, reply);
        kt_stanza_unref(&reply);
        return KT_HANDLED;
    }
    bool block = strcmp(name, "block") == 0;
    bool full = block && e->nitems + n > BLOCKLIST_MAX;
    pthread_mutex_unlock(lock);
    if (full) {
        jids_free(jids, n);
        kt_router_bounce(sm->core->router, st, KT_SE_RESOURCE_CONSTRAINT,
                         "the blocklist is full");
        return KT_HANDLED;
    }
    struct write_job *j = kt_new(struct write_job);
    j->b = b;
    j->st = kt_stanza_ref(st);
    j->local = kt_strdup(from->local);
    j->op = block ? OP_BLOCK : n ? OP_UNBLOCK : OP_UNBLOCK_ALL;
    j->jids = jids;
    j->n = n;
    kt_job_submit(sm->core->workers, sm_user_queue(sm, j->local), write_run, write_done, j);
    return KT_HANDLED;
}

/* --- module --- */

int sm_blocking_init(struct sm *sm)
{
    static const struct kt_match any = {0};
    static const struct kt_match iq_list = {.kinds = KT_KIND_IQ,
                                            .types = KT_TYPE_GET | KT_TYPE_SET,
                                            .ns = NS_BLOCKING,
                                            .name = "blocklist"};
    static const struct kt_match iq_block = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET | KT_TYPE_SET, .ns = NS_BLOCKING, .name = "block"};
    static const struct kt_match iq_unblock = {.kinds = KT_KIND_IQ,
                                               .types = KT_TYPE_GET | KT_TYPE_SET,
                                               .ns = NS_BLOCKING,
                                               .name = "unblock"};
    struct sm_blocking *b = kt_new(struct sm_blocking);
    b->sm = sm;
    atomic_init(&b->push_id, 1);
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_init(&b->shards[i].lock, NULL);
    sm->blocking = b;
    struct kt_router *r = sm->core->router;
    if (kt_hook_add(r, KT_HOOK_IN, &any, SM_PRIO_BLOCKING, blocking_in, b) < 0 ||
        kt_hook_add(r, KT_HOOK_LOCAL, &iq_list, 0, blocking_iq, b) < 0 ||
        kt_hook_add(r, KT_HOOK_LOCAL, &iq_block, 0, blocking_iq, b) < 0 ||
        kt_hook_add(r, KT_HOOK_LOCAL, &iq_unblock, 0, blocking_iq, b) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the blocking handlers");
        return -1;
    }
    sm_feature_add(sm, NS_BLOCKING);
    return 0;
}

void sm_blocking_free(struct sm *sm)
{
    struct sm_blocking *b = sm->blocking;
    if (!b)
        return;
    unsigned held = 0;
    for (unsigned i = 0; i < SHARDS; i++) {
        for (unsigned k = 0; k < BUCKETS; k++)
            while (b->shards[i].buckets[k]) {
                struct bl_user *e = b->shards[i].buckets[k];
                b->shards[i].buckets[k] = e->next;
                held += e->npending;
                entry_free(e);
            }
        pthread_mutex_destroy(&b->shards[i].lock);
    }
    if (held)
        kt_log(KT_LOG_WARN, "sm: %u stanzas waiting for a blocklist dropped at shutdown", held);
    free(b);
    sm->blocking = NULL;
}
