/* Kontalk key accounts (kontalk-protocol.md §2.2): the node's OpenPGP key
 * (sm.key), the checks a user's key must pass, and SASL EXTERNAL with a
 * bridge certificate.
 *
 * A bridge certificate is an X.509 certificate whose extension
 * KT_BRIDGE_OID holds the user's OpenPGP public keyring (an OCTET STRING
 * wrapping a BIT STRING). Its X.509 validity and signature decide nothing
 * (real clients self-sign with SHA-1 and set notAfter = notBefore); the
 * login is accepted when the certificate's public key is the OpenPGP
 * primary key, that key is valid now (self-signed, unrevoked, unexpired),
 * one of its UIDs is localpart@network (or @host) and carries a valid
 * certification by the node's key, and the stored fingerprint rule holds:
 * no key stored yet, the same key, or a newer key (created later) than the
 * stored one, or the stored one is no longer valid. The account row and its
 * keyring are then written, and the user's fingerprint and keyring are
 * remembered in memory for pubkey.c (presence <print/>, subscribe <key/>)
 * until the user's last available resource leaves (sm_keys_forget), so
 * this memory follows the users online, not all users ever seen.
 *
 * Everything here that touches OpenPGP or the database runs on workers. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/openpgp.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KT_BRIDGE_OID "2.25.49058212633447845622587297037800555803"
#define KNOWN_BUCKETS 256

/* A user whose key this node has checked since start: what pubkey.c adds
 * to their presence and subscription requests. */
struct known_user {
    struct known_user *next;
    char *local;
    char fpr[41];
    uint8_t *keyring;
    size_t keyring_len;
};

struct sm_keys {
    struct kt_pgp_key *node;     /* NULL: no node key configured */
    struct kt_pgp_key **trusted; /* other nodes' keys (sm.trusted_keys) */
    unsigned ntrusted;
    EVP_PKEY *pkey;
    char fpr[41];
    ASN1_OBJECT *bridge_oid;
    pthread_mutex_t lock; /* known users */
    struct known_user *known[KNOWN_BUCKETS];
};

const char *sm_keys_fingerprint(const struct sm *sm)
{
    return sm->keys && sm->keys->node ? sm->keys->fpr : NULL;
}

const struct kt_pgp_key *sm_keys_node(const struct sm *sm)
{
    return sm->keys ? sm->keys->node : NULL;
}

/* ---- known users ---- */

static unsigned bucket_of(const char *local)
{
    unsigned h = 5381;
    for (const char *p = local; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h % KNOWN_BUCKETS;
}

void sm_keys_remember(struct sm *sm, const char *local, const struct kt_pgp_key *key)
{
    struct sm_keys *k = sm->keys;
    unsigned b = bucket_of(local);
    pthread_mutex_lock(&k->lock);
    struct known_user *u = k->known[b];
    while (u && strcmp(u->local, local) != 0)
        u = u->next;
    if (!u) {
        u = kt_new(struct known_user);
        u->local = kt_strdup(local);
        u->next = k->known[b];
        k->known[b] = u;
    }
    kt_pgp_fpr_hex(key->primary.fpr, u->fpr);
    free(u->keyring);
    u->keyring = kt_malloc(key->raw_len);
    memcpy(u->keyring, key->raw, key->raw_len);
    u->keyring_len = key->raw_len;
    pthread_mutex_unlock(&k->lock);
}

void sm_keys_forget(struct sm *sm, const char *local)
{
    struct sm_keys *k = sm->keys;
    if (!k || !k->node)
        return;
    pthread_mutex_lock(&k->lock);
    for (struct known_user **pu = &k->known[bucket_of(local)]; *pu; pu = &(*pu)->next) {
        struct known_user *u = *pu;
        if (strcmp(u->local, local) == 0) {
            *pu = u->next;
            free(u->local);
            free(u->keyring);
            free(u);
            break;
        }
    }
    pthread_mutex_unlock(&k->lock);
}

bool sm_keys_known(struct sm *sm, const char *local, char fpr_r[41], uint8_t **keyring_r,
                   size_t *len_r)
{
    struct sm_keys *k = sm->keys;
    bool found = false;
    if (!k || !k->node)
        return false;
    pthread_mutex_lock(&k->lock);
    for (struct known_user *u = k->known[bucket_of(local)]; u; u = u->next) {
        if (strcmp(u->local, local) != 0)
            continue;
        found = true;
        if (fpr_r)
            memcpy(fpr_r, u->fpr, 41);
        if (keyring_r) {
            *keyring_r = kt_malloc(u->keyring_len);
            memcpy(*keyring_r, u->keyring, u->keyring_len);
            *len_r = u->keyring_len;
        }
        break;
    }
    pthread_mutex_unlock(&k->lock);
    return found;
}

/* ---- checking a user's key ---- */

/* The address of a UID: "Name <addr>", "Name (comment) <addr>" or "addr". */
static char *uid_email(const char *uid)
{
    const char *lt = strrchr(uid, '<');
    if (lt) {
        const char *gt = strchr(lt, '>');
        return gt ? kt_strndup(lt + 1, (size_t)(gt - lt - 1)) : NULL;
    }
    return strchr(uid, '@') && !strchr(uid, ' ') ? kt_strdup(uid) : NULL;
}

/* The localpart if email is localpart@network or localpart@host. */
static char *local_of_email(const struct sm *sm, const char *email)
{
    const char *at = strrchr(email, '@');
    if (!at || at == email)
        return NULL;
    if (strcasecmp(at + 1, sm->core->network) != 0 && strcasecmp(at + 1, sm->core->host) != 0)
        return NULL;
    struct kt_jid *j = kt_jid_parse(email);
    char *local = j && j->local && !j->resource ? kt_strdup(j->local) : NULL;
    kt_jid_free(&j);
    return local;
}

/* Whether UID i carries a valid certification by the node key or by a
 * key of the network's trusted list. */
static bool certified_here(const struct sm_keys *k, const struct kt_pgp_key *key, size_t i,
                           time_t now)
{
    if (k->node && kt_pgp_uid_certified_by(key, i, k->node, now))
        return true;
    for (unsigned t = 0; t < k->ntrusted; t++)
        if (kt_pgp_uid_certified_by(key, i, k->trusted[t], now))
            return true;
    return false;
}

enum sm_key_check sm_keys_check(struct sm *sm, const uint8_t *ring, size_t len, bool certified,
                                struct kt_pgp_key **key_r, char **local_r, size_t *uid_r)
{
    struct kt_pgp_key *key = NULL;
    enum sm_key_check r = SM_KEY_NO_UID;
    time_t now = time(NULL);

    *key_r = NULL;
    *local_r = NULL;
    if (kt_pgp_key_parse(ring, len, &key) != KT_PGP_OK)
        return SM_KEY_UNPARSABLE;
    kt_pgp_key_verify(key);
    if (kt_pgp_key_revoked(key)) {
        r = SM_KEY_REVOKED;
        goto fail;
    }
    if (kt_pgp_key_invalid(key, now)) {
        r = kt_pgp_key_expiry(key) > 0 ? SM_KEY_EXPIRED : SM_KEY_UNSIGNED;
        goto fail;
    }
    for (size_t i = 0; i < key->nuids; i++) {
        if (strlen(key->uids[i].uid) != key->uids[i].len)
            continue; /* inner NUL */
        char *email = uid_email(key->uids[i].uid);
        char *local = email ? local_of_email(sm, email) : NULL;
        free(email);
        if (!local)
            continue;
        if (!certified || certified_here(sm->keys, key, i, now)) {
            *key_r = key;
            *local_r = local;
            if (uid_r)
                *uid_r = i;
            return SM_KEY_OK;
        }
        free(local);
        r = SM_KEY_NOT_CERTIFIED;
    }
fail:
    kt_pgp_key_free(&key);
    return r;
}

const char *sm_key_check_text(enum sm_key_check r)
{
    switch (r) {
    case SM_KEY_OK:
        return "valid";
    case SM_KEY_UNPARSABLE:
        return "not an OpenPGP public key";
    case SM_KEY_REVOKED:
        return "the key is revoked";
    case SM_KEY_EXPIRED:
        return "the key has expired";
    case SM_KEY_UNSIGNED:
        return "the key has no valid self-signature";
    case SM_KEY_NO_UID:
        return "no user ID of the key names an account of this network";
    case SM_KEY_NOT_CERTIFIED:
        return "the key is not certified by this server";
    }
    return "?";
}

/* ---- bridge certificates ---- */

int sm_keys_from_cert(struct sm *sm, X509 *cert, uint8_t **ring_r, size_t *len_r)
{
    int i = X509_get_ext_by_OBJ(cert, sm->keys->bridge_oid, -1);
    if (i < 0)
        return -1;
    const ASN1_OCTET_STRING *os = X509_EXTENSION_get_data(X509_get_ext(cert, i));
    const unsigned char *p = ASN1_STRING_get0_data(os);
    ASN1_BIT_STRING *bits = d2i_ASN1_BIT_STRING(NULL, &p, ASN1_STRING_length(os));
    if (!bits)
        return -1;
    int n = ASN1_STRING_length(bits);
    if (n <= 0) { /* an empty keyring is no key */
        ASN1_BIT_STRING_free(bits);
        return -1;
    }
    *ring_r = kt_malloc((size_t)n);
    memcpy(*ring_r, ASN1_STRING_get0_data(bits), (size_t)n);
    *len_r = (size_t)n;
    ASN1_BIT_STRING_free(bits);
    return 0;
}

/* One MPI of a key packet body at *off: its magnitude (no leading zeros). */
static bool read_mpi(const uint8_t *b, size_t len, size_t *off, const uint8_t **v_r, size_t *n_r)
{
    if (*off + 2 > len)
        return false;
    size_t bits = (size_t)b[*off] << 8 | b[*off + 1];
    size_t n = (bits + 7) / 8;
    if (*off + 2 + n > len)
        return false;
    *v_r = b + *off + 2;
    *n_r = n;
    *off += 2 + n;
    return true;
}

/* Big-endian magnitude of a BIGNUM parameter of pkey, without leading zeros. */
static bool bn_equals(const EVP_PKEY *pkey, const char *param, const uint8_t *v, size_t n)
{
    BIGNUM *bn = NULL;
    bool eq = false;
    while (n > 0 && *v == 0)
        v++, n--;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) && (size_t)BN_num_bytes(bn) == n) {
        uint8_t *buf = kt_malloc(n ? n : 1);
        BN_bn2bin(bn, buf);
        eq = CRYPTO_memcmp(buf, v, n) == 0;
        free(buf);
    }
    BN_free(bn);
    return eq;
}

/* Whether the certificate's public key is the OpenPGP key pk (RSA, EdDSA
 * Ed25519, ECDSA): the same numbers, compared field by field. */
bool sm_keys_cert_is_key(X509 *cert, const struct kt_pgp_pubkey *pk)
{
    EVP_PKEY *pkey = X509_get0_pubkey(cert);
    const uint8_t *b = pk->body;
    size_t len = pk->body_len, off = 6, n, n2;
    const uint8_t *v, *v2;

    if (!pkey || len < 6)
        return false;
    switch (pk->algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S:
        return EVP_PKEY_is_a(pkey, "RSA") && read_mpi(b, len, &off, &v, &n) &&
               read_mpi(b, len, &off, &v2, &n2) && bn_equals(pkey, OSSL_PKEY_PARAM_RSA_N, v, n) &&
               bn_equals(pkey, OSSL_PKEY_PARAM_RSA_E, v2, n2);
    case KT_PGP_ALGO_EDDSA: {
        uint8_t raw[32];
        size_t rawlen = sizeof(raw);
        if (pk->curve != KT_PGP_CURVE_ED25519 || off >= len)
            return false;
        off += 1 + b[off]; /* the curve OID */
        /* The point is 0x40 followed by the 32-byte public key. */
        return read_mpi(b, len, &off, &v, &n) && n == 33 && v[0] == 0x40 &&
               EVP_PKEY_is_a(pkey, "ED25519") && EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) &&
               rawlen == 32 && CRYPTO_memcmp(raw, v + 1, 32) == 0;
    }
    case KT_PGP_ALGO_ECDSA: {
        uint8_t pt[200];
        size_t ptlen = 0;
        if (off >= len)
            return false;
        off += 1 + b[off];
        return read_mpi(b, len, &off, &v, &n) && EVP_PKEY_is_a(pkey, "EC") &&
               EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt),
                                               &ptlen) &&
               ptlen == n && CRYPTO_memcmp(pt, v, n) == 0;
    }
    default:
        return false;
    }
}

/* ---- accounts ---- */

int sm_keys_store(struct kt_db *db, const char *local, const struct kt_pgp_key *key)
{
    char fpr[41];
    kt_pgp_fpr_hex(key->primary.fpr, fpr);
    struct kt_db_param p[3] = {KT_DB_P_STR(local), KT_DB_P_STR(fpr),
                               KT_DB_P_BLOB(key->raw, key->raw_len)};
    if (kt_db_exec(db,
                   "INSERT INTO users (localpart, fingerprint) VALUES (?, ?) "
                   "ON DUPLICATE KEY UPDATE fingerprint = VALUES(fingerprint)",
                   p, 2, NULL, NULL) < 0)
        return -1;
    return kt_db_exec(db,
                      "INSERT INTO pubkeys (localpart, fingerprint, keyring) VALUES (?, ?, ?) "
                      "ON DUPLICATE KEY UPDATE fingerprint = VALUES(fingerprint), "
                      "keyring = VALUES(keyring), updated = NOW()",
                      p, 3, NULL, NULL);
}

/* §2.2 step (3): may `key` replace what is stored for `local`? 1 yes,
 * 0 no, -1 database error. *same_r: exactly this keyring is stored already
 * (the usual login: nothing to write). */
static int may_replace(struct kt_db *db, const char *local, const struct kt_pgp_key *key,
                       bool *same_r)
{
    struct kt_db_param p = KT_DB_P_STR(local);
    struct kt_db_result *res = NULL;
    char fpr[41];
    int ok;

    if (kt_db_query(db,
                    "SELECT u.fingerprint, k.keyring FROM users u LEFT JOIN pubkeys k "
                    "ON k.localpart = u.localpart WHERE u.localpart = ?",
                    &p, 1, &res) < 0)
        return -1;
    kt_pgp_fpr_hex(key->primary.fpr, fpr);
    const char *stored = res->nrows ? kt_db_value(res, 0, 0) : NULL;
    const char *stored_ring = res->nrows ? kt_db_value(res, 0, 1) : NULL;
    *same_r = stored && strcmp(stored, fpr) == 0 && stored_ring &&
              res->lens[1] == key->raw_len && memcmp(stored_ring, key->raw, key->raw_len) == 0;
    if (!stored || strcmp(stored, fpr) == 0) {
        ok = 1;
    } else {
        struct kt_pgp_key *old = NULL;
        const char *ring = kt_db_value(res, 0, 1);
        if (!ring || kt_pgp_key_parse(ring, res->lens[1], &old) != KT_PGP_OK) {
            ok = 1; /* the stored key is gone or unreadable: nothing to protect */
        } else {
            kt_pgp_key_verify(old);
            ok = kt_pgp_key_invalid(old, time(NULL)) || key->primary.created > old->primary.created;
        }
        kt_pgp_key_free(&old);
    }
    kt_db_result_free(&res);
    return ok;
}

/* The EXTERNAL verifier (kt_external_auth_fn), on a worker. */
static char *external_auth(struct kt_db *db, X509 *cert, STACK_OF(X509) * chain,
                           const char *authzid, void *data)
{
    struct sm *sm = data;
    struct kt_pgp_key *key = NULL;
    uint8_t *ring = NULL;
    size_t len = 0;
    char *local = NULL;
    enum sm_key_check r;

    (void)chain;
    if (sm_keys_from_cert(sm, cert, &ring, &len) < 0) {
        kt_log(KT_LOG_INFO, "sm: EXTERNAL refused: the certificate carries no OpenPGP key");
        return NULL;
    }
    r = sm_keys_check(sm, ring, len, true, &key, &local, NULL);
    free(ring);
    if (r != SM_KEY_OK) {
        kt_log(KT_LOG_INFO, "sm: EXTERNAL refused: %s", sm_key_check_text(r));
        return NULL;
    }
    if (!sm_keys_cert_is_key(cert, &key->primary)) {
        kt_log(KT_LOG_INFO,
               "sm: EXTERNAL refused for %s: the certificate's key is not the "
               "OpenPGP key",
               local);
        goto refuse;
    }
    if (authzid && *authzid) {
        /* The localpart itself, or local@network / local@host. */
        struct kt_jid *z = kt_jid_parse(authzid);
        bool named = strcmp(authzid, local) == 0 ||
                     (z && z->local && !z->resource && strcmp(z->local, local) == 0 &&
                      sm_is_local(sm, z));
        kt_jid_free(&z);
        if (!named) {
            kt_log(KT_LOG_INFO, "sm: EXTERNAL refused for %s: authzid %s is another account", local,
                   authzid);
            goto refuse;
        }
    }
    bool same = false;
    int may = may_replace(db, local, key, &same);
    if (may <= 0) {
        if (may == 0)
            kt_log(KT_LOG_INFO,
                   "sm: EXTERNAL refused for %s: an older key than the stored "
                   "one, which is still valid",
                   local);
        goto refuse;
    }
    if (!same && sm_keys_store(db, local, key) < 0) {
        kt_log(KT_LOG_WARN, "sm: cannot store the key of %s: %s", local, kt_db_error(db));
        goto refuse;
    }
    struct kt_db_param p = KT_DB_P_STR(local);
    if (kt_db_exec(db, "UPDATE users SET last_login = NOW() WHERE localpart = ?", &p, 1, NULL,
                   NULL) < 0)
        kt_log(KT_LOG_WARN, "sm: cannot record the login of %s: %s", local, kt_db_error(db));
    sm_keys_remember(sm, local, key);
    kt_pgp_key_free(&key);
    return local;
refuse:
    kt_pgp_key_free(&key);
    free(local);
    return NULL;
}

int sm_keys_certify(struct sm *sm, struct kt_pgp_key *key, size_t uid)
{
    struct sm_keys *k = sm->keys;
    if (!k->node || kt_pgp_uid_certify(key, uid, k->node, k->pkey, time(NULL)) < 0)
        return -1;
    kt_pgp_key_verify(key);
    return 0;
}

/* ---- the node key ---- */

/* The contents of a key file (at most KT_PGP_MAX_INPUT bytes), or NULL. */
static uint8_t *read_key_file(const char *path, const char *what, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kt_log(KT_LOG_ERROR, "sm: cannot open %s %s: %m", what, path);
        return NULL;
    }
    uint8_t *data = kt_malloc(KT_PGP_MAX_INPUT + 1);
    *len_r = fread(data, 1, KT_PGP_MAX_INPUT + 1, f);
    fclose(f);
    if (*len_r > KT_PGP_MAX_INPUT) {
        kt_log(KT_LOG_ERROR, "sm: %s %s is too large", what, path);
        free(data);
        return NULL;
    }
    return data;
}

/* sm.trusted_keys: public keys of the network's other nodes, whose
 * certifications count as the node's own. */
static int load_trusted(struct sm *sm, const config_setting_t *group)
{
    struct sm_keys *k = sm->keys;
    const config_setting_t *list =
        group ? config_setting_lookup((config_setting_t *)group, "trusted_keys") : NULL;
    char where[256];
    if (!list)
        return 0;
    kt_setting_where(list, where, sizeof(where));
    if (!config_setting_is_list(list) && !config_setting_is_array(list)) {
        kt_log(KT_LOG_ERROR, "%s: sm.trusted_keys: expected a list of file names", where);
        return -1;
    }
    unsigned n = (unsigned)config_setting_length(list);
    k->trusted = kt_calloc(n ? n : 1, sizeof(*k->trusted));
    for (unsigned i = 0; i < n; i++) {
        const char *path = config_setting_get_string_elem(list, (int)i);
        size_t len = 0;
        uint8_t *data = path ? read_key_file(path, "the trusted key", &len) : NULL;
        struct kt_pgp_key *key = NULL;
        if (!path)
            kt_log(KT_LOG_ERROR, "%s: sm.trusted_keys: expected file names", where);
        if (!data)
            return -1;
        enum kt_pgp_err e = kt_pgp_key_parse(data, len, &key);
        free(data);
        if (e != KT_PGP_OK) {
            kt_log(KT_LOG_ERROR, "sm: the trusted key %s: %s", path, kt_pgp_strerror(e));
            return -1;
        }
        kt_pgp_key_verify(key);
        char fpr[41];
        kt_pgp_fpr_hex(key->primary.fpr, fpr);
        if (kt_pgp_key_invalid(key, time(NULL))) {
            kt_log(KT_LOG_ERROR,
                   "sm: the trusted key %s (%s) is revoked, expired or not "
                   "self-signed",
                   path, fpr);
            kt_pgp_key_free(&key);
            return -1;
        }
        k->trusted[k->ntrusted++] = key;
        kt_log(KT_LOG_INFO, "sm: trusting certifications by %s (%s)", fpr, path);
    }
    return 0;
}

static int load_node_key(struct sm *sm, const char *path)
{
    struct sm_keys *k = sm->keys;
    size_t len = 0;
    int ret = -1;
    uint8_t *data = read_key_file(path, "the node key", &len);
    if (!data)
        return -1;
    enum kt_pgp_err e = kt_pgp_secret_parse(data, len, &k->node, &k->pkey);
    if (e != KT_PGP_OK) {
        kt_log(KT_LOG_ERROR, "sm: the node key %s: %s", path, kt_pgp_strerror(e));
        goto out;
    }
    if (kt_pgp_key_invalid(k->node, time(NULL))) {
        kt_log(KT_LOG_ERROR, "sm: the node key %s is revoked, expired or not self-signed", path);
        goto out;
    }
    kt_pgp_fpr_hex(k->node->primary.fpr, k->fpr);
    ret = 0;
out:
    free(data);
    return ret;
}

int sm_keys_init(struct sm *sm, const config_setting_t *group)
{
    struct sm_keys *k = kt_new(struct sm_keys);
    sm->keys = k;
    pthread_mutex_init(&k->lock, NULL);
    k->bridge_oid = OBJ_txt2obj(KT_BRIDGE_OID, 1);
    if (!k->bridge_oid) {
        kt_log(KT_LOG_ERROR, "sm: OpenSSL cannot handle the bridge certificate OID");
        return -1;
    }
    if (!sm->conf->key || !*sm->conf->key) {
        kt_log(KT_LOG_INFO, "sm: no node key (sm.key): Kontalk key accounts are off");
        return 0;
    }
    if (load_node_key(sm, sm->conf->key) < 0 || load_trusted(sm, group) < 0)
        return -1;
    kt_core_set_external_auth(sm->core, external_auth, sm);
    kt_log(KT_LOG_INFO, "sm: node key %s; Kontalk key accounts log in with SASL EXTERNAL", k->fpr);
    return 0;
}

void sm_keys_free(struct sm *sm)
{
    struct sm_keys *k = sm->keys;
    if (!k)
        return;
    for (unsigned b = 0; b < KNOWN_BUCKETS; b++) {
        for (struct known_user *u = k->known[b], *next; u; u = next) {
            next = u->next;
            free(u->local);
            free(u->keyring);
            free(u);
        }
    }
    kt_pgp_key_free(&k->node);
    for (unsigned t = 0; t < k->ntrusted; t++)
        kt_pgp_key_free(&k->trusted[t]);
    free(k->trusted);
    EVP_PKEY_free(k->pkey);
    ASN1_OBJECT_free(k->bridge_oid);
    pthread_mutex_destroy(&k->lock);
    free(k);
    sm->keys = NULL;
}
