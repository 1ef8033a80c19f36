/* The users of this node that have sessions, with each resource's
 * availability and priority (RFC 6121 §4.7.2.3), for delivery to bare JIDs.
 * Shared by every I/O thread: 32 shards, each a mutex and a chained hash by
 * bare JID. A resource holds a reference on its kt_session; entries whose
 * session is no longer bound are pruned whenever their user is touched, and
 * a user with no resource left is removed. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/session.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 32
#define BUCKETS 256

struct sm_res {
    struct kt_session *session;
    int priority;
    bool available;
    bool offline_done; /* stored messages were sent to this resource */
    bool carbons;      /* XEP-0280 enabled */
    bool interested;   /* requested the roster: gets roster pushes (RFC 6121 §2.1.6) */
    struct kt_stanza *presence; /* its last available presence, for probes */
    char **directed;            /* JIDs it sent directed presence to (RFC 6121 §4.6) */
    unsigned ndirected;
};

#define DIRECTED_MAX 100

static void directed_clear(struct sm_res *r)
{
    for (unsigned i = 0; i < r->ndirected; i++)
        free(r->directed[i]);
    free(r->directed);
    r->directed = NULL;
    r->ndirected = 0;
}

struct sm_user {
    char *bare;
    struct sm_res *res;
    unsigned nres;
    struct sm_user *next;
};

struct sm_users {
    struct {
        pthread_mutex_t lock;
        struct sm_user *buckets[BUCKETS];
    } shards[SHARDS];
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

struct sm_users *sm_users_new(void)
{
    struct sm_users *u = kt_new(struct sm_users);
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_init(&u->shards[i].lock, NULL);
    return u;
}

static void user_free(struct sm_user *user)
{
    for (unsigned i = 0; i < user->nres; i++) {
        kt_session_unref(&user->res[i].session);
        kt_stanza_unref(&user->res[i].presence);
        directed_clear(&user->res[i]);
    }
    free(user->res);
    free(user->bare);
    free(user);
}

void sm_users_free(struct sm_users **up)
{
    struct sm_users *u = *up;
    if (!u)
        return;
    for (unsigned i = 0; i < SHARDS; i++) {
        for (unsigned b = 0; b < BUCKETS; b++)
            while (u->shards[i].buckets[b]) {
                struct sm_user *user = u->shards[i].buckets[b];
                u->shards[i].buckets[b] = user->next;
                user_free(user);
            }
        pthread_mutex_destroy(&u->shards[i].lock);
    }
    free(u);
    *up = NULL;
}

/* Under the shard lock: the user's slot, and dead resources pruned. */
static struct sm_user **find(struct sm_users *u, unsigned h, const char *bare)
{
    struct sm_user **p = &u->shards[h % SHARDS].buckets[(h / SHARDS) % BUCKETS];
    while (*p && strcmp((*p)->bare, bare) != 0)
        p = &(*p)->next;
    if (*p) {
        struct sm_user *user = *p;
        unsigned j = 0;
        for (unsigned i = 0; i < user->nres; i++) {
            if (kt_session_is_bound(user->res[i].session)) {
                user->res[j++] = user->res[i];
            } else {
                kt_session_unref(&user->res[i].session);
                kt_stanza_unref(&user->res[i].presence);
                directed_clear(&user->res[i]);
            }
        }
        user->nres = j;
    }
    return p;
}

static void drop_if_empty(struct sm_user **p)
{
    if (*p && (*p)->nres == 0) {
        struct sm_user *gone = *p;
        *p = gone->next;
        user_free(gone);
    }
}

static struct sm_res *res_of(struct sm_users *u, struct kt_session *s, unsigned h,
                             struct sm_user ***slot_r);

bool sm_users_presence(struct sm_users *u, struct kt_session *s, struct kt_stanza *presence,
                       int priority, bool *was_available_r)
{
    unsigned h = hash(kt_session_jid(s)->bare);
    struct sm_user **slot;
    bool deliver_offline = false, available = presence != NULL;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    struct sm_res *r = res_of(u, s, h, &slot);
    if (was_available_r)
        *was_available_r = r->available;
    r->available = available;
    r->priority = priority;
    kt_stanza_unref(&r->presence);
    if (presence)
        r->presence = kt_stanza_keep(presence);
    /* RFC 6121 §4.7.2 / XEP-0160: stored messages go out with the first
     * available presence of non-negative priority. */
    if (available && priority >= 0 && !r->offline_done) {
        r->offline_done = true;
        deliver_offline = true;
    }
    if (!available) /* messages stored meanwhile go out when it comes back */
        r->offline_done = false;
    drop_if_empty(slot);
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
    return deliver_offline;
}

/* The resource record of s, creating the user and resource if needed.
 * Under the shard lock. */
static struct sm_res *res_of(struct sm_users *u, struct kt_session *s, unsigned h,
                             struct sm_user ***slot_r)
{
    const struct kt_jid *full = kt_session_jid(s);
    struct sm_user **p = find(u, h, full->bare);
    if (!*p) {
        *p = kt_new(struct sm_user);
        (*p)->bare = kt_strdup(full->bare);
    }
    struct sm_user *user = *p;
    *slot_r = p;
    for (unsigned i = 0; i < user->nres; i++)
        if (user->res[i].session == s)
            return &user->res[i];
    user->res = kt_realloc(user->res, (user->nres + 1) * sizeof(*user->res));
    struct sm_res *r = &user->res[user->nres++];
    *r = (struct sm_res){.session = kt_session_ref(s)};
    return r;
}

void sm_users_set_carbons(struct sm_users *u, struct kt_session *s, bool enabled)
{
    unsigned h = hash(kt_session_jid(s)->bare);
    struct sm_user **slot;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    res_of(u, s, h, &slot)->carbons = enabled;
    drop_if_empty(slot);
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
}

/* Sessions (references) of jid's user whose resource passes `want`. */
static unsigned collect(struct sm_users *u, const struct kt_jid *jid,
                        bool (*want)(const struct sm_res *r, const void *arg), const void *arg,
                        struct kt_session **out, unsigned max)
{
    unsigned h = hash(jid->bare), n = 0;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    struct sm_user **p = find(u, h, jid->bare);
    if (*p) {
        for (unsigned i = 0; i < (*p)->nres && n < max; i++)
            if (want(&(*p)->res[i], arg))
                out[n++] = kt_session_ref((*p)->res[i].session);
        drop_if_empty(p);
    }
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
    return n;
}

static bool want_carbons(const struct sm_res *r, const void *except)
{
    return r->carbons && r->session != except;
}

static bool want_interested(const struct sm_res *r, const void *arg)
{
    (void)arg;
    return r->interested;
}

static bool want_any(const struct sm_res *r, const void *available_only)
{
    return !*(const bool *)available_only || r->available;
}

unsigned sm_users_carbon_targets(struct sm_users *u, const struct kt_jid *jid,
                                 const struct kt_session *except, struct kt_session **out,
                                 unsigned max)
{
    return collect(u, jid, want_carbons, except, out, max);
}

void sm_users_directed(struct sm_users *u, struct kt_session *s, const char *jid, bool available)
{
    unsigned h = hash(kt_session_jid(s)->bare);
    struct sm_user **slot;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    struct sm_res *r = res_of(u, s, h, &slot);
    unsigned i = 0;
    while (i < r->ndirected && strcmp(r->directed[i], jid) != 0)
        i++;
    if (available && i == r->ndirected && r->ndirected < DIRECTED_MAX) {
        r->directed = kt_realloc(r->directed, (r->ndirected + 1) * sizeof(*r->directed));
        r->directed[r->ndirected++] = kt_strdup(jid);
    } else if (!available && i < r->ndirected) {
        free(r->directed[i]);
        r->directed[i] = r->directed[--r->ndirected];
    }
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
}

char **sm_users_directed_take(struct sm_users *u, struct kt_session *s, unsigned *n_r)
{
    unsigned h = hash(kt_session_jid(s)->bare);
    struct sm_user **slot;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    struct sm_res *r = res_of(u, s, h, &slot);
    char **v = r->directed;
    *n_r = r->ndirected;
    r->directed = NULL;
    r->ndirected = 0;
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
    return v;
}

void sm_users_set_interested(struct sm_users *u, struct kt_session *s)
{
    unsigned h = hash(kt_session_jid(s)->bare);
    struct sm_user **slot;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    res_of(u, s, h, &slot)->interested = true;
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
}

unsigned sm_users_interested(struct sm_users *u, const struct kt_jid *jid,
                             struct kt_session **out, unsigned max)
{
    return collect(u, jid, want_interested, NULL, out, max);
}

unsigned sm_users_presences(struct sm_users *u, const struct kt_jid *jid, struct kt_stanza **out,
                            unsigned max)
{
    unsigned h = hash(jid->bare), n = 0;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    struct sm_user **p = find(u, h, jid->bare);
    if (*p) {
        for (unsigned i = 0; i < (*p)->nres && n < max; i++)
            if ((*p)->res[i].available && (*p)->res[i].presence)
                out[n++] = kt_stanza_ref((*p)->res[i].presence);
        drop_if_empty(p);
    }
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
    return n;
}

unsigned sm_users_resources(struct sm_users *u, const struct kt_jid *jid, bool available_only,
                            struct kt_session **out, unsigned max)
{
    return collect(u, jid, want_any, &available_only, out, max);
}

unsigned sm_users_targets(struct sm_users *u, const struct kt_jid *jid,
                          struct kt_session **out, unsigned max)
{
    unsigned h = hash(jid->bare), n = 0;
    pthread_mutex_lock(&u->shards[h % SHARDS].lock);
    struct sm_user **p = find(u, h, jid->bare);
    if (*p) {
        int best = -1;
        for (unsigned i = 0; i < (*p)->nres; i++)
            if ((*p)->res[i].available && (*p)->res[i].priority > best)
                best = (*p)->res[i].priority;
        /* Never to negative priorities; all resources that tie for the top. */
        for (unsigned i = 0; best >= 0 && i < (*p)->nres && n < max; i++)
            if ((*p)->res[i].available && (*p)->res[i].priority == best)
                out[n++] = kt_session_ref((*p)->res[i].session);
        drop_if_empty(p);
    }
    pthread_mutex_unlock(&u->shards[h % SHARDS].lock);
    return n;
}
