/* A small XML element tree for stanzas. Nodes are elements or text; every
 * element knows its namespace URI (prefixes are resolved by the parser and
 * never stored). Not thread-safe for writes; a tree inside a shared stanza
 * is read-only. */
#ifndef KONTALK_XML_H
#define KONTALK_XML_H

#include "base.h"
#include "buf.h"

#define KT_NS_XML "http://www.w3.org/XML/1998/namespace"
/* Namespace of namespace declarations. The stream parser reports the
 * header's declarations as attributes in it ("xmlns" for the default one,
 * the prefix otherwise); the serialiser never writes such attributes. */
#define KT_NS_XMLNS "http://www.w3.org/2000/xmlns/"

struct kt_xml_attr {
    char *name;  /* local name */
    char *ns;    /* NULL for unqualified attributes; KT_NS_XML for xml:lang */
    char *value;
};

struct kt_xml {
    struct kt_xml *parent;
    struct kt_xml *next;     /* next sibling */
    struct kt_xml *children; /* first child */
    struct kt_xml *last;     /* last child, for O(1) append */
    char *name;              /* element local name; NULL for a text node */
    char *ns;                /* element namespace URI; NULL for a text node */
    char *text;              /* text node content (unescaped), else NULL */
    size_t text_len;
    struct kt_xml_attr *attrs;
    unsigned nattrs;
};

/* Constructors copy their string arguments. */
KT_API struct kt_xml *kt_xml_new(const char *name, const char *ns);
KT_API struct kt_xml *kt_xml_new_text(const char *text, size_t len);
/* Appends child (taking ownership) as the last child of parent; returns child. */
KT_API struct kt_xml *kt_xml_append(struct kt_xml *parent, struct kt_xml *child);
/* Convenience: appends a new element child and returns it. */
KT_API struct kt_xml *kt_xml_add_child(struct kt_xml *parent, const char *name, const char *ns);
/* Appends a text child (adjacent text nodes are merged). */
KT_API void kt_xml_add_text(struct kt_xml *parent, const char *text, size_t len);
/* Unlinks node from its parent (node stays allocated). */
KT_API void kt_xml_unlink(struct kt_xml *node);
/* Frees node and its subtree; unlinks it first if it has a parent. Sets *node to NULL. */
KT_API void kt_xml_free(struct kt_xml **node);
KT_API struct kt_xml *kt_xml_copy(const struct kt_xml *node);

/* Sets (or replaces) an unqualified attribute; value NULL removes it. */
KT_API void kt_xml_set_attr(struct kt_xml *el, const char *name, const char *value);
KT_API void kt_xml_set_attr_ns(struct kt_xml *el, const char *ns, const char *name,
                               const char *value);
/* Unqualified attribute value or NULL. */
KT_API const char *kt_xml_attr(const struct kt_xml *el, const char *name);
KT_API const char *kt_xml_attr_ns(const struct kt_xml *el, const char *ns, const char *name);

/* First element child matching name and ns (either may be NULL = any). */
KT_API struct kt_xml *kt_xml_child(const struct kt_xml *el, const char *name, const char *ns);
/* Element iteration: first element child / next element sibling. */
KT_API struct kt_xml *kt_xml_first_element(const struct kt_xml *el);
KT_API struct kt_xml *kt_xml_next_element(const struct kt_xml *el);
/* Whether el has element children and every one of them is in namespace ns
 * (e.g. a message that carries only chat states). */
KT_API bool kt_xml_only_children_in(const struct kt_xml *el, const char *ns);
/* Concatenated text of el's direct text children (caller frees). Never NULL. */
KT_API char *kt_xml_text(const struct kt_xml *el);

/* Serialises el. parent_ns is the namespace in scope for el (the stream's
 * default, e.g. "jabber:client"); an xmlns attribute is written only where
 * an element's namespace differs from its parent's. Text and attribute values
 * are escaped. */
KT_API void kt_xml_serialize(const struct kt_xml *el, const char *parent_ns, struct kt_buf *out);

#endif
