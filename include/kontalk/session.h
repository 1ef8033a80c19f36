/* The session registry: bound resources (full JIDs) of the users connected
 * to this node, shared by every I/O thread. A session belongs to the module
 * that owns its connection (c2s) and lives on that connection's loop; other
 * threads reach it only through kt_session_deliver(), which posts to that
 * loop. Sharded mutexes keep lookups cheap and never held across I/O.
 *
 * Lifetime: refcounted. The owner creates the session, binds it, and
 * unbinds it when the connection ends (after which deliveries fail and the
 * stanza comes back to the caller to re-route). */
#ifndef KONTALK_SESSION_H
#define KONTALK_SESSION_H

#include "base.h"
#include "jid.h"
#include "stanza.h"

#include <stdint.h>

struct kt_core;
struct kt_loop;
struct kt_session;
struct kt_sessions;

struct kt_session_ops {
    /* On the session's loop: write st to the client (borrowed for the call). */
    void (*deliver)(void *owner, struct kt_stanza *st);
    /* On the session's loop: a new session took this resource (conflict). */
    void (*replaced)(void *owner);
};

KT_API struct kt_sessions *kt_sessions_new(void);
KT_API void kt_sessions_free(struct kt_sessions **reg);

/* A session for full JID jid on loop (the caller's loop). Refcount 1. */
KT_API struct kt_session *kt_session_new(struct kt_loop *loop, const struct kt_jid *jid,
                                         const struct kt_session_ops *ops, void *owner);
KT_API struct kt_session *kt_session_ref(struct kt_session *s);
KT_API void kt_session_unref(struct kt_session **s);
KT_API const struct kt_jid *kt_session_jid(const struct kt_session *s);

enum kt_bind_result { KT_BIND_OK, KT_BIND_CONFLICT };
/* Registers s under its full JID. If another session holds it: replace =
 * true takes it over (the old one's replaced() is posted to its loop and it
 * no longer receives stanzas); false returns KT_BIND_CONFLICT. Any thread. */
KT_API enum kt_bind_result kt_session_bind(struct kt_sessions *reg, struct kt_session *s,
                                           bool replace);
/* Removes s (if it is still the registered holder of its JID) and makes
 * every later delivery to it fail. Any thread; idempotent. */
KT_API void kt_session_unbind(struct kt_sessions *reg, struct kt_session *s);

/* Hands the session to another owner (stream resumption keeps a session
 * alive without a connection). On the session's loop. */
KT_API void kt_session_set_owner(struct kt_session *s, const struct kt_session_ops *ops,
                                 void *owner);

/* The owner's teardown, on the session's loop: unbinds s and detaches the
 * owner, so no callback reaches it any more. Drop your reference after. */
KT_API void kt_session_close(struct kt_sessions *reg, struct kt_session *s);

/* Whether s is still registered (deliveries can succeed). Any thread. */
KT_API bool kt_session_is_bound(const struct kt_session *s);

/* The live session of a full JID, with a reference, or NULL. Any thread. */
KT_API struct kt_session *kt_sessions_find(struct kt_sessions *reg, const struct kt_jid *full);
KT_API unsigned kt_sessions_count(struct kt_sessions *reg);

/* The client's activity, for deciding whether its device needs a push
 * wake-up (mod_sm): the owner records, on the session's loop, each stanza
 * the client sends (touch) and its XEP-0352 state; any thread reads them.
 * A new session is active and was touched when it was created. */
KT_API void kt_session_touch(struct kt_session *s);
KT_API void kt_session_set_inactive(struct kt_session *s, bool inactive);
KT_API bool kt_session_inactive(const struct kt_session *s);
/* Milliseconds since the last touch. */
KT_API uint64_t kt_session_idle_ms(const struct kt_session *s);

/* Any thread. Queues st (a reference is taken) for s's loop. Returns false
 * when s is already unbound. If s ends before the posted delivery runs,
 * the stanza goes to `undeliverable` on s's loop (the router re-routes it)
 * so nothing accepted is lost silently. */
KT_API bool kt_session_deliver(struct kt_session *s, struct kt_stanza *st);
/* Called for stanzas whose session ended while they were queued. Set once
 * at start-up by the core (routes them again through the router). */
typedef void (*kt_undeliverable_fn)(struct kt_stanza *st, void *data);
KT_API void kt_sessions_set_undeliverable(struct kt_sessions *reg, kt_undeliverable_fn fn,
                                          void *data);

#endif
