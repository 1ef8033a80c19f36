/* The router: hooks (who acts on a stanza) and routes (which module owns a
 * domain). Hooks and routes are registered during module init and frozen
 * before the I/O threads start; dispatch then reads them without locks and
 * may be called from any thread.
 *
 * kt_router_dispatch(st):
 *   1. KT_HOOK_IN handlers, by priority (highest first), until one HANDLES.
 *   2. The route for the domain of `to` (or of `from` when `to` is absent):
 *      exact domain, then wildcard "*.example.org" (subdomains only), then
 *      the default "*". A route registered with KT_ROUTE_LOCAL first runs the
 *      KT_HOOK_LOCAL handlers. A deliver function that returns KT_PASS falls
 *      through to the next, less specific route.
 *   3. Nobody handled it: an iq get/set or a message is bounced
 *      (service-unavailable if a route matched, remote-server-not-found if
 *      none did); presence is dropped as RFC 6121 allows; a stanza of type
 *      error is never bounced. A verdict never transfers ownership. */
#ifndef KONTALK_ROUTER_H
#define KONTALK_ROUTER_H

#include "base.h"
#include "stanza.h"

enum kt_verdict { KT_PASS, KT_HANDLED };

enum kt_hook_stage {
    KT_HOOK_IN,    /* every stanza entering the router */
    KT_HOOK_LOCAL, /* stanzas for a domain routed with KT_ROUTE_LOCAL */
    KT_HOOK_OUT,   /* last look before a session writes a stanza (run by the writer) */
    KT_HOOK_STAGES
};

/* 0 / NULL fields match anything. */
struct kt_match {
    unsigned kinds; /* enum kt_stanza_kind bits */
    unsigned types; /* enum kt_stanza_type bits */
    const char *ns; /* payload namespace (kt_stanza_ns) */
    const char *name; /* payload element name */
};

/* Borrows st for the call; keep it with kt_stanza_ref(). */
typedef enum kt_verdict (*kt_stanza_fn)(struct kt_stanza *st, void *data);

enum kt_route_flags {
    KT_ROUTE_LOCAL = 1u << 0, /* run KT_HOOK_LOCAL before deliver */
};

struct kt_router;

KT_API struct kt_router *kt_router_new(void);
KT_API void kt_router_free(struct kt_router **r);

/* Registration, before kt_router_freeze(). Higher priority runs first;
 * equal priorities run in registration order. */
KT_API int kt_hook_add(struct kt_router *r, enum kt_hook_stage stage, const struct kt_match *m,
                       int priority, kt_stanza_fn fn, void *data);
/* domain: "host", "*.host" or "*". One route per pattern (-1 if taken). deliver may be NULL
 * for a KT_ROUTE_LOCAL route whose stanzas are all taken by LOCAL hooks. */
KT_API int kt_route_add(struct kt_router *r, const char *domain, unsigned flags,
                        kt_stanza_fn deliver, void *data);
KT_API void kt_router_freeze(struct kt_router *r);

KT_API void kt_router_dispatch(struct kt_router *r, struct kt_stanza *st);
/* Runs one stage's hooks; returns KT_HANDLED if one handled st. */
KT_API enum kt_verdict kt_router_run_hooks(struct kt_router *r, enum kt_hook_stage stage,
                                           struct kt_stanza *st);
/* Sends the error reply for st through the router (nothing for type=error). */
KT_API void kt_router_bounce(struct kt_router *r, const struct kt_stanza *st,
                             enum kt_stanza_err err, const char *text);

/* Counters for status output. */
struct kt_router_stats {
    unsigned long long dispatched, bounced, dropped;
};
KT_API void kt_router_stats(const struct kt_router *r, struct kt_router_stats *out);

#endif
