/* vcard-temp (XEP-0054): each account's vCard, stored in the `vcards` table.
 *
 * Requests: an iq with <vCard xmlns='vcard-temp'/> either without 'to' (the
 * sender's own vCard) or to the bare JID of an account (localpart@network).
 * Anything else (the server's domain, full JIDs, remote users) falls
 * through to other handlers.
 *   - get: the vCard of that account; vCards are public. An account that
 *     has none gets an empty <vCard/> (XEP-0054 §3.1 allows it); an account
 *     that does not exist gets service-unavailable, as RFC 6121 §8.5.1 asks
 *     for an iq to a nonexistent local user.
 *   - set: only by the owner (no 'to' or the sender's own bare JID), else
 *     forbidden. The element is stored as written by kt_xml_serialize
 *     (with its xmlns, self-contained), at most sm_conf.vcard_max bytes in
 *     that form, else not-acceptable with a text giving the limit. Setting an
 *     empty <vCard/> stores it: a later get returns it empty.
 *
 * Storage format and read back: the stored bytes are XML we wrote, parsed
 * again on the worker with kt_xmlstream behind a synthetic stream header,
 * so the reply is an ordinary stanza tree (no raw bytes spliced into the
 * output) and a stored vCard that is somehow broken is an error, not
 * garbage on a client's stream.
 *
 * Threads: the hook runs on an I/O thread and only checks and serialises;
 * the query runs on a worker (kt_job_submit), and the reply is built and
 * sent from the job's done() back on the submitting I/O thread. The job
 * keeps a reference to the request. Jobs go through the owner's user queue
 * (sm_user_queue), so a set followed by a get sees the new vCard. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/buf.h>
#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/xmlstream.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_VCARD "vcard-temp"

/* A stream header for re-parsing a stored vCard as a depth-2 element. */
#define PARSE_HEADER                                                                               \
    "<stream:stream xmlns='" KT_NS_CLIENT "' xmlns:stream='http://etherx.jabber.org/streams'>"

struct vcard_job {
    struct sm *sm;
    struct kt_stanza *st; /* the request (our reference) */
    char *owner;          /* localpart whose vCard is read or written */
    bool set;
    char *data; /* set: the serialised vCard */
    size_t len;
    /* results */
    bool failed;          /* database or parse error */
    bool found;           /* get: the account exists */
    struct kt_xml *vcard; /* get: the stored vCard, NULL if none */
};

/* --- worker side --- */

struct parse_ctx {
    struct kt_xml *el;
    bool error;
};

static void parsed_element(void *data, struct kt_xml *el)
{
    struct parse_ctx *ctx = data;
    if (ctx->el || strcmp(el->name, "vCard") != 0 || !el->ns || strcmp(el->ns, NS_VCARD) != 0) {
        ctx->error = true;
        kt_xml_free(&el);
        return;
    }
    ctx->el = el;
}

static void parse_error(void *data, enum kt_stream_err err, const char *text)
{
    (void)err;
    (void)text;
    struct parse_ctx *ctx = data;
    ctx->error = true;
}

/* The stored bytes back as a tree, or NULL if they are not one vCard. The
 * limits only need to admit what a client stream could have carried. */
static struct kt_xml *parse_vcard(const char *data, size_t len)
{
    const struct kt_xmlstream_limits limits = {
        .max_stanza_bytes = len + 1,
        .max_depth = 1024,
        .max_attrs = 4096,
        .max_children = 1000000,
    };
    const struct kt_xmlstream_callbacks cb = {.element = parsed_element, .error = parse_error};
    struct parse_ctx ctx = {0};
    struct kt_xmlstream *xs = kt_xmlstream_new(&limits, &cb, &ctx);
    if (kt_xmlstream_feed(xs, PARSE_HEADER, strlen(PARSE_HEADER)) == 0)
        kt_xmlstream_feed(xs, data, len);
    kt_xmlstream_free(&xs);
    if (ctx.error || !ctx.el) {
        kt_xml_free(&ctx.el);
        return NULL;
    }
    return ctx.el;
}

static void vcard_get(struct kt_db *db, struct vcard_job *job)
{
    /* The join tells "no such account" from "no vCard". */
    static const char sql[] = "SELECT v.vcard FROM users u LEFT JOIN vcards v "
                              "ON v.localpart = u.localpart WHERE u.localpart = ?";
    struct kt_db_param p = KT_DB_P_STR(job->owner);
    struct kt_db_result *res = NULL;
    if (kt_db_query(db, sql, &p, 1, &res) < 0) {
        kt_log(KT_LOG_ERROR, "sm: reading the vCard of %s: %s", job->owner, kt_db_error(db));
        job->failed = true;
        return;
    }
    job->found = res->nrows > 0;
    const char *stored = job->found ? kt_db_value(res, 0, 0) : NULL;
    if (stored) {
        job->vcard = parse_vcard(stored, res->lens[0]);
        if (!job->vcard) {
            kt_log(KT_LOG_ERROR, "sm: the stored vCard of %s is not a vCard element", job->owner);
            job->failed = true;
        }
    }
    kt_db_result_free(&res);
}

static void vcard_set(struct kt_db *db, struct vcard_job *job)
{
    static const char sql[] = "INSERT INTO vcards (localpart, vcard, updated) VALUES (?, ?, NOW()) "
                              "ON DUPLICATE KEY UPDATE vcard = VALUES(vcard), "
                              "updated = VALUES(updated)";
    struct kt_db_param p[2] = {KT_DB_P_STR(job->owner), KT_DB_P_BLOB(job->data, job->len)};
    if (kt_db_exec(db, sql, p, 2, NULL, NULL) < 0) {
        kt_log(KT_LOG_ERROR, "sm: storing the vCard of %s: %s", job->owner, kt_db_error(db));
        job->failed = true;
    }
}

static void vcard_run(struct kt_db *db, void *data)
{
    struct vcard_job *job = data;
    if (job->set)
        vcard_set(db, job);
    else
        vcard_get(db, job);
}

/* --- I/O thread side --- */

static void vcard_done(void *data)
{
    struct vcard_job *job = data;
    struct sm *sm = job->sm;
    if (job->failed) {
        kt_router_bounce(sm->core->router, job->st, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    } else if (!job->set && !job->found) {
        kt_router_bounce(sm->core->router, job->st, KT_SE_SERVICE_UNAVAILABLE, NULL);
    } else {
        struct kt_stanza *reply = kt_stanza_iq_result(job->st);
        if (!job->set) {
            struct kt_xml *root = kt_stanza_xml_mut(reply);
            if (job->vcard)
                kt_xml_append(root, job->vcard);
            else
                kt_xml_add_child(root, "vCard", NS_VCARD);
            job->vcard = NULL;
            kt_stanza_touch(reply);
        }
        sm_send(sm, reply);
        kt_stanza_unref(&reply);
    }
    kt_stanza_unref(&job->st);
    kt_xml_free(&job->vcard);
    free(job->owner);
    free(job->data);
    free(job);
}

/* The localpart whose vCard st is about, or NULL if st is not ours: the
 * bare JID in 'to', or without 'to' the sender (from any of its resources).
 * Accounts are localpart@network, never @host. */
static const char *owner_of(const struct sm *sm, const struct kt_jid *to, const struct kt_jid *from)
{
    const struct kt_jid *who = to ? to : from;
    if (!who->local || (to && to->resource) || strcmp(who->domain, sm->core->network) != 0)
        return NULL;
    return who->local;
}

static enum kt_verdict vcard_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st), *from = kt_stanza_from(st);
    if (!from)
        return KT_PASS;
    const char *owner = owner_of(sm, to, from);
    if (!owner)
        return KT_PASS;
    bool set = kt_stanza_type(st) == KT_TYPE_SET;
    struct kt_buf b = {0};
    if (set) {
        bool self = !to || (from->local && kt_jid_bare_equal(to, from));
        if (!self) {
            kt_router_bounce(sm->core->router, st, KT_SE_FORBIDDEN,
                             "only the owner of an account can set its vCard");
            return KT_HANDLED;
        }
        kt_xml_serialize(kt_xml_first_element(kt_stanza_xml(st)), NULL, &b);
        if (b.len > (size_t)sm->conf->vcard_max) {
            char text[128];
            snprintf(text, sizeof(text), "the vCard is %zu bytes; this server stores at most %lld",
                     b.len, sm->conf->vcard_max);
            kt_buf_free(&b);
            kt_router_bounce(sm->core->router, st, KT_SE_NOT_ACCEPTABLE, text);
            return KT_HANDLED;
        }
    }
    struct vcard_job *job = kt_new(struct vcard_job);
    job->sm = sm;
    job->st = kt_stanza_ref(st);
    job->owner = kt_strdup(owner);
    job->set = set;
    if (set)
        job->data = kt_buf_steal(&b, &job->len);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, owner), vcard_run, vcard_done, job);
    return KT_HANDLED;
}

int sm_vcard_init(struct sm *sm)
{
    static const struct kt_match m = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET | KT_TYPE_SET, .ns = NS_VCARD, .name = "vCard"};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &m, 0, vcard_iq, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the vcard-temp handler");
        return -1;
    }
    sm_feature_add(sm, NS_VCARD);
    return 0;
}
