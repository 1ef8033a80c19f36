/* Router unit tests: route selection (exact, wildcard, default, PASS
 * fall-through), hook order and filters, LOCAL hooks, bounces of unhandled
 * and malformed stanzas, drops, stats, and the freeze contract. Handlers
 * record their tag in a trail string so the order of calls can be checked;
 * bounces are delivered to a "sender.test" route that keeps the last one. */
#include "config.h"
#include <kontalk/router.h>
#include <kontalk/stanza.h>
#include <kontalk/xml.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static char trail[512];

struct cap {
    const char *tag;
    enum kt_verdict verdict;
    int count;
    struct kt_stanza *last;
};

static enum kt_verdict cap_fn(struct kt_stanza *st, void *data)
{
    struct cap *c = data;
    c->count++;
    if (trail[0])
        strncat(trail, " ", sizeof(trail) - strlen(trail) - 1);
    strncat(trail, c->tag, sizeof(trail) - strlen(trail) - 1);
    if (c->last)
        kt_stanza_unref(&c->last);
    c->last = kt_stanza_ref(st);
    return c->verdict;
}

static void cap_reset(struct cap *c)
{
    c->count = 0;
    if (c->last)
        kt_stanza_unref(&c->last);
}

/* <name to from type id><child xmlns=child_ns/></name>; NULL leaves an attribute or the child out.
 */
static struct kt_stanza *mk(const char *name, const char *to, const char *from, const char *type,
                            const char *id, const char *child, const char *child_ns)
{
    struct kt_xml *x = kt_xml_new(name, KT_NS_CLIENT);
    if (to)
        kt_xml_set_attr(x, "to", to);
    if (from)
        kt_xml_set_attr(x, "from", from);
    if (type)
        kt_xml_set_attr(x, "type", type);
    if (id)
        kt_xml_set_attr(x, "id", id);
    if (child)
        kt_xml_add_child(x, child, child_ns);
    return kt_stanza_new(x);
}

/* Dispatches and releases st; returns the trail of handler tags. */
static const char *run(struct kt_router *r, struct kt_stanza *st)
{
    trail[0] = '\0';
    kt_router_dispatch(r, st);
    kt_stanza_unref(&st);
    return trail;
}

static const char *send_to(struct kt_router *r, const char *to)
{
    return run(r, mk("message", to, "alice@sender.test/res", "chat", "m1", "body", KT_NS_CLIENT));
}

/* Checks that bounce is an error reply for a stanza sent from "from" to "to"
 * with condition cond. */
static void check_bounce(const struct kt_stanza *b, const char *kind, const char *to,
                         const char *from, const char *id, const char *cond, const char *etype)
{
    ok(b != NULL, "%s: bounce received", cond);
    if (!b)
        return;
    is_str(kt_stanza_name(b), kind, "bounce element name");
    is_int(kt_stanza_type(b), KT_TYPE_ERROR, "bounce type is error");
    is_str(kt_stanza_to(b) ? kt_stanza_to(b)->full : NULL, to, "bounce to = original from");
    is_str(kt_stanza_from(b) ? kt_stanza_from(b)->full : NULL, from, "bounce from = original to");
    is_str(kt_stanza_id(b), id, "bounce keeps the id");
    const struct kt_xml *err = kt_xml_child(kt_stanza_xml(b), "error", NULL);
    ok(err != NULL, "bounce has <error/>");
    if (!err)
        return;
    is_str(kt_xml_attr(err, "type"), etype, "error type");
    ok(kt_xml_child(err, cond, KT_NS_STANZAS) != NULL, "condition <%s/> present", cond);
}

static void test_route_selection(void)
{
    struct kt_router *r = kt_router_new();
    struct cap e = {"E", KT_HANDLED, 0, NULL}, w1 = {"W1", KT_HANDLED, 0, NULL},
               w2 = {"W2", KT_HANDLED, 0, NULL}, d = {"D", KT_HANDLED, 0, NULL},
               u = {"U", KT_HANDLED, 0, NULL}, s = {"S", KT_HANDLED, 0, NULL};

    is_int(kt_route_add(r, "example.org", 0, cap_fn, &e), 0, "add exact route");
    is_int(kt_route_add(r, "*.example.org", 0, cap_fn, &w1), 0, "add wildcard route");
    is_int(kt_route_add(r, "*.b.example.org", 0, cap_fn, &w2), 0, "add longer wildcard route");
    is_int(kt_route_add(r, "*", 0, cap_fn, &d), 0, "add default route");
    is_int(kt_route_add(r, "Upper.Test.", 0, cap_fn, &u), 0, "add route with case and dot");
    is_int(kt_route_add(r, "sender.test", 0, cap_fn, &s), 0, "add sender route");

    is_int(kt_route_add(r, "example.org", 0, cap_fn, &e), -1, "duplicate exact route refused");
    is_int(kt_route_add(r, "EXAMPLE.ORG", 0, cap_fn, &e), -1, "duplicate differing in case");
    is_int(kt_route_add(r, "*.example.org", 0, cap_fn, &e), -1, "duplicate wildcard refused");
    is_int(kt_route_add(r, "*", 0, cap_fn, &e), -1, "second default refused");
    is_int(kt_route_add(r, "", 0, cap_fn, &e), -1, "empty domain refused");
    is_int(kt_route_add(r, "*.", 0, cap_fn, &e), -1, "empty wildcard refused");
    is_int(kt_route_add(r, "a*b.org", 0, cap_fn, &e), -1, "inner * refused");
    is_int(kt_route_add(r, "*.*.org", 0, cap_fn, &e), -1, "double wildcard refused");
    is_int(kt_route_add(r, "a..org", 0, cap_fn, &e), -1, "empty label refused");
    is_int(kt_route_add(r, ".org", 0, cap_fn, &e), -1, "leading dot refused");
    is_int(kt_route_add(r, "u@org", 0, cap_fn, &e), -1, "@ refused");
    kt_router_freeze(r);

    is_str(send_to(r, "bob@example.org"), "E", "exact domain");
    is_str(send_to(r, "example.org"), "E", "exact domain, bare");
    is_str(send_to(r, "bob@a.example.org/x"), "W1", "wildcard subdomain");
    is_str(send_to(r, "c.a.example.org"), "W1", "wildcard deeper subdomain");
    is_str(send_to(r, "b.example.org"), "W1", "longer wildcard does not match its bare parent");
    is_str(send_to(r, "x.b.example.org"), "W2", "longest wildcard wins");
    is_str(send_to(r, "y.x.b.example.org"), "W2", "longest wildcard wins, deeper");
    is_str(send_to(r, "org"), "D", "parent of parent goes to default");
    is_str(send_to(r, "notexample.org"), "D", "suffix without dot boundary is not a subdomain");
    is_str(send_to(r, "other.net"), "D", "unknown domain to default");
    is_str(send_to(r, "upper.test"), "U", "route pattern normalised");
    is_str(send_to(r, "bob@EXAMPLE.org"), "E", "JID domain case ignored");

    /* No to: route on from's domain. */
    is_str(run(r, mk("presence", NULL, "alice@sender.test/r", NULL, NULL, NULL, NULL)), "S",
           "no to: routed on from domain");

    struct kt_router_stats st;
    kt_router_stats(r, &st);
    is_int(st.dispatched, 13, "stats: dispatched");
    is_int(st.bounced, 0, "stats: nothing bounced");
    is_int(st.dropped, 0, "stats: nothing dropped");

    cap_reset(&e), cap_reset(&w1), cap_reset(&w2), cap_reset(&d), cap_reset(&u), cap_reset(&s);
    kt_router_free(&r);
    ok(r == NULL, "free clears the pointer");
    kt_router_free(&r);
}

static void test_fallthrough(void)
{
    struct kt_router *r = kt_router_new();
    struct cap e = {"E", KT_PASS, 0, NULL}, w = {"W", KT_PASS, 0, NULL},
               d = {"D", KT_HANDLED, 0, NULL}, s = {"S", KT_HANDLED, 0, NULL};
    kt_route_add(r, "x.test", 0, cap_fn, &e);
    kt_route_add(r, "*.test", 0, cap_fn, &w);
    kt_route_add(r, "*", 0, cap_fn, &d);
    kt_route_add(r, "sender.test", 0, cap_fn, &s);
    kt_router_freeze(r);

    is_str(send_to(r, "bob@x.test"), "E W D", "PASS falls through exact, wildcard, default");
    is_str(send_to(r, "bob@y.test"), "W D", "PASS falls through wildcard to default");

    d.verdict = KT_PASS;
    is_str(send_to(r, "bob@x.test"), "E W D S", "all PASS: message bounced to sender");
    check_bounce(s.last, "message", "alice@sender.test/res", "bob@x.test", "m1",
                 "service-unavailable", "cancel");

    struct kt_router_stats st;
    kt_router_stats(r, &st);
    is_int(st.dispatched, 4, "stats: dispatched counts the bounce");
    is_int(st.bounced, 1, "stats: one bounce");
    cap_reset(&e), cap_reset(&w), cap_reset(&d), cap_reset(&s);
    kt_router_free(&r);
}

static void test_hook_order(void)
{
    struct kt_router *r = kt_router_new();
    struct cap a = {"A", KT_PASS, 0, NULL}, b = {"B", KT_PASS, 0, NULL},
               c = {"C", KT_PASS, 0, NULL}, d = {"D", KT_PASS, 0, NULL},
               e = {"E", KT_PASS, 0, NULL}, f = {"F", KT_PASS, 0, NULL},
               rt = {"R", KT_HANDLED, 0, NULL};
    is_int(kt_hook_add(r, KT_HOOK_IN, NULL, 10, cap_fn, &a), 0, "hook A");
    kt_hook_add(r, KT_HOOK_IN, NULL, 0, cap_fn, &b);
    kt_hook_add(r, KT_HOOK_IN, NULL, 10, cap_fn, &c);
    kt_hook_add(r, KT_HOOK_IN, NULL, -5, cap_fn, &d);
    kt_hook_add(r, KT_HOOK_IN, NULL, 0, cap_fn, &e);
    kt_hook_add(r, KT_HOOK_IN, NULL, 1000, cap_fn, &f);
    kt_route_add(r, "x.test", 0, cap_fn, &rt);
    kt_router_freeze(r);

    is_str(send_to(r, "x.test"), "F A C B E D R",
           "priority descending, ties in registration order");
    b.verdict = KT_HANDLED;
    is_str(send_to(r, "x.test"), "F A C B", "HANDLED stops the chain and routing");
    is_int(rt.count, 1, "route not called after HANDLED");

    trail[0] = '\0';
    struct kt_stanza *st = mk("message", "x.test", "a@b.test", NULL, NULL, NULL, NULL);
    is_int(kt_router_run_hooks(r, KT_HOOK_IN, st), KT_HANDLED, "run_hooks reports HANDLED");
    is_int(kt_router_run_hooks(r, KT_HOOK_OUT, st), KT_PASS, "empty stage passes");
    kt_stanza_unref(&st);

    cap_reset(&a), cap_reset(&b), cap_reset(&c), cap_reset(&d), cap_reset(&e), cap_reset(&f);
    cap_reset(&rt);
    kt_router_free(&r);
}

static void test_local_hooks(void)
{
    struct kt_router *r = kt_router_new();
    struct cap h = {"H", KT_PASS, 0, NULL}, l = {"L", KT_HANDLED, 0, NULL},
               rm = {"R", KT_HANDLED, 0, NULL}, x = {"X", KT_PASS, 0, NULL},
               w = {"W", KT_HANDLED, 0, NULL}, in = {"I", KT_PASS, 0, NULL},
               s = {"S", KT_HANDLED, 0, NULL};
    kt_hook_add(r, KT_HOOK_IN, NULL, 0, cap_fn, &in);
    kt_hook_add(r, KT_HOOK_LOCAL, NULL, 0, cap_fn, &h);
    kt_route_add(r, "local.test", KT_ROUTE_LOCAL, cap_fn, &l);
    kt_route_add(r, "remote.test", 0, cap_fn, &rm);
    kt_route_add(r, "a.multi.test", KT_ROUTE_LOCAL, cap_fn, &x);
    kt_route_add(r, "*.multi.test", KT_ROUTE_LOCAL, cap_fn, &w);
    kt_route_add(r, "hooksonly.test", KT_ROUTE_LOCAL, NULL, NULL);
    kt_route_add(r, "sender.test", 0, cap_fn, &s);
    kt_router_freeze(r);

    is_str(send_to(r, "bob@local.test"), "I H L", "LOCAL hooks before a LOCAL route");
    is_str(send_to(r, "bob@remote.test"), "I R", "no LOCAL hooks for other routes");
    is_str(send_to(r, "a.multi.test"), "I H X W", "LOCAL hooks run once per dispatch");

    h.verdict = KT_HANDLED;
    is_str(send_to(r, "bob@local.test"), "I H", "LOCAL hook HANDLED skips deliver");
    is_str(send_to(r, "bob@hooksonly.test"), "I H", "route without deliver, hook handles");
    h.verdict = KT_PASS;
    is_str(send_to(r, "bob@hooksonly.test"), "I H I S",
           "route without deliver, nobody handles: bounced");
    check_bounce(s.last, "message", "alice@sender.test/res", "bob@hooksonly.test", "m1",
                 "service-unavailable", "cancel");

    cap_reset(&h), cap_reset(&l), cap_reset(&rm), cap_reset(&x), cap_reset(&w), cap_reset(&in);
    cap_reset(&s);
    kt_router_free(&r);
}

static void test_match_filters(void)
{
    struct kt_router *r = kt_router_new();
    struct cap k = {"K", KT_PASS, 0, NULL}, t = {"T", KT_PASS, 0, NULL},
               n = {"N", KT_PASS, 0, NULL}, m = {"M", KT_PASS, 0, NULL},
               all = {"A", KT_PASS, 0, NULL}, two = {"2", KT_PASS, 0, NULL},
               rt = {"R", KT_HANDLED, 0, NULL};
    const char *ver = "jabber:iq:version";
    kt_hook_add(r, KT_HOOK_IN, &(struct kt_match){.kinds = KT_KIND_IQ}, 60, cap_fn, &k);
    kt_hook_add(r, KT_HOOK_IN, &(struct kt_match){.kinds = KT_KIND_IQ, .types = KT_TYPE_GET}, 50,
                cap_fn, &t);
    kt_hook_add(r, KT_HOOK_IN, &(struct kt_match){.ns = ver}, 40, cap_fn, &n);
    kt_hook_add(
        r, KT_HOOK_IN,
        &(struct kt_match){
            .kinds = KT_KIND_IQ, .types = KT_TYPE_GET | KT_TYPE_SET, .ns = ver, .name = "query"},
        30, cap_fn, &m);
    kt_hook_add(r, KT_HOOK_IN, &(struct kt_match){0}, 20, cap_fn, &all);
    kt_hook_add(r, KT_HOOK_IN,
                &(struct kt_match){.kinds = KT_KIND_MESSAGE | KT_KIND_PRESENCE,
                                   .types = KT_TYPE_CHAT | KT_TYPE_AVAILABLE},
                10, cap_fn, &two);
    kt_route_add(r, "x.test", 0, cap_fn, &rt);
    kt_router_freeze(r);

    is_str(run(r, mk("iq", "x.test", "a@x.test/r", "get", "1", "query", ver)), "K T N M A R",
           "iq get version query: all iq filters");
    is_str(run(r, mk("iq", "x.test", "a@x.test/r", "set", "1", "query", ver)), "K N M A R",
           "iq set: not the get-only hook");
    is_str(run(r, mk("iq", "x.test", "a@x.test/r", "get", "1", "query", "urn:other")), "K T A R",
           "other namespace");
    is_str(run(r, mk("iq", "x.test", "a@x.test/r", "get", "1", "other", ver)), "K T N A R",
           "other element name");
    is_str(run(r, mk("iq", "x.test", "a@x.test/r", "result", "1", NULL, NULL)), "K A R",
           "no payload: ns and name filters do not match");
    is_str(run(r, mk("iq", "x.test", "a@x.test/r", "result", "1", "query", ver)), "K N A R",
           "iq result");
    is_str(send_to(r, "x.test"), "A 2 R", "chat message");
    is_str(run(r, mk("message", "x.test", "a@x.test/r", NULL, NULL, NULL, NULL)), "A R",
           "normal message: type filter excludes it");
    is_str(run(r, mk("presence", "x.test", "a@x.test/r", NULL, NULL, NULL, NULL)), "A 2 R",
           "available presence: kind and type bits");
    is_str(run(r, mk("presence", "x.test", "a@x.test/r", "unavailable", NULL, NULL, NULL)), "A R",
           "unavailable presence");

    cap_reset(&k), cap_reset(&t), cap_reset(&n), cap_reset(&m), cap_reset(&all), cap_reset(&two);
    cap_reset(&rt);
    kt_router_free(&r);
}

static void test_unhandled(void)
{
    struct kt_router *r = kt_router_new();
    struct cap s = {"S", KT_HANDLED, 0, NULL}, p = {"P", KT_PASS, 0, NULL},
               in = {"I", KT_PASS, 0, NULL};
    struct kt_router_stats st;
    kt_hook_add(r, KT_HOOK_IN, NULL, 0, cap_fn, &in);
    kt_route_add(r, "sender.test", 0, cap_fn, &s);
    kt_route_add(r, "pass.test", 0, cap_fn, &p);
    kt_router_freeze(r);

    /* iq get to a route that passes: service-unavailable. */
    is_str(run(r, mk("iq", "svc@pass.test", "alice@sender.test/res", "get", "q1", "query",
                     "jabber:iq:version")),
           "I P I S", "unhandled iq get bounced");
    check_bounce(s.last, "iq", "alice@sender.test/res", "svc@pass.test", "q1",
                 "service-unavailable", "cancel");
    ok(kt_xml_child(kt_stanza_xml(s.last), "query", "jabber:iq:version") != NULL,
       "bounce keeps the payload");
    cap_reset(&s);

    /* Message to a domain nobody routes, no default: remote-server-not-found. */
    is_str(send_to(r, "bob@nowhere.test"), "I I S", "message to unknown domain bounced");
    check_bounce(s.last, "message", "alice@sender.test/res", "bob@nowhere.test", "m1",
                 "remote-server-not-found", "cancel");
    cap_reset(&s);

    /* iq set to unknown domain, same. */
    is_str(run(r, mk("iq", "nowhere.test", "alice@sender.test/res", "set", "q2", "x", "urn:x")),
           "I I S", "iq set to unknown domain bounced");
    check_bounce(s.last, "iq", "alice@sender.test/res", "nowhere.test", "q2",
                 "remote-server-not-found", "cancel");
    cap_reset(&s);

    kt_router_stats(r, &st);
    is_int(st.bounced, 3, "stats: three bounces");
    is_int(st.dropped, 0, "stats: no drops yet");

    /* Error stanzas, iq results, presence: never bounced, counted as dropped. */
    is_str(run(r, mk("message", "bob@nowhere.test", "alice@sender.test/res", "error", "e1", NULL,
                     NULL)),
           "I", "message error to unknown domain not bounced");
    is_str(run(r, mk("iq", "pass.test", "alice@sender.test/res", "error", "e2", NULL, NULL)), "I P",
           "iq error not bounced");
    is_str(run(r, mk("iq", "pass.test", "alice@sender.test/res", "result", "e3", NULL, NULL)),
           "I P", "iq result not bounced");
    is_str(
        run(r, mk("presence", "bob@nowhere.test", "alice@sender.test/res", NULL, NULL, NULL, NULL)),
        "I", "presence to unknown domain dropped");
    is_str(run(r, mk("presence", "bob@pass.test", "alice@sender.test/res", "subscribe", NULL, NULL,
                     NULL)),
           "I P", "unhandled subscribe dropped");
    is_str(run(r, mk("foo", "bob@nowhere.test", "alice@sender.test/res", "get", "f1", NULL, NULL)),
           "I", "non-stanza element never bounced");
    is_str(run(r, mk("message", NULL, NULL, NULL, NULL, NULL, NULL)), "I",
           "message without to or from dropped");
    is_str(run(r, mk("message", "bob@nowhere.test", NULL, NULL, NULL, NULL, NULL)), "I",
           "message without from cannot be bounced");
    is_int(s.count, 0, "nothing reached the sender");
    kt_router_stats(r, &st);
    is_int(st.bounced, 3, "stats: still three bounces");
    is_int(st.dropped, 8, "stats: eight drops");

    /* kt_router_bounce itself refuses error stanzas and stanzas without from. */
    struct kt_stanza *e =
        mk("message", "bob@pass.test", "alice@sender.test/res", "error", NULL, NULL, NULL);
    kt_router_bounce(r, e, KT_SE_BAD_REQUEST, NULL);
    kt_stanza_unref(&e);
    is_int(s.count, 0, "explicit bounce of an error does nothing");
    e = mk("foo", "bob@pass.test", "alice@sender.test/res", NULL, "f2", NULL, NULL);
    is_int(kt_stanza_kind(e), KT_KIND_OTHER, "foo is not a stanza");
    kt_router_bounce(r, e, KT_SE_BAD_REQUEST, NULL);
    kt_stanza_unref(&e);
    is_int(s.count, 0, "explicit bounce of a non-stanza does nothing");
    kt_router_stats(r, &st);
    is_int(st.dropped, 8, "stats: refused bounces are not counted as drops");

    /* An explicit bounce with a text. */
    e = mk("message", "bob@pass.test", "alice@sender.test/res", NULL, "t1", NULL, NULL);
    kt_router_bounce(r, e, KT_SE_FORBIDDEN, "no way");
    kt_stanza_unref(&e);
    check_bounce(s.last, "message", "alice@sender.test/res", "bob@pass.test", "t1", "forbidden",
                 "auth");
    const struct kt_xml *err = s.last ? kt_xml_child(kt_stanza_xml(s.last), "error", NULL) : NULL;
    const struct kt_xml *text = err ? kt_xml_child(err, "text", KT_NS_STANZAS) : NULL;
    char *txt = text ? kt_xml_text(text) : NULL;
    is_str(txt, "no way", "bounce text");
    free(txt);

    cap_reset(&s), cap_reset(&p), cap_reset(&in);
    kt_router_free(&r);
}

static void test_faults(void)
{
    struct kt_router *r = kt_router_new();
    struct cap s = {"S", KT_HANDLED, 0, NULL}, in = {"I", KT_PASS, 0, NULL},
               d = {"D", KT_HANDLED, 0, NULL};
    kt_hook_add(r, KT_HOOK_IN, &(struct kt_match){.types = KT_TYPE_ERROR}, 0, cap_fn, &in);
    kt_route_add(r, "sender.test", 0, cap_fn, &s);
    kt_route_add(r, "*", 0, cap_fn, &d);
    kt_router_freeze(r);

    struct kt_stanza *st = mk("message", "@bad", "alice@sender.test/res", "chat", "b1", NULL, NULL);
    is_int(kt_stanza_fault(st), KT_SE_JID_MALFORMED, "bad to: fault set");
    is_str(run(r, st), "I S", "bad to: bounced instead of routed");
    check_bounce(s.last, "message", "alice@sender.test/res", NULL, "b1", "jid-malformed", "modify");
    cap_reset(&s);

    is_str(run(r, mk("iq", "x.test", "alice@sender.test/res", "get", NULL, "q", "urn:q")), "I S",
           "iq without id: bounced");
    check_bounce(s.last, "iq", "alice@sender.test/res", "x.test", NULL, "bad-request", "modify");
    cap_reset(&s);

    is_str(run(r, mk("iq", "x.test", "alice@sender.test/res", "fetch", "i1", NULL, NULL)), "I S",
           "iq with bad type: bounced");
    check_bounce(s.last, "iq", "alice@sender.test/res", "x.test", "i1", "bad-request", "modify");
    cap_reset(&s);

    is_str(run(r, mk("iq", "x.test", "alice@sender.test/res", "get", "i2", NULL, NULL)), "I S",
           "iq get without payload: bounced");
    check_bounce(s.last, "iq", "alice@sender.test/res", "x.test", "i2", "bad-request", "modify");
    cap_reset(&s);

    is_str(run(r, mk("message", "bob@x.test", "@bad", "chat", "b2", NULL, NULL)), "",
           "bad from: nobody to bounce to, dropped");
    is_str(run(r, mk("message", "@bad", "alice@sender.test/res", "error", "b3", NULL, NULL)), "",
           "faulty error stanza dropped");
    is_int(d.count, 0, "faulty stanzas never reached a route");

    struct kt_router_stats stats;
    kt_router_stats(r, &stats);
    is_int(stats.bounced, 4, "stats: bounced");
    is_int(stats.dropped, 2, "stats: dropped");
    is_int(stats.dispatched, 10, "stats: dispatched (6 + 4 bounces)");

    cap_reset(&s), cap_reset(&in), cap_reset(&d);
    kt_router_free(&r);
}

/* A deliver function that answers every bounce with a new bounce: only the
 * router's depth guard ends this. */
static enum kt_verdict bounce_again(struct kt_stanza *st, void *data)
{
    struct kt_router *r = *(struct kt_router **)data;
    (void)st;
    trail[0] = (char)(trail[0] ? trail[0] + 1 : '1');
    struct kt_stanza *m = mk("message", "x@nowhere.test", "a@loop.test", NULL, NULL, NULL, NULL);
    kt_router_bounce(r, m, KT_SE_FORBIDDEN, NULL);
    kt_stanza_unref(&m);
    return KT_HANDLED;
}

static void test_bounce_depth(void)
{
    struct kt_router *r = kt_router_new();
    struct kt_router_stats st;
    kt_route_add(r, "loop.test", 0, bounce_again, &r);
    kt_router_freeze(r);
    trail[0] = '\0';
    struct kt_stanza *m = mk("message", "x@nowhere.test", "a@loop.test", NULL, NULL, NULL, NULL);
    kt_router_bounce(r, m, KT_SE_FORBIDDEN, NULL);
    kt_stanza_unref(&m);
    is_int(trail[0], '4', "bounce recursion stops at the depth limit");
    kt_router_stats(r, &st);
    is_int(st.bounced, 4, "stats: bounces up to the limit");
    is_int(st.dropped, 1, "stats: the one beyond the limit dropped");
    kt_router_free(&r);
}

static enum kt_verdict noop(struct kt_stanza *st, void *data)
{
    (void)st, (void)data;
    return KT_PASS;
}

/* Runs what in a child with stderr silenced; true if the child died by SIGABRT. */
static bool aborts(void (*what)(struct kt_router *), struct kt_router *r)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 2);
        what(r);
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return false;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void late_hook(struct kt_router *r)
{
    kt_hook_add(r, KT_HOOK_IN, NULL, 0, noop, NULL);
}

static void late_route(struct kt_router *r)
{
    kt_route_add(r, "late.test", 0, noop, NULL);
}

static void refreeze(struct kt_router *r)
{
    kt_router_freeze(r);
}

static void dispatch_unfrozen(struct kt_router *r)
{
    struct kt_stanza *st = mk("message", "x.test", "a@b.test", NULL, NULL, NULL, NULL);
    kt_router_dispatch(r, st);
    kt_stanza_unref(&st);
}

static void test_freeze(void)
{
    struct kt_router *r = kt_router_new();
    ok(aborts(dispatch_unfrozen, r), "dispatch before freeze aborts");
    kt_hook_add(r, KT_HOOK_IN, NULL, 0, noop, NULL);
    kt_router_freeze(r);
    ok(aborts(late_hook, r), "kt_hook_add after freeze aborts");
    ok(aborts(late_route, r), "kt_route_add after freeze aborts");
    ok(aborts(refreeze, r), "second freeze aborts");
    kt_router_free(&r);
}

int main(void);
int main(void)
{
    test_route_selection();
    test_fallthrough();
    test_hook_order();
    test_local_hooks();
    test_match_filters();
    test_unhandled();
    test_faults();
    test_bounce_depth();
    test_freeze();
    return done_testing();
}
