/* The core as modules see it: data first (names, config), then services
 * (router, workers, loops, TLS). Fields are set before any module's init
 * and are read-only for modules. */
#ifndef KONTALK_CORE_H
#define KONTALK_CORE_H

#include "base.h"
#include "buf.h"
#include <libconfig.h>
#include <openssl/x509.h>

struct kt_router;
struct kt_workers;
struct kt_loop;
struct kt_tls;
struct kt_sessions;

struct kt_core {
    const char *host;    /* this node's host name, e.g. "beta.kontalk.net" */
    const char *network; /* the network domain, e.g. "kontalk.net" */
    const config_t *config;
    struct kt_router *router;
    struct kt_workers *workers;
    struct kt_tls *tls; /* NULL when no certificate is configured */
    struct kt_sessions *sessions; /* bound client resources (kontalk/session.h) */
    unsigned nloops;
    struct kt_loop **loops;
};

/* Round-robin choice of the loop a new connection is pinned to. Any thread. */
KT_API struct kt_loop *kt_core_next_loop(struct kt_core *core);

/* Connection gauge shown by `kontalkctl status`. Any thread. */
KT_API void kt_core_conn_opened(struct kt_core *core);
KT_API void kt_core_conn_closed(struct kt_core *core);

/* SASL EXTERNAL: the module that can verify client certificates (the Kontalk
 * account work) registers one verifier. It runs on a worker (it may query
 * the database) with the peer's certificate chain; it returns the
 * authenticated localpart (malloc'd) or NULL to refuse. authzid is the
 * identity the client asked for, or NULL. c2s offers EXTERNAL only when a
 * verifier is registered and the client presented a certificate. */
struct kt_db;
typedef char *(*kt_external_auth_fn)(struct kt_db *db, X509 *cert, STACK_OF(X509) *chain,
                                     const char *authzid, void *data);
KT_API void kt_core_set_external_auth(struct kt_core *core, kt_external_auth_fn fn, void *data);
KT_API kt_external_auth_fn kt_core_external_auth(struct kt_core *core, void **data_r);

/* In-band registration before authentication (XEP-0077; Kontalk's phone
 * registration). The module that serves it registers one handler; c2s then
 * advertises the iq-register stream feature after TLS and hands it every
 * <iq/> in jabber:iq:register that arrives before SASL success. The handler
 * runs on a worker (it may query the database and run a program) and
 * returns the reply (result or error, built with kt_stanza_iq_result or
 * kt_stanza_error_reply), or NULL for service-unavailable. Reading from
 * the client waits meanwhile, so requests are answered in order. */
struct kt_stanza;
struct kt_preauth {
    const char *ip;     /* the client's address */
    X509 *cert;         /* its TLS client certificate, or NULL */
    const char *domain; /* the domain the client's stream is addressed to */
};
typedef struct kt_stanza *(*kt_register_fn)(struct kt_db *db, struct kt_stanza *iq,
                                           const struct kt_preauth *who, void *data);
KT_API void kt_core_set_register(struct kt_core *core, kt_register_fn fn, void *data);
KT_API kt_register_fn kt_core_register(struct kt_core *core, void **data_r);

/* A module adds "key: value" lines to the status report. fn runs on an
 * I/O thread; it must not block. Register during init. */
typedef void (*kt_status_fn)(struct kt_buf *out, void *data);
KT_API void kt_core_status_add(struct kt_core *core, kt_status_fn fn, void *data);

#endif
