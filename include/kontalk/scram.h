/* SCRAM (RFC 5802, RFC 7677) key derivation: what a password account stores
 * (salt, iterations, StoredKey, ServerKey), never the password. */
#ifndef KONTALK_SCRAM_H
#define KONTALK_SCRAM_H

#include "base.h"

enum kt_scram_hash { KT_SCRAM_SHA1, KT_SCRAM_SHA256 };

#define KT_SCRAM_MAX_KEY 32
#define KT_SCRAM_MIN_ITERATIONS 4096

struct kt_scram_keys {
    enum kt_scram_hash hash;
    unsigned iterations;
    unsigned char salt[32];
    size_t salt_len;
    unsigned char stored_key[KT_SCRAM_MAX_KEY];
    unsigned char server_key[KT_SCRAM_MAX_KEY];
    size_t key_len; /* 20 or 32 */
};

KT_API size_t kt_scram_hash_len(enum kt_scram_hash hash);
/* SaltedPassword = PBKDF2(password, salt, iterations), then
 * StoredKey = H(HMAC(SaltedPassword, "Client Key")),
 * ServerKey = HMAC(SaltedPassword, "Server Key"). Slow by design: call on a
 * worker. The password is used as given (no SASLprep yet). */
KT_API int kt_scram_derive(enum kt_scram_hash hash, const char *password,
                           const unsigned char *salt, size_t salt_len, unsigned iterations,
                           struct kt_scram_keys *out);
/* Fills salt with salt_len random bytes (<= 32) and derives. */
KT_API int kt_scram_generate(enum kt_scram_hash hash, const char *password, size_t salt_len,
                             unsigned iterations, struct kt_scram_keys *out);

/* Base64 (RFC 4648, with padding). encode returns a new string. decode
 * returns the byte count or -1 on invalid input. */
KT_API char *kt_base64_encode(const unsigned char *data, size_t len);
KT_API long kt_base64_decode(const char *s, unsigned char *out, size_t outlen);
/* Decodes s into a new buffer of *len_r bytes; NULL if s is not base64. */
KT_API unsigned char *kt_base64_decode_new(const char *s, size_t *len_r);

#endif
