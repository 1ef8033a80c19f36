/* probe@host: contact lookup, Kontalk's "roster match" (kontalk-protocol.md
 * §2.5), and the lookup engine behind it (design §7 "Resolver").
 *
 * The service. A client of this node asks which entries of its address
 * book are users of the network:
 *   <iq type='get' to='probe@HOST'><query xmlns='http://kontalk.org/extensions/roster'>
 *     <item jid='LOCAL@DOMAIN'/>...</query></iq>
 * and gets the same query back with the items that name a user, each as
 * the user's real address LOCAL@NETWORK (kontalk-protocol.md §7
 * "Addressing"; the client may write this node's host or the network as
 * DOMAIN). Contract:
 * - Only clients of this node (a live session for 'from') may ask, else
 *   forbidden. Other nodes' probes will be answered once mod_net exists.
 * - iq get only: a set is bad-request (the protocol defines no set).
 *   Results and errors sent to the service are dropped: it sends no
 *   requests of its own yet. Anything else: service-unavailable (named.c).
 * - More than sm.probe_max <item/> elements (skipped ones count too) is
 *   not-acceptable, and nothing is looked up: the client splits its
 *   address book into smaller requests.
 * - An item without 'jid', with a jid that does not parse or has no
 *   localpart is skipped, and so is one whose domain is neither the host
 *   nor the network (not this node's to answer): one odd address-book entry
 *   does not fail the others. A resource is ignored.
 * - Each user found is listed once, in request order. No item, or none
 *   found: an empty query.
 *
 * The engine. sm_probe_lookup() answers "which of these localparts are
 * users of the network, and on which node?". Today it knows this node's
 * accounts (`users`): one SELECT per 256 names, on a worker, padded to a
 * power of two so that few statements get prepared. Registration's
 * duplicate check, itself on a worker, uses sm_probe_local_exists().
 *
 * The extension point for other nodes is struct sm_probe_remote (sm.h): a
 * network part registers one, is asked for the names this node does not
 * have, and answers once through sm_probe_remote_answer() from any thread;
 * the engine waits at most remote->timeout_ms, then answers with what it
 * has and complete = false, dropping the late answer. No part registers
 * one yet, so that path has no caller. What mod_net will add: the
 * registration (through a core slot, since modules do not see sm's
 * symbols), the questions to peers' probe@ and the answers to theirs,
 * a cache of hits and misses, and registration's check of other nodes.
 * mod_net must answer every query it was given before the loops stop,
 * else that query's memory is never freed.
 *
 * Threads: the handler and every step of a lookup run on the I/O thread
 * that received the request, except the SELECTs (worker). A query's state
 * is touched on that thread only; remote answers are posted to it. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROSTER "http://kontalk.org/extensions/roster"
#define CHUNK_MAX 256u /* names of one SELECT */

/* --- the engine --- */

struct sm_probe_query {
    struct sm *sm;
    struct kt_loop *loop; /* the thread of every step below */
    char **locals;        /* sorted, unique */
    bool *found;          /* per local: found here (worker) or by a remote answer */
    unsigned n;
    bool failed;                 /* the SELECT failed */
    struct sm_probe_hit *remote; /* hits other nodes answered (owned strings) */
    unsigned nremote;
    struct kt_timer *timer; /* while waiting for the remote answer */
    bool answered;          /* done has run */
    bool remote_pending;    /* asked a remote, which has not answered yet */
    sm_probe_done_fn done;
    void *data;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_hit(const void *a, const void *b)
{
    return strcmp(((const struct sm_probe_hit *)a)->local, ((const struct sm_probe_hit *)b)->local);
}

/* Index of name in q->locals, or -1. */
static long find_local(const struct sm_probe_query *q, const char *name)
{
    const char *const *p = bsearch(&name, q->locals, q->n, sizeof(*q->locals), cmp_str);
    return p ? (long)(p - (const char *const *)q->locals) : -1;
}

static void hits_free(struct sm_probe_hit *h, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        free((char *)h[i].local);
        free((char *)h[i].node);
    }
    free(h);
}

static void query_free(struct sm_probe_query *q)
{
    for (unsigned i = 0; i < q->n; i++)
        free(q->locals[i]);
    free(q->locals);
    free(q->found);
    hits_free(q->remote, q->nremote);
    free(q);
}

/* Worker: marks the names of one chunk that are rows of `users`. */
static int select_chunk(struct kt_db *db, struct sm_probe_query *q, unsigned start, unsigned len)
{
    unsigned padded = 1;
    while (padded < len)
        padded *= 2;
    char sql[64 + 2 * CHUNK_MAX];
    int off = snprintf(sql, sizeof(sql), "SELECT localpart FROM users WHERE localpart IN (");
    struct kt_db_param params[CHUNK_MAX];
    for (unsigned i = 0; i < padded; i++) {
        /* Padding repeats the chunk's last name: IN ignores repeats. */
        params[i] = KT_DB_P_STR(q->locals[start + (i < len ? i : len - 1)]);
        off += snprintf(sql + off, sizeof(sql) - (size_t)off, i ? ",?" : "?");
    }
    snprintf(sql + off, sizeof(sql) - (size_t)off, ")");
    struct kt_db_result *res = NULL;
    if (kt_db_query(db, sql, params, padded, &res) < 0)
        return -1;
    for (unsigned r = 0; r < res->nrows; r++) {
        /* Matched by the exact bytes: the column's collation pads spaces. */
        long i = find_local(q, kt_db_value(res, r, 0));
        if (i >= 0)
            q->found[i] = true;
    }
    kt_db_result_free(&res);
    return 0;
}

static void lookup_run(struct kt_db *db, void *data)
{
    struct sm_probe_query *q = data;
    for (unsigned start = 0; start < q->n; start += CHUNK_MAX) {
        unsigned len = q->n - start < CHUNK_MAX ? q->n - start : CHUNK_MAX;
        if (select_chunk(db, q, start, len) < 0) {
            kt_log(KT_LOG_ERROR, "sm: probe: looking up users: %s", kt_db_error(db));
            q->failed = true;
            return;
        }
    }
}

static void maybe_free(struct sm_probe_query *q)
{
    if (q->answered && !q->remote_pending)
        query_free(q);
}

/* Calls done with this node's hits and the remote ones. */
static void finish(struct sm_probe_query *q, bool complete)
{
    struct sm_probe_result r = {.failed = q->failed, .complete = complete && !q->failed};
    struct sm_probe_hit *hits = NULL;
    if (!q->failed) {
        hits = kt_calloc(q->n + 1, sizeof(*hits));
        for (unsigned i = 0; i < q->n; i++) {
            if (q->found[i])
                hits[r.n++] = (struct sm_probe_hit){q->locals[i], q->sm->core->host};
        }
        /* Remote hits were checked against the names asked (marked found),
         * so a name appears once. */
        for (unsigned i = 0; i < q->nremote; i++)
            hits[r.n++] = q->remote[i];
        qsort(hits, r.n, sizeof(*hits), cmp_hit);
    }
    r.hits = hits;
    q->answered = true;
    q->done(q->sm, &r, q->data);
    free(hits);
    maybe_free(q);
}

static void remote_timeout(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct sm_probe_query *q = data;
    q->timer = NULL; /* fired */
    kt_log(KT_LOG_INFO, "sm: probe: other nodes did not answer within %u ms",
           q->sm->probe_remote ? q->sm->probe_remote->timeout_ms : 0);
    finish(q, false);
}

static void lookup_done(void *data)
{
    struct sm_probe_query *q = data;
    const struct sm_probe_remote *remote = q->sm->probe_remote;
    if (q->failed || !remote) {
        finish(q, true);
        return;
    }
    const char **misses = kt_calloc(q->n + 1, sizeof(*misses));
    unsigned nmiss = 0;
    for (unsigned i = 0; i < q->n; i++) {
        if (!q->found[i])
            misses[nmiss++] = q->locals[i];
    }
    if (nmiss == 0) {
        free(misses);
        finish(q, true);
        return;
    }
    q->remote_pending = true;
    q->timer = kt_timer_add(q->loop, remote->timeout_ms, remote_timeout, q);
    /* ask may answer at once: the answer is posted, so it runs after this. */
    remote->ask(remote->state, q, misses, nmiss);
    free(misses);
}

void sm_probe_lookup(struct sm *sm, const char *const *locals, unsigned n, sm_probe_done_fn done,
                     void *data)
{
    struct sm_probe_query *q = kt_new(struct sm_probe_query);
    q->sm = sm;
    q->loop = kt_loop_current();
    kt_assert(q->loop); /* done is posted back to it, the timer armed on it */
    q->done = done;
    q->data = data;
    q->locals = kt_calloc(n + 1, sizeof(*q->locals));
    for (unsigned i = 0; i < n; i++)
        q->locals[i] = kt_strdup(locals[i]);
    qsort(q->locals, n, sizeof(*q->locals), cmp_str);
    for (unsigned i = 0; i < n; i++) {
        if (q->n > 0 && strcmp(q->locals[q->n - 1], q->locals[i]) == 0)
            free(q->locals[i]);
        else
            q->locals[q->n++] = q->locals[i];
    }
    q->found = kt_calloc(q->n + 1, sizeof(*q->found));
    kt_job_submit(sm->core->workers, NULL, lookup_run, lookup_done, q);
}

void sm_probe_set_remote(struct sm *sm, const struct sm_probe_remote *remote)
{
    sm->probe_remote = remote;
}

struct remote_answer {
    struct sm_probe_query *q;
    struct sm_probe_hit *hits; /* owned strings */
    unsigned n;
    bool complete;
};

static void remote_answered(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct remote_answer *a = data;
    struct sm_probe_query *q = a->q;
    q->remote_pending = false;
    if (!q->answered) {
        kt_timer_cancel(&q->timer);
        q->remote = kt_calloc(a->n + 1, sizeof(*q->remote));
        for (unsigned i = 0; i < a->n; i++) {
            /* Only names that were asked, once, and not found here. */
            long k = find_local(q, a->hits[i].local);
            if (k < 0 || q->found[k])
                continue;
            q->found[k] = true;
            /* The query's own copy of the name: hits point into locals. */
            q->remote[q->nremote].local = kt_strdup(q->locals[k]);
            q->remote[q->nremote++].node = kt_strdup(a->hits[i].node);
        }
        finish(q, a->complete);
    } else {
        maybe_free(q);
    }
    hits_free(a->hits, a->n);
    free(a);
}

void sm_probe_remote_answer(struct sm_probe_query *q, const struct sm_probe_hit *hits, unsigned n,
                            bool complete)
{
    struct remote_answer *a = kt_new(struct remote_answer);
    a->q = q;
    a->n = n;
    a->complete = complete;
    a->hits = kt_calloc(n + 1, sizeof(*a->hits));
    for (unsigned i = 0; i < n; i++) {
        a->hits[i].local = kt_strdup(hits[i].local);
        a->hits[i].node = kt_strdup(hits[i].node);
    }
    kt_loop_post(q->loop, remote_answered, a);
}

int sm_probe_local_exists(struct kt_db *db, const char *local)
{
    struct kt_db_param p = KT_DB_P_STR(local);
    struct kt_db_result *res = NULL;
    if (kt_db_query(db, "SELECT localpart FROM users WHERE localpart = ?", &p, 1, &res) < 0)
        return -1;
    int found = 0;
    for (unsigned r = 0; r < res->nrows; r++) {
        if (strcmp(kt_db_value(res, r, 0), local) == 0) /* not just equal once padded */
            found = 1;
    }
    kt_db_result_free(&res);
    return found;
}

/* --- the service --- */

struct match {
    struct kt_stanza *st; /* the request (our reference) */
    char **locals;        /* request order, may repeat */
    unsigned n;
};

static void match_free(struct match *m)
{
    for (unsigned i = 0; i < m->n; i++)
        free(m->locals[i]);
    free(m->locals);
    kt_stanza_unref(&m->st);
    free(m);
}

static void match_done(struct sm *sm, const struct sm_probe_result *r, void *data)
{
    struct match *m = data;
    if (r->failed) {
        kt_router_bounce(sm->core->router, m->st, KT_SE_INTERNAL_SERVER_ERROR, NULL);
        match_free(m);
        return;
    }
    struct kt_stanza *reply = kt_stanza_iq_result(m->st);
    struct kt_xml *query = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_ROSTER);
    bool *listed = kt_calloc(r->n + 1, sizeof(*listed));
    for (unsigned i = 0; i < m->n; i++) {
        struct sm_probe_hit key = {.local = m->locals[i]};
        const struct sm_probe_hit *h = bsearch(&key, r->hits, r->n, sizeof(*r->hits), cmp_hit);
        if (!h || listed[h - r->hits])
            continue;
        listed[h - r->hits] = true;
        /* Users are local@network wherever they are homed (protocol §7). */
        struct kt_jid *jid = kt_jid_new(h->local, sm->core->network, NULL);
        if (jid)
            kt_xml_set_attr(kt_xml_add_child(query, "item", NS_ROSTER), "jid", jid->full);
        kt_jid_free(&jid);
    }
    free(listed);
    kt_log(KT_LOG_DEBUG, "sm: probe: %u names asked, %u users found%s", m->n, r->n,
           r->complete ? "" : " (some nodes did not answer)");
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
    match_free(m);
}

/* A live session of this node sent it (c2s stamped 'from'). */
static bool from_own_client(struct sm *sm, const struct kt_jid *from)
{
    if (!from || !from->local || !from->resource || !sm_is_local(sm, from))
        return false;
    struct kt_session *s = kt_sessions_find(sm->core->sessions, from);
    bool ok = s != NULL;
    kt_session_unref(&s);
    return ok;
}

static void match_in(struct sm *sm, struct kt_stanza *st, const struct kt_xml *query)
{
    struct kt_router *router = sm->core->router;
    long long max = sm->conf->probe_max, count = 0;
    for (const struct kt_xml *it = kt_xml_first_element(query); it; it = kt_xml_next_element(it))
        if (strcmp(it->name, "item") == 0 && it->ns && strcmp(it->ns, NS_ROSTER) == 0)
            count++;
    if (count > max) {
        char text[64];
        snprintf(text, sizeof(text), "more than %lld items", max);
        kt_router_bounce(router, st, KT_SE_NOT_ACCEPTABLE, text);
        return;
    }
    struct match *m = kt_new(struct match);
    m->st = kt_stanza_ref(st);
    m->locals = kt_calloc((size_t)count + 1, sizeof(*m->locals));
    for (const struct kt_xml *it = kt_xml_first_element(query); it; it = kt_xml_next_element(it)) {
        if (strcmp(it->name, "item") != 0 || !it->ns || strcmp(it->ns, NS_ROSTER) != 0)
            continue;
        const char *attr = kt_xml_attr(it, "jid");
        struct kt_jid *jid = attr ? kt_jid_parse(attr) : NULL;
        if (jid && jid->local && sm_is_local(sm, jid))
            m->locals[m->n++] = kt_strdup(jid->local);
        kt_jid_free(&jid);
    }
    sm_probe_lookup(sm, (const char *const *)m->locals, m->n, match_done, m);
}

static enum kt_verdict probe_in(struct sm *sm, struct kt_stanza *st, void *data)
{
    (void)data;
    if (kt_stanza_kind(st) != KT_KIND_IQ)
        return KT_PASS;
    enum kt_stanza_type type = kt_stanza_type(st);
    if (type & (KT_TYPE_RESULT | KT_TYPE_ERROR))
        return KT_HANDLED; /* we send no requests: nothing to match, never answered */
    const struct kt_xml *query = kt_xml_first_element(kt_stanza_xml(st));
    const char *ns = kt_stanza_ns(st);
    if (!query || !ns || strcmp(ns, NS_ROSTER) != 0 || strcmp(query->name, "query") != 0)
        return KT_PASS;
    if (!from_own_client(sm, kt_stanza_from(st)))
        kt_router_bounce(sm->core->router, st, KT_SE_FORBIDDEN,
                         "contact lookup is for this server's clients");
    else if (type != KT_TYPE_GET)
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, "roster match is an iq get");
    else
        match_in(sm, st, query);
    return KT_HANDLED;
}

int sm_probe_init(struct sm *sm)
{
    static const char *const features[] = {NS_ROSTER, NULL};
    static const struct sm_service service = {
        .name = "probe",
        .category = "component",
        .type = "generic",
        .label = "Contact lookup",
        .features = features,
        .fn = probe_in,
    };
    sm_service_add(sm, &service);
    return 0;
}
