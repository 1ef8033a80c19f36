/* mod_sm: the session manager (sessions, roster, presence, delivery, offline storage).
 * Not implemented yet (issue #4): this module loads, validates its settings
 * group and says in the log that it does nothing, so that configurations
 * and packaging can be set up now. */
#include "config.h"
#include <kontalk/core.h>
#include <kontalk/log.h>
#include <kontalk/module.h>

static const char *const sm_requires[] = {"c2s", NULL};

static int sm_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                   void **state_r)
{
    (void)core;
    (void)conf;
    (void)group;
    *state_r = NULL;
    kt_log(KT_LOG_NOTICE,
           "sm: loaded; "
           "sessions, roster, presence and message delivery are not implemented yet");
    return 0;
}

KT_MODULE(sm) = {
    KT_MODULE_HEADER,
    .name = "sm",
    .requires = sm_requires,
    .init = sm_init,
};
