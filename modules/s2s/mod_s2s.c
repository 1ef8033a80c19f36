/* mod_s2s: federation with other XMPP servers (the default route).
 * Not implemented yet (a later issue): this module loads, validates its settings
 * group and says in the log that it does nothing, so that configurations
 * and packaging can be set up now. */
#include "config.h"
#include <kontalk/core.h>
#include <kontalk/log.h>
#include <kontalk/module.h>

static int s2s_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                   void **state_r)
{
    (void)core;
    (void)conf;
    (void)group;
    *state_r = NULL;
    kt_log(KT_LOG_NOTICE,
           "s2s: loaded; "
           "federation with other XMPP servers is not implemented yet");
    return 0;
}

KT_MODULE(s2s) = {
    KT_MODULE_HEADER,
    .name = "s2s",
    .requires = NULL,
    .init = s2s_init,
};
