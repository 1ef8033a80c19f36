/* mod_sm internals: the module state every part of the session manager
 * shares, and each part's init function. Parts register KT_HOOK_LOCAL
 * handlers (stanzas for this node's host and users) in their init; they run
 * on I/O threads and never block: database work goes to worker jobs, and
 * the answer is dispatched from the job's completion. */
#ifndef KT_SM_H
#define KT_SM_H

#include <kontalk/core.h>
#include <kontalk/jid.h>
#include <kontalk/job.h>
#include <kontalk/router.h>
#include <kontalk/stanza.h>

#include <stdatomic.h>
#include <time.h>

struct sm_conf {
    long long offline_max;    /* messages stored per user */
    long long offline_expire; /* seconds a stored message is kept */
    long long vcard_max;      /* bytes of one vCard */
};

struct sm {
    struct kt_core *core;
    const struct sm_conf *conf;
    time_t started;
    /* Service discovery features of the node, registered by each part at
     * init (so disco lists exactly what is implemented). */
    const char **features;
    unsigned nfeatures;
};

/* Registers a disco#info feature of the node (a static string). Init only. */
void sm_feature_add(struct sm *sm, const char *var);
/* Whether jid's domain is this node's host or the network domain. */
bool sm_is_local(const struct sm *sm, const struct kt_jid *jid);
/* Whether st is addressed to the server itself (no to, the host, or the
 * network domain without a localpart). */
bool sm_to_server(const struct sm *sm, const struct kt_stanza *st);
/* Sends st through the router (a reply built by a part). Takes no reference. */
void sm_send(struct sm *sm, struct kt_stanza *st);

/* Parts. Each returns 0 or -1 (and logs why). */
int sm_services_init(struct sm *sm); /* ping, version, time, last activity of the node */
int sm_disco_init(struct sm *sm);    /* disco#info and disco#items of the node */
int sm_vcard_init(struct sm *sm);    /* vcard-temp */

#endif
