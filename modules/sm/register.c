/* Phone registration (kontalk-protocol.md §2.1, the XEP-0077 variant), key
 * rollover and private-key parking (§2.3).
 *
 * Before authentication (c2s hands these iqs to register_preauth on a
 * worker, kt_core_set_register):
 *   get, empty query        -> the form: phone, challenge (pin), force
 *                              [, accept-terms and terms]; no `fallback`:
 *                              there is no second provider to fall back to
 *   set, FORM_TYPE jabber:iq:register: phone submission -> E.164 check,
 *                              duplicate check, throttling (IP, number,
 *                              prefix), a code through the provider
 *                              (dummy or command), kept in `validations`
 *   set, FORM_TYPE ..register#code: the code with the user's key (in the
 *                              bridge certificate, or a publickey field as
 *                              generation 1 sent it) -> the key is certified
 *                              by the node key, the account (re)created, and
 *                              the signed key returned
 *   get, account/privatekey/token: a parked private key, once
 * After authentication (a LOCAL hook, on the user's job queue):
 *   set, ..register#key        -> rollover: the stored key must come back
 *                              revoked; the new key is certified and stored
 *   set, ..register#privatekey -> parks a private key; a 40-digit token
 *
 * The account id is the SHA-1 of the E.164 number (§3); the code is tied to
 * it, and the key's user ID must name the same account, so a code only
 * certifies a key for the number it was sent to. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>
#include <kontalk/openpgp.h>
#include <kontalk/scram.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define NS_REGISTER "jabber:iq:register"
#define NS_DATA "jabber:x:data"
#define NS_ACCOUNT "http://kontalk.org/protocol/register#account"
#define FORM_PHONE NS_REGISTER
#define FORM_CODE "http://kontalk.org/protocol/register#code"
#define FORM_KEY "http://kontalk.org/protocol/register#key"
#define FORM_PRIVATEKEY "http://kontalk.org/protocol/register#privatekey"
#define CODE_ATTEMPTS 3 /* wrong codes before the pending code is dropped */
#define COMMAND_TIMEOUT_MS 30000

static const char *const providers[] = {"off", "dummy", "command", NULL};

const struct kt_setting sm_register_settings[] = {
    KT_SET_ENUM("provider", struct sm_conf, reg.provider, SM_REGISTER_OFF, providers,
                "how phone numbers are verified: off, dummy (fixed code) or command"),
    KT_SET_STR("dummy_code", struct sm_conf, reg.dummy_code, "123456",
               "the code the dummy provider accepts"),
    KT_SET_STR("command", struct sm_conf, reg.command, "",
               "program run as COMMAND NUMBER CODE to send the code (command provider)"),
    KT_SET_INT("code_expire", struct sm_conf, reg.code_expire, 900, 60, 86400,
               "seconds a verification code stays valid"),
    KT_SET_INT("throttle_attempts", struct sm_conf, reg.throttle_attempts, 3, 1, 1000,
               "requests allowed before a throttle delay applies"),
    KT_SET_INT("throttle_ip_delay", struct sm_conf, reg.throttle_ip_delay, 60, 0, 86400,
               "seconds an IP address waits once throttled (0 = no IP throttle)"),
    KT_SET_INT("throttle_phone_delay", struct sm_conf, reg.throttle_phone_delay, 300, 0, 86400,
               "seconds a phone number waits once throttled (0 = no number throttle)"),
    KT_SET_INT("throttle_prefix_delay", struct sm_conf, reg.throttle_prefix_delay, 60, 0, 86400,
               "seconds a number prefix waits once throttled (0 = no prefix throttle)"),
    KT_SET_INT("prefix_digits", struct sm_conf, reg.prefix_digits, 6, 1, 15,
               "digits of the number prefix throttle"),
    KT_SET_STR("terms_url", struct sm_conf, reg.terms_url, "",
               "service terms URL shown in the registration form; \"\" = none"),
    KT_SET_INT("privatekey_max", struct sm_conf, reg.privatekey_max, 65536, 1024, 16777216,
               "bytes of a parked private key"),
    KT_SET_INT("privatekey_expire", struct sm_conf, reg.privatekey_expire, 86400, 60, 2592000,
               "seconds a parked private key waits for its token"),
    KT_SET_END,
};

/* ---- data forms ---- */

/* The text of the first <value/> of field `var` in form x (new string), or NULL. */
static char *form_value(const struct kt_xml *x, const char *var)
{
    for (const struct kt_xml *f = x ? kt_xml_first_element(x) : NULL; f;
         f = kt_xml_next_element(f)) {
        const char *v = kt_xml_attr(f, "var");
        if (strcmp(f->name, "field") == 0 && v && strcmp(v, var) == 0) {
            const struct kt_xml *value = kt_xml_child(f, "value", NS_DATA);
            return value ? kt_xml_text(value) : kt_strdup("");
        }
    }
    return NULL;
}

static bool form_true(const struct kt_xml *x, const char *var)
{
    char *v = form_value(x, var);
    bool t = v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
    free(v);
    return t;
}

static struct kt_xml *add_field(struct kt_xml *x, const char *var, const char *type,
                                const char *label, const char *value)
{
    struct kt_xml *f = kt_xml_add_child(x, "field", NS_DATA);
    kt_xml_set_attr(f, "var", var);
    if (type)
        kt_xml_set_attr(f, "type", type);
    if (label)
        kt_xml_set_attr(f, "label", label);
    if (value)
        kt_xml_add_text(kt_xml_add_child(f, "value", NS_DATA), value, strlen(value));
    return f;
}

static void add_text(struct kt_xml *parent, const char *name, const char *ns, const char *text)
{
    kt_xml_add_text(kt_xml_add_child(parent, name, ns), text, strlen(text));
}

/* A result for iq: <query xmlns='jabber:iq:register'> [<instructions/>] and
 * a form of FORM_TYPE form_type; *x_r gets the form to fill. */
static struct kt_stanza *form_result(struct kt_stanza *iq, const char *instructions,
                                     const char *form_type, struct kt_xml **x_r)
{
    struct kt_stanza *reply = kt_stanza_iq_result(iq);
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_REGISTER);
    if (instructions)
        add_text(q, "instructions", NS_REGISTER, instructions);
    struct kt_xml *x = kt_xml_add_child(q, "x", NS_DATA);
    kt_xml_set_attr(x, "type", "form");
    add_field(x, "FORM_TYPE", "hidden", NULL, form_type);
    *x_r = x;
    return reply;
}

static struct kt_stanza *error(struct kt_stanza *iq, enum kt_stanza_err err, const char *text)
{
    return kt_stanza_error_reply(iq, err, text);
}

/* service-unavailable of type wait (XEP-0077's "try later"). */
static struct kt_stanza *error_wait(struct kt_stanza *iq, const char *text)
{
    struct kt_stanza *reply = kt_stanza_error_reply(iq, KT_SE_SERVICE_UNAVAILABLE, text);
    struct kt_xml *e = kt_xml_child(kt_stanza_xml_mut(reply), "error", NULL);
    if (e) {
        kt_xml_set_attr(e, "type", "wait");
        kt_stanza_touch(reply);
    }
    return reply;
}

/* ---- the phone number ---- */

/* E.164: "+" (or "00") then 7 to 15 digits, the first not 0; spaces, dots,
 * dashes and parentheses between digits are dropped. NULL otherwise. */
static char *e164(const char *in)
{
    char out[20];
    size_t n = 0;
    const char *p = in;
    while (*p == ' ')
        p++;
    if (*p == '+')
        p++;
    else if (p[0] == '0' && p[1] == '0')
        p += 2;
    else
        return NULL;
    out[n++] = '+';
    for (; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            if (n >= 16)
                return NULL;
            out[n++] = *p;
        } else if (!strchr(" .-()", *p)) {
            return NULL;
        }
    }
    out[n] = '\0';
    if (n < 8 || out[1] == '0')
        return NULL;
    return kt_strdup(out);
}

/* The account id of a number: lowercase hex SHA-1 of its E.164 form. */
static void phone_local(const char *number, char out[41])
{
    unsigned char md[20];
    unsigned int len = 0;
    EVP_Digest(number, strlen(number), md, &len, EVP_sha1(), NULL);
    for (int i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- throttling ---- */

/* Counts one request under key; 1 if it is over the limit (more than
 * `attempts` within `delay` seconds of the last), 0 if not, -1 on a
 * database error. delay 0 turns this throttle off. */
static int throttle(struct kt_db *db, const char *key, long long attempts, long long delay)
{
    struct kt_db_param p[2] = {KT_DB_P_STR(key)};
    struct kt_db_result *res = NULL;
    long long n = 0, age = 0;
    bool row;

    if (delay <= 0)
        return 0;
    if (kt_db_query(db,
                    "SELECT attempts, TIMESTAMPDIFF(SECOND, last, NOW()) FROM register_attempts "
                    "WHERE tkey = ?",
                    p, 1, &res) < 0)
        return -1;
    row = res->nrows > 0;
    if (row) {
        n = kt_db_int(res, 0, 0);
        age = kt_db_int(res, 0, 1);
    }
    kt_db_result_free(&res);
    if (row && age < delay && n >= attempts)
        return 1;
    n = row && age < delay ? n + 1 : 1;
    p[1] = KT_DB_P_INT(n);
    if (kt_db_exec(db,
                   "INSERT INTO register_attempts (tkey, attempts, last) VALUES (?, ?, NOW()) "
                   "ON DUPLICATE KEY UPDATE attempts = VALUES(attempts), last = NOW()",
                   p, 2, NULL, NULL) < 0)
        return -1;
    return 0;
}

/* ---- providers ---- */

static void random_digits(char *out, size_t n)
{
    unsigned char r[64];
    kt_assert(n <= sizeof(r));
    if (RAND_bytes(r, (int)n) != 1)
        kt_assert(!"RAND_bytes failed");
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + r[i] % 10); /* bias of 6/256 per digit: fine for a code */
    out[n] = '\0';
}

/* Runs the command provider: COMMAND NUMBER CODE, no shell, bounded time.
 * 0 if it exited with status 0. */
static int run_command(const char *command, const char *number, const char *code)
{
    char *argv[] = {(char *)command, (char *)number, (char *)code, NULL};
    extern char **environ;
    pid_t pid;
    int status = 0, err = posix_spawn(&pid, command, NULL, NULL, argv, environ);
    if (err) {
        kt_log(KT_LOG_WARN, "sm: registration: cannot run %s: %s", command, strerror(err));
        return -1;
    }
    for (int waited = 0;; waited += 20) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (waited >= COMMAND_TIMEOUT_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            kt_log(KT_LOG_WARN, "sm: registration: %s took too long", command);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        kt_log(KT_LOG_WARN, "sm: registration: %s failed (status %d)", command, status);
        return -1;
    }
    return 0;
}

/* ---- before authentication ---- */

static struct kt_stanza *instructions(struct sm *sm, struct kt_stanza *iq)
{
    struct kt_xml *x;
    struct kt_stanza *reply =
        form_result(iq,
                    "Please supply a valid phone number. A verification code will be sent "
                    "to it.",
                    FORM_PHONE, &x);
    add_text(x, "title", NS_DATA, "Registration");
    kt_xml_add_child(add_field(x, "phone", "text-single", "Phone number", NULL), "required",
                     NS_DATA);
    add_field(x, "force", "boolean", "Force registration", NULL);
    struct kt_xml *ch = add_field(x, "challenge", "list-single", "Challenge type", "pin");
    add_text(kt_xml_add_child(ch, "option", NS_DATA), "value", NS_DATA, "pin");
    if (*sm->conf->reg.terms_url) {
        kt_xml_add_child(add_field(x, "accept-terms", "boolean", "Accept the service terms", NULL),
                         "required", NS_DATA);
        add_field(x, "terms", "hidden", NULL, sm->conf->reg.terms_url);
    }
    kt_stanza_touch(reply);
    return reply;
}

static struct kt_stanza *phone_submit(struct sm *sm, struct kt_db *db, struct kt_stanza *iq,
                                      const struct kt_xml *x, const struct kt_preauth *who)
{
    const struct sm_register_conf *c = &sm->conf->reg;
    struct kt_stanza *reply = NULL;
    char local[41], code[16], key[80];
    char *raw = form_value(x, "phone"), *challenge = form_value(x, "challenge");
    char *number = raw ? e164(raw) : NULL;

    if (!number) {
        reply = error(iq, KT_SE_BAD_REQUEST, "Bad phone number.");
        goto out;
    }
    if (challenge && *challenge && strcmp(challenge, "pin") != 0) {
        reply = error(iq, KT_SE_NOT_ACCEPTABLE, "Unsupported challenge.");
        goto out;
    }
    if (*c->terms_url && !form_true(x, "accept-terms")) {
        reply = error(iq, KT_SE_NOT_ACCEPTABLE, "The service terms must be accepted.");
        goto out;
    }
    phone_local(number, local);
    /* Local accounts only for now; with mod_net, the network's (sm_probe_lookup). */
    int exists = form_true(x, "force") ? 0 : sm_probe_local_exists(db, local);
    if (exists < 0)
        goto out;
    if (exists) {
        reply = error(iq, KT_SE_CONFLICT, "Another user is registered with the same id.");
        goto out;
    }
    /* Every throttle counts this request; any one of them refuses it. */
    int t = 0, r;
    snprintf(key, sizeof(key), "ip:%s", who->ip);
    if ((r = throttle(db, key, c->throttle_attempts, c->throttle_ip_delay)) != 0)
        t = r;
    snprintf(key, sizeof(key), "phone:%s", number);
    if (t >= 0 && (r = throttle(db, key, c->throttle_attempts, c->throttle_phone_delay)) != 0)
        t = t ? t : r;
    snprintf(key, sizeof(key), "prefix:%.*s", (int)c->prefix_digits + 1, number);
    if (t >= 0 && (r = throttle(db, key, c->throttle_attempts, c->throttle_prefix_delay)) != 0)
        t = t ? t : r;
    if (t < 0)
        goto out;
    if (t > 0) {
        kt_log(KT_LOG_INFO, "sm: registration from %s throttled", who->ip);
        reply = error_wait(iq, "Too many attempts.");
        goto out;
    }
    if (c->provider == SM_REGISTER_DUMMY) {
        snprintf(code, sizeof(code), "%s", c->dummy_code);
    } else {
        random_digits(code, 6);
        if (run_command(c->command, number, code) < 0) {
            reply = error(iq, KT_SE_NOT_ACCEPTABLE, "Unable to verify number.");
            goto out;
        }
    }
    struct kt_db_param p[2] = {KT_DB_P_STR(local), KT_DB_P_STR(code)};
    if (kt_db_exec(db,
                   "REPLACE INTO validations (localpart, code, created, attempts) "
                   "VALUES (?, ?, NOW(), 0)",
                   p, 2, NULL, NULL) < 0)
        goto out;
    kt_log(KT_LOG_INFO, "sm: registration: a code for %s went out (from %s)", local, who->ip);
    struct kt_xml *form;
    reply = form_result(iq, "A verification code was sent to your number. Please enter it.",
                        FORM_PHONE, &form);
    add_field(form, "from", "text-single", "SMS sender", sm->core->host);
    add_field(form, "challenge", "text-single", NULL, "pin");
    kt_stanza_touch(reply);
out:
    if (!reply)
        reply = error(iq, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    free(raw);
    free(challenge);
    free(number);
    return reply;
}

/* Checks `code` against the pending one of local: 1 right, 0 wrong or none,
 * -1 database error. A wrong code counts; CODE_ATTEMPTS wrong ones drop it. */
static int check_code(struct sm *sm, struct kt_db *db, const char *local, const char *code)
{
    struct kt_db_param p[2] = {KT_DB_P_STR(local), KT_DB_P_INT(sm->conf->reg.code_expire)};
    struct kt_db_result *res = NULL;
    int ok = 0;
    if (kt_db_query(db,
                    "SELECT code, attempts FROM validations WHERE localpart = ? AND "
                    "created > NOW() - INTERVAL ? SECOND",
                    p, 2, &res) < 0)
        return -1;
    if (res->nrows) {
        const char *want = kt_db_value(res, 0, 0);
        ok = strlen(want) == strlen(code) && CRYPTO_memcmp(want, code, strlen(code)) == 0;
        if (!ok) {
            if (kt_db_int(res, 0, 1) + 1 >= CODE_ATTEMPTS)
                kt_db_exec(db, "DELETE FROM validations WHERE localpart = ?", p, 1, NULL, NULL);
            else
                kt_db_exec(db, "UPDATE validations SET attempts = attempts + 1 WHERE localpart = ?",
                           p, 1, NULL, NULL);
        }
    }
    kt_db_result_free(&res);
    return ok;
}

/* The key of a code submission: the bridge certificate's, or generation 1's
 * base64 `publickey` field. */
static int submitted_key(struct sm *sm, const struct kt_xml *x, const struct kt_preauth *who,
                         uint8_t **ring_r, size_t *len_r)
{
    if (who->cert)
        return sm_keys_from_cert(sm, who->cert, ring_r, len_r);
    char *b64 = form_value(x, "publickey");
    *ring_r = b64 ? kt_base64_decode_new(b64, len_r) : NULL;
    free(b64);
    if (*ring_r && *len_r == 0) {
        free(*ring_r);
        *ring_r = NULL;
    }
    return *ring_r ? 0 : -1;
}

/* Certifies UID uid of key, replaces local's account with it, and returns
 * the result form carrying the signed key (form_type). */
static struct kt_stanza *sign_and_store(struct sm *sm, struct kt_db *db, struct kt_stanza *iq,
                                        struct kt_pgp_key *key, size_t uid, const char *local,
                                        bool replace_account, const char *form_type)
{
    struct kt_db_param p = KT_DB_P_STR(local);
    if (sm_keys_certify(sm, key, uid) < 0)
        return error(iq, KT_SE_INTERNAL_SERVER_ERROR, "Cannot sign the key.");
    if (kt_db_begin(db) < 0)
        return NULL;
    if ((replace_account &&
         kt_db_exec(db, "DELETE FROM users WHERE localpart = ?", &p, 1, NULL, NULL) < 0) ||
        sm_keys_store(db, local, key) < 0 ||
        kt_db_exec(db, "DELETE FROM validations WHERE localpart = ?", &p, 1, NULL, NULL) < 0 ||
        kt_db_commit(db) < 0) {
        kt_log(KT_LOG_WARN, "sm: cannot store the key of %s: %s", local, kt_db_error(db));
        kt_db_rollback(db);
        return NULL;
    }
    sm_keys_remember(sm, local, key);
    struct kt_xml *x;
    struct kt_stanza *reply = form_result(iq, NULL, form_type, &x);
    char *b64 = kt_base64_encode(key->raw, key->raw_len);
    add_field(x, "publickey", "text-single", NULL, b64);
    free(b64);
    kt_stanza_touch(reply);
    return reply;
}

static struct kt_stanza *code_submit(struct sm *sm, struct kt_db *db, struct kt_stanza *iq,
                                     const struct kt_xml *x, const struct kt_preauth *who)
{
    struct kt_stanza *reply = NULL;
    struct kt_pgp_key *key = NULL;
    char *code = form_value(x, "code"), *local = NULL;
    uint8_t *ring = NULL;
    size_t len = 0, uid = 0;

    if (!code || !*code) {
        reply = error(iq, KT_SE_BAD_REQUEST, "No verification code.");
        goto out;
    }
    if (submitted_key(sm, x, who, &ring, &len) < 0) {
        reply =
            error(iq, KT_SE_BAD_REQUEST, "No public key: present it in the client certificate.");
        goto out;
    }
    enum sm_key_check r = sm_keys_check(sm, ring, len, false, &key, &local, &uid);
    if (r != SM_KEY_OK) {
        reply = error(iq, KT_SE_BAD_REQUEST, sm_key_check_text(r));
        goto out;
    }
    if (who->cert && !sm_keys_cert_is_key(who->cert, &key->primary)) {
        reply = error(iq, KT_SE_BAD_REQUEST, "The certificate's key is not the OpenPGP key.");
        goto out;
    }
    int ok = check_code(sm, db, local, code);
    if (ok < 0)
        goto out;
    if (!ok) {
        kt_log(KT_LOG_INFO, "sm: registration of %s from %s: wrong code", local, who->ip);
        reply = error(iq, KT_SE_BAD_REQUEST, "Invalid verification code.");
        goto out;
    }
    reply = sign_and_store(sm, db, iq, key, uid, local, true, FORM_CODE);
    if (reply && kt_stanza_type(reply) == KT_TYPE_RESULT)
        kt_log(KT_LOG_INFO, "sm: registered %s from %s", local, who->ip);
out:
    if (!reply)
        reply = error(iq, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    kt_pgp_key_free(&key);
    free(code);
    free(local);
    free(ring);
    return reply;
}

static struct kt_stanza *privatekey_fetch(struct sm *sm, struct kt_db *db, struct kt_stanza *iq,
                                          const struct kt_xml *account)
{
    const struct kt_xml *pk = kt_xml_child(account, "privatekey", NS_ACCOUNT);
    const struct kt_xml *tok = pk ? kt_xml_child(pk, "token", NS_ACCOUNT) : NULL;
    char *token = tok ? kt_xml_text(tok) : NULL;
    struct kt_db_result *res = NULL;
    struct kt_stanza *reply = NULL;
    struct kt_db_param p[2] = {KT_DB_P_STR(token ? token : ""),
                               KT_DB_P_INT(sm->conf->reg.privatekey_expire)};

    if (!token || strlen(token) != 40) {
        reply = error(iq, KT_SE_NOT_AUTHORIZED, "Invalid private key token.");
        goto out;
    }
    if (kt_db_begin(db) < 0 ||
        kt_db_query(db,
                    "SELECT p.keydata, k.keyring FROM privatekeys p LEFT JOIN pubkeys k "
                    "ON k.localpart = p.localpart WHERE p.token = ? AND "
                    "p.created > NOW() - INTERVAL ? SECOND FOR UPDATE",
                    p, 2, &res) < 0 ||
        kt_db_exec(db, "DELETE FROM privatekeys WHERE token = ?", p, 1, NULL, NULL) < 0 ||
        kt_db_commit(db) < 0) {
        kt_db_rollback(db);
        goto out;
    }
    if (!res->nrows) {
        reply = error(iq, KT_SE_NOT_AUTHORIZED, "Invalid private key token.");
        goto out;
    }
    reply = kt_stanza_iq_result(iq);
    struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_REGISTER);
    struct kt_xml *out =
        kt_xml_add_child(kt_xml_add_child(q, "account", NS_ACCOUNT), "privatekey", NS_ACCOUNT);
    char *priv = kt_base64_encode((const unsigned char *)kt_db_value(res, 0, 0), res->lens[0]);
    add_text(out, "private", NS_ACCOUNT, priv);
    free(priv);
    if (kt_db_value(res, 0, 1)) {
        char *pub = kt_base64_encode((const unsigned char *)kt_db_value(res, 0, 1), res->lens[1]);
        add_text(out, "public", NS_ACCOUNT, pub);
        free(pub);
    }
    kt_stanza_touch(reply);
out:
    if (!reply)
        reply = error(iq, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    kt_db_result_free(&res);
    free(token);
    return reply;
}

/* kt_register_fn: every registration iq before authentication. */
static struct kt_stanza *register_preauth(struct kt_db *db, struct kt_stanza *iq,
                                          const struct kt_preauth *who, void *data)
{
    struct sm *sm = data;
    const struct kt_xml *query = kt_xml_first_element(kt_stanza_xml(iq));
    const struct kt_xml *child = kt_xml_first_element(query);
    enum kt_stanza_type type = kt_stanza_type(iq);

    if (type == KT_TYPE_GET) {
        if (!child)
            return instructions(sm, iq);
        if (strcmp(child->name, "account") == 0 && child->ns && strcmp(child->ns, NS_ACCOUNT) == 0)
            return privatekey_fetch(sm, db, iq, child);
        return error(iq, KT_SE_BAD_REQUEST, NULL);
    }
    if (type != KT_TYPE_SET)
        return error(iq, KT_SE_BAD_REQUEST, NULL);
    const struct kt_xml *x = kt_xml_child(query, "x", NS_DATA);
    char *form_type = x ? form_value(x, "FORM_TYPE") : NULL;
    struct kt_stanza *reply;
    if (form_type && strcmp(form_type, FORM_PHONE) == 0)
        reply = phone_submit(sm, db, iq, x, who);
    else if (form_type && strcmp(form_type, FORM_CODE) == 0)
        reply = code_submit(sm, db, iq, x, who);
    else
        reply = error(iq, KT_SE_BAD_REQUEST, "Unknown registration form.");
    free(form_type);
    return reply;
}

/* ---- after authentication ---- */

struct auth_job {
    struct sm *sm;
    struct kt_stanza *iq;
    struct kt_stanza *reply;
};

/* Rollover (§2.3): if a key is stored, `revoked` must be it, revoked. */
static struct kt_stanza *rollover(struct sm *sm, struct kt_db *db, struct kt_stanza *iq,
                                  const struct kt_xml *x, const char *user)
{
    struct kt_pgp_key *key = NULL, *old = NULL;
    struct kt_stanza *reply = NULL;
    struct kt_db_result *res = NULL;
    struct kt_db_param p = KT_DB_P_STR(user);
    char *pub = form_value(x, "publickey"), *rev = form_value(x, "revoked"), *local = NULL;
    uint8_t *ring = NULL;
    size_t len = 0, uid = 0;

    if (kt_db_query(db, "SELECT fingerprint FROM users WHERE localpart = ?", &p, 1, &res) < 0)
        goto out;
    const char *stored = res->nrows ? kt_db_value(res, 0, 0) : NULL;
    if (stored) {
        bool good = false;
        size_t n = 0;
        uint8_t *buf = rev ? kt_base64_decode_new(rev, &n) : NULL;
        if (buf && kt_pgp_key_parse(buf, n, &old) == KT_PGP_OK) {
            char fpr[41];
            kt_pgp_key_verify(old);
            kt_pgp_fpr_hex(old->primary.fpr, fpr);
            good = strcmp(fpr, stored) == 0 && kt_pgp_key_revoked(old);
        }
        free(buf);
        if (!good) {
            reply = error(iq, KT_SE_FORBIDDEN, "Invalid revocation key.");
            goto out;
        }
    }
    ring = pub ? kt_base64_decode_new(pub, &len) : NULL;
    enum sm_key_check r =
        ring ? sm_keys_check(sm, ring, len, false, &key, &local, &uid) : SM_KEY_UNPARSABLE;
    if (r != SM_KEY_OK) {
        reply = error(iq, KT_SE_BAD_REQUEST, sm_key_check_text(r));
        goto out;
    }
    if (strcmp(local, user) != 0) {
        reply = error(iq, KT_SE_FORBIDDEN, "The key names another account.");
        goto out;
    }
    reply = sign_and_store(sm, db, iq, key, uid, local, false, FORM_CODE);
out:
    if (!reply)
        reply = error(iq, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    kt_db_result_free(&res);
    kt_pgp_key_free(&key);
    kt_pgp_key_free(&old);
    free(pub);
    free(rev);
    free(local);
    free(ring);
    return reply;
}

static struct kt_stanza *privatekey_park(struct sm *sm, struct kt_db *db, struct kt_stanza *iq,
                                         const struct kt_xml *x, const char *user)
{
    char *b64 = form_value(x, "privatekey"), token[41];
    struct kt_stanza *reply = NULL;
    size_t n = 0;
    /* The stanza size limit bounds what is decoded here. */
    uint8_t *data = b64 ? kt_base64_decode_new(b64, &n) : NULL;

    if (!data || n == 0) {
        reply = error(iq, KT_SE_BAD_REQUEST, "Bad private key data.");
        goto out;
    }
    if (n > (size_t)sm->conf->reg.privatekey_max) {
        reply = error(iq, KT_SE_NOT_ACCEPTABLE, "The private key is too large.");
        goto out;
    }
    random_digits(token, 40);
    struct kt_db_param p[3] = {KT_DB_P_STR(token), KT_DB_P_STR(user),
                               KT_DB_P_BLOB(data, n)};
    if (kt_db_exec(db, "DELETE FROM privatekeys WHERE localpart = ?", &p[1], 1, NULL, NULL) < 0 ||
        kt_db_exec(db, "INSERT INTO privatekeys (token, localpart, keydata) VALUES (?, ?, ?)", p, 3,
                   NULL, NULL) < 0)
        goto out;
    struct kt_xml *x2;
    reply = form_result(iq, NULL, FORM_PRIVATEKEY, &x2);
    add_field(x2, "token", "text-single", NULL, token);
    kt_stanza_touch(reply);
out:
    if (!reply)
        reply = error(iq, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    if (data)
        OPENSSL_cleanse(data, n);
    free(data);
    free(b64);
    return reply;
}

static void auth_run(struct kt_db *db, void *data)
{
    struct auth_job *j = data;
    const struct kt_xml *query = kt_xml_first_element(kt_stanza_xml(j->iq));
    const struct kt_xml *x = kt_xml_child(query, "x", NS_DATA);
    char *form_type = x ? form_value(x, "FORM_TYPE") : NULL;
    const char *user = kt_stanza_from(j->iq)->local;
    if (form_type && strcmp(form_type, FORM_KEY) == 0)
        j->reply = rollover(j->sm, db, j->iq, x, user);
    else if (form_type && strcmp(form_type, FORM_PRIVATEKEY) == 0)
        j->reply = privatekey_park(j->sm, db, j->iq, x, user);
    else
        j->reply = error(j->iq, KT_SE_BAD_REQUEST, "Unknown registration form.");
    free(form_type);
}

static void auth_done(void *data)
{
    struct auth_job *j = data;
    if (j->reply)
        sm_send(j->sm, j->reply);
    kt_stanza_unref(&j->reply);
    kt_stanza_unref(&j->iq);
    free(j);
}

static enum kt_verdict register_iq(struct kt_stanza *st, void *data)
{
    struct sm *sm = data;
    const struct kt_jid *from = kt_stanza_from(st);
    if (!from || !sm_to_server(sm, st))
        return KT_PASS;
    if (!from->local || !sm_is_local(sm, from)) {
        kt_router_bounce(sm->core->router, st, KT_SE_FORBIDDEN, NULL);
        return KT_HANDLED;
    }
    if (kt_stanza_type(st) == KT_TYPE_GET) {
        /* XEP-0077 §3.2: an authenticated entity is registered. */
        struct kt_stanza *reply = kt_stanza_iq_result(st);
        struct kt_xml *q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_REGISTER);
        kt_xml_add_child(q, "registered", NS_REGISTER);
        kt_stanza_touch(reply);
        sm_send(sm, reply);
        kt_stanza_unref(&reply);
        return KT_HANDLED;
    }
    struct auth_job *j = kt_new(struct auth_job);
    j->sm = sm;
    j->iq = kt_stanza_ref(st);
    kt_job_submit(sm->core->workers, sm_user_queue(sm, from->local), auth_run, auth_done, j);
    return KT_HANDLED;
}

int sm_register_init(struct sm *sm)
{
    static const struct kt_match iq = {.kinds = KT_KIND_IQ,
                                       .types = KT_TYPE_GET | KT_TYPE_SET,
                                       .ns = NS_REGISTER,
                                       .name = "query"};
    if (!sm_keys_node(sm))
        return 0; /* no node key: nothing to certify with */
    if (kt_hook_add(sm->core->router, KT_HOOK_LOCAL, &iq, 0, register_iq, sm) < 0) {
        kt_log(KT_LOG_ERROR, "sm: cannot register the registration handler");
        return -1;
    }
    sm_feature_add(sm, NS_REGISTER);
    if (sm->conf->reg.provider == SM_REGISTER_OFF)
        return 0;
    if (sm->conf->reg.provider == SM_REGISTER_COMMAND && !*sm->conf->reg.command) {
        kt_log(KT_LOG_ERROR, "sm: register.provider is command but register.command is empty");
        return -1;
    }
    kt_core_set_register(sm->core, register_preauth, sm);
    kt_log(KT_LOG_INFO, "sm: phone registration with the %s provider",
           providers[sm->conf->reg.provider]);
    return 0;
}
