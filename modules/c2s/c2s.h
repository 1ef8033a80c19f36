/* mod_c2s internals shared by its files: settings, module state, and the
 * per-connection stream state. A c2s_conn lives on one I/O thread (its
 * kt_conn's loop) and is touched only there. */
#ifndef KT_C2S_H
#define KT_C2S_H

#include <kontalk/conn.h>
#include <kontalk/core.h>
#include <kontalk/jid.h>
#include <kontalk/job.h>
#include <kontalk/loop.h>
#include <kontalk/session.h>
#include <kontalk/stanza.h>
#include <kontalk/xmlstream.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define NS_STREAM "http://etherx.jabber.org/streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_PING "urn:xmpp:ping"

enum c2s_conflict { C2S_CONFLICT_REPLACE, C2S_CONFLICT_REFUSE };

struct c2s_conf {
    long long max_stanza_preauth, max_stanza, max_depth, max_attrs, max_children;
    long long auth_timeout;
    long long max_connections, max_connections_per_ip;
    long long auth_attempts, auth_attempts_per_ip;
    long long max_output, rate;
    int resource_conflict;
    bool allow_plain;
    bool strict_channel_binding;
    long long ping_interval, ping_timeout;
    long long sm_resume_timeout, sm_max_unacked;
    long long csi_max_presence;
    long long idle_release;
};

struct c2s;

struct c2s_listener {
    struct c2s *c2s;
    int fd;
    bool direct_tls;
    char address[64];
    int port;
    struct kt_io *io;
};

struct c2s_conn;
struct c2s_sm;
struct detached;
struct sm_live;

/* Per-IP accounting: open connections and recent authentication failures. */
struct c2s_ip {
    char ip[48];
    unsigned conns;
    unsigned failures;
    uint64_t window_start_ms;
    struct c2s_ip *next;
};

struct c2s {
    struct kt_core *core;
    const struct c2s_conf *conf;
    struct c2s_listener *listeners;
    unsigned nlisteners;
    struct c2s_conn **by_loop; /* per loop: list of its connections (that loop only) */
    struct kt_timer **sweep;   /* per loop: the idle-parser release timer */
    atomic_uint nconns;
    atomic_bool stopping;
    pthread_mutex_t lock; /* ips, and the shutdown wait */
    pthread_cond_t all_closed;
    struct c2s_ip *ips[256];
    struct detached *detached; /* sessions waiting for resumption (sm.c), under lock */
    atomic_uint ndetached;
    struct sm_live *live;      /* resumable sessions with a connection (sm.c), under lock */
    atomic_ullong logins, auth_failures;
};

enum c2s_state {
    C2S_OPENING,   /* waiting for the client's stream header */
    C2S_OPEN,      /* header exchanged: TLS, SASL, bind or stanzas per the flags */
    C2S_TLS,       /* STARTTLS handshake running */
    C2S_AUTH_WAIT, /* a job holds the connection (SASL, registration, takeover); input paused */
    C2S_CLOSING,   /* stream error or close sent */
};

struct c2s_sasl;

struct c2s_conn {
    struct c2s *c2s;
    struct kt_conn *conn;
    struct kt_loop *loop;
    unsigned loop_index;
    struct kt_xmlstream *xs;
    enum c2s_state state;
    bool direct_tls;
    bool header_sent;
    bool authenticated;
    bool job_pending; /* a worker job holds a pointer to this conn */
    bool gone;        /* the kt_conn is closed: free when the job returns */
    enum kt_stream_err reject; /* refuse at the header (connection limits) */
    char stream_id[24];
    char *stream_from; /* the domain we answer as (the client's `to`) */
    struct kt_jid *user; /* authenticated account (bare), or NULL */
    struct kt_jid *full; /* bound JID, or NULL */
    struct kt_session *session;
    unsigned auth_failures;
    struct c2s_sasl *sasl;
    struct c2s_sm *sm;       /* XEP-0198 state once enabled */
    bool peer_closed_stream; /* the client sent </stream:stream> */
    struct kt_stanza *presence; /* last available broadcast presence; NULL: unavailable */
    bool csi_inactive;
    struct kt_stanza **csi_held;
    unsigned csi_nheld;
    struct kt_timer *timer; /* auth timeout before auth, ping afterwards */
    uint64_t last_read_ms;
    uint64_t ping_sent_ms;
    unsigned long long ping_seq;
    char ping_id[32];
    char ip[48];
    char prefix[160];
    struct c2s_conn *prev, *next;
};

/* register.c: in-band registration before authentication. */
void c2s_register_features(struct c2s_conn *cc, struct kt_xml *features);
/* Takes el and returns true if it is a registration iq for the handler. */
bool c2s_register_iq(struct c2s_conn *cc, struct kt_xml *el);

/* stream.c */
void c2s_conn_accept(struct c2s *c2s, struct kt_loop *loop, int fd, bool direct_tls);
void c2s_stream_error(struct c2s_conn *cc, enum kt_stream_err err, const char *text);
/* With an application-specific condition element (raw XML) after the text. */
void c2s_stream_error_extra(struct c2s_conn *cc, enum kt_stream_err err, const char *text,
                            const char *extra);
void c2s_write_xml(struct c2s_conn *cc, const struct kt_xml *el);
void c2s_write_str(struct c2s_conn *cc, const char *s);
void c2s_send_features(struct c2s_conn *cc);
void c2s_authenticated(struct c2s_conn *cc, struct kt_jid *user);
/* A worker job (or another loop) now holds cc: reading from the client
 * waits, so the stream stays in order, until c2s_job_finished. */
void c2s_job_wait(struct c2s_conn *cc);
/* The job is back. False if the connection closed meanwhile (cc is freed
 * then); otherwise reading resumes and the caller goes on with cc. */
bool c2s_job_finished(struct c2s_conn *cc);
bool c2s_conn_dead(struct c2s_conn *cc);
/* Frees the XML parser of the loop's streams quiet for `idle_ms`; returns
 * how many. */
unsigned c2s_release_idle_parsers(struct c2s *c2s, unsigned loop_index, uint64_t idle_ms);
/* Closes every connection of the calling loop with system-shutdown. */
void c2s_shutdown_loop(struct c2s *c2s, unsigned loop_index);
enum kt_verdict c2s_route_deliver(struct kt_stanza *st, void *data);
/* Writes a stanza to the client (counted and kept for XEP-0198). */
void c2s_write_stanza(struct c2s_conn *cc, struct kt_stanza *st);
const struct kt_session_ops *c2s_session_ops(void);
/* cc->full and cc->session are set: log prefix, keepalive timer. */
void c2s_conn_bound(struct c2s_conn *cc);
/* On behalf of a resource that goes away without saying so: presence
 * unavailable from full, through the router (while its session is bound). */
void c2s_announce_unavailable(struct c2s *c2s, const struct kt_jid *full);
/* Wakes c2s_stop when the last connection or detached session is gone. */
void c2s_note_gone(struct c2s *c2s);

/* sm.c */
void c2s_sm_element(struct c2s_conn *cc, struct kt_xml *el);
void c2s_sm_count_in(struct c2s_conn *cc, struct kt_stanza *st);
bool c2s_sm_track_out(struct c2s_conn *cc, struct kt_stanza *st);
void c2s_sm_after_write(struct c2s_conn *cc);
bool c2s_sm_detach(struct c2s_conn *cc);
void c2s_sm_end(struct c2s_conn *cc);
void c2s_sm_free(struct c2s_conn *cc);
void c2s_sm_shutdown(struct c2s *c2s);

/* csi.c */
void c2s_csi_element(struct c2s_conn *cc, const struct kt_xml *el);
bool c2s_csi_hold(struct c2s_conn *cc, struct kt_stanza *st);
void c2s_csi_flush(struct c2s_conn *cc);
void c2s_csi_free(struct c2s_conn *cc);

/* auth.c */
void c2s_auth_features(struct c2s_conn *cc, struct kt_xml *features);
void c2s_auth_element(struct c2s_conn *cc, struct kt_xml *el);
void c2s_auth_free(struct c2s_conn *cc);

/* mod_c2s.c: per-IP limits */
bool c2s_ip_conn_open(struct c2s *c2s, const char *ip);
void c2s_ip_conn_close(struct c2s *c2s, const char *ip);
bool c2s_ip_auth_allowed(struct c2s *c2s, const char *ip);
void c2s_ip_auth_failed(struct c2s *c2s, const char *ip);

#endif
