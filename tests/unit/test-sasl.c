/* Unit tests for modules/c2s/sasl.c: the RFC 5802 and RFC 7677 SCRAM
 * exchanges replayed byte for byte (server nonce forced through the test
 * hook), a test-side SCRAM client for the other paths (wrong password,
 * unknown user, nonce and channel-binding mismatches, GS2 flag rules,
 * saslname escaping, malformed messages and random mutations), PLAIN and
 * EXTERNAL parsing, the RFC 6120 base64 layer, and both channel bindings
 * from real certificates and a real in-memory TLS 1.3 handshake. */
#include "config.h"
#include "modules/c2s/sasl.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tap.h"

int main(void);

#define BIG 8192

static enum c2s_sasl_fail start_str(enum c2s_sasl_mech mech, const char *msg, bool plus,
                                    struct c2s_scram **st)
{
    return c2s_scram_start(mech, (const unsigned char *)msg, strlen(msg), plus, st);
}

static enum c2s_sasl_fail finish_str(struct c2s_scram *st, const char *msg, const unsigned char *cb,
                                     size_t cb_len, const char **v)
{
    return c2s_scram_finish(st, (const unsigned char *)msg, strlen(msg), cb, cb_len, v);
}

/* ---- a SCRAM client, written from RFC 5802 §3 independently of sasl.c ---- */

/* Value of attribute `name` (e.g. 's') in a comma-separated message. */
static bool attr(const char *msg, char name, char *out, size_t outlen)
{
    const char *p = msg;
    while (p && *p) {
        if (p[0] == name && p[1] == '=') {
            size_t n = strcspn(p + 2, ",");
            if (n >= outlen)
                return false;
            memcpy(out, p + 2, n);
            out[n] = '\0';
            return true;
        }
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return false;
}

/* Builds client-final-message for without_proof and the expected
 * server-final "v=..." from the password and the server-first salt and
 * iterations. Returns false if server-first does not parse. */
static bool client_final(enum kt_scram_hash hash, const char *password, const char *bare,
                         const char *server_first, const char *without_proof, char *final,
                         char *verifier)
{
    const EVP_MD *md = hash == KT_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
    int klen = EVP_MD_get_size(md);
    unsigned char salt[64], salted[32], ckey[32], stored[32], skey[32], sig[32], proof[32];
    char s64[128], it[32], am[BIG];
    unsigned int n;

    if (!attr(server_first, 's', s64, sizeof(s64)) || !attr(server_first, 'i', it, sizeof(it)))
        return false;
    long slen = kt_base64_decode(s64, salt, sizeof(salt));
    if (slen <= 0)
        return false;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)slen, atoi(it), md, klen, salted);
    HMAC(md, salted, klen, (const unsigned char *)"Client Key", 10, ckey, &n);
    EVP_Digest(ckey, (size_t)klen, stored, &n, md, NULL);
    HMAC(md, salted, klen, (const unsigned char *)"Server Key", 10, skey, &n);
    if (snprintf(am, sizeof(am), "%s,%s,%s", bare, server_first, without_proof) >= BIG)
        return false;
    HMAC(md, stored, klen, (unsigned char *)am, strlen(am), sig, &n);
    for (int i = 0; i < klen; i++)
        proof[i] = ckey[i] ^ sig[i];
    char *p64 = kt_base64_encode(proof, (size_t)klen);
    int fl = snprintf(final, BIG, "%s,p=%s", without_proof, p64);
    free(p64);
    if (fl >= BIG)
        return false;
    HMAC(md, skey, klen, (unsigned char *)am, strlen(am), sig, &n);
    char *v64 = kt_base64_encode(sig, (size_t)klen);
    snprintf(verifier, BIG, "v=%s", v64);
    free(v64);
    return true;
}

struct xchg {
    enum c2s_sasl_mech mech;
    const char *gs2;  /* client's GS2 header */
    const char *bare; /* client-first-message-bare */
    bool plus_offered;
    const struct kt_scram_keys *keys; /* NULL: unknown user */
    const char *password;             /* the client's */
    const char *c_gs2;                /* GS2 header the client repeats in c= (NULL: gs2) */
    const unsigned char *client_cb;
    size_t client_cb_len;
    const unsigned char *server_cb;
    size_t server_cb_len;
    const char *nonce; /* nonce the client sends (NULL: the combined one) */
};

/* Runs a whole exchange; returns the first failure (or OK). On success the
 * server-final message must equal what the client expects. */
static enum c2s_sasl_fail exchange(const struct xchg *x)
{
    struct c2s_scram *st = NULL;
    char first[BIG], wp[BIG], final[BIG], verifier[BIG], nonce[BIG], cb[BIG];
    const char *sf, *v;
    enum c2s_sasl_fail rc;

    snprintf(first, sizeof(first), "%s%s", x->gs2, x->bare);
    rc = start_str(x->mech, first, x->plus_offered, &st);
    if (rc != C2S_SASL_OK)
        return rc;
    rc = c2s_scram_server_first(st, x->keys, 4096, &sf);
    if (rc != C2S_SASL_OK)
        goto done;
    if (!attr(sf, 'r', nonce, sizeof(nonce))) {
        rc = C2S_SASL_FAIL_ABORTED;
        goto done;
    }
    const char *cgs2 = x->c_gs2 ? x->c_gs2 : x->gs2;
    size_t glen = strlen(cgs2);
    memcpy(cb, cgs2, glen);
    if (x->client_cb_len)
        memcpy(cb + glen, x->client_cb, x->client_cb_len);
    char *c64 = kt_base64_encode((unsigned char *)cb, glen + x->client_cb_len);
    int wl = snprintf(wp, sizeof(wp), "c=%s,r=%s", c64, x->nonce ? x->nonce : nonce);
    free(c64);
    if (wl >= BIG) {
        rc = C2S_SASL_FAIL_ABORTED;
        goto done;
    }
    if (!client_final(c2s_scram_hash(st), x->password, x->bare, sf, wp, final, verifier)) {
        rc = C2S_SASL_FAIL_ABORTED;
        goto done;
    }
    rc = finish_str(st, final, x->server_cb, x->server_cb_len, &v);
    if (rc == C2S_SASL_OK && (!v || strcmp(v, verifier) != 0)) {
        diag("server-final %s, client expected %s", v ? v : "(null)", verifier);
        rc = C2S_SASL_FAIL_ABORTED;
    }
done:
    c2s_scram_free(&st);
    return rc;
}

static struct kt_scram_keys keys1, keys256;

static void test_names(void)
{
    enum c2s_sasl_mech m;

    diag("names");
    for (int i = C2S_SASL_SCRAM_SHA_1; i <= C2S_SASL_EXTERNAL; i++) {
        const char *name = c2s_sasl_mech_name((enum c2s_sasl_mech)i);
        ok(c2s_sasl_mech_from_name(name, &m) == 0 && (int)m == i, "mech %s round-trips", name);
    }
    is_str(c2s_sasl_mech_name(C2S_SASL_SCRAM_SHA_256_PLUS), "SCRAM-SHA-256-PLUS", "PLUS name");
    ok(c2s_sasl_mech_from_name("scram-sha-1", &m) < 0, "names are case-sensitive");
    ok(c2s_sasl_mech_from_name("DIGEST-MD5", &m) < 0, "unknown mechanism");
    ok(c2s_sasl_mech_from_name(NULL, &m) < 0, "NULL name");
    ok(c2s_sasl_mech_is_plus(C2S_SASL_SCRAM_SHA_1_PLUS) &&
           !c2s_sasl_mech_is_plus(C2S_SASL_SCRAM_SHA_256),
       "is_plus");
    ok(c2s_sasl_mech_is_scram(C2S_SASL_SCRAM_SHA_256) && !c2s_sasl_mech_is_scram(C2S_SASL_PLAIN),
       "is_scram");
    ok(c2s_sasl_fail_name(C2S_SASL_OK) == NULL, "OK has no condition");
    is_str(c2s_sasl_fail_name(C2S_SASL_FAIL_ABORTED), "aborted", "aborted");
    is_str(c2s_sasl_fail_name(C2S_SASL_FAIL_NOT_AUTHORIZED), "not-authorized", "not-authorized");
    is_str(c2s_sasl_fail_name(C2S_SASL_FAIL_MALFORMED_REQUEST), "malformed-request",
           "malformed-request");
    is_str(c2s_sasl_fail_name(C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE), "temporary-auth-failure",
           "temporary-auth-failure");
    is_str(c2s_sasl_fail_name(C2S_SASL_FAIL_INCORRECT_ENCODING), "incorrect-encoding",
           "incorrect-encoding");
}

static void test_decode(void)
{
    unsigned char *d;
    size_t n;

    diag("RFC 6120 base64 layer");
    ok(c2s_sasl_decode(NULL, &d, &n) == C2S_SASL_OK && !d && n == 0, "NULL: no data");
    ok(c2s_sasl_decode("", &d, &n) == C2S_SASL_OK && !d && n == 0, "empty: no data");
    ok(c2s_sasl_decode("=", &d, &n) == C2S_SASL_OK && d && n == 0, "'=': empty response");
    free(d);
    ok(c2s_sasl_decode("biws", &d, &n) == C2S_SASL_OK && n == 3 && memcmp(d, "n,,", 3) == 0,
       "biws -> n,,");
    free(d);
    is_int(c2s_sasl_decode("biw", &d, &n), C2S_SASL_FAIL_INCORRECT_ENCODING, "short quantum");
    ok(d == NULL, "no data on failure");
    is_int(c2s_sasl_decode("bi ws", &d, &n), C2S_SASL_FAIL_INCORRECT_ENCODING, "whitespace");
    is_int(c2s_sasl_decode("b!ws", &d, &n), C2S_SASL_FAIL_INCORRECT_ENCODING, "bad char");
    is_int(c2s_sasl_decode("==", &d, &n), C2S_SASL_FAIL_INCORRECT_ENCODING, "only padding");
    char *big = malloc(8193);
    memset(big, 'A', 8192);
    big[8192] = '\0';
    is_int(c2s_sasl_decode(big, &d, &n), C2S_SASL_FAIL_MALFORMED_REQUEST, "too large");
    free(big);
}

struct rfc_vector {
    const char *name;
    enum c2s_sasl_mech mech;
    struct kt_scram_keys *keys;
    const char *client_first, *snonce, *server_first, *client_final, *server_final;
};

static void test_rfc(const struct rfc_vector *t)
{
    struct c2s_scram *st = NULL;
    const char *sf = NULL, *v = NULL;

    diag("%s", t->name);
    scram_test_snonce = t->snonce;
    is_int(start_str(t->mech, t->client_first, false, &st), C2S_SASL_OK, "start");
    is_str(c2s_scram_username(st), "user", "username");
    ok(c2s_scram_authzid(st) == NULL, "no authzid");
    ok(c2s_scram_cb_name(st) == NULL, "no channel binding");
    is_int(c2s_scram_server_first(st, t->keys, 4096, &sf), C2S_SASL_OK, "server-first");
    is_str(sf, t->server_first, "server-first is the RFC's");
    is_int(finish_str(st, t->client_final, NULL, 0, &v), C2S_SASL_OK, "finish");
    is_str(v, t->server_final, "server-final is the RFC's");
    is_int(finish_str(st, t->client_final, NULL, 0, &v), C2S_SASL_FAIL_MALFORMED_REQUEST,
           "a second finish is refused");
    c2s_scram_free(&st);
    ok(st == NULL, "free clears the pointer");
    c2s_scram_free(&st); /* NULL-safe */
    start_str(t->mech, t->client_first, false, &st);
    is_int(finish_str(st, t->client_final, NULL, 0, &v), C2S_SASL_FAIL_MALFORMED_REQUEST,
           "finish before the challenge is refused");
    c2s_scram_free(&st);

    /* The same exchange with one proof byte changed: not-authorized. */
    char bad[BIG];
    snprintf(bad, sizeof(bad), "%s", t->client_final);
    char *p = strstr(bad, ",p=") + 3;
    p[0] = p[0] == 'A' ? 'B' : 'A';
    start_str(t->mech, t->client_first, false, &st);
    c2s_scram_server_first(st, t->keys, 4096, &sf);
    is_int(finish_str(st, bad, NULL, 0, &v), C2S_SASL_FAIL_NOT_AUTHORIZED, "wrong proof");
    ok(v == NULL, "no server-final on failure");
    c2s_scram_free(&st);
    scram_test_snonce = NULL;
}

static void test_exchanges(void)
{
    struct xchg x = {
        .mech = C2S_SASL_SCRAM_SHA_256,
        .gs2 = "n,,",
        .bare = "n=user,r=abcdefghijkl",
        .keys = &keys256,
        .password = "pencil",
    };

    diag("exchanges with the test client");
    is_int(exchange(&x), C2S_SASL_OK, "SHA-256 right password");
    x.password = "pencil2";
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "SHA-256 wrong password");
    x.password = "pencil";
    x.mech = C2S_SASL_SCRAM_SHA_1;
    x.keys = &keys1;
    is_int(exchange(&x), C2S_SASL_OK, "SHA-1 right password");
    x.keys = &keys256;
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED,
           "keys of the other hash are treated as an unknown user");
    x.mech = C2S_SASL_SCRAM_SHA_256;

    x.nonce = "abcdefghijkl";
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "client nonce only");
    x.nonce = "abcdefghijklXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "wrong server nonce part");
    x.nonce = NULL;

    /* Extensions in client-first are ignored (RFC 5802 §7 extensions). */
    x.bare = "n=user,r=abcdefghijkl,x=ext=val";
    is_int(exchange(&x), C2S_SASL_OK, "unknown extension ignored");

    /* Authzid: returned to the caller, and c= must repeat it. */
    struct c2s_scram *st = NULL;
    is_int(start_str(C2S_SASL_SCRAM_SHA_256, "n,a=juliet=40example.com,n=user,r=abc", false, &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "bad escape in authzid");
    is_int(start_str(C2S_SASL_SCRAM_SHA_256, "n,a=ju=2Cliet=3D,n=user,r=abc", false, &st),
           C2S_SASL_OK, "authzid with escapes");
    is_str(c2s_scram_authzid(st), "ju,liet=", "authzid unescaped");
    c2s_scram_free(&st);
    x.gs2 = "n,a=juliet,";
    x.bare = "n=user,r=abcdefghijkl";
    is_int(exchange(&x), C2S_SASL_OK, "exchange with authzid");
    x.c_gs2 = "n,,";
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "c= without the authzid");
    x.c_gs2 = NULL;
    x.gs2 = "n,,";
}

static void test_unknown_user(void)
{
    struct c2s_scram *st = NULL, *st2 = NULL;
    const char *sf, *sf2;
    char r[BIG], s[BIG], s2[BIG], i[BIG];
    unsigned char salt[64];

    diag("unknown user");
    start_str(C2S_SASL_SCRAM_SHA_256, "n,,n=nobody,r=cnonce", false, &st);
    is_int(c2s_scram_server_first(st, NULL, 10000, &sf), C2S_SASL_OK, "server-first");
    ok(attr(sf, 'r', r, sizeof(r)) && strncmp(r, "cnonce", 6) == 0 && strlen(r) == 6 + 32,
       "r= is the client nonce and 32 base64 characters");
    ok(strncmp(sf, "r=", 2) == 0 && attr(sf, 's', s, sizeof(s)) &&
           kt_base64_decode(s, salt, sizeof(salt)) == C2S_SCRAM_FAKE_SALT_LEN,
       "s= is a 16-byte salt");
    ok(attr(sf, 'i', i, sizeof(i)) && strcmp(i, "10000") == 0, "i= is the fake iteration count");
    start_str(C2S_SASL_SCRAM_SHA_256, "n,,n=nobody,r=other", false, &st2);
    c2s_scram_server_first(st2, NULL, 1, &sf2);
    ok(attr(sf2, 's', s2, sizeof(s2)) && strcmp(s, s2) == 0, "same user, same fake salt");
    ok(strstr(sf2, ",i=4096") != NULL, "fake iterations floor at 4096");
    ok(attr(sf2, 'r', r, sizeof(r)) && strncmp(r + 5, sf + 8, 32) != 0, "server nonces differ");
    c2s_scram_free(&st2);
    start_str(C2S_SASL_SCRAM_SHA_256, "n,,n=nobody2,r=other", false, &st2);
    c2s_scram_server_first(st2, NULL, 4096, &sf2);
    ok(attr(sf2, 's', s2, sizeof(s2)) && strcmp(s, s2) != 0, "other user, other fake salt");
    c2s_scram_free(&st2);
    start_str(C2S_SASL_SCRAM_SHA_1, "n,,n=nobody,r=other", false, &st2);
    c2s_scram_server_first(st2, NULL, 4096, &sf2);
    ok(attr(sf2, 's', s2, sizeof(s2)) && strcmp(s, s2) != 0, "other hash, other fake salt");
    c2s_scram_free(&st2);
    c2s_scram_free(&st);

    struct xchg x = {
        .mech = C2S_SASL_SCRAM_SHA_256,
        .gs2 = "n,,",
        .bare = "n=nobody,r=abcdefghijkl",
        .keys = NULL,
        .password = "pencil",
    };
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "well-formed exchange, not-authorized");
}

static void test_channel_binding(void)
{
    unsigned char cb[32], other[32];
    struct c2s_scram *st = NULL;

    diag("channel-binding flags");
    for (int k = 0; k < 32; k++) {
        cb[k] = (unsigned char)k;
        other[k] = (unsigned char)(k + 1);
    }
    struct xchg x = {
        .mech = C2S_SASL_SCRAM_SHA_256_PLUS,
        .gs2 = "p=tls-exporter,,",
        .bare = "n=user,r=abcdefghijkl",
        .plus_offered = true,
        .keys = &keys256,
        .password = "pencil",
        .client_cb = cb,
        .client_cb_len = 32,
        .server_cb = cb,
        .server_cb_len = 32,
    };
    is_int(exchange(&x), C2S_SASL_OK, "-PLUS tls-exporter, matching data");
    x.server_cb = other;
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "-PLUS, other data");
    x.server_cb_len = 31;
    x.server_cb = cb;
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "-PLUS, shorter data");
    x.server_cb = NULL;
    x.server_cb_len = 0;
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "-PLUS, caller has no data");
    x.server_cb = cb;
    x.server_cb_len = 32;
    x.client_cb_len = 0;
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "-PLUS, client sends header only");
    x.client_cb_len = 32;
    x.mech = C2S_SASL_SCRAM_SHA_1_PLUS;
    x.keys = &keys1;
    x.gs2 = "p=tls-server-end-point,,";
    is_int(exchange(&x), C2S_SASL_OK, "SHA-1-PLUS tls-server-end-point");
    x.keys = &keys256;
    x.mech = C2S_SASL_SCRAM_SHA_256_PLUS;

    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "p=tls-exporter,,n=u,r=a", true, &st),
           C2S_SASL_OK, "tls-exporter accepted");
    is_str(c2s_scram_cb_name(st), "tls-exporter", "cb name tls-exporter");
    c2s_scram_free(&st);
    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "p=tls-server-end-point,,n=u,r=a", true, &st),
           C2S_SASL_OK, "tls-server-end-point accepted");
    is_str(c2s_scram_cb_name(st), "tls-server-end-point", "cb name tls-server-end-point");
    c2s_scram_free(&st);
    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "p=tls-unique,,n=u,r=a", true, &st),
           C2S_SASL_FAIL_NOT_AUTHORIZED, "tls-unique unsupported");
    ok(st == NULL, "no state on failure");
    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "p=,,n=u,r=a", true, &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "empty cb-name");
    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "p=tls_exporter,,n=u,r=a", true, &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "bad cb-name character");
    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "n,,n=u,r=a", true, &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "'n' on a -PLUS mechanism");
    is_int(start_str(C2S_SASL_SCRAM_SHA_256_PLUS, "y,,n=u,r=a", true, &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "'y' on a -PLUS mechanism");
    is_int(start_str(C2S_SASL_SCRAM_SHA_256, "p=tls-exporter,,n=u,r=a", true, &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "'p=' on a non-PLUS mechanism");
    is_int(start_str(C2S_SASL_SCRAM_SHA_1, "y,,n=u,r=a", true, &st), C2S_SASL_FAIL_NOT_AUTHORIZED,
           "'y' when -PLUS was offered: downgrade");

    struct xchg y = {
        .mech = C2S_SASL_SCRAM_SHA_256,
        .gs2 = "y,,",
        .bare = "n=user,r=abcdefghijkl",
        .plus_offered = false,
        .keys = &keys256,
        .password = "pencil",
        .server_cb = cb, /* ignored without binding */
        .server_cb_len = 32,
    };
    is_int(exchange(&y), C2S_SASL_OK, "'y' when -PLUS was not offered");
    y.c_gs2 = "n,,";
    is_int(exchange(&y), C2S_SASL_FAIL_NOT_AUTHORIZED, "'y' header but c=biws");
}

struct bad_case {
    const char *msg;
    size_t len; /* 0: strlen */
    enum c2s_sasl_fail want;
    const char *name;
};

static void test_client_first_syntax(void)
{
    static const struct bad_case cases[] = {
        {"n,,n=a=2Cb=3Dc,r=x", 0, C2S_SASL_OK, "escaped username"},
        {"n,,n=a=2cb,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "lowercase escape"},
        {"n,,n=a=,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "'=' at the end"},
        {"n,,n=a=2,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "truncated escape"},
        {"n,,n=a=4Fb,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "unknown escape"},
        {"n,,n==,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "bare '='"},
        {"n,,n=,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty username"},
        {"n,,m=ext,n=user,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "m= extension"},
        {"n,,n=user,r=x,m=ext", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "m= later"},
        {"", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty"},
        {"n,,", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "header only"},
        {"n,", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "half header"},
        {"x,,n=user,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "unknown flag"},
        {"n,n=user,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "missing comma"},
        {"n,b=x,n=user,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "not an authzid"},
        {"n,a=,n=user,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty authzid"},
        {"n,a=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "unterminated authzid"},
        {"n,,r=x,n=user", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "wrong order"},
        {"n,,n=user", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "no nonce"},
        {"n,,n=user,", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "trailing comma, no nonce"},
        {"n,,n=user,r=", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty nonce"},
        {"n,,n=user,r=a b", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "space in nonce"},
        {"n,,n=user,r=ab\x7f", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "DEL in nonce"},
        {"n,,n=user,r=ab\xc3\xa9", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "non-ASCII in nonce"},
        {"n,,n=user,r=x,", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "trailing comma"},
        {"n,,n=user,r=x,1=y", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "extension name not ALPHA"},
        {"n,,n=user,r=x,x=", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty extension value"},
        {"n,,n=user,r=x,xy=z", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "long extension name"},
        {"n,,n=user,r=x,r=y", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "second nonce"},
        {"n,,n=user,r=x,x=y", 0, C2S_SASL_OK, "extension"},
        {"n,,n=us\0er,r=x", 13, C2S_SASL_FAIL_MALFORMED_REQUEST, "NUL in username"},
        {"n,,n=user,r=x\0", 14, C2S_SASL_FAIL_MALFORMED_REQUEST, "trailing NUL"},
        {"n,,n=\xc3\x28,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "invalid UTF-8"},
        {"n,,n=\xc0\xaf,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "overlong UTF-8"},
        {"n,,n=\xed\xa0\x80,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "surrogate"},
        {"n,,n=\xf4\x90\x80\x80,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "above U+10FFFF"},
        {"n,,n=\xe2\x82,r=x", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "truncated UTF-8"},
        {"n,,n=j\xc3\xa9r\xc3\xb4me,r=x", 0, C2S_SASL_OK, "UTF-8 username"},
        {"n,,n=\xf0\x9f\x98\x80,r=x", 0, C2S_SASL_OK, "4-byte UTF-8"},
    };
    struct c2s_scram *st = NULL;

    diag("client-first syntax");
    for (size_t i = 0; i < KT_ARRAY_SIZE(cases); i++) {
        const struct bad_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->msg);
        enum c2s_sasl_fail rc =
            c2s_scram_start(C2S_SASL_SCRAM_SHA_256, (const unsigned char *)c->msg, len, false, &st);
        is_int(rc, c->want, c->name);
        ok((rc == C2S_SASL_OK) == (st != NULL), "%s: state iff OK", c->name);
        if (i == 0)
            is_str(c2s_scram_username(st), "a,b=c", "username unescaped");
        c2s_scram_free(&st);
    }
    ok(c2s_scram_start(C2S_SASL_SCRAM_SHA_1, NULL, 0, false, &st) ==
           C2S_SASL_FAIL_MALFORMED_REQUEST,
       "NULL message");

    /* Size limit: a 4097-byte message is refused, 4096 accepted. */
    char *big = malloc(C2S_SASL_MAX_MSG + 2);
    memset(big, 'a', C2S_SASL_MAX_MSG + 1);
    memcpy(big, "n,,n=user,r=", 12);
    is_int(c2s_scram_start(C2S_SASL_SCRAM_SHA_1, (unsigned char *)big, C2S_SASL_MAX_MSG + 1, false,
                           &st),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "above 4 KiB");
    is_int(
        c2s_scram_start(C2S_SASL_SCRAM_SHA_1, (unsigned char *)big, C2S_SASL_MAX_MSG, false, &st),
        C2S_SASL_OK, "exactly 4 KiB");
    c2s_scram_free(&st);
    free(big);
}

static void test_client_final_syntax(void)
{
    static const struct bad_case cases[] = {
        {"c=biws,r=NONCE", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "no proof"},
        {"c=biws,r=NONCE,p=", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty proof"},
        {"c=biws,p=PROOF,r=NONCE", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "proof not last"},
        {"r=NONCE,c=biws,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "wrong order"},
        {"c=biws,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "no nonce"},
        {"r=NONCE,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "no channel binding"},
        {"c=b!ws,r=NONCE,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "garbage in c="},
        {"c=biw,r=NONCE,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "short c="},
        {"c=biws,r=NONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV!=", 0,
         C2S_SASL_FAIL_MALFORMED_REQUEST, "garbage in p="},
        {"c=biws,r=NONCE,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", 0, C2S_SASL_FAIL_MALFORMED_REQUEST,
         "proof of 20 bytes for SHA-256"},
        {"c=biws,r=NONCE,p=PROOFPROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "proof too long"},
        {"c=biws,r=,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty nonce"},
        {"c=biws,r=NONCE,p=PROOF,", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "trailing comma"},
        {"c=biws,r=NONCE,,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty attribute"},
        {"c=biws,r=NONCE,p=xx,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "two proofs"},
        {"c=biws,r=NONCE,1=a,p=PROOF", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "bad extension"},
        {"c=biws,r=NONCE,p=PR\0OF", 21, C2S_SASL_FAIL_MALFORMED_REQUEST, "NUL"},
        {"", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty"},
        {",", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "comma"},
        {"c=biws,r=NONCE,x=ext,p=PROOF", 0, C2S_SASL_FAIL_NOT_AUTHORIZED,
         "extension is allowed (then the proof is wrong)"},
        {"c=biws,r=NONCEx,p=PROOF", 0, C2S_SASL_FAIL_NOT_AUTHORIZED, "longer nonce"},
        {"c=eSws,r=NONCE,p=PROOF", 0, C2S_SASL_FAIL_NOT_AUTHORIZED, "c= says y"},
        {"c=,r=NONCE,p=PROOF", 0, C2S_SASL_FAIL_NOT_AUTHORIZED, "empty c="},
    };
    const char *proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const char *nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    diag("client-final syntax");
    scram_test_snonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    for (size_t i = 0; i < KT_ARRAY_SIZE(cases); i++) {
        const struct bad_case *c = &cases[i];
        struct c2s_scram *st = NULL;
        const char *sf, *v;
        char msg[BIG];
        size_t len = c->len ? c->len : strlen(c->msg), o = 0;

        /* Expand NONCE and PROOF (not after a NUL: those are raw). */
        for (size_t k = 0; k < len; k++) {
            if (!c->len && strncmp(c->msg + k, "NONCE", 5) == 0) {
                o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s", nonce);
                k += 4;
            } else if (!c->len && strncmp(c->msg + k, "PROOF", 5) == 0) {
                o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s", proof);
                k += 4;
            } else {
                msg[o++] = c->msg[k];
            }
        }
        start_str(C2S_SASL_SCRAM_SHA_256, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", false, &st);
        c2s_scram_server_first(st, &keys256, 4096, &sf);
        is_int(c2s_scram_finish(st, (unsigned char *)msg, o, NULL, 0, &v), c->want, c->name);
        c2s_scram_free(&st);
    }
    scram_test_snonce = NULL;
}

/* Deterministic xorshift: the mutation run is reproducible. */
static unsigned long long rng_state = 0x2545F4914F6CDD1DULL;
static unsigned rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 16);
}

static size_t mutate(const char *in, unsigned char *out, size_t cap)
{
    size_t len = strlen(in);
    memcpy(out, in, len);
    int edits = 1 + (int)(rng() % 3);
    for (int e = 0; e < edits; e++) {
        size_t pos = len ? rng() % len : 0;
        static const unsigned char interesting[] = {',', '=', '\0', 0xff, 0xc3, 'p', 'r', 'n'};
        switch (rng() % 4) {
        case 0: /* replace */
            if (len)
                out[pos] = rng() % 2 ? (unsigned char)rng() : interesting[rng() % 8];
            break;
        case 1: /* delete */
            if (len) {
                memmove(out + pos, out + pos + 1, len - pos - 1);
                len--;
            }
            break;
        case 2: /* insert */
            if (len + 1 < cap) {
                memmove(out + pos + 1, out + pos, len - pos);
                out[pos] = interesting[rng() % 8];
                len++;
            }
            break;
        default: /* truncate */
            len = pos;
            break;
        }
    }
    return len;
}

static void test_mutations(void)
{
    const char *first = "n,a=ju=2Cliet,n=user,r=rOprNGfwEbeRWgbNEkqO,x=ext";
    const char *final =
        "c=bixhPWp1PTJDbGlldCw=,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    unsigned char a[BIG], b[BIG];
    int started = 0, finished = 0, iterations = 3000;

    diag("random mutations");
    scram_test_snonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    for (int i = 0; i < iterations; i++) {
        struct c2s_scram *st = NULL;
        const char *sf, *v;
        size_t alen = i % 2 ? mutate(first, a, sizeof(a)) : strlen(first);
        size_t blen = mutate(final, b, sizeof(b));
        if (i % 2 == 0)
            memcpy(a, first, alen);
        enum c2s_sasl_mech mech = i % 3 ? C2S_SASL_SCRAM_SHA_256 : C2S_SASL_SCRAM_SHA_1;
        if (c2s_scram_start(mech, a, alen, i % 5 == 0, &st) != C2S_SASL_OK)
            continue;
        started++;
        c2s_scram_server_first(st, i % 7 ? &keys256 : NULL, 4096, &sf);
        if (c2s_scram_finish(st, b, blen, NULL, 0, &v) != C2S_SASL_OK)
            finished++;
        c2s_scram_free(&st);
    }
    scram_test_snonce = NULL;
    diag("%d mutations, %d first messages accepted, %d finals refused", iterations, started,
         finished);
    ok(started > 0 && finished > 0, "mutations ran without a crash");
}

static void test_plain(void)
{
    static const struct bad_case cases[] = {
        {"\0user\0pencil", 12, C2S_SASL_OK, "no authzid"},
        {"admin\0user\0pencil", 17, C2S_SASL_OK, "authzid"},
        {"user\0pencil", 11, C2S_SASL_FAIL_MALFORMED_REQUEST, "one NUL"},
        {"userpencil", 10, C2S_SASL_FAIL_MALFORMED_REQUEST, "no NUL"},
        {"\0\0pencil", 8, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty authcid"},
        {"\0user\0", 6, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty password"},
        {"\0user\0pen\0cil", 13, C2S_SASL_FAIL_MALFORMED_REQUEST, "third NUL"},
        {"\0user\0pen\xff", 10, C2S_SASL_FAIL_MALFORMED_REQUEST, "invalid UTF-8 password"},
        {"\xc3\0user\0pencil", 13, C2S_SASL_FAIL_MALFORMED_REQUEST, "invalid UTF-8 authzid"},
        {"\0\xc3\xa9\0p\xc3\xa9ncil", 11, C2S_SASL_OK, "UTF-8 fields"},
        {"", 0, C2S_SASL_FAIL_MALFORMED_REQUEST, "empty"},
    };
    struct c2s_plain *pl = NULL;
    unsigned char buf[600];

    diag("PLAIN");
    for (size_t i = 0; i < KT_ARRAY_SIZE(cases); i++) {
        const struct bad_case *c = &cases[i];
        enum c2s_sasl_fail rc = c2s_plain_parse((const unsigned char *)c->msg, c->len, &pl);
        is_int(rc, c->want, c->name);
        ok((rc == C2S_SASL_OK) == (pl != NULL), "%s: result iff OK", c->name);
        if (i == 0)
            ok(pl && !pl->authzid && strcmp(pl->authcid, "user") == 0 &&
                   strcmp(pl->passwd, "pencil") == 0,
               "fields without authzid");
        if (i == 1)
            ok(pl && pl->authzid && strcmp(pl->authzid, "admin") == 0 &&
                   strcmp(pl->authcid, "user") == 0 && strcmp(pl->passwd, "pencil") == 0,
               "fields with authzid");
        c2s_plain_free(&pl);
    }
    c2s_plain_free(&pl); /* NULL-safe */

    buf[0] = '\0';
    memset(buf + 1, 'u', 255);
    memcpy(buf + 256, "\0pw", 3);
    is_int(c2s_plain_parse(buf, 259, &pl), C2S_SASL_OK, "255-byte authcid");
    c2s_plain_free(&pl);
    memset(buf + 1, 'u', 256);
    memcpy(buf + 257, "\0pw", 3);
    is_int(c2s_plain_parse(buf, 260, &pl), C2S_SASL_FAIL_MALFORMED_REQUEST, "256-byte authcid");

    ok(c2s_plain_check("pencil", &keys256, 4096), "right password (SHA-256 keys)");
    ok(c2s_plain_check("pencil", &keys1, 4096), "right password (SHA-1 keys)");
    ok(!c2s_plain_check("pencil2", &keys256, 4096), "wrong password");
    ok(!c2s_plain_check("", &keys256, 4096), "empty password");
    ok(!c2s_plain_check("pencil", NULL, 4096), "unknown user");
    ok(!c2s_plain_check(NULL, &keys256, 4096), "NULL password");
    struct kt_scram_keys broken = keys256;
    broken.key_len = 20;
    ok(!c2s_plain_check("pencil", &broken, 4096), "inconsistent key record");
    broken = keys256;
    broken.iterations = 1;
    ok(!c2s_plain_check("pencil", &broken, 4096), "record kt_scram_derive refuses");
}

static void test_external(void)
{
    char *az = NULL;

    diag("EXTERNAL");
    ok(c2s_external_parse((const unsigned char *)"", 0, &az) == C2S_SASL_OK && !az,
       "empty: no authzid");
    ok(c2s_external_parse(NULL, 0, &az) == C2S_SASL_OK && !az, "NULL: no authzid");
    ok(c2s_external_parse((const unsigned char *)"juliet@example.com", 18, &az) == C2S_SASL_OK &&
           az && strcmp(az, "juliet@example.com") == 0,
       "authzid");
    free(az);
    az = NULL;
    is_int(c2s_external_parse((const unsigned char *)"a\0b", 3, &az),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "NUL");
    is_int(c2s_external_parse((const unsigned char *)"a\xff", 2, &az),
           C2S_SASL_FAIL_MALFORMED_REQUEST, "invalid UTF-8");
    ok(az == NULL, "nothing on failure");
}

/* ---- channel bindings from real certificates and TLS ---- */

static X509 *make_cert(EVP_PKEY *pkey, const EVP_MD *md)
{
    X509 *x = X509_new();
    X509_NAME *name;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    if (!X509_sign(x, pkey, md)) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Hash of the certificate's DER encoding, computed by hand. */
static int der_hash(X509 *x, const EVP_MD *md, unsigned char *out)
{
    unsigned char *der = NULL;
    unsigned int n = 0;
    int len = i2d_X509(x, &der);
    if (len <= 0)
        return -1;
    EVP_Digest(der, (size_t)len, out, &n, md, NULL);
    OPENSSL_free(der);
    return (int)n;
}

static SSL_CTX *server_ctx(X509 *cert, EVP_PKEY *pkey)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_security_level(ctx, 0); /* the SHA-1 certificate is only hashed */
    if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, pkey) != 1) {
        ERR_print_errors_fp(stdout);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void test_server_end_point(void)
{
    unsigned char want[EVP_MAX_MD_SIZE], got[C2S_SASL_CB_MAX];
    struct {
        const char *name;
        const EVP_MD *sign, *expect;
    } cases[] = {
        {"SHA-256 signature", EVP_sha256(), EVP_sha256()},
        {"SHA-384 signature", EVP_sha384(), EVP_sha384()},
        {"SHA-512 signature", EVP_sha512(), EVP_sha512()},
        {"SHA-1 signature: SHA-256", EVP_sha1(), EVP_sha256()},
    };

    diag("tls-server-end-point");
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    ok(pkey != NULL, "P-256 key");
    for (size_t i = 0; i < KT_ARRAY_SIZE(cases); i++) {
        X509 *cert = make_cert(pkey, cases[i].sign);
        SSL_CTX *ctx = cert ? server_ctx(cert, pkey) : NULL;
        SSL *ssl = ctx ? SSL_new(ctx) : NULL;
        int wn = cert ? der_hash(cert, cases[i].expect, want) : -2;
        int n = c2s_sasl_cb_tls_server_end_point(ssl, got);
        ok(ssl && n == EVP_MD_get_size(cases[i].expect) && n == wn && memcmp(got, want, n) == 0,
           "%s", cases[i].name);
        int n2 = c2s_sasl_cb_data(ssl, "tls-server-end-point", got);
        ok(n2 == n && memcmp(got, want, (size_t)n) == 0, "%s by name", cases[i].name);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        X509_free(cert);
    }

    /* Ed25519 signs without a separate hash: no defined binding. */
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    X509 *edcert = ed ? make_cert(ed, NULL) : NULL;
    SSL_CTX *edctx = edcert ? server_ctx(edcert, ed) : NULL;
    SSL *edssl = edctx ? SSL_new(edctx) : NULL;
    ok(edssl && c2s_sasl_cb_tls_server_end_point(edssl, got) == -1, "Ed25519: unavailable");
    SSL_free(edssl);
    SSL_CTX_free(edctx);
    X509_free(edcert);
    EVP_PKEY_free(ed);

    SSL_CTX *bare = SSL_CTX_new(TLS_server_method());
    SSL *nocert = SSL_new(bare);
    ok(c2s_sasl_cb_tls_server_end_point(nocert, got) == -1, "no certificate: unavailable");
    ok(c2s_sasl_cb_tls_server_end_point(NULL, got) == -1, "no SSL: unavailable");
    ok(c2s_sasl_cb_data(nocert, "tls-unique", got) == -1, "unknown type by name");
    ok(c2s_sasl_cb_data(nocert, NULL, got) == -1, "NULL name");
    SSL_free(nocert);
    SSL_CTX_free(bare);
    EVP_PKEY_free(pkey);
}

/* Runs a client and a server handshake over an in-memory BIO pair. */
static bool handshake(SSL *c, SSL *s)
{
    bool cdone = false, sdone = false;

    for (int i = 0; i < 50 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = true;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE)
                return false;
        }
        if (!sdone) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                sdone = true;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(s, r) != SSL_ERROR_WANT_WRITE)
                return false;
        }
    }
    return cdone && sdone;
}

static void tls_pair(SSL_CTX *sctx, int max_version, SSL **c_r, SSL **s_r)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    BIO *bc = NULL, *bs = NULL;

    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(cctx, max_version);
    *c_r = SSL_new(cctx);
    *s_r = SSL_new(sctx);
    SSL_CTX_free(cctx); /* the SSL keeps a reference */
    BIO_new_bio_pair(&bc, 0, &bs, 0);
    SSL_set_bio(*c_r, bc, bc);
    SSL_set_bio(*s_r, bs, bs);
    SSL_set_connect_state(*c_r);
    SSL_set_accept_state(*s_r);
}

static void test_tls_exporter(void)
{
    unsigned char cexp[32], sexp[32], byname[C2S_SASL_CB_MAX], sep[C2S_SASL_CB_MAX];
    SSL *c, *s;

    diag("tls-exporter over an in-memory TLS 1.3 handshake");
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *cert = make_cert(pkey, EVP_sha256());
    SSL_CTX *sctx = server_ctx(cert, pkey);

    tls_pair(sctx, 0, &c, &s);
    ok(handshake(c, s), "TLS handshake");
    is_int(SSL_version(s), TLS1_3_VERSION, "TLS 1.3 negotiated");
    is_int(c2s_sasl_cb_tls_exporter(s, sexp), 32, "server exports 32 bytes");
    ok(SSL_export_keying_material(c, cexp, 32, "EXPORTER-Channel-Binding", 24, NULL, 0, 0) == 1,
       "client exports");
    ok(memcmp(cexp, sexp, 32) == 0, "both ends export identical bytes");
    is_int(c2s_sasl_cb_data(s, "tls-exporter", byname), 32, "by name");
    ok(memcmp(byname, sexp, 32) == 0, "same bytes by name");
    int sn = c2s_sasl_cb_tls_server_end_point(s, sep);

    /* A whole SCRAM-SHA-256-PLUS exchange bound to this connection: the
     * client's exporter value against the server's. */
    struct xchg x = {
        .mech = C2S_SASL_SCRAM_SHA_256_PLUS,
        .gs2 = "p=tls-exporter,,",
        .bare = "n=user,r=tls13nonce",
        .plus_offered = true,
        .keys = &keys256,
        .password = "pencil",
        .client_cb = cexp,
        .client_cb_len = 32,
        .server_cb = sexp,
        .server_cb_len = 32,
    };
    is_int(exchange(&x), C2S_SASL_OK, "SCRAM-SHA-256-PLUS bound to the TLS session");
    SSL_free(c);
    SSL_free(s);

    /* Another connection exports other bytes: a relayed proof fails. */
    tls_pair(sctx, 0, &c, &s);
    ok(handshake(c, s), "second handshake");
    unsigned char other[32];
    c2s_sasl_cb_tls_exporter(s, other);
    ok(memcmp(other, sexp, 32) != 0, "another session, another exporter value");
    x.server_cb = other;
    is_int(exchange(&x), C2S_SASL_FAIL_NOT_AUTHORIZED, "proof bound to another session fails");
    ok(c2s_sasl_cb_tls_server_end_point(s, byname) == sn && memcmp(byname, sep, (size_t)sn) == 0,
       "tls-server-end-point is the same on both connections");
    SSL_free(c);
    SSL_free(s);

    tls_pair(sctx, TLS1_2_VERSION, &c, &s);
    ok(handshake(c, s), "TLS 1.2 handshake");
    is_int(SSL_version(s), TLS1_2_VERSION, "TLS 1.2 negotiated");
    is_int(c2s_sasl_cb_tls_exporter(s, sexp), -1, "tls-exporter unavailable on TLS 1.2");
    is_int(c2s_sasl_cb_tls_exporter(NULL, sexp), -1, "NULL SSL");
    is_int(c2s_sasl_cb_tls_server_end_point(s, sep), 32, "tls-server-end-point on TLS 1.2");
    SSL_free(c);
    SSL_free(s);

    SSL_CTX_free(sctx);
    X509_free(cert);
    EVP_PKEY_free(pkey);
}

int main(void)
{
    /* The RFC examples: password "pencil", 4096 iterations. */
    unsigned char salt[32];
    long n = kt_base64_decode("QSXCR+Q6sek8bf92", salt, sizeof(salt));
    kt_assert(n > 0 &&
              kt_scram_derive(KT_SCRAM_SHA1, "pencil", salt, (size_t)n, 4096, &keys1) == 0);
    n = kt_base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", salt, sizeof(salt));
    kt_assert(n > 0 &&
              kt_scram_derive(KT_SCRAM_SHA256, "pencil", salt, (size_t)n, 4096, &keys256) == 0);

    static const struct rfc_vector vectors[] = {
        {"RFC 5802 §5 SCRAM-SHA-1", C2S_SASL_SCRAM_SHA_1, &keys1,
         "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", "3rfcNHYJY1ZVvWVs7j",
         "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
         "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
         "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="},
        {"RFC 7677 §3 SCRAM-SHA-256", C2S_SASL_SCRAM_SHA_256, &keys256,
         "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
         "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
         "i=4096",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
    };

    test_names();
    test_decode();
    for (size_t i = 0; i < KT_ARRAY_SIZE(vectors); i++)
        test_rfc(&vectors[i]);
    test_exchanges();
    test_unknown_user();
    test_channel_binding();
    test_client_first_syntax();
    test_client_final_syntax();
    test_mutations();
    test_plain();
    test_external();
    test_server_end_point();
    test_tls_exporter();
    return done_testing();
}
