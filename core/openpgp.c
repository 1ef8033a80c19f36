/* OpenPGP public keys with OpenSSL 3 only (RFC 4880 §4, §5.2, §5.5, §6, §11.1;
 * RFC 6637 for ECDSA/ECDH; EdDSA as GnuPG writes it: the point as an MPI
 * with a 0x40 prefix, the signature as two MPIs r and s).
 *
 * The parser reads untrusted bytes (a client's bridge certificate carries
 * its key), so every length is checked against what remains before it is
 * used, input is capped at KT_PGP_MAX_INPUT, and errors come back as
 * enum kt_pgp_err; nothing here asserts on input. A key is parsed into
 * plain structs that own copies of what verification needs (packet bodies,
 * hashed signature parts, MPIs), so the input buffer may be freed at once.
 *
 * Verification rebuilds an EVP_PKEY from the key packet each time; keys are
 * checked rarely (login, registration), so no cache is kept. Signatures are
 * hashed as §5.2.4 says: the signed key (0x99 || 2-byte length || body), the
 * subkey or user ID (0xB4 || 4-byte length || UID), the hashed part of the
 * signature, and the v4 trailer 0x04 0xFF || 4-byte length. */
#include "config.h"
#include <kontalk/openpgp.h>
#include <kontalk/scram.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

/* A key with more packets than this is refused (a flood of signatures). */
#define PGP_MAX_PACKETS 4096

const char *kt_pgp_strerror(enum kt_pgp_err err)
{
    switch (err) {
    case KT_PGP_OK:
        return "success";
    case KT_PGP_ERR_TRUNCATED:
        return "truncated input";
    case KT_PGP_ERR_MALFORMED:
        return "malformed packet";
    case KT_PGP_ERR_ARMOR:
        return "invalid ASCII armor";
    case KT_PGP_ERR_CRC:
        return "armor checksum mismatch";
    case KT_PGP_ERR_UNSUPPORTED:
        return "unsupported key version or algorithm";
    case KT_PGP_ERR_NO_KEY:
        return "no public key packet";
    case KT_PGP_ERR_TOO_LARGE:
        return "input too large";
    case KT_PGP_ERR_PROTECTED:
        return "secret key protected by a passphrase";
    }
    return "unknown error";
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Wipes a buffer that may have held secret key material. */
static void wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

/* ---- Armor ---- */

uint32_t kt_pgp_crc24(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xB704CEu;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint32_t)data[i] << 16;
        for (int b = 0; b < 8; b++) {
            crc <<= 1;
            if (crc & 0x1000000u)
                crc ^= 0x1864CFBu;
        }
    }
    return crc & 0xFFFFFFu;
}

/* Decodes base64 text of n characters (no whitespace) into out, which has
 * room for 3 * n / 4 bytes. Padding only at the end. Returns the byte
 * count or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
    /* The core's strict decoder (scram.c) wants a string. */
    char *text = kt_strndup(s, n);
    long got = kt_base64_decode(text, out, n / 4 * 3);
    free(text);
    return got;
}

/* Next line of text[*pos..len): sets *line and *n (without CR/LF and
 * trailing blanks), advances *pos. False at the end of input. */
static bool next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *n)
{
    if (*pos >= len)
        return false;
    size_t start = *pos, end = start;
    while (end < len && text[end] != '\n')
        end++;
    *pos = end < len ? end + 1 : end;
    while (end > start && (text[end - 1] == '\r' || text[end - 1] == ' ' || text[end - 1] == '\t'))
        end--;
    *line = text + start;
    *n = end - start;
    return true;
}

static bool line_is(const char *line, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    return n >= p && memcmp(line, prefix, p) == 0;
}

enum kt_pgp_err kt_pgp_dearmor(const char *text, size_t len, uint8_t **out_r, size_t *outlen_r,
                               char **type_r)
{
    static const char begin[] = "-----BEGIN ", end_[] = "-----END ";
    enum kt_pgp_err err = KT_PGP_ERR_ARMOR;
    const char *line = NULL;
    size_t n = 0, pos = 0;
    char *b64 = NULL, *type = NULL;
    uint8_t *out = NULL;
    size_t nb64 = 0;
    bool have_crc = false;
    uint8_t crc[3] = {0, 0, 0};

    *out_r = NULL;
    *outlen_r = 0;
    if (type_r)
        *type_r = NULL;
    if (len > 2 * (size_t)KT_PGP_MAX_INPUT)
        return KT_PGP_ERR_TOO_LARGE;
    /* Text before the armor is allowed (§6.2: "concatenated with other text"). */
    for (;;) {
        if (!next_line(text, len, &pos, &line, &n))
            return KT_PGP_ERR_ARMOR;
        if (line_is(line, n, begin))
            break;
    }
    if (n < sizeof(begin) - 1 + 5 || memcmp(line + n - 5, "-----", 5) != 0)
        return KT_PGP_ERR_ARMOR;
    type = kt_strndup(line + sizeof(begin) - 1, n - (sizeof(begin) - 1) - 5);

    /* Armor headers "Key: Value" up to a blank line; tolerate their absence. */
    size_t save = pos;
    if (next_line(text, len, &pos, &line, &n) && n > 0 && memchr(line, ':', n) != NULL) {
        while (next_line(text, len, &pos, &line, &n) && n > 0) {
            if (memchr(line, ':', n) == NULL)
                goto fail;
        }
    } else if (n != 0) {
        pos = save;
    }

    b64 = kt_malloc(len + 1);
    for (;;) {
        if (!next_line(text, len, &pos, &line, &n))
            goto fail; /* no END line */
        if (line_is(line, n, end_))
            break;
        if (have_crc)
            goto fail; /* only the END line may follow the checksum */
        if (n == 5 && line[0] == '=') {
            uint8_t tmp[3];
            if (b64_decode(line + 1, 4, tmp) != 3)
                goto fail;
            memcpy(crc, tmp, 3);
            have_crc = true;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')
                continue;
            b64[nb64++] = line[i];
        }
    }
    size_t tl = strlen(type);
    if (n != sizeof(end_) - 1 + tl + 5 || memcmp(line + sizeof(end_) - 1, type, tl) != 0 ||
        memcmp(line + n - 5, "-----", 5) != 0)
        goto fail;
    out = kt_malloc(nb64 / 4 * 3 + 1);
    long got = b64_decode(b64, nb64, out);
    if (got < 0)
        goto fail;
    if (have_crc) {
        uint32_t c = kt_pgp_crc24(out, (size_t)got);
        if (crc[0] != (uint8_t)(c >> 16) || crc[1] != (uint8_t)(c >> 8) || crc[2] != (uint8_t)c) {
            err = KT_PGP_ERR_CRC;
            goto fail;
        }
    }
    wipe(b64, nb64); /* it may be a secret key's */
    free(b64);
    *out_r = out;
    *outlen_r = (size_t)got;
    if (type_r)
        *type_r = type;
    else
        free(type);
    return KT_PGP_OK;
fail:
    wipe(b64, nb64);
    free(b64);
    wipe(out, out ? nb64 / 4 * 3 : 0);
    free(out);
    free(type);
    return err;
}

/* ---- Packets ---- */

/* Tags whose bodies may use partial lengths (§4.2.2.4). */
static bool partial_allowed(unsigned tag)
{
    return tag == 8 || tag == 9 || tag == 11 || tag == 18 || tag == 20;
}

void kt_pgp_packet_clear(struct kt_pgp_packet *pkt)
{
    free(pkt->owned);
    memset(pkt, 0, sizeof(*pkt));
}

/* Reads a new-format length at data[*p]; *partial is set for a partial
 * length (a power of two). */
static enum kt_pgp_err new_length(const uint8_t *data, size_t len, size_t *p, size_t *blen,
                                  bool *partial)
{
    *partial = false;
    if (*p >= len)
        return KT_PGP_ERR_TRUNCATED;
    uint8_t o1 = data[*p];
    if (o1 < 192) {
        *blen = o1;
        *p += 1;
    } else if (o1 < 224) {
        if (len - *p < 2)
            return KT_PGP_ERR_TRUNCATED;
        *blen = ((size_t)(o1 - 192) << 8) + data[*p + 1] + 192;
        *p += 2;
    } else if (o1 < 255) {
        *blen = (size_t)1 << (o1 & 0x1f);
        *partial = true;
        *p += 1;
    } else {
        if (len - *p < 5)
            return KT_PGP_ERR_TRUNCATED;
        *blen = be32(data + *p + 1);
        *p += 5;
    }
    return KT_PGP_OK;
}

enum kt_pgp_err kt_pgp_packet_next(const uint8_t *data, size_t len, size_t *off,
                                   struct kt_pgp_packet *pkt)
{
    size_t p = *off, blen = 0;
    enum kt_pgp_err err;

    memset(pkt, 0, sizeof(*pkt));
    if (p >= len)
        return KT_PGP_ERR_TRUNCATED;
    uint8_t ctb = data[p++];
    if (!(ctb & 0x80))
        return KT_PGP_ERR_MALFORMED;
    if (ctb & 0x40) {
        bool partial;
        pkt->new_format = true;
        pkt->tag = ctb & 0x3f;
        if (pkt->tag == 0)
            return KT_PGP_ERR_MALFORMED;
        if ((err = new_length(data, len, &p, &blen, &partial)) != KT_PGP_OK)
            return err;
        if (partial) {
            /* Join the chunks; the first must be at least 512 bytes. */
            if (!partial_allowed(pkt->tag) || blen < 512)
                return KT_PGP_ERR_MALFORMED;
            uint8_t *buf = NULL;
            size_t total = 0;
            for (;;) {
                if (blen > len - p) {
                    free(buf);
                    return KT_PGP_ERR_TRUNCATED;
                }
                buf = kt_realloc(buf, total + blen + 1);
                memcpy(buf + total, data + p, blen);
                total += blen;
                p += blen;
                if (!partial)
                    break;
                if ((err = new_length(data, len, &p, &blen, &partial)) != KT_PGP_OK) {
                    free(buf);
                    return err;
                }
            }
            pkt->owned = buf;
            pkt->body = buf;
            pkt->len = total;
            *off = p;
            return KT_PGP_OK;
        }
    } else {
        pkt->tag = (ctb >> 2) & 0x0f;
        if (pkt->tag == 0)
            return KT_PGP_ERR_MALFORMED;
        switch (ctb & 3) {
        case 0:
            if (len - p < 1)
                return KT_PGP_ERR_TRUNCATED;
            blen = data[p];
            p += 1;
            break;
        case 1:
            if (len - p < 2)
                return KT_PGP_ERR_TRUNCATED;
            blen = (size_t)data[p] << 8 | data[p + 1];
            p += 2;
            break;
        case 2:
            if (len - p < 4)
                return KT_PGP_ERR_TRUNCATED;
            blen = be32(data + p);
            p += 4;
            break;
        default: /* indeterminate: to the end of the input */
            blen = len - p;
            break;
        }
    }
    if (blen > len - p)
        return KT_PGP_ERR_TRUNCATED;
    pkt->body = data + p;
    pkt->len = blen;
    *off = p + blen;
    return KT_PGP_OK;
}

/* ---- Key material ---- */

struct mpi {
    const uint8_t *p; /* magnitude, big-endian, may start with zeros */
    size_t n;
    unsigned bits;
};

/* Reads an MPI (§3.2) at b[*o]. */
static bool read_mpi(const uint8_t *b, size_t len, size_t *o, struct mpi *m)
{
    if (len - *o < 2)
        return false;
    unsigned bits = (unsigned)b[*o] << 8 | b[*o + 1];
    size_t n = (bits + 7) / 8;
    if (len - *o - 2 < n)
        return false;
    m->p = b + *o + 2;
    m->n = n;
    m->bits = bits;
    *o += 2 + n;
    return true;
}

static const struct {
    enum kt_pgp_curve curve;
    const char *ossl; /* OpenSSL group name, NULL if not an ECDSA curve */
    unsigned bits;
    uint8_t len;
    uint8_t oid[10];
} curves[] = {
    {KT_PGP_CURVE_P256, "prime256v1", 256, 8, {0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}},
    {KT_PGP_CURVE_P384, "secp384r1", 384, 5, {0x2B, 0x81, 0x04, 0x00, 0x22}},
    {KT_PGP_CURVE_P521, "secp521r1", 521, 5, {0x2B, 0x81, 0x04, 0x00, 0x23}},
    {KT_PGP_CURVE_ED25519, NULL, 255, 9, {0x2B, 0x06, 0x01, 0x04, 0x01, 0xDA, 0x47, 0x0F, 0x01}},
    {KT_PGP_CURVE_CV25519, NULL, 255, 10,
     {0x2B, 0x06, 0x01, 0x04, 0x01, 0x97, 0x55, 0x01, 0x05, 0x01}},
};

/* The public parameters of a v4 key body, pointing into the body. */
struct material {
    struct mpi m[4]; /* RSA n e; DSA p q g y; Elgamal p g y; EC: m[0] = point */
    enum kt_pgp_curve curve;
    unsigned bits;
};

/* Reads the public parameters at the start of a v4 key body b[0..len) and
 * sets *used to the length they take (a secret-key body goes on after
 * them), or to 0 for an algorithm we do not know. */
static enum kt_pgp_err material_at(const uint8_t *b, size_t len, struct material *km, size_t *used)
{
    size_t o = 6, count = 0;
    memset(km, 0, sizeof(*km));
    *used = 0;
    if (len < 6)
        return KT_PGP_ERR_TRUNCATED;
    switch (b[5]) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_E:
    case KT_PGP_ALGO_RSA_S:
        count = 2;
        break;
    case KT_PGP_ALGO_DSA:
        count = 4;
        break;
    case KT_PGP_ALGO_ELGAMAL:
    case 20: /* Elgamal encrypt-or-sign, obsolete */
        count = 3;
        break;
    case KT_PGP_ALGO_ECDH:
    case KT_PGP_ALGO_ECDSA:
    case KT_PGP_ALGO_EDDSA: {
        if (len - o < 1)
            return KT_PGP_ERR_TRUNCATED;
        uint8_t ol = b[o++];
        if (ol == 0 || ol == 0xff)
            return KT_PGP_ERR_MALFORMED;
        if (len - o < ol)
            return KT_PGP_ERR_TRUNCATED;
        km->curve = KT_PGP_CURVE_OTHER;
        for (size_t i = 0; i < KT_ARRAY_SIZE(curves); i++) {
            if (curves[i].len == ol && memcmp(curves[i].oid, b + o, ol) == 0) {
                km->curve = curves[i].curve;
                km->bits = curves[i].bits;
            }
        }
        o += ol;
        if (!read_mpi(b, len, &o, &km->m[0]))
            return KT_PGP_ERR_TRUNCATED;
        if (b[5] == KT_PGP_ALGO_ECDH) {
            /* KDF parameters (RFC 6637 §9): length, 1, hash, cipher. */
            if (len - o < 1)
                return KT_PGP_ERR_TRUNCATED;
            uint8_t kl = b[o++];
            if (len - o < kl)
                return KT_PGP_ERR_TRUNCATED;
            if (kl < 3 || b[o] != 1)
                return KT_PGP_ERR_MALFORMED;
            o += kl;
        }
        *used = o;
        return KT_PGP_OK;
    }
    default:
        return KT_PGP_OK; /* unknown algorithm: kept, never verified */
    }
    for (size_t i = 0; i < count; i++) {
        if (!read_mpi(b, len, &o, &km->m[i]))
            return KT_PGP_ERR_TRUNCATED;
    }
    km->bits = km->m[0].bits;
    *used = o;
    return KT_PGP_OK;
}

/* The public parameters of a whole public key body: nothing may follow. */
static enum kt_pgp_err parse_material(const uint8_t *b, size_t len, struct material *km)
{
    size_t used = 0;
    enum kt_pgp_err err = material_at(b, len, km, &used);
    if (err == KT_PGP_OK && used != 0 && used != len)
        err = KT_PGP_ERR_MALFORMED;
    return err;
}

static void hash_key(EVP_MD_CTX *md, const struct kt_pgp_pubkey *k)
{
    uint8_t hdr[3] = {0x99, (uint8_t)(k->body_len >> 8), (uint8_t)k->body_len};
    EVP_DigestUpdate(md, hdr, 3);
    EVP_DigestUpdate(md, k->body, k->body_len);
}

static enum kt_pgp_err parse_pubkey(const uint8_t *b, size_t len, struct kt_pgp_pubkey *k)
{
    struct material km;
    enum kt_pgp_err err;

    memset(k, 0, sizeof(*k));
    if (len < 1)
        return KT_PGP_ERR_TRUNCATED;
    if (b[0] != 4)
        return KT_PGP_ERR_UNSUPPORTED;
    if (len > 0xffff)
        return KT_PGP_ERR_MALFORMED; /* the fingerprint hashes a 2-byte length */
    if ((err = parse_material(b, len, &km)) != KT_PGP_OK)
        return err;
    k->created = be32(b + 1);
    k->algo = b[5];
    k->curve = km.curve;
    k->bits = km.bits;
    k->body = kt_malloc(len);
    memcpy(k->body, b, len);
    k->body_len = len;

    EVP_MD_CTX *md = EVP_MD_CTX_new();
    kt_assert(md != NULL);
    unsigned dl = 0;
    if (EVP_DigestInit_ex(md, EVP_sha1(), NULL) != 1)
        kt_assert(!"SHA-1 unavailable");
    hash_key(md, k);
    EVP_DigestFinal_ex(md, k->fpr, &dl);
    EVP_MD_CTX_free(md);
    kt_assert(dl == 20);
    memcpy(k->keyid, k->fpr + 12, 8);
    return KT_PGP_OK;
}

/* ---- Signatures ---- */

static void sig_clear(struct kt_pgp_sig *s)
{
    free(s->revocation_reason);
    free(s->hashed);
    free(s->mpis);
    memset(s, 0, sizeof(*s));
}

/* Subpacket types whose meaning we honour or may safely ignore even when
 * marked critical. Others marked critical make the signature unusable
 * (§5.2.3.1). */
static bool subpacket_known(uint8_t type)
{
    switch (type) {
    case 2: case 3: case 4: case 5: case 7: case 9: case 11: case 12: case 16: case 21:
    case 22: case 23: case 24: case 25: case 26: case 27: case 28: case 29: case 30:
    case 31: case 32: case 33: case 34:
        return true;
    default:
        return false;
    }
}

static enum kt_pgp_err parse_subpackets(const uint8_t *b, size_t len, bool hashed,
                                        struct kt_pgp_sig *s)
{
    size_t o = 0;
    while (o < len) {
        size_t sl;
        uint8_t o1 = b[o];
        if (o1 < 192) {
            sl = o1;
            o += 1;
        } else if (o1 < 255) {
            if (len - o < 2)
                return KT_PGP_ERR_MALFORMED;
            sl = ((size_t)(o1 - 192) << 8) + b[o + 1] + 192;
            o += 2;
        } else {
            if (len - o < 5)
                return KT_PGP_ERR_MALFORMED;
            sl = be32(b + o + 1);
            o += 5;
        }
        if (sl == 0 || sl > len - o)
            return KT_PGP_ERR_MALFORMED;
        uint8_t type = b[o] & 0x7f;
        bool critical = b[o] & 0x80;
        const uint8_t *d = b + o + 1;
        size_t dl = sl - 1;
        o += sl;
        if (!hashed) {
            /* The unhashed area is not signed: take only the issuer hint. */
            if (type == 16 && dl == 8 && !s->has_issuer) {
                memcpy(s->issuer, d, 8);
                s->has_issuer = true;
            }
            continue;
        }
        if (critical && !subpacket_known(type))
            s->critical_unknown = true;
        switch (type) {
        case 2:
            if (dl != 4)
                return KT_PGP_ERR_MALFORMED;
            s->created = be32(d);
            break;
        case 3:
            if (dl != 4)
                return KT_PGP_ERR_MALFORMED;
            s->expires = be32(d);
            break;
        case 9:
            if (dl != 4)
                return KT_PGP_ERR_MALFORMED;
            s->key_expires = be32(d);
            break;
        case 16:
            if (dl != 8)
                return KT_PGP_ERR_MALFORMED;
            memcpy(s->issuer, d, 8);
            s->has_issuer = true;
            break;
        case 25:
            s->primary_uid = dl >= 1 && d[0] != 0;
            break;
        case 27:
            if (dl >= 1) {
                s->key_flags = d[0];
                s->has_key_flags = true;
            }
            break;
        case 29:
            if (dl < 1)
                return KT_PGP_ERR_MALFORMED;
            s->has_revocation_reason = true;
            s->revocation_code = d[0];
            free(s->revocation_reason);
            s->revocation_reason = kt_strndup((const char *)d + 1, dl - 1);
            break;
        case 33:
            /* Issuer fingerprint: a version octet, then 20 bytes for v4. */
            if (dl == 21 && d[0] == 4) {
                memcpy(s->issuer_fpr, d + 1, 20);
                s->has_issuer_fpr = true;
            }
            break;
        default:
            break;
        }
    }
    return KT_PGP_OK;
}

/* Parses a signature body. Returns KT_PGP_OK with s->hashed == NULL for a
 * signature of another version than 4, which the caller skips. */
static enum kt_pgp_err parse_sig(const uint8_t *b, size_t len, struct kt_pgp_sig *s)
{
    enum kt_pgp_err err;
    size_t o, hl, ul;

    memset(s, 0, sizeof(*s));
    if (len < 1)
        return KT_PGP_ERR_TRUNCATED;
    if (b[0] != 4)
        return KT_PGP_OK;
    if (len < 6)
        return KT_PGP_ERR_TRUNCATED;
    s->type = b[1];
    s->pk_algo = b[2];
    s->hash_algo = b[3];
    hl = (size_t)b[4] << 8 | b[5];
    if (len - 6 < hl)
        return KT_PGP_ERR_TRUNCATED;
    if ((err = parse_subpackets(b + 6, hl, true, s)) != KT_PGP_OK)
        goto fail;
    o = 6 + hl;
    if (len - o < 2) {
        err = KT_PGP_ERR_TRUNCATED;
        goto fail;
    }
    ul = (size_t)b[o] << 8 | b[o + 1];
    o += 2;
    if (len - o < ul) {
        err = KT_PGP_ERR_TRUNCATED;
        goto fail;
    }
    if ((err = parse_subpackets(b + o, ul, false, s)) != KT_PGP_OK)
        goto fail;
    o += ul;
    if (len - o < 2) {
        err = KT_PGP_ERR_TRUNCATED;
        goto fail;
    }
    s->digest_prefix[0] = b[o];
    s->digest_prefix[1] = b[o + 1];
    o += 2;
    /* The MPIs must be well-formed for the algorithms we know. */
    size_t count = 0, m = o;
    switch (s->pk_algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S:
        count = 1;
        break;
    case KT_PGP_ALGO_DSA:
    case KT_PGP_ALGO_ECDSA:
    case KT_PGP_ALGO_EDDSA:
        count = 2;
        break;
    default:
        m = len;
        break;
    }
    for (size_t i = 0; i < count; i++) {
        struct mpi x;
        if (!read_mpi(b, len, &m, &x)) {
            err = KT_PGP_ERR_TRUNCATED;
            goto fail;
        }
    }
    if (m != len) {
        err = KT_PGP_ERR_MALFORMED;
        goto fail;
    }
    if (s->has_issuer_fpr && !s->has_issuer) {
        memcpy(s->issuer, s->issuer_fpr + 12, 8);
        s->has_issuer = true;
    }
    s->hashed_len = 6 + hl;
    s->hashed = kt_malloc(s->hashed_len);
    memcpy(s->hashed, b, s->hashed_len);
    s->mpis_len = len - o;
    s->mpis = kt_malloc(s->mpis_len + 1);
    memcpy(s->mpis, b + o, s->mpis_len);
    return KT_PGP_OK;
fail:
    sig_clear(s);
    return err;
}

/* ---- Keys ---- */

static void pubkey_clear(struct kt_pgp_pubkey *k)
{
    for (size_t i = 0; i < k->nsigs; i++)
        sig_clear(&k->sigs[i]);
    free(k->sigs);
    free(k->body);
    memset(k, 0, sizeof(*k));
}

void kt_pgp_key_free(struct kt_pgp_key **keyp)
{
    if (keyp == NULL || *keyp == NULL)
        return;
    struct kt_pgp_key *key = *keyp;
    pubkey_clear(&key->primary);
    for (size_t i = 0; i < key->nsigs; i++)
        sig_clear(&key->sigs[i]);
    free(key->sigs);
    for (size_t i = 0; i < key->nuids; i++) {
        for (size_t j = 0; j < key->uids[i].nsigs; j++)
            sig_clear(&key->uids[i].sigs[j]);
        free(key->uids[i].sigs);
        free(key->uids[i].uid);
    }
    free(key->uids);
    for (size_t i = 0; i < key->nsubkeys; i++)
        pubkey_clear(&key->subkeys[i]);
    free(key->subkeys);
    free(key->raw);
    free(key);
    *keyp = NULL;
}

static void sig_append(struct kt_pgp_sig **arr, size_t *n, struct kt_pgp_sig *s)
{
    *arr = kt_realloc(*arr, (*n + 1) * sizeof(**arr));
    (*arr)[(*n)++] = *s;
}

static bool is_armored(const uint8_t *d, size_t len)
{
    size_t i = 0;
    while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
        i++;
    return len - i >= 5 && memcmp(d + i, "-----", 5) == 0;
}

/* The binary packets of data: dearmored if armored with `armor_type`, else
 * copied. *bin_r (kt_malloc) is NULL on error; empty input is NO_KEY. */
static enum kt_pgp_err load_input(const void *data, size_t len, const char *armor_type,
                                  uint8_t **bin_r, size_t *blen_r)
{
    enum kt_pgp_err err;
    uint8_t *bin = NULL;
    size_t blen = 0;

    *bin_r = NULL;
    *blen_r = 0;
    if (len > KT_PGP_MAX_INPUT)
        return KT_PGP_ERR_TOO_LARGE;
    if (is_armored(data, len)) {
        char *type = NULL;
        if ((err = kt_pgp_dearmor(data, len, &bin, &blen, &type)) != KT_PGP_OK)
            return err;
        bool right = strcmp(type, armor_type) == 0;
        free(type);
        if (!right) {
            wipe(bin, blen);
            free(bin);
            return KT_PGP_ERR_NO_KEY;
        }
    } else {
        bin = kt_malloc(len + 1);
        memcpy(bin, data, len);
        blen = len;
    }
    if (blen == 0) {
        free(bin);
        return KT_PGP_ERR_NO_KEY;
    }
    *bin_r = bin;
    *blen_r = blen;
    return KT_PGP_OK;
}

enum kt_pgp_err kt_pgp_key_parse(const void *data, size_t len, struct kt_pgp_key **key_r)
{
    enum kt_pgp_err err;
    struct kt_pgp_key *key = NULL;
    uint8_t *bin = NULL;
    size_t blen = 0, off = 0, npackets = 0;
    struct kt_pgp_packet pkt;
    /* Where signatures go: 0 = the key, 1 = last UID, 2 = last subkey,
     * 3 = nowhere (after a user attribute). */
    int target = 0;

    *key_r = NULL;
    memset(&pkt, 0, sizeof(pkt));
    if ((err = load_input(data, len, "PGP PUBLIC KEY BLOCK", &bin, &blen)) != KT_PGP_OK)
        return err;
    if ((err = kt_pgp_packet_next(bin, blen, &off, &pkt)) != KT_PGP_OK)
        goto fail;
    if (pkt.tag != 6) {
        err = KT_PGP_ERR_NO_KEY;
        goto fail;
    }
    key = kt_new(struct kt_pgp_key);
    if ((err = parse_pubkey(pkt.body, pkt.len, &key->primary)) != KT_PGP_OK)
        goto fail;
    kt_pgp_packet_clear(&pkt);

    size_t end = off;
    while (off < blen) {
        size_t at = off;
        if (++npackets > PGP_MAX_PACKETS) {
            err = KT_PGP_ERR_TOO_LARGE;
            goto fail;
        }
        if ((err = kt_pgp_packet_next(bin, blen, &off, &pkt)) != KT_PGP_OK)
            goto fail;
        if (pkt.tag == 6 || pkt.tag == 5) {
            off = at; /* the next key starts here */
            kt_pgp_packet_clear(&pkt);
            break;
        }
        switch (pkt.tag) {
        case 2: {
            struct kt_pgp_sig s;
            if ((err = parse_sig(pkt.body, pkt.len, &s)) != KT_PGP_OK)
                goto fail;
            if (s.hashed == NULL)
                break; /* not v4 */
            if (target == 0)
                sig_append(&key->sigs, &key->nsigs, &s);
            else if (target == 1)
                sig_append(&key->uids[key->nuids - 1].sigs, &key->uids[key->nuids - 1].nsigs, &s);
            else if (target == 2)
                sig_append(&key->subkeys[key->nsubkeys - 1].sigs,
                           &key->subkeys[key->nsubkeys - 1].nsigs, &s);
            else
                sig_clear(&s);
            break;
        }
        case 13: {
            key->uids = kt_realloc(key->uids, (key->nuids + 1) * sizeof(*key->uids));
            struct kt_pgp_uid *u = &key->uids[key->nuids++];
            u->uid = kt_malloc(pkt.len + 1);
            memcpy(u->uid, pkt.body, pkt.len);
            u->uid[pkt.len] = '\0';
            u->len = pkt.len;
            u->sigs = NULL;
            u->nsigs = 0;
            u->raw_end = off;
            target = 1;
            break;
        }
        case 14: {
            struct kt_pgp_pubkey sub;
            if ((err = parse_pubkey(pkt.body, pkt.len, &sub)) != KT_PGP_OK)
                goto fail;
            key->subkeys = kt_realloc(key->subkeys, (key->nsubkeys + 1) * sizeof(*key->subkeys));
            key->subkeys[key->nsubkeys++] = sub;
            target = 2;
            break;
        }
        case 17: /* user attribute (photo): its signatures are skipped too */
            target = 3;
            break;
        default: /* trust, marker and unknown packets */
            break;
        }
        kt_pgp_packet_clear(&pkt);
        if (target == 1)
            key->uids[key->nuids - 1].raw_end = off;
        end = off;
    }
    key->raw = kt_malloc(end);
    memcpy(key->raw, bin, end);
    key->raw_len = end;
    free(bin);
    *key_r = key;
    return KT_PGP_OK;
fail:
    kt_pgp_packet_clear(&pkt);
    kt_pgp_key_free(&key);
    free(bin);
    return err;
}

void kt_pgp_fpr_hex(const uint8_t fpr[20], char out[41])
{
    static const char hex[] = "0123456789ABCDEF";
    for (int i = 0; i < 20; i++) {
        out[2 * i] = hex[fpr[i] >> 4];
        out[2 * i + 1] = hex[fpr[i] & 15];
    }
    out[40] = '\0';
}

/* ---- Verification ---- */

static const EVP_MD *hash_md(uint8_t algo)
{
    switch (algo) {
    case KT_PGP_HASH_SHA1:
        return EVP_sha1();
    case KT_PGP_HASH_SHA256:
        return EVP_sha256();
    case KT_PGP_HASH_SHA384:
        return EVP_sha384();
    case KT_PGP_HASH_SHA512:
        return EVP_sha512();
    case KT_PGP_HASH_SHA224:
        return EVP_sha224();
    default:
        return NULL; /* MD5, RIPEMD-160 and unknown ids are refused */
    }
}

/* An OpenSSL key of `type` ("RSA", "DSA", "EC") from the parameters in bld;
 * selection is EVP_PKEY_PUBLIC_KEY or EVP_PKEY_KEYPAIR. NULL on failure. */
static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld, int selection)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, selection, params) != 1)
        pkey = NULL;
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* An EVP_PKEY for a signing key, or NULL (unknown algorithm or curve,
 * parameters OpenSSL rejects). */
static EVP_PKEY *pubkey_evp(const struct kt_pgp_pubkey *k)
{
    struct material km;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    BIGNUM *bn[4] = {NULL, NULL, NULL, NULL};
    const char *type = NULL;

    if (parse_material(k->body, k->body_len, &km) != KT_PGP_OK)
        return NULL;
    /* Factorable or breakable sizes never verify. */
    if ((k->algo == KT_PGP_ALGO_RSA || k->algo == KT_PGP_ALGO_RSA_S || k->algo == KT_PGP_ALGO_DSA) &&
        km.bits < 1024)
        return NULL;
    if (k->algo == KT_PGP_ALGO_EDDSA) {
        /* GnuPG: the 32-byte point prefixed with 0x40 (native encoding). */
        if (km.curve != KT_PGP_CURVE_ED25519 || km.m[0].n != 33 || km.m[0].p[0] != 0x40)
            return NULL;
        return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, km.m[0].p + 1, 32);
    }
    bld = OSSL_PARAM_BLD_new();
    kt_assert(bld != NULL);
    switch (k->algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S:
        type = "RSA";
        bn[0] = BN_bin2bn(km.m[0].p, (int)km.m[0].n, NULL);
        bn[1] = BN_bin2bn(km.m[1].p, (int)km.m[1].n, NULL);
        if (!bn[0] || !bn[1] || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn[0]) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn[1]))
            goto done;
        break;
    case KT_PGP_ALGO_DSA: {
        static const char *const names[4] = {OSSL_PKEY_PARAM_FFC_P, OSSL_PKEY_PARAM_FFC_Q,
                                             OSSL_PKEY_PARAM_FFC_G, OSSL_PKEY_PARAM_PUB_KEY};
        type = "DSA";
        for (int i = 0; i < 4; i++) {
            bn[i] = BN_bin2bn(km.m[i].p, (int)km.m[i].n, NULL);
            if (!bn[i] || !OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i]))
                goto done;
        }
        break;
    }
    case KT_PGP_ALGO_ECDSA: {
        const char *group = NULL;
        for (size_t i = 0; i < KT_ARRAY_SIZE(curves); i++) {
            if (curves[i].curve == km.curve)
                group = curves[i].ossl;
        }
        if (group == NULL)
            goto done;
        type = "EC";
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, km.m[0].p, km.m[0].n))
            goto done;
        break;
    }
    default:
        goto done;
    }
    pkey = pkey_from_params(type, bld, EVP_PKEY_PUBLIC_KEY);
done:
    for (int i = 0; i < 4; i++)
        BN_free(bn[i]);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/* Copies an MPI right-aligned into out[0..n); false if it does not fit. */
static bool mpi_fixed(const struct mpi *m, uint8_t *out, size_t n)
{
    size_t skip = 0;
    while (skip < m->n && m->p[skip] == 0)
        skip++;
    if (m->n - skip > n)
        return false;
    memset(out, 0, n);
    memcpy(out + n - (m->n - skip), m->p + skip, m->n - skip);
    return true;
}

/* DER of SEQUENCE { INTEGER r, INTEGER s } for DSA and ECDSA; *der_r is
 * OpenSSL-allocated. Returns the length or -1. */
static int dsa_der(const struct mpi *r, const struct mpi *s, uint8_t **der_r)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *br = BN_bin2bn(r->p, (int)r->n, NULL), *bs = BN_bin2bn(s->p, (int)s->n, NULL);
    int n = -1;
    *der_r = NULL;
    if (sig == NULL || br == NULL || bs == NULL) {
        BN_free(br);
        BN_free(bs);
        ECDSA_SIG_free(sig);
        return -1;
    }
    ECDSA_SIG_set0(sig, br, bs); /* takes br, bs */
    n = i2d_ECDSA_SIG(sig, der_r);
    ECDSA_SIG_free(sig);
    return n;
}

/* Checks the signature MPIs of `sig` over `digest` with key `k`. */
static bool verify_digest(const struct kt_pgp_sig *sig, const struct kt_pgp_pubkey *k,
                          const EVP_MD *md, const uint8_t *digest, size_t dlen)
{
    struct mpi m[2];
    size_t o = 0;
    bool good = false;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_MD_CTX *mdctx = NULL;
    uint8_t *buf = NULL;

    if (sig->pk_algo != k->algo && !(k->algo == KT_PGP_ALGO_RSA && sig->pk_algo == KT_PGP_ALGO_RSA_S))
        return false;
    if (!read_mpi(sig->mpis, sig->mpis_len, &o, &m[0]))
        return false;
    if (sig->pk_algo != KT_PGP_ALGO_RSA && sig->pk_algo != KT_PGP_ALGO_RSA_S &&
        !read_mpi(sig->mpis, sig->mpis_len, &o, &m[1]))
        return false;
    if ((pkey = pubkey_evp(k)) == NULL)
        return false;
    switch (sig->pk_algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S: {
        int size = EVP_PKEY_get_size(pkey);
        if (size <= 0)
            break;
        buf = kt_malloc((size_t)size);
        if (!mpi_fixed(&m[0], buf, (size_t)size))
            break;
        ctx = EVP_PKEY_CTX_new(pkey, NULL);
        good = ctx && EVP_PKEY_verify_init(ctx) == 1 &&
               EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
               EVP_PKEY_CTX_set_signature_md(ctx, md) == 1 &&
               EVP_PKEY_verify(ctx, buf, (size_t)size, digest, dlen) == 1;
        break;
    }
    case KT_PGP_ALGO_DSA:
    case KT_PGP_ALGO_ECDSA: {
        /* OpenSSL truncates the digest to the size of q (or the order). */
        int n = dsa_der(&m[0], &m[1], &buf);
        ctx = EVP_PKEY_CTX_new(pkey, NULL);
        good = n > 0 && ctx && EVP_PKEY_verify_init(ctx) == 1 &&
               EVP_PKEY_verify(ctx, buf, (size_t)n, digest, dlen) == 1;
        OPENSSL_free(buf);
        buf = NULL;
        break;
    }
    case KT_PGP_ALGO_EDDSA: {
        /* GnuPG signs the digest itself as the EdDSA message. */
        uint8_t rs[64];
        if (!mpi_fixed(&m[0], rs, 32) || !mpi_fixed(&m[1], rs + 32, 32))
            break;
        mdctx = EVP_MD_CTX_new();
        good = mdctx && EVP_DigestVerifyInit(mdctx, NULL, NULL, NULL, pkey) == 1 &&
               EVP_DigestVerify(mdctx, rs, 64, digest, dlen) == 1;
        break;
    }
    default:
        break;
    }
    free(buf);
    EVP_MD_CTX_free(mdctx);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return good;
}

/* The digest of a v4 signature whose hashed part (version through hashed
 * subpackets) is `hashed`, over `key` and a subkey or a UID (§5.2.4). */
static bool sig_digest(const EVP_MD *md, const uint8_t *hashed, size_t hashed_len,
                       const struct kt_pgp_pubkey *key, const struct kt_pgp_pubkey *sub,
                       const struct kt_pgp_uid *uid, uint8_t *digest, unsigned *dlen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    kt_assert(ctx != NULL);
    if (EVP_DigestInit_ex(ctx, md, NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return false;
    }
    hash_key(ctx, key);
    if (sub)
        hash_key(ctx, sub);
    if (uid) {
        uint8_t hdr[5] = {0xB4, (uint8_t)(uid->len >> 24), (uint8_t)(uid->len >> 16),
                          (uint8_t)(uid->len >> 8), (uint8_t)uid->len};
        EVP_DigestUpdate(ctx, hdr, 5);
        EVP_DigestUpdate(ctx, uid->uid, uid->len);
    }
    EVP_DigestUpdate(ctx, hashed, hashed_len);
    uint8_t trailer[6] = {0x04, 0xFF, (uint8_t)(hashed_len >> 24), (uint8_t)(hashed_len >> 16),
                          (uint8_t)(hashed_len >> 8), (uint8_t)hashed_len};
    EVP_DigestUpdate(ctx, trailer, 6);
    bool done = EVP_DigestFinal_ex(ctx, digest, dlen) == 1;
    EVP_MD_CTX_free(ctx);
    return done;
}

/* Verifies `sig`, made by `signer`, over `key` and either a subkey or a UID
 * (or neither, for direct-key and key revocation signatures). */
static bool sig_check(const struct kt_pgp_sig *sig, const struct kt_pgp_pubkey *signer,
                      const struct kt_pgp_pubkey *key, const struct kt_pgp_pubkey *sub,
                      const struct kt_pgp_uid *uid)
{
    const EVP_MD *md = hash_md(sig->hash_algo);
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;

    if (md == NULL || sig->critical_unknown || sig->hashed == NULL)
        return false;
    if (!sig_digest(md, sig->hashed, sig->hashed_len, key, sub, uid, digest, &dlen))
        return false;
    /* The 16-bit prefix is a quick check, not a security measure. */
    if (digest[0] != sig->digest_prefix[0] || digest[1] != sig->digest_prefix[1])
        return false;
    return verify_digest(sig, signer, md, digest, dlen);
}

static bool sig_by(const struct kt_pgp_sig *sig, const struct kt_pgp_pubkey *k)
{
    if (sig->has_issuer_fpr)
        return memcmp(sig->issuer_fpr, k->fpr, 20) == 0;
    return sig->has_issuer && memcmp(sig->issuer, k->keyid, 8) == 0;
}

static bool is_cert(uint8_t type)
{
    return type >= KT_PGP_SIG_CERT_GENERIC && type <= KT_PGP_SIG_CERT_POSITIVE;
}

static int set_status(struct kt_pgp_sig *s, bool good)
{
    s->status = good ? KT_PGP_SIG_GOOD : KT_PGP_SIG_BAD;
    return good ? 0 : 1;
}

int kt_pgp_key_verify(struct kt_pgp_key *key)
{
    const struct kt_pgp_pubkey *pk = &key->primary;
    int bad = 0;

    for (size_t i = 0; i < key->nsigs; i++) {
        struct kt_pgp_sig *s = &key->sigs[i];
        if (!sig_by(s, pk))
            continue;
        if (s->type == KT_PGP_SIG_DIRECT_KEY || s->type == KT_PGP_SIG_KEY_REVOCATION)
            bad += set_status(s, sig_check(s, pk, pk, NULL, NULL));
        else
            bad += set_status(s, false);
    }
    for (size_t u = 0; u < key->nuids; u++) {
        for (size_t i = 0; i < key->uids[u].nsigs; i++) {
            struct kt_pgp_sig *s = &key->uids[u].sigs[i];
            if (!sig_by(s, pk))
                continue;
            if (is_cert(s->type) || s->type == KT_PGP_SIG_CERT_REVOCATION)
                bad += set_status(s, sig_check(s, pk, pk, NULL, &key->uids[u]));
            else
                bad += set_status(s, false);
        }
    }
    for (size_t k = 0; k < key->nsubkeys; k++) {
        struct kt_pgp_pubkey *sub = &key->subkeys[k];
        for (size_t i = 0; i < sub->nsigs; i++) {
            struct kt_pgp_sig *s = &sub->sigs[i];
            if (!sig_by(s, pk))
                continue;
            if (s->type == KT_PGP_SIG_SUBKEY_BINDING || s->type == KT_PGP_SIG_SUBKEY_REVOCATION)
                bad += set_status(s, sig_check(s, pk, pk, sub, NULL));
            else
                bad += set_status(s, false);
        }
    }
    return bad;
}

bool kt_pgp_key_revoked(const struct kt_pgp_key *key)
{
    for (size_t i = 0; i < key->nsigs; i++) {
        if (key->sigs[i].type == KT_PGP_SIG_KEY_REVOCATION && key->sigs[i].status == KT_PGP_SIG_GOOD)
            return true;
    }
    return false;
}

int64_t kt_pgp_key_expiry(const struct kt_pgp_key *key)
{
    const struct kt_pgp_sig *best = NULL;

    for (size_t i = 0; i < key->nsigs; i++) {
        const struct kt_pgp_sig *s = &key->sigs[i];
        if (s->type == KT_PGP_SIG_DIRECT_KEY && s->status == KT_PGP_SIG_GOOD &&
            (best == NULL || s->created > best->created))
            best = s;
    }
    for (size_t u = 0; u < key->nuids; u++) {
        for (size_t i = 0; i < key->uids[u].nsigs; i++) {
            const struct kt_pgp_sig *s = &key->uids[u].sigs[i];
            if (is_cert(s->type) && s->status == KT_PGP_SIG_GOOD &&
                (best == NULL || s->created > best->created))
                best = s;
        }
    }
    if (best == NULL)
        return -1;
    if (best->key_expires == 0)
        return 0;
    return (int64_t)key->primary.created + best->key_expires;
}

bool kt_pgp_key_invalid(const struct kt_pgp_key *key, time_t now)
{
    int64_t exp = kt_pgp_key_expiry(key);
    return exp < 0 || kt_pgp_key_revoked(key) || (exp > 0 && (int64_t)now >= exp);
}

bool kt_pgp_subkey_bound(const struct kt_pgp_key *key, size_t i)
{
    bool bound = false;
    if (i >= key->nsubkeys)
        return false;
    const struct kt_pgp_pubkey *sub = &key->subkeys[i];
    for (size_t j = 0; j < sub->nsigs; j++) {
        if (sub->sigs[j].status != KT_PGP_SIG_GOOD)
            continue;
        if (sub->sigs[j].type == KT_PGP_SIG_SUBKEY_REVOCATION)
            return false;
        if (sub->sigs[j].type == KT_PGP_SIG_SUBKEY_BINDING)
            bound = true;
    }
    return bound;
}

bool kt_pgp_uid_certified_by(const struct kt_pgp_key *key, size_t uid_index,
                             const struct kt_pgp_key *signer, time_t now)
{
    const struct kt_pgp_pubkey *sp = &signer->primary;
    uint32_t newest_cert = 0, newest_rev = 0;
    bool certified = false, revoked = false;

    if (uid_index >= key->nuids)
        return false;
    const struct kt_pgp_uid *uid = &key->uids[uid_index];
    for (size_t i = 0; i < uid->nsigs; i++) {
        const struct kt_pgp_sig *s = &uid->sigs[i];
        if (!sig_by(s, sp) || !(is_cert(s->type) || s->type == KT_PGP_SIG_CERT_REVOCATION))
            continue;
        if (s->expires != 0 && (int64_t)now >= (int64_t)s->created + s->expires)
            continue;
        if (s->created < key->primary.created)
            continue; /* older than the key it certifies (GnuPG: "time conflict") */
        if (!sig_check(s, sp, &key->primary, NULL, uid))
            continue;
        if (s->type == KT_PGP_SIG_CERT_REVOCATION) {
            revoked = true;
            if (s->created > newest_rev)
                newest_rev = s->created;
        } else {
            certified = true;
            if (s->created > newest_cert)
                newest_cert = s->created;
        }
    }
    /* A revocation at or after the newest certification cancels it. */
    return certified && !(revoked && newest_rev >= newest_cert);
}

/* ---- Creation ---- */

/* A growable byte buffer for building packets. */
struct obuf {
    uint8_t *p;
    size_t n, cap;
};

static void ob_put(struct obuf *b, const void *d, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = kt_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void ob_byte(struct obuf *b, uint8_t v)
{
    ob_put(b, &v, 1);
}

static void ob_be32(struct obuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    ob_put(b, x, 4);
}

/* Writes an MPI of the big-endian magnitude d[0..n), leading zeros dropped. */
static void ob_mpi(struct obuf *b, const uint8_t *d, size_t n)
{
    while (n > 0 && d[0] == 0) {
        d++;
        n--;
    }
    unsigned bits = 0;
    if (n > 0) {
        bits = (unsigned)(n - 1) * 8;
        for (uint8_t top = d[0]; top; top >>= 1)
            bits++;
    }
    ob_byte(b, (uint8_t)(bits >> 8));
    ob_byte(b, (uint8_t)bits);
    ob_put(b, d, n);
}

/* A new-format packet header (§4.2.2) for `tag` and a body of `len` bytes. */
static void ob_header(struct obuf *b, unsigned tag, size_t len)
{
    ob_byte(b, (uint8_t)(0xC0 | tag));
    if (len < 192) {
        ob_byte(b, (uint8_t)len);
    } else if (len < 8384) {
        ob_byte(b, (uint8_t)(((len - 192) >> 8) + 192));
        ob_byte(b, (uint8_t)(len - 192));
    } else {
        ob_byte(b, 255);
        ob_be32(b, (uint32_t)len);
    }
}

/* Writes bn as an MPI; the scratch copy is wiped (bn may be secret). */
static void ob_bn(struct obuf *b, const BIGNUM *bn)
{
    int n = BN_num_bytes(bn);
    uint8_t *tmp = kt_malloc((size_t)n + 1);
    BN_bn2bin(bn, tmp);
    ob_mpi(b, tmp, (size_t)n);
    OPENSSL_cleanse(tmp, (size_t)n);
    free(tmp);
}

static bool ob_bn_mpi(struct obuf *b, EVP_PKEY *pkey, const char *name)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1)
        return false;
    ob_bn(b, bn);
    BN_clear_free(bn);
    return true;
}

/* The v4 public key packet body of `pkey` (RSA or Ed25519). */
static bool key_body(EVP_PKEY *pkey, uint32_t created, struct obuf *b)
{
    ob_byte(b, 4);
    ob_be32(b, created);
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        ob_byte(b, KT_PGP_ALGO_RSA);
        return ob_bn_mpi(b, pkey, OSSL_PKEY_PARAM_RSA_N) &&
               ob_bn_mpi(b, pkey, OSSL_PKEY_PARAM_RSA_E);
    }
    if (EVP_PKEY_is_a(pkey, "ED25519")) {
        uint8_t pt[33];
        size_t n = 32;
        if (EVP_PKEY_get_raw_public_key(pkey, pt + 1, &n) != 1 || n != 32)
            return false;
        pt[0] = 0x40;
        ob_byte(b, KT_PGP_ALGO_EDDSA);
        ob_byte(b, curves[3].len);
        ob_put(b, curves[3].oid, curves[3].len);
        /* Always 263 bits: the 0x40 prefix fixes the top bit. */
        ob_byte(b, 0x01);
        ob_byte(b, 0x07);
        ob_put(b, pt, 33);
        return true;
    }
    return false;
}

/* Signs with `pkey` (public half: `signer`) a signature of `type` over
 * `key` and `uid`, created at `now`, with `extra` hashed subpackets after
 * creation time and issuer fingerprint. Appends the whole packet to out. */
static bool make_sig(EVP_PKEY *pkey, const struct kt_pgp_pubkey *signer, uint8_t type,
                     const struct kt_pgp_pubkey *key, const struct kt_pgp_uid *uid, uint32_t now,
                     const uint8_t *extra, size_t extra_len, struct obuf *out)
{
    bool eddsa = signer->algo == KT_PGP_ALGO_EDDSA, ecdsa = signer->algo == KT_PGP_ALGO_ECDSA;
    uint8_t hash = eddsa ? KT_PGP_HASH_SHA512 : KT_PGP_HASH_SHA256;
    /* ECDSA: a hash as strong as the curve (RFC 6637 §12.2.1). */
    if (ecdsa && signer->curve == KT_PGP_CURVE_P384)
        hash = KT_PGP_HASH_SHA384;
    else if (ecdsa && signer->curve == KT_PGP_CURVE_P521)
        hash = KT_PGP_HASH_SHA512;
    const EVP_MD *md = hash_md(hash);
    struct obuf h = {0}, body = {0};
    uint8_t digest[EVP_MAX_MD_SIZE], *sig = NULL;
    unsigned dlen = 0;
    size_t siglen = 0;
    bool good = false;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_MD_CTX *mdctx = NULL;
    ECDSA_SIG *ecsig = NULL;

    ob_byte(&h, 4);
    ob_byte(&h, type);
    ob_byte(&h, signer->algo);
    ob_byte(&h, hash);
    size_t hl = 6 + 23 + extra_len;
    ob_byte(&h, (uint8_t)(hl >> 8));
    ob_byte(&h, (uint8_t)hl);
    ob_byte(&h, 5);
    ob_byte(&h, 2); /* signature creation time */
    ob_be32(&h, now);
    ob_byte(&h, 22);
    ob_byte(&h, 33); /* issuer fingerprint, v4 */
    ob_byte(&h, 4);
    ob_put(&h, signer->fpr, 20);
    if (extra_len)
        ob_put(&h, extra, extra_len);
    if (!sig_digest(md, h.p, h.n, key, NULL, uid, digest, &dlen))
        goto done;

    if (eddsa) {
        /* GnuPG's EdDSA: the digest is the message; r and s as MPIs. */
        mdctx = EVP_MD_CTX_new();
        siglen = 64;
        sig = kt_malloc(siglen);
        if (!mdctx || EVP_DigestSignInit(mdctx, NULL, NULL, NULL, pkey) != 1 ||
            EVP_DigestSign(mdctx, sig, &siglen, digest, dlen) != 1 || siglen != 64)
            goto done;
    } else if (ecdsa) {
        /* OpenSSL gives DER; OpenPGP wants r and s as two MPIs. */
        ctx = EVP_PKEY_CTX_new(pkey, NULL);
        if (!ctx || EVP_PKEY_sign_init(ctx) != 1 ||
            EVP_PKEY_sign(ctx, NULL, &siglen, digest, dlen) != 1)
            goto done;
        sig = kt_malloc(siglen);
        if (EVP_PKEY_sign(ctx, sig, &siglen, digest, dlen) != 1)
            goto done;
        const uint8_t *der = sig;
        ecsig = d2i_ECDSA_SIG(NULL, &der, (long)siglen);
        if (ecsig == NULL)
            goto done;
    } else {
        ctx = EVP_PKEY_CTX_new(pkey, NULL);
        if (!ctx || EVP_PKEY_sign_init(ctx) != 1 ||
            EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
            EVP_PKEY_CTX_set_signature_md(ctx, md) != 1 ||
            EVP_PKEY_sign(ctx, NULL, &siglen, digest, dlen) != 1)
            goto done;
        sig = kt_malloc(siglen);
        if (EVP_PKEY_sign(ctx, sig, &siglen, digest, dlen) != 1)
            goto done;
    }
    ob_put(&body, h.p, h.n);
    ob_byte(&body, 0);
    ob_byte(&body, 10); /* unhashed: issuer key ID, for older readers */
    ob_byte(&body, 9);
    ob_byte(&body, 16);
    ob_put(&body, signer->keyid, 8);
    ob_put(&body, digest, 2);
    if (eddsa) {
        ob_mpi(&body, sig, 32);
        ob_mpi(&body, sig + 32, 32);
    } else if (ecdsa) {
        ob_bn(&body, ECDSA_SIG_get0_r(ecsig));
        ob_bn(&body, ECDSA_SIG_get0_s(ecsig));
    } else {
        ob_mpi(&body, sig, siglen);
    }
    ob_header(out, 2, body.n);
    ob_put(out, body.p, body.n);
    good = true;
done:
    free(h.p);
    free(body.p);
    free(sig);
    ECDSA_SIG_free(ecsig);
    EVP_PKEY_CTX_free(ctx);
    EVP_MD_CTX_free(mdctx);
    return good;
}

int kt_pgp_key_generate_from(EVP_PKEY *pkey, const char *uid, time_t created,
                             struct kt_pgp_key **key_r)
{
    struct obuf kb = {0}, out = {0};
    struct kt_pgp_pubkey pub;
    struct kt_pgp_uid u;
    static const uint8_t flags[3] = {2, 27, KT_PGP_FLAG_CERTIFY | KT_PGP_FLAG_SIGN};
    int rc = -1;

    *key_r = NULL;
    memset(&pub, 0, sizeof(pub));
    if (!key_body(pkey, (uint32_t)created, &kb) ||
        parse_pubkey(kb.p, kb.n, &pub) != KT_PGP_OK)
        goto fail;
    memset(&u, 0, sizeof(u));
    u.uid = (char *)uid;
    u.len = strlen(uid);
    ob_header(&out, 6, kb.n);
    ob_put(&out, kb.p, kb.n);
    ob_header(&out, 13, u.len);
    ob_put(&out, uid, u.len);
    if (!make_sig(pkey, &pub, KT_PGP_SIG_CERT_POSITIVE, &pub, &u, (uint32_t)created, flags,
                  sizeof(flags), &out))
        goto fail;
    if (kt_pgp_key_parse(out.p, out.n, key_r) != KT_PGP_OK)
        goto fail;
    if (kt_pgp_key_verify(*key_r) != 0) {
        kt_pgp_key_free(key_r); /* pkey's private half does not match its public half */
        goto fail;
    }
    rc = 0;
fail:
    pubkey_clear(&pub);
    free(kb.p);
    free(out.p);
    return rc;
}

int kt_pgp_uid_certify(struct kt_pgp_key *key, size_t uid_index, const struct kt_pgp_key *signer,
                       EVP_PKEY *pkey, time_t now)
{
    struct obuf out = {0};
    struct kt_pgp_key *fresh = NULL;
    EVP_PKEY *pub = NULL;
    int rc = -1;

    if (uid_index >= key->nuids)
        return -1;
    pub = pubkey_evp(&signer->primary);
    if (pub == NULL || EVP_PKEY_eq(pub, pkey) != 1)
        goto fail;
    const struct kt_pgp_uid *uid = &key->uids[uid_index];
    size_t at = uid->raw_end;
    kt_assert(at <= key->raw_len);
    ob_put(&out, key->raw, at);
    if (!make_sig(pkey, &signer->primary, KT_PGP_SIG_CERT_GENERIC, &key->primary, uid,
                  (uint32_t)now, NULL, 0, &out))
        goto fail;
    ob_put(&out, key->raw + at, key->raw_len - at);
    if (kt_pgp_key_parse(out.p, out.n, &fresh) != KT_PGP_OK)
        goto fail;
    /* Swap the contents so the caller's pointer stays valid. */
    struct kt_pgp_key tmp = *key;
    *key = *fresh;
    *fresh = tmp;
    rc = 0;
fail:
    kt_pgp_key_free(&fresh);
    EVP_PKEY_free(pub);
    free(out.p);
    return rc;
}

char *kt_pgp_armor(const uint8_t *data, size_t len, const char *type)
{
    struct obuf o = {0};
    uint32_t crc = kt_pgp_crc24(data, len);
    uint8_t c[3] = {(uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
    char *body = kt_base64_encode(data, len);
    char *sum = kt_base64_encode(c, 3);
    size_t n = strlen(body);

    ob_put(&o, "-----BEGIN ", 11);
    ob_put(&o, type, strlen(type));
    ob_put(&o, "-----\n\n", 7);
    for (size_t i = 0; i < n; i += 64) { /* RFC 4880 §6.3: lines of at most 76 */
        size_t k = n - i < 64 ? n - i : 64;
        ob_put(&o, body + i, k);
        ob_put(&o, "\n", 1);
    }
    ob_put(&o, "=", 1);
    ob_put(&o, sum, 4);
    ob_put(&o, "\n-----END ", 10);
    ob_put(&o, type, strlen(type));
    ob_put(&o, "-----\n", 7); /* with the NUL */
    wipe(body, n); /* the data may be a secret key */
    free(body);
    free(sum);
    return (char *)o.p;
}

/* ---- Secret keys ----
 * Only unprotected v4 secret-key packets (§5.5.3, s2k usage 0): the node key
 * lives in a file only kontalkd reads, as GnuPG exports it with an empty
 * passphrase. The public view is built by rewriting the secret packets as
 * public ones and handing the result to kt_pgp_key_parse(), so secret and
 * public keys share one parser. Buffers that held secret bytes are wiped. */

/* The secret MPIs of an unprotected secret-key body (pointing into it). */
struct secret {
    struct mpi m[4]; /* RSA d p q u (p < q, u = p^-1 mod q); EC and EdDSA: m[0] */
};

/* Splits a v4 secret-key body b[0..len) at the end of its public part
 * (*pub_len). With sec, also reads the unprotected secret MPIs of the
 * algorithms we sign with and checks their 16-bit checksum. */
static enum kt_pgp_err split_secret(const uint8_t *b, size_t len, size_t *pub_len,
                                    struct secret *sec)
{
    struct material km;
    enum kt_pgp_err err;
    size_t used = 0, count = 0;

    if (len < 1)
        return KT_PGP_ERR_TRUNCATED;
    if (b[0] != 4)
        return KT_PGP_ERR_UNSUPPORTED;
    if ((err = material_at(b, len, &km, &used)) != KT_PGP_OK)
        return err;
    if (used == 0)
        return KT_PGP_ERR_UNSUPPORTED; /* unknown algorithm: its public part has no known end */
    if (used > 0xffff)
        return KT_PGP_ERR_MALFORMED;
    *pub_len = used;
    if (sec == NULL)
        return KT_PGP_OK;
    memset(sec, 0, sizeof(*sec));
    if (used == len)
        return KT_PGP_ERR_TRUNCATED;
    /* 254/255 (S2K), another symmetric algorithm id, and GnuPG's stubs of
     * offline keys (S2K 101) all mean: no usable secret here. */
    if (b[used] != 0)
        return KT_PGP_ERR_PROTECTED;
    switch (b[5]) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S:
        count = 4;
        break;
    case KT_PGP_ALGO_ECDSA:
    case KT_PGP_ALGO_EDDSA:
        count = 1;
        break;
    default:
        return KT_PGP_ERR_UNSUPPORTED;
    }
    size_t o = used + 1, start = o;
    for (size_t i = 0; i < count; i++) {
        if (!read_mpi(b, len, &o, &sec->m[i]))
            return KT_PGP_ERR_TRUNCATED;
    }
    if (len - o < 2)
        return KT_PGP_ERR_TRUNCATED;
    if (len - o != 2)
        return KT_PGP_ERR_MALFORMED;
    uint16_t sum = 0;
    for (size_t i = start; i < o; i++)
        sum = (uint16_t)(sum + b[i]);
    if (sum != ((uint16_t)b[o] << 8 | b[o + 1]))
        return KT_PGP_ERR_MALFORMED;
    return KT_PGP_OK;
}

static BIGNUM *mpi_bn(const struct mpi *m)
{
    return BN_bin2bn(m->p, (int)m->n, NULL);
}

/* The private RSA key of n, e and the secret d, p, q, u; the CRT
 * parameters OpenSSL wants are derived from d, p and q. */
static EVP_PKEY *rsa_private(const struct material *km, const struct secret *sec)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BN_CTX *bnctx = BN_CTX_new();
    BIGNUM *n = mpi_bn(&km->m[0]), *e = mpi_bn(&km->m[1]);
    BIGNUM *d = mpi_bn(&sec->m[0]), *p = mpi_bn(&sec->m[1]), *q = mpi_bn(&sec->m[2]);
    BIGNUM *u = mpi_bn(&sec->m[3]), *pinv = NULL;
    BIGNUM *dp = BN_new(), *dq = BN_new(), *pm1 = BN_new(), *qm1 = BN_new(), *qinv = NULL;

    kt_assert(bld != NULL && bnctx != NULL);
    if (!n || !e || !d || !p || !q || !u || !dp || !dq || !pm1 || !qm1 || BN_is_zero(p) ||
        BN_is_zero(q) || !BN_sub(pm1, p, BN_value_one()) || !BN_sub(qm1, q, BN_value_one()) ||
        !BN_mod(dp, d, pm1, bnctx) || !BN_mod(dq, d, qm1, bnctx) ||
        (qinv = BN_mod_inverse(NULL, q, p, bnctx)) == NULL)
        goto done;
    /* u is not used, but a wrong one means a damaged file. */
    if ((pinv = BN_mod_inverse(NULL, p, q, bnctx)) == NULL || BN_cmp(pinv, u) != 0)
        goto done;
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, d) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR1, p) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR2, q) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT1, dp) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT2, dq) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, qinv))
        goto done;
    pkey = pkey_from_params("RSA", bld, EVP_PKEY_KEYPAIR);
done:
    BN_free(n);
    BN_free(e);
    BN_clear_free(d);
    BN_clear_free(p);
    BN_clear_free(q);
    BN_clear_free(dp);
    BN_clear_free(dq);
    BN_clear_free(pm1);
    BN_clear_free(qm1);
    BN_clear_free(qinv);
    BN_clear_free(u);
    BN_clear_free(pinv);
    OSSL_PARAM_BLD_free(bld);
    BN_CTX_free(bnctx);
    return pkey;
}

static EVP_PKEY *ec_private(const struct material *km, const struct secret *sec)
{
    const char *group = NULL;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *x = mpi_bn(&sec->m[0]);

    kt_assert(bld != NULL);
    for (size_t i = 0; i < KT_ARRAY_SIZE(curves); i++) {
        if (curves[i].curve == km->curve)
            group = curves[i].ossl;
    }
    if (group == NULL || x == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, km->m[0].p, km->m[0].n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, x))
        goto done;
    pkey = pkey_from_params("EC", bld, EVP_PKEY_KEYPAIR);
done:
    BN_clear_free(x);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/* The private key of primary key k from its secret MPIs, only if it is the
 * private half of k: same public key, and the pair checks out. */
static enum kt_pgp_err secret_evp(const struct kt_pgp_pubkey *k, const struct secret *sec,
                                  EVP_PKEY **pkey_r)
{
    struct material km;
    EVP_PKEY *pkey = NULL, *pub = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    enum kt_pgp_err err = KT_PGP_ERR_MALFORMED;

    *pkey_r = NULL;
    if (parse_material(k->body, k->body_len, &km) != KT_PGP_OK)
        return KT_PGP_ERR_MALFORMED;
    switch (k->algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S:
        pkey = rsa_private(&km, sec);
        break;
    case KT_PGP_ALGO_ECDSA:
        if (km.curve != KT_PGP_CURVE_P256 && km.curve != KT_PGP_CURVE_P384 &&
            km.curve != KT_PGP_CURVE_P521)
            return KT_PGP_ERR_UNSUPPORTED;
        pkey = ec_private(&km, sec);
        break;
    case KT_PGP_ALGO_EDDSA: {
        /* GnuPG stores the 32-byte seed as an MPI (leading zeros dropped). */
        uint8_t seed[32];
        if (km.curve != KT_PGP_CURVE_ED25519)
            return KT_PGP_ERR_UNSUPPORTED;
        if (mpi_fixed(&sec->m[0], seed, sizeof(seed)))
            pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof(seed));
        OPENSSL_cleanse(seed, sizeof(seed));
        break;
    }
    default:
        return KT_PGP_ERR_UNSUPPORTED;
    }
    /* pubkey_evp() also refuses what never verifies (RSA under 1024 bits). */
    if (pkey == NULL || (pub = pubkey_evp(k)) == NULL || EVP_PKEY_eq(pub, pkey) != 1)
        goto done;
    ctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (ctx == NULL || EVP_PKEY_pairwise_check(ctx) != 1)
        goto done;
    *pkey_r = pkey;
    pkey = NULL;
    err = KT_PGP_OK;
done:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(pkey);
    return err;
}

/* A packet header for `tag` in the framing the input used: old-format
 * packets keep the old format (the shortest length type), so a GnuPG
 * export turns into the same bytes as its public export. */
static void ob_header_like(struct obuf *b, unsigned tag, size_t len, bool new_format)
{
    if (new_format) {
        ob_header(b, tag, len);
    } else if (len < 256) {
        ob_byte(b, (uint8_t)(0x80 | tag << 2));
        ob_byte(b, (uint8_t)len);
    } else if (len < 65536) {
        ob_byte(b, (uint8_t)(0x80 | tag << 2 | 1));
        ob_byte(b, (uint8_t)(len >> 8));
        ob_byte(b, (uint8_t)len);
    } else {
        ob_byte(b, (uint8_t)(0x80 | tag << 2 | 2));
        ob_be32(b, (uint32_t)len);
    }
}

enum kt_pgp_err kt_pgp_secret_parse(const void *data, size_t len, struct kt_pgp_key **key_r,
                                    EVP_PKEY **pkey_r)
{
    enum kt_pgp_err err;
    struct kt_pgp_key *key = NULL;
    struct kt_pgp_packet pkt;
    struct secret sec;
    struct obuf pub = {0};
    uint8_t *bin = NULL;
    size_t blen = 0, off = 0, pub_len = 0, npackets = 0;

    *key_r = NULL;
    *pkey_r = NULL;
    memset(&pkt, 0, sizeof(pkt));
    memset(&sec, 0, sizeof(sec));
    if ((err = load_input(data, len, "PGP PRIVATE KEY BLOCK", &bin, &blen)) != KT_PGP_OK)
        return err;
    if ((err = kt_pgp_packet_next(bin, blen, &off, &pkt)) != KT_PGP_OK)
        goto fail;
    if (pkt.tag != 5) {
        err = KT_PGP_ERR_NO_KEY;
        goto fail;
    }
    /* Tag 5 never has partial lengths: body points into bin, and so do the
     * secret MPIs, until bin is wiped below. */
    if ((err = split_secret(pkt.body, pkt.len, &pub_len, &sec)) != KT_PGP_OK)
        goto fail;
    ob_header_like(&pub, 6, pub_len, pkt.new_format);
    ob_put(&pub, pkt.body, pub_len);
    kt_pgp_packet_clear(&pkt);

    while (off < blen) {
        size_t at = off;
        if (++npackets > PGP_MAX_PACKETS) {
            err = KT_PGP_ERR_TOO_LARGE;
            goto fail;
        }
        if ((err = kt_pgp_packet_next(bin, blen, &off, &pkt)) != KT_PGP_OK)
            goto fail;
        if (pkt.tag == 5 || pkt.tag == 6) {
            kt_pgp_packet_clear(&pkt);
            break; /* the next key */
        }
        if (pkt.tag == 7) {
            /* A secret subkey: its public part only, whatever protects the rest. */
            size_t sub_len = 0;
            if ((err = split_secret(pkt.body, pkt.len, &sub_len, NULL)) != KT_PGP_OK)
                goto fail;
            ob_header_like(&pub, 14, sub_len, pkt.new_format);
            ob_put(&pub, pkt.body, sub_len);
        } else {
            ob_put(&pub, bin + at, off - at);
        }
        kt_pgp_packet_clear(&pkt);
    }
    if ((err = kt_pgp_key_parse(pub.p, pub.n, &key)) != KT_PGP_OK)
        goto fail;
    kt_pgp_key_verify(key);
    if ((err = secret_evp(&key->primary, &sec, pkey_r)) != KT_PGP_OK)
        goto fail;
    *key_r = key;
    key = NULL;
fail:
    kt_pgp_packet_clear(&pkt);
    kt_pgp_key_free(&key);
    wipe(bin, blen);
    free(bin);
    free(pub.p);
    return err;
}

/* Appends the secret MPIs of pkey for a primary key of `algo`. */
static bool secret_mpis(EVP_PKEY *pkey, uint8_t algo, struct obuf *b)
{
    switch (algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S: {
        BIGNUM *d = NULL, *p = NULL, *q = NULL, *u = NULL;
        BN_CTX *bnctx = BN_CTX_new();
        bool done = false;
        kt_assert(bnctx != NULL);
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &d) == 1 &&
            EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_FACTOR1, &p) == 1 &&
            EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_FACTOR2, &q) == 1) {
            if (BN_cmp(p, q) > 0) { /* OpenPGP wants p < q */
                BIGNUM *t = p;
                p = q;
                q = t;
            }
            if ((u = BN_mod_inverse(NULL, p, q, bnctx)) != NULL) {
                ob_bn(b, d);
                ob_bn(b, p);
                ob_bn(b, q);
                ob_bn(b, u);
                done = true;
            }
        }
        BN_clear_free(d);
        BN_clear_free(p);
        BN_clear_free(q);
        BN_clear_free(u);
        BN_CTX_free(bnctx);
        return done;
    }
    case KT_PGP_ALGO_ECDSA: {
        BIGNUM *x = NULL;
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &x) != 1)
            return false;
        ob_bn(b, x);
        BN_clear_free(x);
        return true;
    }
    case KT_PGP_ALGO_EDDSA: {
        uint8_t seed[32];
        size_t n = sizeof(seed);
        if (EVP_PKEY_get_raw_private_key(pkey, seed, &n) != 1 || n != sizeof(seed))
            return false;
        ob_mpi(b, seed, n);
        OPENSSL_cleanse(seed, sizeof(seed));
        return true;
    }
    default:
        return false;
    }
}

char *kt_pgp_secret_armor(const struct kt_pgp_key *key, EVP_PKEY *pkey)
{
    struct obuf sec = {0}, body = {0}, out = {0};
    struct kt_pgp_packet first;
    EVP_PKEY *pub = NULL;
    size_t off = 0;
    char *text = NULL;

    if (pkey == NULL || kt_pgp_packet_next(key->raw, key->raw_len, &off, &first) != KT_PGP_OK)
        return NULL;
    pub = pubkey_evp(&key->primary);
    if (pub == NULL || EVP_PKEY_eq(pub, pkey) != 1 || !secret_mpis(pkey, key->primary.algo, &sec))
        goto done;
    uint16_t sum = 0;
    for (size_t i = 0; i < sec.n; i++)
        sum = (uint16_t)(sum + sec.p[i]);
    ob_put(&body, key->primary.body, key->primary.body_len);
    ob_byte(&body, 0); /* s2k usage: not protected */
    ob_put(&body, sec.p, sec.n);
    ob_byte(&body, (uint8_t)(sum >> 8));
    ob_byte(&body, (uint8_t)sum);
    ob_header_like(&out, 5, body.n, first.new_format);
    ob_put(&out, body.p, body.n);
    /* UIDs, signatures and subkeys as they are: subkeys stay public. */
    ob_put(&out, key->raw + off, key->raw_len - off);
    text = kt_pgp_armor(out.p, out.n, "PGP PRIVATE KEY BLOCK");
done:
    kt_pgp_packet_clear(&first);
    EVP_PKEY_free(pub);
    wipe(sec.p, sec.n);
    wipe(body.p, body.n);
    wipe(out.p, out.n);
    free(sec.p);
    free(body.p);
    free(out.p);
    return text;
}
