/* In-band registration before authentication (XEP-0077, and Kontalk's phone
 * registration on top of it): c2s advertises the iq-register stream feature
 * when a module registered a handler (kt_core_set_register), and hands it
 * each <iq/> in jabber:iq:register that arrives after TLS and before SASL
 * success. The handler runs on a worker; reading from the client waits
 * meanwhile (as during a SASL job), so requests are answered in order and
 * one connection has at most one in flight. What the handler does not
 * answer gets service-unavailable. */
#include "config.h"
#include "modules/c2s/c2s.h"

#include <kontalk/log.h>

#include <stdlib.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"
#define NS_REGISTER_FEATURE "http://jabber.org/features/iq-register"

struct register_job {
    struct c2s_conn *cc;
    kt_register_fn fn;
    void *data;
    struct kt_stanza *iq;
    struct kt_stanza *reply;
    struct kt_preauth who;
};

void c2s_register_features(struct c2s_conn *cc, struct kt_xml *features)
{
    void *unused;
    if (kt_core_register(cc->c2s->core, &unused))
        kt_xml_add_child(features, "register", NS_REGISTER_FEATURE);
}

static void register_run(struct kt_db *db, void *data)
{
    struct register_job *job = data;
    job->reply = job->fn(db, job->iq, &job->who, job->data);
}

static void register_done(void *data)
{
    struct register_job *job = data;
    struct c2s_conn *cc = job->cc;
    if (c2s_job_finished(cc)) {
        if (!job->reply)
            job->reply = kt_stanza_error_reply(job->iq, KT_SE_SERVICE_UNAVAILABLE, NULL);
        if (job->reply) {
            kt_stanza_set_to(job->reply, NULL); /* an unauthenticated client has no JID */
            c2s_write_stanza(cc, job->reply);
        }
    }
    kt_stanza_unref(&job->reply);
    kt_stanza_unref(&job->iq);
    X509_free(job->who.cert);
    free(job);
}

bool c2s_register_iq(struct c2s_conn *cc, struct kt_xml *el)
{
    void *data;
    kt_register_fn fn = kt_core_register(cc->c2s->core, &data);
    if (!fn || strcmp(el->name, "iq") != 0 || !el->ns || strcmp(el->ns, KT_NS_CLIENT) != 0)
        return false;
    const struct kt_xml *query = kt_xml_first_element(el);
    if (!query || !query->ns || strcmp(query->ns, NS_REGISTER) != 0)
        return false;
    struct register_job *job = kt_new(struct register_job);
    job->cc = cc;
    job->fn = fn;
    job->data = data;
    job->iq = kt_stanza_new(el);
    job->who.ip = cc->ip;
    job->who.cert = SSL_get1_peer_certificate(kt_conn_ssl(cc->conn));
    job->who.domain = cc->stream_from;
    c2s_job_wait(cc);
    kt_job_submit(cc->c2s->core->workers, NULL, register_run, register_done, job);
    return true;
}
