/* SASL mechanisms of mod_c2s: the SCRAM server state machine (RFC 5802,
 * RFC 7677) with channel binding, PLAIN (RFC 4616) and EXTERNAL parsing,
 * the RFC 6120 base64 layer and the TLS channel-binding values.
 *
 * Everything here is pure computation on bytes the caller hands in: the
 * stream code owns I/O, the database lookup and the worker that runs PBKDF2.
 * Parsers follow the RFC 5802 §7 grammar strictly and never trust lengths
 * or terminators in client data: a message is checked for size, NUL bytes
 * and UTF-8 before it is copied into a C string. Secrets (proofs, keys,
 * passwords) are compared with CRYPTO_memcmp and wiped before memory is
 * released. An unknown user gets a challenge that looks like a real one
 * (a per-process HMAC of the name as salt) and costs the same work to
 * verify, so failures do not tell unknown users from wrong passwords. */
#include "config.h"
#include <kontalk/base.h>
#include <kontalk/scram.h>

#include "modules/c2s/sasl.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Random bytes in a server nonce (base64: 32 characters). */
#define SCRAM_NONCE_BYTES 24
/* Longest JID (RFC 7622: three parts of 1023 bytes plus separators). */
#define SASL_MAX_AUTHZID 3071
/* RFC 4616 §2: each PLAIN field is at most 255 octets. */
#define PLAIN_MAX_FIELD 255

/* Test hook: when set, used verbatim as the server nonce part, so the unit
 * test can replay the RFC examples. Never set in the module. */
static const char *scram_test_snonce;

enum scram_phase { SCRAM_STARTED, SCRAM_CHALLENGED, SCRAM_DONE };

struct c2s_scram {
    enum c2s_sasl_mech mech;
    enum kt_scram_hash hash;
    enum scram_phase phase;
    char cb_flag;        /* 'n', 'y' or 'p' */
    const char *cb_name; /* static string, NULL unless cb_flag == 'p' */
    char *gs2_header;    /* "n,," "y,a=x," "p=tls-exporter,," ... */
    size_t gs2_len;
    char *username;
    char *authzid;
    char *client_first_bare;
    char *cnonce;
    char *nonce; /* cnonce + snonce */
    char *server_first;
    char *server_final;
    struct kt_scram_keys keys;
    bool known; /* keys are a real account's */
};

static const char *const mech_names[] = {
    [C2S_SASL_SCRAM_SHA_1] = "SCRAM-SHA-1",
    [C2S_SASL_SCRAM_SHA_1_PLUS] = "SCRAM-SHA-1-PLUS",
    [C2S_SASL_SCRAM_SHA_256] = "SCRAM-SHA-256",
    [C2S_SASL_SCRAM_SHA_256_PLUS] = "SCRAM-SHA-256-PLUS",
    [C2S_SASL_PLAIN] = "PLAIN",
    [C2S_SASL_EXTERNAL] = "EXTERNAL",
};

static const char *const fail_names[] = {
    [C2S_SASL_OK] = NULL,
    [C2S_SASL_FAIL_ABORTED] = "aborted",
    [C2S_SASL_FAIL_ACCOUNT_DISABLED] = "account-disabled",
    [C2S_SASL_FAIL_CREDENTIALS_EXPIRED] = "credentials-expired",
    [C2S_SASL_FAIL_ENCRYPTION_REQUIRED] = "encryption-required",
    [C2S_SASL_FAIL_INCORRECT_ENCODING] = "incorrect-encoding",
    [C2S_SASL_FAIL_INVALID_AUTHZID] = "invalid-authzid",
    [C2S_SASL_FAIL_INVALID_MECHANISM] = "invalid-mechanism",
    [C2S_SASL_FAIL_MALFORMED_REQUEST] = "malformed-request",
    [C2S_SASL_FAIL_MECHANISM_TOO_WEAK] = "mechanism-too-weak",
    [C2S_SASL_FAIL_NOT_AUTHORIZED] = "not-authorized",
    [C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE] = "temporary-auth-failure",
};

/* Channel-binding types we can compute (RFC 9266, RFC 5929). tls-unique is
 * left out: it is undefined for TLS 1.3 and weak before it. */
static const char *const cb_names[] = {"tls-exporter", "tls-server-end-point"};

const char *c2s_sasl_mech_name(enum c2s_sasl_mech mech)
{
    kt_assert((size_t)mech < KT_ARRAY_SIZE(mech_names));
    return mech_names[mech];
}

int c2s_sasl_mech_from_name(const char *name, enum c2s_sasl_mech *mech_r)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < KT_ARRAY_SIZE(mech_names); i++) {
        if (strcmp(name, mech_names[i]) == 0) {
            *mech_r = (enum c2s_sasl_mech)i;
            return 0;
        }
    }
    return -1;
}

bool c2s_sasl_mech_is_scram(enum c2s_sasl_mech mech)
{
    return mech == C2S_SASL_SCRAM_SHA_1 || mech == C2S_SASL_SCRAM_SHA_1_PLUS ||
           mech == C2S_SASL_SCRAM_SHA_256 || mech == C2S_SASL_SCRAM_SHA_256_PLUS;
}

bool c2s_sasl_mech_is_plus(enum c2s_sasl_mech mech)
{
    return mech == C2S_SASL_SCRAM_SHA_1_PLUS || mech == C2S_SASL_SCRAM_SHA_256_PLUS;
}

const char *c2s_sasl_fail_name(enum c2s_sasl_fail fail)
{
    kt_assert((size_t)fail < KT_ARRAY_SIZE(fail_names));
    return fail_names[fail];
}

/* Strict UTF-8 (RFC 3629): no overlong forms, surrogates or code points
 * above U+10FFFF. NUL is refused too: every SASL string here ends up as a C
 * string, and none of the grammars allows it where we call this. */
static bool sasl_utf8_ok(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;

        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

enum c2s_sasl_fail c2s_sasl_decode(const char *text, unsigned char **data_r, size_t *len_r)
{
    size_t tlen = text ? strlen(text) : 0;

    *data_r = NULL;
    *len_r = 0;
    if (tlen == 0)
        return C2S_SASL_OK;
    if (tlen == 1 && text[0] == '=') {
        *data_r = kt_malloc(1);
        return C2S_SASL_OK;
    }
    if (tlen > (C2S_SASL_MAX_MSG + 2) / 3 * 4)
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    *data_r = kt_base64_decode_new(text, len_r);
    return *data_r ? C2S_SASL_OK : C2S_SASL_FAIL_INCORRECT_ENCODING;
}

/* ---- SCRAM ---- */

static const EVP_MD *scram_md(enum kt_scram_hash hash)
{
    return hash == KT_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

/* RFC 5802 §7: printable = %x21-2B / %x2D-7E (printable ASCII but ','). */
static bool scram_printable(char c)
{
    return c >= 0x21 && c <= 0x7E && c != ',';
}

/* Length of the field starting at p: up to the next ',' or the end. */
static size_t scram_field_len(const char *p)
{
    return strcspn(p, ",");
}

/* Unescapes a saslname (RFC 5802 §5.1): "=2C" -> ',', "=3D" -> '=', any
 * other '=' is an error, as is an empty name. n bytes from s, which holds no
 * ','. Returns a new string or NULL. */
static char *scram_unescape(const char *s, size_t n)
{
    char *out, *o;

    if (n == 0)
        return NULL;
    out = o = kt_malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=') {
            *o++ = s[i];
        } else if (n - i >= 3 && s[i + 1] == '2' && s[i + 2] == 'C') {
            *o++ = ',';
            i += 2;
        } else if (n - i >= 3 && s[i + 1] == '3' && s[i + 2] == 'D') {
            *o++ = '=';
            i += 2;
        } else {
            free(out);
            return NULL;
        }
    }
    *o = '\0';
    return out;
}

/* Skips one extension attr-val (ALPHA "=" 1*value-char) at *p; refuses the
 * names in reject (attributes the grammar places elsewhere). */
static bool scram_skip_ext(const char **p, const char *reject)
{
    const char *s = *p;
    bool alpha = (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z');

    if (!alpha || s[1] != '=' || s[2] == ',' || s[2] == '\0' || strchr(reject, s[0]))
        return false;
    *p = s + 2 + scram_field_len(s + 2);
    return true;
}

/* Length of the nonce value at p (after "r="): printable characters up to
 * ',' or the end, 0 if empty or if a non-printable character follows. */
static size_t scram_nonce_len(const char *p)
{
    size_t n = 0;

    while (scram_printable(p[n]))
        n++;
    if (p[n] != ',' && p[n] != '\0')
        return 0;
    return n;
}

static bool scram_msg_ok(const unsigned char *msg, size_t len)
{
    return msg && len > 0 && len <= C2S_SASL_MAX_MSG && sasl_utf8_ok(msg, len);
}

/* Parses the GS2 header and client-first-message-bare into st. */
static enum c2s_sasl_fail scram_parse_first(struct c2s_scram *st, const char *buf)
{
    const char *p = buf, *cb = NULL;
    size_t cb_len = 0, n;

    /* gs2-cbind-flag: "n", "y" or "p=" cb-name (ALPHA / DIGIT / "." / "-"). */
    if ((p[0] == 'n' || p[0] == 'y') && p[1] == ',') {
        st->cb_flag = p[0];
        p += 2;
    } else if (p[0] == 'p' && p[1] == '=') {
        cb = p + 2;
        cb_len = strspn(cb, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        if (cb_len == 0 || cb[cb_len] != ',')
            return C2S_SASL_FAIL_MALFORMED_REQUEST;
        st->cb_flag = 'p';
        p = cb + cb_len + 1;
    } else {
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    }

    /* [ "a=" saslname ] "," */
    if (p[0] == 'a' && p[1] == '=') {
        n = scram_field_len(p + 2);
        if (p[2 + n] != ',' || !(st->authzid = scram_unescape(p + 2, n)))
            return C2S_SASL_FAIL_MALFORMED_REQUEST;
        p += 2 + n + 1;
    } else if (p[0] == ',') {
        p++;
    } else {
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    }
    st->gs2_len = (size_t)(p - buf);
    st->gs2_header = kt_strndup(buf, st->gs2_len);
    st->client_first_bare = kt_strdup(p);

    /* RFC 5802 §5.1: a server that sees the reserved m= must fail. */
    if (p[0] == 'm' && p[1] == '=')
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    if (p[0] != 'n' || p[1] != '=')
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    n = scram_field_len(p + 2);
    if (p[2 + n] != ',' || !(st->username = scram_unescape(p + 2, n)))
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    p += 2 + n + 1;

    if (p[0] != 'r' || p[1] != '=' || (n = scram_nonce_len(p + 2)) == 0)
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    st->cnonce = kt_strndup(p + 2, n);
    p += 2 + n;

    while (*p == ',') {
        p++;
        if (!scram_skip_ext(&p, "mnr"))
            return C2S_SASL_FAIL_MALFORMED_REQUEST;
    }
    if (*p != '\0')
        return C2S_SASL_FAIL_MALFORMED_REQUEST;

    /* Channel-binding rules (RFC 5802 §6, RFC 5056): a -PLUS mechanism
     * means binding; binding without -PLUS is a protocol error; "y" says
     * the client saw no -PLUS offer, so if we made one, someone removed it. */
    if (c2s_sasl_mech_is_plus(st->mech)) {
        if (st->cb_flag != 'p')
            return C2S_SASL_FAIL_MALFORMED_REQUEST;
        for (size_t i = 0; i < KT_ARRAY_SIZE(cb_names); i++) {
            if (strlen(cb_names[i]) == cb_len && memcmp(cb_names[i], cb, cb_len) == 0)
                st->cb_name = cb_names[i];
        }
        if (!st->cb_name)
            return C2S_SASL_FAIL_NOT_AUTHORIZED;
    } else if (st->cb_flag == 'p') {
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    }
    return C2S_SASL_OK;
}

enum c2s_sasl_fail c2s_scram_start(enum c2s_sasl_mech mech, const unsigned char *msg, size_t len,
                                   bool plus_offered, struct c2s_scram **state_r)
{
    kt_assert(c2s_sasl_mech_is_scram(mech) && state_r);
    *state_r = NULL;
    if (!scram_msg_ok(msg, len))
        return C2S_SASL_FAIL_MALFORMED_REQUEST;

    struct c2s_scram *st = kt_new(struct c2s_scram);
    st->mech = mech;
    st->hash = (mech == C2S_SASL_SCRAM_SHA_1 || mech == C2S_SASL_SCRAM_SHA_1_PLUS)
                   ? KT_SCRAM_SHA1
                   : KT_SCRAM_SHA256;
    st->phase = SCRAM_STARTED;
    char *buf = kt_strndup((const char *)msg, len);
    enum c2s_sasl_fail rc = scram_parse_first(st, buf);
    free(buf);
    if (rc == C2S_SASL_OK && st->cb_flag == 'y' && plus_offered)
        rc = C2S_SASL_FAIL_NOT_AUTHORIZED;
    if (rc != C2S_SASL_OK) {
        c2s_scram_free(&st);
        return rc;
    }
    *state_r = st;
    return C2S_SASL_OK;
}

const char *c2s_scram_username(const struct c2s_scram *st)
{
    return st->username;
}

const char *c2s_scram_authzid(const struct c2s_scram *st)
{
    return st->authzid;
}

const char *c2s_scram_cb_name(const struct c2s_scram *st)
{
    return st->cb_name;
}

enum kt_scram_hash c2s_scram_hash(const struct c2s_scram *st)
{
    return st->hash;
}

/* The per-process key for fake salts. Random, so it cannot be predicted,
 * but it changes on restart: an attacker who watches the salt of one name
 * across a restart can tell an unknown user. A persistent secret would fix
 * that; it is not worth a database row yet. */
static unsigned char fake_secret[32];
static bool fake_secret_ok;
static pthread_once_t fake_secret_once = PTHREAD_ONCE_INIT;

static void fake_secret_init(void)
{
    fake_secret_ok = RAND_bytes(fake_secret, sizeof(fake_secret)) == 1;
}

/* HMAC-SHA-256(secret, label || username) truncated to len (<= 32). */
static bool fake_bytes(const char *label, enum kt_scram_hash hash, const char *username,
                       unsigned char *out, size_t len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    pthread_once(&fake_secret_once, fake_secret_init);
    if (!fake_secret_ok || len > 32)
        return false;
    /* label, one byte of hash id and the name, framed so that no two
     * inputs collide ("salt" is never a prefix of another label). */
    size_t llen = strlen(label), ulen = strlen(username);
    unsigned char *in = kt_malloc(llen + 2 + ulen);
    memcpy(in, label, llen);
    in[llen] = '\0';
    in[llen + 1] = (unsigned char)hash;
    memcpy(in + llen + 2, username, ulen);
    const unsigned char *r =
        HMAC(EVP_sha256(), fake_secret, sizeof(fake_secret), in, llen + 2 + ulen, mac, &n);
    bool ok = r && n >= len;
    free(in);
    if (ok)
        memcpy(out, mac, len);
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

/* Keys for an account that does not exist: same shapes, never matching. */
static bool scram_fake_keys(struct c2s_scram *st, unsigned fake_iterations)
{
    struct kt_scram_keys *k = &st->keys;
    size_t klen = kt_scram_hash_len(st->hash);

    memset(k, 0, sizeof(*k));
    k->hash = st->hash;
    k->key_len = klen;
    k->iterations =
        fake_iterations < KT_SCRAM_MIN_ITERATIONS ? KT_SCRAM_MIN_ITERATIONS : fake_iterations;
    k->salt_len = C2S_SCRAM_FAKE_SALT_LEN;
    return fake_bytes("salt", st->hash, st->username, k->salt, k->salt_len) &&
           fake_bytes("stored", st->hash, st->username, k->stored_key, klen) &&
           fake_bytes("server", st->hash, st->username, k->server_key, klen);
}

enum c2s_sasl_fail c2s_scram_server_first(struct c2s_scram *st, const struct kt_scram_keys *keys,
                                          unsigned fake_iterations, const char **msg_r)
{
    size_t klen = kt_scram_hash_len(st->hash);
    char *snonce = NULL, *salt = NULL;

    kt_assert(st->phase == SCRAM_STARTED && msg_r);
    st->phase = SCRAM_DONE; /* until we succeed */
    *msg_r = NULL;

    if (keys && keys->hash == st->hash && keys->key_len == klen && keys->salt_len > 0 &&
        keys->salt_len <= sizeof(keys->salt) && keys->iterations > 0) {
        st->keys = *keys;
        st->known = true;
    } else if (!scram_fake_keys(st, fake_iterations)) {
        return C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE;
    }

    if (scram_test_snonce) {
        snonce = kt_strdup(scram_test_snonce);
    } else {
        unsigned char rnd[SCRAM_NONCE_BYTES];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE;
        snonce = kt_base64_encode(rnd, sizeof(rnd)); /* no ',' in base64 */
    }
    size_t cn = strlen(st->cnonce), sn = strlen(snonce);
    st->nonce = kt_malloc(cn + sn + 1);
    memcpy(st->nonce, st->cnonce, cn);
    memcpy(st->nonce + cn, snonce, sn + 1);
    free(snonce);

    salt = kt_base64_encode(st->keys.salt, st->keys.salt_len);
    int n = snprintf(NULL, 0, "r=%s,s=%s,i=%u", st->nonce, salt, st->keys.iterations);
    kt_assert(n > 0);
    st->server_first = kt_malloc((size_t)n + 1);
    snprintf(st->server_first, (size_t)n + 1, "r=%s,s=%s,i=%u", st->nonce, salt,
             st->keys.iterations);
    free(salt);

    st->phase = SCRAM_CHALLENGED;
    *msg_r = st->server_first;
    return C2S_SASL_OK;
}

/* Pieces of a client-final-message; pointers into the caller's buffer. */
struct scram_final {
    const char *cbind; /* base64 text of c=, cbind_len bytes */
    size_t cbind_len;
    const char *nonce;
    size_t nonce_len;
    const char *proof; /* base64 text of p=, NUL-terminated */
    size_t without_proof_len;
};

/* client-final-message = "c=" base64 "," "r=" nonce ["," extensions] ","
 *                        "p=" base64 */
static bool scram_parse_final(const char *buf, struct scram_final *f)
{
    const char *last = strrchr(buf, ','), *p = buf;

    if (!last || last[1] != 'p' || last[2] != '=')
        return false;
    f->proof = last + 3;
    f->without_proof_len = (size_t)(last - buf);

    if (p[0] != 'c' || p[1] != '=')
        return false;
    f->cbind = p + 2;
    f->cbind_len = scram_field_len(f->cbind);
    p = f->cbind + f->cbind_len;
    if (p >= last || *p != ',')
        return false;
    p++;
    if (p[0] != 'r' || p[1] != '=' || (f->nonce_len = scram_nonce_len(p + 2)) == 0)
        return false;
    f->nonce = p + 2;
    p = f->nonce + f->nonce_len;
    while (p < last) {
        p++;
        if (!scram_skip_ext(&p, "cmnpr"))
            return false;
    }
    return p == last;
}

/* Decodes n bytes of base64 text at s into a new buffer; -1 if invalid. */
static long scram_b64(const char *s, size_t n, unsigned char **out_r)
{
    char *tmp = kt_strndup(s, n);
    size_t cap = n / 4 * 3 + 1;
    *out_r = kt_malloc(cap);
    long r = kt_base64_decode(tmp, *out_r, cap);
    free(tmp);
    return r;
}

enum c2s_sasl_fail c2s_scram_finish(struct c2s_scram *st, const unsigned char *msg, size_t len,
                                    const unsigned char *cb_data, size_t cb_len,
                                    const char **server_final_r)
{
    const EVP_MD *md = scram_md(st->hash);
    size_t klen = st->keys.key_len;
    unsigned char proof[EVP_MAX_MD_SIZE], sig[EVP_MAX_MD_SIZE], key[EVP_MAX_MD_SIZE];
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned char *cbind = NULL, *want = NULL;
    char *buf = NULL, *am = NULL;
    enum c2s_sasl_fail rc = C2S_SASL_FAIL_MALFORMED_REQUEST;
    struct scram_final f;
    unsigned int n;
    long plen, clen;

    kt_assert(server_final_r);
    *server_final_r = NULL;
    /* The client drives this step: a response before the challenge or
     * after the end is its error, not ours. */
    if (st->phase != SCRAM_CHALLENGED) {
        st->phase = SCRAM_DONE;
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    }
    st->phase = SCRAM_DONE;
    if (!scram_msg_ok(msg, len))
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    buf = kt_strndup((const char *)msg, len);
    if (!scram_parse_final(buf, &f))
        goto fail;
    plen = kt_base64_decode(f.proof, proof, sizeof(proof));
    if (plen < 0 || (size_t)plen != klen)
        goto fail;
    clen = scram_b64(f.cbind, f.cbind_len, &cbind);
    if (clen < 0)
        goto fail;

    rc = C2S_SASL_FAIL_NOT_AUTHORIZED;
    /* c= must repeat our GS2 header (authzid included) and, when bound,
     * the channel's value: that is what ties the proof to this TLS session. */
    if (st->cb_flag == 'p' && !cb_data)
        goto fail;
    size_t want_len = st->gs2_len + (st->cb_flag == 'p' ? cb_len : 0);
    want = kt_malloc(want_len + 1);
    memcpy(want, st->gs2_header, st->gs2_len);
    if (st->cb_flag == 'p' && cb_len)
        memcpy(want + st->gs2_len, cb_data, cb_len);
    if ((size_t)clen != want_len || CRYPTO_memcmp(cbind, want, want_len) != 0)
        goto fail;
    if (f.nonce_len != strlen(st->nonce) || memcmp(f.nonce, st->nonce, f.nonce_len) != 0)
        goto fail;

    /* AuthMessage = client-first-message-bare "," server-first-message ","
     *               client-final-message-without-proof */
    size_t b = strlen(st->client_first_bare), s = strlen(st->server_first);
    size_t am_len = b + 1 + s + 1 + f.without_proof_len;
    am = kt_malloc(am_len);
    memcpy(am, st->client_first_bare, b);
    am[b] = ',';
    memcpy(am + b + 1, st->server_first, s);
    am[b + 1 + s] = ',';
    memcpy(am + b + 2 + s, buf, f.without_proof_len);

    /* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the client
     * knew the password iff H(ClientKey) == StoredKey. Unknown users run
     * the same steps against fake keys and fail on `known`. */
    if (!HMAC(md, st->keys.stored_key, (int)klen, (unsigned char *)am, am_len, sig, &n) ||
        n != klen) {
        rc = C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE;
        goto fail;
    }
    for (size_t i = 0; i < klen; i++)
        key[i] = proof[i] ^ sig[i];
    if (EVP_Digest(key, klen, h, &n, md, NULL) != 1 || n != klen) {
        rc = C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE;
        goto fail;
    }
    bool match = CRYPTO_memcmp(h, st->keys.stored_key, klen) == 0;
    if (!match || !st->known)
        goto fail;

    if (!HMAC(md, st->keys.server_key, (int)klen, (unsigned char *)am, am_len, sig, &n) ||
        n != klen) {
        rc = C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE;
        goto fail;
    }
    char *v = kt_base64_encode(sig, klen);
    size_t vlen = strlen(v);
    st->server_final = kt_malloc(vlen + 3);
    memcpy(st->server_final, "v=", 2);
    memcpy(st->server_final + 2, v, vlen + 1);
    free(v);
    *server_final_r = st->server_final;
    rc = C2S_SASL_OK;
fail:
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(sig, sizeof(sig));
    free(buf);
    free(am);
    free(cbind);
    free(want);
    return rc;
}

void c2s_scram_free(struct c2s_scram **stp)
{
    struct c2s_scram *st = stp ? *stp : NULL;

    if (!st)
        return;
    free(st->gs2_header);
    free(st->username);
    free(st->authzid);
    free(st->client_first_bare);
    free(st->cnonce);
    free(st->nonce);
    free(st->server_first);
    free(st->server_final);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    *stp = NULL;
}

/* ---- PLAIN ---- */

/* Copies one field of n bytes (0 < n <= PLAIN_MAX_FIELD, valid UTF-8). */
static char *plain_field(const unsigned char *s, size_t n)
{
    if (n == 0 || n > PLAIN_MAX_FIELD || !sasl_utf8_ok(s, n))
        return NULL;
    return kt_strndup((const char *)s, n);
}

enum c2s_sasl_fail c2s_plain_parse(const unsigned char *msg, size_t len, struct c2s_plain **plain_r)
{
    const unsigned char *nul1, *nul2;
    struct c2s_plain *pl;

    kt_assert(plain_r);
    *plain_r = NULL;
    if (!msg || len == 0 || len > C2S_SASL_MAX_MSG)
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    nul1 = memchr(msg, '\0', len);
    if (!nul1)
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg));
    if (!nul2)
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    /* A third NUL lands in the password, where plain_field refuses it. */
    pl = kt_new(struct c2s_plain);
    size_t zlen = (size_t)(nul1 - msg), clen = (size_t)(nul2 - nul1 - 1);
    size_t plen = len - (size_t)(nul2 + 1 - msg);
    if ((zlen > 0 && !(pl->authzid = plain_field(msg, zlen))) ||
        !(pl->authcid = plain_field(nul1 + 1, clen)) ||
        !(pl->passwd = plain_field(nul2 + 1, plen))) {
        c2s_plain_free(&pl);
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    }
    *plain_r = pl;
    return C2S_SASL_OK;
}

void c2s_plain_free(struct c2s_plain **plp)
{
    struct c2s_plain *pl = plp ? *plp : NULL;

    if (!pl)
        return;
    if (pl->passwd) {
        OPENSSL_cleanse(pl->passwd, strlen(pl->passwd));
        free(pl->passwd);
    }
    free(pl->authzid);
    free(pl->authcid);
    free(pl);
    *plp = NULL;
}

bool c2s_plain_check(const char *password, const struct kt_scram_keys *keys,
                     unsigned fake_iterations)
{
    struct kt_scram_keys k;
    bool match = false;

    if (!password)
        return false;
    if (!keys) {
        /* Same cost as a real check; the salt does not matter. */
        static const unsigned char salt[C2S_SCRAM_FAKE_SALT_LEN] = {0};
        unsigned it =
            fake_iterations < KT_SCRAM_MIN_ITERATIONS ? KT_SCRAM_MIN_ITERATIONS : fake_iterations;
        (void)kt_scram_derive(KT_SCRAM_SHA256, password, salt, sizeof(salt), it, &k);
        OPENSSL_cleanse(&k, sizeof(k));
        return false;
    }
    if (keys->key_len != kt_scram_hash_len(keys->hash))
        return false;
    int rc =
        kt_scram_derive(keys->hash, password, keys->salt, keys->salt_len, keys->iterations, &k);
    if (rc == 0)
        match = CRYPTO_memcmp(k.stored_key, keys->stored_key, keys->key_len) == 0;
    OPENSSL_cleanse(&k, sizeof(k));
    return match;
}

/* ---- EXTERNAL ---- */

enum c2s_sasl_fail c2s_external_parse(const unsigned char *msg, size_t len, char **authzid_r)
{
    kt_assert(authzid_r);
    *authzid_r = NULL;
    if (len == 0)
        return C2S_SASL_OK;
    if (!msg || len > SASL_MAX_AUTHZID || !sasl_utf8_ok(msg, len))
        return C2S_SASL_FAIL_MALFORMED_REQUEST;
    *authzid_r = kt_strndup((const char *)msg, len);
    return C2S_SASL_OK;
}

/* ---- Channel bindings ---- */

int c2s_sasl_cb_tls_exporter(SSL *ssl, unsigned char out[32])
{
    static const char label[] = "EXPORTER-Channel-Binding";

    /* RFC 9266 §3: with TLS 1.2 the exporter is only safe with extended
     * master secret and is not what clients expect; we bind TLS 1.3 only. */
    if (!ssl || SSL_version(ssl) != TLS1_3_VERSION)
        return -1;
    if (SSL_export_keying_material(ssl, out, 32, label, sizeof(label) - 1, NULL, 0, 0) != 1)
        return -1;
    return 32;
}

int c2s_sasl_cb_tls_server_end_point(SSL *ssl, unsigned char out[C2S_SASL_CB_MAX])
{
    X509 *cert = ssl ? SSL_get_certificate(ssl) : NULL;
    int mdnid = NID_undef;
    const EVP_MD *md;
    unsigned int n = 0;

    if (!cert || X509_get_signature_info(cert, &mdnid, NULL, NULL, NULL) != 1)
        return -1;
    /* RFC 5929 §4.1: MD5 and SHA-1 are upgraded to SHA-256; a signature
     * without a single hash (EdDSA) has no defined binding. */
    if (mdnid == NID_md5 || mdnid == NID_sha1)
        mdnid = NID_sha256;
    if (mdnid == NID_undef || !(md = EVP_get_digestbynid(mdnid)))
        return -1;
    if (EVP_MD_get_size(md) <= 0 || EVP_MD_get_size(md) > C2S_SASL_CB_MAX)
        return -1;
    if (X509_digest(cert, md, out, &n) != 1)
        return -1;
    return (int)n;
}

int c2s_sasl_cb_data(SSL *ssl, const char *cb_name, unsigned char out[C2S_SASL_CB_MAX])
{
    if (!cb_name)
        return -1;
    if (strcmp(cb_name, "tls-exporter") == 0)
        return c2s_sasl_cb_tls_exporter(ssl, out);
    if (strcmp(cb_name, "tls-server-end-point") == 0)
        return c2s_sasl_cb_tls_server_end_point(ssl, out);
    return -1;
}
