/* Unit tests for core/jid.c: RFC 7622 structure, per-part validation,
 * normalisation (ASCII case, trailing dot), equality and constructors. */
#include "config.h"
#include <kontalk/jid.h>

#include <stdlib.h>
#include <string.h>

#include "tap.h"

int main(void);

/* s must parse and normalise to want (the full string). */
static void parses_to(const char *s, const char *want)
{
    struct kt_jid *j = kt_jid_parse(s);
    if (!ok(j != NULL, "valid: \"%.60s\"", s)) {
        return;
    }
    is_str(j->full, want, "  normalised full");
    kt_jid_free(&j);
    ok(j == NULL, "  free clears the pointer");
}

static void rejects(const char *s, const char *why)
{
    struct kt_jid *j = kt_jid_parse(s);
    ok(j == NULL, "invalid (%s): \"%.60s\"", why, s);
    kt_jid_free(&j);
}

/* A string of n copies of c (caller frees). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A domainpart of exactly n octets made of 63-octet labels (n >= 1). */
static char *long_domain(size_t n)
{
    char *s = repeat('a', n);
    for (size_t i = 63; i < n; i += 64)
        s[i] = '.';
    if (s[n - 1] == '.')
        s[n - 2] = '.', s[n - 1] = 'b'; /* never end on a dot */
    return s;
}

static void test_structure(void)
{
    struct kt_jid *j = kt_jid_parse("juliet@example.com/balcony");
    ok(j != NULL, "full JID parses");
    if (j) {
        is_str(j->local, "juliet", "local");
        is_str(j->domain, "example.com", "domain");
        is_str(j->resource, "balcony", "resource");
        is_str(j->bare, "juliet@example.com", "bare");
        is_str(j->full, "juliet@example.com/balcony", "full");
        ok(!kt_jid_is_bare(j), "full JID is not bare");
    }
    kt_jid_free(&j);

    j = kt_jid_parse("example.com");
    ok(j && j->local == NULL && j->resource == NULL, "domain-only JID has no local/resource");
    if (j) {
        is_str(j->bare, "example.com", "domain-only bare");
        ok(kt_jid_is_bare(j), "domain-only is bare");
    }
    kt_jid_free(&j);

    j = kt_jid_parse("example.com/res@x/y");
    ok(j && j->local == NULL, "'@' after the first '/' belongs to the resource");
    if (j)
        is_str(j->resource, "res@x/y", "resource keeps '@' and '/'");
    kt_jid_free(&j);

    j = kt_jid_parse("a@b/c d e");
    if (ok(j != NULL, "resource with inner spaces"))
        is_str(j->resource, "c d e", "spaces kept");
    kt_jid_free(&j);

    parses_to("user@example.com", "user@example.com");
    parses_to("user@example.com/r", "user@example.com/r");
    parses_to("localhost", "localhost");
    parses_to("a@b/ ", "a@b/ ");
    parses_to("192.0.2.1", "192.0.2.1");
    parses_to("u@192.0.2.1/r", "u@192.0.2.1/r");

    rejects("", "empty string");
    rejects("@example.com", "empty localpart");
    rejects("user@", "empty domainpart");
    rejects("user@/r", "empty domainpart with resource");
    rejects("example.com/", "empty resource");
    rejects("user@example.com/", "empty resource after bare");
    rejects("/r", "no domainpart");
    rejects("a@b@c", "second '@' in the domainpart");
    rejects(".", "domain of a single dot");
    rejects("u@.", "domain of a single dot after strip");
    ok(kt_jid_parse(NULL) == NULL, "NULL input");
}

static void test_localpart(void)
{
    static const char forbidden[] = "\"&'/:<>@ ";
    char buf[32];

    for (const char *c = forbidden; *c; c++) {
        /* '/' and '@' are separators in a string: test them through new(). */
        snprintf(buf, sizeof(buf), "ab%cc", *c);
        struct kt_jid *j = kt_jid_new(buf, "example.com", NULL);
        ok(j == NULL, "localpart with '%c' refused", *c);
        kt_jid_free(&j);
    }
    rejects("a b@example.com", "space in localpart");
    rejects("a:b@example.com", "colon in localpart");
    rejects("a<b@example.com", "less-than in localpart");
    parses_to("a.b+c_d=e~f@example.com", "a.b+c_d=e~f@example.com");
    parses_to("JuLiEt@Example.COM/BalCony", "juliet@example.com/BalCony");
    parses_to("\xc3\x89LODIE@example.com", "\xc3\x89lodie@example.com"); /* É stays upper */
}

static void test_domainpart(void)
{
    parses_to("user@example.com.", "user@example.com");
    parses_to("example.com./r", "example.com/r");
    rejects("example.com..", "only one trailing dot is stripped");
    rejects("a..b", "empty label");
    rejects(".example.com", "leading dot");
    rejects("-a.example.com", "label starts with a hyphen");
    rejects("a-.example.com", "label ends with a hyphen");
    parses_to("a-b.x-1.example", "a-b.x-1.example");
    rejects("a_b.example.com", "underscore in a label");
    rejects("a b.example.com", "space in a domain");
    rejects("a!b.com", "punctuation in a domain");

    char *l63 = repeat('x', 63), *l64 = repeat('x', 64), buf[100];
    snprintf(buf, sizeof(buf), "%s.com", l63);
    parses_to(buf, buf);
    snprintf(buf, sizeof(buf), "%s.com", l64);
    rejects(buf, "64-octet label");
    free(l63);
    free(l64);

    parses_to("u@[::1]/r", "u@[::1]/r");
    parses_to("[2001:DB8::1]", "[2001:db8::1]");
    parses_to("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]");
    rejects("[::1", "unterminated IPv6 literal");
    rejects("[]", "empty IPv6 literal");
    rejects("[192.0.2.1]", "IPv4 in brackets");
    rejects("[::1::2]", "two '::' in IPv6");
    rejects("[fe80::1%eth0]", "zone id in IPv6 literal");
    rejects("[::1]x", "text after IPv6 literal");
    /* Non-ASCII labels are accepted as UTF-8 without IDNA conversion. */
    parses_to("u@\xe4\xbe\x8b\xe3\x81\x88.jp", "u@\xe4\xbe\x8b\xe3\x81\x88.jp");
    parses_to("u@B\xc3\xbc\x63HER.de", "u@b\xc3\xbc\x63her.de");
}

static void test_lengths(void)
{
    char *l1023 = repeat('l', 1023), *l1024 = repeat('l', 1024);
    char *d1023 = long_domain(1023), *d1024 = long_domain(1024);
    char *r1023 = repeat('R', 1023), *r1024 = repeat('R', 1024);
    size_t cap = 4 * 1024;
    char *buf = malloc(cap);
    struct kt_jid *j;

    ok(strlen(d1023) == 1023 && strlen(d1024) == 1024, "fixture lengths");
    snprintf(buf, cap, "%s@%s/%s", l1023, d1023, r1023);
    j = kt_jid_parse(buf);
    ok(j != NULL, "1023-octet parts everywhere");
    if (j)
        ok(strlen(j->full) == 3 * 1023 + 2, "full length 3071");
    kt_jid_free(&j);
    snprintf(buf, cap, "%s@%s./%s", l1023, d1023, r1023);
    j = kt_jid_parse(buf);
    ok(j != NULL, "1023-octet domain plus a trailing dot");
    kt_jid_free(&j);

    snprintf(buf, cap, "%s@example.com", l1024);
    rejects(buf, "1024-octet localpart");
    snprintf(buf, cap, "u@%s", d1024);
    rejects(buf, "1024-octet domainpart");
    snprintf(buf, cap, "u@example.com/%s", r1024);
    rejects(buf, "1024-octet resource");
    snprintf(buf, cap, "%s@%s/%s", l1023, d1023, r1024);
    rejects(buf, "overlong whole string");

    j = kt_jid_new(l1023, "example.com", r1023);
    ok(j != NULL, "new() with 1023-octet parts");
    kt_jid_free(&j);
    j = kt_jid_new(l1024, "example.com", NULL);
    ok(j == NULL, "new() with 1024-octet localpart");
    j = kt_jid_new(NULL, d1024, NULL);
    ok(j == NULL, "new() with 1024-octet domainpart");
    j = kt_jid_new(NULL, "example.com", r1024);
    ok(j == NULL, "new() with 1024-octet resource");

    free(l1023), free(l1024), free(d1023), free(d1024), free(r1023), free(r1024);
    free(buf);
}

static void test_utf8(void)
{
    parses_to("\xc3\xa9t\xc3\xa9@example.com/\xf0\x9f\x98\x80", /* été, U+1F600 */
              "\xc3\xa9t\xc3\xa9@example.com/\xf0\x9f\x98\x80");
    parses_to("u@example.com/\xf4\x8f\xbf\xbf", "u@example.com/\xf4\x8f\xbf\xbf"); /* U+10FFFF */
    rejects("\xc0\xaf@example.com", "overlong 2-byte '/'");
    rejects("u@example.com/\xe0\x80\xaf", "overlong 3-byte");
    rejects("u@example.com/\xf0\x80\x80\xaf", "overlong 4-byte");
    rejects("u@example.com/\xed\xa0\x80", "UTF-16 surrogate U+D800");
    rejects("\xed\xbf\xbf@example.com", "UTF-16 surrogate U+DFFF");
    rejects("u@example.com/\xf4\x90\x80\x80", "above U+10FFFF");
    rejects("u@example.com/\xf5\x80\x80\x80", "lead byte 0xF5");
    rejects("u@example.com/ab\xc3", "truncated 2-byte at end");
    rejects("u@example.com/\xe2\x82x", "truncated 3-byte");
    rejects("u@ex\x80mple.com", "stray continuation byte in domain");
    rejects("u@example.com/\xff", "byte 0xFF");
    rejects("u@example.com/a\tb", "TAB in resource");
    rejects("u\x01@example.com", "control char in localpart");
    rejects("u@exa\x1fmple.com", "control char in domain");
    rejects("u@example.com/\x7f", "DEL in resource");
    rejects("u@example.com/\xc2\x85", "C1 control NEL in resource");
}

static void test_equality(void)
{
    struct kt_jid *a = kt_jid_parse("Romeo@Example.net/Orchard");
    struct kt_jid *b = kt_jid_parse("romeo@example.net./Orchard");
    struct kt_jid *c = kt_jid_parse("romeo@example.net/orchard");
    struct kt_jid *d = kt_jid_parse("romeo@example.net");
    struct kt_jid *e = kt_jid_parse("juliet@example.net/Orchard");

    ok(a && b && c && d && e, "equality fixtures parse");
    if (!(a && b && c && d && e))
        goto done;
    ok(kt_jid_equal(a, b), "case and trailing dot normalised before comparing");
    ok(!kt_jid_equal(a, c), "resource is case-sensitive");
    ok(kt_jid_bare_equal(a, c), "bare equal despite resource case");
    ok(kt_jid_bare_equal(a, d), "full and bare share the bare JID");
    ok(!kt_jid_equal(a, d), "full differs from bare");
    ok(!kt_jid_bare_equal(a, e), "different localpart");

    struct kt_jid *dup = kt_jid_dup(a);
    ok(dup != a && kt_jid_equal(dup, a), "dup is an equal copy");
    is_str(dup->resource, "Orchard", "dup keeps the resource");
    ok(dup->full != a->full, "dup has its own strings");
    kt_jid_free(&dup);

    struct kt_jid *bare = kt_jid_to_bare(a);
    ok(bare && kt_jid_is_bare(bare), "to_bare gives a bare JID");
    is_str(bare->full, "romeo@example.net", "to_bare full");
    ok(kt_jid_equal(bare, d), "to_bare equals the parsed bare JID");
    kt_jid_free(&bare);

    struct kt_jid *dom = kt_jid_parse("example.net/x");
    bare = kt_jid_to_bare(dom);
    is_str(bare->full, "example.net", "to_bare of a domain JID");
    ok(bare->local == NULL && bare->resource == NULL, "domain bare has no parts");
    kt_jid_free(&bare);
    kt_jid_free(&dom);

done:
    kt_jid_free(&a);
    kt_jid_free(&b);
    kt_jid_free(&c);
    kt_jid_free(&d);
    kt_jid_free(&e);
    kt_jid_free(NULL);
}

static void test_new(void)
{
    struct kt_jid *j = kt_jid_new("Alice", "Example.ORG.", "Phone 1");
    if (ok(j != NULL, "new() from parts")) {
        is_str(j->full, "alice@example.org/Phone 1", "new() normalises");
        is_str(j->bare, "alice@example.org", "new() bare");
    }
    kt_jid_free(&j);
    j = kt_jid_new(NULL, "example.org", NULL);
    ok(j && strcmp(j->full, "example.org") == 0, "new() domain only");
    kt_jid_free(&j);
    ok(kt_jid_new("", "example.org", NULL) == NULL, "new() empty localpart");
    ok(kt_jid_new("a", "", NULL) == NULL, "new() empty domain");
    ok(kt_jid_new("a", NULL, NULL) == NULL, "new() NULL domain");
    ok(kt_jid_new("a", "example.org", "") == NULL, "new() empty resource");
    ok(kt_jid_new("a", "exa/mple.org", NULL) == NULL, "new() '/' in domain");
    ok(kt_jid_new("a", "exa@mple.org", NULL) == NULL, "new() '@' in domain");
    j = kt_jid_new("a", "b", "c/d@e");
    ok(j && strcmp(j->full, "a@b/c/d@e") == 0, "new() resource may hold separators");
    kt_jid_free(&j);
}

int main(void)
{
    test_structure();
    test_localpart();
    test_domainpart();
    test_lengths();
    test_utf8();
    test_equality();
    test_new();
    return done_testing();
}
