/* push@host: push registrations and wake-ups (kontalk-protocol.md §2.8, §7).
 *
 * Registrations. A local user sends, to push@host (or push@network),
 *   <iq type='set'><register xmlns='http://kontalk.org/extensions/presence#push'
 *       provider='fcm'>REGID</register></iq>
 * which stores or replaces its (provider, reg id) in the `push` table, or
 * <unregister provider='fcm'/>, which deletes it. Only users of this node
 * may register (anyone else: forbidden); a missing provider, an empty id or
 * one with characters other than visible ASCII is bad-request; an id longer
 * than sm.push.reg_id_max is not-acceptable; a provider this node does not
 * run is item-not-found. "gcm", the name the Kontalk clients use, means fcm
 * (FCM accepts the old GCM ids). The work runs on the user's queue.
 *
 * Providers (struct sm_push_provider): "fcm" posts to sm.push.url
 * (push_http.c), "xmpp" publishes to the XEP-0357 app server
 * sm.push.app_server (push_xmpp.c). The node advertises the feature
 * http://kontalk.org/extensions/presence#push only when at least one is
 * configured; disco#items of that node (on the host or on push@) lists one
 * item per provider.
 *
 * Wake-ups. sm_push_wake() is called when a message worth a wake-up (chat
 * or normal, with a body or a receipt request) was stored offline
 * (offline.c) or went only to sessions that are inactive or idle
 * (delivery.c, sm_push_delivered). It never blocks: at most one wake-up per
 * user per sm.push.interval (a fixed table of slots keyed by a hash of the
 * localpart: memory stays bounded, a collision only lets a wake-up through),
 * then a job on the push queue reads the user's registrations and calls
 * each provider. The push queue runs one job at a time, so a slow provider
 * holds at most one worker, and at most sm.push.queue_max jobs wait (more
 * are dropped with a warning: the messages themselves are stored, only the
 * wake-up is lost). A wake-up carries no content and no sender. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PUSH "http://kontalk.org/extensions/presence#push"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_RECEIPTS "urn:xmpp:receipts"
#define RATE_SLOTS 4096 /* power of two */
#define MAX_PROVIDERS 2

const struct kt_setting sm_push_settings[] = {
    KT_SET_STR("url", struct sm_conf, push.url, "",
               "HTTP push endpoint (FCM v1 shape), http:// or https://; \"\" = off"),
    KT_SET_STR("auth", struct sm_conf, push.auth, "", "Authorization header sent to url"),
    KT_SET_STR("ca_file", struct sm_conf, push.ca_file, "",
               "CA certificates (PEM) that verify an https url; \"\" = the system's"),
    KT_SET_STR("app_server", struct sm_conf, push.app_server, "",
               "XEP-0357 app server JID; \"\" = off"),
    KT_SET_INT("idle", struct sm_conf, push.idle, 30, 0, 86400,
               "seconds a session may idle before messages to it also push (0 = never)"),
    KT_SET_INT("timeout", struct sm_conf, push.timeout, 10, 1, 300,
               "seconds one HTTP push request may take"),
    KT_SET_INT("retries", struct sm_conf, push.retries, 3, 0, 10,
               "HTTP attempts after a failed one (server error or no answer)"),
    KT_SET_INT("interval", struct sm_conf, push.interval, 5, 0, 3600,
               "seconds between two wake-ups of one user (later triggers are dropped)"),
    KT_SET_INT("reg_id_max", struct sm_conf, push.reg_id_max, 1024, 16, 4096,
               "bytes of one push registration id"),
    KT_SET_INT("queue_max", struct sm_conf, push.queue_max, 1000, 1, 1000000,
               "wake-ups waiting for a worker (more are dropped with a warning)"),
    KT_SET_END,
};

struct rate_slot {
    uint64_t key; /* hash of the localpart, never 0; 0 = free */
    uint64_t at_ms;
};

struct sm_push {
    struct sm_push_provider providers[MAX_PROVIDERS];
    unsigned nproviders;
    struct kt_jobq *q; /* wake-ups: one at a time */
    atomic_bool stopping;
    atomic_uint pending;
    pthread_mutex_t lock; /* rate */
    struct rate_slot rate[RATE_SLOTS];
};

static const struct sm_push_provider *provider_find(const struct sm_push *push, const char *name)
{
    for (unsigned i = 0; push && i < push->nproviders; i++) {
        if (strcmp(push->providers[i].name, name) == 0)
            return &push->providers[i];
    }
    return NULL;
}

/* The stored name of a provider the client names. */
static const char *provider_canonical(const char *name)
{
    return strcmp(name, "gcm") == 0 ? "fcm" : name;
}

/* --- registrations --- */

struct reg_job {
    struct sm *sm;
    struct kt_stanza *st; /* the request (our reference) */
    char *local, *provider, *reg_id; /* reg_id NULL: unregister */
    enum kt_stanza_err result;
};

static void reg_run(struct kt_db *db, void *data)
{
    struct reg_job *j = data;
    int rc;
    if (j->reg_id) {
        struct kt_db_param p[] = {KT_DB_P_STR(j->local), KT_DB_P_STR(j->provider),
                                  KT_DB_P_STR(j->reg_id)};
        rc = kt_db_exec(db,
                        "INSERT INTO push (localpart, provider, reg_id, updated) "
                        "VALUES (?, ?, ?, NOW()) ON DUPLICATE KEY UPDATE "
                        "reg_id = VALUES(reg_id), updated = VALUES(updated)",
                        p, KT_ARRAY_SIZE(p), NULL, NULL);
    } else {
        struct kt_db_param p[] = {KT_DB_P_STR(j->local), KT_DB_P_STR(j->provider)};
        rc = kt_db_exec(db, "DELETE FROM push WHERE localpart = ? AND provider = ?", p,
                        KT_ARRAY_SIZE(p), NULL, NULL);
    }
    if (rc == 0) {
        j->result = KT_SE_NONE;
    } else if (kt_db_errno(db) == 1452) {
        j->result = KT_SE_FORBIDDEN; /* the account is gone (foreign key) */
    } else {
        kt_log(KT_LOG_ERROR, "sm: push registration of %s: %s", j->local, kt_db_error(db));
        j->result = KT_SE_INTERNAL_SERVER_ERROR;
    }
}

static void reg_done(void *data)
{
    struct reg_job *j = data;
    if (j->result == KT_SE_NONE) {
        struct kt_stanza *reply = kt_stanza_iq_result(j->st);
        sm_send(j->sm, reply);
        kt_stanza_unref(&reply);
        kt_log(KT_LOG_DEBUG, "sm: %s %s push (%s)", j->local,
               j->reg_id ? "registered for" : "unregistered from", j->provider);
    } else {
        kt_router_bounce(j->sm->core->router, j->st, j->result, NULL);
    }
    kt_stanza_unref(&j->st);
    free(j->local);
    free(j->provider);
    free(j->reg_id);
    free(j);
}

/* The id with surrounding white space removed (caller frees), or NULL with
 * the error to answer in *err_r. */
static char *reg_id_of(const struct sm *sm, const struct kt_xml *el, enum kt_stanza_err *err_r,
                       const char **text_r)
{
    char *text = kt_xml_text(el);
    char *start = text, *end = text + strlen(text);
    while (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n')
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' ||
                           end[-1] == '\n'))
        end--;
    size_t len = (size_t)(end - start);
    *err_r = KT_SE_BAD_REQUEST;
    *text_r = "the registration id is missing";
    if (len == 0)
        goto fail;
    *text_r = "the registration id has characters other than visible ASCII";
    for (const char *p = start; p < end; p++) {
        if (*p < 0x21 || *p > 0x7e)
            goto fail;
    }
    if (len > (unsigned long long)sm->conf->push.reg_id_max) {
        *err_r = KT_SE_NOT_ACCEPTABLE;
        *text_r = "the registration id is too long";
        goto fail;
    }
    char *id = kt_strndup(start, len);
    free(text);
    return id;
fail:
    free(text);
    return NULL;
}

static void registration_in(struct sm *sm, struct kt_stanza *st, const struct kt_xml *el)
{
    bool reg = strcmp(el->name, "register") == 0;
    const struct kt_jid *from = kt_stanza_from(st);
    const char *provider = kt_xml_attr(el, "provider");
    if (kt_stanza_type(st) != KT_TYPE_SET) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, "registrations are iq set");
        return;
    }
    if (!from || !from->local || strcmp(from->domain, sm->core->network) != 0) {
        kt_router_bounce(sm->core->router, st, KT_SE_FORBIDDEN,
                         "only users of this server register for push");
        return;
    }
    if (!provider || !*provider) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, "the provider is missing");
        return;
    }
    provider = provider_canonical(provider);
    char *reg_id = NULL;
    if (reg) {
        enum kt_stanza_err err;
        const char *text;
        reg_id = reg_id_of(sm, el, &err, &text);
        if (!reg_id) {
            kt_router_bounce(sm->core->router, st, err, text);
            return;
        }
        if (!provider_find(sm->push, provider)) {
            free(reg_id);
            kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND,
                             "no such push provider here");
            return;
        }
    }
    struct reg_job *j = kt_new(struct reg_job);
    j->sm = sm;
    j->st = kt_stanza_ref(st);
    j->local = kt_strdup(from->local);
    j->provider = kt_strdup(provider);
    j->reg_id = reg_id;
    kt_job_submit(sm->core->workers, sm_user_queue(sm, j->local), reg_run, reg_done, j);
}

/* --- service discovery --- */

/* disco#items of the node NS_PUSH: the providers this node runs. */
static void provider_items(struct sm *sm, struct kt_stanza *st)
{
    char jid[1100];
    snprintf(jid, sizeof(jid), "push@%s", sm->core->host);
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_DISCO_ITEMS);
    kt_xml_set_attr(q, "node", NS_PUSH);
    for (unsigned i = 0; i < sm->push->nproviders; i++) {
        struct kt_xml *item = kt_xml_add_child(q, "item", NS_DISCO_ITEMS);
        kt_xml_set_attr(item, "jid", jid);
        kt_xml_set_attr(item, "node", sm->push->providers[i].name);
        kt_xml_set_attr(item, "name", sm->push->providers[i].label);
    }
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
}

static bool is_provider_items(const struct sm *sm, const struct kt_stanza *st)
{
    const char *ns = kt_stanza_ns(st);
    const char *node = kt_xml_attr(kt_xml_first_element(kt_stanza_xml(st)), "node");
    return sm->push->nproviders && kt_stanza_type(st) == KT_TYPE_GET && ns &&
           strcmp(ns, NS_DISCO_ITEMS) == 0 && node && strcmp(node, NS_PUSH) == 0;
}

/* Runs before disco.c's handler, which answers every other node of the
 * server with item-not-found. */
static enum kt_verdict node_items(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    if (!kt_stanza_from(st) || !sm_to_server(sm, st) || !is_provider_items(sm, st))
        return KT_PASS;
    provider_items(sm, st);
    return KT_HANDLED;
}

static enum kt_verdict push_in(struct sm *sm, struct kt_stanza *st, void *data)
{
    (void)data;
    if (kt_stanza_kind(st) != KT_KIND_IQ)
        return KT_PASS;
    if (kt_stanza_type(st) & (KT_TYPE_RESULT | KT_TYPE_ERROR))
        return KT_HANDLED; /* we send no requests from push@ */
    const struct kt_xml *el = kt_xml_first_element(kt_stanza_xml(st));
    const char *ns = kt_stanza_ns(st);
    if (el && ns && strcmp(ns, NS_PUSH) == 0 &&
        (strcmp(el->name, "register") == 0 || strcmp(el->name, "unregister") == 0)) {
        registration_in(sm, st, el);
        return KT_HANDLED;
    }
    if (is_provider_items(sm, st)) {
        provider_items(sm, st);
        return KT_HANDLED;
    }
    /* named.c answers disco without a node; no other node exists here. */
    if (el && ns && kt_xml_attr(el, "node") &&
        (strcmp(ns, NS_DISCO_INFO) == 0 || strcmp(ns, NS_DISCO_ITEMS) == 0)) {
        kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND, NULL);
        return KT_HANDLED;
    }
    return KT_PASS;
}

/* --- wake-ups --- */

struct wake_job {
    struct sm *sm;
    char *local;
};

static void wake_run(struct kt_db *db, void *data)
{
    struct wake_job *j = data;
    struct sm_push *push = j->sm->push;
    struct kt_db_result *rows = NULL;
    struct kt_db_param p = KT_DB_P_STR(j->local);
    if (atomic_load(&push->stopping))
        goto out;
    if (kt_db_query(db, "SELECT provider, reg_id FROM push WHERE localpart = ?", &p, 1, &rows) <
        0) {
        kt_log(KT_LOG_ERROR, "sm: reading the push registrations of %s: %s", j->local,
               kt_db_error(db));
        goto out;
    }
    for (unsigned i = 0; i < rows->nrows && !atomic_load(&push->stopping); i++) {
        const char *name = kt_db_value(rows, i, 0), *reg_id = kt_db_value(rows, i, 1);
        const struct sm_push_provider *pv = provider_find(push, name);
        if (!pv || !reg_id)
            continue; /* a provider no longer configured */
        enum sm_push_result r = pv->wake(pv->state, reg_id);
        if (r == SM_PUSH_SENT) {
            kt_log(KT_LOG_DEBUG, "sm: push wake-up of %s sent (%s)", j->local, name);
        } else if (r == SM_PUSH_GONE) {
            kt_log(KT_LOG_INFO, "sm: the %s push registration of %s is no longer valid: deleted",
                   name, j->local);
            struct kt_db_param d[] = {KT_DB_P_STR(j->local), KT_DB_P_STR(name),
                                      KT_DB_P_STR(reg_id)};
            if (kt_db_exec(db,
                           "DELETE FROM push WHERE localpart = ? AND provider = ? AND reg_id = ?",
                           d, KT_ARRAY_SIZE(d), NULL, NULL) < 0)
                kt_log(KT_LOG_ERROR, "sm: deleting a push registration: %s", kt_db_error(db));
        }
    }
out:
    kt_db_result_free(&rows);
    atomic_fetch_sub(&push->pending, 1);
    free(j->local);
    free(j);
}

static uint64_t hash64(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h | 1;
}

/* Whether local may be woken up now (and records it if so). */
static bool rate_allows(struct sm_push *push, long long interval, const char *local)
{
    if (interval <= 0)
        return true;
    uint64_t key = hash64(local), now = kt_now_ms();
    struct rate_slot *slot = &push->rate[(key >> 1) & (RATE_SLOTS - 1)];
    bool allowed;
    pthread_mutex_lock(&push->lock);
    allowed = slot->key != key || now - slot->at_ms >= (uint64_t)interval * 1000;
    if (allowed) {
        slot->key = key;
        slot->at_ms = now;
    }
    pthread_mutex_unlock(&push->lock);
    return allowed;
}

static bool worth_waking(const struct kt_stanza *st)
{
    if (kt_stanza_kind(st) != KT_KIND_MESSAGE ||
        !(kt_stanza_type(st) & (KT_TYPE_CHAT | KT_TYPE_NORMAL)))
        return false;
    const struct kt_xml *root = kt_stanza_xml(st);
    return kt_xml_child(root, "body", KT_NS_CLIENT) || kt_xml_child(root, "body", KT_NS_SERVER) ||
           kt_xml_child(root, "request", NS_RECEIPTS);
}

static void wake(struct sm *sm, const char *local)
{
    struct sm_push *push = sm->push;
    if (!rate_allows(push, sm->conf->push.interval, local))
        return;
    if (atomic_fetch_add(&push->pending, 1) >= (unsigned long long)sm->conf->push.queue_max) {
        atomic_fetch_sub(&push->pending, 1);
        kt_log(KT_LOG_WARN, "sm: %llu push wake-ups already wait: the one of %s is dropped",
               sm->conf->push.queue_max, local);
        return;
    }
    struct wake_job *j = kt_new(struct wake_job);
    j->sm = sm;
    j->local = kt_strdup(local);
    kt_job_submit(sm->core->workers, push->q, wake_run, NULL, j);
}

static bool active(const struct sm *sm)
{
    return sm->push && sm->push->nproviders && !atomic_load(&sm->push->stopping);
}

void sm_push_wake(struct sm *sm, const struct kt_jid *user, const struct kt_stanza *st)
{
    if (active(sm) && user && user->local && worth_waking(st))
        wake(sm, user->local);
}

void sm_push_delivered(struct sm *sm, const struct kt_jid *user, struct kt_session *const *s,
                       unsigned n, const struct kt_stanza *st)
{
    if (!active(sm) || !user || !user->local || n == 0 || !worth_waking(st))
        return;
    uint64_t idle_ms = (uint64_t)sm->conf->push.idle * 1000;
    for (unsigned i = 0; i < n; i++) {
        if (!kt_session_inactive(s[i]) && (idle_ms == 0 || kt_session_idle_ms(s[i]) < idle_ms))
            return; /* someone is looking at this one */
    }
    wake(sm, user->local);
}

/* --- lifecycle --- */

int sm_push_init(struct sm *sm)
{
    static const char *const features[] = {NS_PUSH, NULL};
    static const struct sm_service service = {
        .name = "push",
        .category = "component",
        .type = "generic",
        .label = "Push notifications",
        .features = features,
        .fn = push_in,
    };
    static const struct kt_match items = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET, .ns = NS_DISCO_ITEMS, .name = "query"};
    struct sm_push *push = kt_new(struct sm_push);
    sm->push = push;
    pthread_mutex_init(&push->lock, NULL);
    atomic_init(&push->stopping, false);
    atomic_init(&push->pending, 0);
    push->q = kt_jobq_new(sm->core->workers);
    if (*sm->conf->push.url) {
        if (sm_push_http_new(sm, &push->stopping, &push->providers[push->nproviders]) < 0)
            return -1;
        push->nproviders++;
    }
    if (*sm->conf->push.app_server) {
        if (sm_push_xmpp_new(sm, &push->providers[push->nproviders]) < 0)
            return -1;
        push->nproviders++;
    }
    sm_service_add(sm, &service);
    if (push->nproviders)
        sm_feature_add(sm, NS_PUSH);
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &items, 10, node_items, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the push disco handler");
        return -1;
    }
    return 0;
}

void sm_push_start(struct sm *sm)
{
    (void)sm;
}

void sm_push_stop(struct sm *sm)
{
    if (sm->push)
        atomic_store(&sm->push->stopping, true); /* queued wake-ups end at once */
}

void sm_push_free(struct sm *sm)
{
    struct sm_push *push = sm->push;
    if (!push)
        return;
    kt_jobq_free(&push->q);
    for (unsigned i = 0; i < push->nproviders; i++) {
        if (push->providers[i].free)
            push->providers[i].free(push->providers[i].state);
    }
    pthread_mutex_destroy(&push->lock);
    free(push);
    sm->push = NULL;
}
