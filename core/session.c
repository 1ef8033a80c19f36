/* The session registry (see kontalk/session.h): full JID -> session, in 64
 * shards, each a mutex and a chained hash table that grows by doubling.
 * The registry holds one reference on every registered session.
 *
 * Cross-thread safety: `bound` is atomic and read by any thread; `owner`
 * is written and read only on the session's own loop (kt_session_close runs
 * there, as do every posted delivery and replaced() call), so a callback
 * can never reach an owner that is gone. */
#include "config.h"
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64

struct kt_session {
    atomic_uint refs;
    atomic_bool bound;
    struct kt_loop *loop;
    struct kt_jid *jid;
    const struct kt_session_ops *ops;
    void *owner; /* NULL once closed; touched on `loop` only */
    struct kt_sessions *reg;
    uint32_t hash;
    struct kt_session *next; /* shard chain, under the shard lock */
    _Atomic uint64_t active_ms; /* last kt_session_touch */
    atomic_bool inactive;       /* XEP-0352 */
};

struct shard {
    pthread_mutex_t lock;
    struct kt_session **buckets;
    unsigned nbuckets, count;
};

struct kt_sessions {
    struct shard shards[SHARDS];
    atomic_uint count;
    kt_undeliverable_fn undeliverable;
    void *undeliverable_data;
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

struct kt_sessions *kt_sessions_new(void)
{
    struct kt_sessions *reg = kt_new(struct kt_sessions);
    for (unsigned i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&reg->shards[i].lock, NULL);
        reg->shards[i].nbuckets = 16;
        reg->shards[i].buckets = kt_calloc(16, sizeof(struct kt_session *));
    }
    return reg;
}

void kt_sessions_free(struct kt_sessions **regp)
{
    struct kt_sessions *reg = *regp;
    if (!reg)
        return;
    for (unsigned i = 0; i < SHARDS; i++) {
        struct shard *sh = &reg->shards[i];
        for (unsigned b = 0; b < sh->nbuckets; b++)
            while (sh->buckets[b]) {
                struct kt_session *s = sh->buckets[b];
                sh->buckets[b] = s->next;
                atomic_store(&s->bound, false);
                kt_session_unref(&s);
            }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(reg);
    *regp = NULL;
}

struct kt_session *kt_session_new(struct kt_loop *loop, const struct kt_jid *jid,
                                  const struct kt_session_ops *ops, void *owner)
{
    kt_assert(jid && jid->resource);
    struct kt_session *s = kt_new(struct kt_session);
    atomic_init(&s->refs, 1);
    s->loop = loop;
    s->jid = kt_jid_dup(jid);
    s->ops = ops;
    s->owner = owner;
    s->hash = hash_str(jid->full);
    atomic_init(&s->active_ms, kt_now_ms());
    atomic_init(&s->inactive, false);
    return s;
}

struct kt_session *kt_session_ref(struct kt_session *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void kt_session_unref(struct kt_session **sp)
{
    struct kt_session *s = *sp;
    if (!s)
        return;
    *sp = NULL;
    unsigned old = atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel);
    kt_assert(old > 0);
    if (old == 1) {
        kt_jid_free(&s->jid);
        free(s);
    }
}

const struct kt_jid *kt_session_jid(const struct kt_session *s)
{
    return s->jid;
}

static struct shard *shard_of(struct kt_sessions *reg, uint32_t hash)
{
    return &reg->shards[hash % SHARDS];
}

static struct kt_session **slot(struct shard *sh, uint32_t hash, const char *full)
{
    struct kt_session **p = &sh->buckets[(hash / SHARDS) % sh->nbuckets];
    while (*p && ((*p)->hash != hash || strcmp((*p)->jid->full, full) != 0))
        p = &(*p)->next;
    return p;
}

static void grow(struct shard *sh)
{
    unsigned n = sh->nbuckets * 2;
    struct kt_session **b = kt_calloc(n, sizeof(*b));
    for (unsigned i = 0; i < sh->nbuckets; i++)
        while (sh->buckets[i]) {
            struct kt_session *s = sh->buckets[i];
            sh->buckets[i] = s->next;
            unsigned j = (s->hash / SHARDS) % n;
            s->next = b[j];
            b[j] = s;
        }
    free(sh->buckets);
    sh->buckets = b;
    sh->nbuckets = n;
}

static void run_replaced(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct kt_session *s = data;
    if (s->owner && s->ops->replaced)
        s->ops->replaced(s->owner);
    kt_session_unref(&s);
}

enum kt_bind_result kt_session_bind(struct kt_sessions *reg, struct kt_session *s, bool replace)
{
    struct shard *sh = shard_of(reg, s->hash);
    struct kt_session *old = NULL;
    pthread_mutex_lock(&sh->lock);
    struct kt_session **p = slot(sh, s->hash, s->jid->full);
    if (*p && *p != s) {
        if (!replace) {
            pthread_mutex_unlock(&sh->lock);
            return KT_BIND_CONFLICT;
        }
        old = *p;
        *p = old->next;
        sh->count--;
        atomic_fetch_sub(&reg->count, 1);
        atomic_store(&old->bound, false);
        p = slot(sh, s->hash, s->jid->full);
    }
    if (!*p) {
        s->next = NULL;
        *p = kt_session_ref(s);
        s->reg = reg;
        atomic_store(&s->bound, true);
        sh->count++;
        atomic_fetch_add(&reg->count, 1);
        if (sh->count > sh->nbuckets * 2)
            grow(sh);
    }
    pthread_mutex_unlock(&sh->lock);
    if (old) /* the registry's reference moves to the posted call */
        kt_loop_post(old->loop, run_replaced, old);
    return KT_BIND_OK;
}

void kt_session_unbind(struct kt_sessions *reg, struct kt_session *s)
{
    struct shard *sh = shard_of(reg, s->hash);
    struct kt_session *gone = NULL;
    pthread_mutex_lock(&sh->lock);
    atomic_store(&s->bound, false);
    struct kt_session **p = slot(sh, s->hash, s->jid->full);
    if (*p == s) {
        *p = s->next;
        s->next = NULL;
        sh->count--;
        atomic_fetch_sub(&reg->count, 1);
        gone = s;
    }
    pthread_mutex_unlock(&sh->lock);
    kt_session_unref(&gone);
}

void kt_session_set_owner(struct kt_session *s, const struct kt_session_ops *ops, void *owner)
{
    s->ops = ops;
    s->owner = owner;
}

void kt_session_close(struct kt_sessions *reg, struct kt_session *s)
{
    kt_session_unbind(reg, s);
    s->owner = NULL;
}

struct kt_session *kt_sessions_find(struct kt_sessions *reg, const struct kt_jid *full)
{
    if (!full || !full->resource)
        return NULL;
    uint32_t h = hash_str(full->full);
    struct shard *sh = shard_of(reg, h);
    pthread_mutex_lock(&sh->lock);
    struct kt_session *s = *slot(sh, h, full->full);
    if (s)
        kt_session_ref(s);
    pthread_mutex_unlock(&sh->lock);
    return s;
}

void kt_session_touch(struct kt_session *s)
{
    atomic_store_explicit(&s->active_ms, kt_now_ms(), memory_order_relaxed);
}

void kt_session_set_inactive(struct kt_session *s, bool inactive)
{
    atomic_store_explicit(&s->inactive, inactive, memory_order_relaxed);
}

bool kt_session_inactive(const struct kt_session *s)
{
    return atomic_load_explicit(&s->inactive, memory_order_relaxed);
}

uint64_t kt_session_idle_ms(const struct kt_session *s)
{
    uint64_t now = kt_now_ms(), last = atomic_load_explicit(&s->active_ms, memory_order_relaxed);
    return now > last ? now - last : 0;
}

bool kt_session_is_bound(const struct kt_session *s)
{
    return atomic_load(&s->bound);
}

unsigned kt_sessions_count(struct kt_sessions *reg)
{
    return atomic_load(&reg->count);
}

void kt_sessions_set_undeliverable(struct kt_sessions *reg, kt_undeliverable_fn fn, void *data)
{
    reg->undeliverable = fn;
    reg->undeliverable_data = data;
}

struct delivery {
    struct kt_session *s;
    struct kt_stanza *st;
};

static void run_delivery(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct delivery *d = data;
    struct kt_session *s = d->s;
    if (s->owner && atomic_load(&s->bound))
        s->ops->deliver(s->owner, d->st);
    else if (s->reg && s->reg->undeliverable)
        s->reg->undeliverable(d->st, s->reg->undeliverable_data);
    else
        kt_log(KT_LOG_WARN, "session %s ended with a stanza queued and nobody to re-route it",
               s->jid->full);
    kt_stanza_unref(&d->st);
    kt_session_unref(&d->s);
    free(d);
}

bool kt_session_deliver(struct kt_session *s, struct kt_stanza *st)
{
    if (!atomic_load(&s->bound))
        return false;
    struct delivery *d = kt_new(struct delivery);
    d->s = kt_session_ref(s);
    d->st = kt_stanza_ref(st);
    kt_loop_post(s->loop, run_delivery, d);
    return true;
}
