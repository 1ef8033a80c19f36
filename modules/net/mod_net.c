/* mod_net: links between nodes of the same Kontalk network.
 * Not implemented yet (a later issue): this module loads, validates its settings
 * group and says in the log that it does nothing, so that configurations
 * and packaging can be set up now. */
#include "config.h"
#include <kontalk/core.h>
#include <kontalk/log.h>
#include <kontalk/module.h>

static int net_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                   void **state_r)
{
    (void)core;
    (void)conf;
    (void)group;
    *state_r = NULL;
    kt_log(KT_LOG_NOTICE,
           "net: loaded; "
           "links to other nodes of the network are not implemented yet");
    return 0;
}

KT_MODULE(net) = {
    KT_MODULE_HEADER,
    .name = "net",
    .requires = NULL,
    .init = net_init,
};
