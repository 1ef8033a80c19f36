/* Unit tests for core/openpgp.c against keys GnuPG made
 * (tests/data/openpgp/make-fixtures.sh): parsing of armored and binary keys
 * of every algorithm, fingerprints equal to GnuPG's, self-signatures,
 * a tampered signature, revocation, expiry, certification by a node key and
 * its absence, subkey bindings, every packet header format, and bad input
 * (truncation at every offset, random byte flips) that must fail cleanly. */
#include "config.h"
#include <kontalk/openpgp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "tap.h"

int main(void);

static const char *dir;

static uint8_t *slurp(const char *name, size_t *len_r)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/data/openpgp/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *buf = NULL;
    size_t len = 0, n;
    uint8_t chunk[4096];
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        buf = kt_realloc(buf, len + n + 1);
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf == NULL)
        buf = kt_malloc(1);
    buf[len] = '\0';
    *len_r = len;
    return buf;
}

/* Parses NAME.gpg (or NAME.asc when armored) and verifies it. */
static struct kt_pgp_key *load(const char *name, bool armored)
{
    char file[256];
    size_t len = 0;
    snprintf(file, sizeof(file), "%s.%s", name, armored ? "asc" : "gpg");
    uint8_t *buf = slurp(file, &len);
    struct kt_pgp_key *key = NULL;
    if (buf == NULL) {
        ok(0, "read %s", file);
        return NULL;
    }
    enum kt_pgp_err err = kt_pgp_key_parse(buf, len, &key);
    if (!ok(err == KT_PGP_OK && key != NULL, "parse %s", file))
        diag("%s", kt_pgp_strerror(err));
    free(buf);
    return key;
}

static void test_fingerprints(void)
{
    size_t len = 0;
    char *list = (char *)slurp("fingerprints.txt", &len);
    int keys = 0;
    if (!ok(list != NULL, "read fingerprints.txt"))
        return;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], fpr[5][41];
        int n = sscanf(line, "%63s %40s %40s %40s %40s %40s", name, fpr[0], fpr[1], fpr[2],
                       fpr[3], fpr[4]);
        if (n < 2)
            continue;
        for (int armored = 0; armored < 2; armored++) {
            if (armored && strcmp(name, "tampered") == 0)
                continue; /* binary only */
            struct kt_pgp_key *key = load(name, armored);
            if (key == NULL)
                continue;
            char hex[41];
            kt_pgp_fpr_hex(key->primary.fpr, hex);
            is_str(hex, fpr[0], "fingerprint equals GnuPG's");
            ok(memcmp(key->primary.keyid, key->primary.fpr + 12, 8) == 0, "%s key ID", name);
            is_int(key->nsubkeys, n - 2, "subkey count");
            for (size_t i = 0; i < key->nsubkeys && (int)i < n - 2; i++) {
                kt_pgp_fpr_hex(key->subkeys[i].fpr, hex);
                is_str(hex, fpr[i + 1], "subkey fingerprint equals GnuPG's");
            }
            ok(key->nuids == 1 && strstr(key->uids[0].uid, "@") != NULL, "%s has its UID", name);
            int bad = kt_pgp_key_verify(key);
            if (strcmp(name, "tampered") == 0) {
                is_int(bad, 1, "tampered self-signature fails");
                is_int(key->uids[0].sigs[0].status, KT_PGP_SIG_BAD, "marked BAD");
                is_int(kt_pgp_key_expiry(key), -1, "no valid self-signature: expiry -1");
                ok(kt_pgp_key_invalid(key, 0), "tampered key invalid");
            } else {
                is_int(bad, 0, "self-signatures verify");
                is_int(key->uids[0].sigs[0].status, KT_PGP_SIG_GOOD, "UID self-signature GOOD");
                for (size_t i = 0; i < key->nsubkeys; i++)
                    ok(kt_pgp_subkey_bound(key, i), "%s subkey %zu bound", name, i);
            }
            if (armored) {
                struct kt_pgp_key *bin = load(name, false);
                ok(bin && bin->raw_len == key->raw_len &&
                       memcmp(bin->raw, key->raw, key->raw_len) == 0,
                   "%s: armored and binary hold the same packets", name);
                kt_pgp_key_free(&bin);
            }
            kt_pgp_key_free(&key);
            ok(key == NULL, "free clears the pointer");
            keys++;
        }
    }
    is_int(keys, 25, "every fixture parsed in both forms");
    free(list);
}

static void test_algorithms(void)
{
    struct kt_pgp_key *k;

    k = load("rsa", false);
    if (k) {
        ok(k->primary.algo == KT_PGP_ALGO_RSA && k->primary.bits == 2048, "rsa: RSA-2048");
        const struct kt_pgp_sig *s = &k->uids[0].sigs[0];
        is_str(k->uids[0].uid, "Test rsa <4bdd4f929f3a1062253e4e496bafba0bdfb5db75@kontalk.test>",
               "rsa: UID");
        ok(s->type == KT_PGP_SIG_CERT_POSITIVE && s->hash_algo == KT_PGP_HASH_SHA256,
           "rsa: positive certification with SHA-256");
        ok(s->has_issuer_fpr && memcmp(s->issuer_fpr, k->primary.fpr, 20) == 0,
           "rsa: issuer fingerprint subpacket");
        ok(s->has_issuer && memcmp(s->issuer, k->primary.keyid, 8) == 0, "rsa: issuer key ID");
        ok(s->has_key_flags && s->key_flags == (KT_PGP_FLAG_CERTIFY | KT_PGP_FLAG_SIGN),
           "rsa: key flags sign,cert");
        ok(s->created >= k->primary.created && s->key_expires == 0, "rsa: creation, no expiry");
        kt_pgp_key_verify(k);
        is_int(kt_pgp_key_expiry(k), 0, "rsa: never expires");
        ok(!kt_pgp_key_revoked(k) && !kt_pgp_key_invalid(k, 2000000000), "rsa: valid");
        ok(!kt_pgp_subkey_bound(k, 0), "rsa: no subkey 0");
        kt_pgp_key_free(&k);
    }
    k = load("ed25519", true);
    if (k) {
        ok(k->primary.algo == KT_PGP_ALGO_EDDSA && k->primary.curve == KT_PGP_CURVE_ED25519,
           "ed25519: EdDSA on Ed25519");
        is_int(k->uids[0].sigs[0].hash_algo, KT_PGP_HASH_SHA512, "ed25519: SHA-512");
        kt_pgp_key_free(&k);
    }
    k = load("dsa", false);
    if (k) {
        ok(k->primary.algo == KT_PGP_ALGO_DSA && k->primary.bits == 2048, "dsa: DSA-2048");
        kt_pgp_key_free(&k);
    }
    k = load("p384", false);
    if (k) {
        ok(k->primary.algo == KT_PGP_ALGO_ECDSA && k->primary.curve == KT_PGP_CURVE_P384,
           "p384: ECDSA P-384");
        kt_pgp_key_free(&k);
    }
    k = load("p521", false);
    if (k) {
        ok(k->primary.algo == KT_PGP_ALGO_ECDSA && k->primary.curve == KT_PGP_CURVE_P521,
           "p521: ECDSA P-521");
        kt_pgp_key_free(&k);
    }
    k = load("android", false);
    if (k && k->nsubkeys == 2) {
        ok(k->primary.algo == KT_PGP_ALGO_RSA, "android: RSA master");
        is_int(k->uids[0].sigs[0].hash_algo, KT_PGP_HASH_SHA1, "android: SHA-1 self-signature");
        ok(k->subkeys[0].algo == KT_PGP_ALGO_ECDH && k->subkeys[0].curve == KT_PGP_CURVE_P256,
           "android: ECDH P-256 subkey");
        ok(k->subkeys[1].algo == KT_PGP_ALGO_ECDSA && k->subkeys[1].curve == KT_PGP_CURVE_P256,
           "android: ECDSA P-256 subkey");
        ok(k->subkeys[0].nsigs == 1 && k->subkeys[0].sigs[0].type == KT_PGP_SIG_SUBKEY_BINDING &&
               (k->subkeys[0].sigs[0].key_flags & KT_PGP_FLAG_ENCRYPT_COMMS),
           "android: encryption binding with its key flags");
        ok(k->subkeys[1].nsigs == 1 && (k->subkeys[1].sigs[0].key_flags & KT_PGP_FLAG_SIGN),
           "android: signing binding with its key flags");
        kt_pgp_key_verify(k);
        ok(kt_pgp_subkey_bound(k, 0) && kt_pgp_subkey_bound(k, 1), "android: subkeys bound");
        /* A binding moved to the other subkey no longer verifies. */
        struct kt_pgp_sig tmp = k->subkeys[0].sigs[0];
        k->subkeys[0].sigs[0] = k->subkeys[1].sigs[0];
        k->subkeys[1].sigs[0] = tmp;
        is_int(kt_pgp_key_verify(k), 2, "android: swapped bindings fail");
        ok(!kt_pgp_subkey_bound(k, 0) && !kt_pgp_subkey_bound(k, 1), "android: unbound");
        kt_pgp_key_free(&k);
    } else {
        ok(0, "android: two subkeys");
        kt_pgp_key_free(&k);
    }
}

static void test_revoked_expired(void)
{
    struct kt_pgp_key *k = load("revoked", true);
    if (k) {
        ok(k->nsigs == 1 && k->sigs[0].type == KT_PGP_SIG_KEY_REVOCATION,
           "revoked: a key revocation signature");
        ok(!kt_pgp_key_revoked(k), "revoked: not taken before verification");
        is_int(kt_pgp_key_verify(k), 0, "revoked: signatures verify");
        ok(kt_pgp_key_revoked(k), "revoked: detected");
        ok(k->sigs[0].has_revocation_reason, "revoked: reason subpacket");
        ok(kt_pgp_key_invalid(k, 0), "revoked: invalid");
        /* A revocation by someone else does not count. */
        k->sigs[0].issuer_fpr[0] ^= 1;
        k->sigs[0].status = KT_PGP_SIG_UNCHECKED;
        kt_pgp_key_verify(k);
        ok(!kt_pgp_key_revoked(k), "revoked: another issuer's revocation ignored");
        kt_pgp_key_free(&k);
    }
    k = load("expired", true);
    if (k) {
        kt_pgp_key_verify(k);
        is_int(k->primary.created, 1577836800, "expired: created 2020-01-01");
        is_int(kt_pgp_key_expiry(k), 1577836800 + 86400, "expired: one day later");
        ok(!kt_pgp_key_invalid(k, 1577836800 + 3600), "expired: valid within the day");
        ok(kt_pgp_key_invalid(k, 1577836800 + 86400), "expired: invalid at expiry");
        ok(kt_pgp_key_invalid(k, 2000000000), "expired: invalid later");
        ok(!kt_pgp_key_revoked(k), "expired: not revoked");
        kt_pgp_key_free(&k);
    }
}

static void test_certification(void)
{
    struct kt_pgp_key *user = load("certified", false), *node = load("node", true);
    struct kt_pgp_key *node2 = load("node2", false), *stranger = load("uncertified", true);
    struct kt_pgp_key *rsa = load("rsa", false);
    if (!user || !node || !node2 || !stranger || !rsa)
        goto done;
    is_int(kt_pgp_key_verify(user), 0, "certified: self-signature verifies");
    is_int(user->uids[0].nsigs, 3, "certified: self-signature and two certifications");
    ok(user->uids[0].sigs[1].status == KT_PGP_SIG_UNCHECKED, "other keys' signatures UNCHECKED");
    ok(kt_pgp_uid_certified_by(user, 0, node, 2000000000), "certified by the RSA node key");
    ok(kt_pgp_uid_certified_by(user, 0, node2, 2000000000), "certified by the Ed25519 node key");
    ok(!kt_pgp_uid_certified_by(user, 0, rsa, 2000000000), "not certified by an unrelated key");
    ok(!kt_pgp_uid_certified_by(user, 1, node, 2000000000), "no UID 1");
    ok(!kt_pgp_uid_certified_by(stranger, 0, node, 2000000000), "uncertified key detected");
    ok(kt_pgp_uid_certified_by(user, 0, user, 2000000000), "the self-certification counts for itself");
    /* The certification does not carry over to another UID text. */
    user->uids[0].uid[5] ^= 1;
    ok(!kt_pgp_uid_certified_by(user, 0, node, 2000000000), "changed UID: certification fails");
    user->uids[0].uid[5] ^= 1;
    /* A signature with an expiry passed at `now` does not count. */
    struct kt_pgp_sig *s = &user->uids[0].sigs[1];
    s->expires = 10;
    ok(!kt_pgp_uid_certified_by(user, 0, node, (time_t)s->created + 10),
       "expired certification ignored");
    s->expires = 0;
    /* An unknown critical subpacket voids a signature. */
    s->critical_unknown = true;
    ok(!kt_pgp_uid_certified_by(user, 0, node, 2000000000), "critical unknown subpacket voids");
    s->critical_unknown = false;
    ok(kt_pgp_uid_certified_by(user, 0, node, 2000000000), "and restored");
done:
    kt_pgp_key_free(&user);
    kt_pgp_key_free(&node);
    kt_pgp_key_free(&node2);
    kt_pgp_key_free(&stranger);
    kt_pgp_key_free(&rsa);
}

/* Re-frames the packets of a binary key with another header format:
 * mode 0 new format with the shortest length, 1 new format with 5-byte
 * lengths, 2 old format with 4-byte lengths, 3 old format with the last
 * packet of indeterminate length. */
static uint8_t *reframe(const uint8_t *in, size_t len, int mode, size_t *outlen)
{
    uint8_t *out = kt_malloc(len * 2 + 64);
    size_t o = 0, off = 0;
    struct kt_pgp_packet p;
    while (off < len && kt_pgp_packet_next(in, len, &off, &p) == KT_PGP_OK) {
        bool last = off >= len;
        if (mode <= 1) {
            out[o++] = (uint8_t)(0xC0 | p.tag);
            if (mode == 0 && p.len < 192) {
                out[o++] = (uint8_t)p.len;
            } else if (mode == 0 && p.len < 8384) {
                out[o++] = (uint8_t)(((p.len - 192) >> 8) + 192);
                out[o++] = (uint8_t)(p.len - 192);
            } else {
                out[o++] = 255;
                for (int i = 3; i >= 0; i--)
                    out[o++] = (uint8_t)(p.len >> (8 * i));
            }
        } else if (mode == 3 && last) {
            out[o++] = (uint8_t)(0x80 | p.tag << 2 | 3);
        } else {
            out[o++] = (uint8_t)(0x80 | p.tag << 2 | 2);
            for (int i = 3; i >= 0; i--)
                out[o++] = (uint8_t)(p.len >> (8 * i));
        }
        memcpy(out + o, p.body, p.len);
        o += p.len;
        kt_pgp_packet_clear(&p);
    }
    *outlen = o;
    return out;
}

static void test_packet_formats(void)
{
    size_t len = 0;
    uint8_t *bin = slurp("android.gpg", &len);
    struct kt_pgp_key *ref = NULL;
    if (!ok(bin != NULL, "read android.gpg"))
        return;
    kt_pgp_key_parse(bin, len, &ref);
    for (int mode = 0; mode < 4; mode++) {
        size_t n = 0;
        uint8_t *re = reframe(bin, len, mode, &n);
        struct kt_pgp_key *k = NULL;
        ok(n != len || memcmp(re, bin, n) != 0, "mode %d changes the framing", mode);
        is_int(kt_pgp_key_parse(re, n, &k), KT_PGP_OK, "reframed key parses");
        if (k && ref) {
            ok(memcmp(k->primary.fpr, ref->primary.fpr, 20) == 0 && k->nsubkeys == 2 &&
                   k->nuids == 1,
               "mode %d: same key", mode);
            is_int(kt_pgp_key_verify(k), 0, "reframed signatures verify");
        }
        kt_pgp_key_free(&k);
        free(re);
    }
    kt_pgp_key_free(&ref);

    /* Partial lengths: joined for a literal data packet, refused for keys. */
    uint8_t *pl = kt_malloc(2000);
    size_t o = 0, off = 0;
    pl[o++] = 0xC0 | 11;
    pl[o++] = 0xE0 | 9; /* 512 bytes */
    for (int i = 0; i < 512; i++)
        pl[o++] = 'a';
    pl[o++] = 0xE0 | 0; /* 1 byte */
    pl[o++] = 'b';
    pl[o++] = 3; /* last: 3 bytes */
    pl[o++] = 'c';
    pl[o++] = 'd';
    pl[o++] = 'e';
    struct kt_pgp_packet p;
    is_int(kt_pgp_packet_next(pl, o, &off, &p), KT_PGP_OK, "partial lengths joined");
    ok(p.tag == 11 && p.len == 516 && p.body[511] == 'a' && p.body[512] == 'b' &&
           memcmp(p.body + 513, "cde", 3) == 0 && off == o,
       "partial body content");
    kt_pgp_packet_clear(&p);
    off = 0;
    is_int(kt_pgp_packet_next(pl, o - 1, &off, &p), KT_PGP_ERR_TRUNCATED, "partial: truncated");
    is_int(off, 0, "offset unchanged on error");
    pl[0] = 0xC0 | 6;
    is_int(kt_pgp_packet_next(pl, o, &off, &p), KT_PGP_ERR_MALFORMED, "partial key refused");
    is_int(kt_pgp_key_parse(pl, o, &ref), KT_PGP_ERR_MALFORMED, "partial key packet: parse fails");
    pl[0] = 0xC0 | 11;
    pl[1] = 0xE0 | 8; /* a first chunk under 512 bytes */
    is_int(kt_pgp_packet_next(pl, o, &off, &p), KT_PGP_ERR_MALFORMED, "short first chunk");
    free(pl);

    static const uint8_t two[] = {0xC6, 0xC0, 0x00}; /* 2-byte length 192, no body */
    off = 0;
    is_int(kt_pgp_packet_next(two, sizeof(two), &off, &p), KT_PGP_ERR_TRUNCATED, "2-byte len");
    static const uint8_t five[] = {0xC6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0};
    is_int(kt_pgp_packet_next(five, sizeof(five), &off, &p), KT_PGP_ERR_TRUNCATED, "5-byte len");
    static const uint8_t tag0[] = {0xC0, 0x00};
    is_int(kt_pgp_packet_next(tag0, sizeof(tag0), &off, &p), KT_PGP_ERR_MALFORMED, "tag 0");
    static const uint8_t notag[] = {0x06, 0x00};
    is_int(kt_pgp_packet_next(notag, sizeof(notag), &off, &p), KT_PGP_ERR_MALFORMED, "bit 7 off");
    free(bin);
}

static void test_armor(void)
{
    size_t len = 0;
    char *asc = (char *)slurp("rsa.asc", &len);
    struct kt_pgp_key *k = NULL;
    if (!ok(asc != NULL, "read rsa.asc"))
        return;
    char *crc = strstr(asc, "\n=");
    char *end = strstr(asc, "-----END");
    if (!ok(crc && end && crc < end, "fixture has a checksum line"))
        goto done;
    crc[2] = crc[2] == 'A' ? 'B' : 'A';
    is_int(kt_pgp_key_parse(asc, len, &k), KT_PGP_ERR_CRC, "wrong CRC-24 refused");
    crc[2] = crc[2] == 'A' ? 'B' : 'A';
    /* Without the checksum line the armor is still accepted. */
    char *nocrc = kt_malloc(len + 1);
    size_t crclen = (size_t)(strchr(crc + 1, '\n') - crc);
    memcpy(nocrc, asc, (size_t)(crc - asc));
    memcpy(nocrc + (crc - asc), crc + crclen, len - (size_t)(crc - asc) - crclen);
    is_int(kt_pgp_key_parse(nocrc, len - crclen, &k), KT_PGP_OK, "armor without checksum");
    kt_pgp_key_free(&k);
    free(nocrc);
    /* A changed body character breaks the checksum (or the packets). */
    char *body = strstr(asc, "\n\n") + 2;
    body[40] = body[40] == 'Q' ? 'R' : 'Q';
    ok(kt_pgp_key_parse(asc, len, &k) != KT_PGP_OK && k == NULL, "changed body refused");
    body[40] = body[40] == 'Q' ? 'R' : 'Q';
    body[41] = '*';
    is_int(kt_pgp_key_parse(asc, len, &k), KT_PGP_ERR_ARMOR, "bad base64 character");
    is_int(kt_pgp_key_parse(asc, (size_t)(end - asc), &k), KT_PGP_ERR_ARMOR, "no END line");
    static const char other[] = "-----BEGIN PGP MESSAGE-----\n\nxA==\n-----END PGP MESSAGE-----\n";
    is_int(kt_pgp_key_parse(other, strlen(other), &k), KT_PGP_ERR_NO_KEY, "not a key block");
    static const char mism[] = "-----BEGIN PGP MESSAGE-----\n\nxA==\n-----END PGP SIGNATURE-----\n";
    is_int(kt_pgp_key_parse(mism, strlen(mism), &k), KT_PGP_ERR_ARMOR, "END type differs");
    uint8_t *out = NULL;
    size_t outlen = 0;
    char *type = NULL;
    static const char msg[] = "junk before\n-----BEGIN PGP MESSAGE-----\nVersion: x\n\nxA==\n=2GtE\n"
                              "-----END PGP MESSAGE-----\n";
    is_int(kt_pgp_dearmor(msg, strlen(msg), &out, &outlen, &type), KT_PGP_OK, "dearmor");
    ok(outlen == 1 && out[0] == 0xC4 && type && strcmp(type, "PGP MESSAGE") == 0, "dearmor output");
    free(out);
    free(type);
    is_int(kt_pgp_crc24((const uint8_t *)"", 0), 0xB704CE, "CRC-24 of nothing is its init value");
done:
    free(asc);
}

static void test_bad_input(void)
{
    struct kt_pgp_key *k = NULL;
    is_int(kt_pgp_key_parse("", 0, &k), KT_PGP_ERR_NO_KEY, "empty input");
    static const uint8_t uid_first[] = {0xB4, 0x01, 'x'};
    is_int(kt_pgp_key_parse(uid_first, sizeof(uid_first), &k), KT_PGP_ERR_NO_KEY, "UID first");
    static const uint8_t secret[] = {0x94, 0x01, 0x04};
    is_int(kt_pgp_key_parse(secret, sizeof(secret), &k), KT_PGP_ERR_NO_KEY, "secret key packet");
    static const uint8_t v3[] = {0x98, 0x06, 0x03, 0, 0, 0, 0, 1};
    is_int(kt_pgp_key_parse(v3, sizeof(v3), &k), KT_PGP_ERR_UNSUPPORTED, "v3 key");
    static const uint8_t shortkey[] = {0x98, 0x06, 0x04, 0, 0, 0, 0, 1};
    is_int(kt_pgp_key_parse(shortkey, sizeof(shortkey), &k), KT_PGP_ERR_TRUNCATED, "no MPIs");
    uint8_t *big = kt_calloc(1, KT_PGP_MAX_INPUT + 1);
    is_int(kt_pgp_key_parse(big, KT_PGP_MAX_INPUT + 1, &k), KT_PGP_ERR_TOO_LARGE, "too large");
    free(big);
    ok(k == NULL, "no key on errors");

    /* Truncation at every offset: an error, or a prefix that ends on a
     * packet boundary; never a crash or a leak. */
    static const char *const names[] = {"android.gpg", "ed25519.asc", "certified.gpg"};
    for (size_t f = 0; f < KT_ARRAY_SIZE(names); f++) {
        size_t len = 0;
        uint8_t *buf = slurp(names[f], &len);
        if (!ok(buf != NULL, "read %s", names[f]))
            continue;
        size_t accepted = 0, consistent = 0;
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = kt_malloc(cut + 1); /* exact size: ASan sees over-reads */
            memcpy(copy, buf, cut);
            enum kt_pgp_err err = kt_pgp_key_parse(copy, cut, &k);
            if ((err == KT_PGP_OK) == (k != NULL))
                consistent++;
            if (k) {
                accepted++;
                kt_pgp_key_verify(k);
                kt_pgp_key_free(&k);
            }
            free(copy);
        }
        is_int(consistent, len, "truncations: error iff no key");
        ok(accepted < len / 4, "%s: most truncations refused (%zu accepted)", names[f], accepted);
        free(buf);
    }

    /* Random byte flips (fixed seed): parse and verify must not crash. */
    static const char *const flipped[] = {"android.gpg", "ed25519.gpg", "dsa.gpg", "p521.gpg"};
    srand(4880);
    for (size_t f = 0; f < KT_ARRAY_SIZE(flipped); f++) {
        size_t len = 0;
        uint8_t *buf = slurp(flipped[f], &len);
        int parsed = 0, good = 0;
        if (!ok(buf != NULL, "read %s", flipped[f]))
            continue;
        for (int i = 0; i < 150; i++) {
            uint8_t *copy = kt_malloc(len);
            memcpy(copy, buf, len);
            int flips = 1 + rand() % 3;
            for (int j = 0; j < flips; j++)
                copy[(size_t)rand() % len] ^= (uint8_t)(1 + rand() % 255);
            if (kt_pgp_key_parse(copy, len, &k) == KT_PGP_OK) {
                parsed++;
                if (kt_pgp_key_verify(k) == 0 && k->nuids > 0 && k->uids[0].nsigs > 0 &&
                    k->uids[0].sigs[0].status == KT_PGP_SIG_GOOD)
                    good++;
                kt_pgp_key_free(&k);
            }
            free(copy);
        }
        ok(1, "%s: 150 mutants, %d parsed, %d still fully valid", flipped[f], parsed, good);
        free(buf);
    }
}

/* Writes text to $KT_OPENPGP_DUMP/name when set, for a manual gpg check. */
static void dump(const char *name, const char *text)
{
    const char *d = getenv("KT_OPENPGP_DUMP");
    char path[1024];
    if (d == NULL)
        return;
    snprintf(path, sizeof(path), "%s/%s", d, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_create(void)
{
    static const char *const types[2] = {"ED25519", "RSA"};
    EVP_PKEY *pk[2] = {EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"),
                       EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)};
    struct kt_pgp_key *node[2] = {NULL, NULL};
    /* Now, so that gpg can check the dumped keys without time conflicts. */
    const time_t t0 = time(NULL) - 100;

    for (int i = 0; i < 2; i++) {
        char uid[64];
        snprintf(uid, sizeof(uid), "Node %d <node%d@kontalk.test>", i, i);
        if (!ok(pk[i] != NULL, "OpenSSL made a %s key", types[i]))
            goto done;
        is_int(kt_pgp_key_generate_from(pk[i], uid, t0, &node[i]), 0, "node key generated");
        if (node[i] == NULL)
            goto done;
        is_str(node[i]->uids[0].uid, uid, "generated UID");
        ok(node[i]->primary.created == t0 && node[i]->uids[0].nsigs == 1 &&
               node[i]->uids[0].sigs[0].type == KT_PGP_SIG_CERT_POSITIVE &&
               node[i]->uids[0].sigs[0].status == KT_PGP_SIG_GOOD,
           "generated key: positive self-certification GOOD");
        ok(node[i]->uids[0].sigs[0].key_flags == (KT_PGP_FLAG_CERTIFY | KT_PGP_FLAG_SIGN),
           "generated key: flags certify+sign");
        is_int(kt_pgp_key_expiry(node[i]), 0, "generated key never expires");
        /* The armored export parses back to the same key. */
        char *asc = kt_pgp_armor(node[i]->raw, node[i]->raw_len, "PGP PUBLIC KEY BLOCK");
        struct kt_pgp_key *back = NULL;
        is_int(kt_pgp_key_parse(asc, strlen(asc), &back), KT_PGP_OK, "armored export parses");
        ok(back && back->raw_len == node[i]->raw_len &&
               memcmp(back->raw, node[i]->raw, back->raw_len) == 0,
           "armor round trip");
        dump(i ? "node-rsa.asc" : "node-ed25519.asc", asc);
        kt_pgp_key_free(&back);
        free(asc);
    }
    EVP_PKEY *x = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    struct kt_pgp_key *none = NULL;
    is_int(kt_pgp_key_generate_from(x, "x <x@kontalk.test>", t0, &none), -1,
           "an X25519 key cannot sign: refused");
    ok(none == NULL, "no key then");
    EVP_PKEY_free(x);
    x = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512);
    is_int(kt_pgp_key_generate_from(x, "x <x@kontalk.test>", t0, &none), -1,
           "an RSA-512 key never verifies: refused");
    EVP_PKEY_free(x);

    for (int i = 0; i < 2; i++) {
        struct kt_pgp_key *user = load("android", true);
        if (user == NULL)
            goto done;
        char fpr_before[41], fpr_after[41];
        kt_pgp_fpr_hex(user->primary.fpr, fpr_before);
        ok(!kt_pgp_uid_certified_by(user, 0, node[i], t0 + 100), "not certified before");
        is_int(kt_pgp_uid_certify(user, 0, node[i], pk[1 - i], t0 + 50), -1,
               "a private key that is not the signer's is refused");
        is_int(kt_pgp_uid_certify(user, 1, node[i], pk[i], t0 + 50), -1, "no UID 1");
        /* A certification older than the key it certifies does not count. */
        struct kt_pgp_key *early = load("android", false);
        if (early) {
            is_int(kt_pgp_uid_certify(early, 0, node[i], pk[i], early->primary.created - 1), 0,
                   "certified with a time before the key's creation");
            ok(!kt_pgp_uid_certified_by(early, 0, node[i], t0 + 100),
               "a certification older than the key is ignored");
            kt_pgp_key_free(&early);
        }
        is_int(kt_pgp_uid_certify(user, 0, node[i], pk[i], t0 + 50), 0, "UID certified");
        kt_pgp_fpr_hex(user->primary.fpr, fpr_after);
        is_str(fpr_after, fpr_before, "same key after certification");
        is_int(user->uids[0].nsigs, 2, "self-signature and the new certification");
        ok(user->uids[0].sigs[1].type == KT_PGP_SIG_CERT_GENERIC &&
               user->uids[0].sigs[1].created == t0 + 50,
           "generic certification at the given time");
        is_int(kt_pgp_key_verify(user), 0, "self-signatures still verify");
        ok(user->nsubkeys == 2 && kt_pgp_subkey_bound(user, 0) && kt_pgp_subkey_bound(user, 1),
           "subkeys kept after the UID");
        ok(kt_pgp_uid_certified_by(user, 0, node[i], t0 + 100), "certified by the node key");
        ok(!kt_pgp_uid_certified_by(user, 0, node[1 - i], t0 + 100), "not by the other node key");
        char *asc = kt_pgp_armor(user->raw, user->raw_len, "PGP PUBLIC KEY BLOCK");
        dump(i ? "user-by-rsa.asc" : "user-by-ed25519.asc", asc);
        free(asc);
        kt_pgp_key_free(&user);
    }
done:
    for (int i = 0; i < 2; i++) {
        kt_pgp_key_free(&node[i]);
        EVP_PKEY_free(pk[i]);
    }
}

/* ---- Secret keys ---- */

/* Parses secret fixture FILE; *pkey_r gets the private key. */
static enum kt_pgp_err load_secret(const char *file, struct kt_pgp_key **key_r, EVP_PKEY **pkey_r)
{
    size_t len = 0;
    uint8_t *buf = slurp(file, &len);
    *key_r = NULL;
    *pkey_r = NULL;
    if (!ok(buf != NULL, "read %s", file))
        return KT_PGP_ERR_NO_KEY;
    enum kt_pgp_err err = kt_pgp_secret_parse(buf, len, key_r, pkey_r);
    free(buf);
    return err;
}

/* True if pkey, the private half of `signer`, certifies the UID of a fresh
 * copy of the "uncertified" fixture so that kt_pgp_uid_certified_by() agrees. */
static bool can_certify(const char *what, const struct kt_pgp_key *signer, EVP_PKEY *pkey)
{
    struct kt_pgp_key *user = load("uncertified", false);
    time_t now = time(NULL);
    bool good = user && kt_pgp_uid_certify(user, 0, signer, pkey, now) == 0 &&
                kt_pgp_key_verify(user) == 0 && kt_pgp_uid_certified_by(user, 0, signer, now + 1);
    if (good) {
        char name[128];
        char *asc = kt_pgp_armor(user->raw, user->raw_len, "PGP PUBLIC KEY BLOCK");
        snprintf(name, sizeof(name), "user-by-%s", what);
        dump(name, asc);
        free(asc);
    }
    kt_pgp_key_free(&user);
    return good;
}

/* secret_armor, then secret_parse: the same packets and a private key equal to pkey. */
static void armor_round_trip(const char *what, const struct kt_pgp_key *key, EVP_PKEY *pkey)
{
    char *asc = kt_pgp_secret_armor(key, pkey);
    struct kt_pgp_key *back = NULL;
    EVP_PKEY *bpk = NULL;
    if (!ok(asc != NULL, "%s: secret armor", what))
        return;
    ok(strncmp(asc, "-----BEGIN PGP PRIVATE KEY BLOCK-----\n", 38) == 0, "%s: armor type", what);
    enum kt_pgp_err err = kt_pgp_secret_parse(asc, strlen(asc), &back, &bpk);
    if (!ok(err == KT_PGP_OK && back && bpk, "%s: armored secret parses back", what))
        diag("%s", kt_pgp_strerror(err));
    if (back && bpk) {
        ok(memcmp(back->primary.fpr, key->primary.fpr, 20) == 0, "%s: same fingerprint", what);
        ok(back->raw_len == key->raw_len && memcmp(back->raw, key->raw, key->raw_len) == 0,
           "%s: same public packets", what);
        ok(EVP_PKEY_eq(bpk, pkey) == 1, "%s: same private key", what);
        ok(can_certify(what, back, bpk), "%s: the parsed key certifies a UID", what);
    }
    struct kt_pgp_key *pub = NULL;
    is_int(kt_pgp_key_parse(asc, strlen(asc), &pub), KT_PGP_ERR_NO_KEY,
           "a private key block is not a public key");
    dump(what, asc);
    kt_pgp_key_free(&back);
    EVP_PKEY_free(bpk);
    free(asc);
}

static void test_secret_fixtures(void)
{
    size_t len = 0;
    char *list = (char *)slurp("secret-fingerprints.txt", &len);
    int keys = 0;
    if (!ok(list != NULL, "read secret-fingerprints.txt"))
        return;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], fpr[3][41], file[96];
        int n = sscanf(line, "%63s %40s %40s %40s", name, fpr[0], fpr[1], fpr[2]);
        if (n < 2)
            continue;
        bool protected = strncmp(name, "protected-", 10) == 0;
        for (int armored = 0; armored < 2; armored++) {
            struct kt_pgp_key *key = NULL;
            EVP_PKEY *pkey = NULL;
            snprintf(file, sizeof(file), "%s.%s", name, armored ? "asc" : "gpg");
            enum kt_pgp_err err = load_secret(file, &key, &pkey);
            keys++;
            if (protected) {
                is_int(err, KT_PGP_ERR_PROTECTED, file);
                ok(key == NULL && pkey == NULL, "%s: nothing returned", file);
                continue;
            }
            if (!ok(err == KT_PGP_OK && key && pkey, "%s parses", file)) {
                diag("%s", kt_pgp_strerror(err));
                kt_pgp_key_free(&key);
                EVP_PKEY_free(pkey);
                continue;
            }
            char hex[41];
            kt_pgp_fpr_hex(key->primary.fpr, hex);
            is_str(hex, fpr[0], "secret key fingerprint equals GnuPG's");
            is_int(key->nsubkeys, n - 2, "subkey count");
            for (size_t i = 0; i < key->nsubkeys && (int)i < n - 2; i++) {
                kt_pgp_fpr_hex(key->subkeys[i].fpr, hex);
                is_str(hex, fpr[i + 1], "subkey fingerprint equals GnuPG's");
                ok(kt_pgp_subkey_bound(key, i), "%s: subkey %zu bound (verified already)", file, i);
            }
            ok(key->nuids == 1 && key->uids[0].sigs[0].status == KT_PGP_SIG_GOOD,
               "%s: self-signature verified", file);
            ok(!kt_pgp_key_invalid(key, time(NULL)), "%s: valid", file);
            /* The public view is GnuPG's own public export, byte for byte. */
            char pubfile[96];
            snprintf(pubfile, sizeof(pubfile), "%s.pub.gpg", name);
            size_t plen = 0;
            uint8_t *pbuf = slurp(pubfile, &plen);
            ok(pbuf && plen == key->raw_len && memcmp(pbuf, key->raw, plen) == 0,
               "%s: public view equals %s", file, pubfile);
            free(pbuf);
            ok(can_certify(file, key, pkey), "%s: the private key certifies a UID", file);
            if (armored)
                armor_round_trip(name, key, pkey);
            kt_pgp_key_free(&key);
            EVP_PKEY_free(pkey);
        }
    }
    is_int(keys, 10, "every secret fixture in both forms");
    free(list);

    struct kt_pgp_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    is_int(load_secret("rsa.asc", &key, &pkey), KT_PGP_ERR_NO_KEY, "public armor: no secret key");
    is_int(load_secret("rsa.gpg", &key, &pkey), KT_PGP_ERR_NO_KEY, "public packets: no secret key");
    ok(key == NULL && pkey == NULL, "nothing returned");
    is_int(kt_pgp_secret_parse("", 0, &key, &pkey), KT_PGP_ERR_NO_KEY, "empty input");
    size_t slen = 0;
    uint8_t *sbuf = slurp("secret-rsa.gpg", &slen);
    is_int(load_secret("secret-rsa.gpg", &key, &pkey), KT_PGP_OK, "secret-rsa.gpg");
    struct kt_pgp_key *other = NULL;
    EVP_PKEY *opk = NULL;
    is_int(load_secret("secret-ed25519.gpg", &other, &opk), KT_PGP_OK, "secret-ed25519.gpg");
    if (key && other && sbuf) {
        ok(kt_pgp_secret_armor(key, opk) == NULL,
           "secret armor refuses another key's private half");
        ok(kt_pgp_secret_armor(other, pkey) == NULL, "in both directions");
        ok(kt_pgp_secret_armor(key, NULL) == NULL, "and no private key");
        /* Only the first key counts: a second one after it is ignored. */
        uint8_t *two = kt_malloc(2 * slen);
        memcpy(two, sbuf, slen);
        memcpy(two + slen, sbuf, slen);
        struct kt_pgp_key *k2 = NULL;
        EVP_PKEY *p2 = NULL;
        is_int(kt_pgp_secret_parse(two, 2 * slen, &k2, &p2), KT_PGP_OK, "two keys: the first");
        ok(k2 && k2->raw_len == key->raw_len, "two keys: only the first's packets");
        kt_pgp_key_free(&k2);
        EVP_PKEY_free(p2);
        free(two);
    }
    kt_pgp_key_free(&key);
    kt_pgp_key_free(&other);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(opk);
    free(sbuf);
}

/* Flips a bit of the secret byte at buf[at] and fixes the checksum that
 * ends two bytes later. */
static void flip_secret_byte(uint8_t *buf, size_t at)
{
    unsigned sum = (unsigned)buf[at + 1] << 8 | buf[at + 2];
    sum -= buf[at];
    buf[at] ^= 0x10;
    sum += buf[at];
    buf[at + 1] = (uint8_t)(sum >> 8);
    buf[at + 2] = (uint8_t)sum;
}

/* Copies of secret-*.gpg with the checksum, a secret MPI or the armor
 * damaged, and cut at every offset: errors, never a key from bad secrets. */
static void test_secret_bad(void)
{
    static const char *const names[] = {"secret-rsa.gpg", "secret-ed25519.gpg", "secret-p256.gpg"};
    for (size_t f = 0; f < KT_ARRAY_SIZE(names); f++) {
        size_t len = 0, off = 0;
        uint8_t *buf = slurp(names[f], &len);
        struct kt_pgp_packet pkt;
        struct kt_pgp_key *key = NULL;
        EVP_PKEY *pkey = NULL;
        if (!ok(buf != NULL, "read %s", names[f]))
            continue;
        if (!ok(kt_pgp_packet_next(buf, len, &off, &pkt) == KT_PGP_OK && pkt.tag == 5,
                "%s: secret key packet first", names[f])) {
            free(buf);
            continue;
        }
        kt_pgp_packet_clear(&pkt);
        /* off is just past the primary; its last two bytes are the checksum. */
        buf[off - 1] ^= 0x01;
        is_int(kt_pgp_secret_parse(buf, len, &key, &pkey), KT_PGP_ERR_MALFORMED,
               "checksum mismatch");
        ok(key == NULL && pkey == NULL, "nothing returned");
        /* The last secret byte changed, the checksum fixed: refused
         * (the RSA coefficient u, an EC scalar, the Ed25519 seed). */
        buf[off - 1] ^= 0x01;
        flip_secret_byte(buf, off - 3);
        is_int(kt_pgp_secret_parse(buf, len, &key, &pkey), KT_PGP_ERR_MALFORMED,
               "a wrong secret with a good checksum");
        ok(key == NULL && pkey == NULL, "nothing returned");
        flip_secret_byte(buf, off - 3);
        is_int(kt_pgp_secret_parse(buf, len, &key, &pkey), KT_PGP_OK, "restored");
        kt_pgp_key_free(&key);
        EVP_PKEY_free(pkey);
        pkey = NULL;

        /* Cut anywhere inside the primary packet: an error. Later cuts end
         * on a packet boundary or in a UID, signature or subkey. */
        size_t consistent = 0, refused = 0;
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = kt_malloc(cut + 1); /* exact size: ASan sees over-reads */
            memcpy(copy, buf, cut);
            enum kt_pgp_err err = kt_pgp_secret_parse(copy, cut, &key, &pkey);
            if ((err == KT_PGP_OK) == (key != NULL) && (key != NULL) == (pkey != NULL))
                consistent++;
            if (cut < off && err != KT_PGP_OK)
                refused++;
            kt_pgp_key_free(&key);
            EVP_PKEY_free(pkey);
            pkey = NULL;
            free(copy);
        }
        is_int(consistent, len, "truncations: error iff no key");
        is_int(refused, off, "every cut in the secret key packet refused");
        free(buf);
    }
    /* Armor: a changed base64 character breaks the CRC. */
    size_t len = 0;
    char *asc = (char *)slurp("secret-ed25519.asc", &len);
    struct kt_pgp_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    if (asc) {
        char *p = strstr(asc, "\n\n");
        if (p && p[5] != 'A')
            p[5] = 'A';
        else if (p)
            p[5] = 'B';
        is_int(kt_pgp_secret_parse(asc, len, &key, &pkey), KT_PGP_ERR_CRC, "armor CRC");
        is_int(kt_pgp_secret_parse(asc, len / 2, &key, &pkey), KT_PGP_ERR_ARMOR, "half an armor");
        free(asc);
    }
    /* Made-up primaries: a v3 key, and a stub as GnuPG exports a key whose
     * secret is elsewhere (s2k usage 255, S2K type 101). */
    static const uint8_t v3[] = {0x94, 0x06, 0x03, 0, 0, 0, 0, 1};
    is_int(kt_pgp_secret_parse(v3, sizeof(v3), &key, &pkey), KT_PGP_ERR_UNSUPPORTED,
           "v3 secret key");
    /* version, time, RSA, n = 1, e = 3, then s2k usage 255, a cipher, S2K 101. */
    static const uint8_t stub[] = {0x94, 0x0f, 4, 0, 0, 0, 0, 1, 0, 1, 1, 0, 2, 3, 0xff, 0, 101};
    is_int(kt_pgp_secret_parse(stub, sizeof(stub), &key, &pkey), KT_PGP_ERR_PROTECTED,
           "a GnuPG stub (no secret)");
    ok(key == NULL && pkey == NULL, "nothing returned");
}

/* kt_pgp_key_generate_from, kt_pgp_secret_armor, kt_pgp_secret_parse: the
 * node key as kontalkctl writes it and kontalkd reads it. */
static void test_secret_generated(void)
{
    EVP_PKEY *pk[2] = {EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"),
                       EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)};
    static const char *const what[2] = {"node-ed25519.sec.asc", "node-rsa.sec.asc"};
    for (int i = 0; i < 2; i++) {
        struct kt_pgp_key *node = NULL;
        if (!ok(pk[i] && kt_pgp_key_generate_from(pk[i], "kontalkd <node@kontalk.test>",
                                                  time(NULL) - 100, &node) == 0,
                "%s: generated", what[i]))
            continue;
        armor_round_trip(what[i], node, pk[i]);
        kt_pgp_key_free(&node);
    }
    EVP_PKEY_free(pk[0]);
    EVP_PKEY_free(pk[1]);
}

int main(void)
{
    dir = getenv("top_srcdir");
    if (dir == NULL) {
        ok(1, "# SKIP top_srcdir is not set: fixture tests need the test harness");
        return done_testing();
    }
    test_fingerprints();
    test_algorithms();
    test_revoked_expired();
    test_certification();
    test_packet_formats();
    test_armor();
    test_bad_input();
    test_create();
    test_secret_fixtures();
    test_secret_bad();
    test_secret_generated();
    return done_testing();
}
