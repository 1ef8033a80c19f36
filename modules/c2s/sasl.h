/* SASL mechanisms of mod_c2s (RFC 6120 §6): SCRAM-SHA-1(-PLUS) and
 * SCRAM-SHA-256(-PLUS) (RFC 5802, RFC 7677), PLAIN (RFC 4616), EXTERNAL, and
 * the TLS channel bindings (RFC 5929, RFC 9266).
 *
 * Pure code: no I/O, no database, no threads. Every input is the already
 * base64-decoded SASL payload (c2s_sasl_decode() does that step and reports
 * incorrect-encoding). Results are enum c2s_sasl_fail values that map one to
 * one to the <failure/> conditions; C2S_SASL_OK (0) is success. Strings a
 * state object returns are borrowed and live until that object is freed. */
#ifndef KT_C2S_SASL_H
#define KT_C2S_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include <kontalk/scram.h>

/* Largest decoded SASL message accepted (client-first, client-final, PLAIN). */
#define C2S_SASL_MAX_MSG 4096
/* Largest channel-binding value c2s_sasl_cb_data() produces. */
#define C2S_SASL_CB_MAX 64
/* Salt length used for the fake salt of unknown users (kontalkctl uses 16). */
#define C2S_SCRAM_FAKE_SALT_LEN 16

enum c2s_sasl_mech {
    C2S_SASL_SCRAM_SHA_1,
    C2S_SASL_SCRAM_SHA_1_PLUS,
    C2S_SASL_SCRAM_SHA_256,
    C2S_SASL_SCRAM_SHA_256_PLUS,
    C2S_SASL_PLAIN,
    C2S_SASL_EXTERNAL,
};

/* RFC 6120 §6.5 failure conditions, in the RFC's order. */
enum c2s_sasl_fail {
    C2S_SASL_OK = 0,
    C2S_SASL_FAIL_ABORTED,
    C2S_SASL_FAIL_ACCOUNT_DISABLED,
    C2S_SASL_FAIL_CREDENTIALS_EXPIRED,
    C2S_SASL_FAIL_ENCRYPTION_REQUIRED,
    C2S_SASL_FAIL_INCORRECT_ENCODING,
    C2S_SASL_FAIL_INVALID_AUTHZID,
    C2S_SASL_FAIL_INVALID_MECHANISM,
    C2S_SASL_FAIL_MALFORMED_REQUEST,
    C2S_SASL_FAIL_MECHANISM_TOO_WEAK,
    C2S_SASL_FAIL_NOT_AUTHORIZED,
    C2S_SASL_FAIL_TEMPORARY_AUTH_FAILURE,
};

/* "SCRAM-SHA-256-PLUS" etc.; never NULL for a valid enum value. */
const char *c2s_sasl_mech_name(enum c2s_sasl_mech mech);
/* Exact (case-sensitive) mechanism name -> enum: 0, or -1 if unknown. */
int c2s_sasl_mech_from_name(const char *name, enum c2s_sasl_mech *mech_r);
bool c2s_sasl_mech_is_scram(enum c2s_sasl_mech mech);
bool c2s_sasl_mech_is_plus(enum c2s_sasl_mech mech);
/* Element name of the condition ("not-authorized"); NULL for C2S_SASL_OK. */
const char *c2s_sasl_fail_name(enum c2s_sasl_fail fail);

/* Decodes the character data of <auth/> or <response/> (RFC 6120 §6.4.2).
 * NULL or "" -> *data_r = NULL, *len_r = 0 (no data: for <auth/>, no initial
 * response). "=" -> an empty but non-NULL buffer (a zero-length response).
 * Otherwise strict base64 without whitespace. Returns C2S_SASL_OK,
 * INCORRECT_ENCODING, or MALFORMED_REQUEST above C2S_SASL_MAX_MSG bytes.
 * *data_r is released with free(). */
enum c2s_sasl_fail c2s_sasl_decode(const char *text, unsigned char **data_r, size_t *len_r);

/* ---- SCRAM server (RFC 5802 §5) ----
 * 1. c2s_scram_start() parses the client-first-message;
 *    the caller looks the user up (worker job) by c2s_scram_username();
 * 2. c2s_scram_server_first() answers with the challenge;
 * 3. c2s_scram_finish() checks the client-final-message and gives the
 *    server-final-message for <success/>.
 * Any failure ends the exchange: free the state. Calling server_first
 * other than once after a successful start is a programming error
 * (assertion); finish before server_first, or a second finish, fails with
 * MALFORMED_REQUEST, since a client's messages drive it. */
struct c2s_scram;

/* Parses client-first-message (GS2 header + client-first-message-bare).
 * plus_offered: the server advertised -PLUS mechanisms on this stream.
 * Failures:
 *  MALFORMED_REQUEST: bad syntax (missing/out-of-order attributes, NUL bytes,
 *    invalid UTF-8, bad saslname escape, empty username or nonce, non-printable
 *    nonce), the reserved m= extension, a -PLUS mechanism without "p=", or
 *    "p=" with a mechanism that is not -PLUS (both are GS2 protocol errors);
 *  NOT_AUTHORIZED: "y" while -PLUS was offered (downgrade, RFC 5802 §6),
 *    or an unsupported channel-binding type (only tls-exporter and
 *    tls-server-end-point are supported).
 * On success *state_r is a new state (free with c2s_scram_free()). */
enum c2s_sasl_fail c2s_scram_start(enum c2s_sasl_mech mech, const unsigned char *msg, size_t len,
                                   bool plus_offered, struct c2s_scram **state_r);
/* The unescaped username (n=), as sent: the caller applies nodeprep. */
const char *c2s_scram_username(const struct c2s_scram *st);
/* The unescaped authzid (a=), or NULL when absent. The caller decides
 * whether it is acceptable (else: invalid-authzid). */
const char *c2s_scram_authzid(const struct c2s_scram *st);
/* "tls-exporter", "tls-server-end-point", or NULL (no channel binding). */
const char *c2s_scram_cb_name(const struct c2s_scram *st);
/* The hash the mechanism uses: pick the matching stored keys. */
enum kt_scram_hash c2s_scram_hash(const struct c2s_scram *st);

/* Builds server-first-message "r=<cnonce><snonce>,s=<salt>,i=<n>". keys is
 * the account's record for c2s_scram_hash(), or NULL when the user is unknown
 * (or has no keys for this hash): then the salt is a per-process HMAC of the
 * username and the iteration count is fake_iterations (pass the configured
 * default for new accounts), so an unknown user looks like a wrong password;
 * finish then fails with NOT_AUTHORIZED. The keys are copied. Returns
 * C2S_SASL_OK or TEMPORARY_AUTH_FAILURE (no randomness). *msg_r is borrowed. */
enum c2s_sasl_fail c2s_scram_server_first(struct c2s_scram *st, const struct kt_scram_keys *keys,
                                          unsigned fake_iterations, const char **msg_r);

/* Checks client-final-message. cb_data is the channel-binding value the
 * caller computed for c2s_scram_cb_name() (c2s_sasl_cb_data()); it is ignored
 * without channel binding, and NULL when binding was requested means the
 * caller could not compute it (-> NOT_AUTHORIZED). Failures: MALFORMED_REQUEST
 * (syntax, base64 garbage in c= or p=, proof of the wrong length),
 * NOT_AUTHORIZED (nonce, channel binding or proof mismatch; unknown user).
 * On success *server_final_r is "v=<ServerSignature>" (borrowed): send it
 * base64-encoded in <success/>. */
enum c2s_sasl_fail c2s_scram_finish(struct c2s_scram *st, const unsigned char *msg, size_t len,
                                    const unsigned char *cb_data, size_t cb_len,
                                    const char **server_final_r);
/* Wipes and frees the state; sets *st to NULL. NULL-safe. */
void c2s_scram_free(struct c2s_scram **st);

/* ---- PLAIN (RFC 4616) ---- */
struct c2s_plain {
    char *authzid; /* NULL when empty */
    char *authcid;
    char *passwd;
};
/* Parses "[authzid] NUL authcid NUL passwd": exactly two NULs, each field
 * valid UTF-8 of at most 255 bytes, authcid and passwd not empty. Returns
 * C2S_SASL_OK or MALFORMED_REQUEST; *plain_r is freed by c2s_plain_free(). */
enum c2s_sasl_fail c2s_plain_parse(const unsigned char *msg, size_t len,
                                   struct c2s_plain **plain_r);
/* Wipes the password and frees; sets *plain to NULL. NULL-safe. */
void c2s_plain_free(struct c2s_plain **plain);
/* True when password derives keys->stored_key with keys' hash, salt and
 * iterations (compared in constant time). Runs PBKDF2: call on a worker.
 * keys NULL (unknown user) spends the same time on a fake derivation with
 * fake_iterations and returns false. */
bool c2s_plain_check(const char *password, const struct kt_scram_keys *keys,
                     unsigned fake_iterations);

/* ---- EXTERNAL (RFC 4422 appendix A) ----
 * The message is the authzid; empty means "derive it from the certificate".
 * Returns C2S_SASL_OK (with *authzid_r NULL when empty, else a string to
 * free()) or MALFORMED_REQUEST (NUL bytes, invalid UTF-8, too long). */
enum c2s_sasl_fail c2s_external_parse(const unsigned char *msg, size_t len, char **authzid_r);

/* ---- Channel bindings ----
 * All return the number of bytes written to out, or -1 when the binding is
 * not available on this connection. */
/* tls-exporter (RFC 9266): 32 bytes of the "EXPORTER-Channel-Binding"
 * exporter; TLS 1.3 only (-1 for older versions, see RFC 9266 §3). */
int c2s_sasl_cb_tls_exporter(SSL *ssl, unsigned char out[32]);
/* tls-server-end-point (RFC 5929 §4.1): hash of the server certificate's DER
 * with its signature digest, SHA-256 when that is MD5 or SHA-1; -1 without a
 * certificate or when the signature uses no single digest (e.g. Ed25519). */
int c2s_sasl_cb_tls_server_end_point(SSL *ssl, unsigned char out[C2S_SASL_CB_MAX]);
/* Either of the above by name (as c2s_scram_cb_name() returns); -1 for an
 * unknown name. */
int c2s_sasl_cb_data(SSL *ssl, const char *cb_name, unsigned char out[C2S_SASL_CB_MAX]);

#endif
