/* scram.c: the client side of SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), and base64.
 *
 * No channel binding ("n,,"): the bench measures the same exchange on every server.  The
 * PBKDF2 step costs the client thousands of HMACs, far more than the server spends with stored
 * keys, so the derived ClientKey/ServerKey are cached per user and reused while the server's salt
 * and iteration count stay the same (real clients do the same).  A login benchmark therefore
 * does one unmeasured pass first; see scenario.c.  The server signature is always verified: a
 * server that skips the proof must not look faster.
 */
#include "config.h"

#include "bench.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

const char *mech_name(enum mech m)
{
    switch (m) {
    case MECH_PLAIN:
        return "PLAIN";
    case MECH_SCRAM_SHA1:
        return "SCRAM-SHA-1";
    case MECH_SCRAM_SHA256:
        return "SCRAM-SHA-256";
    }
    return "?";
}

int mech_parse(const char *s, enum mech *m_r)
{
    for (int m = MECH_PLAIN; m <= MECH_SCRAM_SHA256; m++)
        if (strcasecmp(s, mech_name((enum mech)m)) == 0) {
            *m_r = (enum mech)m;
            return 0;
        }
    return -1;
}

int b64_encode(const void *in, size_t n, struct bbuf *out)
{
    size_t need = 4 * ((n + 2) / 3) + 1;
    char *tmp = bench_malloc(need);
    int l = EVP_EncodeBlock((unsigned char *)tmp, in, (int)n);
    bbuf_add(out, tmp, (size_t)l);
    free(tmp);
    return 0;
}

int b64_decode(const char *in, size_t n, unsigned char *out, size_t size)
{
    if (n % 4 != 0 || 3 * (n / 4) > size)
        return -1;
    if (n == 0)
        return 0;
    int l = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (l < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (in[n - 1] == '=')
        l--;
    if (in[n - 2] == '=')
        l--;
    return l;
}

static const EVP_MD *mech_md(enum mech m)
{
    return m == MECH_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

void scram_start(struct scram *s, enum mech m, const char *user, struct bbuf *out)
{
    unsigned char rnd[16];
    static const char hex[] = "0123456789abcdef";
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        bench_die("RAND_bytes failed");
    for (size_t i = 0; i < sizeof(rnd); i++) {
        s->cnonce[2 * i] = hex[rnd[i] >> 4];
        s->cnonce[2 * i + 1] = hex[rnd[i] & 15];
    }
    s->cnonce[32] = 0;
    s->mech = m;
    struct bbuf b = {0};
    bbuf_add(&b, "n=", 2);
    for (const char *p = user; *p; p++) {
        if (*p == ',')
            bbuf_add(&b, "=2C", 3);
        else if (*p == '=')
            bbuf_add(&b, "=3D", 3);
        else
            bbuf_add(&b, p, 1);
    }
    bbuf_printf(&b, ",r=%s", s->cnonce);
    bbuf_add(&b, "", 1);
    free(s->client_first_bare);
    s->client_first_bare = bench_strdup(b.data + b.off);
    bbuf_free(&b);
    bbuf_printf(out, "n,,%s", s->client_first_bare);
}

/* Value of attribute `key` in a SCRAM message (a=v,b=v...), NUL-terminated into buf. */
static int scram_attr(const char *msg, char key, char *buf, size_t size)
{
    const char *p = msg;
    while (*p) {
        if (p[0] == key && p[1] == '=') {
            const char *v = p + 2, *e = strchr(v, ',');
            size_t l = e ? (size_t)(e - v) : strlen(v);
            if (l + 1 > size)
                return -1;
            memcpy(buf, v, l);
            buf[l] = 0;
            return 0;
        }
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    return -1;
}

int scram_step(struct scram *s, const char *server_first, const char *password,
               struct scram_keys *cache, struct bbuf *out)
{
    char nonce[256], salt[64], iters[16];
    if (scram_attr(server_first, 'r', nonce, sizeof(nonce)) < 0 ||
        scram_attr(server_first, 's', salt, sizeof(salt)) < 0 ||
        scram_attr(server_first, 'i', iters, sizeof(iters)) < 0)
        return -1;
    if (strncmp(nonce, s->cnonce, strlen(s->cnonce)) != 0 || strlen(nonce) <= strlen(s->cnonce))
        return -1;
    char *endp;
    long it = strtol(iters, &endp, 10);
    if (*endp || it < 1 || it > 10000000)
        return -1;

    const EVP_MD *md = mech_md(s->mech);
    unsigned hl = (unsigned)EVP_MD_get_size(md);
    if (!(cache->valid && cache->mech == s->mech && cache->iter == (unsigned)it &&
          strcmp(cache->salt, salt) == 0)) {
        unsigned char raw_salt[64], salted[64];
        int sl = b64_decode(salt, strlen(salt), raw_salt, sizeof(raw_salt));
        if (sl < 0)
            return -1;
        if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), raw_salt, sl, (int)it, md, (int)hl,
                              salted) != 1)
            return -1;
        unsigned l;
        HMAC(md, salted, (int)hl, (const unsigned char *)"Client Key", 10, cache->client_key, &l);
        HMAC(md, salted, (int)hl, (const unsigned char *)"Server Key", 10, cache->server_key, &l);
        cache->valid = true;
        cache->mech = s->mech;
        cache->iter = (unsigned)it;
        snprintf(cache->salt, sizeof(cache->salt), "%s", salt);
    }

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    struct bbuf wp = {0}, am = {0};
    bbuf_printf(&wp, "c=biws,r=%s", nonce);
    bbuf_printf(&am, "%s,%s,%.*s", s->client_first_bare, server_first, (int)wp.len,
                wp.data + wp.off);
    unsigned char stored[64], csig[64], proof[64];
    unsigned l;
    EVP_Digest(cache->client_key, hl, stored, &l, md, NULL);
    HMAC(md, stored, (int)hl, (unsigned char *)am.data + am.off, am.len, csig, &l);
    for (unsigned i = 0; i < hl; i++)
        proof[i] = cache->client_key[i] ^ csig[i];
    HMAC(md, cache->server_key, (int)hl, (unsigned char *)am.data + am.off, am.len,
         s->server_sig, &l);
    bbuf_add(out, wp.data + wp.off, wp.len);
    bbuf_add(out, ",p=", 3);
    b64_encode(proof, hl, out);
    bbuf_free(&wp);
    bbuf_free(&am);
    return 0;
}

int scram_verify(struct scram *s, const char *server_final)
{
    char v[128];
    unsigned char sig[96];
    if (scram_attr(server_final, 'v', v, sizeof(v)) < 0)
        return -1;
    int l = b64_decode(v, strlen(v), sig, sizeof(sig));
    int hl = EVP_MD_get_size(mech_md(s->mech));
    if (l != hl || CRYPTO_memcmp(sig, s->server_sig, (size_t)hl) != 0)
        return -1;
    return 0;
}

void scram_free(struct scram *s)
{
    free(s->client_first_bare);
    s->client_first_bare = NULL;
}
