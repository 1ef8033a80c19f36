/* The small element tree stanzas are made of (see kontalk/xml.h). Elements
 * carry their namespace URI, never a prefix: the parser resolves prefixes
 * and the serialiser re-creates declarations. Serialisation writes an xmlns
 * only where an element's namespace differs from its parent's, so a stanza
 * serialised against the stream's default namespace carries none on its
 * root. Attributes in KT_NS_XML are written with the reserved xml: prefix;
 * other namespaced attributes get a prefix (ns0, ns1, ...) declared on the
 * element itself, which keeps the scheme stateless and always correct.
 * Attributes in KT_NS_XMLNS (namespace declarations the parser reports on a
 * stream header) are never written: declarations are the serialiser's job.
 *
 * Text nodes hold unescaped bytes; the serialiser escapes & < > in text and
 * also " ' and whitespace control characters in attribute values, so that a
 * re-parse yields the same values (attribute-value normalisation would
 * otherwise turn a literal tab or newline into a space). */
#include "config.h"
#include <kontalk/xml.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kt_xml *kt_xml_new(const char *name, const char *ns)
{
    kt_assert(name != NULL);
    struct kt_xml *el = kt_new(struct kt_xml);
    el->name = kt_strdup(name);
    el->ns = ns ? kt_strdup(ns) : NULL;
    return el;
}

struct kt_xml *kt_xml_new_text(const char *text, size_t len)
{
    struct kt_xml *t = kt_new(struct kt_xml);
    t->text = kt_malloc(len + 1);
    if (len)
        memcpy(t->text, text, len);
    t->text[len] = '\0';
    t->text_len = len;
    return t;
}

struct kt_xml *kt_xml_append(struct kt_xml *parent, struct kt_xml *child)
{
    kt_assert(parent != NULL && parent->name != NULL);
    kt_assert(child != NULL && child->parent == NULL && child->next == NULL);
    child->parent = parent;
    if (parent->last)
        parent->last->next = child;
    else
        parent->children = child;
    parent->last = child;
    return child;
}

struct kt_xml *kt_xml_add_child(struct kt_xml *parent, const char *name, const char *ns)
{
    return kt_xml_append(parent, kt_xml_new(name, ns));
}

void kt_xml_add_text(struct kt_xml *parent, const char *text, size_t len)
{
    kt_assert(parent != NULL && parent->name != NULL);
    if (len == 0)
        return;
    struct kt_xml *last = parent->last;
    if (last && !last->name) {
        /* The parser reports text in arbitrary pieces: one node per run
         * keeps trees identical however the input was split. */
        last->text = kt_realloc(last->text, last->text_len + len + 1);
        memcpy(last->text + last->text_len, text, len);
        last->text_len += len;
        last->text[last->text_len] = '\0';
        return;
    }
    kt_xml_append(parent, kt_xml_new_text(text, len));
}

void kt_xml_unlink(struct kt_xml *node)
{
    struct kt_xml *parent = node->parent;
    if (!parent)
        return;
    struct kt_xml *prev = NULL;
    for (struct kt_xml *c = parent->children; c != node; c = c->next) {
        kt_assert(c != NULL);
        prev = c;
    }
    if (prev)
        prev->next = node->next;
    else
        parent->children = node->next;
    if (parent->last == node)
        parent->last = prev;
    node->parent = NULL;
    node->next = NULL;
}

static void free_attrs(struct kt_xml *el)
{
    for (unsigned i = 0; i < el->nattrs; i++) {
        free(el->attrs[i].name);
        free(el->attrs[i].ns);
        free(el->attrs[i].value);
    }
    free(el->attrs);
}

/* Iterative, so that freeing never recurses however deep a tree is. */
static void free_tree(struct kt_xml *node)
{
    struct kt_xml *n = node;
    while (n) {
        if (n->children) {
            n = n->children;
            continue;
        }
        /* n is a leaf: free it, then continue with its next sibling or,
         * when it was the last child, with its (now childless) parent. */
        struct kt_xml *parent = n->parent;
        struct kt_xml *next = n->next;
        bool done = (n == node);
        if (parent && !done)
            parent->children = next;
        free(n->name);
        free(n->ns);
        free(n->text);
        free_attrs(n);
        free(n);
        if (done)
            break;
        if (next) {
            n = next;
        } else {
            parent->last = NULL;
            n = parent;
        }
    }
}

void kt_xml_free(struct kt_xml **node)
{
    if (!node || !*node)
        return;
    kt_xml_unlink(*node);
    free_tree(*node);
    *node = NULL;
}

static void copy_attrs(struct kt_xml *dst, const struct kt_xml *src)
{
    if (!src->nattrs)
        return;
    dst->attrs = kt_calloc(src->nattrs, sizeof(*dst->attrs));
    for (unsigned i = 0; i < src->nattrs; i++) {
        dst->attrs[i].name = kt_strdup(src->attrs[i].name);
        dst->attrs[i].ns = src->attrs[i].ns ? kt_strdup(src->attrs[i].ns) : NULL;
        dst->attrs[i].value = kt_strdup(src->attrs[i].value);
    }
    dst->nattrs = src->nattrs;
}

struct kt_xml *kt_xml_copy(const struct kt_xml *node)
{
    if (!node->name)
        return kt_xml_new_text(node->text, node->text_len);
    struct kt_xml *el = kt_xml_new(node->name, node->ns);
    copy_attrs(el, node);
    for (const struct kt_xml *c = node->children; c; c = c->next)
        kt_xml_append(el, kt_xml_copy(c));
    return el;
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static struct kt_xml_attr *find_attr(const struct kt_xml *el, const char *ns, const char *name)
{
    for (unsigned i = 0; i < el->nattrs; i++) {
        if (str_eq(el->attrs[i].ns, ns) && strcmp(el->attrs[i].name, name) == 0)
            return &el->attrs[i];
    }
    return NULL;
}

void kt_xml_set_attr_ns(struct kt_xml *el, const char *ns, const char *name, const char *value)
{
    kt_assert(el != NULL && el->name != NULL && name != NULL);
    struct kt_xml_attr *a = find_attr(el, ns, name);
    if (!value) {
        if (!a)
            return;
        free(a->name);
        free(a->ns);
        free(a->value);
        unsigned i = (unsigned)(a - el->attrs);
        memmove(a, a + 1, (el->nattrs - i - 1) * sizeof(*a));
        el->nattrs--;
        return;
    }
    if (a) {
        /* Copy before freeing: value may point into the old one. */
        char *v = kt_strdup(value);
        free(a->value);
        a->value = v;
        return;
    }
    el->attrs = kt_realloc(el->attrs, (el->nattrs + 1) * sizeof(*el->attrs));
    a = &el->attrs[el->nattrs++];
    a->name = kt_strdup(name);
    a->ns = ns ? kt_strdup(ns) : NULL;
    a->value = kt_strdup(value);
}

void kt_xml_set_attr(struct kt_xml *el, const char *name, const char *value)
{
    kt_xml_set_attr_ns(el, NULL, name, value);
}

const char *kt_xml_attr(const struct kt_xml *el, const char *name)
{
    return kt_xml_attr_ns(el, NULL, name);
}

const char *kt_xml_attr_ns(const struct kt_xml *el, const char *ns, const char *name)
{
    if (!el || !el->name)
        return NULL;
    struct kt_xml_attr *a = find_attr(el, ns, name);
    return a ? a->value : NULL;
}

struct kt_xml *kt_xml_child(const struct kt_xml *el, const char *name, const char *ns)
{
    for (struct kt_xml *c = kt_xml_first_element(el); c; c = kt_xml_next_element(c)) {
        if ((!name || strcmp(c->name, name) == 0) && (!ns || str_eq(c->ns, ns)))
            return c;
    }
    return NULL;
}

/* The first element node from c on (skipping text nodes), or NULL. */
static struct kt_xml *element_from(struct kt_xml *c)
{
    while (c && !c->name)
        c = c->next;
    return c;
}

struct kt_xml *kt_xml_first_element(const struct kt_xml *el)
{
    return el ? element_from(el->children) : NULL;
}

struct kt_xml *kt_xml_next_element(const struct kt_xml *el)
{
    return el ? element_from(el->next) : NULL;
}

bool kt_xml_only_children_in(const struct kt_xml *el, const char *ns)
{
    const struct kt_xml *c = kt_xml_first_element(el);
    if (!c)
        return false;
    for (; c; c = kt_xml_next_element(c))
        if (!c->ns || strcmp(c->ns, ns) != 0)
            return false;
    return true;
}

char *kt_xml_text(const struct kt_xml *el)
{
    struct kt_buf b = {0};
    if (el && !el->name)
        kt_buf_append(&b, el->text, el->text_len);
    for (const struct kt_xml *c = el ? el->children : NULL; c; c = c->next) {
        if (!c->name)
            kt_buf_append(&b, c->text, c->text_len);
    }
    return kt_buf_steal(&b, NULL);
}

/* Escapes text content: & < > (> for "]]>"), and CR, which a parser would
 * otherwise normalise to LF. */
static void append_text_escaped(struct kt_buf *out, const char *s, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '\r':
            rep = "&#xD;";
            break;
        default:
            continue;
        }
        kt_buf_append(out, s + start, i - start);
        kt_buf_puts(out, rep);
        start = i + 1;
    }
    kt_buf_append(out, s + start, len - start);
}

/* Attribute values: & < > " ' and the whitespace characters attribute-value
 * normalisation would turn into spaces. */
static void append_attr_escaped(struct kt_buf *out, const char *s)
{
    size_t len = strlen(s), start = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '\t':
            rep = "&#x9;";
            break;
        case '\n':
            rep = "&#xA;";
            break;
        case '\r':
            rep = "&#xD;";
            break;
        default:
            continue;
        }
        kt_buf_append_xml_escaped(out, s + start, i - start);
        kt_buf_puts(out, rep);
        start = i + 1;
    }
    kt_buf_append_xml_escaped(out, s + start, len - start);
}

static void write_attr(struct kt_buf *out, const char *prefix, const char *name, const char *value)
{
    kt_buf_puts(out, " ");
    if (prefix) {
        kt_buf_puts(out, prefix);
        kt_buf_puts(out, ":");
    }
    kt_buf_puts(out, name);
    kt_buf_puts(out, "='");
    append_attr_escaped(out, value);
    kt_buf_puts(out, "'");
}

/* Writes the attributes of el. Namespaced attributes other than xml:* get
 * a prefix declared right here; i indexes the first attribute with that
 * namespace, so equal namespaces share one prefix. */
static void write_attrs(const struct kt_xml *el, struct kt_buf *out)
{
    for (unsigned i = 0; i < el->nattrs; i++) {
        const struct kt_xml_attr *a = &el->attrs[i];
        if (!a->ns) {
            write_attr(out, NULL, a->name, a->value);
        } else if (strcmp(a->ns, KT_NS_XML) == 0) {
            write_attr(out, "xml", a->name, a->value);
        } else if (strcmp(a->ns, KT_NS_XMLNS) == 0) {
            continue;
        } else {
            unsigned first = i;
            for (unsigned j = 0; j < i; j++) {
                if (el->attrs[j].ns && strcmp(el->attrs[j].ns, a->ns) == 0) {
                    first = j;
                    break;
                }
            }
            char prefix[24];
            snprintf(prefix, sizeof(prefix), "ns%u", first);
            if (first == i) {
                kt_buf_printf(out, " xmlns:%s='", prefix);
                append_attr_escaped(out, a->ns);
                kt_buf_puts(out, "'");
            }
            write_attr(out, prefix, a->name, a->value);
        }
    }
}

static void serialize(const struct kt_xml *el, const char *parent_ns, struct kt_buf *out)
{
    if (!el->name) {
        append_text_escaped(out, el->text, el->text_len);
        return;
    }
    kt_buf_puts(out, "<");
    kt_buf_puts(out, el->name);
    /* A NULL namespace means "no namespace", written as xmlns='' when a
     * default namespace is in scope. */
    const char *ns = el->ns ? el->ns : "";
    const char *pns = parent_ns ? parent_ns : "";
    if (strcmp(ns, pns) != 0) {
        kt_buf_puts(out, " xmlns='");
        append_attr_escaped(out, ns);
        kt_buf_puts(out, "'");
    }
    write_attrs(el, out);
    if (!el->children) {
        kt_buf_puts(out, "/>");
        return;
    }
    kt_buf_puts(out, ">");
    for (const struct kt_xml *c = el->children; c; c = c->next)
        serialize(c, ns, out);
    kt_buf_puts(out, "</");
    kt_buf_puts(out, el->name);
    kt_buf_puts(out, ">");
}

void kt_xml_serialize(const struct kt_xml *el, const char *parent_ns, struct kt_buf *out)
{
    kt_assert(el != NULL);
    serialize(el, parent_ns, out);
}
