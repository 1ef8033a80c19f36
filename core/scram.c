/* SCRAM key derivation (RFC 5802 §3, RFC 7677) and the base64 it needs.
 *
 * An account stores salt, iteration count, StoredKey and ServerKey; the
 * password itself is never kept. Derivation is deliberately slow (PBKDF2)
 * and meant for a worker thread; it runs on data the server chose or the
 * user's own password, so it need not be constant-time. Intermediate
 * secrets (SaltedPassword, ClientKey) are wiped before returning.
 *
 * Base64 is RFC 4648 with padding and no whitespace. The decoder is strict:
 * it refuses anything OpenSSL's EVP_DecodeBlock would silently accept
 * (whitespace, missing padding, '=' in the middle, non-zero bits in the
 * padded tail), because SCRAM compares decoded proofs byte for byte. */
#include "config.h"
#include <kontalk/scram.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

static const EVP_MD *scram_md(enum kt_scram_hash hash)
{
    switch (hash) {
    case KT_SCRAM_SHA1:
        return EVP_sha1();
    case KT_SCRAM_SHA256:
        return EVP_sha256();
    }
    return NULL;
}

size_t kt_scram_hash_len(enum kt_scram_hash hash)
{
    switch (hash) {
    case KT_SCRAM_SHA1:
        return 20;
    case KT_SCRAM_SHA256:
        return 32;
    }
    return 0;
}

int kt_scram_derive(enum kt_scram_hash hash, const char *password, const unsigned char *salt,
                    size_t salt_len, unsigned iterations, struct kt_scram_keys *out)
{
    const EVP_MD *md = scram_md(hash);
    size_t klen = kt_scram_hash_len(hash);
    unsigned char salted[KT_SCRAM_MAX_KEY], client_key[KT_SCRAM_MAX_KEY];
    unsigned int n;
    size_t pw_len;
    int rc = -1;

    if (!md || !password || !salt || !out)
        return -1;
    if (iterations < KT_SCRAM_MIN_ITERATIONS || iterations > INT_MAX)
        return -1;
    if (salt_len == 0 || salt_len > sizeof(out->salt))
        return -1;
    pw_len = strlen(password);
    if (pw_len > INT_MAX)
        return -1;

    /* Hi() of RFC 5802 is PBKDF2 with one block of output (dkLen = hLen). */
    if (PKCS5_PBKDF2_HMAC(password, (int)pw_len, salt, (int)salt_len, (int)iterations, md,
                          (int)klen, salted) != 1)
        goto fail;
    if (!HMAC(md, salted, (int)klen, (const unsigned char *)"Client Key", 10, client_key, &n) ||
        n != klen)
        goto fail;
    if (EVP_Digest(client_key, klen, out->stored_key, &n, md, NULL) != 1 || n != klen)
        goto fail;
    if (!HMAC(md, salted, (int)klen, (const unsigned char *)"Server Key", 10, out->server_key,
              &n) ||
        n != klen)
        goto fail;

    out->hash = hash;
    out->iterations = iterations;
    if (salt != out->salt)
        memmove(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->key_len = klen;
    rc = 0;
fail:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

int kt_scram_generate(enum kt_scram_hash hash, const char *password, size_t salt_len,
                      unsigned iterations, struct kt_scram_keys *out)
{
    unsigned char salt[sizeof(out->salt)];

    if (!out || salt_len == 0 || salt_len > sizeof(salt))
        return -1;
    if (RAND_bytes(salt, (int)salt_len) != 1)
        return -1;
    return kt_scram_derive(hash, password, salt, salt_len, iterations, out);
}

char *kt_base64_encode(const unsigned char *data, size_t len)
{
    /* EVP_EncodeBlock takes an int length; SCRAM values are tiny. */
    kt_assert(len <= (size_t)INT_MAX / 4 * 3 - 3);
    char *s = kt_malloc((len + 2) / 3 * 4 + 1);
    int n = EVP_EncodeBlock((unsigned char *)s, data, (int)len);
    kt_assert(n >= 0 && (size_t)n == (len + 2) / 3 * 4);
    s[n] = '\0';
    return s;
}

/* The 6-bit value of a base64 alphabet character, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long kt_base64_decode(const char *s, unsigned char *out, size_t outlen)
{
    size_t len, pad = 0, raw, dec;
    unsigned char *buf;

    if (!s)
        return -1;
    len = strlen(s);
    if (len % 4 != 0 || len > (size_t)INT_MAX)
        return -1;
    if (len == 0)
        return 0;
    if (s[len - 1] == '=')
        pad = s[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++) {
        if (b64_value((unsigned char)s[i]) < 0)
            return -1;
    }
    /* The bits the padding leaves over must be zero (canonical form). */
    int last = b64_value((unsigned char)s[len - pad - 1]);
    if ((pad == 1 && (last & 0x03)) || (pad == 2 && (last & 0x0F)))
        return -1;

    /* EVP_DecodeBlock writes 3 bytes per quantum, padding included, and
     * returns that count: the real length is 3 * len / 4 - pad. */
    raw = len / 4 * 3;
    dec = raw - pad;
    if (dec > outlen || dec > LONG_MAX)
        return -1;
    buf = raw <= outlen ? out : kt_malloc(raw);
    int n = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len);
    if (n < 0 || (size_t)n != raw) {
        if (buf != out)
            free(buf);
        return -1;
    }
    if (buf != out) {
        memcpy(out, buf, dec);
        OPENSSL_cleanse(buf, raw);
        free(buf);
    }
    return (long)dec;
}

unsigned char *kt_base64_decode_new(const char *s, size_t *len_r)
{
    size_t cap = (s ? strlen(s) : 0) / 4 * 3 + 1;
    unsigned char *buf = kt_malloc(cap);
    long n = kt_base64_decode(s, buf, cap);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    *len_r = (size_t)n;
    return buf;
}
