/* TLS server contexts (OpenSSL 3). A "generation" is everything loaded from
 * the configured files at one time: the default SSL_CTX and one SSL_CTX per
 * SNI host. kt_tls_new() and kt_tls_reload() build a complete generation
 * before anything is published, so a failed reload changes nothing.
 *
 * Lifetime: the default SSL_CTX of a generation owns the generation (through
 * ex_data with a free callback), and every SSL created from it holds a
 * reference to that SSL_CTX for its whole life (OpenSSL keeps it as the
 * session context even after the SNI callback switched the SSL to a host
 * context). So a reload only drops kt_tls's own reference to the old default
 * context; the old generation, its host contexts and the SNI callback's
 * argument stay valid until the last connection using them is freed.
 *
 * Thread use: kt_tls_new_ssl() and kt_tls_reload() may run on any thread;
 * a mutex guards the pointer to the current generation only. */
#include "config.h"
#include <kontalk/tls.h>
#include <kontalk/log.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Mozilla "intermediate" (server side TLS guidelines v5.7) for TLS 1.2; TLS
 * 1.3 keeps OpenSSL's default suites, which are the same list. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* Session cache entries per context: resumption saves a full handshake for
 * clients on flaky mobile links, but the cache is memory per context. */
#define SESSION_CACHE_SIZE 1024
/* Required for session resumption once SSL_VERIFY_PEER is set. */
#define SESSION_ID_CONTEXT "kontalkd"

struct tls_gen {
    unsigned nhosts;
    char **names;    /* SNI names, owned copies (a generation may outlive kt_tls) */
    SSL_CTX **hosts; /* parallel to names */
};

struct kt_tls {
    const struct kt_tls_conf *conf;
    pthread_mutex_t lock;
    SSL_CTX *cur; /* default context of the current generation */
};

static pthread_once_t gen_index_once = PTHREAD_ONCE_INIT;
static int gen_index = -1;

static void gen_free(struct tls_gen *gen)
{
    if (!gen)
        return;
    for (unsigned i = 0; i < gen->nhosts; i++) {
        free(gen->names[i]);
        SSL_CTX_free(gen->hosts[i]);
    }
    free(gen->names);
    free(gen->hosts);
    free(gen);
}

/* Called by OpenSSL when a default context's last reference goes away. */
static void gen_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    gen_free(ptr);
}

static void gen_index_init(void)
{
    gen_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, gen_ex_free);
}

/* Formats the oldest queued OpenSSL error (usually the root cause) after
 * prefix, and clears the queue. */
static void ssl_error(char *err, size_t errlen, const char *prefix)
{
    unsigned long e = ERR_get_error();
    const char *reason = NULL;
    char buf[256];
    if (e && ERR_SYSTEM_ERROR(e))
        reason = strerror(ERR_GET_REASON(e));
    else if (e)
        reason = ERR_reason_error_string(e);
    if (e && !reason) {
        ERR_error_string_n(e, buf, sizeof(buf));
        reason = buf;
    }
    snprintf(err, errlen, "%s: %s", prefix, reason ? reason : "unknown error");
    ERR_clear_error();
}

/* The client certificate is requested but never judged here: kontalk
 * clients present self-signed certificates wrapping their OpenPGP key, which
 * no CA store could verify. The handshake always goes on, and the caller
 * (SASL EXTERNAL) decides from the certificate itself. */
static int verify_accept(int preverify_ok, X509_STORE_CTX *x509_ctx)
{
    (void)preverify_ok, (void)x509_ctx;
    return 1;
}

/* One server context for a certificate chain and its key; NULL with a
 * message naming the file on failure. */
static SSL_CTX *ctx_build(const char *cert, const char *key, bool client_cert, char *err,
                          size_t errlen)
{
    char what[512];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_error(err, errlen, "cannot create TLS context");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        ssl_error(err, errlen, "cannot set TLS versions or ciphers");
        goto fail;
    }
    /* DHE suites need parameters; let OpenSSL pick them by key size. */
    SSL_CTX_set_dh_auto(ctx, 1);
    /* Renegotiation buys nothing for XMPP and has a history of attacks. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Non-blocking writes: the output queue may move and retry with a
     * different buffer, and accepts a partial write; idle connections (most
     * of them, for a messaging server) give their buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_SIZE);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT,
                                   sizeof(SESSION_ID_CONTEXT) - 1);

    if (client_cert) {
        /* Without FAIL_IF_NO_PEER_CERT: a client without a certificate still
         * connects and uses another SASL mechanism. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_accept);
        /* An empty CA list tells clients that any certificate will do. */
        STACK_OF(X509_NAME) *cas = sk_X509_NAME_new_null();
        if (!cas) {
            ssl_error(err, errlen, "cannot allocate client CA list");
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, cas);
    }

    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(what, sizeof(what), "certificate '%s'", cert);
        ssl_error(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof(what), "private key '%s' (for certificate '%s')", key, cert);
        ssl_error(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "private key '%s' does not match certificate '%s'", key, cert);
        ssl_error(err, errlen, what);
        goto fail;
    }
    return ctx;

fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* Picks the host context whose name equals the client's SNI name (DNS names
 * are case-insensitive); unknown or absent names keep the default
 * certificate. arg is the generation of the SSL's own default context. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct tls_gen *gen = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_NOACK;
    for (unsigned i = 0; i < gen->nhosts; i++) {
        if (strcasecmp(name, gen->names[i]) == 0) {
            if (!SSL_set_SSL_CTX(ssl, gen->hosts[i]))
                return SSL_TLSEXT_ERR_ALERT_FATAL;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Builds a whole generation; returns its default context (which owns the
 * rest) or NULL with a message. */
static SSL_CTX *gen_build(const struct kt_tls_conf *conf, char *err, size_t errlen)
{
    SSL_CTX *def = NULL;
    struct tls_gen *gen = NULL;

    ERR_clear_error();
    if (!conf->certificate || !conf->key) {
        snprintf(err, errlen, "TLS needs both a certificate and a key");
        return NULL;
    }
    pthread_once(&gen_index_once, gen_index_init);
    if (gen_index < 0) {
        ssl_error(err, errlen, "cannot allocate TLS ex_data index");
        return NULL;
    }

    gen = kt_new(struct tls_gen);
    gen->names = kt_calloc(conf->nhosts, sizeof(*gen->names));
    gen->hosts = kt_calloc(conf->nhosts, sizeof(*gen->hosts));
    for (unsigned i = 0; i < conf->nhosts; i++) {
        const struct kt_tls_host *h = &conf->hosts[i];
        if (!h->name || !h->name[0] || !h->certificate || !h->key) {
            snprintf(err, errlen, "TLS host %u needs a name, a certificate and a key", i + 1);
            goto fail;
        }
        gen->hosts[i] = ctx_build(h->certificate, h->key, conf->request_client_cert, err, errlen);
        if (!gen->hosts[i])
            goto fail;
        gen->names[i] = kt_strdup(h->name);
        gen->nhosts = i + 1;
    }

    def = ctx_build(conf->certificate, conf->key, conf->request_client_cert, err, errlen);
    if (!def)
        goto fail;
    if (!SSL_CTX_set_ex_data(def, gen_index, gen)) {
        ssl_error(err, errlen, "cannot attach TLS host contexts");
        goto fail;
    }
    /* def owns gen from here on. */
    if (gen->nhosts > 0) {
        SSL_CTX_set_tlsext_servername_callback(def, sni_cb);
        SSL_CTX_set_tlsext_servername_arg(def, gen);
    }
    return def;

fail:
    SSL_CTX_free(def);
    gen_free(gen);
    return NULL;
}

struct kt_tls *kt_tls_new(const struct kt_tls_conf *conf, char *err, size_t errlen)
{
    kt_assert(conf != NULL);
    SSL_CTX *def = gen_build(conf, err, errlen);
    if (!def)
        return NULL;
    struct kt_tls *tls = kt_new(struct kt_tls);
    tls->conf = conf;
    tls->cur = def;
    pthread_mutex_init(&tls->lock, NULL);
    return tls;
}

void kt_tls_free(struct kt_tls **tlsp)
{
    struct kt_tls *tls = *tlsp;
    if (!tls)
        return;
    /* Connections still open keep their generation alive by reference. */
    SSL_CTX_free(tls->cur);
    pthread_mutex_destroy(&tls->lock);
    free(tls);
    *tlsp = NULL;
}

int kt_tls_reload(struct kt_tls *tls, char *err, size_t errlen)
{
    kt_assert(tls != NULL);
    SSL_CTX *def = gen_build(tls->conf, err, errlen);
    if (!def)
        return -1;
    pthread_mutex_lock(&tls->lock);
    SSL_CTX *old = tls->cur;
    tls->cur = def;
    pthread_mutex_unlock(&tls->lock);
    SSL_CTX_free(old);
    kt_log(KT_LOG_INFO, "tls: certificates reloaded");
    return 0;
}

SSL *kt_tls_new_ssl(struct kt_tls *tls)
{
    kt_assert(tls != NULL);
    /* Take a reference under the lock so a concurrent reload cannot free
     * the context between reading the pointer and SSL_new(). */
    pthread_mutex_lock(&tls->lock);
    SSL_CTX *ctx = tls->cur;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&tls->lock);
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    return ssl;
}
