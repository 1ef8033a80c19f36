/* An XMPP stream parser: libxml2 SAX2 in push mode, restricted XML
 * (RFC 6120 §11.1: no DOCTYPE, no entity declarations or references beyond
 * the five predefined ones, no processing instructions, no comments) and
 * limits. Depth 1 is the stream header; each closed depth-2 element is
 * handed over as a tree. One parser per stream; call kt_xmlstream_reset()
 * on a stream restart (after STARTTLS or SASL success).
 * Used by one thread at a time (the connection's I/O thread). */
#ifndef KONTALK_XMLSTREAM_H
#define KONTALK_XMLSTREAM_H

#include "base.h"
#include "error.h"
#include "xml.h"

struct kt_xmlstream_limits {
    size_t max_stanza_bytes; /* bytes of one depth-2 element, as received */
    unsigned max_depth;      /* element depth below the stream header */
    unsigned max_attrs;      /* attributes per element */
    unsigned max_children;   /* child nodes per element */
};

struct kt_xmlstream_callbacks {
    /* The stream header: an element (no children) with the header's name,
     * namespace and attributes. Its namespace declarations appear as
     * attributes in KT_NS_XMLNS: kt_xml_attr_ns(h, KT_NS_XMLNS, "xmlns") is
     * the default namespace (jabber:client, jabber:server). Borrowed for
     * the call. */
    void (*open)(void *data, const struct kt_xml *header);
    /* A complete depth-2 element; the callee owns it (kt_xml_free). */
    void (*element)(void *data, struct kt_xml *el);
    /* </stream:stream> was received. */
    void (*close)(void *data);
    /* The stream is broken; no more callbacks follow until a reset. text may be NULL. */
    void (*error)(void *data, enum kt_stream_err err, const char *text);
};

struct kt_xmlstream;

KT_API struct kt_xmlstream *kt_xmlstream_new(const struct kt_xmlstream_limits *limits,
                                             const struct kt_xmlstream_callbacks *cb,
                                             void *data);
/* Parses len bytes. Returns 0, or -1 once the error callback has fired
 * (then every further call returns -1 until a reset). Callbacks may call
 * kt_xmlstream_reset() (the rest of the current chunk is then discarded:
 * after STARTTLS, buffered plaintext must not be parsed). */
KT_API int kt_xmlstream_feed(struct kt_xmlstream *xs, const char *buf, size_t len);
/* Frees the libxml2 context of a stream that is between stanzas with
 * nothing buffered (several KB per stream); the next feed primes a new one
 * with a copy of the header's start tag, without a second open callback.
 * Returns whether it did. Call for streams that have been quiet for a
 * while, not after every stanza (a new context costs CPU). Not in a callback. */
KT_API bool kt_xmlstream_release(struct kt_xmlstream *xs);
/* Whether the context is released. */
KT_API bool kt_xmlstream_idle(const struct kt_xmlstream *xs);
/* Starts a fresh parser (stream restart). */
KT_API void kt_xmlstream_reset(struct kt_xmlstream *xs);
/* After kt_xmlstream_feed returns: whether a reset made from a callback
 * discarded anything but whitespace that followed the element (bytes a
 * client sent after <starttls/> without waiting for <proceed/>). */
KT_API bool kt_xmlstream_discarded_data(const struct kt_xmlstream *xs);
/* New limits, e.g. the larger post-authentication stanza size. Call only
 * after a reset (a reset from inside a callback counts) or before the
 * first feed. */
KT_API void kt_xmlstream_set_limits(struct kt_xmlstream *xs,
                                    const struct kt_xmlstream_limits *limits);
KT_API void kt_xmlstream_free(struct kt_xmlstream **xs);

/* Call once in main() before any thread starts (libxml2 initialisation). */
KT_API void kt_xmlstream_global_init(void);

#endif
