/* Account expiry (kontalk-protocol.md §2.6): every sm.expire_check seconds
 * (first at start-up) a run deletes the key accounts nobody used for
 * sm.expire_days days, after telling their contacts; sm.expire_days = 0
 * turns it off.
 *
 * Which accounts: users.fingerprint set (key accounts, made by Kontalk
 * registration). Password accounts (SCRAM credentials, no fingerprint) are
 * created by an administrator and never expire. Last activity is the latest
 * of created, last_login and last_logout, so an account in use whose login
 * time is not recorded still counts as used at its last logout. A user with
 * a resource on this node (sm users table: it sent presence or asked for
 * its roster) is skipped whatever the dates say.
 *
 * How: a run is a chain on loop 0, so it never floods the workers: one job
 * lists the candidates, then one job per account, on that user's queue
 * (sm_user_queue: no roster change of the user runs meanwhile), reads its
 * roster and deletes the users row with the age condition repeated, so an
 * account used since the listing stays. Every table of per-account data
 * (roster, roster_version, offline, blocklist, vcards, pubkeys, privatekeys,
 * push) references users with ON DELETE CASCADE, so that one DELETE removes
 * it all in one statement; phone validations and registration throttles
 * are keyed by phone, not by account, and stay. Stored offline messages for
 * the account go with it, unanswered (they expire after
 * sm.offline_expire, much sooner than an account does).
 *
 * Contacts: the account vanishes, so both directions of every subscription
 * end (RFC 6121 §3.2 and §3.3, as a roster removal does in §2.5.3):
 * 'unsubscribed' from the user's bare JID to every roster contact (cancels
 * their subscription to the user and denies a pending request; Kontalk
 * sends this one to everyone), and 'unsubscribe' to each contact the user
 * was subscribed to or had asked to (so the contact's server stops sending
 * presence to an account that no longer exists). They are routed from the
 * job's completion like any stanza, so local contacts' rosters are updated
 * and pushed, and remote ones go through the router.
 *
 * One log line per run with the counts. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>

#include <stdlib.h>
#include <string.h>

/* The age condition, shared by the listing and the delete. */
#define EXPIRED_SQL                                                                  \
    "fingerprint IS NOT NULL AND fingerprint <> '' AND "                             \
    "GREATEST(created, COALESCE(last_login, created), COALESCE(last_logout, created)) " \
    "< NOW() - INTERVAL ? DAY"

struct sm_expiry {
    struct sm *sm;
    struct kt_timer *timer; /* loop 0 */
    atomic_bool stopping;
    /* The run in progress (loop 0 only). */
    bool running;
    struct kt_db_result *candidates;
    unsigned next;
    unsigned deleted, active, online, failed;
};

enum outcome { OUT_DELETED, OUT_ACTIVE, OUT_ONLINE, OUT_FAILED, OUT_STOPPED };

struct del_job {
    struct sm_expiry *e;
    char *local;
    enum outcome outcome;
    struct kt_db_result *roster; /* contact, subscription, ask */
};

static void next_account(struct sm_expiry *e);

/* --- one account --- */

static void delete_run(struct kt_db *db, void *data)
{
    struct del_job *j = data;
    struct sm *sm = j->e->sm;
    j->outcome = OUT_FAILED;
    if (atomic_load(&j->e->stopping)) {
        j->outcome = OUT_STOPPED;
        return;
    }
    struct kt_jid *jid = kt_jid_new(j->local, sm->core->network, NULL);
    if (!jid) {
        kt_log(KT_LOG_WARN, "sm: account %s cannot expire: not a valid JID localpart", j->local);
        return;
    }
    struct kt_session *s = NULL;
    unsigned n = sm_users_resources(sm->users, jid, false, &s, 1);
    kt_jid_free(&jid);
    if (n) {
        kt_session_unref(&s);
        j->outcome = OUT_ONLINE;
        return;
    }
    struct kt_db_param who = KT_DB_P_STR(j->local);
    struct kt_db_param del[] = {KT_DB_P_STR(j->local), KT_DB_P_INT(sm->conf->expire_days)};
    uint64_t affected = 0;
    /* No other job of this user runs meanwhile (its queue), so the roster
     * read here is the one the delete removes. */
    if (kt_db_query(db,
                    "SELECT contact, subscription, ask FROM roster WHERE owner = ? "
                    "ORDER BY contact",
                    &who, 1, &j->roster) < 0 ||
        kt_db_exec(db, "DELETE FROM users WHERE localpart = ? AND " EXPIRED_SQL, del,
                   KT_ARRAY_SIZE(del), &affected, NULL) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot expire account %s: %s", j->local, kt_db_error(db));
        return;
    }
    if (affected) {
        j->outcome = OUT_DELETED;
        return;
    }
    /* Nothing deleted: used again since the listing, or already gone (a
     * replayed DELETE that had committed, or an administrator's): in that
     * case the contacts must still be told. */
    struct kt_db_result *r = NULL;
    if (kt_db_query(db, "SELECT 1 FROM users WHERE localpart = ?", &who, 1, &r) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot expire account %s: %s", j->local, kt_db_error(db));
        return;
    }
    j->outcome = r->nrows ? OUT_ACTIVE : OUT_DELETED;
    kt_db_result_free(&r);
}

/* The account is gone: end every subscription it had (see above). */
static void tell_contacts(struct sm *sm, const char *local, const struct kt_db_result *roster)
{
    struct kt_jid *user = kt_jid_new(local, sm->core->network, NULL);
    for (unsigned i = 0; user && roster && i < roster->nrows; i++) {
        const char *contact = kt_db_value(roster, i, 0);
        struct kt_jid *to = contact ? kt_jid_parse(contact) : NULL;
        if (!to)
            continue;
        int sub = (int)kt_db_int(roster, i, 1);
        bool ask = kt_db_int(roster, i, 2) != 0;
        sm_send_presence(sm, "unsubscribed", user->bare, to->bare);
        if ((sub & SM_SUB_TO) || ask)
            sm_send_presence(sm, "unsubscribe", user->bare, to->bare);
        kt_jid_free(&to);
    }
    kt_jid_free(&user);
}

static void delete_done(void *data)
{
    struct del_job *j = data;
    struct sm_expiry *e = j->e;
    switch (j->outcome) {
    case OUT_DELETED:
        e->deleted++;
        tell_contacts(e->sm, j->local, j->roster);
        sm_roster_forget(e->sm, j->local);
        kt_log(KT_LOG_DEBUG, "sm: account %s expired (%u contacts told)", j->local,
               j->roster ? j->roster->nrows : 0);
        break;
    case OUT_ACTIVE:
        e->active++;
        break;
    case OUT_ONLINE:
        e->online++;
        break;
    case OUT_FAILED:
        e->failed++;
        break;
    case OUT_STOPPED:
        break;
    }
    kt_db_result_free(&j->roster);
    free(j->local);
    free(j);
    next_account(e);
}

/* --- a run --- */

static void run_end(struct sm_expiry *e)
{
    unsigned listed = e->candidates ? e->candidates->nrows : 0;
    kt_log(KT_LOG_INFO,
           "sm: account expiry: %u deleted, %u in use again, %u online, %u failed "
           "(%u key accounts unused for %lld days)%s",
           e->deleted, e->active, e->online, e->failed, listed, e->sm->conf->expire_days,
           atomic_load(&e->stopping) ? "; interrupted by shutdown" : "");
    kt_db_result_free(&e->candidates);
    e->running = false;
}

static void next_account(struct sm_expiry *e)
{
    if (!e->candidates || e->next >= e->candidates->nrows || atomic_load(&e->stopping)) {
        run_end(e);
        return;
    }
    struct del_job *j = kt_new(struct del_job);
    j->e = e;
    j->local = kt_strdup(kt_db_value(e->candidates, e->next++, 0));
    kt_job_submit(e->sm->core->workers, sm_user_queue(e->sm, j->local), delete_run, delete_done,
                  j);
}

static void list_run(struct kt_db *db, void *data)
{
    struct sm_expiry *e = data;
    struct kt_db_param days = KT_DB_P_INT(e->sm->conf->expire_days);
    if (kt_db_query(db, "SELECT localpart FROM users WHERE " EXPIRED_SQL " ORDER BY localpart",
                    &days, 1, &e->candidates) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot list unused accounts: %s", kt_db_error(db));
        e->failed++;
    }
}

static void list_done(void *data)
{
    next_account(data);
}

static void expiry_tick(struct kt_loop *loop, void *data)
{
    struct sm_expiry *e = data;
    e->timer = NULL;
    if (atomic_load(&e->stopping))
        return;
    if (!e->running) {
        e->running = true;
        e->next = e->deleted = e->active = e->online = e->failed = 0;
        kt_job_submit(e->sm->core->workers, NULL, list_run, list_done, e);
    }
    e->timer = kt_timer_add(loop, (uint64_t)e->sm->conf->expire_check * 1000, expiry_tick, e);
}

static void expiry_disarm(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct sm_expiry *e = data;
    if (e->timer)
        kt_timer_cancel(&e->timer);
}

void sm_expiry_start(struct sm *sm)
{
    if (sm->conf->expire_days > 0)
        kt_loop_post(sm->core->loops[0], expiry_tick, sm->expiry);
}

void sm_expiry_stop(struct sm *sm)
{
    if (sm->conf->expire_days <= 0)
        return;
    /* A run in progress ends at its next account; kt_workers_stop waits for it. */
    atomic_store(&sm->expiry->stopping, true);
    kt_loop_post(sm->core->loops[0], expiry_disarm, sm->expiry);
}

int sm_expiry_init(struct sm *sm)
{
    sm->expiry = kt_new(struct sm_expiry);
    sm->expiry->sm = sm;
    atomic_init(&sm->expiry->stopping, false);
    if (sm->conf->expire_days == 0)
        kt_log(KT_LOG_INFO, "sm: account expiry off (sm.expire_days = 0)");
    return 0;
}

void sm_expiry_free(struct sm *sm)
{
    if (!sm->expiry)
        return;
    kt_db_result_free(&sm->expiry->candidates);
    free(sm->expiry);
    sm->expiry = NULL;
}
