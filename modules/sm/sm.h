/* mod_sm internals: the module state every part of the session manager
 * shares, and each part's init function. Parts register KT_HOOK_LOCAL
 * handlers (stanzas for this node's host and users) in their init; they run
 * on I/O threads and never block: database work goes to worker jobs, and
 * the answer is dispatched from the job's completion. */
#ifndef KT_SM_H
#define KT_SM_H

#include <kontalk/config.h>
#include <kontalk/core.h>
#include <kontalk/jid.h>
#include <kontalk/job.h>
#include <kontalk/router.h>
#include <kontalk/stanza.h>

#include <stdatomic.h>
#include <time.h>

/* push.c settings (sm.push group). */
struct sm_push_conf {
    const char *url;        /* HTTP provider endpoint ("" = off) */
    const char *auth;       /* Authorization header value sent to it */
    const char *app_server; /* XEP-0357 app server JID ("" = off) */
    long long idle;         /* seconds a session may idle before a push */
    long long timeout;      /* seconds an HTTP request may take */
    const char *ca_file;    /* CA certificates for an https url ("" = system's) */
    long long interval;     /* seconds between two wake-ups of one user */
    long long retries;      /* HTTP attempts after the first */
    long long reg_id_max;   /* bytes of one registration id */
    long long queue_max;    /* wake-ups waiting for a worker */
};

enum sm_register_provider { SM_REGISTER_OFF, SM_REGISTER_DUMMY, SM_REGISTER_COMMAND };
extern const struct kt_setting sm_push_settings[];
extern const struct kt_setting sm_register_settings[];

/* register.c settings (sm.register group). */
struct sm_register_conf {
    int provider;              /* enum sm_register_provider */
    const char *dummy_code;    /* the code the dummy provider accepts */
    const char *command;       /* the command provider's program */
    long long code_expire;     /* seconds a code stays valid */
    long long throttle_attempts; /* attempts before a throttle applies */
    long long throttle_ip_delay, throttle_phone_delay, throttle_prefix_delay; /* seconds */
    long long prefix_digits;   /* digits of the prefix throttle */
    const char *terms_url;     /* service terms; "" = none */
    long long privatekey_max;  /* bytes of a parked private key */
    long long privatekey_expire; /* seconds a parked key waits for its token */
};

struct sm_conf {
    long long offline_max;    /* messages stored per user */
    long long offline_expire; /* seconds a stored message is kept */
    long long vcard_max;      /* bytes of one vCard */
    long long roster_max;     /* contacts in one roster */
    /* Kontalk (kontalk-protocol.md §2) */
    const char *key;           /* the node's OpenPGP secret key file; "" = no key */
    long long multicast_max;   /* addresses of one multicast stanza */
    long long probe_max;       /* items of one roster match (probe@) */
    long long expire_days;     /* days unused before an account is deleted; 0 = never */
    long long expire_check;    /* seconds between two account-expiry runs */
    struct sm_push_conf push;
    struct sm_register_conf reg;
};

#define SM_USER_QUEUES 16

struct sm_users;
struct sm_rcache;
struct kt_session;
struct kt_timer;

struct sm {
    struct kt_core *core;
    const struct sm_conf *conf;
    time_t started;
    struct sm_users *users; /* resources, availability, priority (users.c) */
    struct sm_rcache *rcache; /* subscriptions of users with sessions (roster.c) */
    /* Database work about one user runs in order: one of these queues,
     * picked by localpart (sm_user_queue). */
    struct kt_jobq *user_queues[SM_USER_QUEUES];
    struct kt_timer *purge_timer; /* on loop 0 */
    /* Service discovery features of the node, registered by each part at
     * init (so disco lists exactly what is implemented). */
    const char **features;
    unsigned nfeatures;
    struct sm_blocking *blocking; /* cached blocklists (blocking.c) */
    /* Named services (name@host), registered at init (named.c). */
    const struct sm_service **services;
    unsigned nservices;
    struct sm_push *push;       /* push.c */
    struct sm_expiry *expiry;   /* expiry.c */
    struct sm_keys *keys;       /* keys.c: the node key, certification */
    const struct sm_probe_remote *probe_remote; /* probe.c: other nodes' lookups, or NULL */
};

/* A Kontalk service addressed as name@host (named.c). */
struct sm_service {
    const char *name;               /* localpart: "probe" */
    const char *category, *type;    /* disco identity */
    const char *label;              /* disco identity name */
    const char *const *features;    /* disco#info features, NULL-terminated */
    /* Every stanza to the service except disco of the service itself;
     * KT_PASS gets service-unavailable. */
    enum kt_verdict (*fn)(struct sm *sm, struct kt_stanza *st, void *data);
    void *data;
};
/* Registers svc (static storage). Init only, before sm_disco_init. */
void sm_service_add(struct sm *sm, const struct sm_service *svc);
/* The service `to` addresses (name@host or name@network), or NULL. */
const struct sm_service *sm_service_of(const struct sm *sm, const struct kt_jid *to);
/* Named services' hook runs after blocking's, before every other part. */
#define SM_PRIO_SERVICES 500

/* disco.c: a disco#info <query/> in reply with one identity (name may be
 * NULL); add features with sm_disco_feature. */
struct kt_xml *sm_disco_info_query(struct kt_stanza *reply, const char *category,
                                   const char *type, const char *name);
void sm_disco_feature(struct kt_xml *query, const char *var);
/* Registers a disco#info feature of the node (a static string). Init only. */
void sm_feature_add(struct sm *sm, const char *var);
/* Whether jid's domain is this node's host or the network domain. */
bool sm_is_local(const struct sm *sm, const struct kt_jid *jid);
/* Whether st is addressed to the server itself (no to, the host, or the
 * network domain without a localpart). */
bool sm_to_server(const struct sm *sm, const struct kt_stanza *st);
/* Sends st through the router (a reply built by a part). Takes no reference. */
void sm_send(struct sm *sm, struct kt_stanza *st);
/* Sends <presence type=type from=from to=to/> (type NULL: available). */
void sm_send_presence(struct sm *sm, const char *type, const char *from, const char *to);
/* The job queue for database work about the user `local`: jobs for one user
 * run one at a time, in submission order (a set then a get, stored messages
 * then their delivery). */
struct kt_jobq *sm_user_queue(struct sm *sm, const char *local);

/* users.c: who is online here, for delivery to bare JIDs. */
struct sm_users *sm_users_new(void);
void sm_users_free(struct sm_users **u);
/* Records s's presence (NULL: unavailable) and priority; true when this is
 * the moment to send it the stored offline messages (first available,
 * priority >= 0). *was_available_r (may be NULL): its state before. */
bool sm_users_presence(struct sm_users *u, struct kt_session *s, struct kt_stanza *presence,
                       int priority, bool *was_available_r);
/* Directed presence (RFC 6121 §4.6): available adds jid to s's list (at most
 * 100), unavailable removes it. take empties the list and returns it
 * (free each string and the array). */
void sm_users_directed(struct sm_users *u, struct kt_session *s, const char *jid, bool available);
char **sm_users_directed_take(struct sm_users *u, struct kt_session *s, unsigned *n_r);
/* Roster pushes go to resources that requested the roster. */
void sm_users_set_interested(struct sm_users *u, struct kt_session *s);
unsigned sm_users_interested(struct sm_users *u, const struct kt_jid *jid,
                             struct kt_session **out, unsigned max);
/* The last presence of each available resource (references). */
unsigned sm_users_presences(struct sm_users *u, const struct kt_jid *jid, struct kt_stanza **out,
                            unsigned max);
/* The available resources of jid's user with the highest priority >= 0
 * (references in out, at most max). */
unsigned sm_users_targets(struct sm_users *u, const struct kt_jid *jid,
                          struct kt_session **out, unsigned max);

/* XEP-0280: whether s gets carbon copies. */
void sm_users_set_carbons(struct sm_users *u, struct kt_session *s, bool enabled);
/* Resources of jid's user with carbons enabled, except `except` (references). */
unsigned sm_users_carbon_targets(struct sm_users *u, const struct kt_jid *jid,
                                 const struct kt_session *except, struct kt_session **out,
                                 unsigned max);
/* Every resource of jid's user (available ones only if asked), references. */
unsigned sm_users_resources(struct sm_users *u, const struct kt_jid *jid, bool available_only,
                            struct kt_session **out, unsigned max);

/* offline.c */
bool sm_offline_storable(const struct kt_stanza *st);
/* Stores a message for its (bare) recipient; bounces it on failure. */
void sm_offline_store(struct sm *sm, struct kt_stanza *st);
/* Sends s the stored messages of its user, then deletes them. */
void sm_offline_deliver(struct sm *sm, struct kt_session *s);
int sm_offline_init(struct sm *sm);
void sm_offline_start(struct sm *sm);
void sm_offline_stop(struct sm *sm);

/* A stanza stored as bytes (offline, pending subscription requests) parsed
 * back; NULL if it does not parse. */
struct kt_stanza *sm_parse_stored(const char *bytes, size_t len);

/* roster.c */
struct kt_db;
/* Contacts of owner whose subscription has a bit of mask (1 = to, 2 = from):
 * a NULL-terminated array (worker side, in a job on owner's user queue;
 * from the subscription cache, loaded if needed); free with
 * sm_roster_contacts_free. */
char **sm_roster_contacts(struct sm *sm, struct kt_db *db, const char *owner, int mask,
                          unsigned *n_r);
/* Subscription bits owner has with contact (bare JID), -1 on a database
 * error. Worker side, like sm_roster_contacts. */
int sm_roster_sub(struct sm *sm, struct kt_db *db, const char *owner, const char *contact);
/* Drops owner's cached subscriptions (its last resource left). Any thread. */
void sm_roster_forget(struct sm *sm, const char *owner);
struct sm_rcache *sm_rcache_new(void);
void sm_rcache_free(struct sm_rcache **c);
void sm_roster_contacts_free(char **v);
/* Subscription requests that waited for the user, to a new session. */
void sm_roster_send_pending(struct sm *sm, struct kt_session *s);
#define SM_SUB_TO 1
#define SM_SUB_FROM 2

/* carbons.c: XEP-0280. Its message hooks run after blocking's and, on the
 * LOCAL stage, before delivery.c's (-100). */
#define SM_PRIO_CARBONS (-50)
int sm_carbons_init(struct sm *sm);

/* blocking.c: XEP-0191. Its IN hook runs before every other. */
#define SM_PRIO_BLOCKING 1000
struct sm_blocking;
int sm_blocking_init(struct sm *sm);
void sm_blocking_free(struct sm *sm);
/* Whether user's blocklist blocks contact (§3.7 matching). Any thread, never
 * waits: false while user's list is not loaded. A local resource's initial
 * presence is held until its user's list is loaded, so presence broadcast
 * that follows it sees the list. */
bool sm_blocking_is_blocked(struct sm *sm, const struct kt_jid *user,
                            const struct kt_jid *contact);
/* Routes st past the blocking check (the server's own notice to a blocked
 * contact, e.g. the unavailable presence a block implies). */
void sm_blocking_send_unchecked(struct sm *sm, struct kt_stanza *st);

/* presence.c: user blocked (true) or unblocked contact: unavailable from
 * each of user's available resources, or their presence if contact is
 * subscribed to user. */
void sm_presence_block_changed(struct sm *sm, const struct kt_jid *user,
                               const struct kt_jid *contact, bool blocked);

/* userinfo.c: records the user's last logout (its last resource left). */
void sm_userinfo_logout(struct sm *sm, const struct kt_jid *user);

/* Parts. Each returns 0 or -1 (and logs why). */
int sm_userinfo_init(struct sm *sm); /* last activity and disco#info of users */
int sm_presence_init(struct sm *sm); /* broadcast, probes, inbound presence */
int sm_roster_init(struct sm *sm);   /* roster iq, subscriptions */
int sm_delivery_init(struct sm *sm); /* messages to users, presence of local resources */
int sm_services_init(struct sm *sm); /* ping, version, time, last activity of the node */
int sm_disco_init(struct sm *sm);    /* disco#info and disco#items of the node */
int sm_vcard_init(struct sm *sm);    /* vcard-temp */
int sm_named_init(struct sm *sm);    /* dispatch to name@host services */
/* Kontalk parts (kontalk-protocol.md §2). */
/* keys.c: the node's OpenPGP key (sm.key). Its fingerprint as 40 upper-case
 * hex digits, or NULL when no key is configured. */
const char *sm_keys_fingerprint(const struct sm *sm);
struct kt_pgp_key;
struct kt_db;
struct x509_st;
/* The node key (public view), NULL when none is configured. */
const struct kt_pgp_key *sm_keys_node(const struct sm *sm);
int sm_keys_init(struct sm *sm, const config_setting_t *group);
void sm_keys_free(struct sm *sm);
/* pubkey.c: urn:xmpp:pubkey:2 and the keys added to presence. Its IN hook
 * runs before the subscription and presence parts route the stanza. */
#define SM_PRIO_PUBKEY 100
int sm_pubkey_init(struct sm *sm);
/* register.c: phone registration (before authentication, through c2s),
 * key rollover and private-key parking. After sm_keys_init. */
int sm_register_init(struct sm *sm);
enum sm_key_check {
    SM_KEY_OK,
    SM_KEY_UNPARSABLE,
    SM_KEY_REVOKED,
    SM_KEY_EXPIRED,
    SM_KEY_UNSIGNED,      /* no valid self-signature */
    SM_KEY_NO_UID,        /* no UID localpart@network or @host */
    SM_KEY_NOT_CERTIFIED, /* such a UID, not certified by the node key */
};
/* Checks a user's public keyring (worker side): valid now, with a UID
 * naming an account here, certified by the node key if `certified`. On
 * SM_KEY_OK, *key_r (verified) and *local_r are new. */
enum sm_key_check sm_keys_check(struct sm *sm, const uint8_t *ring, size_t len, bool certified,
                                struct kt_pgp_key **key_r, char **local_r, size_t *uid_r);
struct kt_pgp_pubkey;
/* Whether the certificate's public key is the OpenPGP key pk. */
bool sm_keys_cert_is_key(struct x509_st *cert, const struct kt_pgp_pubkey *pk);
/* Certifies UID uid of key with the node key (worker side); -1 if no node
 * key or signing fails. */
int sm_keys_certify(struct sm *sm, struct kt_pgp_key *key, size_t uid);
/* Records local's current key for pubkey.c (after a login or a new key). */
void sm_keys_remember(struct sm *sm, const char *local, const struct kt_pgp_key *key);
const char *sm_key_check_text(enum sm_key_check r);
/* The OpenPGP keyring a bridge certificate carries (new buffer); -1 if none. */
int sm_keys_from_cert(struct sm *sm, struct x509_st *cert, uint8_t **ring_r, size_t *len_r);
/* Writes the account and its keyring (worker side). */
int sm_keys_store(struct kt_db *db, const char *local, const struct kt_pgp_key *key);
/* What this node knows of local's key since it logged in: fingerprint and
 * (if keyring_r) a copy of the keyring. False if nothing. Any thread. */
bool sm_keys_known(struct sm *sm, const char *local, char fpr_r[41], uint8_t **keyring_r,
                   size_t *len_r);
/* Drops what sm_keys_known knows of local (its last resource left). */
void sm_keys_forget(struct sm *sm, const char *local);
int sm_network_init(struct sm *sm);   /* network@: serverlist command */
/* probe.c: probe@ (roster match) and the lookup engine behind it: which of
 * some localparts are users of the network, and their home node. */
int sm_probe_init(struct sm *sm);
/* Worker side (registration's duplicate check): 1 if local is an account
 * of this node, 0 if not, -1 on a database error. */
int sm_probe_local_exists(struct kt_db *db, const char *local);
struct sm_probe_hit {
    const char *local; /* as asked */
    const char *node;  /* its home node's host name */
};
struct sm_probe_result {
    const struct sm_probe_hit *hits; /* sorted by local, each once */
    unsigned n;
    bool failed;   /* this node's database failed: no hits */
    bool complete; /* every node asked has answered (false: remote timeout) */
};
typedef void (*sm_probe_done_fn)(struct sm *sm, const struct sm_probe_result *r, void *data);
/* On an I/O thread; never blocks. Copies locals (any order, repeats
 * allowed); done runs exactly once, later, on the same thread. */
void sm_probe_lookup(struct sm *sm, const char *const *locals, unsigned n, sm_probe_done_fn done,
                     void *data);
/* The extension point for other nodes (mod_net): ask runs on the lookup's
 * I/O thread with the names this node does not have; it must not block and
 * must call sm_probe_remote_answer(q, ...) exactly once, from any thread,
 * even after the timeout (late answers are dropped). The lookup answers
 * after that call or after timeout_ms, whichever comes first. */
struct sm_probe_query;
struct sm_probe_remote {
    void (*ask)(void *state, struct sm_probe_query *q, const char *const *locals, unsigned n);
    void *state;
    unsigned timeout_ms;
};
/* Init only (static storage); NULL unregisters. */
void sm_probe_set_remote(struct sm *sm, const struct sm_probe_remote *remote);
/* Any thread: the users other nodes have among the names asked (hits are
 * copied); complete = every node asked answered. */
void sm_probe_remote_answer(struct sm_probe_query *q, const struct sm_probe_hit *hits, unsigned n,
                            bool complete);
int sm_multicast_init(struct sm *sm); /* multicast@: XEP-0033 fan-out */
/* Whether st is a copy multicast@ is dispatching on this thread (carbons.c
 * copies the message to the service, not each copy). */
bool sm_multicast_copy(const struct kt_stanza *st);
int sm_push_init(struct sm *sm);      /* push@: registrations and wake-ups */
void sm_push_start(struct sm *sm);
void sm_push_stop(struct sm *sm);
void sm_push_free(struct sm *sm);
/* A message for user's bare JID was stored offline, or went to a session
 * that is inactive or idle: wake the user's devices up (no content). Any
 * thread; never blocks. */
void sm_push_wake(struct sm *sm, const struct kt_jid *user, const struct kt_stanza *st);
/* A message went to the n sessions s of user (delivery.c): wakes the user
 * when each of them is inactive (XEP-0352) or idle (sm.push.idle). Any
 * thread; never blocks. */
void sm_push_delivered(struct sm *sm, const struct kt_jid *user, struct kt_session *const *s,
                       unsigned n, const struct kt_stanza *st);
/* A way to wake a device up (push_http.c, push_xmpp.c). */
enum sm_push_result { SM_PUSH_SENT, SM_PUSH_FAILED, SM_PUSH_GONE };
struct sm_push_provider {
    const char *name;  /* the registrations' provider attribute and disco#items node */
    const char *label; /* the disco#items name */
    /* On a worker, may block (bounded by sm.push.timeout and retries): one
     * wake-up of the device reg_id, with no content. SM_PUSH_GONE: the
     * registration is no longer valid (it is deleted). */
    enum sm_push_result (*wake)(void *state, const char *reg_id);
    void (*free)(void *state);
    void *state;
};
/* The HTTP provider for sm.push.url; -1 (logged) if the url is unusable.
 * It gives up early once *stopping is set. */
int sm_push_http_new(struct sm *sm, const atomic_bool *stopping, struct sm_push_provider *p_r);
/* The XEP-0357 provider for sm.push.app_server; -1 if it is not a JID. */
int sm_push_xmpp_new(struct sm *sm, struct sm_push_provider *p_r);
int sm_expiry_init(struct sm *sm);    /* daily deletion of unused accounts */
void sm_expiry_start(struct sm *sm);
void sm_expiry_stop(struct sm *sm);
void sm_expiry_free(struct sm *sm);

#endif
