/* Unit tests for core/scram.c: the RFC 5802 (SHA-1) and RFC 7677 (SHA-256)
 * exchanges checked from the derived StoredKey and ServerKey alone, the
 * iteration floor, salt generation, and strict base64. */
#include "config.h"
#include <kontalk/scram.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tap.h"

int main(void);

struct vector {
    const char *name;
    enum kt_scram_hash hash;
    const char *salt_b64;
    const char *client_first_bare;
    const char *server_first;
    const char *client_final_bare; /* without ",p=" */
    const char *proof;             /* base64 */
    const char *verifier;          /* base64 */
};

static const struct vector vectors[] = {
    {"RFC 5802 SHA-1", KT_SCRAM_SHA1, "QSXCR+Q6sek8bf92", "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
     "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ="},
    {"RFC 7677 SHA-256", KT_SCRAM_SHA256,
     "W22ZaJ0SNY7soEsUEjb6gQ==", "n=user,r=rOprNGfwEbeRWgbNEkqO",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
     "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
};

/* Plays the server side of the RFC example with the stored keys only:
 * ServerSignature = HMAC(ServerKey, AuthMessage) must equal v=, and the
 * ClientKey recovered from the proof must hash to StoredKey. */
static void test_vector(const struct vector *v)
{
    const EVP_MD *md = v->hash == KT_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
    unsigned char salt[32], proof[32], sig[EVP_MAX_MD_SIZE], key[32], h[EVP_MAX_MD_SIZE];
    unsigned int n;
    struct kt_scram_keys k;
    char auth[512];

    diag("%s", v->name);
    long salt_len = kt_base64_decode(v->salt_b64, salt, sizeof(salt));
    ok(salt_len > 0, "salt decodes");
    is_int(kt_scram_derive(v->hash, "pencil", salt, (size_t)salt_len, 4096, &k), 0, "derive");
    is_int(k.key_len, kt_scram_hash_len(v->hash), "key length");
    is_int(k.iterations, 4096, "iterations stored");
    ok(k.salt_len == (size_t)salt_len && memcmp(k.salt, salt, k.salt_len) == 0, "salt stored");
    ok(k.hash == v->hash, "hash stored");

    snprintf(auth, sizeof(auth), "%s,%s,%s", v->client_first_bare, v->server_first,
             v->client_final_bare);
    HMAC(md, k.server_key, (int)k.key_len, (unsigned char *)auth, strlen(auth), sig, &n);
    char *b64 = kt_base64_encode(sig, n);
    is_str(b64, v->verifier, "ServerSignature from ServerKey matches v=");
    free(b64);

    long plen = kt_base64_decode(v->proof, proof, sizeof(proof));
    is_int(plen, k.key_len, "proof length");
    HMAC(md, k.stored_key, (int)k.key_len, (unsigned char *)auth, strlen(auth), sig, &n);
    for (size_t i = 0; i < k.key_len; i++)
        key[i] = proof[i] ^ sig[i];
    EVP_Digest(key, k.key_len, h, &n, md, NULL);
    ok(n == k.key_len && memcmp(h, k.stored_key, n) == 0,
       "H(ClientProof XOR ClientSignature) == StoredKey");

    /* A wrong password gives different keys. */
    struct kt_scram_keys bad;
    is_int(kt_scram_derive(v->hash, "pencil2", salt, (size_t)salt_len, 4096, &bad), 0,
           "derive other password");
    ok(memcmp(bad.stored_key, k.stored_key, k.key_len) != 0, "other password, other StoredKey");
    ok(memcmp(bad.server_key, k.server_key, k.key_len) != 0, "other password, other ServerKey");
    /* More iterations give different keys. */
    is_int(kt_scram_derive(v->hash, "pencil", salt, (size_t)salt_len, 4097, &bad), 0,
           "derive 4097 iterations");
    ok(memcmp(bad.stored_key, k.stored_key, k.key_len) != 0, "iterations change the key");
}

static void test_limits(void)
{
    struct kt_scram_keys k;
    unsigned char salt[40] = {1, 2, 3};

    is_int(kt_scram_hash_len(KT_SCRAM_SHA1), 20, "SHA-1 length");
    is_int(kt_scram_hash_len(KT_SCRAM_SHA256), 32, "SHA-256 length");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "pw", salt, 16, 4095, &k), -1,
           "4095 iterations refused");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "pw", salt, 16, 0, &k), -1, "0 iterations refused");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "pw", salt, 16, 4096, &k), 0, "4096 iterations ok");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "pw", salt, 0, 4096, &k), -1, "empty salt refused");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "pw", salt, 33, 4096, &k), -1, "33-byte salt refused");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "pw", salt, 32, 4096, &k), 0, "32-byte salt ok");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, NULL, salt, 16, 4096, &k), -1, "NULL password");
    is_int(kt_scram_derive((enum kt_scram_hash)7, "pw", salt, 16, 4096, &k), -1, "unknown hash");
    is_int(kt_scram_derive(KT_SCRAM_SHA1, "", salt, 16, 4096, &k), 0, "empty password derives");
    is_int(kt_scram_generate(KT_SCRAM_SHA256, "pw", 16, 1000, &k), -1,
           "generate refuses low iterations");
    is_int(kt_scram_generate(KT_SCRAM_SHA256, "pw", 33, 4096, &k), -1, "generate salt > 32");
    is_int(kt_scram_generate(KT_SCRAM_SHA256, "pw", 0, 4096, &k), -1, "generate salt 0");
}

static void test_generate(void)
{
    struct kt_scram_keys a, b, c;

    is_int(kt_scram_generate(KT_SCRAM_SHA256, "secret", 16, 4096, &a), 0, "generate a");
    is_int(kt_scram_generate(KT_SCRAM_SHA256, "secret", 16, 4096, &b), 0, "generate b");
    is_int(a.salt_len, 16, "salt length");
    ok(memcmp(a.salt, b.salt, 16) != 0, "two salts differ");
    ok(memcmp(a.stored_key, b.stored_key, 32) != 0, "so do the stored keys");
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "secret", a.salt, a.salt_len, 4096, &c), 0,
           "re-derive from the generated salt");
    ok(memcmp(a.stored_key, c.stored_key, 32) == 0 && memcmp(a.server_key, c.server_key, 32) == 0,
       "generate == derive with its salt");
    /* derive with the output's own salt as input */
    is_int(kt_scram_derive(KT_SCRAM_SHA256, "secret", c.salt, c.salt_len, 4096, &c), 0,
           "salt may alias the output");
    ok(memcmp(a.stored_key, c.stored_key, 32) == 0, "aliased derive gives the same key");
    is_int(kt_scram_generate(KT_SCRAM_SHA1, "secret", 32, 4096, &a), 0, "SHA-1, 32-byte salt");
    is_int(a.key_len, 20, "SHA-1 key length");
}

static void round_trip(const char *data, size_t len, const char *want)
{
    unsigned char out[64];
    char *s = kt_base64_encode((const unsigned char *)data, len);
    is_str(s, want, "encode");
    long n = kt_base64_decode(s, out, sizeof(out));
    ok(n == (long)len && memcmp(out, data, len) == 0, "decode back (%zu bytes)", len);
    /* exact-size output buffer */
    n = kt_base64_decode(s, out, len);
    is_int(n, (long)len, "decode into an exact-size buffer");
    if (len > 0)
        is_int(kt_base64_decode(s, out, len - 1), -1, "output one byte short");
    free(s);
}

static void test_base64(void)
{
    unsigned char out[64];

    /* RFC 4648 §10 */
    round_trip("", 0, "");
    round_trip("f", 1, "Zg==");
    round_trip("fo", 2, "Zm8=");
    round_trip("foo", 3, "Zm9v");
    round_trip("foob", 4, "Zm9vYg==");
    round_trip("fooba", 5, "Zm9vYmE=");
    round_trip("foobar", 6, "Zm9vYmFy");
    round_trip("\xff\xfe\x00\x01", 4, "//4AAQ==");

    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    char *s = kt_base64_encode(all, sizeof(all));
    unsigned char back[256];
    is_int(kt_base64_decode(s, back, sizeof(back)), 256, "256 bytes round trip");
    ok(memcmp(all, back, 256) == 0, "every byte value survives");
    free(s);

    is_int(kt_base64_decode(NULL, out, sizeof(out)), -1, "NULL");
    is_int(kt_base64_decode("Zg", out, sizeof(out)), -1, "missing padding");
    is_int(kt_base64_decode("Zg=", out, sizeof(out)), -1, "length not a multiple of 4");
    is_int(kt_base64_decode("Z===", out, sizeof(out)), -1, "three '='");
    is_int(kt_base64_decode("====", out, sizeof(out)), -1, "only padding");
    is_int(kt_base64_decode("Zg==Zg==", out, sizeof(out)), -1, "padding in the middle");
    is_int(kt_base64_decode("Z=g=", out, sizeof(out)), -1, "'=' before data");
    is_int(kt_base64_decode("Zm9v!mFy", out, sizeof(out)), -1, "invalid character");
    is_int(kt_base64_decode("Zm9v YmFy", out, sizeof(out)), -1, "space");
    is_int(kt_base64_decode(" Zm9v", out, sizeof(out)), -1, "leading space");
    is_int(kt_base64_decode("Zm9v\n", out, sizeof(out)), -1, "trailing newline");
    is_int(kt_base64_decode("Zm9-", out, sizeof(out)), -1, "base64url '-'");
    is_int(kt_base64_decode("Zh==", out, sizeof(out)), -1, "non-zero bits under '=='");
    is_int(kt_base64_decode("Zm9=", out, sizeof(out)), -1, "non-zero bits under '='");
    is_int(kt_base64_decode("", NULL, 0), 0, "empty into no buffer");
    is_int(kt_base64_decode("Zm9vYmFy", out, 5), -1, "too small output");
}

int main(void)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        test_vector(&vectors[i]);
    test_limits();
    test_generate();
    test_base64();
    return done_testing();
}
