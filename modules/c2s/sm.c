/* XEP-0198 stream management on client streams: <enable/>, acks (<r/>,
 * <a h/>), and resumption after a lost connection.
 *
 * Counting: the h we report counts stanzas received from the client after
 * <enable/> that are fully handled, in order: a stanza counts once its last
 * reference is gone (kt_stanza_on_release), i.e. after every job that kept
 * it finished, so a message is acked only once it is delivered or its
 * offline copy is committed. An <r/> is answered at once with what is
 * handled; if stanzas are still in flight, another <a/> follows when they
 * are done. Every stanza written to the client after <enable/> is kept
 * (a reference)
 * in `unacked` until the client acknowledges it. Counters wrap at 2^32 as
 * the XEP says.
 *
 * Resumption: when the connection is lost (not closed with
 * </stream:stream>) and resumption was enabled, the session stays bound
 * but is handed to a `detached` object owned by this loop: deliveries queue
 * there. A new connection that authenticates as the same user and sends
 * <resume previd h/> within sm_resume_timeout takes the queue over, binds a
 * new session for the same full JID (replacing the detached one) and gets
 * every unacknowledged stanza again. The detached object lives in the
 * module's table so any loop can find it. c2s->lock guards the table, each
 * entry's `taken` flag and its queue: whoever sets `taken` (a resume, the
 * expiry timer or shutdown) owns the entry's fate, and the entry is always
 * freed on its own loop. When the window expires, or when a stream ends without
 * resumption, unacknowledged messages are routed again (so they reach
 * another resource, offline storage, or bounce back to their sender),
 * unacknowledged iq get/set are answered with an error, and the rest is
 * dropped (presence is refreshed anyway). Nothing accepted is lost silently.
 *
 * Limits: sm_max_unacked stanzas; beyond it the stream ends with
 * policy-violation (a client that never acks must not grow memory). */
#include "config.h"
#include "modules/c2s/c2s.h"

#include <kontalk/buf.h>
#include <kontalk/log.h>
#include <kontalk/router.h>
#include <kontalk/scram.h>

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_SM "urn:xmpp:sm:3"
/* Ask for an ack once this many stanzas wait for one. */
#define SM_REQUEST_EVERY 5

struct sm_queue {
    struct kt_stanza **v;
    unsigned head, count, cap;
};

/* Completion of the client's stanzas, shared with whichever thread drops a
 * stanza's last reference; refcounted because those may outlive the
 * stream. `cc` and `loop` say where an unsolicited <a/> goes (they change
 * on resumption); cc is NULL while no stream owns the session. */
struct sm_acks {
    atomic_uint refs;
    pthread_mutex_t lock;
    uint32_t h;      /* handled, in order */
    uint32_t next;   /* sequence number of the next stanza */
    unsigned char *done; /* ring of completion flags for [h, next) */
    uint32_t cap;
    bool ack_wanted; /* an <r/> was answered while stanzas were in flight */
    struct kt_loop *loop;
    struct c2s_conn *cc;
};

struct sm_token {
    struct sm_acks *acks;
    uint32_t seq;
};

struct c2s_sm {
    bool resume;
    bool r_pending; /* we sent <r/> and wait for <a/> */
    char id[32];
    struct sm_acks *acks;
    uint32_t h_out;   /* stanzas written */
    uint32_t acked;   /* the client's last h */
    struct sm_queue unacked;
};

/* A session kept for resumption, without a connection. */
struct detached {
    struct c2s *c2s;
    struct kt_loop *loop;
    struct kt_session *session;
    struct kt_jid *full;
    struct c2s_sm *sm;
    struct kt_timer *timer;
    struct kt_stanza *presence; /* last available presence: owes an unavailable at the end */
    bool taken;     /* under c2s->lock, like sm->unacked */
    struct detached *next; /* in c2s->detached, under c2s->lock */
};

/* A resumable session that still has its connection (the server has not
 * noticed yet that the client is gone): where to find it, for a takeover. */
struct sm_live {
    char id[32];
    struct kt_jid *user;
    unsigned loop_index;
    struct sm_live *next; /* in c2s->live, under c2s->lock */
};

static void live_add(struct c2s_conn *cc)
{
    struct sm_live *l = kt_new(struct sm_live);
    snprintf(l->id, sizeof(l->id), "%s", cc->sm->id);
    l->user = kt_jid_to_bare(cc->full);
    l->loop_index = cc->loop_index;
    pthread_mutex_lock(&cc->c2s->lock);
    l->next = cc->c2s->live;
    cc->c2s->live = l;
    pthread_mutex_unlock(&cc->c2s->lock);
}

static void live_del(struct c2s *c2s, const char *id)
{
    struct sm_live *gone = NULL;
    pthread_mutex_lock(&c2s->lock);
    for (struct sm_live **p = &c2s->live; *p; p = &(*p)->next)
        if (strcmp((*p)->id, id) == 0) {
            gone = *p;
            *p = gone->next;
            break;
        }
    pthread_mutex_unlock(&c2s->lock);
    if (gone) {
        kt_jid_free(&gone->user);
        free(gone);
    }
}

/* The loop of a live resumable session of user, or -1. Under c2s->lock. */
static int live_find(struct c2s *c2s, const char *id, const struct kt_jid *user)
{
    for (struct sm_live *l = c2s->live; l; l = l->next)
        if (strcmp(l->id, id) == 0 && kt_jid_bare_equal(l->user, user))
            return (int)l->loop_index;
    return -1;
}

/* --- acks of the client's stanzas --- */

static struct sm_acks *acks_new(struct c2s_conn *cc)
{
    struct sm_acks *a = kt_new(struct sm_acks);
    atomic_init(&a->refs, 1);
    pthread_mutex_init(&a->lock, NULL);
    a->cap = 16;
    a->done = kt_calloc(a->cap, 1);
    a->loop = cc->loop;
    a->cc = cc;
    return a;
}

static void acks_unref(struct sm_acks **ap)
{
    struct sm_acks *a = *ap;
    *ap = NULL;
    if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
        pthread_mutex_destroy(&a->lock);
        free(a->done);
        free(a);
    }
}

/* Which stream (if any) gets the unsolicited <a/>. Under no lock: takes it. */
static void acks_attach(struct sm_acks *a, struct c2s_conn *cc)
{
    pthread_mutex_lock(&a->lock);
    a->cc = cc;
    if (cc)
        a->loop = cc->loop;
    pthread_mutex_unlock(&a->lock);
}

static uint32_t acks_handled(struct sm_acks *a, bool want_more)
{
    pthread_mutex_lock(&a->lock);
    uint32_t h = a->h;
    if (want_more && a->h != a->next)
        a->ack_wanted = true;
    pthread_mutex_unlock(&a->lock);
    return h;
}

static void send_a(struct c2s_conn *cc, uint32_t h)
{
    char buf[96];
    snprintf(buf, sizeof(buf), "<a xmlns='" NS_SM "' h='%u'/>", h);
    c2s_write_str(cc, buf);
}

/* Posted to the stream's loop when in-flight stanzas are all handled. */
static void late_ack(struct kt_loop *loop, void *data)
{
    struct sm_acks *a = data;
    pthread_mutex_lock(&a->lock);
    struct kt_loop *where = a->loop;
    struct c2s_conn *cc = where == loop ? a->cc : NULL;
    uint32_t h = a->h;
    pthread_mutex_unlock(&a->lock);
    if (where != loop) {
        kt_loop_post(where, late_ack, a); /* the session moved (resumption) */
        return;
    }
    if (cc && !c2s_conn_dead(cc))
        send_a(cc, h);
    acks_unref(&a);
}

/* Any thread: the stanza with this token has been fully handled. */
static void token_done(void *data)
{
    struct sm_token *t = data;
    struct sm_acks *a = t->acks;
    pthread_mutex_lock(&a->lock);
    a->done[t->seq % a->cap] = 1;
    while (a->h != a->next && a->done[a->h % a->cap]) {
        a->done[a->h % a->cap] = 0;
        a->h++;
    }
    bool post = a->ack_wanted && a->h == a->next;
    if (post)
        a->ack_wanted = false;
    struct kt_loop *loop = a->loop;
    pthread_mutex_unlock(&a->lock);
    free(t);
    if (post)
        kt_loop_post(loop, late_ack, a); /* passes our reference on */
    else
        acks_unref(&a);
}

static void acks_track(struct sm_acks *a, struct kt_stanza *st)
{
    struct sm_token *t = kt_new(struct sm_token);
    pthread_mutex_lock(&a->lock);
    if (a->next - a->h == a->cap) { /* grow the ring, keeping positions mod cap */
        uint32_t cap = a->cap * 2;
        unsigned char *done = kt_calloc(cap, 1);
        for (uint32_t s = a->h; s != a->next; s++)
            done[s % cap] = a->done[s % a->cap];
        free(a->done);
        a->done = done;
        a->cap = cap;
    }
    t->seq = a->next++;
    a->done[t->seq % a->cap] = 0;
    pthread_mutex_unlock(&a->lock);
    atomic_fetch_add(&a->refs, 1);
    t->acks = a;
    kt_stanza_on_release(st, token_done, t);
}

/* --- the queue --- */

static void queue_push(struct sm_queue *q, struct kt_stanza *st)
{
    if (q->count == q->cap) {
        unsigned cap = q->cap ? q->cap * 2 : 8;
        struct kt_stanza **v = kt_calloc(cap, sizeof(*v));
        for (unsigned i = 0; i < q->count; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->count) % q->cap] = kt_stanza_keep(st);
    q->count++;
}

static struct kt_stanza *queue_pop(struct sm_queue *q)
{
    if (!q->count)
        return NULL;
    struct kt_stanza *st = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    if (--q->count == 0) {
        /* Idle sessions hold no queue memory. */
        free(q->v);
        q->v = NULL;
        q->cap = q->head = 0;
    }
    return st;
}

static void sm_free(struct c2s_sm **smp)
{
    struct c2s_sm *sm = *smp;
    if (!sm)
        return;
    if (sm->acks)
        acks_attach(sm->acks, NULL);
    acks_unref(&sm->acks);
    struct kt_stanza *st;
    while ((st = queue_pop(&sm->unacked)))
        kt_stanza_unref(&st);
    free(sm);
    *smp = NULL;
}

/* Drops what the client says it has (h). false: h acknowledges more than we
 * sent. */
static bool ack(struct c2s_sm *sm, uint32_t h)
{
    uint32_t newly = h - sm->acked;
    if (newly > sm->unacked.count)
        return false;
    for (uint32_t i = 0; i < newly; i++) {
        struct kt_stanza *st = queue_pop(&sm->unacked);
        kt_stanza_unref(&st);
    }
    sm->acked = h;
    return true;
}

static bool parse_h(const char *s, uint32_t *h_r)
{
    if (!s || !*s)
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v > 0xffffffffull || *s == '-')
        return false;
    *h_r = (uint32_t)v;
    return true;
}

/* --- ending: what happens to unacknowledged stanzas --- */

static void reroute_unacked(struct c2s *c2s, struct c2s_sm *sm)
{
    struct kt_stanza *st;
    while ((st = queue_pop(&sm->unacked))) {
        enum kt_stanza_kind kind = kt_stanza_kind(st);
        enum kt_stanza_type type = kt_stanza_type(st);
        if (kind == KT_KIND_MESSAGE && type != KT_TYPE_ERROR)
            kt_router_dispatch(c2s->core->router, st);
        else if (kind == KT_KIND_IQ && (type & (KT_TYPE_GET | KT_TYPE_SET)))
            kt_router_bounce(c2s->core->router, st, KT_SE_SERVICE_UNAVAILABLE,
                             "the recipient's connection ended");
        kt_stanza_unref(&st);
    }
}

void c2s_sm_end(struct c2s_conn *cc)
{
    if (!cc->sm)
        return;
    if (cc->sm->resume)
        live_del(cc->c2s, cc->sm->id);
    reroute_unacked(cc->c2s, cc->sm);
    sm_free(&cc->sm);
}

void c2s_sm_free(struct c2s_conn *cc)
{
    if (cc->sm && cc->sm->resume)
        live_del(cc->c2s, cc->sm->id);
    sm_free(&cc->sm);
}

/* --- counting on a live stream --- */

void c2s_sm_count_in(struct c2s_conn *cc, struct kt_stanza *st)
{
    if (cc->sm)
        acks_track(cc->sm->acks, st);
}

bool c2s_sm_track_out(struct c2s_conn *cc, struct kt_stanza *st)
{
    struct c2s_sm *sm = cc->sm;
    if (!sm)
        return true;
    if (sm->unacked.count >= (unsigned long long)cc->c2s->conf->sm_max_unacked) {
        c2s_stream_error(cc, KT_XE_POLICY_VIOLATION, "too many unacknowledged stanzas");
        return false;
    }
    queue_push(&sm->unacked, st);
    sm->h_out++;
    return true;
}

void c2s_sm_after_write(struct c2s_conn *cc)
{
    struct c2s_sm *sm = cc->sm;
    if (sm && !sm->r_pending && sm->unacked.count >= SM_REQUEST_EVERY) {
        c2s_write_str(cc, "<r xmlns='" NS_SM "'/>");
        sm->r_pending = true;
    }
}

/* --- detached sessions --- */

static void detached_deliver(void *owner, struct kt_stanza *st)
{
    struct detached *d = owner;
    pthread_mutex_lock(&d->c2s->lock);
    bool queued = !d->taken;
    if (queued)
        queue_push(&d->sm->unacked, st);
    pthread_mutex_unlock(&d->c2s->lock);
    if (!queued) /* taken by a resuming stream: its session gets it */
        kt_router_dispatch(d->c2s->core->router, st);
}

static void detached_replaced(void *owner)
{
    (void)owner; /* a resuming stream took the JID over; it posts our cleanup */
}

static const struct kt_session_ops detached_ops = {
    .deliver = detached_deliver,
    .replaced = detached_replaced,
};

/* Under c2s->lock: marks d taken and removes it from the table; false if
 * someone else took it first. */
static bool claim(struct c2s *c2s, struct detached *d)
{
    if (d->taken)
        return false;
    d->taken = true;
    for (struct detached **p = &c2s->detached; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            break;
        }
    return true;
}

static void detached_free(struct detached *d)
{
    kt_timer_cancel(&d->timer);
    if (d->session) {
        kt_session_close(d->c2s->core->sessions, d->session);
        kt_session_unref(&d->session);
    }
    kt_jid_free(&d->full);
    kt_stanza_unref(&d->presence);
    sm_free(&d->sm);
    struct c2s *c2s = d->c2s;
    free(d);
    atomic_fetch_sub(&c2s->ndetached, 1);
    c2s_note_gone(c2s);
}

/* The resumption window closed: the session really ends. */
static void detached_expired(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct detached *d = data;
    d->timer = NULL;
    pthread_mutex_lock(&d->c2s->lock);
    bool mine = claim(d->c2s, d);
    pthread_mutex_unlock(&d->c2s->lock);
    if (!mine)
        return; /* a resume won the race; its posted release frees d */
    kt_log(KT_LOG_INFO, "c2s: %s: resumption window expired", d->full->full);
    if (d->presence)
        c2s_announce_unavailable(d->c2s, d->full);
    kt_session_unbind(d->c2s->core->sessions, d->session);
    reroute_unacked(d->c2s, d->sm);
    detached_free(d);
}

/* Posted to the detached session's loop by the stream that resumed it. */
static void detached_release(struct kt_loop *loop, void *data)
{
    (void)loop;
    detached_free(data);
}

bool c2s_sm_detach(struct c2s_conn *cc)
{
    struct c2s_sm *sm = cc->sm;
    if (!sm || !sm->resume || !cc->session || cc->c2s->conf->sm_resume_timeout == 0 ||
        atomic_load(&cc->c2s->stopping))
        return false;
    live_del(cc->c2s, sm->id);
    struct detached *d = kt_new(struct detached);
    d->c2s = cc->c2s;
    d->loop = cc->loop;
    d->session = cc->session;
    d->full = cc->full;
    d->sm = sm;
    acks_attach(sm->acks, NULL);
    d->presence = cc->presence;
    cc->presence = NULL;
    cc->session = NULL;
    cc->full = NULL;
    cc->sm = NULL;
    sm->r_pending = false;
    kt_session_set_owner(d->session, &detached_ops, d);
    atomic_fetch_add(&d->c2s->ndetached, 1);
    pthread_mutex_lock(&d->c2s->lock);
    d->next = d->c2s->detached;
    d->c2s->detached = d;
    pthread_mutex_unlock(&d->c2s->lock);
    d->timer = kt_timer_add(d->loop, (uint64_t)d->c2s->conf->sm_resume_timeout * 1000,
                            detached_expired, d);
    kt_log(KT_LOG_INFO, "c2s: %s: connection lost, resumable for %llds (%u unacked)",
           d->full->full, d->c2s->conf->sm_resume_timeout, sm->unacked.count);
    return true;
}

/* --- elements --- */

static void send_failed(struct c2s_conn *cc, const char *condition, const uint32_t *h)
{
    char buf[256];
    if (h)
        snprintf(buf, sizeof(buf), "<failed xmlns='" NS_SM "' h='%u'><%s xmlns='" KT_NS_STANZAS
                 "'/></failed>", *h, condition);
    else
        snprintf(buf, sizeof(buf), "<failed xmlns='" NS_SM "'><%s xmlns='" KT_NS_STANZAS
                 "'/></failed>", condition);
    c2s_write_str(cc, buf);
}

static void enable(struct c2s_conn *cc, const struct kt_xml *el)
{
    if (!cc->full || cc->sm) {
        send_failed(cc, "unexpected-request", NULL);
        return;
    }
    const char *r = kt_xml_attr(el, "resume");
    struct c2s_sm *sm = kt_new(struct c2s_sm);
    sm->resume = r && (strcmp(r, "true") == 0 || strcmp(r, "1") == 0) &&
                 cc->c2s->conf->sm_resume_timeout > 0;
    unsigned char rnd[18];
    RAND_bytes(rnd, sizeof(rnd));
    char *id = kt_base64_encode(rnd, sizeof(rnd));
    snprintf(sm->id, sizeof(sm->id), "%s", id);
    free(id);
    sm->acks = acks_new(cc);
    cc->sm = sm;
    if (sm->resume)
        live_add(cc);
    char buf[256];
    if (sm->resume)
        snprintf(buf, sizeof(buf), "<enabled xmlns='" NS_SM "' id='%s' resume='true' max='%lld'/>",
                 sm->id, cc->c2s->conf->sm_resume_timeout);
    else
        snprintf(buf, sizeof(buf), "<enabled xmlns='" NS_SM "'/>");
    c2s_write_str(cc, buf);
}

static void resume(struct c2s_conn *cc, const char *previd, uint32_t h, bool may_take_over);

/* A resume for a session whose connection is still open here: on the old
 * connection's loop, detach its session (as if the connection had been lost)
 * and drop the connection, then let the new stream resume it. */
struct takeover {
    struct c2s_conn *cc; /* the resuming stream; job_pending keeps it allocated */
    unsigned loop_index;
    char previd[32];
    uint32_t h;
};

static void takeover_done(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct takeover *t = data;
    struct c2s_conn *cc = t->cc;
    if (c2s_job_finished(cc))
        resume(cc, t->previd, t->h, false);
    free(t);
}

static void takeover_on_old_loop(struct kt_loop *loop, void *data)
{
    struct takeover *t = data;
    for (struct c2s_conn *old = t->cc->c2s->by_loop[kt_loop_index(loop)]; old; old = old->next)
        if (old->sm && strcmp(old->sm->id, t->previd) == 0 && !c2s_conn_dead(old)) {
            if (c2s_sm_detach(old))
                c2s_stream_error(old, KT_XE_CONFLICT, "taken over by a resumed stream");
            break;
        }
    kt_loop_post(t->cc->loop, takeover_done, t);
}

static void resume(struct c2s_conn *cc, const char *previd, uint32_t h, bool may_take_over)
{
    struct c2s *c2s = cc->c2s;
    struct detached *d;
    struct c2s_sm *sm = NULL;
    int live_loop = -1;
    pthread_mutex_lock(&c2s->lock);
    for (d = c2s->detached; d; d = d->next)
        if (strcmp(d->sm->id, previd) == 0 && kt_jid_bare_equal(d->full, cc->user))
            break;
    if (d && claim(c2s, d)) {
        sm = d->sm;
        d->sm = NULL;
        cc->presence = d->presence; /* the resumed stream owes it now */
        d->presence = NULL;
    } else if (!d && may_take_over) {
        live_loop = live_find(c2s, previd, cc->user);
    }
    pthread_mutex_unlock(&c2s->lock);
    if (!sm && live_loop >= 0) {
        struct takeover *t = kt_new(struct takeover);
        t->cc = cc;
        snprintf(t->previd, sizeof(t->previd), "%s", previd);
        t->h = h;
        c2s_job_wait(cc);
        kt_loop_post(c2s->core->loops[live_loop], takeover_on_old_loop, t);
        return;
    }
    if (!sm) {
        send_failed(cc, "item-not-found", NULL);
        return;
    }
    /* Take the JID over on this loop; the detached session's own loop frees it. */
    struct kt_session *s = kt_session_new(cc->loop, d->full, c2s_session_ops(), cc);
    kt_session_bind(c2s->core->sessions, s, true);
    cc->session = s;
    cc->full = kt_jid_dup(d->full);
    kt_loop_post(d->loop, detached_release, d);
    cc->sm = sm;
    if (!ack(sm, h)) {
        c2s_stream_error_extra(cc, KT_XE_UNDEFINED_CONDITION, NULL,
                               "<handled-count-too-high xmlns='" NS_SM "'/>");
        return;
    }
    live_add(cc);
    c2s_conn_bound(cc);
    /* The session manager knows the resource by its session: tell it the
     * new one is available, as the old one was. */
    if (cc->presence)
        kt_router_dispatch(c2s->core->router, cc->presence);
    char buf[160];
    acks_attach(sm->acks, cc);
    snprintf(buf, sizeof(buf), "<resumed xmlns='" NS_SM "' h='%u' previd='%s'/>",
             acks_handled(sm->acks, true), sm->id);
    c2s_write_str(cc, buf);
    /* Everything the client has not acknowledged, again and in order. */
    struct sm_queue again = sm->unacked;
    memset(&sm->unacked, 0, sizeof(sm->unacked));
    sm->h_out = sm->acked;
    sm->r_pending = false;
    kt_log_prefix(KT_LOG_INFO, cc->prefix, "resumed (%u stanzas sent again)", again.count);
    struct kt_stanza *st;
    while ((st = queue_pop(&again))) {
        c2s_write_stanza(cc, st);
        kt_stanza_unref(&st);
    }
}

static void resume_element(struct c2s_conn *cc, const struct kt_xml *el)
{
    uint32_t h;
    const char *previd = kt_xml_attr(el, "previd");
    if (cc->full || !previd || !parse_h(kt_xml_attr(el, "h"), &h)) {
        send_failed(cc, cc->full ? "unexpected-request" : "bad-request", NULL);
        return;
    }
    resume(cc, previd, h, true);
}

void c2s_sm_element(struct c2s_conn *cc, struct kt_xml *el)
{
    struct c2s_sm *sm = cc->sm;
    if (strcmp(el->name, "enable") == 0) {
        enable(cc, el);
    } else if (strcmp(el->name, "resume") == 0) {
        resume_element(cc, el);
    } else if (strcmp(el->name, "r") == 0 && sm) {
        send_a(cc, acks_handled(sm->acks, true));
    } else if (strcmp(el->name, "a") == 0 && sm) {
        uint32_t h;
        if (!parse_h(kt_xml_attr(el, "h"), &h)) {
            c2s_stream_error(cc, KT_XE_UNDEFINED_CONDITION, "bad h in <a/>");
            return;
        }
        if (!ack(sm, h)) {
            c2s_stream_error_extra(cc, KT_XE_UNDEFINED_CONDITION, NULL,
                                   "<handled-count-too-high xmlns='" NS_SM "'/>");
            return;
        }
        sm->r_pending = false;
    } else if (!sm && (strcmp(el->name, "r") == 0 || strcmp(el->name, "a") == 0)) {
        c2s_stream_error(cc, KT_XE_UNSUPPORTED_STANZA_TYPE, "stream management is not enabled");
    } else {
        c2s_stream_error(cc, KT_XE_UNSUPPORTED_STANZA_TYPE, NULL);
    }
}

/* Frees detached sessions left at shutdown (the loops still run). */
static void release_on_loop(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct detached *d = data;
    if (d->presence)
        c2s_announce_unavailable(d->c2s, d->full);
    kt_session_unbind(d->c2s->core->sessions, d->session);
    reroute_unacked(d->c2s, d->sm);
    detached_free(d);
}

void c2s_sm_shutdown(struct c2s *c2s)
{
    pthread_mutex_lock(&c2s->lock);
    while (c2s->detached) {
        struct detached *d = c2s->detached;
        claim(c2s, d);
        kt_loop_post(d->loop, release_on_loop, d);
    }
    pthread_mutex_unlock(&c2s->lock);
}
