/* push@host: push registrations and wake-ups (kontalk-protocol.md §2.8).
 * Placeholder: registers nothing yet. */
#include "config.h"
#include "modules/sm/sm.h"

const struct kt_setting sm_push_settings[] = {
    KT_SET_STR("url", struct sm_conf, push.url, "", "HTTP push endpoint (FCM v1 shape); \"\" = off"),
    KT_SET_STR("auth", struct sm_conf, push.auth, "", "Authorization header sent to url"),
    KT_SET_STR("app_server", struct sm_conf, push.app_server, "",
               "XEP-0357 app server JID; \"\" = off"),
    KT_SET_INT("idle", struct sm_conf, push.idle, 30, 0, 86400,
               "seconds a session may idle before messages to it also push"),
    KT_SET_INT("timeout", struct sm_conf, push.timeout, 10, 1, 300,
               "seconds one HTTP push request may take"),
    KT_SET_END,
};

int sm_push_init(struct sm *sm)
{
    (void)sm;
    return 0;
}

void sm_push_start(struct sm *sm)
{
    (void)sm;
}

void sm_push_stop(struct sm *sm)
{
    (void)sm;
}

void sm_push_free(struct sm *sm)
{
    (void)sm;
}

void sm_push_wake(struct sm *sm, const struct kt_jid *user, const struct kt_stanza *st)
{
    (void)sm;
    (void)user;
    (void)st;
}
