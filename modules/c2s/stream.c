/* Client streams (RFC 6120 §4-§8): the state machine of one connection.
 *
 * A connection goes: stream header -> [STARTTLS -> restart] -> SASL ->
 * restart -> bind -> stanzas. Each restart gets a fresh parser
 * (kt_xmlstream_reset), and a STARTTLS request followed by more data in the
 * same read is refused: those bytes were sent in plaintext before the
 * handshake and must not be trusted after it. Before authentication the
 * stanza size limit is max_stanza_preauth; after it, max_stanza.
 *
 * After binding, the server owns `from`: a client may send its full or bare
 * JID (or nothing) and the server stamps the full JID; anything else is
 * the stream error invalid-from. Stanzas then go to the router on this I/O
 * thread; hooks never block.
 *
 * Everything here runs on the connection's loop. A worker job (SASL) holds
 * a pointer to the c2s_conn, so a connection that closes while a job runs is
 * kept until the job's completion comes back (`gone`). */
#include "config.h"
#include "modules/c2s/c2s.h"

#include <kontalk/buf.h>
#include <kontalk/log.h>
#include <kontalk/router.h>
#include <kontalk/scram.h>
#include <kontalk/tls.h>

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct kt_conn_callbacks conn_callbacks;
static const struct kt_xmlstream_callbacks xml_callbacks;
static const struct kt_session_ops session_ops;

static void set_prefix(struct c2s_conn *cc)
{
    snprintf(cc->prefix, sizeof(cc->prefix), "c2s[%llu] %s", kt_conn_id(cc->conn),
             cc->full ? cc->full->full : cc->user ? cc->user->full : kt_conn_peer(cc->conn));
}

static void xml_limits(const struct c2s_conf *conf, bool authenticated,
                       struct kt_xmlstream_limits *out)
{
    out->max_stanza_bytes =
        (size_t)(authenticated ? conf->max_stanza : conf->max_stanza_preauth);
    out->max_depth = (unsigned)conf->max_depth;
    out->max_attrs = (unsigned)conf->max_attrs;
    out->max_children = (unsigned)conf->max_children;
}

bool c2s_conn_dead(struct c2s_conn *cc)
{
    return cc->gone || cc->state == C2S_CLOSING;
}

void c2s_write_str(struct c2s_conn *cc, const char *s)
{
    if (!cc->gone)
        kt_conn_write(cc->conn, s, strlen(s));
}

void c2s_write_xml(struct c2s_conn *cc, const struct kt_xml *el)
{
    struct kt_buf b = {0};
    kt_xml_serialize(el, KT_NS_CLIENT, &b);
    if (!cc->gone)
        kt_conn_write(cc->conn, b.data, b.len);
    kt_buf_free(&b);
}

/* Every header we send, restarts included, gets a new stream id (RFC 6120
 * §4.7.3). */
static void send_header(struct c2s_conn *cc)
{
    unsigned char rnd[9];
    RAND_bytes(rnd, sizeof(rnd));
    char *id = kt_base64_encode(rnd, sizeof(rnd));
    snprintf(cc->stream_id, sizeof(cc->stream_id), "%s", id);
    free(id);
    struct kt_buf b = {0};
    kt_buf_puts(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams' id='");
    kt_buf_puts(&b, cc->stream_id);
    kt_buf_puts(&b, "' from='");
    kt_buf_append_xml_escaped(&b, cc->stream_from, strlen(cc->stream_from));
    kt_buf_puts(&b, "' version='1.0' xml:lang='en'>");
    kt_conn_write(cc->conn, b.data, b.len);
    kt_buf_free(&b);
    cc->header_sent = true;
}

/* The stream is ending: from now on stanzas for this resource are routed
 * elsewhere (a busy loop of re-deliveries to a closing stream otherwise). */
void c2s_announce_unavailable(struct c2s *c2s, const struct kt_jid *full)
{
    struct kt_xml *p = kt_xml_new("presence", KT_NS_CLIENT);
    kt_xml_set_attr(p, "type", "unavailable");
    kt_xml_set_attr(p, "from", full->full);
    struct kt_stanza *st = kt_stanza_new(p);
    kt_router_dispatch(c2s->core->router, st);
    kt_stanza_unref(&st);
}

/* The resource leaves: contacts learn it (RFC 6121 §4.5.3) before the
 * session, which the session manager needs for that, is unbound. */
static void end_session(struct c2s_conn *cc)
{
    if (cc->presence && cc->full)
        c2s_announce_unavailable(cc->c2s, cc->full);
    kt_stanza_unref(&cc->presence);
    if (cc->session)
        kt_session_unbind(cc->c2s->core->sessions, cc->session);
}

static void enter_closing(struct c2s_conn *cc)
{
    cc->state = C2S_CLOSING;
    end_session(cc);
}

void c2s_stream_error(struct c2s_conn *cc, enum kt_stream_err err, const char *text)
{
    c2s_stream_error_extra(cc, err, text, NULL);
}

void c2s_stream_error_extra(struct c2s_conn *cc, enum kt_stream_err err, const char *text,
                            const char *extra)
{
    if (c2s_conn_dead(cc))
        return;
    if (!cc->stream_from)
        cc->stream_from = kt_strdup(cc->c2s->core->network);
    if (!cc->header_sent)
        send_header(cc);
    kt_log_prefix(err == KT_XE_SYSTEM_SHUTDOWN ? KT_LOG_DEBUG : KT_LOG_INFO, cc->prefix,
                  "stream error %s%s%s", kt_stream_err_name(err), text ? ": " : "",
                  text ? text : "");
    struct kt_buf b = {0};
    kt_buf_printf(&b, "<stream:error><%s xmlns='" KT_NS_STREAMS "'/>", kt_stream_err_name(err));
    if (text) {
        kt_buf_puts(&b, "<text xmlns='" KT_NS_STREAMS "'>");
        kt_buf_append_xml_escaped(&b, text, strlen(text));
        kt_buf_puts(&b, "</text>");
    }
    if (extra)
        kt_buf_puts(&b, extra);
    kt_buf_puts(&b, "</stream:error></stream:stream>");
    kt_conn_write(cc->conn, b.data, b.len);
    kt_buf_free(&b);
    enter_closing(cc);
    kt_conn_close(cc->conn);
}

void c2s_send_features(struct c2s_conn *cc)
{
    struct kt_xml *f = kt_xml_new("features", NS_STREAM);
    if (!kt_conn_ssl(cc->conn)) {
        struct kt_xml *tls = kt_xml_add_child(f, "starttls", NS_TLS);
        kt_xml_add_child(tls, "required", NS_TLS);
    } else if (!cc->authenticated) {
        c2s_auth_features(cc, f);
        c2s_register_features(cc, f);
    } else {
        kt_xml_add_child(f, "bind", NS_BIND);
        struct kt_xml *s = kt_xml_add_child(f, "session", NS_SESSION);
        kt_xml_add_child(s, "optional", NS_SESSION);
        kt_xml_add_child(f, "sm", "urn:xmpp:sm:3");
        kt_xml_add_child(f, "csi", "urn:xmpp:csi:0");
    }
    /* The stream: prefix is declared on the header we sent. */
    struct kt_buf b = {0};
    kt_buf_puts(&b, "<stream:features>");
    for (struct kt_xml *c = kt_xml_first_element(f); c; c = kt_xml_next_element(c))
        kt_xml_serialize(c, KT_NS_CLIENT, &b);
    kt_buf_puts(&b, "</stream:features>");
    kt_conn_write(cc->conn, b.data, b.len);
    kt_buf_free(&b);
    kt_xml_free(&f);
}

/* --- timers: authentication deadline, then keepalive pings --- */

static void arm_timer(struct c2s_conn *cc, uint64_t ms);

static void send_ping(struct c2s_conn *cc)
{
    snprintf(cc->ping_id, sizeof(cc->ping_id), "c2s-ping-%llu", ++cc->ping_seq);
    struct kt_xml *iq = kt_xml_new("iq", KT_NS_CLIENT);
    kt_xml_set_attr(iq, "type", "get");
    kt_xml_set_attr(iq, "id", cc->ping_id);
    kt_xml_set_attr(iq, "from", cc->c2s->core->host);
    kt_xml_set_attr(iq, "to", cc->full->full);
    kt_xml_add_child(iq, "ping", NS_PING);
    struct kt_stanza *st = kt_stanza_new(iq);
    c2s_write_stanza(cc, st);
    kt_stanza_unref(&st);
    cc->ping_sent_ms = kt_now_ms();
}

static void timer_fired(struct kt_loop *loop, void *data)
{
    (void)loop;
    struct c2s_conn *cc = data;
    const struct c2s_conf *conf = cc->c2s->conf;
    cc->timer = NULL;
    if (c2s_conn_dead(cc))
        return;
    uint64_t now = kt_now_ms();
    if (!cc->full) {
        /* Not bound within auth_timeout of connecting. */
        c2s_stream_error(cc, KT_XE_CONNECTION_TIMEOUT, NULL);
        return;
    }
    uint64_t interval = (uint64_t)conf->ping_interval * 1000;
    uint64_t timeout = (uint64_t)conf->ping_timeout * 1000;
    if (cc->ping_sent_ms) {
        if (now - cc->ping_sent_ms >= timeout) {
            c2s_stream_error(cc, KT_XE_CONNECTION_TIMEOUT, "no answer to ping");
            return;
        }
        arm_timer(cc, timeout - (now - cc->ping_sent_ms));
        return;
    }
    if (now - cc->last_read_ms >= interval) {
        send_ping(cc);
        arm_timer(cc, timeout);
        return;
    }
    arm_timer(cc, interval - (now - cc->last_read_ms));
}

static void arm_timer(struct c2s_conn *cc, uint64_t ms)
{
    kt_timer_cancel(&cc->timer);
    cc->timer = kt_timer_add(cc->loop, ms, timer_fired, cc);
}

/* --- lifecycle --- */

static void conn_list_add(struct c2s_conn *cc)
{
    struct c2s_conn **head = &cc->c2s->by_loop[cc->loop_index];
    cc->next = *head;
    if (*head)
        (*head)->prev = cc;
    *head = cc;
}

static void conn_list_del(struct c2s_conn *cc)
{
    struct c2s_conn **head = &cc->c2s->by_loop[cc->loop_index];
    if (cc->prev)
        cc->prev->next = cc->next;
    else if (*head == cc)
        *head = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    cc->prev = cc->next = NULL;
}

void c2s_conn_accept(struct c2s *c2s, struct kt_loop *loop, int fd, bool direct_tls)
{
    struct c2s_conn *cc = kt_new(struct c2s_conn);
    cc->c2s = c2s;
    cc->loop = loop;
    cc->loop_index = kt_loop_index(loop);
    cc->direct_tls = direct_tls;
    struct kt_conn_limits limits = {
        .max_output = (size_t)c2s->conf->max_output,
        .rate_bytes = c2s->conf->rate,
    };
    SSL *ssl = direct_tls ? kt_tls_new_ssl(c2s->core->tls) : NULL;
    cc->conn = kt_conn_new(loop, fd, ssl, &limits, &conn_callbacks, cc);
    snprintf(cc->ip, sizeof(cc->ip), "%s", kt_conn_peer_ip(cc->conn));
    set_prefix(cc);
    struct kt_xmlstream_limits xl;
    xml_limits(c2s->conf, false, &xl);
    cc->xs = kt_xmlstream_new(&xl, &xml_callbacks, cc);
    cc->last_read_ms = kt_now_ms();
    conn_list_add(cc);
    kt_core_conn_opened(c2s->core);

    unsigned n = atomic_fetch_add(&c2s->nconns, 1) + 1;
    if (atomic_load(&c2s->stopping))
        cc->reject = KT_XE_SYSTEM_SHUTDOWN;
    else if (n > (unsigned long long)c2s->conf->max_connections)
        cc->reject = KT_XE_POLICY_VIOLATION;
    else if (!c2s_ip_conn_open(c2s, cc->ip))
        cc->reject = KT_XE_POLICY_VIOLATION;
    arm_timer(cc, (uint64_t)c2s->conf->auth_timeout * 1000);
    kt_log_prefix(KT_LOG_DEBUG, cc->prefix, "connected%s", direct_tls ? " (direct TLS)" : "");
}

void c2s_note_gone(struct c2s *c2s)
{
    if (atomic_load(&c2s->nconns) == 0 && atomic_load(&c2s->ndetached) == 0) {
        pthread_mutex_lock(&c2s->lock);
        pthread_cond_broadcast(&c2s->all_closed);
        pthread_mutex_unlock(&c2s->lock);
    }
}

static void conn_free(struct c2s_conn *cc)
{
    struct c2s *c2s = cc->c2s;
    kt_timer_cancel(&cc->timer);
    if (cc->session) {
        kt_session_close(c2s->core->sessions, cc->session);
        kt_session_unref(&cc->session);
    }
    c2s_sm_free(cc);
    c2s_csi_free(cc);
    kt_stanza_unref(&cc->presence);
    c2s_auth_free(cc);
    kt_xmlstream_free(&cc->xs);
    kt_jid_free(&cc->user);
    kt_jid_free(&cc->full);
    free(cc->stream_from);
    free(cc);
    atomic_fetch_sub(&c2s->nconns, 1);
    c2s_note_gone(c2s);
}

static void conn_closed(struct kt_conn *c, enum kt_conn_end why, void *ud)
{
    (void)c;
    struct c2s_conn *cc = ud;
    static const char *const reasons[] = {"closed", "closed by the client", "I/O error",
                                          "TLS error", "not reading (output limit)"};
    kt_log_prefix(KT_LOG_DEBUG, cc->prefix, "disconnected: %s", reasons[why]);
    conn_list_del(cc);
    if (!cc->reject)
        c2s_ip_conn_close(cc->c2s, cc->ip);
    kt_core_conn_closed(cc->c2s->core);
    /* A lost connection (not a closed stream) with resumption enabled keeps
     * its session for a while (XEP-0198); otherwise the session ends now:
     * no more deliveries, and what the client did not acknowledge is routed
     * again. */
    bool lost = why == KT_CONN_EOF || why == KT_CONN_IO_ERROR || why == KT_CONN_TLS_ERROR;
    bool detached = lost && !cc->peer_closed_stream && cc->state != C2S_CLOSING &&
                    c2s_sm_detach(cc);
    if (!detached) {
        end_session(cc);
        c2s_csi_flush(cc); /* held presence is dropped with the stream; nothing to re-route */
        c2s_sm_end(cc);
    }
    cc->gone = true;
    cc->state = C2S_CLOSING;
    kt_timer_cancel(&cc->timer);
    if (!cc->job_pending)
        conn_free(cc);
}

void c2s_job_wait(struct c2s_conn *cc)
{
    cc->job_pending = true;
    cc->state = C2S_AUTH_WAIT;
    kt_conn_pause(cc->conn, true);
}

bool c2s_job_finished(struct c2s_conn *cc)
{
    cc->job_pending = false;
    if (cc->gone) {
        conn_free(cc);
        return false;
    }
    cc->state = C2S_OPEN;
    kt_conn_pause(cc->conn, false);
    return true;
}

/* --- stream header --- */

/* RFC 6120 §4.7.5: we speak 1.0; a higher version is answered with ours
 * (the client decides), a missing or pre-1.0 version is not supported. */
static bool version_ok(const char *v)
{
    if (!v)
        return false;
    char *end;
    long major = strtol(v, &end, 10);
    return end != v && *end == '.' && major >= 1;
}

static void stream_open(void *data, const struct kt_xml *hdr)
{
    struct c2s_conn *cc = data;
    struct kt_core *core = cc->c2s->core;
    const char *to = kt_xml_attr(hdr, "to");
    struct kt_jid *to_jid = to ? kt_jid_parse(to) : NULL;
    const char *domain = to_jid ? to_jid->domain : core->network;
    free(cc->stream_from);
    cc->stream_from = kt_strdup(domain);
    cc->state = C2S_OPEN;

    if (strcmp(hdr->name, "stream") != 0 || !hdr->ns || strcmp(hdr->ns, NS_STREAM) != 0) {
        c2s_stream_error(cc, KT_XE_INVALID_NAMESPACE, NULL);
    } else if (!kt_xml_attr_ns(hdr, KT_NS_XMLNS, "xmlns") ||
               strcmp(kt_xml_attr_ns(hdr, KT_NS_XMLNS, "xmlns"), KT_NS_CLIENT) != 0) {
        c2s_stream_error(cc, KT_XE_INVALID_NAMESPACE, "the content namespace must be jabber:client");
    } else if (!version_ok(kt_xml_attr(hdr, "version"))) {
        c2s_stream_error(cc, KT_XE_UNSUPPORTED_VERSION, "XMPP 1.0 streams only");
    } else if ((to && !to_jid) || (to_jid && (to_jid->local || to_jid->resource)) ||
               (strcmp(domain, core->network) != 0 && strcmp(domain, core->host) != 0)) {
        c2s_stream_error(cc, KT_XE_HOST_UNKNOWN, NULL);
    } else if (cc->reject) {
        c2s_stream_error(cc, cc->reject, cc->reject == KT_XE_POLICY_VIOLATION
                                             ? "too many connections"
                                             : NULL);
    } else {
        send_header(cc);
        c2s_send_features(cc);
    }
    kt_jid_free(&to_jid);
}

static void stream_close(void *data)
{
    struct c2s_conn *cc = data;
    cc->peer_closed_stream = true;
    if (c2s_conn_dead(cc))
        return;
    c2s_write_str(cc, "</stream:stream>");
    enter_closing(cc);
    kt_conn_close(cc->conn);
}

static void stream_xml_error(void *data, enum kt_stream_err err, const char *text)
{
    c2s_stream_error(data, err, text);
}

/* --- STARTTLS --- */

static void starttls(struct c2s_conn *cc)
{
    if (kt_conn_ssl(cc->conn) || !cc->c2s->core->tls) {
        c2s_stream_error(cc, KT_XE_POLICY_VIOLATION, "TLS is not available again");
        return;
    }
    c2s_write_str(cc, "<proceed xmlns='" NS_TLS "'/>");
    kt_conn_start_tls(cc->conn, kt_tls_new_ssl(cc->c2s->core->tls));
    kt_xmlstream_reset(cc->xs);
    cc->state = C2S_TLS;
}

static void tls_ready(struct kt_conn *c, void *ud)
{
    (void)c;
    struct c2s_conn *cc = ud;
    if (cc->state == C2S_TLS)
        cc->state = C2S_OPENING;
}

/* --- resource binding --- */

static void send_iq_error(struct c2s_conn *cc, struct kt_stanza *st, enum kt_stanza_err err)
{
    struct kt_stanza *reply = kt_stanza_error_reply(st, err, NULL);
    if (reply) {
        kt_stanza_set_to(reply, NULL); /* answered by the server to this stream */
        kt_stanza_set_from(reply, NULL);
        c2s_write_stanza(cc, reply);
        kt_stanza_unref(&reply);
    }
}

static void deliver(void *owner, struct kt_stanza *st);
static void replaced(void *owner);

static const struct kt_session_ops session_ops = {
    .deliver = deliver,
    .replaced = replaced,
};

static char *random_resource(void)
{
    unsigned char rnd[9];
    RAND_bytes(rnd, sizeof(rnd));
    char *r = kt_base64_encode(rnd, sizeof(rnd));
    for (char *p = r; *p; p++)
        if (*p == '/' || *p == '+')
            *p = 'x';
    return r;
}

static void bind(struct c2s_conn *cc, struct kt_stanza *st, const struct kt_xml *req)
{
    if (cc->full) {
        send_iq_error(cc, st, KT_SE_NOT_ALLOWED); /* one resource per stream */
        return;
    }
    const struct kt_xml *res = kt_xml_child(req, "resource", NS_BIND);
    char *resource = res ? kt_xml_text(res) : NULL;
    if (!resource || !*resource) {
        free(resource);
        resource = random_resource();
    }
    struct kt_jid *full = kt_jid_new(cc->user->local, cc->user->domain, resource);
    free(resource);
    if (!full) {
        send_iq_error(cc, st, KT_SE_BAD_REQUEST);
        return;
    }
    struct kt_session *s = kt_session_new(cc->loop, full, &session_ops, cc);
    bool replace = cc->c2s->conf->resource_conflict == C2S_CONFLICT_REPLACE;
    if (kt_session_bind(cc->c2s->core->sessions, s, replace) == KT_BIND_CONFLICT) {
        kt_session_close(cc->c2s->core->sessions, s);
        kt_session_unref(&s);
        kt_jid_free(&full);
        send_iq_error(cc, st, KT_SE_CONFLICT);
        return;
    }
    cc->session = s;
    cc->full = full;
    struct kt_buf b = {0};
    kt_buf_puts(&b, "<iq type='result' id='");
    const char *id = kt_stanza_id(st);
    kt_buf_append_xml_escaped(&b, id, strlen(id));
    kt_buf_puts(&b, "'><bind xmlns='" NS_BIND "'><jid>");
    kt_buf_append_xml_escaped(&b, full->full, strlen(full->full));
    kt_buf_puts(&b, "</jid></bind></iq>");
    kt_conn_write(cc->conn, b.data, b.len);
    kt_buf_free(&b);
    c2s_conn_bound(cc);
    kt_log_prefix(KT_LOG_INFO, cc->prefix, "bound");
}

void c2s_conn_bound(struct c2s_conn *cc)
{
    set_prefix(cc);
    /* From now on the timer is the keepalive ping. */
    if (cc->c2s->conf->ping_interval > 0)
        arm_timer(cc, (uint64_t)cc->c2s->conf->ping_interval * 1000);
    else
        kt_timer_cancel(&cc->timer);
}

const struct kt_session_ops *c2s_session_ops(void)
{
    return &session_ops;
}

/* Handles the iqs the stream itself answers (bind, session, our pings).
 * Returns true if st was consumed. */
static bool stream_iq(struct c2s_conn *cc, struct kt_stanza *st)
{
    enum kt_stanza_type type = kt_stanza_type(st);
    const char *ns = kt_stanza_ns(st);
    if ((type & (KT_TYPE_RESULT | KT_TYPE_ERROR)) && cc->ping_sent_ms && kt_stanza_id(st) &&
        strcmp(kt_stanza_id(st), cc->ping_id) == 0) {
        cc->ping_sent_ms = 0;
        return true;
    }
    if (type != KT_TYPE_SET || !ns || kt_stanza_to(st))
        return false;
    if (strcmp(ns, NS_BIND) == 0) {
        bind(cc, st, kt_xml_first_element(kt_stanza_xml(st)));
        return true;
    }
    if (strcmp(ns, NS_SESSION) == 0 && cc->full) {
        /* RFC 3921 session establishment: a no-op kept for old clients. */
        struct kt_stanza *r = kt_stanza_iq_result(st);
        kt_stanza_set_to(r, NULL);
        kt_stanza_set_from(r, NULL);
        c2s_write_stanza(cc, r);
        kt_stanza_unref(&r);
        return true;
    }
    return false;
}

/* --- stanzas --- */

static void stanza_in(struct c2s_conn *cc, struct kt_xml *el)
{
    struct kt_stanza *st = kt_stanza_new(el);
    c2s_sm_count_in(cc, st);
    if (kt_stanza_kind(st) == KT_KIND_IQ && stream_iq(cc, st)) {
        kt_stanza_unref(&st);
        return;
    }
    if (!cc->full) {
        kt_stanza_unref(&st);
        c2s_stream_error(cc, KT_XE_NOT_AUTHORIZED, "bind a resource first");
        return;
    }
    /* The client may name itself (full or bare JID); anyone else is a spoof.
     * A from that does not even parse is invalid-from as well. */
    const char *from_attr = kt_xml_attr(el, "from");
    if (from_attr) {
        const struct kt_jid *from = kt_stanza_from(st);
        bool own = from && (kt_jid_equal(from, cc->full) ||
                            (kt_jid_is_bare(from) && kt_jid_bare_equal(from, cc->full)));
        if (!own) {
            kt_stanza_unref(&st);
            c2s_stream_error(cc, KT_XE_INVALID_FROM, NULL);
            return;
        }
    }
    kt_stanza_set_from(st, cc->full);
    if (cc->session)
        kt_session_touch(cc->session); /* not idle: no push wake-ups needed (sm) */
    if (kt_stanza_kind(st) == KT_KIND_PRESENCE && !kt_stanza_to(st)) {
        if (kt_stanza_type(st) == KT_TYPE_AVAILABLE) {
            kt_stanza_unref(&cc->presence);
            cc->presence = kt_stanza_keep(st);
        } else if (kt_stanza_type(st) == KT_TYPE_UNAVAILABLE) {
            kt_stanza_unref(&cc->presence);
        }
    }
    kt_router_dispatch(cc->c2s->core->router, st);
    kt_stanza_unref(&st);
}

static void element(void *data, struct kt_xml *el)
{
    struct c2s_conn *cc = data;
    if (c2s_conn_dead(cc) || cc->state != C2S_OPEN) {
        kt_xml_free(&el);
        return;
    }
    if (!kt_conn_ssl(cc->conn)) {
        /* Only STARTTLS before TLS; SASL must wait for encryption. */
        if (strcmp(el->name, "starttls") == 0 && el->ns && strcmp(el->ns, NS_TLS) == 0)
            starttls(cc);
        else if (el->ns && strcmp(el->ns, NS_SASL) == 0 && strcmp(el->name, "auth") == 0)
            c2s_write_str(cc, "<failure xmlns='" NS_SASL "'><encryption-required/></failure>");
        else
            c2s_stream_error(cc, KT_XE_NOT_AUTHORIZED, "STARTTLS is required");
        kt_xml_free(&el);
        return;
    }
    if (!cc->authenticated) {
        if (el->ns && strcmp(el->ns, NS_SASL) == 0) {
            c2s_auth_element(cc, el);
            kt_xml_free(&el);
        } else if (c2s_register_iq(cc, el)) {
            /* taken */
        } else {
            kt_xml_free(&el);
            c2s_stream_error(cc, KT_XE_NOT_AUTHORIZED, NULL);
        }
        return;
    }
    if (el->ns && strcmp(el->ns, "urn:xmpp:sm:3") == 0) {
        c2s_sm_element(cc, el);
        kt_xml_free(&el);
        return;
    }
    if (el->ns && strcmp(el->ns, "urn:xmpp:csi:0") == 0) {
        c2s_csi_element(cc, el);
        kt_xml_free(&el);
        return;
    }
    if (el->ns && strcmp(el->ns, KT_NS_CLIENT) == 0 &&
        (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
         strcmp(el->name, "iq") == 0)) {
        stanza_in(cc, el); /* takes el */
        return;
    }
    kt_xml_free(&el);
    c2s_stream_error(cc, KT_XE_UNSUPPORTED_STANZA_TYPE, NULL);
}

void c2s_authenticated(struct c2s_conn *cc, struct kt_jid *user)
{
    cc->authenticated = true;
    cc->user = user;
    set_prefix(cc);
    atomic_fetch_add(&cc->c2s->logins, 1);
    kt_log_prefix(KT_LOG_INFO, cc->prefix, "authenticated from %s", kt_conn_peer(cc->conn));
    kt_xmlstream_reset(cc->xs);
    struct kt_xmlstream_limits xl;
    xml_limits(cc->c2s->conf, true, &xl);
    kt_xmlstream_set_limits(cc->xs, &xl);
    cc->state = C2S_OPENING;
}

static void conn_data(struct kt_conn *c, const char *buf, size_t len, void *ud)
{
    (void)c;
    struct c2s_conn *cc = ud;
    if (c2s_conn_dead(cc))
        return;
    cc->last_read_ms = kt_now_ms();
    if (cc->full && cc->ping_sent_ms)
        cc->ping_sent_ms = 0; /* any traffic proves the client is alive */
    kt_xmlstream_feed(cc->xs, buf, len);
    if (cc->state == C2S_TLS && kt_xmlstream_discarded_data(cc->xs)) {
        /* Bytes sent after <starttls/> without waiting for <proceed/>:
         * plaintext that must never be read as if it were protected. */
        kt_log_prefix(KT_LOG_INFO, cc->prefix, "data after <starttls/>: closing");
        cc->state = C2S_CLOSING;
        kt_conn_abort(cc->conn);
    }
}

/* --- delivery to the client --- */

void c2s_write_stanza(struct c2s_conn *cc, struct kt_stanza *st)
{
    if (c2s_conn_dead(cc) || !c2s_sm_track_out(cc, st))
        return;
    size_t len;
    const char *wire = kt_stanza_wire(st, &len);
    kt_conn_write(cc->conn, wire, len);
    c2s_sm_after_write(cc);
}

static void deliver(void *owner, struct kt_stanza *st)
{
    struct c2s_conn *cc = owner;
    if (c2s_conn_dead(cc)) {
        /* Closing, but the session is still ours: route it again rather
         * than lose it (the session is unbound by the time this runs). */
        kt_router_dispatch(cc->c2s->core->router, st);
        return;
    }
    if (kt_router_run_hooks(cc->c2s->core->router, KT_HOOK_OUT, st) == KT_HANDLED)
        return;
    if (c2s_csi_hold(cc, st))
        return;
    c2s_write_stanza(cc, st);
}

static void replaced(void *owner)
{
    struct c2s_conn *cc = owner;
    kt_log_prefix(KT_LOG_INFO, cc->prefix, "replaced by a new session for the same resource");
    c2s_stream_error(cc, KT_XE_CONFLICT, "replaced by a new connection");
}

/* The route of the network domain and the host: stanzas to a bound full
 * JID go to its session; everything else passes (mod_sm's LOCAL hooks take
 * bare JIDs, the router bounces the rest). */
enum kt_verdict c2s_route_deliver(struct kt_stanza *st, void *data)
{
    struct c2s *c2s = data;
    const struct kt_jid *to = kt_stanza_to(st);
    if (!to || !to->resource)
        return KT_PASS;
    struct kt_session *s = kt_sessions_find(c2s->core->sessions, to);
    if (!s)
        return KT_PASS;
    bool ok = kt_session_deliver(s, st);
    kt_session_unref(&s);
    return ok ? KT_HANDLED : KT_PASS;
}

unsigned c2s_release_idle_parsers(struct c2s *c2s, unsigned loop_index, uint64_t idle_ms)
{
    uint64_t now = kt_now_ms();
    unsigned n = 0;
    for (struct c2s_conn *cc = c2s->by_loop[loop_index]; cc; cc = cc->next)
        if (!c2s_conn_dead(cc) && cc->state == C2S_OPEN && now - cc->last_read_ms >= idle_ms &&
            kt_xmlstream_release(cc->xs))
            n++;
    return n;
}

void c2s_shutdown_loop(struct c2s *c2s, unsigned loop_index)
{
    struct c2s_conn *cc = c2s->by_loop[loop_index];
    while (cc) {
        struct c2s_conn *next = cc->next;
        if (!c2s_conn_dead(cc))
            c2s_stream_error(cc, KT_XE_SYSTEM_SHUTDOWN, NULL);
        cc = next;
    }
}

static const struct kt_conn_callbacks conn_callbacks = {
    .data = conn_data,
    .tls_ready = tls_ready,
    .closed = conn_closed,
};

static const struct kt_xmlstream_callbacks xml_callbacks = {
    .open = stream_open,
    .element = element,
    .close = stream_close,
    .error = stream_xml_error,
};
