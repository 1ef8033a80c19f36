/* The router: hook stages and domain routes (see router.h for the dispatch
 * rule). Modules register hooks and routes while they initialise, on the main
 * thread; kt_router_freeze() then sorts and indexes the tables, and from that
 * point they are read-only, so any number of threads may dispatch without a
 * lock. Registering after the freeze is a programming error and aborts.
 *
 * Routes live in two sorted arrays searched with bsearch(): exact domains,
 * and wildcard suffixes ("*.example.org" is stored as "example.org"). A
 * domain's wildcard candidates are found by walking its dots from the left,
 * which visits the longest (most specific) suffix first and never the domain
 * itself, so "*.example.org" matches "a.example.org" but not "example.org".
 *
 * Nothing here takes ownership of a dispatched stanza; the caller keeps its
 * reference, and handlers that keep the stanza take their own. */
#include "config.h"
#include <kontalk/router.h>
#include <kontalk/log.h>

#include <ctype.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Error replies are never bounced, so a bounce dispatches at most one level
 * deep; the guard only protects against a future change breaking that. */
#define BOUNCE_DEPTH_MAX 4

struct hook {
    unsigned kinds, types;
    char *ns, *name; /* owned copies; NULL = any */
    int priority;
    unsigned seq; /* registration order, the tie-breaker */
    kt_stanza_fn fn;
    void *data;
};

struct hook_stage {
    struct hook *v;
    size_t n, cap;
};

struct route {
    char *domain; /* exact: "host"; wildcard: the part after "*." */
    unsigned flags;
    kt_stanza_fn deliver;
    void *data;
};

struct route_vec {
    struct route *v;
    size_t n, cap;
};

struct kt_router {
    struct hook_stage hooks[KT_HOOK_STAGES];
    unsigned hook_seq;
    struct route_vec exact, wild;
    struct route def;
    bool has_def;
    bool frozen;
    atomic_ullong dispatched, bounced, dropped;
};

static _Thread_local unsigned bounce_depth;

struct kt_router *kt_router_new(void)
{
    struct kt_router *r = kt_new(struct kt_router);
    atomic_init(&r->dispatched, 0);
    atomic_init(&r->bounced, 0);
    atomic_init(&r->dropped, 0);
    return r;
}

static void route_vec_free(struct route_vec *rv)
{
    for (size_t i = 0; i < rv->n; i++)
        free(rv->v[i].domain);
    free(rv->v);
}

void kt_router_free(struct kt_router **rp)
{
    struct kt_router *r = *rp;
    if (!r)
        return;
    for (int s = 0; s < KT_HOOK_STAGES; s++) {
        struct hook_stage *hs = &r->hooks[s];
        for (size_t i = 0; i < hs->n; i++) {
            free(hs->v[i].ns);
            free(hs->v[i].name);
        }
        free(hs->v);
    }
    route_vec_free(&r->exact);
    route_vec_free(&r->wild);
    free(r);
    *rp = NULL;
}

int kt_hook_add(struct kt_router *r, enum kt_hook_stage stage, const struct kt_match *m,
                int priority, kt_stanza_fn fn, void *data)
{
    kt_assert(r != NULL);
    /* The tables are read without locks once frozen. */
    kt_assert(!r->frozen);
    kt_assert((unsigned)stage < KT_HOOK_STAGES);
    kt_assert(fn != NULL);

    struct hook_stage *hs = &r->hooks[stage];
    if (hs->n == hs->cap) {
        hs->cap = hs->cap ? hs->cap * 2 : 8;
        hs->v = kt_realloc(hs->v, hs->cap * sizeof(*hs->v));
    }
    struct hook *h = &hs->v[hs->n++];
    memset(h, 0, sizeof(*h));
    if (m) {
        h->kinds = m->kinds;
        h->types = m->types;
        h->ns = m->ns ? kt_strdup(m->ns) : NULL;
        h->name = m->name ? kt_strdup(m->name) : NULL;
    }
    h->priority = priority;
    h->seq = r->hook_seq++;
    h->fn = fn;
    h->data = data;
    return 0;
}

/* Lowercases (ASCII) and strips one trailing dot, as JID domains are
 * normalised, so that lookups can compare bytes. NULL if the pattern is not
 * "*", "*.suffix" or a plain name. */
static char *route_pattern(const char *domain, bool *wild_r)
{
    *wild_r = false;
    if (strncmp(domain, "*.", 2) == 0) {
        *wild_r = true;
        domain += 2;
    }
    size_t len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0 || domain[0] == '.')
        return NULL;
    char *s = kt_strndup(domain, len);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '*' || s[i] == '@' || s[i] == '/' || isspace((unsigned char)s[i]) ||
            (s[i] == '.' && s[i + 1] == '.')) {
            free(s);
            return NULL;
        }
        s[i] = (char)tolower((unsigned char)s[i]);
    }
    return s;
}

int kt_route_add(struct kt_router *r, const char *domain, unsigned flags, kt_stanza_fn deliver,
                 void *data)
{
    kt_assert(r != NULL);
    kt_assert(!r->frozen);
    kt_assert(domain != NULL);
    /* Without a deliver function only LOCAL hooks can take the stanzas. */
    kt_assert(deliver != NULL || (flags & KT_ROUTE_LOCAL));

    if (strcmp(domain, "*") == 0) {
        if (r->has_def) {
            kt_log(KT_LOG_ERROR, "router: the default route is already taken");
            return -1;
        }
        r->def = (struct route){.domain = NULL, .flags = flags, .deliver = deliver, .data = data};
        r->has_def = true;
        return 0;
    }

    bool wild;
    char *pat = route_pattern(domain, &wild);
    if (!pat) {
        kt_log(KT_LOG_ERROR, "router: invalid route domain '%s'", domain);
        return -1;
    }
    struct route_vec *rv = wild ? &r->wild : &r->exact;
    /* Registration is rare and the tables are small: a linear scan will do. */
    for (size_t i = 0; i < rv->n; i++) {
        if (strcmp(rv->v[i].domain, pat) == 0) {
            kt_log(KT_LOG_ERROR, "router: route '%s' is already taken", domain);
            free(pat);
            return -1;
        }
    }
    if (rv->n == rv->cap) {
        rv->cap = rv->cap ? rv->cap * 2 : 8;
        rv->v = kt_realloc(rv->v, rv->cap * sizeof(*rv->v));
    }
    rv->v[rv->n++] =
        (struct route){.domain = pat, .flags = flags, .deliver = deliver, .data = data};
    return 0;
}

/* Priority descending, then registration order. The sequence number makes
 * the order total, so qsort (not stable by itself) yields a stable result. */
static int hook_cmp(const void *a, const void *b)
{
    const struct hook *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

static int route_cmp(const void *a, const void *b)
{
    const struct route *x = a, *y = b;
    return strcmp(x->domain, y->domain);
}

void kt_router_freeze(struct kt_router *r)
{
    kt_assert(r != NULL);
    kt_assert(!r->frozen);
    for (int s = 0; s < KT_HOOK_STAGES; s++) {
        if (r->hooks[s].n > 1)
            qsort(r->hooks[s].v, r->hooks[s].n, sizeof(struct hook), hook_cmp);
    }
    if (r->exact.n > 1)
        qsort(r->exact.v, r->exact.n, sizeof(struct route), route_cmp);
    if (r->wild.n > 1)
        qsort(r->wild.v, r->wild.n, sizeof(struct route), route_cmp);
    r->frozen = true;
}

static bool hook_matches(const struct hook *h, unsigned kind, unsigned type,
                         const struct kt_stanza *st)
{
    if (h->kinds && !(h->kinds & kind))
        return false;
    if (h->types && !(h->types & type))
        return false;
    if (h->ns) {
        const char *ns = kt_stanza_ns(st);
        if (!ns || strcmp(ns, h->ns) != 0)
            return false;
    }
    if (h->name) {
        const char *name = kt_stanza_payload_name(st);
        if (!name || strcmp(name, h->name) != 0)
            return false;
    }
    return true;
}

enum kt_verdict kt_router_run_hooks(struct kt_router *r, enum kt_hook_stage stage,
                                    struct kt_stanza *st)
{
    kt_assert(r->frozen);
    kt_assert((unsigned)stage < KT_HOOK_STAGES);
    const struct hook_stage *hs = &r->hooks[stage];
    unsigned kind = kt_stanza_kind(st), type = kt_stanza_type(st);
    for (size_t i = 0; i < hs->n; i++) {
        const struct hook *h = &hs->v[i];
        if (hook_matches(h, kind, type, st) && h->fn(st, h->data) == KT_HANDLED)
            return KT_HANDLED;
    }
    return KT_PASS;
}

static const struct route *route_find(const struct route_vec *rv, const char *domain)
{
    if (rv->n == 0)
        return NULL;
    struct route key = {.domain = (char *)domain};
    return bsearch(&key, rv->v, rv->n, sizeof(struct route), route_cmp);
}

static const char *stanza_domain(const struct kt_stanza *st)
{
    const struct kt_jid *j = kt_stanza_to(st);
    if (!j)
        j = kt_stanza_from(st);
    return j ? j->domain : NULL;
}

static void drop(struct kt_router *r, const struct kt_stanza *st, const char *why)
{
    atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
    kt_log(KT_LOG_DEBUG, "router: dropped <%s/> (to %s, from %s): %s", kt_stanza_name(st),
           kt_stanza_to(st) ? kt_stanza_to(st)->full : "-",
           kt_stanza_from(st) ? kt_stanza_from(st)->full : "-", why);
}

/* Tries one route. *local_done makes the LOCAL hooks run at most once per
 * dispatch, even if several LOCAL routes pass the stanza along. */
static enum kt_verdict route_try(struct kt_router *r, const struct route *rt, struct kt_stanza *st,
                                 bool *local_done)
{
    if ((rt->flags & KT_ROUTE_LOCAL) && !*local_done) {
        *local_done = true;
        if (kt_router_run_hooks(r, KT_HOOK_LOCAL, st) == KT_HANDLED)
            return KT_HANDLED;
    }
    if (rt->deliver)
        return rt->deliver(st, rt->data);
    return KT_PASS;
}

/* Offers st to every route matching domain, most specific first. Sets
 * *matched_r if at least one route matched. */
static enum kt_verdict route_stanza(struct kt_router *r, struct kt_stanza *st, const char *domain,
                                    bool *matched_r)
{
    bool local_done = false;
    const struct route *rt;

    *matched_r = false;
    if ((rt = route_find(&r->exact, domain))) {
        *matched_r = true;
        if (route_try(r, rt, st, &local_done) == KT_HANDLED)
            return KT_HANDLED;
    }
    for (const char *p = strchr(domain, '.'); p; p = strchr(p + 1, '.')) {
        if ((rt = route_find(&r->wild, p + 1))) {
            *matched_r = true;
            if (route_try(r, rt, st, &local_done) == KT_HANDLED)
                return KT_HANDLED;
        }
    }
    if (r->has_def) {
        *matched_r = true;
        if (route_try(r, &r->def, st, &local_done) == KT_HANDLED)
            return KT_HANDLED;
    }
    return KT_PASS;
}

/* Errors are never answered (loops), nor are non-stanza elements. */
static bool bounceable(const struct kt_stanza *st)
{
    return kt_stanza_kind(st) != KT_KIND_OTHER && kt_stanza_type(st) != KT_TYPE_ERROR;
}

/* trusted: st is a bounce built here. Its classification fault can only be
 * inherited from the stanza it answers (an iq without id gives an error
 * without id), and the sender should still get it. */
static void dispatch(struct kt_router *r, struct kt_stanza *st, bool trusted)
{
    kt_assert(r != NULL && st != NULL);
    kt_assert(r->frozen);
    atomic_fetch_add_explicit(&r->dispatched, 1, memory_order_relaxed);

    /* A stanza that failed classification cannot be routed reliably (its
     * to/from may be missing). A faulty error stanza is dropped rather than
     * routed on a guess. */
    enum kt_stanza_err fault = kt_stanza_fault(st);
    if (fault != KT_SE_NONE && !trusted) {
        if (bounceable(st))
            kt_router_bounce(r, st, fault, NULL);
        else
            drop(r, st, "malformed, not bounceable");
        return;
    }

    if (kt_router_run_hooks(r, KT_HOOK_IN, st) == KT_HANDLED)
        return;

    const char *jd = stanza_domain(st);
    if (!jd) {
        /* No from either: there is nobody to bounce to. */
        drop(r, st, "no address to route on");
        return;
    }
    /* A copy: a handler holding the only reference may rewrite to/from
     * (kt_stanza_set_to) and still pass the stanza on, which would free the
     * JID under our feet. JID parts are bounded, so the stack will do. */
    char domain[KT_JID_PART_MAX + 1];
    size_t dlen = strlen(jd);
    kt_assert(dlen <= KT_JID_PART_MAX);
    memcpy(domain, jd, dlen + 1);

    bool matched;
    if (route_stanza(r, st, domain, &matched) == KT_HANDLED)
        return;

    unsigned kind = kt_stanza_kind(st), type = kt_stanza_type(st);
    if (bounceable(st) &&
        (kind == KT_KIND_MESSAGE || (kind == KT_KIND_IQ && (type & (KT_TYPE_GET | KT_TYPE_SET))))) {
        kt_router_bounce(r, st, matched ? KT_SE_SERVICE_UNAVAILABLE : KT_SE_REMOTE_SERVER_NOT_FOUND,
                         NULL);
        return;
    }
    /* Presence, iq result/error, errors: RFC 6120 §8.3.1 / RFC 6121 allow a
     * silent drop, and answering them risks loops. */
    drop(r, st, matched ? "not handled" : "no route");
}

void kt_router_dispatch(struct kt_router *r, struct kt_stanza *st)
{
    dispatch(r, st, false);
}

void kt_router_bounce(struct kt_router *r, const struct kt_stanza *st, enum kt_stanza_err err,
                      const char *text)
{
    kt_assert(r != NULL && st != NULL);
    if (!bounceable(st))
        return;
    /* The reply goes to the original sender; without one it has nowhere to go. */
    if (!kt_stanza_from(st)) {
        drop(r, st, "cannot bounce without from");
        return;
    }
    if (bounce_depth >= BOUNCE_DEPTH_MAX) {
        kt_log(KT_LOG_WARN, "router: bounce depth limit reached, dropping <%s/>",
               kt_stanza_name(st));
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return;
    }
    struct kt_stanza *reply = kt_stanza_error_reply(st, err, text);
    if (!reply)
        return;
    atomic_fetch_add_explicit(&r->bounced, 1, memory_order_relaxed);
    kt_log(KT_LOG_DEBUG, "router: bouncing <%s/> to %s: %s", kt_stanza_name(st),
           kt_stanza_from(st)->full, kt_stanza_err_name(err));
    bounce_depth++;
    dispatch(r, reply, true);
    bounce_depth--;
    kt_stanza_unref(&reply);
}

void kt_router_stats(const struct kt_router *r, struct kt_router_stats *out)
{
    /* Counters only feed status output: relaxed loads are enough. The casts
     * drop const because C11 declares atomic_load_explicit on non-const. */
    struct kt_router *m = (struct kt_router *)r;
    out->dispatched = atomic_load_explicit(&m->dispatched, memory_order_relaxed);
    out->bounced = atomic_load_explicit(&m->bounced, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&m->dropped, memory_order_relaxed);
}
