/* XMPP error conditions: stanza errors (RFC 6120 §8.3.3) and stream errors
 * (RFC 6120 §4.9.3). Parsers and handlers report these, never negative codes. */
#ifndef KONTALK_ERROR_H
#define KONTALK_ERROR_H

#include "base.h"

#define KT_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define KT_NS_STREAMS "urn:ietf:params:xml:ns:xmpp-streams"

enum kt_stanza_err {
    KT_SE_NONE = 0,
    KT_SE_BAD_REQUEST,
    KT_SE_CONFLICT,
    KT_SE_FEATURE_NOT_IMPLEMENTED,
    KT_SE_FORBIDDEN,
    KT_SE_GONE,
    KT_SE_INTERNAL_SERVER_ERROR,
    KT_SE_ITEM_NOT_FOUND,
    KT_SE_JID_MALFORMED,
    KT_SE_NOT_ACCEPTABLE,
    KT_SE_NOT_ALLOWED,
    KT_SE_NOT_AUTHORIZED,
    KT_SE_POLICY_VIOLATION,
    KT_SE_RECIPIENT_UNAVAILABLE,
    KT_SE_REDIRECT,
    KT_SE_REGISTRATION_REQUIRED,
    KT_SE_REMOTE_SERVER_NOT_FOUND,
    KT_SE_REMOTE_SERVER_TIMEOUT,
    KT_SE_RESOURCE_CONSTRAINT,
    KT_SE_SERVICE_UNAVAILABLE,
    KT_SE_SUBSCRIPTION_REQUIRED,
    KT_SE_UNDEFINED_CONDITION,
    KT_SE_UNEXPECTED_REQUEST,
};

enum kt_stream_err {
    KT_XE_NONE = 0,
    KT_XE_BAD_FORMAT,
    KT_XE_BAD_NAMESPACE_PREFIX,
    KT_XE_CONFLICT,
    KT_XE_CONNECTION_TIMEOUT,
    KT_XE_HOST_GONE,
    KT_XE_HOST_UNKNOWN,
    KT_XE_IMPROPER_ADDRESSING,
    KT_XE_INTERNAL_SERVER_ERROR,
    KT_XE_INVALID_FROM,
    KT_XE_INVALID_NAMESPACE,
    KT_XE_INVALID_XML,
    KT_XE_NOT_AUTHORIZED,
    KT_XE_NOT_WELL_FORMED,
    KT_XE_POLICY_VIOLATION,
    KT_XE_REMOTE_CONNECTION_FAILED,
    KT_XE_RESET,
    KT_XE_RESOURCE_CONSTRAINT,
    KT_XE_RESTRICTED_XML,
    KT_XE_SEE_OTHER_HOST,
    KT_XE_SYSTEM_SHUTDOWN,
    KT_XE_UNDEFINED_CONDITION,
    KT_XE_UNSUPPORTED_ENCODING,
    KT_XE_UNSUPPORTED_FEATURE,
    KT_XE_UNSUPPORTED_STANZA_TYPE,
    KT_XE_UNSUPPORTED_VERSION,
};

/* Element name of the condition, e.g. "service-unavailable". */
KT_API const char *kt_stanza_err_name(enum kt_stanza_err err);
/* The error type RFC 6120 §8.3.3 recommends: "cancel", "modify", "auth" or "wait". */
KT_API const char *kt_stanza_err_type(enum kt_stanza_err err);
KT_API const char *kt_stream_err_name(enum kt_stream_err err);

#endif
