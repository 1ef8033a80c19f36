/* JIDs (RFC 7622 §3): split a string into localpart, domainpart and
 * resourcepart, validate each part and normalise it, and compare JIDs.
 *
 * The split follows §3.2: everything from the first '/' on is the resource,
 * and in what remains the text before the first '@' is the localpart. A
 * separator with nothing on one side ("@d", "l@d/", "l@") is invalid. Every
 * part is 1..KT_JID_PART_MAX octets of valid UTF-8 without control
 * characters. The localpart and the domainpart are lowercased for ASCII
 * letters only; this is not yet PRECIS (no NFC, no Unicode case mapping, no
 * IDNA), see docs/jid.md. The resource is kept exactly as given.
 *
 * A kt_jid is a single allocation: the struct followed by its strings
 * (full, bare, local, domain, resource), so freeing it is one free() and it
 * is immutable once built. kt_jid_dup() copies it; JIDs are small and a
 * copy needs no atomic reference count between threads. */
#include "config.h"
#include <kontalk/jid.h>

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* local '@' domain '/' resource, each part at its maximum. */
#define JID_MAX_LEN (3 * KT_JID_PART_MAX + 2)

/* A part as a (pointer, length) slice of the input: the input of
 * kt_jid_parse() is not split in place. p == NULL means "absent". */
struct jid_slice {
    const char *p;
    size_t len;
};

/* Decodes one UTF-8 sequence at s (n bytes available). Returns its length
 * and stores the code point, or 0 when the sequence is invalid: truncated,
 * a stray continuation byte, overlong, a surrogate or above U+10FFFF. */
static size_t jid_utf8_next(const unsigned char *s, size_t n, unsigned long *cp_r)
{
    unsigned char c = s[0];
    size_t len;
    unsigned long cp, min;

    if (c < 0x80) {
        *cp_r = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        /* 0x80..0xC1 (continuation or overlong lead) and 0xF5..0xFF */
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *cp_r = cp;
    return len;
}

/* Common to every part: length bounds, valid UTF-8, no C0/C1 control
 * characters and no DEL (PRECIS disallows all of category Cc). */
static bool jid_part_ok(const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;

    if (len == 0 || len > KT_JID_PART_MAX)
        return false;
    for (size_t i = 0; i < len;) {
        unsigned long cp;
        size_t n = jid_utf8_next(s + i, len - i, &cp);
        if (n == 0)
            return false;
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
            return false;
        i += n;
    }
    return true;
}

static bool jid_local_ok(const char *p, size_t len)
{
    if (!jid_part_ok(p, len))
        return false;
    /* RFC 7622 §3.3.1 forbids these even though PRECIS would allow some. */
    for (size_t i = 0; i < len; i++) {
        if (p[i] == ' ' || memchr("\"&'/:<>@", p[i], 8) != NULL)
            return false;
    }
    return true;
}

static bool jid_is_ldh(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* One DNS label. ASCII labels follow the LDH rule with at most 63
 * octets. A label with non-ASCII characters is taken as a U-label without
 * IDNA checks: its ASCII characters must still be LDH, but the 63-octet
 * limit applies to its A-label, which we do not compute. */
static bool jid_label_ok(const char *p, size_t len)
{
    bool ascii = true;

    if (len == 0)
        return false;
    if (p[0] == '-' || p[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)p[i] >= 0x80)
            ascii = false;
        else if (!jid_is_ldh(p[i]))
            return false;
    }
    return !ascii || len <= 63;
}

/* Checks a domainpart whose trailing dot has already been removed. */
static bool jid_domain_ok(const char *p, size_t len)
{
    if (!jid_part_ok(p, len))
        return false;
    if (p[0] == '[') {
        /* IPv6 literal (RFC 7622 §3.2 via RFC 3986 IP-literal). */
        char addr[INET6_ADDRSTRLEN + 1];
        unsigned char bin[16];
        if (len < 3 || p[len - 1] != ']' || len - 2 > INET6_ADDRSTRLEN)
            return false;
        memcpy(addr, p + 1, len - 2);
        addr[len - 2] = '\0';
        return inet_pton(AF_INET6, addr, bin) == 1;
    }
    /* Dotted IPv4 addresses pass as all-digit LDH labels. */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '.') {
            if (!jid_label_ok(p + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return true;
}

static void jid_copy_lower(char *dst, const char *src, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        dst[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    dst[len] = '\0';
}

/* Builds the object from parts that have already been validated (domain
 * without its trailing dot). Lowercases local and domain while copying. */
static struct kt_jid *jid_build(struct jid_slice l, struct jid_slice d, struct jid_slice r)
{
    size_t bare_len = (l.p ? l.len + 1 : 0) + d.len;
    size_t full_len = bare_len + (r.p ? r.len + 1 : 0);
    size_t parts_len = (l.p ? l.len + 1 : 0) + d.len + 1 + (r.p ? r.len + 1 : 0);
    struct kt_jid *jid = kt_malloc(sizeof(*jid) + full_len + 1 + bare_len + 1 + parts_len);
    char *full = (char *)(jid + 1);
    char *bare = full + full_len + 1;
    char *q = bare + bare_len + 1;

    if (l.p) {
        jid_copy_lower(q, l.p, l.len);
        jid->local = q;
        q += l.len + 1;
    } else {
        jid->local = NULL;
    }
    jid_copy_lower(q, d.p, d.len);
    jid->domain = q;
    q += d.len + 1;
    if (r.p) {
        memcpy(q, r.p, r.len);
        q[r.len] = '\0';
        jid->resource = q;
    } else {
        jid->resource = NULL;
    }

    /* bare and full from the normalised parts */
    char *w = bare;
    if (jid->local) {
        memcpy(w, jid->local, l.len);
        w += l.len;
        *w++ = '@';
    }
    memcpy(w, jid->domain, d.len + 1);
    memcpy(full, bare, bare_len);
    w = full + bare_len;
    if (jid->resource) {
        *w++ = '/';
        memcpy(w, jid->resource, r.len);
        w += r.len;
    }
    *w = '\0';
    jid->full = full;
    jid->bare = bare;
    return jid;
}

/* Validates the three parts and builds. Shared by parse and new. */
static struct kt_jid *jid_make(struct jid_slice l, struct jid_slice d, struct jid_slice r)
{
    if (!d.p)
        return NULL;
    /* RFC 7622 §3.2: a final dot is stripped before anything else. */
    if (d.len > 0 && d.p[d.len - 1] == '.')
        d.len--;
    if (l.p && !jid_local_ok(l.p, l.len))
        return NULL;
    if (!jid_domain_ok(d.p, d.len))
        return NULL;
    if (r.p && !jid_part_ok(r.p, r.len))
        return NULL;
    return jid_build(l, d, r);
}

struct kt_jid *kt_jid_parse(const char *s)
{
    struct jid_slice l = {NULL, 0}, d, r = {NULL, 0};
    size_t len;
    const char *slash, *at;

    if (!s)
        return NULL;
    /* +1 for a trailing dot on a domainpart of maximal length */
    len = strnlen(s, JID_MAX_LEN + 2);
    if (len > JID_MAX_LEN + 1)
        return NULL;
    slash = memchr(s, '/', len);
    if (slash) {
        r.p = slash + 1;
        r.len = len - (size_t)(r.p - s);
        len = (size_t)(slash - s);
    }
    at = memchr(s, '@', len);
    if (at) {
        l.p = s;
        l.len = (size_t)(at - s);
        d.p = at + 1;
        d.len = len - l.len - 1;
    } else {
        d.p = s;
        d.len = len;
    }
    return jid_make(l, d, r);
}

struct kt_jid *kt_jid_new(const char *local, const char *domain, const char *resource)
{
    /* strnlen bounds the scan; an overlong part fails the length check. */
    struct jid_slice l = {local, local ? strnlen(local, KT_JID_PART_MAX + 1) : 0};
    struct jid_slice d = {domain, domain ? strnlen(domain, KT_JID_PART_MAX + 2) : 0};
    struct jid_slice r = {resource, resource ? strnlen(resource, KT_JID_PART_MAX + 1) : 0};

    return jid_make(l, d, r);
}

struct kt_jid *kt_jid_dup(const struct kt_jid *jid)
{
    kt_assert(jid != NULL);
    struct jid_slice l = {jid->local, jid->local ? strlen(jid->local) : 0};
    struct jid_slice d = {jid->domain, strlen(jid->domain)};
    struct jid_slice r = {jid->resource, jid->resource ? strlen(jid->resource) : 0};

    /* Already normalised and valid: no need to check again. */
    return jid_build(l, d, r);
}

struct kt_jid *kt_jid_to_bare(const struct kt_jid *jid)
{
    kt_assert(jid != NULL);
    struct jid_slice l = {jid->local, jid->local ? strlen(jid->local) : 0};
    struct jid_slice d = {jid->domain, strlen(jid->domain)};
    struct jid_slice r = {NULL, 0};

    return jid_build(l, d, r);
}

void kt_jid_free(struct kt_jid **jid)
{
    if (!jid)
        return;
    free(*jid);
    *jid = NULL;
}

bool kt_jid_equal(const struct kt_jid *a, const struct kt_jid *b)
{
    return strcmp(a->full, b->full) == 0;
}

bool kt_jid_bare_equal(const struct kt_jid *a, const struct kt_jid *b)
{
    return strcmp(a->bare, b->bare) == 0;
}

bool kt_jid_is_bare(const struct kt_jid *jid)
{
    return jid->resource == NULL;
}
