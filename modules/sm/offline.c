/* Offline storage (XEP-0160) in MariaDB, with the Kontalk rules of what is
 * stored (kontalk-protocol.md §2.7): a chat or normal message with a <body>,
 * a receipt request or answer (XEP-0184), or a signed payload
 * (jabber:x:signed). Each stored message gets <delay from= stamp=/>
 * (XEP-0203). At most sm.offline_max per user: beyond it the sender gets
 * resource-constraint, never a silent drop; an unknown user gets
 * service-unavailable. Rows expire after sm.offline_expire (hourly purge).
 *
 * Order: all work for one recipient goes through its user queue
 * (sm_user_queue), so messages from one sender are stored
 * and delivered in the order they were sent. Delivery happens on the first
 * available presence of non-negative priority: the rows are loaded, handed
 * to the session, and deleted after the hand-over. If the session ends
 * before writing them, the core routes them again (and they are stored
 * again): nothing is lost, at worst re-stored. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/buf.h>
#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_DELAY "urn:xmpp:delay"
#define NS_RECEIPTS "urn:xmpp:receipts"
#define NS_SIGNED "jabber:x:signed"
#define PURGE_EVERY_MS (3600 * 1000)

bool sm_offline_storable(const struct kt_stanza *st)
{
    if (kt_stanza_kind(st) != KT_KIND_MESSAGE ||
        !(kt_stanza_type(st) & (KT_TYPE_CHAT | KT_TYPE_NORMAL)))
        return false;
    const struct kt_xml *root = kt_stanza_xml(st);
    return kt_xml_child(root, "body", KT_NS_CLIENT) || kt_xml_child(root, "body", KT_NS_SERVER) ||
           kt_xml_child(root, "request", NS_RECEIPTS) ||
           kt_xml_child(root, "received", NS_RECEIPTS) || kt_xml_child(root, "x", NS_SIGNED);
}

/* --- storing --- */

struct store_job {
    struct sm *sm;
    struct kt_stanza *st; /* the original, for a bounce */
    char *local;
    char *wire;
    size_t wire_len;
    enum kt_stanza_err result;
};

static void store_run(struct kt_db *db, void *data)
{
    struct store_job *j = data;
    uint64_t affected = 0;
    struct kt_db_param p[] = {
        KT_DB_P_BLOB(j->wire, j->wire_len),
        KT_DB_P_INT(j->sm->conf->offline_expire),
        KT_DB_P_STR(j->local),
        KT_DB_P_INT(j->sm->conf->offline_max),
    };
    /* One statement: the account must exist and be under its limit. */
    if (kt_db_exec(db,
                   "INSERT INTO offline (owner, stanza, expires) "
                   "SELECT u.localpart, ?, NOW() + INTERVAL ? SECOND FROM users u "
                   "WHERE u.localpart = ? AND "
                   "(SELECT COUNT(*) FROM offline o WHERE o.owner = u.localpart) < ?",
                   p, KT_ARRAY_SIZE(p), &affected, NULL) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot store an offline message: %s", kt_db_error(db));
        j->result = KT_SE_INTERNAL_SERVER_ERROR;
        return;
    }
    if (affected == 1) {
        j->result = KT_SE_NONE;
        return;
    }
    struct kt_db_result *r = NULL;
    if (kt_db_query(db, "SELECT 1 FROM users WHERE localpart = ?", &p[2], 1, &r) < 0)
        j->result = KT_SE_INTERNAL_SERVER_ERROR;
    else
        j->result = r->nrows ? KT_SE_RESOURCE_CONSTRAINT : KT_SE_SERVICE_UNAVAILABLE;
    kt_db_result_free(&r);
}

static void store_done(void *data)
{
    struct store_job *j = data;
    if (j->result == KT_SE_NONE)
        sm_push_wake(j->sm, kt_stanza_to(j->st), j->st); /* committed: wake the device */
    else
        kt_router_bounce(j->sm->core->router, j->st, j->result,
                         j->result == KT_SE_RESOURCE_CONSTRAINT
                             ? "the recipient's offline storage is full"
                             : NULL);
    kt_stanza_unref(&j->st);
    free(j->local);
    free(j->wire);
    free(j);
}

static void utc_stamp(char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void sm_offline_store(struct sm *sm, struct kt_stanza *st)
{
    const struct kt_jid *to = kt_stanza_to(st);
    struct kt_stanza *copy = kt_stanza_copy(st);
    char stamp[32];
    utc_stamp(stamp, sizeof(stamp));
    struct kt_xml *delay = kt_xml_add_child(kt_stanza_xml_mut(copy), "delay", NS_DELAY);
    kt_xml_set_attr(delay, "from", sm->core->network);
    kt_xml_set_attr(delay, "stamp", stamp);
    kt_stanza_touch(copy);
    struct store_job *j = kt_new(struct store_job);
    size_t len;
    const char *wire = kt_stanza_wire(copy, &len);
    j->sm = sm;
    j->st = kt_stanza_ref(st);
    j->local = kt_strdup(to->local);
    j->wire = kt_strndup(wire, len);
    j->wire_len = len;
    kt_stanza_unref(&copy);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, to->local), store_run, store_done, j);
}

/* --- delivering --- */

struct fetch_job {
    struct sm *sm;
    struct kt_session *session;
    char *local;
    struct kt_db_result *rows;
    long long max_id;
};

static void fetch_run(struct kt_db *db, void *data)
{
    struct fetch_job *j = data;
    struct kt_db_param p = KT_DB_P_STR(j->local);
    if (kt_db_query(db,
                    "SELECT id, stanza FROM offline WHERE owner = ? AND expires > NOW() "
                    "ORDER BY id",
                    &p, 1, &j->rows) < 0)
        kt_log(KT_LOG_ERROR, "sm: cannot load offline messages: %s", kt_db_error(db));
}

static void delete_run(struct kt_db *db, void *data)
{
    struct fetch_job *j = data;
    struct kt_db_param p[] = {KT_DB_P_STR(j->local), KT_DB_P_INT(j->max_id)};
    if (kt_db_exec(db, "DELETE FROM offline WHERE owner = ? AND id <= ?", p, 2, NULL, NULL) < 0)
        kt_log(KT_LOG_ERROR, "sm: cannot delete delivered offline messages: %s",
               kt_db_error(db));
}

static void fetch_free(void *data)
{
    struct fetch_job *j = data;
    kt_db_result_free(&j->rows);
    kt_session_unref(&j->session);
    free(j->local);
    free(j);
}

static void fetch_done(void *data)
{
    struct fetch_job *j = data;
    unsigned delivered = 0;
    for (unsigned i = 0; j->rows && i < j->rows->nrows; i++) {
        struct kt_stanza *st = sm_parse_stored(kt_db_value(j->rows, i, 1), j->rows->lens[i * 2 + 1]);
        if (!st) {
            kt_log(KT_LOG_WARN, "sm: unreadable offline message %s for %s dropped",
                   kt_db_value(j->rows, i, 0), j->local);
        } else if (!kt_session_deliver(j->session, st)) {
            kt_stanza_unref(&st);
            break; /* the session ended: the rest stays stored */
        } else {
            kt_stanza_unref(&st);
        }
        j->max_id = kt_db_int(j->rows, i, 0);
        delivered++;
    }
    if (delivered) {
        kt_log(KT_LOG_DEBUG, "sm: %u offline messages to %s", delivered,
               kt_session_jid(j->session)->full);
        kt_db_result_free(&j->rows);
        kt_job_submit(j->sm->core->workers, sm_user_queue(j->sm, j->local), delete_run, fetch_free,
                      j);
        return;
    }
    fetch_free(j);
}

void sm_offline_deliver(struct sm *sm, struct kt_session *s)
{
    if (sm->conf->offline_max == 0)
        return;
    struct fetch_job *j = kt_new(struct fetch_job);
    j->sm = sm;
    j->session = kt_session_ref(s);
    j->local = kt_strdup(kt_session_jid(s)->local);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, j->local), fetch_run, fetch_done, j);
}

/* --- expiry --- */

static void purge_run(struct kt_db *db, void *data)
{
    (void)data;
    uint64_t n = 0;
    if (kt_db_exec(db, "DELETE FROM offline WHERE expires <= NOW()", NULL, 0, &n, NULL) == 0 && n)
        kt_log(KT_LOG_INFO, "sm: %llu expired offline messages deleted", (unsigned long long)n);
}

static void purge_tick(struct kt_loop *loop, void *data)
{
    struct sm *sm = data;
    kt_job_submit(sm->core->workers, NULL, purge_run, NULL, NULL);
    sm->purge_timer = kt_timer_add(loop, PURGE_EVERY_MS, purge_tick, sm);
}

static void purge_arm(struct kt_loop *loop, void *data)
{
    purge_tick(loop, data);
}

static void purge_disarm(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct sm *sm = data;
    kt_timer_cancel(&sm->purge_timer);
}

void sm_offline_start(struct sm *sm)
{
    kt_loop_post(sm->core->loops[0], purge_arm, sm);
}

void sm_offline_stop(struct sm *sm)
{
    kt_loop_post(sm->core->loops[0], purge_disarm, sm);
}

int sm_offline_init(struct sm *sm)
{
    if (sm->conf->offline_max > 0)
        sm_feature_add(sm, "msgoffline");
    return 0;
}

