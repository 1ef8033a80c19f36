/* Names and default types of XMPP error conditions (RFC 6120 §8.3.3, §4.9.3). */
#include "config.h"
#include <kontalk/error.h>

struct stanza_err_info {
    const char *name;
    const char *type;
};

static const struct stanza_err_info stanza_errs[] = {
    [KT_SE_NONE] = {"undefined-condition", "cancel"},
    [KT_SE_BAD_REQUEST] = {"bad-request", "modify"},
    [KT_SE_CONFLICT] = {"conflict", "cancel"},
    [KT_SE_FEATURE_NOT_IMPLEMENTED] = {"feature-not-implemented", "cancel"},
    [KT_SE_FORBIDDEN] = {"forbidden", "auth"},
    [KT_SE_GONE] = {"gone", "cancel"},
    [KT_SE_INTERNAL_SERVER_ERROR] = {"internal-server-error", "cancel"},
    [KT_SE_ITEM_NOT_FOUND] = {"item-not-found", "cancel"},
    [KT_SE_JID_MALFORMED] = {"jid-malformed", "modify"},
    [KT_SE_NOT_ACCEPTABLE] = {"not-acceptable", "modify"},
    [KT_SE_NOT_ALLOWED] = {"not-allowed", "cancel"},
    [KT_SE_NOT_AUTHORIZED] = {"not-authorized", "auth"},
    [KT_SE_POLICY_VIOLATION] = {"policy-violation", "modify"},
    [KT_SE_RECIPIENT_UNAVAILABLE] = {"recipient-unavailable", "wait"},
    [KT_SE_REDIRECT] = {"redirect", "modify"},
    [KT_SE_REGISTRATION_REQUIRED] = {"registration-required", "auth"},
    [KT_SE_REMOTE_SERVER_NOT_FOUND] = {"remote-server-not-found", "cancel"},
    [KT_SE_REMOTE_SERVER_TIMEOUT] = {"remote-server-timeout", "wait"},
    [KT_SE_RESOURCE_CONSTRAINT] = {"resource-constraint", "wait"},
    [KT_SE_SERVICE_UNAVAILABLE] = {"service-unavailable", "cancel"},
    [KT_SE_SUBSCRIPTION_REQUIRED] = {"subscription-required", "auth"},
    [KT_SE_UNDEFINED_CONDITION] = {"undefined-condition", "cancel"},
    [KT_SE_UNEXPECTED_REQUEST] = {"unexpected-request", "wait"},
};

static const char *const stream_errs[] = {
    [KT_XE_NONE] = "undefined-condition",
    [KT_XE_BAD_FORMAT] = "bad-format",
    [KT_XE_BAD_NAMESPACE_PREFIX] = "bad-namespace-prefix",
    [KT_XE_CONFLICT] = "conflict",
    [KT_XE_CONNECTION_TIMEOUT] = "connection-timeout",
    [KT_XE_HOST_GONE] = "host-gone",
    [KT_XE_HOST_UNKNOWN] = "host-unknown",
    [KT_XE_IMPROPER_ADDRESSING] = "improper-addressing",
    [KT_XE_INTERNAL_SERVER_ERROR] = "internal-server-error",
    [KT_XE_INVALID_FROM] = "invalid-from",
    [KT_XE_INVALID_NAMESPACE] = "invalid-namespace",
    [KT_XE_INVALID_XML] = "invalid-xml",
    [KT_XE_NOT_AUTHORIZED] = "not-authorized",
    [KT_XE_NOT_WELL_FORMED] = "not-well-formed",
    [KT_XE_POLICY_VIOLATION] = "policy-violation",
    [KT_XE_REMOTE_CONNECTION_FAILED] = "remote-connection-failed",
    [KT_XE_RESET] = "reset",
    [KT_XE_RESOURCE_CONSTRAINT] = "resource-constraint",
    [KT_XE_RESTRICTED_XML] = "restricted-xml",
    [KT_XE_SEE_OTHER_HOST] = "see-other-host",
    [KT_XE_SYSTEM_SHUTDOWN] = "system-shutdown",
    [KT_XE_UNDEFINED_CONDITION] = "undefined-condition",
    [KT_XE_UNSUPPORTED_ENCODING] = "unsupported-encoding",
    [KT_XE_UNSUPPORTED_FEATURE] = "unsupported-feature",
    [KT_XE_UNSUPPORTED_STANZA_TYPE] = "unsupported-stanza-type",
    [KT_XE_UNSUPPORTED_VERSION] = "unsupported-version",
};

const char *kt_stanza_err_name(enum kt_stanza_err err)
{
    if ((unsigned)err >= KT_ARRAY_SIZE(stanza_errs))
        err = KT_SE_UNDEFINED_CONDITION;
    return stanza_errs[err].name;
}

const char *kt_stanza_err_type(enum kt_stanza_err err)
{
    if ((unsigned)err >= KT_ARRAY_SIZE(stanza_errs))
        err = KT_SE_UNDEFINED_CONDITION;
    return stanza_errs[err].type;
}

const char *kt_stream_err_name(enum kt_stream_err err)
{
    if ((unsigned)err >= KT_ARRAY_SIZE(stream_errs))
        err = KT_XE_UNDEFINED_CONDITION;
    return stream_errs[err];
}
