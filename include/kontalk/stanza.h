/* Stanza objects: a parsed top-level element, classified once (kind, type,
 * to/from, id, payload namespace) and serialised at most once. Refcounted
 * with C11 atomics because stanzas cross threads; a stanza whose refcount is
 * above 1 is immutable (mutators assert). */
#ifndef KONTALK_STANZA_H
#define KONTALK_STANZA_H

#include "base.h"
#include "error.h"
#include "jid.h"
#include "xml.h"

#define KT_NS_CLIENT "jabber:client"
#define KT_NS_SERVER "jabber:server"

/* Bit flags so that hook matches can name several kinds. */
enum kt_stanza_kind {
    KT_KIND_MESSAGE = 1u << 0,
    KT_KIND_PRESENCE = 1u << 1,
    KT_KIND_IQ = 1u << 2,
    KT_KIND_OTHER = 1u << 3, /* any other top-level element */
};

/* Bit flags. An absent type attribute maps to NORMAL (message) or
 * AVAILABLE (presence); an iq always has one. A value the RFC does not
 * define maps to INVALID. */
enum kt_stanza_type {
    KT_TYPE_NORMAL = 1u << 0,
    KT_TYPE_CHAT = 1u << 1,
    KT_TYPE_GROUPCHAT = 1u << 2,
    KT_TYPE_HEADLINE = 1u << 3,
    KT_TYPE_ERROR = 1u << 4,
    KT_TYPE_AVAILABLE = 1u << 5,
    KT_TYPE_UNAVAILABLE = 1u << 6,
    KT_TYPE_SUBSCRIBE = 1u << 7,
    KT_TYPE_SUBSCRIBED = 1u << 8,
    KT_TYPE_UNSUBSCRIBE = 1u << 9,
    KT_TYPE_UNSUBSCRIBED = 1u << 10,
    KT_TYPE_PROBE = 1u << 11,
    KT_TYPE_GET = 1u << 12,
    KT_TYPE_SET = 1u << 13,
    KT_TYPE_RESULT = 1u << 14,
    KT_TYPE_INVALID = 1u << 15,
};

struct kt_stanza;

/* Takes ownership of root (an element) and classifies it. Never NULL.
 * A bad to/from attribute leaves to/from NULL and sets kt_stanza_fault()
 * to KT_SE_JID_MALFORMED; an iq without id or with a bad type sets
 * KT_SE_BAD_REQUEST. The refcount starts at 1. */
KT_API struct kt_stanza *kt_stanza_new(struct kt_xml *root);
KT_API struct kt_stanza *kt_stanza_ref(struct kt_stanza *st);
/* Drops a reference and sets *st to NULL; aborts on a refcount below zero. */
KT_API void kt_stanza_unref(struct kt_stanza **st);

/* Calls fn(data) when the last reference goes, on whichever thread drops
 * it: the stanza has then been fully handled (every job that kept it has
 * finished, e.g. its offline copy is committed). One watcher per stanza;
 * copies do not inherit it. Used by XEP-0198 to ack only handled stanzas. */
KT_API void kt_stanza_on_release(struct kt_stanza *st, void (*fn)(void *data), void *data);

/* A reference for keeping st long-term (queues that wait on a client, last
 * presence): a private copy when someone waits for st's release, so that
 * holding it does not delay that (a sender's XEP-0198 ack). */
KT_API struct kt_stanza *kt_stanza_keep(struct kt_stanza *st);

KT_API enum kt_stanza_kind kt_stanza_kind(const struct kt_stanza *st);
KT_API enum kt_stanza_type kt_stanza_type(const struct kt_stanza *st);
KT_API const char *kt_stanza_name(const struct kt_stanza *st); /* "message", ... */
KT_API const struct kt_jid *kt_stanza_to(const struct kt_stanza *st);
KT_API const struct kt_jid *kt_stanza_from(const struct kt_stanza *st);
KT_API const char *kt_stanza_id(const struct kt_stanza *st);
/* Namespace of the first child element (the iq payload), or NULL. */
KT_API const char *kt_stanza_ns(const struct kt_stanza *st);
/* Name of the first child element, or NULL. */
KT_API const char *kt_stanza_payload_name(const struct kt_stanza *st);
/* Classification fault found by kt_stanza_new (KT_SE_NONE if none). */
KT_API enum kt_stanza_err kt_stanza_fault(const struct kt_stanza *st);
KT_API const struct kt_xml *kt_stanza_xml(const struct kt_stanza *st);
KT_API unsigned kt_stanza_refcount(const struct kt_stanza *st);

/* The serialised bytes (without an xmlns for jabber:client/jabber:server on
 * the top element, so they fit any stream). Computed once and cached;
 * safe to call from several threads. */
KT_API const char *kt_stanza_wire(struct kt_stanza *st, size_t *len_r);

/* Mutators: only on an unshared stanza (refcount 1); they drop the cached
 * serialisation and re-classify. */
KT_API void kt_stanza_set_to(struct kt_stanza *st, const struct kt_jid *to);
KT_API void kt_stanza_set_from(struct kt_stanza *st, const struct kt_jid *from);
KT_API void kt_stanza_set_attr(struct kt_stanza *st, const char *name, const char *value);
/* Writable root for other edits (refcount must be 1); call kt_stanza_touch after. */
KT_API struct kt_xml *kt_stanza_xml_mut(struct kt_stanza *st);
KT_API void kt_stanza_touch(struct kt_stanza *st);
/* A writable private copy (refcount 1). */
KT_API struct kt_stanza *kt_stanza_copy(const struct kt_stanza *st);
/* If *st is shared, replaces it by a private copy (dropping one reference). */
KT_API void kt_stanza_make_writable(struct kt_stanza **st);

/* Builds the error reply RFC 6120 §8.3 describes: to/from swapped,
 * type="error", the original children kept, and
 * <error type='...'><condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
 * [<text>]</error> appended. text may be NULL. Returns NULL for a stanza of
 * type error (errors are never answered with errors). */
KT_API struct kt_stanza *kt_stanza_error_reply(const struct kt_stanza *st,
                                               enum kt_stanza_err err, const char *text);
/* An iq result for an iq get/set: to/from swapped, same id, no children. */
KT_API struct kt_stanza *kt_stanza_iq_result(const struct kt_stanza *st);

#endif
