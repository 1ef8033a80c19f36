/* Phone registration (kontalk-protocol.md §2.1, the XEP-0077 variant) and
 * key rollover/private-key parking (§2.3). Placeholder: settings only. */
#include "config.h"
#include "modules/sm/sm.h"

static const char *const providers[] = {"off", "dummy", "command", NULL};

const struct kt_setting sm_register_settings[] = {
    KT_SET_ENUM("provider", struct sm_conf, reg.provider, SM_REGISTER_OFF, providers,
                "how phone numbers are verified: off, dummy (fixed code) or command"),
    KT_SET_STR("dummy_code", struct sm_conf, reg.dummy_code, "123456",
               "the code the dummy provider accepts"),
    KT_SET_STR("command", struct sm_conf, reg.command, "",
               "program run as COMMAND NUMBER CODE to send the code (command provider)"),
    KT_SET_INT("code_expire", struct sm_conf, reg.code_expire, 900, 60, 86400,
               "seconds a verification code stays valid"),
    KT_SET_INT("throttle_attempts", struct sm_conf, reg.throttle_attempts, 3, 1, 1000,
               "requests allowed before a throttle delay applies"),
    KT_SET_INT("throttle_ip_delay", struct sm_conf, reg.throttle_ip_delay, 60, 0, 86400,
               "seconds an IP address waits once throttled"),
    KT_SET_INT("throttle_phone_delay", struct sm_conf, reg.throttle_phone_delay, 300, 0, 86400,
               "seconds a phone number waits once throttled"),
    KT_SET_INT("throttle_prefix_delay", struct sm_conf, reg.throttle_prefix_delay, 60, 0, 86400,
               "seconds a number prefix waits once throttled"),
    KT_SET_INT("prefix_digits", struct sm_conf, reg.prefix_digits, 6, 1, 15,
               "digits of the number prefix throttle"),
    KT_SET_STR("terms_url", struct sm_conf, reg.terms_url, "",
               "service terms URL shown in the registration form; \"\" = none"),
    KT_SET_END,
};
