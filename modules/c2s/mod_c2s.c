/* mod_c2s: client connections (RFC 6120 streams, STARTTLS and direct TLS, SASL, binding).
 * Not implemented yet (issue #3): this module loads, validates its settings
 * group and says in the log that it does nothing, so that configurations
 * and packaging can be set up now. */
#include "config.h"
#include <kontalk/core.h>
#include <kontalk/log.h>
#include <kontalk/module.h>

struct c2s_conf {
    int unused; /* the listener list is read from the group (KT_SET_RAW) */
};

static const struct kt_setting c2s_settings[] = {
    KT_SET_RAW("listen", "listeners: ( { port = 5222; tls = \"starttls\"; address = \"::1\"; } )"),
    KT_SET_END,
};

static int c2s_init(struct kt_core *core, const void *conf, const config_setting_t *group,
                   void **state_r)
{
    (void)core;
    (void)conf;
    (void)group;
    *state_r = NULL;
    kt_log(KT_LOG_NOTICE,
           "c2s: loaded; "
           "client connections are not implemented yet");
    return 0;
}

KT_MODULE(c2s) = {
    KT_MODULE_HEADER,
    .name = "c2s",
    .requires = NULL,
    .settings = c2s_settings,
    .conf_size = sizeof(struct c2s_conf),
    .init = c2s_init,
};
