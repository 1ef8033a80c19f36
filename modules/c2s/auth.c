/* SASL on a client stream (RFC 6120 §6): which mechanisms we offer, the
 * <auth/>, <response/> and <abort/> exchange, and the worker jobs that look
 * credentials up and run PBKDF2 (never on the I/O thread). The mechanisms
 * themselves are in sasl.c.
 *
 * While a job runs, reading from the client is paused: the client must
 * wait for our answer anyway, and this keeps the stream's order without a
 * queue. Failures count per connection (auth_attempts, then the stream
 * error policy-violation, RFC 6120 §6.4.5) and per address per minute
 * (auth_attempts_per_ip, then temporary-auth-failure). An unknown user and
 * a wrong password look the same on the wire (SCRAM gets a fake salt). */
#include "config.h"
#include "modules/c2s/c2s.h"
#include "modules/c2s/sasl.h"

#include <kontalk/buf.h>
#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/scram.h>

#include <stdlib.h>
#include <string.h>

/* Iterations shown for unknown users; new accounts use core.scram_iterations
 * (default 4096), so this matches a default account. */
#define FAKE_ITERATIONS 4096

struct c2s_sasl {
    enum c2s_sasl_mech mech;
    bool mech_chosen;
    bool plus_offered;
    bool external_offered;
    struct c2s_scram *scram;
    struct kt_jid *user; /* the account being authenticated */
};

struct auth_job {
    struct c2s_conn *cc;
    struct kt_jid *user; /* NULL: the username was not a valid localpart */
    enum c2s_sasl_mech mech;
    enum kt_scram_hash hash;
    bool found;
    bool db_error;
    struct kt_scram_keys keys;
    struct c2s_plain *plain;
    /* EXTERNAL */
    kt_external_auth_fn external;
    void *external_data;
    X509 *cert;
    STACK_OF(X509) *chain;
    char *authzid;
    char *external_local;
};

static struct c2s_sasl *sasl_of(struct c2s_conn *cc)
{
    if (!cc->sasl)
        cc->sasl = kt_new(struct c2s_sasl);
    return cc->sasl;
}

static void reset_exchange(struct c2s_sasl *s)
{
    c2s_scram_free(&s->scram);
    kt_jid_free(&s->user);
    s->mech_chosen = false;
}

void c2s_auth_free(struct c2s_conn *cc)
{
    if (!cc->sasl)
        return;
    reset_exchange(cc->sasl);
    free(cc->sasl);
    cc->sasl = NULL;
}

/* Adds the XEP-0440 list of channel-binding types this connection can do;
 * returns whether there is any. */
static bool add_bindings(SSL *ssl, struct kt_xml *features)
{
    unsigned char cb[C2S_SASL_CB_MAX];
    bool exporter = c2s_sasl_cb_tls_exporter(ssl, cb) > 0;
    bool end_point = c2s_sasl_cb_tls_server_end_point(ssl, cb) > 0;
    if (!exporter && !end_point)
        return false;
    struct kt_xml *list = kt_xml_add_child(features, "sasl-channel-binding", "urn:xmpp:sasl-cb:0");
    if (exporter)
        kt_xml_set_attr(kt_xml_add_child(list, "channel-binding", "urn:xmpp:sasl-cb:0"), "type",
                        "tls-exporter");
    if (end_point)
        kt_xml_set_attr(kt_xml_add_child(list, "channel-binding", "urn:xmpp:sasl-cb:0"), "type",
                        "tls-server-end-point");
    return true;
}

void c2s_auth_features(struct c2s_conn *cc, struct kt_xml *features)
{
    struct c2s_sasl *s = sasl_of(cc);
    SSL *ssl = kt_conn_ssl(cc->conn);
    void *unused;
    struct kt_xml *mechs = kt_xml_add_child(features, "mechanisms", NS_SASL);
    s->plus_offered = add_bindings(ssl, features);
    s->external_offered = SSL_get0_peer_certificate(ssl) != NULL &&
                          kt_core_external_auth(cc->c2s->core, &unused) != NULL;
    static const enum c2s_sasl_mech order[] = {
        C2S_SASL_SCRAM_SHA_256_PLUS, C2S_SASL_SCRAM_SHA_1_PLUS, C2S_SASL_SCRAM_SHA_256,
        C2S_SASL_SCRAM_SHA_1, C2S_SASL_PLAIN, C2S_SASL_EXTERNAL,
    };
    for (unsigned i = 0; i < KT_ARRAY_SIZE(order); i++) {
        enum c2s_sasl_mech m = order[i];
        if ((c2s_sasl_mech_is_plus(m) && !s->plus_offered) ||
            (m == C2S_SASL_PLAIN && !cc->c2s->conf->allow_plain) ||
            (m == C2S_SASL_EXTERNAL && !s->external_offered))
            continue;
        const char *name = c2s_sasl_mech_name(m);
        kt_xml_add_text(kt_xml_add_child(mechs, "mechanism", NS_SASL), name, strlen(name));
    }
}

static bool offered(const struct c2s_conn *cc, enum c2s_sasl_mech m)
{
    const struct c2s_sasl *s = cc->sasl;
    if (c2s_sasl_mech_is_plus(m))
        return s->plus_offered;
    if (m == C2S_SASL_PLAIN)
        return cc->c2s->conf->allow_plain;
    if (m == C2S_SASL_EXTERNAL)
        return s->external_offered;
    return true;
}

static void send_sasl(struct c2s_conn *cc, const char *name, const char *data, size_t len)
{
    struct kt_buf b = {0};
    kt_buf_printf(&b, "<%s xmlns='" NS_SASL "'", name);
    if (!data) {
        kt_buf_puts(&b, "/>");
    } else {
        char *enc = len ? kt_base64_encode((const unsigned char *)data, len) : kt_strdup("=");
        kt_buf_printf(&b, ">%s</%s>", enc, name);
        free(enc);
    }
    c2s_write_str(cc, b.data);
    kt_buf_free(&b);
}

static void fail(struct c2s_conn *cc, enum c2s_sasl_fail why)
{
    if (cc->sasl)
        reset_exchange(cc->sasl);
    struct kt_buf b = {0};
    kt_buf_printf(&b, "<failure xmlns='" NS_SASL "'><%s/></failure>", c2s_sasl_fail_name(why));
    c2s_write_str(cc, b.data);
    kt_buf_free(&b);
    if (why == C2S_SASL_FAIL_ABORTED || why == C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE)
        return;
    kt_log_prefix(KT_LOG_INFO, cc->prefix, "authentication failed: %s", c2s_sasl_fail_name(why));
    c2s_ip_auth_failed(cc->c2s, cc->ip);
    if (++cc->auth_failures >= (unsigned long long)cc->c2s->conf->auth_attempts)
        c2s_stream_error(cc, KT_XE_POLICY_VIOLATION, "too many failed authentication attempts");
}

/* A SASL username is a localpart, or a JID of this network or node. The
 * account is always localpart@network. NULL if it names nothing of ours. */
static struct kt_jid *account_of(struct c2s_conn *cc, const char *name)
{
    struct kt_core *core = cc->c2s->core;
    if (!strchr(name, '@'))
        return kt_jid_new(name, core->network, NULL);
    struct kt_jid *j = kt_jid_parse(name);
    struct kt_jid *acct = NULL;
    if (j && j->local && !j->resource &&
        (strcmp(j->domain, core->network) == 0 || strcmp(j->domain, core->host) == 0))
        acct = kt_jid_new(j->local, core->network, NULL);
    kt_jid_free(&j);
    return acct;
}

/* --- worker side --- */

static void lookup_keys(struct kt_db *db, struct auth_job *job)
{
    static const char *const sql[] = {
        [KT_SCRAM_SHA1] = "SELECT scram_sha1_salt, scram_sha1_iterations, scram_sha1_stored_key, "
                          "scram_sha1_server_key FROM users WHERE localpart = ?",
        [KT_SCRAM_SHA256] = "SELECT scram_sha256_salt, scram_sha256_iterations, "
                            "scram_sha256_stored_key, scram_sha256_server_key FROM users "
                            "WHERE localpart = ?",
    };
    struct kt_db_param p = KT_DB_P_STR(job->user->local);
    struct kt_db_result *res = NULL;
    if (kt_db_query(db, sql[job->hash], &p, 1, &res) < 0) {
        job->db_error = true;
        return;
    }
    if (res->nrows == 1 && kt_db_value(res, 0, 0) && kt_db_value(res, 0, 2) &&
        kt_db_value(res, 0, 3)) {
        struct kt_scram_keys *k = &job->keys;
        size_t key_len = kt_scram_hash_len(job->hash);
        k->hash = job->hash;
        k->iterations = (unsigned)kt_db_int(res, 0, 1);
        k->salt_len = res->lens[0];
        k->key_len = key_len;
        if (k->salt_len > 0 && k->salt_len <= sizeof(k->salt) && res->lens[2] == key_len &&
            res->lens[3] == key_len && k->iterations >= KT_SCRAM_MIN_ITERATIONS) {
            memcpy(k->salt, kt_db_value(res, 0, 0), k->salt_len);
            memcpy(k->stored_key, kt_db_value(res, 0, 2), key_len);
            memcpy(k->server_key, kt_db_value(res, 0, 3), key_len);
            job->found = true;
        }
    }
    kt_db_result_free(&res);
}

static void auth_job_run(struct kt_db *db, void *data)
{
    struct auth_job *job = data;
    if (job->mech == C2S_SASL_EXTERNAL) {
        job->external_local =
            job->external(db, job->cert, job->chain, job->authzid, job->external_data);
        return;
    }
    if (job->user)
        lookup_keys(db, job);
    if (job->plain && !job->db_error) {
        /* Slow on purpose (PBKDF2), for known and unknown users alike. */
        job->found = c2s_plain_check(job->plain->passwd, job->found ? &job->keys : NULL,
                                     FAKE_ITERATIONS) &&
                     job->found;
    }
}

static void auth_job_free(struct auth_job *job)
{
    kt_jid_free(&job->user);
    c2s_plain_free(&job->plain);
    X509_free(job->cert);
    free(job->authzid);
    free(job->external_local);
    OPENSSL_cleanse(&job->keys, sizeof(job->keys));
    free(job);
}

/* --- I/O thread side --- */

/* final may point into the exchange's state: send before resetting it. */
static void succeed(struct c2s_conn *cc, struct kt_jid *user, const char *final, size_t len)
{
    send_sasl(cc, "success", final, len);
    reset_exchange(cc->sasl);
    c2s_authenticated(cc, user);
}

static void auth_job_done(void *data)
{
    struct auth_job *job = data;
    struct c2s_conn *cc = job->cc;
    if (!c2s_job_finished(cc)) {
        auth_job_free(job);
        return;
    }
    struct c2s_sasl *s = cc->sasl;
    if (job->db_error) {
        fail(cc, C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE);
    } else if (job->mech == C2S_SASL_EXTERNAL) {
        struct kt_jid *user = job->external_local ? account_of(cc, job->external_local) : NULL;
        if (user)
            succeed(cc, user, NULL, 0);
        else
            fail(cc, C2S_SASL_FAIL_NOT_AUTHORIZED);
    } else if (job->mech == C2S_SASL_PLAIN) {
        if (job->found) {
            succeed(cc, job->user, NULL, 0);
            job->user = NULL;
        } else {
            fail(cc, C2S_SASL_FAIL_NOT_AUTHORIZED);
        }
    } else {
        const char *first;
        enum c2s_sasl_fail r = c2s_scram_server_first(s->scram, job->found ? &job->keys : NULL,
                                                      FAKE_ITERATIONS, &first);
        if (r != C2S_SASL_OK)
            fail(cc, r);
        else
            send_sasl(cc, "challenge", first, strlen(first));
    }
    auth_job_free(job);
}

static void submit(struct c2s_conn *cc, struct auth_job *job)
{
    job->cc = cc;
    c2s_job_wait(cc);
    kt_job_submit(cc->c2s->core->workers, NULL, auth_job_run, auth_job_done, job);
}

static void start_scram(struct c2s_conn *cc, const unsigned char *msg, size_t len)
{
    struct c2s_sasl *s = cc->sasl;
    /* RFC 5802 §6 treats "y" while we offer -PLUS as a downgrade. But the
     * binding types are negotiated (XEP-0440): a client that only knows
     * tls-unique, which TLS 1.3 does not define, truthfully sends "y" while
     * we offer -PLUS with tls-exporter. Strictness is therefore a setting. */
    bool downgrade_check = s->plus_offered && cc->c2s->conf->strict_channel_binding;
    enum c2s_sasl_fail r = c2s_scram_start(s->mech, msg, len, downgrade_check, &s->scram);
    if (r != C2S_SASL_OK) {
        fail(cc, r);
        return;
    }
    if (c2s_scram_authzid(s->scram)) {
        struct kt_jid *az = kt_jid_parse(c2s_scram_authzid(s->scram));
        struct kt_jid *me = account_of(cc, c2s_scram_username(s->scram));
        bool ok = az && me && kt_jid_equal(az, me);
        kt_jid_free(&az);
        kt_jid_free(&me);
        if (!ok) {
            fail(cc, C2S_SASL_FAIL_INVALID_AUTHZID);
            return;
        }
    }
    struct auth_job *job = kt_new(struct auth_job);
    job->mech = s->mech;
    job->hash = c2s_scram_hash(s->scram);
    job->user = account_of(cc, c2s_scram_username(s->scram));
    if (job->user)
        s->user = kt_jid_dup(job->user);
    submit(cc, job);
}

static void start_plain(struct c2s_conn *cc, const unsigned char *msg, size_t len)
{
    struct c2s_plain *plain = NULL;
    enum c2s_sasl_fail r = c2s_plain_parse(msg, len, &plain);
    if (r != C2S_SASL_OK) {
        fail(cc, r);
        return;
    }
    struct kt_jid *user = account_of(cc, plain->authcid);
    if (plain->authzid) {
        struct kt_jid *az = kt_jid_parse(plain->authzid);
        bool ok = az && user && kt_jid_equal(az, user);
        kt_jid_free(&az);
        if (!ok) {
            kt_jid_free(&user);
            c2s_plain_free(&plain);
            fail(cc, C2S_SASL_FAIL_INVALID_AUTHZID);
            return;
        }
    }
    struct auth_job *job = kt_new(struct auth_job);
    job->mech = C2S_SASL_PLAIN;
    job->hash = KT_SCRAM_SHA256;
    job->user = user;
    job->plain = plain;
    submit(cc, job);
}

static void start_external(struct c2s_conn *cc, const unsigned char *msg, size_t len)
{
    char *authzid = NULL;
    enum c2s_sasl_fail r = c2s_external_parse(msg, len, &authzid);
    if (r != C2S_SASL_OK) {
        fail(cc, r);
        return;
    }
    SSL *ssl = kt_conn_ssl(cc->conn);
    struct auth_job *job = kt_new(struct auth_job);
    job->mech = C2S_SASL_EXTERNAL;
    job->external = kt_core_external_auth(cc->c2s->core, &job->external_data);
    job->cert = SSL_get1_peer_certificate(ssl);
    job->chain = SSL_get_peer_cert_chain(ssl); /* owned by ssl, which outlives the job */
    job->authzid = authzid;
    submit(cc, job);
}

static void scram_final(struct c2s_conn *cc, const unsigned char *msg, size_t len)
{
    struct c2s_sasl *s = cc->sasl;
    unsigned char cb[C2S_SASL_CB_MAX];
    int cb_len = -1;
    const char *cb_name = c2s_scram_cb_name(s->scram);
    if (cb_name)
        cb_len = c2s_sasl_cb_data(kt_conn_ssl(cc->conn), cb_name, cb);
    const char *final;
    enum c2s_sasl_fail r = c2s_scram_finish(s->scram, msg, len, cb_len > 0 ? cb : NULL,
                                            cb_len > 0 ? (size_t)cb_len : 0, &final);
    if (r != C2S_SASL_OK || !s->user) {
        fail(cc, r != C2S_SASL_OK ? r : C2S_SASL_FAIL_NOT_AUTHORIZED);
        return;
    }
    struct kt_jid *user = s->user;
    s->user = NULL;
    succeed(cc, user, final, strlen(final));
}

void c2s_auth_element(struct c2s_conn *cc, struct kt_xml *el)
{
    struct c2s_sasl *s = sasl_of(cc);
    char *text = kt_xml_text(el);
    unsigned char *msg = NULL;
    size_t len = 0;
    if (strcmp(el->name, "abort") == 0) {
        fail(cc, C2S_SASL_FAIL_ABORTED);
    } else if (strcmp(el->name, "auth") == 0) {
        reset_exchange(s);
        enum c2s_sasl_mech m;
        const char *name = kt_xml_attr(el, "mechanism");
        enum c2s_sasl_fail r;
        if (!name || c2s_sasl_mech_from_name(name, &m) < 0 || !offered(cc, m)) {
            fail(cc, C2S_SASL_FAIL_INVALID_MECHANISM);
        } else if (!c2s_ip_auth_allowed(cc->c2s, cc->ip)) {
            fail(cc, C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE);
        } else if ((r = c2s_sasl_decode(text, &msg, &len)) != C2S_SASL_OK) {
            fail(cc, r);
        } else {
            s->mech = m;
            s->mech_chosen = true;
            if (!msg && m != C2S_SASL_EXTERNAL)
                send_sasl(cc, "challenge", "", 0); /* no initial response: ask for it */
            else if (c2s_sasl_mech_is_scram(m))
                start_scram(cc, msg, len);
            else if (m == C2S_SASL_PLAIN)
                start_plain(cc, msg, len);
            else
                start_external(cc, msg, len);
        }
    } else if (strcmp(el->name, "response") == 0 && s->mech_chosen) {
        enum c2s_sasl_fail r = c2s_sasl_decode(text, &msg, &len);
        if (r != C2S_SASL_OK)
            fail(cc, r);
        else if (!msg)
            fail(cc, C2S_SASL_FAIL_MALFORMED_REQUEST);
        else if (c2s_sasl_mech_is_scram(s->mech) && s->scram)
            scram_final(cc, msg, len);
        else if (c2s_sasl_mech_is_scram(s->mech))
            start_scram(cc, msg, len);
        else if (s->mech == C2S_SASL_PLAIN)
            start_plain(cc, msg, len);
        else
            start_external(cc, msg, len);
    } else {
        fail(cc, C2S_SASL_FAIL_MALFORMED_REQUEST);
    }
    free(msg);
    free(text);
}
