/* Unit tests for core/stanza.c: classification of every kind and type,
 * faults, reference counting, immutability of shared stanzas (a mutator on
 * a shared stanza must abort: checked in a forked child), the wire cache
 * (also raced from four threads), error replies and iq results. Stanzas
 * are parsed with the real stream parser so the trees are what the server
 * sees. */
#include "config.h"
#include <kontalk/stanza.h>
#include <kontalk/xmlstream.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

int main(void);

#define HEADER                                                                                     \
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "        \
    "to='kontalk.example' version='1.0'>"

static void grab(void *data, struct kt_xml *el)
{
    struct kt_xml **slot = data;
    kt_assert(*slot == NULL);
    *slot = el;
}

/* Parses one stanza written as it would appear on a c2s stream. */
static struct kt_stanza *parse(const char *xml)
{
    static const struct kt_xmlstream_limits lim = {65536, 32, 64, 1024};
    static const struct kt_xmlstream_callbacks cb = {.element = grab};
    struct kt_xml *el = NULL;
    struct kt_xmlstream *xs = kt_xmlstream_new(&lim, &cb, &el);
    int rc = kt_xmlstream_feed(xs, HEADER, strlen(HEADER));
    rc |= kt_xmlstream_feed(xs, xml, strlen(xml));
    kt_xmlstream_free(&xs);
    kt_assert(rc == 0 && el != NULL);
    return kt_stanza_new(el);
}

struct cls_case {
    const char *xml;
    unsigned kind;
    unsigned type;
    enum kt_stanza_err fault;
    const char *to, *from, *id, *ns, *payload;
};

static const struct cls_case cases[] = {
    {"<message/>", KT_KIND_MESSAGE, KT_TYPE_NORMAL, KT_SE_NONE, NULL, NULL, NULL, NULL, NULL},
    {"<message type='normal'/>", KT_KIND_MESSAGE, KT_TYPE_NORMAL, 0, NULL, NULL, NULL, NULL, NULL},
    {"<message type='chat' to='Bob@Kontalk.Example/Phone' from='a@k' id='m1'><body>x</body>"
     "</message>",
     KT_KIND_MESSAGE, KT_TYPE_CHAT, 0, "bob@kontalk.example/Phone", "a@k", "m1", "jabber:client",
     "body"},
    {"<message type='groupchat'/>", KT_KIND_MESSAGE, KT_TYPE_GROUPCHAT, 0, NULL, NULL, NULL, NULL,
     NULL},
    {"<message type='headline'/>", KT_KIND_MESSAGE, KT_TYPE_HEADLINE, 0, NULL, NULL, NULL, NULL,
     NULL},
    {"<message type='error'/>", KT_KIND_MESSAGE, KT_TYPE_ERROR, 0, NULL, NULL, NULL, NULL, NULL},
    {"<message type='get'/>", KT_KIND_MESSAGE, KT_TYPE_INVALID, KT_SE_BAD_REQUEST, NULL, NULL, NULL,
     NULL, NULL},
    {"<message type='Chat'/>", KT_KIND_MESSAGE, KT_TYPE_INVALID, KT_SE_BAD_REQUEST, NULL, NULL,
     NULL, NULL, NULL},
    {"<message type=''/>", KT_KIND_MESSAGE, KT_TYPE_INVALID, KT_SE_BAD_REQUEST, NULL, NULL, NULL,
     NULL, NULL},
    {"<presence/>", KT_KIND_PRESENCE, KT_TYPE_AVAILABLE, 0, NULL, NULL, NULL, NULL, NULL},
    {"<presence type='unavailable'/>", KT_KIND_PRESENCE, KT_TYPE_UNAVAILABLE, 0, NULL, NULL, NULL,
     NULL, NULL},
    {"<presence type='subscribe' to='a@k'/>", KT_KIND_PRESENCE, KT_TYPE_SUBSCRIBE, 0, "a@k", NULL,
     NULL, NULL, NULL},
    {"<presence type='subscribed'/>", KT_KIND_PRESENCE, KT_TYPE_SUBSCRIBED, 0, NULL, NULL, NULL,
     NULL, NULL},
    {"<presence type='unsubscribe'/>", KT_KIND_PRESENCE, KT_TYPE_UNSUBSCRIBE, 0, NULL, NULL, NULL,
     NULL, NULL},
    {"<presence type='unsubscribed'/>", KT_KIND_PRESENCE, KT_TYPE_UNSUBSCRIBED, 0, NULL, NULL, NULL,
     NULL, NULL},
    {"<presence type='probe'/>", KT_KIND_PRESENCE, KT_TYPE_PROBE, 0, NULL, NULL, NULL, NULL, NULL},
    {"<presence type='error'/>", KT_KIND_PRESENCE, KT_TYPE_ERROR, 0, NULL, NULL, NULL, NULL, NULL},
    {"<presence type='available'/>", KT_KIND_PRESENCE, KT_TYPE_INVALID, KT_SE_BAD_REQUEST, NULL,
     NULL, NULL, NULL, NULL},
    {"<presence><c xmlns='http://jabber.org/protocol/caps'/></presence>", KT_KIND_PRESENCE,
     KT_TYPE_AVAILABLE, 0, NULL, NULL, NULL, "http://jabber.org/protocol/caps", "c"},
    {"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>", KT_KIND_IQ, KT_TYPE_GET, 0,
     NULL, NULL, "r1", "jabber:iq:roster", "query"},
    {"<iq type='set' id='b'> <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/> </iq>", KT_KIND_IQ,
     KT_TYPE_SET, 0, NULL, NULL, "b", "urn:ietf:params:xml:ns:xmpp-bind", "bind"},
    {"<iq type='result' id='r'/>", KT_KIND_IQ, KT_TYPE_RESULT, 0, NULL, NULL, "r", NULL, NULL},
    {"<iq type='error' id='e'><error type='cancel'/></iq>", KT_KIND_IQ, KT_TYPE_ERROR, 0, NULL,
     NULL, "e", "jabber:client", "error"},
    {"<iq id='x'><ping xmlns='urn:xmpp:ping'/></iq>", KT_KIND_IQ, KT_TYPE_INVALID,
     KT_SE_BAD_REQUEST, NULL, NULL, "x", "urn:xmpp:ping", "ping"},
    {"<iq type='fetch' id='x'><ping xmlns='urn:xmpp:ping'/></iq>", KT_KIND_IQ, KT_TYPE_INVALID,
     KT_SE_BAD_REQUEST, NULL, NULL, "x", "urn:xmpp:ping", "ping"},
    {"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>", KT_KIND_IQ, KT_TYPE_GET,
     KT_SE_BAD_REQUEST, NULL, NULL, NULL, "urn:xmpp:ping", "ping"},
    {"<iq type='result'/>", KT_KIND_IQ, KT_TYPE_RESULT, KT_SE_BAD_REQUEST, NULL, NULL, NULL, NULL,
     NULL},
    {"<iq type='get' id='x'/>", KT_KIND_IQ, KT_TYPE_GET, KT_SE_BAD_REQUEST, NULL, NULL, "x", NULL,
     NULL},
    {"<iq type='set' id='x'><a xmlns='u'/><b xmlns='u'/></iq>", KT_KIND_IQ, KT_TYPE_SET,
     KT_SE_BAD_REQUEST, NULL, NULL, "x", "u", "a"},
    {"<message to='@k'/>", KT_KIND_MESSAGE, KT_TYPE_NORMAL, KT_SE_JID_MALFORMED, NULL, NULL, NULL,
     NULL, NULL},
    {"<message to='a@k' from=''/>", KT_KIND_MESSAGE, KT_TYPE_NORMAL, KT_SE_JID_MALFORMED, "a@k",
     NULL, NULL, NULL, NULL},
    {"<message to='a b@k' type='bogus'/>", KT_KIND_MESSAGE, KT_TYPE_INVALID, KT_SE_JID_MALFORMED,
     NULL, NULL, NULL, NULL, NULL},
    {"<r xmlns='urn:xmpp:sm:3'/>", KT_KIND_OTHER, 0, 0, NULL, NULL, NULL, NULL, NULL},
    {"<message xmlns='urn:other'/>", KT_KIND_OTHER, 0, 0, NULL, NULL, NULL, NULL, NULL},
    {"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", KT_KIND_OTHER, 0, 0, NULL, NULL, NULL,
     NULL, NULL},
};

static void test_classify(void)
{
    for (size_t i = 0; i < KT_ARRAY_SIZE(cases); i++) {
        const struct cls_case *c = &cases[i];
        struct kt_stanza *st = parse(c->xml);
        const struct kt_jid *to = kt_stanza_to(st), *from = kt_stanza_from(st);
        bool good = kt_stanza_kind(st) == c->kind && kt_stanza_type(st) == c->type &&
                    kt_stanza_fault(st) == c->fault;
        good = good && ((!to && !c->to) || (to && c->to && strcmp(to->full, c->to) == 0));
        good =
            good && ((!from && !c->from) || (from && c->from && strcmp(from->full, c->from) == 0));
        const char *id = kt_stanza_id(st), *ns = kt_stanza_ns(st);
        const char *pl = kt_stanza_payload_name(st);
        good = good && ((!id && !c->id) || (id && c->id && strcmp(id, c->id) == 0));
        good = good && ((!ns && !c->ns) || (ns && c->ns && strcmp(ns, c->ns) == 0));
        good = good && ((!pl && !c->payload) || (pl && c->payload && strcmp(pl, c->payload) == 0));
        if (!ok(good, "classify %s", c->xml))
            diag("kind %u type %#x fault %s to %s from %s id %s ns %s payload %s",
                 (unsigned)kt_stanza_kind(st), (unsigned)kt_stanza_type(st),
                 kt_stanza_err_name(kt_stanza_fault(st)), to ? to->full : "-",
                 from ? from->full : "-", id ? id : "-", ns ? ns : "-", pl ? pl : "-");
        kt_stanza_unref(&st);
    }
    struct kt_stanza *st = parse("<message/>");
    is_str(kt_stanza_name(st), "message", "name");
    ok(kt_stanza_xml(st) != NULL && strcmp(kt_stanza_xml(st)->ns, KT_NS_CLIENT) == 0,
       "root element in jabber:client");
    kt_stanza_unref(&st);

    /* Built by code, in jabber:server or without a namespace. */
    struct kt_xml *x = kt_xml_new("iq", KT_NS_SERVER);
    kt_xml_set_attr(x, "type", "result");
    kt_xml_set_attr(x, "id", "s1");
    st = kt_stanza_new(x);
    ok(kt_stanza_kind(st) == KT_KIND_IQ && kt_stanza_fault(st) == KT_SE_NONE, "jabber:server iq");
    is_str(kt_stanza_wire(st, NULL), "<iq type='result' id='s1'/>",
           "no xmlns for jabber:server on the wire");
    kt_stanza_unref(&st);
    st = kt_stanza_new(kt_xml_new("presence", NULL));
    ok(kt_stanza_kind(st) == KT_KIND_PRESENCE, "presence without a namespace");
    kt_stanza_unref(&st);
}

static void test_refcount(void)
{
    struct kt_stanza *st = parse("<message to='a@k'><body>hi</body></message>");
    is_int(kt_stanza_refcount(st), 1, "new stanza has one reference");
    struct kt_stanza *r = kt_stanza_ref(st);
    ok(r == st, "ref returns the stanza");
    is_int(kt_stanza_refcount(st), 2, "two references");
    kt_stanza_unref(&r);
    ok(r == NULL, "unref clears the pointer");
    is_int(kt_stanza_refcount(st), 1, "back to one");
    kt_stanza_unref(&st);
    ok(st == NULL, "last unref frees (leak checkers would tell otherwise)");
    kt_stanza_unref(&st);
    ok(1, "unref of NULL is a no-op");
}

/* Runs fn(st) in a child with stderr silenced; true if it died of SIGABRT. */
static bool aborts(void (*fn)(struct kt_stanza *), struct kt_stanza *st)
{
    fflush(stdout);
    pid_t pid = fork();
    kt_assert(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 2);
        fn(st);
        _exit(0);
    }
    int status;
    kt_assert(waitpid(pid, &status, 0) == pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void mut_set_attr(struct kt_stanza *st)
{
    kt_stanza_set_attr(st, "id", "x");
}

static void mut_set_to(struct kt_stanza *st)
{
    kt_stanza_set_to(st, NULL);
}

static void mut_xml(struct kt_stanza *st)
{
    kt_stanza_xml_mut(st);
}

static void mut_touch(struct kt_stanza *st)
{
    kt_stanza_touch(st);
}

static void mut_none(struct kt_stanza *st)
{
    kt_stanza_set_attr(st, "id", "x");
}

static void test_immutability(void)
{
    struct kt_stanza *st = parse("<message to='a@k' id='1'><body>hi</body></message>");
    ok(!aborts(mut_none, st), "a mutator on an unshared stanza does not abort");
    struct kt_stanza *shared = kt_stanza_ref(st);
    ok(aborts(mut_set_attr, st), "set_attr on a shared stanza aborts");
    ok(aborts(mut_set_to, st), "set_to on a shared stanza aborts");
    ok(aborts(mut_xml, st), "xml_mut on a shared stanza aborts");
    ok(aborts(mut_touch, st), "touch on a shared stanza aborts");
    is_str(kt_stanza_id(st), "1", "parent unchanged");

    struct kt_stanza *w = st;
    kt_stanza_make_writable(&w);
    ok(w != st, "make_writable copies a shared stanza");
    is_int(kt_stanza_refcount(st), 1, "  and drops one reference of the original");
    is_int(kt_stanza_refcount(w), 1, "  the copy is private");
    is_str(kt_stanza_wire(w, NULL), kt_stanza_wire(st, NULL), "  with equal bytes");
    struct kt_stanza *same = w;
    kt_stanza_make_writable(&same);
    ok(same == w, "make_writable keeps an unshared stanza");

    struct kt_jid *j = kt_jid_parse("b@k/r");
    kt_stanza_set_to(w, j);
    kt_stanza_set_from(w, j);
    kt_jid_free(&j);
    ok(kt_stanza_to(w) && strcmp(kt_stanza_to(w)->full, "b@k/r") == 0, "set_to re-classifies");
    is_str(kt_stanza_wire(w, NULL),
           "<message to='b@k/r' id='1' from='b@k/r'><body>hi</body></message>",
           "set_to/set_from serialised");
    kt_stanza_set_from(w, NULL);
    ok(kt_stanza_from(w) == NULL, "set_from NULL removes");
    kt_stanza_set_attr(w, "type", "bogus");
    ok(kt_stanza_type(w) == KT_TYPE_INVALID && kt_stanza_fault(w) == KT_SE_BAD_REQUEST,
       "set_attr re-classifies the type");
    kt_stanza_set_attr(w, "type", NULL);
    ok(kt_stanza_fault(w) == KT_SE_NONE, "and the fault goes away");

    const char *before = kt_stanza_wire(w, NULL);
    kt_assert(before);
    struct kt_xml *root = kt_stanza_xml_mut(w);
    kt_xml_add_child(root, "x", "urn:x");
    kt_stanza_touch(w);
    is_str(kt_stanza_wire(w, NULL),
           "<message to='b@k/r' id='1'><body>hi</body><x xmlns='urn:x'/>"
           "</message>",
           "xml_mut + touch: cache dropped");
    is_str(kt_stanza_payload_name(w), "body", "payload still the first child");

    struct kt_stanza *copy = kt_stanza_copy(shared);
    ok(copy != shared && kt_stanza_refcount(copy) == 1, "copy is private");
    kt_stanza_unref(&copy);
    kt_stanza_unref(&w);
    kt_stanza_unref(&shared);
}

static void test_wire(void)
{
    struct kt_stanza *st = parse("<message to='a@k' type='chat' xml:lang='en'><body>a &amp; b"
                                 "</body><x xmlns='jabber:x:oob'><url>u</url></x></message>");
    size_t len = 0, len2 = 0;
    const char *w1 = kt_stanza_wire(st, &len);
    const char *w2 = kt_stanza_wire(st, &len2);
    ok(w1 == w2, "serialised once: same pointer twice");
    is_int(len, strlen(w1), "length");
    is_int(len2, len, "same length");
    is_str(w1,
           "<message to='a@k' type='chat' xml:lang='en'><body>a &amp; b</body>"
           "<x xmlns='jabber:x:oob'><url>u</url></x></message>",
           "wire bytes without jabber:client xmlns on the root");
    ok(kt_stanza_wire(st, NULL) == w1, "len_r may be NULL");
    kt_stanza_unref(&st);
}

#define NTHREADS 4

struct race {
    struct kt_stanza *st;
    pthread_barrier_t *barrier;
    const char *got;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    pthread_barrier_wait(r->barrier);
    r->got = kt_stanza_wire(r->st, NULL);
    return NULL;
}

static void test_wire_threads(void)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    int same_ptr = 0, same_bytes = 0, rounds = 200;
    for (int round = 0; round < rounds; round++) {
        struct kt_stanza *st = parse("<message to='a@k'><body>racing threads Привет</body>"
                                     "<active xmlns='http://jabber.org/protocol/chatstates'/>"
                                     "</message>");
        pthread_t th[NTHREADS];
        struct race rs[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            rs[i] = (struct race){.st = kt_stanza_ref(st), .barrier = &barrier};
            kt_assert(pthread_create(&th[i], NULL, race_thread, &rs[i]) == 0);
        }
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(th[i], NULL);
        bool p = true, b = true;
        for (int i = 0; i < NTHREADS; i++) {
            p = p && rs[i].got == rs[0].got;
            b = b && strcmp(rs[i].got, "<message to='a@k'><body>racing threads Привет</body>"
                                       "<active xmlns='http://jabber.org/protocol/chatstates'/>"
                                       "</message>") == 0;
            kt_stanza_unref(&rs[i].st);
        }
        same_ptr += p;
        same_bytes += b;
        p = p && kt_stanza_wire(st, NULL) == rs[0].got;
        kt_stanza_unref(&st);
    }
    pthread_barrier_destroy(&barrier);
    is_int(same_ptr, rounds, "4 threads racing on kt_stanza_wire get one pointer");
    is_int(same_bytes, rounds, "  and the right bytes");
}

static void reply_is(const char *in, enum kt_stanza_err err, const char *text, const char *want,
                     const char *name)
{
    struct kt_stanza *st = parse(in);
    struct kt_stanza *r = kt_stanza_error_reply(st, err, text);
    if (!want) {
        ok(r == NULL, "%s", name);
    } else if (ok(r != NULL, "%s", name)) {
        is_str(kt_stanza_wire(r, NULL), want, "  bytes");
        /* A malformed address comes back malformed: only then a fault. */
        ok(kt_stanza_type(r) == KT_TYPE_ERROR &&
               kt_stanza_fault(r) == (err == KT_SE_JID_MALFORMED ? err : KT_SE_NONE),
           "  classified as an error");
        /* Never answer an error with an error. */
        struct kt_stanza *rr = kt_stanza_error_reply(r, KT_SE_BAD_REQUEST, NULL);
        ok(rr == NULL, "  no error reply to the error");
        kt_stanza_unref(&r);
    }
    kt_stanza_unref(&st);
}

static void test_replies(void)
{
    reply_is("<message to='b@k' from='a@k/r' id='m' xml:lang='en'><body>hi</body></message>",
             KT_SE_RECIPIENT_UNAVAILABLE, "Gone fishing <&>",
             "<message to='a@k/r' from='b@k' id='m' xml:lang='en' type='error'><body>hi</body>"
             "<error type='wait'><recipient-unavailable "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Gone fishing &lt;&amp;&gt;</text>"
             "</error></message>",
             "message error reply with text");
    reply_is("<presence to='b@k' type='subscribe'/>", KT_SE_FORBIDDEN, NULL,
             "<presence type='error' from='b@k'><error type='auth'><forbidden "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
             "presence without from: reply has no to");
    reply_is("<message type='error'><body>x</body></message>", KT_SE_BAD_REQUEST, NULL, NULL,
             "no error reply to a message error");
    reply_is("<iq type='error' id='1'/>", KT_SE_BAD_REQUEST, NULL, NULL,
             "no error reply to an iq error");
    reply_is("<r xmlns='urn:xmpp:sm:3'/>", KT_SE_BAD_REQUEST, NULL, NULL,
             "no error reply to a non-stanza");
    reply_is("<message to='@bad' id='j'/>", KT_SE_JID_MALFORMED, NULL,
             "<message id='j' from='@bad' type='error'><error type='modify'><jid-malformed "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
             "reply to a malformed address keeps the raw value");

    struct kt_stanza *st = parse("<iq type='set' id='s7' to='k' from='u@k/r'>"
                                 "<query xmlns='jabber:iq:roster'/></iq>");
    struct kt_stanza *r = kt_stanza_iq_result(st);
    is_str(kt_stanza_wire(r, NULL), "<iq to='u@k/r' from='k' type='result' id='s7'/>",
           "iq result: swapped, same id, no children");
    ok(kt_stanza_kind(r) == KT_KIND_IQ && kt_stanza_type(r) == KT_TYPE_RESULT &&
           kt_stanza_fault(r) == KT_SE_NONE,
       "iq result classified");
    kt_stanza_unref(&r);
    kt_stanza_unref(&st);
    st = parse("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    r = kt_stanza_iq_result(st);
    is_str(kt_stanza_wire(r, NULL), "<iq type='result' id='p'/>", "iq result without addresses");
    kt_stanza_unref(&r);
    kt_stanza_unref(&st);
}

int main(void)
{
    kt_xmlstream_global_init();
    test_classify();
    test_refcount();
    test_immutability();
    test_wire();
    test_wire_threads();
    test_replies();
    return done_testing();
}
