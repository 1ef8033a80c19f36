/* Stanza objects (see kontalk/stanza.h): a top-level element plus what the
 * router needs to know about it, computed once by classify(): kind, type
 * bits, parsed to/from JIDs, id, and the first child element's name and
 * namespace (the payload of an iq; for message and presence simply the
 * first child, e.g. <body/>).
 *
 * Faults. classify() records the first problem it finds, checking in this
 * order: to, from (KT_SE_JID_MALFORMED), then type, id and payload
 * (KT_SE_BAD_REQUEST): an unknown type value (KT_TYPE_INVALID), an iq
 * without a type or without an id, an iq get/set without exactly one child
 * element (RFC 6120 §8.2.3). Only message, presence and iq in
 * jabber:client, jabber:server or no namespace are stanzas; anything else
 * is KT_KIND_OTHER with type 0.
 *
 * Sharing. The refcount is a C11 atomic; a stanza whose count is above 1 is
 * read-only (mutators assert). The serialisation is computed on first use
 * and published with a compare-exchange: threads racing on a shared stanza
 * each build a copy, one wins, the others free theirs. The root is written
 * against its own namespace, so no jabber:client/jabber:server xmlns
 * appears on it and the bytes fit any stream. */
#include "config.h"
#include <kontalk/stanza.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct wire {
    size_t len;
    char data[];
};

struct kt_stanza {
    atomic_int refs;
    _Atomic(struct wire *) wire;
    struct kt_xml *root;
    enum kt_stanza_kind kind;
    enum kt_stanza_type type;
    enum kt_stanza_err fault;
    struct kt_jid *to;
    struct kt_jid *from;
    const char *id;         /* points into root's attributes */
    const char *payload_ns; /* point into root's first child element */
    const char *payload_name;
    void (*on_release)(void *data); /* kt_stanza_on_release */
    void *on_release_data;
};

struct type_name {
    const char *name;
    enum kt_stanza_type type;
};

static const struct type_name message_types[] = {
    {"normal", KT_TYPE_NORMAL},     {"chat", KT_TYPE_CHAT},   {"groupchat", KT_TYPE_GROUPCHAT},
    {"headline", KT_TYPE_HEADLINE}, {"error", KT_TYPE_ERROR}, {NULL, 0},
};

static const struct type_name presence_types[] = {
    {"unavailable", KT_TYPE_UNAVAILABLE},
    {"subscribe", KT_TYPE_SUBSCRIBE},
    {"subscribed", KT_TYPE_SUBSCRIBED},
    {"unsubscribe", KT_TYPE_UNSUBSCRIBE},
    {"unsubscribed", KT_TYPE_UNSUBSCRIBED},
    {"probe", KT_TYPE_PROBE},
    {"error", KT_TYPE_ERROR},
    {NULL, 0},
};

static const struct type_name iq_types[] = {
    {"get", KT_TYPE_GET},
    {"set", KT_TYPE_SET},
    {"result", KT_TYPE_RESULT},
    {"error", KT_TYPE_ERROR},
    {NULL, 0},
};

static enum kt_stanza_type lookup_type(const struct type_name *t, const char *value)
{
    for (; t->name; t++) {
        if (strcmp(t->name, value) == 0)
            return t->type;
    }
    return KT_TYPE_INVALID;
}

static void set_fault(struct kt_stanza *st, enum kt_stanza_err err)
{
    if (st->fault == KT_SE_NONE)
        st->fault = err;
}

static struct kt_jid *parse_addr(struct kt_stanza *st, const char *attr)
{
    const char *s = kt_xml_attr(st->root, attr);
    if (!s)
        return NULL;
    struct kt_jid *j = kt_jid_parse(s);
    if (!j)
        set_fault(st, KT_SE_JID_MALFORMED);
    return j;
}

static bool is_stanza_ns(const char *ns)
{
    return !ns || strcmp(ns, KT_NS_CLIENT) == 0 || strcmp(ns, KT_NS_SERVER) == 0;
}

static void classify(struct kt_stanza *st)
{
    struct kt_xml *root = st->root;
    kt_jid_free(&st->to);
    kt_jid_free(&st->from);
    st->fault = KT_SE_NONE;
    st->kind = KT_KIND_OTHER;
    st->type = 0;

    st->id = kt_xml_attr(root, "id");
    struct kt_xml *payload = kt_xml_first_element(root);
    st->payload_ns = payload ? payload->ns : NULL;
    st->payload_name = payload ? payload->name : NULL;

    const struct type_name *types = NULL;
    enum kt_stanza_type absent = KT_TYPE_INVALID;
    if (is_stanza_ns(root->ns)) {
        if (strcmp(root->name, "message") == 0) {
            st->kind = KT_KIND_MESSAGE;
            types = message_types;
            absent = KT_TYPE_NORMAL;
        } else if (strcmp(root->name, "presence") == 0) {
            st->kind = KT_KIND_PRESENCE;
            types = presence_types;
            absent = KT_TYPE_AVAILABLE;
        } else if (strcmp(root->name, "iq") == 0) {
            st->kind = KT_KIND_IQ;
            types = iq_types;
        }
    }
    if (!types)
        return;

    st->to = parse_addr(st, "to");
    st->from = parse_addr(st, "from");
    const char *type = kt_xml_attr(root, "type");
    st->type = type ? lookup_type(types, type) : absent;
    if (st->type == KT_TYPE_INVALID)
        set_fault(st, KT_SE_BAD_REQUEST);
    if (st->kind == KT_KIND_IQ) {
        if (!st->id)
            set_fault(st, KT_SE_BAD_REQUEST);
        if ((st->type & (KT_TYPE_GET | KT_TYPE_SET)) &&
            (!payload || kt_xml_next_element(payload) != NULL))
            set_fault(st, KT_SE_BAD_REQUEST);
    }
}

struct kt_stanza *kt_stanza_new(struct kt_xml *root)
{
    kt_assert(root != NULL && root->name != NULL);
    kt_assert(root->parent == NULL);
    struct kt_stanza *st = kt_new(struct kt_stanza);
    atomic_init(&st->refs, 1);
    atomic_init(&st->wire, NULL);
    st->root = root;
    classify(st);
    return st;
}

struct kt_stanza *kt_stanza_ref(struct kt_stanza *st)
{
    int old = atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    kt_assert(old > 0);
    return st;
}

static void drop_wire(struct kt_stanza *st)
{
    free(atomic_exchange(&st->wire, NULL));
}

void kt_stanza_unref(struct kt_stanza **stp)
{
    if (!stp || !*stp)
        return;
    struct kt_stanza *st = *stp;
    *stp = NULL;
    /* Release our writes; the thread that frees acquires everyone's. */
    int old = atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel);
    if (old <= 0) {
        /* A reference dropped twice: memory is corrupt, stop here. */
        abort();
    }
    if (old > 1)
        return;
    if (st->on_release)
        st->on_release(st->on_release_data);
    drop_wire(st);
    kt_jid_free(&st->to);
    kt_jid_free(&st->from);
    kt_xml_free(&st->root);
    free(st);
}

void kt_stanza_on_release(struct kt_stanza *st, void (*fn)(void *data), void *data)
{
    kt_assert(st->on_release == NULL); /* one watcher per stanza */
    st->on_release = fn;
    st->on_release_data = data;
}

struct kt_stanza *kt_stanza_keep(struct kt_stanza *st)
{
    /* on_release is set before the stanza is shared, so reading it here
     * (from a thread that holds a reference) is race-free. */
    return st->on_release ? kt_stanza_copy(st) : kt_stanza_ref(st);
}

enum kt_stanza_kind kt_stanza_kind(const struct kt_stanza *st)
{
    return st->kind;
}

enum kt_stanza_type kt_stanza_type(const struct kt_stanza *st)
{
    return st->type;
}

const char *kt_stanza_name(const struct kt_stanza *st)
{
    return st->root->name;
}

const struct kt_jid *kt_stanza_to(const struct kt_stanza *st)
{
    return st->to;
}

const struct kt_jid *kt_stanza_from(const struct kt_stanza *st)
{
    return st->from;
}

const char *kt_stanza_id(const struct kt_stanza *st)
{
    return st->id;
}

const char *kt_stanza_ns(const struct kt_stanza *st)
{
    return st->payload_ns;
}

const char *kt_stanza_payload_name(const struct kt_stanza *st)
{
    return st->payload_name;
}

enum kt_stanza_err kt_stanza_fault(const struct kt_stanza *st)
{
    return st->fault;
}

const struct kt_xml *kt_stanza_xml(const struct kt_stanza *st)
{
    return st->root;
}

unsigned kt_stanza_refcount(const struct kt_stanza *st)
{
    int n = atomic_load_explicit(&((struct kt_stanza *)st)->refs, memory_order_relaxed);
    return n > 0 ? (unsigned)n : 0;
}

const char *kt_stanza_wire(struct kt_stanza *st, size_t *len_r)
{
    struct wire *w = atomic_load_explicit(&st->wire, memory_order_acquire);
    if (!w) {
        struct kt_buf b = {0};
        kt_xml_serialize(st->root, st->root->ns, &b);
        struct wire *mine = kt_malloc(sizeof(*mine) + b.len + 1);
        mine->len = b.len;
        memcpy(mine->data, b.data, b.len + 1);
        kt_buf_free(&b);
        struct wire *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&st->wire, &expected, mine,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            w = mine;
        } else {
            /* Another thread published first; use its identical bytes. */
            free(mine);
            w = expected;
        }
    }
    if (len_r)
        *len_r = w->len;
    return w->data;
}

static void assert_writable(const struct kt_stanza *st)
{
    kt_assert(kt_stanza_refcount(st) == 1);
}

void kt_stanza_touch(struct kt_stanza *st)
{
    assert_writable(st);
    drop_wire(st);
    classify(st);
}

struct kt_xml *kt_stanza_xml_mut(struct kt_stanza *st)
{
    assert_writable(st);
    drop_wire(st);
    return st->root;
}

void kt_stanza_set_attr(struct kt_stanza *st, const char *name, const char *value)
{
    assert_writable(st);
    kt_xml_set_attr(st->root, name, value);
    kt_stanza_touch(st);
}

void kt_stanza_set_to(struct kt_stanza *st, const struct kt_jid *to)
{
    kt_stanza_set_attr(st, "to", to ? to->full : NULL);
}

void kt_stanza_set_from(struct kt_stanza *st, const struct kt_jid *from)
{
    kt_stanza_set_attr(st, "from", from ? from->full : NULL);
}

struct kt_stanza *kt_stanza_copy(const struct kt_stanza *st)
{
    return kt_stanza_new(kt_xml_copy(st->root));
}

void kt_stanza_make_writable(struct kt_stanza **stp)
{
    if (kt_stanza_refcount(*stp) == 1)
        return;
    struct kt_stanza *copy = kt_stanza_copy(*stp);
    kt_stanza_unref(stp);
    *stp = copy;
}

/* Sets name to value on el, or removes it when value is NULL. */
static void swap_addrs(struct kt_xml *el, const struct kt_xml *orig)
{
    kt_xml_set_attr(el, "to", kt_xml_attr(orig, "from"));
    kt_xml_set_attr(el, "from", kt_xml_attr(orig, "to"));
}

struct kt_stanza *kt_stanza_error_reply(const struct kt_stanza *st, enum kt_stanza_err err,
                                        const char *text)
{
    kt_assert(err != KT_SE_NONE);
    if (st->kind == KT_KIND_OTHER || st->type == KT_TYPE_ERROR)
        return NULL;
    struct kt_xml *root = kt_xml_copy(st->root);
    swap_addrs(root, st->root);
    kt_xml_set_attr(root, "type", "error");
    struct kt_xml *error = kt_xml_add_child(root, "error", root->ns);
    kt_xml_set_attr(error, "type", kt_stanza_err_type(err));
    kt_xml_add_child(error, kt_stanza_err_name(err), KT_NS_STANZAS);
    if (text) {
        struct kt_xml *t = kt_xml_add_child(error, "text", KT_NS_STANZAS);
        kt_xml_add_text(t, text, strlen(text));
    }
    return kt_stanza_new(root);
}

struct kt_stanza *kt_stanza_iq_result(const struct kt_stanza *st)
{
    kt_assert(st->kind == KT_KIND_IQ && (st->type & (KT_TYPE_GET | KT_TYPE_SET)));
    struct kt_xml *root = kt_xml_new("iq", st->root->ns);
    swap_addrs(root, st->root);
    kt_xml_set_attr(root, "type", "result");
    if (st->id)
        kt_xml_set_attr(root, "id", st->id);
    return kt_stanza_new(root);
}
