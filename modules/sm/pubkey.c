/* Public keys, urn:xmpp:pubkey:2 in Kontalk's shapes (kontalk-protocol.md
 * §2.4).
 *
 * - iq get to the server (no to, the host or the network): the node's key;
 *   to a user's bare JID here: the keyring stored at their last key login or
 *   registration (the pubkeys table), else item-not-found. Keys are public:
 *   no subscription is needed, as in both Kontalk generations.
 * - A key user's available presence gets <pubkey><print>FPR</print></pubkey>
 *   and their subscription requests <pubkey><key>B64</key><print/></pubkey>,
 *   added when the stanza leaves the user (IN stage), so local and remote
 *   contacts see the same. A client's own <pubkey/> in those stanzas is
 *   replaced: only the server says which key an account has. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/openpgp.h>
#include <kontalk/scram.h>

#include <stdlib.h>
#include <string.h>

#define NS_PUBKEY "urn:xmpp:pubkey:2"

static void reply_key(struct sm *sm, struct kt_stanza *st, const uint8_t *ring, size_t len)
{
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *el = kt_xml_add_child(kt_stanza_xml_mut(reply), "pubkey", NS_PUBKEY);
    char *b64 = kt_base64_encode(ring, len);
    kt_xml_add_text(el, b64, strlen(b64));
    free(b64);
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
}

struct key_job {
    struct sm *sm;
    struct kt_stanza *st;
    char *local;
    uint8_t *ring;
    size_t len;
    bool db_error;
};

static void key_run(struct kt_db *db, void *data)
{
    struct key_job *j = data;
    struct kt_db_param p = KT_DB_P_STR(j->local);
    struct kt_db_result *res = NULL;
    if (kt_db_query(db, "SELECT keyring FROM pubkeys WHERE localpart = ?", &p, 1, &res) < 0) {
        j->db_error = true;
        return;
    }
    if (res->nrows && kt_db_value(res, 0, 0)) {
        j->len = res->lens[0];
        j->ring = kt_malloc(j->len ? j->len : 1);
        memcpy(j->ring, kt_db_value(res, 0, 0), j->len);
    }
    kt_db_result_free(&res);
}

static void key_done(void *data)
{
    struct key_job *j = data;
    if (j->ring)
        reply_key(j->sm, j->st, j->ring, j->len);
    else
        kt_router_bounce(j->sm->core->router, j->st,
                         j->db_error ? KT_SE_INTERNAL_SERVER_ERROR : KT_SE_ITEM_NOT_FOUND,
                         j->db_error ? NULL : "Public key not found.");
    kt_stanza_unref(&j->st);
    free(j->local);
    free(j->ring);
    free(j);
}

static enum kt_verdict pubkey_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *to = kt_stanza_to(st);
    if (!kt_stanza_from(st))
        return KT_PASS;
    if (sm_to_server(sm, st)) {
        const struct kt_pgp_key *node = sm_keys_node(sm);
        if (kt_stanza_type(st) != KT_TYPE_GET)
            kt_router_bounce(sm->core->router, st, KT_SE_NOT_ALLOWED, NULL);
        else if (!node)
            kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND, "This server has no key.");
        else
            reply_key(sm, st, node->raw, node->raw_len);
        return KT_HANDLED;
    }
    if (!to->local || to->resource || !sm_is_local(sm, to))
        return KT_PASS;
    if (kt_stanza_type(st) != KT_TYPE_GET) {
        kt_router_bounce(sm->core->router, st, KT_SE_NOT_ALLOWED, NULL);
        return KT_HANDLED;
    }
    struct key_job *j = kt_new(struct key_job);
    j->sm = sm;
    j->st = kt_stanza_ref(st);
    j->local = kt_strdup(to->local);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, to->local), key_run, key_done, j);
    return KT_HANDLED;
}

/* ---- presence ---- */

/* Whether root already carries exactly the <pubkey/> we would add (a
 * stanza this hook dispatched again as a private copy, or a client that
 * repeated it): then there is nothing to change. */
static bool has_our_pubkey(const struct kt_xml *root, const char *fpr, const char *key_b64)
{
    const struct kt_xml *pk = kt_xml_child(root, "pubkey", NS_PUBKEY);
    if (!pk)
        return false;
    for (const struct kt_xml *el = kt_xml_next_element(pk); el; el = kt_xml_next_element(el))
        if (strcmp(el->name, "pubkey") == 0 && el->ns && strcmp(el->ns, NS_PUBKEY) == 0)
            return false; /* a second one */
    const struct kt_xml *print = kt_xml_child(pk, "print", NS_PUBKEY);
    const struct kt_xml *key = kt_xml_child(pk, "key", NS_PUBKEY);
    char *ptext = print ? kt_xml_text(print) : NULL;
    char *ktext = key ? kt_xml_text(key) : NULL;
    bool ours =
        ptext && strcmp(ptext, fpr) == 0 && (key_b64 ? ktext && strcmp(ktext, key_b64) == 0 : !key);
    free(ptext);
    free(ktext);
    return ours;
}

static void set_pubkey(struct kt_stanza *st, const char *fpr, const char *key_b64)
{
    struct kt_xml *root = kt_stanza_xml_mut(st), *old;
    while ((old = kt_xml_child(root, "pubkey", NS_PUBKEY))) {
        kt_xml_unlink(old);
        kt_xml_free(&old);
    }
    struct kt_xml *pk = kt_xml_add_child(root, "pubkey", NS_PUBKEY);
    if (key_b64)
        kt_xml_add_text(kt_xml_add_child(pk, "key", NS_PUBKEY), key_b64, strlen(key_b64));
    kt_xml_add_text(kt_xml_add_child(pk, "print", NS_PUBKEY), fpr, strlen(fpr));
    kt_stanza_touch(st);
}

static enum kt_verdict presence_out(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st);
    enum kt_stanza_type type = kt_stanza_type(st);
    bool subscribe = type == KT_TYPE_SUBSCRIBE;
    enum kt_verdict verdict = KT_PASS;
    char fpr[41], *key_b64 = NULL;
    uint8_t *ring = NULL;
    size_t len = 0;

    if (!from || !from->local || !sm_is_local(sm, from) ||
        (type != KT_TYPE_AVAILABLE && !subscribe))
        return KT_PASS;
    if (!sm_keys_known(sm, from->local, fpr, subscribe ? &ring : NULL, &len))
        return KT_PASS;
    if (ring) {
        key_b64 = kt_base64_encode(ring, len);
        free(ring);
    }
    if (has_our_pubkey(kt_stanza_xml(st), fpr, key_b64)) {
        /* nothing to change */
    } else if (kt_stanza_refcount(st) == 1) {
        set_pubkey(st, fpr, key_b64);
    } else {
        /* Shared (c2s keeps the initial presence): a private copy goes in
         * its place; it passes this hook again, already marked. */
        struct kt_stanza *copy = kt_stanza_copy(st);
        set_pubkey(copy, fpr, key_b64);
        kt_router_dispatch(sm->core->router, copy);
        kt_stanza_unref(&copy);
        verdict = KT_HANDLED;
    }
    free(key_b64);
    return verdict;
}

int sm_pubkey_init(struct sm *sm)
{
    static const struct kt_match iq = {
        .kinds = KT_KIND_IQ, .types = KT_TYPE_GET | KT_TYPE_SET, .ns = NS_PUBKEY, .name = "pubkey"};
    static const struct kt_match presence = {.kinds = KT_KIND_PRESENCE};
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &iq, 0, pubkey_iq, sm) < 0 ||
        kt_hook_add(sm->core->router, KT_HOOK_IN, &presence, SM_PRIO_PUBKEY, presence_out, sm) <
            0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the public key handlers");
        return -1;
    }
    /* Without a node key there are no key accounts: the handler still
     * answers (item-not-found), but the node does not claim the feature. */
    if (sm_keys_node(sm))
        sm_feature_add(sm, NS_PUBKEY);
    return 0;
}
