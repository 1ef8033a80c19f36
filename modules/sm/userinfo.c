/* What a user's bare JID answers on the user's behalf: last activity
 * (XEP-0012 §4: seconds since the last logout, 0 while online) and service
 * discovery (XEP-0030: identity account/registered). Both reveal presence
 * information, so they are answered only to the user and to contacts with a
 * 'from' subscription (RFC 6121 §4.2.5 reasoning); others get forbidden.
 * An unknown account gets service-unavailable (RFC 6121 §8.5.1). */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/session.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_LAST "jabber:iq:last"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define MAX_RES 32

struct info_job {
    struct sm *sm;
    struct kt_stanza *st;
    struct kt_jid *owner;
    bool self, exists, allowed, db_error;
    long long idle; /* seconds since last logout, -1 if never */
};

static void info_run(struct kt_db *db, void *data)
{
    struct info_job *j = data;
    struct kt_db_param p[] = {KT_DB_P_STR(kt_stanza_from(j->st)->bare),
                              KT_DB_P_STR(j->owner->local)};
    struct kt_db_result *r = NULL;
    if (kt_db_query(db,
                    "SELECT IFNULL(TIMESTAMPDIFF(SECOND, last_logout, NOW()), -1), "
                    "(SELECT COUNT(*) FROM roster WHERE owner = u.localpart AND contact = ? "
                    "AND (subscription & 2)) FROM users u WHERE localpart = ?",
                    p, 2, &r) < 0) {
        j->db_error = true;
        return;
    }
    if (r->nrows == 1) {
        j->exists = true;
        j->idle = kt_db_int(r, 0, 0);
        j->allowed = j->self || kt_db_int(r, 0, 1) > 0;
    }
    kt_db_result_free(&r);
}

static void info_done(void *data)
{
    struct info_job *j = data;
    struct sm *sm = j->sm;
    enum kt_stanza_err err = KT_SE_NONE;
    if (j->db_error)
        err = KT_SE_INTERNAL_SERVER_ERROR;
    else if (!j->exists)
        err = KT_SE_SERVICE_UNAVAILABLE;
    else if (!j->allowed)
        err = KT_SE_FORBIDDEN;
    if (err) {
        kt_router_bounce(sm->core->router, j->st, err, NULL);
        goto out;
    }
    struct kt_stanza *r = kt_stanza_iq_result(j->st);
    struct kt_xml *root = kt_stanza_xml_mut(r);
    if (strcmp(kt_stanza_ns(j->st), NS_LAST) == 0) {
        struct kt_session *res[MAX_RES];
        unsigned n = sm_users_resources(sm->users, j->owner, true, res, MAX_RES);
        for (unsigned i = 0; i < n; i++)
            kt_session_unref(&res[i]);
        char secs[32];
        snprintf(secs, sizeof(secs), "%lld", n > 0 ? 0 : j->idle < 0 ? 0 : j->idle);
        struct kt_xml *q = kt_xml_add_child(root, "query", NS_LAST);
        kt_xml_set_attr(q, "seconds", secs);
    } else {
        struct kt_xml *q = sm_disco_info_query(r, "account", "registered", NULL);
        sm_disco_feature(q, NS_DISCO_INFO);
        sm_disco_feature(q, NS_LAST);
    }
    kt_stanza_touch(r);
    sm_send(sm, r);
    kt_stanza_unref(&r);
out:
    kt_stanza_unref(&j->st);
    kt_jid_free(&j->owner);
    free(j);
}

static enum kt_verdict info_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st), *from = kt_stanza_from(st);
    if (!to || !to->local || to->resource || strcmp(to->domain, sm->core->network) != 0 || !from)
        return KT_PASS;
    const struct kt_xml *q = kt_xml_first_element(kt_stanza_xml(st));
    if (kt_xml_attr(q, "node")) {
        kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND, NULL);
        return KT_HANDLED;
    }
    struct info_job *j = kt_new(struct info_job);
    j->sm = sm;
    j->st = kt_stanza_ref(st);
    j->owner = kt_jid_to_bare(to);
    j->self = kt_jid_bare_equal(to, from);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, to->local), info_run, info_done, j);
    return KT_HANDLED;
}

/* Last logout: when a user's last available resource goes. */
struct logout_job {
    char *local;
};

static void logout_run(struct kt_db *db, void *data)
{
    struct logout_job *j = data;
    struct kt_db_param p = KT_DB_P_STR(j->local);
    if (kt_db_exec(db, "UPDATE users SET last_logout = NOW() WHERE localpart = ?", &p, 1, NULL,
                   NULL) < 0)
        kt_log(KT_LOG_WARN, "sm: cannot record the last logout of %s", j->local);
    free(j->local);
    free(j);
}

void sm_userinfo_logout(struct sm *sm, const struct kt_jid *user)
{
    struct logout_job *j = kt_new(struct logout_job);
    j->local = kt_strdup(user->local);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, user->local), logout_run, NULL, j);
}

int sm_userinfo_init(struct sm *sm)
{
    static const struct kt_match last = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET, .ns = NS_LAST, .name = "query"};
    static const struct kt_match info = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET, .ns = NS_DISCO_INFO, .name = "query"};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &last, 0, info_iq, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &info, 0, info_iq, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the user info hooks");
        return -1;
    }
    return 0;
}
