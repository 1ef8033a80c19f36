/* xml.c: the bench client's XML, just enough for what servers send.
 *
 * A benchmark must not spend more CPU per stanza than the server it measures, so there is no
 * general parser here: xml_scan_next() only tracks tag depth (honouring quoted attribute values,
 * comments, processing instructions and CDATA) to cut the byte stream into the stream header and
 * complete depth-2 elements; xml_parse() then reads one element into a flat node array that the
 * scenarios query by local name.  Namespaces are matched by their xmlns attribute on the node,
 * which is how servers write them.  Anything malformed is an error the client reports: we trust
 * the servers under test to be well-formed and only need not crash if they are not.
 */
#include "config.h"

#include "bench.h"

#include <string.h>

void xml_scan_reset(struct xml_scan *x)
{
    x->depth = 0;
    x->pos = 0;
    x->elem_start = 0;
}

void xml_scan_shift(struct xml_scan *x, size_t n)
{
    x->pos -= n;
    if (x->elem_start >= n)
        x->elem_start -= n;
    else
        x->elem_start = 0;
}

size_t xml_scan_consumable(const struct xml_scan *x)
{
    return x->depth >= 2 ? x->elem_start : x->pos;
}

/* End of the construct starting at buf[i] == '<', or 0 if it is incomplete. */
static size_t tag_end(const char *buf, size_t len, size_t i)
{
    if (len - i >= 4 && memcmp(buf + i, "<!--", 4) == 0) {
        const char *e = memmem(buf + i + 4, len - i - 4, "-->", 3);
        return e ? (size_t)(e - buf) + 3 : 0;
    }
    if (len - i >= 9 && memcmp(buf + i, "<![CDATA[", 9) == 0) {
        const char *e = memmem(buf + i + 9, len - i - 9, "]]>", 3);
        return e ? (size_t)(e - buf) + 3 : 0;
    }
    char quote = 0;
    for (size_t j = i + 1; j < len; j++) {
        char ch = buf[j];
        if (quote) {
            if (ch == quote)
                quote = 0;
        } else if (ch == '"' || ch == '\'') {
            quote = ch;
        } else if (ch == '>') {
            return j + 1;
        }
    }
    return 0;
}

enum xml_event xml_scan_next(struct xml_scan *x, const char *buf, size_t len, size_t *start_r,
                             size_t *end_r)
{
    while (x->pos < len) {
        size_t i = x->pos;
        if (buf[i] != '<') {
            const char *lt = memchr(buf + i, '<', len - i);
            if (x->depth == 0) {
                /* Only whitespace may precede the stream header. */
                for (size_t j = i; j < (lt ? (size_t)(lt - buf) : len); j++)
                    if (buf[j] != ' ' && buf[j] != '\n' && buf[j] != '\r' && buf[j] != '\t')
                        return XML_ERROR;
            }
            x->pos = lt ? (size_t)(lt - buf) : len;
            continue;
        }
        size_t e = tag_end(buf, len, i);
        if (e == 0)
            return XML_NEED_MORE;
        x->pos = e;
        char c1 = i + 1 < len ? buf[i + 1] : 0;
        if (c1 == '?' || c1 == '!')
            continue; /* declaration, comment, CDATA: no depth change */
        if (c1 == '/') {
            if (x->depth <= 0)
                return XML_ERROR;
            x->depth--;
            if (x->depth == 0)
                return XML_STREAM_CLOSE;
            if (x->depth == 1) {
                *start_r = x->elem_start;
                *end_r = e;
                return XML_ELEMENT;
            }
            continue;
        }
        bool empty = buf[e - 2] == '/';
        if (x->depth == 0) {
            if (empty)
                return XML_ERROR;
            x->depth = 1;
            *start_r = i;
            *end_r = e;
            return XML_STREAM_OPEN;
        }
        if (x->depth == 1)
            x->elem_start = i;
        if (empty) {
            if (x->depth == 1) {
                *start_r = i;
                *end_r = e;
                return XML_ELEMENT;
            }
        } else {
            if (x->depth > 64)
                return XML_ERROR;
            x->depth++;
        }
    }
    return XML_NEED_MORE;
}

/* ---- element reader ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Parses the element starting at s[*pos] == '<'; returns the node index or -1. */
static int parse_node(struct xdoc *d, const char *s, size_t len, size_t *pos, int depth)
{
    if (d->count >= XDOC_MAX_NODES || depth > 32)
        return -1;
    size_t e = tag_end(s, len, *pos);
    if (e == 0)
        return -1;
    int me = d->count++;
    struct xnode *n = &d->n[me];
    memset(n, 0, sizeof(*n));
    n->child = n->next = -1;
    size_t i = *pos + 1, nend = i;
    while (nend < e - 1 && !is_space(s[nend]) && s[nend] != '/' && s[nend] != '>')
        nend++;
    const char *colon = memchr(s + i, ':', nend - i);
    if (colon)
        i = (size_t)(colon - s) + 1;
    n->name = s + i;
    n->name_len = nend - i;
    bool empty = s[e - 2] == '/';
    n->attrs = s + nend;
    n->attrs_len = (e - (empty ? 2 : 1)) - nend;
    *pos = e;
    if (empty)
        return me;
    int last = -1;
    bool have_text = false;
    while (*pos < len) {
        size_t p = *pos;
        if (s[p] != '<') {
            const char *lt = memchr(s + p, '<', len - p);
            size_t t_end = lt ? (size_t)(lt - s) : len;
            if (!have_text) {
                n = &d->n[me];
                n->text = s + p;
                n->text_len = t_end - p;
                have_text = true;
            }
            *pos = t_end;
            continue;
        }
        if (p + 1 < len && s[p + 1] == '/') {
            size_t ce = tag_end(s, len, p);
            if (ce == 0)
                return -1;
            *pos = ce;
            return me;
        }
        if (p + 1 < len && (s[p + 1] == '!' || s[p + 1] == '?')) {
            size_t ce = tag_end(s, len, p);
            if (ce == 0)
                return -1;
            if (len - p >= 9 && memcmp(s + p, "<![CDATA[", 9) == 0 && !have_text) {
                n = &d->n[me];
                n->text = s + p + 9;
                n->text_len = ce - 3 - (p + 9);
                have_text = true;
            }
            *pos = ce;
            continue;
        }
        int ch = parse_node(d, s, len, pos, depth + 1);
        if (ch < 0)
            return -1;
        if (last < 0)
            d->n[me].child = ch;
        else
            d->n[last].next = ch;
        last = ch;
    }
    return -1; /* unterminated */
}

int xml_parse(struct xdoc *d, const char *s, size_t len)
{
    d->count = 0;
    size_t pos = 0;
    while (pos < len && is_space(s[pos]))
        pos++;
    if (pos >= len || s[pos] != '<')
        return -1;
    return parse_node(d, s, len, &pos, 0) == 0 ? 0 : -1;
}

bool xml_is(const struct xdoc *d, int node, const char *name)
{
    if (node < 0)
        return false;
    size_t l = strlen(name);
    return d->n[node].name_len == l && memcmp(d->n[node].name, name, l) == 0;
}

int xml_child(const struct xdoc *d, int node, const char *name)
{
    if (node < 0)
        return -1;
    for (int c = d->n[node].child; c >= 0; c = d->n[c].next)
        if (xml_is(d, c, name))
            return c;
    return -1;
}

/* Copies s[0..n) with the five predefined entities and numeric ASCII references decoded. */
static int unescape(const char *s, size_t n, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '&') {
            const char *semi = memchr(s + i, ';', n - i);
            if (!semi)
                return -1;
            size_t el = (size_t)(semi - (s + i)) + 1;
            if (el == 4 && memcmp(s + i, "&lt;", 4) == 0)
                ch = '<';
            else if (el == 4 && memcmp(s + i, "&gt;", 4) == 0)
                ch = '>';
            else if (el == 5 && memcmp(s + i, "&amp;", 5) == 0)
                ch = '&';
            else if (el == 6 && memcmp(s + i, "&quot;", 6) == 0)
                ch = '"';
            else if (el == 6 && memcmp(s + i, "&apos;", 6) == 0)
                ch = '\'';
            else if (el > 3 && s[i + 1] == '#') {
                unsigned long v = 0;
                bool hex = s[i + 2] == 'x';
                for (size_t k = i + (hex ? 3 : 2); k < i + el - 1; k++) {
                    char d = s[k];
                    int dv = d >= '0' && d <= '9'   ? d - '0'
                             : d >= 'a' && d <= 'f' ? d - 'a' + 10
                             : d >= 'A' && d <= 'F' ? d - 'A' + 10
                                                    : 99;
                    if (dv >= (hex ? 16 : 10))
                        return -1;
                    v = v * (hex ? 16 : 10) + (unsigned long)dv;
                    if (v > 0x10FFFF)
                        return -1;
                }
                ch = v < 128 ? (char)v : '?'; /* we only ever need ASCII back */
            } else {
                return -1;
            }
            i += el - 1;
        }
        if (o + 1 >= size)
            return -1;
        buf[o++] = ch;
    }
    buf[o] = 0;
    return (int)o;
}

int xml_attr(const struct xdoc *d, int node, const char *name, char *buf, size_t size)
{
    if (node < 0)
        return -1;
    const char *a = d->n[node].attrs, *end = a + d->n[node].attrs_len;
    size_t nl = strlen(name);
    while (a < end) {
        while (a < end && is_space(*a))
            a++;
        const char *k = a;
        while (a < end && *a != '=' && !is_space(*a))
            a++;
        size_t kl = (size_t)(a - k);
        while (a < end && (is_space(*a) || *a == '='))
            a++;
        if (a >= end || (*a != '"' && *a != '\''))
            return -1;
        char q = *a++;
        const char *v = a;
        while (a < end && *a != q)
            a++;
        if (a >= end)
            return -1;
        size_t vl = (size_t)(a - v);
        a++;
        if (kl == nl && memcmp(k, name, nl) == 0)
            return unescape(v, vl, buf, size) < 0 ? -1 : 0;
    }
    return -1;
}

int xml_text(const struct xdoc *d, int node, char *buf, size_t size)
{
    if (node < 0)
        return -1;
    return unescape(d->n[node].text ? d->n[node].text : "", d->n[node].text_len, buf, size);
}

bool xml_has_ns(const struct xdoc *d, int node, const char *ns)
{
    char v[128];
    return xml_attr(d, node, "xmlns", v, sizeof(v)) == 0 && strcmp(v, ns) == 0;
}
