/* The XMPP stream parser (see kontalk/xmlstream.h): a libxml2 SAX2 push
 * parser that turns the bytes of one stream into a header callback, one
 * tree per depth-2 element and a close callback.
 *
 * Restricted XML (RFC 6120 §11.1). The SAX handler traps what XMPP forbids
 * and turns it into restricted-xml before libxml2 acts on it: a DOCTYPE
 * (internalSubset/externalSubset fire before any declaration inside it is
 * read, so entity declarations and billion-laughs payloads are never
 * parsed), entity declarations, references to anything but the five
 * predefined entities (getEntity is consulted only for those; libxml2
 * resolves the predefined ones itself), processing instructions and
 * comments. The XML declaration is not a processing instruction and stays
 * allowed at the very start. Entities are never substituted
 * (XML_PARSE_NOENT is off), no DTD is ever loaded and the network is off;
 * XML_PARSE_HUGE is off so libxml2's own size limits stay in force. Only
 * UTF-8 is accepted (RFC 6120 §11.6).
 *
 * Errors. libxml2 reports through the structured error handler of our SAX
 * handler (serror), so nothing reaches stderr and no global error state is
 * touched. The first error wins; the parser is stopped (xmlStopParser) and
 * the error callback fires once, after xmlParseChunk has returned.
 *
 * Limits (policy-violation). Depth: elements nested deeper than max_depth
 * below the header (a stanza is at depth 1 below it). Attributes: attributes
 * plus namespace declarations of any element. Children: child nodes (element
 * children plus runs of text) of any element inside a stanza; the header's
 * children are the stanzas and are not limited. Bytes: `mark` is the input
 * offset where the parser last stood at depth 1 (after the header, after a
 * stanza, after whitespace between stanzas); a stanza that ends more than
 * max_stanza_bytes after the mark fails, and so does any moment at which
 * more than max_stanza_bytes were fed past the mark (a stanza libxml2 is
 * still buffering, or a giant header). Whitespace between stanzas is
 * consumed, so keepalives never add up; libxml2 holds back up to 300 bytes
 * of text before reporting it, so limits that small are not meaningful.
 *
 * Resets. kt_xmlstream_reset() may run inside a callback (STARTTLS, SASL
 * success). The parser context cannot be freed under its own feet there:
 * it is stopped, parked in `dead` and freed when xmlParseChunk returns, and
 * the rest of the chunk is discarded. The next feed starts a new context.
 * libxml2's global state is initialised once by kt_xmlstream_global_init();
 * nothing here changes it per stream. */
#include "config.h"
#include <kontalk/xmlstream.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>

#define NS_STREAMS "http://etherx.jabber.org/streams"

/* libxml2 is fed at most this many bytes per xmlParseChunk call, so the
 * byte limit is checked between slices and an oversized stanza inside one
 * big read is caught before libxml2 buffers all of it. */
#define FEED_SLICE 4096

/* Bytes of names a stream may intern (see start_parser). */
#define DICT_LIMIT (1024 * 1024)

struct kt_xmlstream {
    struct kt_xmlstream_limits limits;
    struct kt_xmlstream_callbacks cb;
    void *data;

    xmlParserCtxtPtr ctxt;  /* NULL until the first feed after new/reset */
    xmlParserCtxtPtr dead;  /* reset inside a callback: freed after the chunk */
    unsigned depth;         /* 0 before the header, 1 inside it, 2+ in a stanza */
    struct kt_xml *root;    /* the depth-2 element being built */
    struct kt_xml *cur;     /* innermost open element of root */
    unsigned *nchildren;    /* child nodes of the open element at each depth */
    unsigned long long fed; /* bytes handed to the current context */
    unsigned long long mark;
    enum kt_stream_err err; /* first error, KT_XE_NONE if none */
    bool halted;            /* ignore libxml2 callbacks (error, reset, close) */
    bool failed;            /* error callback fired: feed returns -1 */
    bool closed;            /* </stream:stream> seen: ignore further input */
    bool in_feed;
    bool discarded_data;    /* the last reset inside a callback threw away non-space */
    /* Idle release (kt_xmlstream_release): between stanzas, with nothing
     * buffered, the libxml2 context (several KB) is freed; the next feed
     * starts a new one primed
     * with this copy of the stream header's start tag (same prefix and
     * namespace declarations), whose open callback is not repeated. */
    char *header;
    bool resume;   /* the context was released: prime the next one */
    bool priming;  /* the synthetic header is being parsed */
};

void kt_xmlstream_global_init(void)
{
    xmlInitParser();
}

static unsigned long long input_pos(struct kt_xmlstream *xs)
{
    long pos = xmlByteConsumed(xs->ctxt);
    return pos > 0 ? (unsigned long long)pos : 0;
}

/* Records the first error and stops libxml2; the error callback fires from
 * kt_xmlstream_feed once the parser has returned. */
static void fail(struct kt_xmlstream *xs, enum kt_stream_err err)
{
    if (xs->halted)
        return;
    xs->err = err;
    xs->halted = true;
    if (xs->ctxt)
        xmlStopParser(xs->ctxt);
}

static void drop_tree(struct kt_xmlstream *xs)
{
    kt_xml_free(&xs->root);
    xs->cur = NULL;
}

/* True (after failing the stream) when the bytes since the mark exceed the
 * stanza limit. pos is an input offset the parser has reached. */
static bool over_bytes(struct kt_xmlstream *xs, unsigned long long pos)
{
    if (pos > xs->mark && pos - xs->mark > xs->limits.max_stanza_bytes) {
        fail(xs, KT_XE_POLICY_VIOLATION);
        return true;
    }
    return false;
}

static bool is_utf8_name(const char *enc)
{
    return strcasecmp(enc, "UTF-8") == 0 || strcasecmp(enc, "UTF8") == 0;
}

static void copy_attrs(struct kt_xml *el, int nb_attributes, const xmlChar **attributes)
{
    /* libxml2 passes (localname, prefix, URI, value, end) per attribute;
     * values are not NUL-terminated and have predefined entities and
     * character references decoded (but see below). */
    for (int i = 0; i < nb_attributes; i++) {
        const xmlChar **a = attributes + 5 * i;
        const char *v = (const char *)a[3];
        size_t len = (size_t)(a[4] - a[3]);
        /* Without entity substitution libxml2 leaves a decoded '&' as
         * "&#38;" in attribute values. It is the only '&' that can remain:
         * any other reference has already failed the stream. */
        char *value = kt_malloc(len + 1), *w = value;
        for (size_t j = 0; j < len; j++) {
            *w++ = v[j];
            if (v[j] == '&' && len - j >= 5 && memcmp(v + j, "&#38;", 5) == 0)
                j += 4;
        }
        *w = '\0';
        kt_xml_set_attr_ns(el, (const char *)a[2], (const char *)a[0], value);
        free(value);
    }
}

/* The start tag a released stream is primed with: the header's element
 * with its prefix and namespace declarations (enough to parse stanzas the
 * same way), no other attributes. */
static char *header_copy(const xmlChar *name, const xmlChar *prefix, int nb_namespaces,
                         const xmlChar **namespaces)
{
    struct kt_buf b = {0};
    kt_buf_puts(&b, "<");
    if (prefix)
        kt_buf_printf(&b, "%s:", (const char *)prefix);
    kt_buf_puts(&b, (const char *)name);
    for (int i = 0; i < nb_namespaces; i++) {
        const char *p = (const char *)namespaces[2 * i];
        const char *ns = (const char *)namespaces[2 * i + 1];
        kt_buf_printf(&b, " xmlns%s%s='", p ? ":" : "", p ? p : "");
        if (ns)
            kt_buf_append_xml_escaped(&b, ns, strlen(ns));
        kt_buf_puts(&b, "'");
    }
    kt_buf_puts(&b, ">");
    return kt_buf_steal(&b, NULL);
}

static void open_header(struct kt_xmlstream *xs, const xmlChar *name, const xmlChar *prefix,
                        const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                        int nb_attributes, const xmlChar **attributes)
{
    xmlParserCtxtPtr ctxt = xs->ctxt;
    if (xs->priming) {
        xs->priming = false;
        xs->mark = input_pos(xs) + 1; /* just after the synthetic '>' */
        return;
    }
    free(xs->header);
    xs->header = header_copy(name, prefix, nb_namespaces, namespaces);
    /* An encoding other than UTF-8, declared or detected from a BOM. */
    if ((ctxt->encoding && !is_utf8_name((const char *)ctxt->encoding)) ||
        (ctxt->input && ctxt->input->buf && ctxt->input->buf->encoder)) {
        fail(xs, KT_XE_UNSUPPORTED_ENCODING);
        return;
    }
    struct kt_xml *hdr = kt_xml_new((const char *)name, (const char *)uri);
    for (int i = 0; i < nb_namespaces; i++) {
        const char *p = (const char *)namespaces[2 * i];
        const char *ns = (const char *)namespaces[2 * i + 1];
        kt_xml_set_attr_ns(hdr, KT_NS_XMLNS, p ? p : "xmlns", ns ? ns : "");
    }
    copy_attrs(hdr, nb_attributes, attributes);
    /* The callback sees the parser positioned on the header's closing '>'. */
    xs->mark = input_pos(xs);
    if (ctxt->input && ctxt->input->cur < ctxt->input->end && *ctxt->input->cur == '>')
        xs->mark++;
    if (xs->cb.open)
        xs->cb.open(xs->data, hdr);
    kt_xml_free(&hdr);
}

static void on_start(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                     const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                     int nb_attributes, int nb_defaulted KT_UNUSED, const xmlChar **attributes)
{
    struct kt_xmlstream *xs = ctx;
    if (xs->halted)
        return;
    if ((unsigned)nb_attributes + (unsigned)nb_namespaces > xs->limits.max_attrs) {
        fail(xs, KT_XE_POLICY_VIOLATION);
        return;
    }
    xs->depth++;
    if (xs->depth == 1) {
        open_header(xs, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
                    attributes);
        return;
    }
    if (xs->depth - 1 > xs->limits.max_depth || over_bytes(xs, input_pos(xs))) {
        fail(xs, KT_XE_POLICY_VIOLATION);
        return;
    }
    struct kt_xml *el = kt_xml_new((const char *)localname, (const char *)uri);
    copy_attrs(el, nb_attributes, attributes);
    xs->nchildren[xs->depth] = 0;
    if (xs->depth == 2) {
        xs->root = xs->cur = el;
        return;
    }
    if (++xs->nchildren[xs->depth - 1] > xs->limits.max_children) {
        kt_xml_free(&el);
        fail(xs, KT_XE_POLICY_VIOLATION);
        return;
    }
    xs->cur = kt_xml_append(xs->cur, el);
}

static void on_end(void *ctx, const xmlChar *localname KT_UNUSED, const xmlChar *prefix KT_UNUSED,
                   const xmlChar *uri KT_UNUSED)
{
    struct kt_xmlstream *xs = ctx;
    if (xs->halted)
        return;
    kt_assert(xs->depth > 0);
    xs->depth--;
    if (xs->depth == 0) {
        /* </stream:stream>: nothing may follow, the owner closes. */
        xs->closed = true;
        xs->halted = true;
        xmlStopParser(xs->ctxt);
        if (xs->cb.close)
            xs->cb.close(xs->data);
        return;
    }
    if (xs->depth > 1) {
        xs->cur = xs->cur->parent;
        return;
    }
    unsigned long long pos = input_pos(xs);
    if (over_bytes(xs, pos))
        return;
    xs->mark = pos;
    struct kt_xml *el = xs->root;
    xs->root = xs->cur = NULL;
    if (xs->cb.element)
        xs->cb.element(xs->data, el);
    else
        kt_xml_free(&el);
}

/* The input offset just after the text s..s+len a characters callback
 * reports. libxml2 calls back either with a pointer into its input buffer,
 * before advancing past the text, or with a private copy once it has
 * advanced. */
static unsigned long long text_end_pos(struct kt_xmlstream *xs, const xmlChar *s, int len)
{
    xmlParserInputPtr in = xs->ctxt->input;
    if (in && in->base && s >= in->base && s + len <= in->end)
        return (unsigned long long)in->consumed + (unsigned long long)(s - in->base) +
               (unsigned long long)len;
    return input_pos(xs);
}

static bool all_space(const xmlChar *s, int len)
{
    for (int i = 0; i < len; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    }
    return true;
}

static void on_text(void *ctx, const xmlChar *s, int len)
{
    struct kt_xmlstream *xs = ctx;
    if (xs->halted)
        return;
    if (xs->depth < 2) {
        /* Whitespace between stanzas (keepalives) is consumed input: move
         * the mark so it never counts against the next stanza. Other text
         * at this level has no meaning in XMPP. */
        if (!all_space(s, len)) {
            fail(xs, KT_XE_BAD_FORMAT);
            return;
        }
        if (xs->depth == 1)
            xs->mark = text_end_pos(xs, s, len);
        return;
    }
    if (over_bytes(xs, input_pos(xs)))
        return;
    struct kt_xml *last = xs->cur->last;
    if ((!last || last->name) && ++xs->nchildren[xs->depth] > xs->limits.max_children) {
        fail(xs, KT_XE_POLICY_VIOLATION);
        return;
    }
    kt_xml_add_text(xs->cur, (const char *)s, (size_t)len);
}

static void on_restricted(struct kt_xmlstream *xs)
{
    fail(xs, KT_XE_RESTRICTED_XML);
}

static void on_subset(void *ctx, const xmlChar *name KT_UNUSED,
                      const xmlChar *external_id KT_UNUSED, const xmlChar *system_id KT_UNUSED)
{
    on_restricted(ctx);
}

static void on_entity_decl(void *ctx, const xmlChar *name KT_UNUSED, int type KT_UNUSED,
                           const xmlChar *public_id KT_UNUSED, const xmlChar *system_id KT_UNUSED,
                           xmlChar *content KT_UNUSED)
{
    on_restricted(ctx);
}

static xmlEntityPtr on_get_entity(void *ctx, const xmlChar *name)
{
    /* libxml2 resolves the predefined entities before asking; answer them
     * anyway in case a code path asks first. Anything else is a reference
     * to an undeclared (and forbidden) entity. */
    xmlEntityPtr ent = xmlGetPredefinedEntity(name);
    if (ent)
        return ent;
    on_restricted(ctx);
    return NULL;
}

static void on_reference(void *ctx, const xmlChar *name KT_UNUSED)
{
    on_restricted(ctx);
}

static void on_pi(void *ctx, const xmlChar *target KT_UNUSED, const xmlChar *data KT_UNUSED)
{
    on_restricted(ctx);
}

static void on_comment(void *ctx, const xmlChar *value KT_UNUSED)
{
    on_restricted(ctx);
}

static void on_error(void *ctx, xmlErrorPtr error)
{
    struct kt_xmlstream *xs = ctx;
    if (!error || error->level == XML_ERR_WARNING)
        return;
    if (error->domain == XML_FROM_NAMESPACE && error->code == XML_NS_ERR_UNDEFINED_NAMESPACE)
        fail(xs, KT_XE_BAD_NAMESPACE_PREFIX);
    else if (error->code == XML_ERR_NO_MEMORY)
        fail(xs, KT_XE_RESOURCE_CONSTRAINT); /* also the dictionary limit */
    else
        fail(xs, KT_XE_NOT_WELL_FORMED);
}

static const xmlSAXHandler sax_handler = {
    .internalSubset = on_subset,
    .externalSubset = on_subset,
    .getEntity = on_get_entity,
    .getParameterEntity = on_get_entity,
    .entityDecl = on_entity_decl,
    .reference = on_reference,
    .characters = on_text,
    .ignorableWhitespace = on_text,
    .cdataBlock = on_text,
    .processingInstruction = on_pi,
    .comment = on_comment,
    .initialized = XML_SAX2_MAGIC,
    .startElementNs = on_start,
    .endElementNs = on_end,
    .serror = on_error,
};

struct kt_xmlstream *kt_xmlstream_new(const struct kt_xmlstream_limits *limits,
                                      const struct kt_xmlstream_callbacks *cb, void *data)
{
    kt_assert(limits != NULL && cb != NULL);
    kt_assert(limits->max_stanza_bytes > 0 && limits->max_depth > 0);
    struct kt_xmlstream *xs = kt_new(struct kt_xmlstream);
    xs->limits = *limits;
    xs->cb = *cb;
    xs->data = data;
    /* Depths 0..max_depth + 1 (the header is depth 1, plus one so that the
     * depth check can run after the counter is set). */
    xs->nchildren = kt_calloc(limits->max_depth + 3, sizeof(*xs->nchildren));
    return xs;
}

/* Back to the state before the first byte; the context is freed now or,
 * inside xmlParseChunk, parked until it returns. */
static bool has_non_space(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return true;
    return false;
}

static void clear(struct kt_xmlstream *xs)
{
    xs->discarded_data = false;
    free(xs->header);
    xs->header = NULL;
    xs->resume = xs->priming = false;
    if (xs->ctxt) {
        if (xs->in_feed) {
            /* What libxml2 holds past the element that triggered the reset
             * is thrown away; STARTTLS needs to know whether that was data
             * (plaintext injected before the handshake). */
            xmlParserInputPtr in = xs->ctxt->input;
            if (in && in->cur && in->end && in->end > in->cur)
                xs->discarded_data = has_non_space((const char *)in->cur,
                                                   (size_t)(in->end - in->cur));
            xmlStopParser(xs->ctxt);
            kt_assert(xs->dead == NULL);
            xs->dead = xs->ctxt;
        } else {
            xmlFreeParserCtxt(xs->ctxt);
        }
        xs->ctxt = NULL;
    }
    drop_tree(xs);
    xs->depth = 0;
    xs->fed = xs->mark = 0;
    xs->err = KT_XE_NONE;
    xs->failed = xs->closed = false;
    xs->halted = xs->in_feed; /* callbacks of the parked context are ignored */
}

void kt_xmlstream_reset(struct kt_xmlstream *xs)
{
    clear(xs);
}

bool kt_xmlstream_idle(const struct kt_xmlstream *xs)
{
    return xs->resume;
}

bool kt_xmlstream_discarded_data(const struct kt_xmlstream *xs)
{
    return xs->discarded_data;
}

void kt_xmlstream_set_limits(struct kt_xmlstream *xs, const struct kt_xmlstream_limits *limits)
{
    kt_assert(!xs->ctxt); /* after a reset (also inside a callback), before the next feed */
    kt_assert(limits->max_stanza_bytes > 0 && limits->max_depth > 0);
    if (limits->max_depth != xs->limits.max_depth) {
        free(xs->nchildren);
        xs->nchildren = kt_calloc(limits->max_depth + 3, sizeof(*xs->nchildren));
    }
    xs->limits = *limits;
}

static bool start_parser(struct kt_xmlstream *xs)
{
    xmlSAXHandler sax = sax_handler;
    /* libxml2 copies the handler; data comes back as the ctx argument. */
    xs->ctxt = xmlCreatePushParserCtxt(&sax, xs, NULL, 0, NULL);
    if (!xs->ctxt)
        return false;
    xmlCtxtUseOptions(xs->ctxt, XML_PARSE_NONET);
    /* libxml2 interns every element, attribute and prefix name and every
     * namespace URI for the life of the context, i.e. of the stream. Real
     * streams use a few hundred names; cap the dictionary well below
     * libxml2's own 10 MB so a stream of ever new names cannot grow it. */
    xmlDictSetLimit(xs->ctxt->dict, DICT_LIMIT);
    xs->halted = false;
    return true;
}

/* Fires the error callback for a recorded or detected error. */
static int report(struct kt_xmlstream *xs)
{
    if (xs->err == KT_XE_NONE)
        xs->err = KT_XE_NOT_WELL_FORMED;
    drop_tree(xs);
    xs->failed = true;
    xs->halted = true;
    if (xs->cb.error)
        xs->cb.error(xs->data, xs->err, NULL);
    return -1;
}

/* Between stanzas with nothing but whitespace buffered, the parser holds
 * no state a fresh one primed with the header would not have: free it. The
 * owner calls this for streams that have been quiet for a while (a busy
 * stream would pay a new context per stanza). */
bool kt_xmlstream_release(struct kt_xmlstream *xs)
{
    xmlParserCtxtPtr ctxt = xs->ctxt;
    kt_assert(!xs->in_feed);
    if (!ctxt || xs->depth != 1 || !xs->header || xs->root || xs->halted || xs->dead)
        return false;
    xmlParserInputPtr in = ctxt->input;
    if (!in || !in->cur || !in->end || in->cur > in->end)
        return false;
    if (has_non_space((const char *)in->cur, (size_t)(in->end - in->cur)))
        return false;
    xmlFreeParserCtxt(ctxt);
    xs->ctxt = NULL;
    xs->depth = 0;
    xs->fed = xs->mark = 0;
    xs->resume = true;
    return true;
}

int kt_xmlstream_feed(struct kt_xmlstream *xs, const char *buf, size_t len)
{
    kt_assert(!xs->in_feed); /* callbacks must not feed */
    if (xs->failed)
        return -1;
    if (xs->closed)
        return 0;
    if (!xs->ctxt && !start_parser(xs)) {
        xs->err = KT_XE_INTERNAL_SERVER_ERROR;
        return report(xs);
    }
    xmlParserCtxtPtr ctxt = xs->ctxt;
    if (xs->resume) {
        /* A released stream: the new context first reads the header again. */
        size_t hlen = strlen(xs->header);
        xs->resume = false;
        xs->priming = true;
        xs->in_feed = true;
        int rc = xmlParseChunk(ctxt, xs->header, (int)hlen, 0);
        xs->in_feed = false;
        kt_assert(rc == 0 && !xs->priming && xs->depth == 1);
        xs->fed = hlen;
    }
    size_t off = 0;
    xs->in_feed = true;
    while (off < len) {
        size_t n = len - off < FEED_SLICE ? len - off : FEED_SLICE;
        int rc = xmlParseChunk(ctxt, buf + off, (int)n, 0);
        off += n;
        xs->fed += n;
        if (xs->dead || xs->closed) {
            /* reset or stream end: the rest is discarded */
            if (xs->dead && has_non_space(buf + off, len - off))
                xs->discarded_data = true;
            break;
        }
        if (xs->err == KT_XE_NONE) {
            if (rc != 0 || !ctxt->wellFormed)
                fail(xs, KT_XE_NOT_WELL_FORMED);
            else if (!ctxt->nsWellFormed)
                fail(xs, KT_XE_BAD_NAMESPACE_PREFIX);
            else
                over_bytes(xs, xs->fed);
        }
        if (xs->err != KT_XE_NONE)
            break;
    }
    xs->in_feed = false;
    if (xs->dead) {
        xmlFreeParserCtxt(xs->dead);
        xs->dead = NULL;
        xs->halted = false;
        return 0;
    }
    if (xs->err != KT_XE_NONE)
        return report(xs);
    return 0;
}

void kt_xmlstream_free(struct kt_xmlstream **xs)
{
    if (!xs || !*xs)
        return;
    kt_assert(!(*xs)->in_feed);
    clear(*xs);
    free((*xs)->nchildren);
    free(*xs);
    *xs = NULL;
}
