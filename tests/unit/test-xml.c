/* Unit tests for core/xml.c: building trees, serialisation (escaping,
 * namespace inheritance, namespaced attributes), copies, attribute
 * replacement and removal, text merging, unlinking and iteration. */
#include "config.h"
#include <kontalk/xml.h>

#include <stdlib.h>
#include <string.h>

#include "tap.h"

int main(void);

/* Serialises el against parent_ns and compares with want. */
static void ser_is(const struct kt_xml *el, const char *parent_ns, const char *want,
                   const char *name)
{
    struct kt_buf b = {0};
    kt_xml_serialize(el, parent_ns, &b);
    is_str(b.data, want, name);
    kt_buf_free(&b);
}

static void test_build(void)
{
    struct kt_xml *m = kt_xml_new("message", "jabber:client");
    ok(m->name && strcmp(m->name, "message") == 0 && m->parent == NULL, "new element");
    kt_xml_set_attr(m, "to", "a@b");
    struct kt_xml *body = kt_xml_add_child(m, "body", "jabber:client");
    ok(body->parent == m && m->children == body && m->last == body, "child linked");
    kt_xml_add_text(body, "hello", 5);
    ser_is(m, "jabber:client", "<message to='a@b'><body>hello</body></message>",
           "no xmlns where the namespace is inherited");
    ser_is(m, NULL, "<message xmlns='jabber:client' to='a@b'><body>hello</body></message>",
           "xmlns on the top when the parent namespace differs");
    ser_is(m, "jabber:server",
           "<message xmlns='jabber:client' to='a@b'><body>hello</body></message>",
           "xmlns against another default");
    struct kt_xml *x = kt_xml_add_child(m, "x", "urn:a");
    kt_xml_add_child(x, "y", "urn:a");
    kt_xml_add_child(x, "z", "jabber:client");
    kt_xml_add_child(x, "n", NULL);
    ser_is(m, "jabber:client",
           "<message to='a@b'><body>hello</body><x xmlns='urn:a'><y/><z xmlns='jabber:client'/>"
           "<n xmlns=''/></x></message>",
           "namespaces: inherited, changed, changed back, none");
    struct kt_xml *nons = kt_xml_new("a", NULL);
    kt_xml_add_child(nons, "b", NULL);
    ser_is(nons, NULL, "<a><b/></a>", "no namespace anywhere: no xmlns");
    kt_xml_free(&nons);

    ok(kt_xml_child(m, "body", NULL) == body, "child by name");
    ok(kt_xml_child(m, NULL, "urn:a") == x, "child by namespace");
    ok(kt_xml_child(m, "body", "urn:a") == NULL, "child by name and wrong namespace");
    ok(kt_xml_child(m, "y", NULL) == NULL, "child does not search grandchildren");
    ok(kt_xml_first_element(m) == body && kt_xml_next_element(body) == x &&
           kt_xml_next_element(x) == NULL,
       "element iteration");
    char *t = kt_xml_text(body);
    is_str(t, "hello", "text of an element");
    free(t);
    t = kt_xml_text(m);
    is_str(t, "", "text of an element without text children is empty, not NULL");
    free(t);
    kt_xml_free(&m);
    ok(m == NULL, "free clears the pointer");
    kt_xml_free(&m);
    ok(1, "free of NULL is a no-op");
}

static void test_escape(void)
{
    struct kt_xml *el = kt_xml_new("body", NULL);
    const char txt[] = "a<b>&c\"d'e\r\n]]>";
    kt_xml_add_text(el, txt, sizeof(txt) - 1);
    kt_xml_set_attr(el, "v", "<&>\"'\t\n\r");
    ser_is(el, NULL,
           "<body v='&lt;&amp;&gt;&quot;&apos;&#x9;&#xA;&#xD;'>a&lt;b&gt;&amp;c\"d'e&#xD;\n]]&gt;"
           "</body>",
           "escaping of text and attribute values");
    char *t = kt_xml_text(el);
    is_str(t, txt, "text stays unescaped in the tree");
    free(t);
    is_str(kt_xml_attr(el, "v"), "<&>\"'\t\n\r", "attribute stays unescaped in the tree");
    kt_xml_free(&el);

    el = kt_xml_new("b", NULL);
    kt_xml_add_text(el, "x\0y", 3);
    ok(el->children->text_len == 3, "text length kept with embedded bytes");
    kt_xml_add_text(el, "", 0);
    ok(el->children == el->last, "empty text adds no node");
    kt_xml_free(&el);

    el = kt_xml_new("p", NULL);
    kt_xml_add_text(el, "Grüße 🎉", strlen("Grüße 🎉"));
    ser_is(el, NULL, "<p>Grüße 🎉</p>", "UTF-8 passes through");
    kt_xml_free(&el);
}

static void test_attrs(void)
{
    struct kt_xml *el = kt_xml_new("iq", "jabber:client");
    kt_xml_set_attr(el, "type", "get");
    kt_xml_set_attr(el, "id", "1");
    kt_xml_set_attr(el, "type", "set");
    is_int(el->nattrs, 2, "replacing keeps one attribute");
    is_str(kt_xml_attr(el, "type"), "set", "replaced value");
    kt_xml_set_attr(el, "id", kt_xml_attr(el, "id"));
    is_str(kt_xml_attr(el, "id"), "1", "set to its own value");
    kt_xml_set_attr(el, "type", NULL);
    is_int(el->nattrs, 1, "removed");
    ok(kt_xml_attr(el, "type") == NULL, "removed attribute reads NULL");
    kt_xml_set_attr(el, "nothere", NULL);
    is_int(el->nattrs, 1, "removing an absent attribute is a no-op");
    ok(kt_xml_attr(el, "ID") == NULL, "names are case-sensitive");

    kt_xml_set_attr_ns(el, KT_NS_XML, "lang", "en");
    kt_xml_set_attr(el, "lang", "unqualified");
    is_str(kt_xml_attr_ns(el, KT_NS_XML, "lang"), "en", "xml:lang apart from lang");
    is_str(kt_xml_attr(el, "lang"), "unqualified", "unqualified lang apart from xml:lang");
    ser_is(el, "jabber:client", "<iq id='1' xml:lang='en' lang='unqualified'/>", "xml:lang");
    kt_xml_set_attr(el, "lang", NULL);

    kt_xml_set_attr_ns(el, "urn:p", "a", "1");
    kt_xml_set_attr_ns(el, "urn:q", "b", "2");
    kt_xml_set_attr_ns(el, "urn:p", "c", "3");
    ser_is(el, "jabber:client",
           "<iq id='1' xml:lang='en' xmlns:ns2='urn:p' ns2:a='1' xmlns:ns3='urn:q' ns3:b='2' "
           "ns2:c='3'/>",
           "namespaced attributes get declared prefixes");
    kt_xml_set_attr_ns(el, KT_NS_XMLNS, "xmlns", "jabber:client");
    ser_is(el, "jabber:client",
           "<iq id='1' xml:lang='en' xmlns:ns2='urn:p' ns2:a='1' xmlns:ns3='urn:q' ns3:b='2' "
           "ns2:c='3'/>",
           "declaration attributes are not written");
    is_str(kt_xml_attr_ns(el, "urn:q", "b"), "2", "namespaced lookup");
    ok(kt_xml_attr(el, "b") == NULL, "namespaced attribute is not unqualified");
    kt_xml_free(&el);
}

static void test_text_merge_and_unlink(void)
{
    struct kt_xml *el = kt_xml_new("body", NULL);
    kt_xml_add_text(el, "ab", 2);
    kt_xml_add_text(el, "cd", 2);
    ok(el->children == el->last && el->children->text_len == 4, "adjacent text merged");
    struct kt_xml *br = kt_xml_add_child(el, "br", NULL);
    kt_xml_add_text(el, "ef", 2);
    ok(el->last != br && el->last->name == NULL, "text after an element is a new node");
    char *t = kt_xml_text(el);
    is_str(t, "abcdef", "text concatenates the runs");
    free(t);

    kt_xml_unlink(br);
    ok(br->parent == NULL && br->next == NULL, "unlinked node is detached");
    ser_is(el, NULL, "<body>abcdef</body>", "unlinked from the middle");
    kt_xml_append(el, br);
    ser_is(el, NULL, "<body>abcdef<br/></body>", "re-appended");
    struct kt_xml *first = el->children;
    kt_xml_unlink(first);
    ok(el->children != first, "unlink the first child");
    kt_xml_free(&first);
    kt_xml_unlink(el->last);
    ok(el->last != br && el->last->next == NULL, "unlink the last child fixes last");
    kt_xml_free(&br);
    struct kt_xml *only = el->children;
    kt_xml_free(&only); /* freeing a linked node unlinks it */
    ok(el->children == NULL && el->last == NULL, "free of the only child empties the parent");
    ser_is(el, NULL, "<body/>", "empty element");
    kt_xml_add_text(el, "z", 1);
    ser_is(el, NULL, "<body>z</body>", "append after everything was removed");
    kt_xml_unlink(el);
    ok(1, "unlink without a parent is a no-op");
    kt_xml_free(&el);
}

static void test_copy(void)
{
    struct kt_xml *m = kt_xml_new("message", "jabber:client");
    kt_xml_set_attr(m, "to", "x@y");
    kt_xml_set_attr_ns(m, KT_NS_XML, "lang", "de");
    struct kt_xml *b = kt_xml_add_child(m, "body", "jabber:client");
    kt_xml_add_text(b, "one", 3);
    kt_xml_add_child(kt_xml_add_child(m, "a", "urn:a"), "b", "urn:b");
    struct kt_xml *c = kt_xml_copy(m);
    struct kt_buf b1 = {0}, b2 = {0};
    kt_xml_serialize(m, NULL, &b1);
    kt_xml_serialize(c, NULL, &b2);
    is_str(b2.data, b1.data, "copy serialises identically");
    kt_xml_set_attr(c, "to", "other");
    kt_xml_add_text(kt_xml_child(c, "body", NULL), "two", 3);
    is_str(kt_xml_attr(m, "to"), "x@y", "copy is deep: attributes");
    char *t = kt_xml_text(b);
    is_str(t, "one", "copy is deep: text");
    free(t);
    ok(c->parent == NULL && c->last->parent == c, "copy is a fresh root");
    struct kt_xml *sub = kt_xml_copy(b);
    ok(sub->parent == NULL, "copy of a child has no parent");
    kt_xml_free(&sub);
    kt_buf_free(&b1);
    kt_buf_free(&b2);
    kt_xml_free(&c);
    kt_xml_free(&m);

    /* A deep tree is freed without recursion trouble. */
    struct kt_xml *root = kt_xml_new("d", NULL), *p = root;
    for (int i = 0; i < 100000; i++)
        p = kt_xml_add_child(p, "d", NULL);
    kt_xml_free(&root);
    ok(root == NULL, "deep tree freed");
}

static void test_only_children_in(void)
{
    struct kt_xml *m = kt_xml_new("message", "jabber:client");
    ok(!kt_xml_only_children_in(m, "urn:a"), "no children: false");
    kt_xml_add_text(m, "text", 4);
    ok(!kt_xml_only_children_in(m, "urn:a"), "text only: false");
    kt_xml_add_child(m, "composing", "urn:a");
    ok(kt_xml_only_children_in(m, "urn:a"), "one child in ns: true (text ignored)");
    kt_xml_add_child(m, "paused", "urn:a");
    ok(kt_xml_only_children_in(m, "urn:a"), "two children in ns: true");
    kt_xml_add_child(m, "body", "jabber:client");
    ok(!kt_xml_only_children_in(m, "urn:a"), "one child elsewhere: false");
    kt_xml_free(&m);
}

int main(void)
{
    test_only_children_in();
    test_build();
    test_escape();
    test_attrs();
    test_text_merge_and_unlink();
    test_copy();
    return done_testing();
}
