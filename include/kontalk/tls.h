/* OpenSSL server contexts: TLS 1.2+ (1.3 preferred), Mozilla "intermediate"
 * ciphers, a default certificate plus optional per-host certificates chosen
 * by SNI, optional client certificates (requested, never verified by the
 * TLS layer: the caller decides, e.g. SASL EXTERNAL). Reloadable: new
 * connections use the reloaded certificates, existing ones keep theirs. */
#ifndef KONTALK_TLS_H
#define KONTALK_TLS_H

#include "base.h"
#include <openssl/ssl.h>

struct kt_tls_host {
    const char *name; /* SNI host name */
    const char *certificate;
    const char *key;
};

struct kt_tls_conf {
    const char *certificate; /* PEM chain: default certificate */
    const char *key;         /* PEM private key */
    const struct kt_tls_host *hosts; /* extra SNI certificates */
    unsigned nhosts;
    bool request_client_cert;
};

struct kt_tls;

/* Loads everything now; NULL and a message in err on failure. conf's strings
 * must outlive the object. */
KT_API struct kt_tls *kt_tls_new(const struct kt_tls_conf *conf, char *err, size_t errlen);
KT_API void kt_tls_free(struct kt_tls **tls);
/* Re-reads the files; on failure keeps the old contexts and returns -1. Any thread. */
KT_API int kt_tls_reload(struct kt_tls *tls, char *err, size_t errlen);
/* A new server-side SSL for an accepted connection. Any thread. */
KT_API SSL *kt_tls_new_ssl(struct kt_tls *tls);

#endif
