/* OpenPGP public keys (RFC 4880, RFC 6637, EdDSA as GnuPG writes it), natively
 * with OpenSSL: parse a transferable public key (binary or ASCII-armored),
 * compute v4 fingerprints, verify self-signatures and third-party
 * certifications, and derive revocation and expiry.
 *
 * A parsed key is a documented tree of plain structs that callers read
 * directly; only kt_pgp_key_parse() builds one and kt_pgp_key_free() frees it.
 * Functions are thread-safe on distinct keys; kt_pgp_key_verify() writes the
 * signatures' `status`, so do not call it on one key from two threads. */
#ifndef KONTALK_OPENPGP_H
#define KONTALK_OPENPGP_H

#include "base.h"

#include <stdint.h>
#include <time.h>

enum kt_pgp_err {
    KT_PGP_OK = 0,
    KT_PGP_ERR_TRUNCATED,   /* input ends inside a packet or a field */
    KT_PGP_ERR_MALFORMED,   /* a length, tag or field is invalid */
    KT_PGP_ERR_ARMOR,       /* armor lines or base64 are invalid */
    KT_PGP_ERR_CRC,         /* armor checksum mismatch */
    KT_PGP_ERR_UNSUPPORTED, /* a primary key of another version than 4 (or, for a
                             * secret key, of an algorithm we cannot sign with) */
    KT_PGP_ERR_NO_KEY,      /* the input holds no public (or secret) key packet first */
    KT_PGP_ERR_TOO_LARGE,   /* over KT_PGP_MAX_INPUT or too many packets */
    KT_PGP_ERR_PROTECTED,   /* a secret key packet protected by a passphrase (s2k usage != 0) */
};

/* Inputs larger than this are refused: a Kontalk key is a few KiB. */
#define KT_PGP_MAX_INPUT (1024 * 1024)

/* Public-key algorithm ids (RFC 4880 §9.1, RFC 6637). */
enum kt_pgp_algo {
    KT_PGP_ALGO_RSA = 1,
    KT_PGP_ALGO_RSA_E = 2,
    KT_PGP_ALGO_RSA_S = 3,
    KT_PGP_ALGO_ELGAMAL = 16,
    KT_PGP_ALGO_DSA = 17,
    KT_PGP_ALGO_ECDH = 18,
    KT_PGP_ALGO_ECDSA = 19,
    KT_PGP_ALGO_EDDSA = 22,
};

enum kt_pgp_curve {
    KT_PGP_CURVE_NONE = 0, /* not an EC key */
    KT_PGP_CURVE_P256,
    KT_PGP_CURVE_P384,
    KT_PGP_CURVE_P521,
    KT_PGP_CURVE_ED25519,
    KT_PGP_CURVE_CV25519,
    KT_PGP_CURVE_OTHER, /* an OID we do not know: parsed, never verified */
};

/* Hash algorithm ids (RFC 4880 §9.4). */
enum kt_pgp_hash {
    KT_PGP_HASH_SHA1 = 2,
    KT_PGP_HASH_SHA256 = 8,
    KT_PGP_HASH_SHA384 = 9,
    KT_PGP_HASH_SHA512 = 10,
    KT_PGP_HASH_SHA224 = 11,
};

/* Signature types (RFC 4880 §5.2.1) this module acts on. */
enum kt_pgp_sigtype {
    KT_PGP_SIG_CERT_GENERIC = 0x10,
    KT_PGP_SIG_CERT_PERSONA = 0x11,
    KT_PGP_SIG_CERT_CASUAL = 0x12,
    KT_PGP_SIG_CERT_POSITIVE = 0x13,
    KT_PGP_SIG_SUBKEY_BINDING = 0x18,
    KT_PGP_SIG_PRIMARY_BINDING = 0x19,
    KT_PGP_SIG_DIRECT_KEY = 0x1f,
    KT_PGP_SIG_KEY_REVOCATION = 0x20,
    KT_PGP_SIG_SUBKEY_REVOCATION = 0x28,
    KT_PGP_SIG_CERT_REVOCATION = 0x30,
};

/* Key flags (RFC 4880 §5.2.3.21), first octet. */
#define KT_PGP_FLAG_CERTIFY 0x01
#define KT_PGP_FLAG_SIGN 0x02
#define KT_PGP_FLAG_ENCRYPT_COMMS 0x04
#define KT_PGP_FLAG_ENCRYPT_STORAGE 0x08
#define KT_PGP_FLAG_AUTH 0x20

enum kt_pgp_sig_status {
    KT_PGP_SIG_UNCHECKED = 0, /* not verified (yet), or made by another key */
    KT_PGP_SIG_GOOD,
    KT_PGP_SIG_BAD,
};

/* A v4 signature packet (other versions are skipped while parsing). */
struct kt_pgp_sig {
    uint8_t type;      /* enum kt_pgp_sigtype */
    uint8_t pk_algo;   /* enum kt_pgp_algo */
    uint8_t hash_algo; /* enum kt_pgp_hash */
    uint32_t created;  /* signature creation time (subpacket 2); 0 if absent */
    uint32_t expires;  /* seconds after `created` (subpacket 3); 0 = never */
    uint32_t key_expires; /* key expiration (subpacket 9), seconds after key creation; 0 = never */
    bool has_issuer;
    uint8_t issuer[8]; /* issuer key ID (subpacket 16, or taken from the fingerprint) */
    bool has_issuer_fpr;
    uint8_t issuer_fpr[20]; /* issuer fingerprint (subpacket 33, v4) */
    bool has_key_flags;
    uint8_t key_flags; /* KT_PGP_FLAG_* (subpacket 27) */
    bool primary_uid;  /* subpacket 25 */
    bool has_revocation_reason;
    uint8_t revocation_code; /* subpacket 29 */
    char *revocation_reason; /* NUL-terminated copy, or NULL */
    bool critical_unknown;   /* a critical subpacket we do not know: never GOOD */
    enum kt_pgp_sig_status status;
    /* Private to openpgp.c: the hashed part (version through hashed
     * subpackets), the 2-byte digest prefix and the algorithm's MPIs. */
    uint8_t *hashed;
    size_t hashed_len;
    uint8_t digest_prefix[2];
    uint8_t *mpis;
    size_t mpis_len;
};

/* A v4 public key or subkey packet. */
struct kt_pgp_pubkey {
    uint32_t created;
    uint8_t algo; /* enum kt_pgp_algo; unknown ids are kept, never verified */
    enum kt_pgp_curve curve;
    unsigned bits; /* RSA/DSA modulus or prime size, or the curve's size */
    uint8_t fpr[20];
    uint8_t keyid[8]; /* the last 8 bytes of fpr */
    uint8_t *body;    /* the packet body, as hashed for fingerprints and signatures */
    size_t body_len;
    /* For a subkey: its binding (0x18) and revocation (0x28) signatures. */
    struct kt_pgp_sig *sigs;
    size_t nsigs;
};

struct kt_pgp_uid {
    char *uid; /* NUL-terminated copy; `len` bytes, may hold inner NULs */
    size_t len;
    struct kt_pgp_sig *sigs; /* certifications (0x10-0x13) and their revocations (0x30) */
    size_t nsigs;
    size_t raw_end; /* offset in kt_pgp_key.raw just past this UID's last packet */
};

struct kt_pgp_key {
    struct kt_pgp_pubkey primary;
    struct kt_pgp_sig *sigs; /* direct-key (0x1f) and key revocation (0x20) signatures */
    size_t nsigs;
    struct kt_pgp_uid *uids;
    size_t nuids;
    struct kt_pgp_pubkey *subkeys;
    size_t nsubkeys;
    uint8_t *raw; /* the binary transferable key as parsed (dearmored) */
    size_t raw_len;
};

KT_API const char *kt_pgp_strerror(enum kt_pgp_err err);

/* Parses the first transferable public key of `data` (binary packets, or an
 * ASCII armor "-----BEGIN PGP PUBLIC KEY BLOCK-----", detected by its first
 * non-blank byte). User attributes, trust packets, signatures of other
 * versions and packets after the key's last subkey up to the next public key
 * are skipped; later keys are ignored. Signatures are parsed, not verified:
 * call kt_pgp_key_verify(). On success *key_r is a new key; on error it is
 * NULL. Never reads outside data[0..len). */
KT_API enum kt_pgp_err kt_pgp_key_parse(const void *data, size_t len, struct kt_pgp_key **key_r);
/* Frees the key and sets *key to NULL. NULL or *key == NULL is a no-op. */
KT_API void kt_pgp_key_free(struct kt_pgp_key **key);

/* Removes ASCII armor (RFC 4880 §6.2): header lines, base64 body and the
 * optional "=XXXX" CRC-24, which must match when present. *out_r is a new
 * buffer (kt_malloc) of *outlen_r bytes. `type_r`, if not NULL, receives the
 * armor type as a new string ("PGP PUBLIC KEY BLOCK"). */
KT_API enum kt_pgp_err kt_pgp_dearmor(const char *text, size_t len, uint8_t **out_r,
                                      size_t *outlen_r, char **type_r);
/* CRC-24 of RFC 4880 §6.1. */
KT_API uint32_t kt_pgp_crc24(const uint8_t *data, size_t len);

/* One OpenPGP packet (RFC 4880 §4.2), either header format. `body` points into
 * the input, or into `owned` when partial body lengths had to be joined. */
struct kt_pgp_packet {
    unsigned tag;
    bool new_format;
    const uint8_t *body;
    size_t len;
    uint8_t *owned; /* freed by kt_pgp_packet_clear() */
};
/* Reads the packet at data[*off]; advances *off past it. Partial body lengths
 * are accepted only where RFC 4880 §4.2.2.4 allows them (literal, compressed
 * and encrypted data packets); an old-format indeterminate length runs to the
 * end of the input. Returns KT_PGP_OK, or an error with *off unchanged. */
KT_API enum kt_pgp_err kt_pgp_packet_next(const uint8_t *data, size_t len, size_t *off,
                                          struct kt_pgp_packet *pkt);
KT_API void kt_pgp_packet_clear(struct kt_pgp_packet *pkt);

/* Upper-case hex of a fingerprint (41 bytes with the NUL). */
KT_API void kt_pgp_fpr_hex(const uint8_t fpr[20], char out[41]);

/* Verifies every signature the key made on itself (issuer = primary key):
 * UID self-certifications, subkey bindings and revocations, direct-key and key
 * revocation signatures, and sets their `status`. Signatures by other keys
 * stay UNCHECKED. Returns the number of self-signatures found BAD.
 * Hashes: SHA-1, SHA-224/256/384/512 (SHA-1 stays: Kontalk's older clients
 * self-sign with it); RSA and DSA keys under 1024 bits never verify. The
 * back-signature (0x19) of signing subkeys is not checked. */
KT_API int kt_pgp_key_verify(struct kt_pgp_key *key);
/* True if a GOOD key revocation signature (0x20) by the primary key exists.
 * Call kt_pgp_key_verify() first. */
KT_API bool kt_pgp_key_revoked(const struct kt_pgp_key *key);
/* Expiry of the primary key as a Unix time, 0 if it never expires: creation
 * + the key-expiration subpacket of the newest GOOD self-certification of a
 * UID (or direct-key signature). -1 if the key has no GOOD self-signature.
 * Call kt_pgp_key_verify() first. */
KT_API int64_t kt_pgp_key_expiry(const struct kt_pgp_key *key);
/* True if the key is revoked, expired at `now`, or has no GOOD self-signature. */
KT_API bool kt_pgp_key_invalid(const struct kt_pgp_key *key, time_t now);
/* True if subkey `i` has a GOOD binding signature and no GOOD revocation. */
KT_API bool kt_pgp_subkey_bound(const struct kt_pgp_key *key, size_t i);
/* True if UID `uid_index` carries a certification (0x10-0x13) by the primary
 * key of `signer` that verifies, is not older than the certified key, is not
 * expired at `now`, and is not followed
 * by a certification revocation (0x30) from the same key. Verifies on the
 * spot (does not change `status`); `signer` is not checked for revocation. */
KT_API bool kt_pgp_uid_certified_by(const struct kt_pgp_key *key, size_t uid_index,
                                    const struct kt_pgp_key *signer, time_t now);

/* ---- Creating keys and signatures ----
 * The private key is an OpenSSL EVP_PKEY (struct evp_pkey_st, named so here
 * to keep this header free of OpenSSL's): RSA (signatures PKCS#1 v1.5 with
 * SHA-256), Ed25519 (GnuPG's EdDSA, SHA-512) or, for certifying only, ECDSA
 * on P-256/384/521 (SHA-256/384/512). */
struct evp_pkey_st;

/* Builds a new v4 key from `pkey` (RSA or Ed25519): the primary key packet created at
 * `created`, user ID `uid`, and a positive self-certification (0x13) with
 * key flags certify+sign and no expiry. Returns -1 for other key types. The
 * new key is verified (kt_pgp_key_verify() has run). */
KT_API int kt_pgp_key_generate_from(struct evp_pkey_st *pkey, const char *uid, time_t created,
                                    struct kt_pgp_key **key_r);
/* Adds a generic certification (0x10) of UID `uid_index` of `key`, made at
 * `now` by `signer`, whose primary key is the public half of `pkey`. The
 * signature packet goes after the UID's other signatures in key->raw and the
 * key is parsed again from it (statuses reset: verify again). Returns -1 if
 * pkey does not match signer's primary key, the UID does not exist or
 * signing fails; the key is unchanged then. */
KT_API int kt_pgp_uid_certify(struct kt_pgp_key *key, size_t uid_index,
                              const struct kt_pgp_key *signer, struct evp_pkey_st *pkey,
                              time_t now);
/* ---- Secret keys ---- */

/* Parses the first transferable secret key of `data` (binary packets, or an
 * ASCII armor "-----BEGIN PGP PRIVATE KEY BLOCK-----"), as GnuPG's
 * --export-secret-keys writes it with an empty passphrase. The primary must
 * be an unprotected v4 secret-key packet (tag 5, s2k usage 0, checksum
 * good), else KT_PGP_ERR_PROTECTED (a passphrase or a GnuPG stub),
 * KT_PGP_ERR_NO_KEY (no secret key packet first) or another error.
 * *key_r gets the public view: what kt_pgp_key_parse() builds from the same
 * packets with the secret parts removed (secret subkeys, tag 7, become
 * public subkeys; their secrets, protected or not, are dropped), already
 * verified (kt_pgp_key_verify() ran; the caller decides about validity).
 * *pkey_r gets the primary's private key: RSA, Ed25519 (EdDSA) or ECDSA on
 * P-256/384/521; other algorithms are KT_PGP_ERR_UNSUPPORTED, and secret
 * values that do not match the public key KT_PGP_ERR_MALFORMED. Both are
 * NULL on error. */
KT_API enum kt_pgp_err kt_pgp_secret_parse(const void *data, size_t len, struct kt_pgp_key **key_r,
                                           struct evp_pkey_st **pkey_r);
/* The armored "PGP PRIVATE KEY BLOCK" of `key` whose primary's private
 * half is `pkey`: key->raw with the primary written as an unprotected
 * secret-key packet; UIDs, signatures and subkeys follow unchanged, subkeys
 * as public subkeys. A new string holding the secret: wipe it
 * (OPENSSL_cleanse) before freeing. NULL if pkey does not match the
 * primary or is of an algorithm kt_pgp_secret_parse() does not read. */
KT_API char *kt_pgp_secret_armor(const struct kt_pgp_key *key, struct evp_pkey_st *pkey);

/* ASCII armor of `data` with the given type ("PGP PUBLIC KEY BLOCK"):
 * a blank header, base64 lines of 64 columns, the CRC-24 line, the END line.
 * Returns a new NUL-terminated string. */
KT_API char *kt_pgp_armor(const uint8_t *data, size_t len, const char *type);

#endif
