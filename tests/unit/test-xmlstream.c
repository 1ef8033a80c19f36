/* Unit tests for core/xmlstream.c. Every fixture under tests/data/xml/ is
 * fed whole, in two chunks split at every offset, and byte by byte; each
 * way must produce the same transcript of callbacks (open, element, close,
 * error, with elements serialised), equal to the fixture's .expected file.
 * Then restricted XML, limits (at the limit passes, one over fails), resets
 * from inside callbacks and the feed return protocol. */
#include "config.h"
#include <kontalk/xmlstream.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tap.h"

int main(void);

#define HEADER                                                                                     \
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "        \
    "to='kontalk.example' version='1.0'>"

struct rec {
    struct kt_xmlstream *xs;
    struct kt_buf log;
    char *default_ns;
    bool reset_on_open;   /* reset from inside the open callback (once) */
    int reset_on_element; /* reset from inside the n-th element callback */
    int nelements;
    bool release; /* call kt_xmlstream_release after every feed */
    bool errored;      /* the error callback fired */
    bool bad_protocol; /* a feed result contradicted the callbacks */
};

static void on_open(void *data, const struct kt_xml *hdr)
{
    struct rec *r = data;
    const char *dns = kt_xml_attr_ns(hdr, KT_NS_XMLNS, "xmlns");
    free(r->default_ns);
    r->default_ns = dns ? kt_strdup(dns) : NULL;
    kt_buf_puts(&r->log, "open ");
    kt_xml_serialize(hdr, NULL, &r->log);
    kt_buf_printf(&r->log, " default=%s\n", dns ? dns : "(none)");
    if (r->reset_on_open) {
        r->reset_on_open = false;
        kt_xmlstream_reset(r->xs);
        kt_buf_puts(&r->log, "reset\n");
    }
}

static void on_element(void *data, struct kt_xml *el)
{
    struct rec *r = data;
    kt_buf_puts(&r->log, "element ");
    kt_xml_serialize(el, r->default_ns, &r->log);
    kt_buf_puts(&r->log, "\n");
    kt_xml_free(&el);
    if (++r->nelements == r->reset_on_element) {
        kt_xmlstream_reset(r->xs);
        kt_buf_puts(&r->log, "reset\n");
    }
}

static void on_close(void *data)
{
    struct rec *r = data;
    kt_buf_puts(&r->log, "close\n");
}

static void on_error(void *data, enum kt_stream_err err, const char *text KT_UNUSED)
{
    struct rec *r = data;
    if (r->errored)
        r->bad_protocol = true; /* must fire once */
    r->errored = true;
    kt_buf_printf(&r->log, "error %s\n", kt_stream_err_name(err));
}

static const struct kt_xmlstream_callbacks callbacks = {
    .open = on_open,
    .element = on_element,
    .close = on_close,
    .error = on_error,
};

static const struct kt_xmlstream_limits default_limits = {
    .max_stanza_bytes = 65536,
    .max_depth = 16,
    .max_attrs = 32,
    .max_children = 256,
};

static void rec_init(struct rec *r, const struct kt_xmlstream_limits *lim)
{
    memset(r, 0, sizeof(*r));
    r->release = true;
    r->xs = kt_xmlstream_new(lim ? lim : &default_limits, &callbacks, r);
}

static void rec_feed(struct rec *r, const char *buf, size_t len)
{
    bool before = r->errored;
    int rc = kt_xmlstream_feed(r->xs, buf, len);
    if ((rc == -1) != r->errored || (before && rc != -1))
        r->bad_protocol = true;
    /* Release whenever possible: every split test also proves that a
     * released and re-primed parser reads the rest of the stream the same. */
    if (r->release)
        kt_xmlstream_release(r->xs);
}

/* The transcript (caller frees) of feeding data cut at the given offsets
 * (ascending, ncuts of them), plus a final probe feed. */
static char *run(const struct kt_xmlstream_limits *lim, const char *data, size_t len,
                 const size_t *cuts, size_t ncuts)
{
    struct rec r;
    rec_init(&r, lim);
    size_t prev = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rec_feed(&r, data + prev, end - prev);
        prev = end;
    }
    /* After an error every feed fails; after a close input is ignored. */
    rec_feed(&r, " ", 1);
    if (r.bad_protocol)
        kt_buf_puts(&r.log, "BAD FEED PROTOCOL\n");
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    return kt_buf_steal(&r.log, NULL);
}

static char *run_whole(const struct kt_xmlstream_limits *lim, const char *data, size_t len)
{
    return run(lim, data, len, NULL, 0);
}

static char *run_bytewise(const struct kt_xmlstream_limits *lim, const char *data, size_t len)
{
    size_t *cuts = kt_calloc(len, sizeof(*cuts));
    for (size_t i = 1; i < len; i++)
        cuts[i - 1] = i;
    char *t = run(lim, data, len, cuts, len ? len - 1 : 0);
    free(cuts);
    return t;
}

/* Feeds data every way and checks all transcripts equal want (or the whole
 * feed's transcript when want is NULL). Returns the whole-feed transcript. */
static char *check_splits(const char *name, const struct kt_xmlstream_limits *lim, const char *data,
                          size_t len, const char *want)
{
    char *whole = run_whole(lim, data, len);
    if (want && !ok(strcmp(whole, want) == 0, "%s: transcript as expected", name)) {
        diag("got:\n%s", whole);
        diag("want:\n%s", want);
    }
    size_t bad = 0, first_bad = 0;
    for (size_t off = 1; off < len; off++) {
        char *t = run(lim, data, len, &off, 1);
        if (strcmp(t, whole) != 0) {
            if (!bad++)
                first_bad = off;
            if (bad == 1)
                diag("split at %zu gives:\n%s", off, t);
        }
        free(t);
    }
    ok(bad == 0, "%s: two chunks at each of %zu offsets agree (%zu differ, first at %zu)", name,
       len ? len - 1 : 0, bad, first_bad);
    char *bytes = run_bytewise(lim, data, len);
    if (!ok(strcmp(bytes, whole) == 0, "%s: byte by byte agrees", name))
        diag("byte by byte gives:\n%s", bytes);
    free(bytes);
    return whole;
}

static char *read_file(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct kt_buf b = {0};
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        kt_buf_append(&b, tmp, n);
    fclose(f);
    return kt_buf_steal(&b, len_r);
}

static const char *const fixtures[] = {
    "client-stream", "server-stream",  "doctype", "billion-laughs",
    "custom-entity", "entity-in-attr", "pi",      "comment",
    "unbalanced",    "bad-prefix",     "latin1",  "text-at-top",
};

static void test_fixtures(void)
{
    const char *top = getenv("top_srcdir");
    if (!top) {
        ok(1, "# SKIP top_srcdir is not set: fixture tests need the test harness");
        return;
    }
    for (size_t i = 0; i < KT_ARRAY_SIZE(fixtures); i++) {
        char path[4096];
        size_t len;
        snprintf(path, sizeof(path), "%s/tests/data/xml/%s.xml", top, fixtures[i]);
        char *data = read_file(path, &len);
        snprintf(path, sizeof(path), "%s/tests/data/xml/%s.expected", top, fixtures[i]);
        char *want = read_file(path, NULL);
        if (!ok(data && want, "fixture %s readable", fixtures[i])) {
            diag("%s: %s", path, strerror(errno));
            free(data);
            free(want);
            continue;
        }
        clock_t t0 = clock();
        free(check_splits(fixtures[i], NULL, data, len, want));
        diag("%s: %zu bytes, %.2fs", fixtures[i], len, (double)(clock() - t0) / CLOCKS_PER_SEC);
        free(data);
        free(want);
    }
}

/* The transcript of a string fed whole, with default limits. */
static char *whole_str(const char *s)
{
    return run_whole(NULL, s, strlen(s));
}

static void expect(const char *input, const char *want, const char *name)
{
    char *got = check_splits(name, NULL, input, strlen(input), NULL);
    is_str(got, want, name);
    free(got);
}

#define OPEN_LINE                                                                                  \
    "open <stream xmlns='http://etherx.jabber.org/streams' to='kontalk.example' "                  \
    "version='1.0'/> default=jabber:client\n"

static void test_restricted(void)
{
    expect(HEADER
           "<message><body>a &amp; b &lt; c &gt; d &quot;&apos; &#x41;&#66;</body></message>",
           OPEN_LINE "element <message><body>a &amp; b &lt; c &gt; d \"' AB</body></message>\n",
           "predefined entities and character references are decoded");
    expect(HEADER "<message to='a&amp;b&#x40;x'/>", OPEN_LINE "element <message to='a&amp;b@x'/>\n",
           "entities in attributes decoded");
    expect(HEADER "<message><body>&nbsp;</body></message>", OPEN_LINE "error restricted-xml\n",
           "&nbsp; is not predefined");
    expect("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>" HEADER,
           "error restricted-xml\n", "external entity declaration refused");
    expect("<!DOCTYPE stream SYSTEM 'http://example.com/x.dtd'>" HEADER, "error restricted-xml\n",
           "external DTD refused");
    expect(HEADER "<presence/><?foo bar?>", OPEN_LINE "element <presence/>\nerror restricted-xml\n",
           "PI between stanzas");
    expect(HEADER "<message><?foo?></message>", OPEN_LINE "error restricted-xml\n",
           "PI inside a stanza");
    expect("<?xml-stylesheet href='x'?>" HEADER, "error restricted-xml\n", "PI before header");
    expect(HEADER "<!-- c --><presence/>", OPEN_LINE "error restricted-xml\n",
           "comment at depth 1");
    expect(" <?xml version='1.0'?>" HEADER, "error not-well-formed\n",
           "XML declaration only at the very start");
    expect(HEADER "<a><b></a>", OPEN_LINE "error not-well-formed\n", "mismatched end tag");
    expect(HEADER "<a x='1' x='2'/>", OPEN_LINE "error not-well-formed\n", "duplicate attribute");
    expect(HEADER "<a>\x01</a>", OPEN_LINE "error not-well-formed\n", "control character");
    expect(HEADER "<a>\xc3\x28</a>", OPEN_LINE "error not-well-formed\n", "invalid UTF-8");
    expect("hello", "error not-well-formed\n", "text before the header");
    expect(HEADER "</stream:stream>", OPEN_LINE "close\n", "empty stream closes");
    expect(HEADER "<presence/></stream:stream><junk", OPEN_LINE "element <presence/>\nclose\n",
           "input after the close is ignored");
    expect("<?xml version='1.0' encoding='utf-8'?>" HEADER "<presence/>",
           OPEN_LINE "element <presence/>\n", "lowercase utf-8 declaration");
    expect("\xef\xbb\xbf" HEADER "<presence/>", OPEN_LINE "element <presence/>\n",
           "UTF-8 byte order mark");

    /* Billion laughs: refused at the DOCTYPE, nothing expanded, fast. */
    struct kt_buf b = {0};
    kt_buf_puts(&b, "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY a0 'lol'>");
    for (int i = 1; i < 30; i++)
        kt_buf_printf(&b, "<!ENTITY a%d '&a%d;&a%d;&a%d;&a%d;'>", i, i - 1, i - 1, i - 1, i - 1);
    kt_buf_puts(&b, "]>" HEADER "<message><body>&a29;</body></message>");
    clock_t t0 = clock();
    char *t = whole_str(b.data);
    is_str(t, "error restricted-xml\n", "billion laughs refused");
    ok(clock() - t0 < CLOCKS_PER_SEC, "billion laughs took no time");
    free(t);
    kt_buf_free(&b);
}

/* header + stanza where the stanza is exactly n bytes: <message><body>xx..</body></message> */
static char *sized_stanza(size_t n)
{
    const char *pre = "<message><body>", *post = "</body></message>";
    size_t fixed = strlen(pre) + strlen(post);
    kt_assert(n >= fixed);
    struct kt_buf b = {0};
    kt_buf_puts(&b, pre);
    for (size_t i = fixed; i < n; i++)
        kt_buf_append(&b, "x", 1);
    kt_buf_puts(&b, post);
    kt_assert(b.len == n);
    return kt_buf_steal(&b, NULL);
}

static void limit_case(const char *name, const struct kt_xmlstream_limits *lim, const char *body,
                       bool pass)
{
    struct kt_buf in = {0};
    kt_buf_puts(&in, HEADER "\n<presence/>\n");
    kt_buf_puts(&in, body);
    kt_buf_puts(&in, "\n<presence id='after'/>");
    char *got = check_splits(name, lim, in.data, in.len, NULL);
    const char *tail = pass ? "element <presence id='after'/>\n" : "error policy-violation\n";
    size_t gl = strlen(got), tl = strlen(tail);
    if (!ok(gl >= tl && strcmp(got + gl - tl, tail) == 0, "%s: %s", name,
            pass ? "passes" : "policy-violation"))
        diag("got:\n%s", got);
    /* The stanza before is always delivered. */
    ok(strstr(got, "element <presence/>\n") != NULL, "%s: earlier stanza delivered", name);
    free(got);
    kt_buf_free(&in);
}

static void test_limits(void)
{
    struct kt_xmlstream_limits lim = default_limits;
    lim.max_stanza_bytes = 200;
    char *s = sized_stanza(200);
    limit_case("stanza of exactly max bytes", &lim, s, true);
    free(s);
    s = sized_stanza(201);
    limit_case("stanza of max+1 bytes", &lim, s, false);
    free(s);
    s = sized_stanza(5000);
    limit_case("stanza far over max bytes", &lim, s, false);
    free(s);
    limit_case(
        "start tag over max bytes", &lim,
        "<message to='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'/>",
        false);

    lim = default_limits;
    lim.max_depth = 3; /* a stanza is depth 1 below the header */
    limit_case("depth at max", &lim, "<message><a><b/></a></message>", true);
    limit_case("depth max+1", &lim, "<message><a><b><c/></b></a></message>", false);

    lim = default_limits;
    lim.max_attrs = 8; /* the header has 4 attributes + 2 declarations */
    limit_case("attributes at max", &lim,
               "<message a1='1' a2='2' a3='3' a4='4' a5='5' a6='6' a7='7' a8='8'/>", true);
    limit_case("attributes max+1", &lim,
               "<message a1='1' a2='2' a3='3' a4='4' a5='5' a6='6' a7='7' a8='8' a9='9'/>", false);
    limit_case("attributes in a child at max", &lim,
               "<message><x xmlns='u' a1='1' a2='2' a3='3' a4='4' a5='5' a6='6' a7='7'/></message>",
               true);
    limit_case("namespace declarations count as attributes", &lim,
               "<message><x xmlns='u' a1='1' a2='2' a3='3' a4='4' a5='5' a6='6' a7='7' a8='8'/>"
               "</message>",
               false);

    lim = default_limits;
    lim.max_children = 4;
    limit_case("children at max", &lim, "<message><a/><b/><c/><d/></message>", true);
    limit_case("children max+1", &lim, "<message><a/><b/><c/><d/><e/></message>", false);
    limit_case("text runs count as children", &lim, "<message>t<a/>t<b/>t</message>", false);
    limit_case("text split by entities is one run", &lim,
               "<message>a&amp;b&lt;<![CDATA[c]]>d<a/><b/><c/></message>", true);
    limit_case("children limit applies at depth", &lim,
               "<message><a><a/><b/><c/><d/><e/></a></message>", false);

    /* Many small stanzas in one big chunk, each under a small limit. */
    lim = default_limits;
    lim.max_stanza_bytes = 100;
    struct kt_buf in = {0};
    kt_buf_puts(&in, HEADER);
    for (int i = 0; i < 1000; i++)
        kt_buf_printf(&in, "<message id='m%d'><body>hello</body></message>\n", i);
    struct rec r;
    rec_init(&r, &lim);
    rec_feed(&r, in.data, in.len);
    is_int(r.nelements, 1000, "1000 small stanzas in one chunk pass a small byte limit");
    ok(!r.errored && !r.bad_protocol, "  and no error");
    /* Whitespace keepalives never accumulate against the limit (libxml2
     * holds back up to 300 bytes of text, hence a limit above that). */
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);
    lim.max_stanza_bytes = 400;
    rec_init(&r, &lim);
    rec_feed(&r, in.data, in.len);
    for (int i = 0; i < 1000; i++)
        rec_feed(&r, " ", 1);
    char *ws = kt_calloc(1, 3001);
    memset(ws, '\n', 3000);
    rec_feed(&r, ws, 3000);
    free(ws);
    rec_feed(&r, "<presence/>", 11);
    is_int(r.nelements, 1001, "stanza after 4000 bytes of whitespace keepalives");
    if (r.errored)
        diag("%s", strstr(r.log.data, "error"));
    ok(!r.errored, "  and no error");
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);
    kt_buf_free(&in);

    /* Ever new element names: libxml2 interns them for the context's life,
     * so the parser's dictionary is capped. Every chunk ends inside a
     * stanza, so the context is never idle and never released (a released
     * context takes its dictionary with it). */
    rec_init(&r, NULL);
    r.release = false;
    rec_feed(&r, HEADER, strlen(HEADER));
    rec_feed(&r, "<message>", 9);
    struct kt_buf names = {0};
    size_t total = 0;
    char pad[181];
    memset(pad, 'p', 180);
    pad[180] = '\0';
    for (int i = 0; i < 100 && !r.errored; i++) {
        kt_buf_reset(&names);
        for (int j = 0; j < 100; j++)
            kt_buf_printf(&names, "<n%04d_%03d_%s/></message><message>", i, j, pad);
        rec_feed(&r, names.data, names.len);
        total += names.len;
    }
    kt_buf_free(&names);
    ok(r.errored && strstr(r.log.data, "error resource-constraint\n"),
       "10000 long distinct element names: resource-constraint after %zu bytes", total);
    ok(r.nelements > 5000, "  but only after %d stanzas", r.nelements);
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);

    /* A header that never ends is bounded by the same limit. */
    lim.max_stanza_bytes = 1000;
    rec_init(&r, &lim);
    rec_feed(&r, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='", 67);
    for (int i = 0; i < 20 && !r.errored; i++)
        rec_feed(&r, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                 74);
    is_str(r.log.data, "error policy-violation\n", "endless header: policy-violation");
    kt_xmlstream_free(&r.xs);
    kt_buf_free(&r.log);
}

static void test_resets(void)
{
    struct rec r;
    rec_init(&r, NULL);
    r.reset_on_open = true;
    const char *in = HEADER "<presence id='plaintext'/>";
    rec_feed(&r, in, strlen(in));
    rec_feed(&r, HEADER "<presence id='tls'/>", strlen(HEADER "<presence id='tls'/>"));
    is_str(r.log.data, OPEN_LINE "reset\n" OPEN_LINE "element <presence id='tls'/>\n",
           "reset in the open callback discards the rest of the chunk");
    ok(!r.bad_protocol, "  feeds return 0");
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);

    rec_init(&r, NULL);
    r.reset_on_element = 1;
    in = HEADER "<iq type='set' id='a'/><presence id='dropped'/>";
    rec_feed(&r, in, strlen(in));
    in = "<?xml version='1.0'?>" HEADER "<presence id='new'/>";
    rec_feed(&r, in, strlen(in));
    is_str(r.log.data,
           OPEN_LINE "element <iq type='set' id='a'/>\nreset\n" OPEN_LINE
                     "element <presence id='new'/>\n",
           "reset in the element callback; the next feed may start with an XML declaration");
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);

    /* Reset from outside, in the middle of a stanza and after an error. */
    rec_init(&r, NULL);
    rec_feed(&r, HEADER "<message><body>half", strlen(HEADER "<message><body>half"));
    kt_xmlstream_reset(r.xs);
    rec_feed(&r, HEADER "<presence/>", strlen(HEADER "<presence/>"));
    rec_feed(&r, "<a><b></a>", 10);
    ok(r.errored, "error after a reset mid-stanza");
    is_int(kt_xmlstream_feed(r.xs, "<presence/>", 11), -1, "feed after an error returns -1");
    kt_xmlstream_reset(r.xs);
    r.errored = false;
    is_int(kt_xmlstream_feed(r.xs, HEADER "<presence/>", strlen(HEADER "<presence/>")), 0,
           "reset after an error: feeds work again");
    is_str(r.log.data,
           OPEN_LINE OPEN_LINE "element <presence/>\nerror not-well-formed\n" OPEN_LINE
                               "element <presence/>\n",
           "transcript across resets");
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);

    /* Freeing with a half-built stanza must not leak (ASan/valgrind). */
    rec_init(&r, NULL);
    rec_feed(&r, HEADER "<message><body>x<b>y", strlen(HEADER "<message><body>x<b>y"));
    kt_xmlstream_free(&r.xs);
    ok(r.xs == NULL, "free mid-stanza clears the pointer");
    free(r.default_ns);
    kt_buf_free(&r.log);
    kt_xmlstream_free(&r.xs);
    ok(1, "free(NULL) is a no-op");
}

static void test_header(void)
{
    struct rec r;
    rec_init(&r, NULL);
    const char *in = "<stream:stream xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' to='k.example' "
                     "version='1.0' xml:lang='pt-BR'>";
    rec_feed(&r, in, strlen(in));
    is_str(r.log.data,
           "open <stream xmlns='http://etherx.jabber.org/streams' to='k.example' version='1.0' "
           "xml:lang='pt-BR'/> default=jabber:client\n",
           "header with xml:lang");
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);
}

/* Between stanzas the parser context is released; the next stanza is parsed
 * against a copy of the header: its prefix and namespace declarations. */
static void test_idle_release(void)
{
    struct rec r;
    rec_init(&r, NULL);
    static const char hdr[] = "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/"
                              "streams' xmlns:k='urn:k' version='1.0'>";
    r.release = false;
    rec_feed(&r, hdr, strlen(hdr));
    ok(!kt_xmlstream_idle(r.xs), "not released by feeding alone");
    ok(kt_xmlstream_release(r.xs) && kt_xmlstream_idle(r.xs), "released after the header");
    rec_feed(&r, "<message><k:x a='1'/></mess", 27);
    ok(!kt_xmlstream_release(r.xs), "not inside a stanza");
    rec_feed(&r, "age> ", 5);
    ok(kt_xmlstream_release(r.xs), "released after it (trailing whitespace is nothing)");
    rec_feed(&r, "<presence><k:y/></presence>", 27);
    rec_feed(&r, "</s:stream>", 11);
    ok(!r.errored, "no error across releases");
    ok(strstr(r.log.data, "element <message><x xmlns='urn:k' a='1'/></message>\n") != NULL,
       "header prefix declaration applies after a release");
    ok(strstr(r.log.data, "element <presence><y xmlns='urn:k'/></presence>\n") != NULL,
       "and again after the second one");
    ok(strstr(r.log.data, "close\n") != NULL, "the header's own prefix closes the stream");
    const char *first = strstr(r.log.data, "open ");
    ok(first && !strstr(first + 1, "open "), "open reported once");
    if (r.errored)
        diag("%s", r.log.data);
    kt_xmlstream_free(&r.xs);
    free(r.default_ns);
    kt_buf_free(&r.log);
}

int main(void)
{
    kt_xmlstream_global_init();
    test_idle_release();
    test_header();
    test_restricted();
    test_limits();
    test_resets();
    test_fixtures();
    return done_testing();
}
