/* JIDs (RFC 7622): parse, validate, compare. Each part is at most 1023
 * octets; the domainpart is lowercased (ASCII) and a trailing dot removed;
 * the localpart is lowercased (ASCII) and checked for the characters RFC 7622
 * §3.3.1 forbids. Not yet PRECIS: non-ASCII parts must be valid UTF-8 but
 * are not normalised or case-folded (see docs/jid.md). A kt_jid is one
 * immutable allocation; share it by kt_jid_dup(). */
#ifndef KONTALK_JID_H
#define KONTALK_JID_H

#include "base.h"

#define KT_JID_PART_MAX 1023

struct kt_jid {
    const char *local;    /* NULL when absent */
    const char *domain;   /* never NULL */
    const char *resource; /* NULL when absent */
    const char *full;     /* "local@domain/resource" as normalised */
    const char *bare;     /* "local@domain" (or "domain") */
};

/* Parses s; NULL if it is not a valid JID. */
KT_API struct kt_jid *kt_jid_parse(const char *s);
/* Builds from parts (local and resource may be NULL); NULL if invalid. */
KT_API struct kt_jid *kt_jid_new(const char *local, const char *domain, const char *resource);
KT_API struct kt_jid *kt_jid_dup(const struct kt_jid *jid);
/* The bare JID of jid as a new object. */
KT_API struct kt_jid *kt_jid_to_bare(const struct kt_jid *jid);
KT_API void kt_jid_free(struct kt_jid **jid);

KT_API bool kt_jid_equal(const struct kt_jid *a, const struct kt_jid *b);
KT_API bool kt_jid_bare_equal(const struct kt_jid *a, const struct kt_jid *b);
KT_API bool kt_jid_is_bare(const struct kt_jid *jid);

#endif
