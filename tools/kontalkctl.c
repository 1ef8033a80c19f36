/* kontalkctl: administration of a kontalkd node. Reads the same kontalk.conf
 * as kontalkd. Database commands connect directly (this is a CLI: blocking
 * is fine); `status` and `db ping` talk to the running kontalkd over its
 * admin socket. `key` commands manage the node's OpenPGP key in the file
 * sm.key names: an unprotected secret key (kontalkd has no one to ask for a
 * passphrase) written 0600 and replaced atomically, never half-written. */
#include "config.h"
#include "core/core_conf.h"

#include <kontalk/db.h>
#include <kontalk/jid.h>
#include <kontalk/openpgp.h>
#include <kontalk/scram.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define DEFAULT_CONFIG KT_SYSCONFDIR "/kontalk.conf"
#define SCRAM_SALT_LEN 16
#define LOCALPART_MAX 64 /* users.localpart column width */
#define RSA_BITS_DEFAULT 3072

struct ctl {
    struct kt_server_conf sc;
    struct kt_db *db;
    int timeout_s;
    const char *key_type; /* key generate --type */
    int key_bits;         /* key generate --bits (RSA) */
    bool force;           /* key generate/import --force */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kontalkctl [-c FILE] COMMAND\n"
            "  db init                     create the schema in an empty database\n"
            "  db upgrade                  apply pending schema migrations\n"
            "  db version                  print the schema version (current and needed)\n"
            "  db ping [--timeout S]       ask the running kontalkd to run a query\n"
            "  user add LOCALPART --password PW   create a password account\n"
            "  user del LOCALPART          delete an account\n"
            "  user list                   list accounts\n"
            "  status [--timeout S]        uptime, connections and modules of the running kontalkd\n"
            "  key generate [--type ed25519|rsa] [--bits N] [--force]\n"
            "                              new node key in the file sm.key names\n"
            "                              (default ed25519; rsa: 3072 bits)\n"
            "  key import FILE [--force]   the node key from an unprotected secret key export\n"
            "                              (gpg --export-secret-keys --armor KEYID)\n"
            "  key show                    fingerprint, algorithm, creation date and UIDs\n"
            "  key export                  the node's public key (ASCII armor)\n"
            "  -c, --config FILE           configuration (default " DEFAULT_CONFIG ")\n");
}

static KT_PRINTF(1, 2) int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kontalkctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int db_open(struct ctl *ctl)
{
    char err[512];
    ctl->db = kt_db_new(&ctl->sc.db);
    if (kt_db_connect(ctl->db, err, sizeof(err)) < 0)
        return fail("cannot connect to the database: %s", err);
    return 0;
}

static int cmd_db(struct ctl *ctl, const char *sub)
{
    char err[1024];
    if (db_open(ctl))
        return 1;
    int have = kt_db_schema_version(ctl->db), want = kt_db_schema_latest();
    if (have < 0)
        return fail("cannot read the schema version: %s", kt_db_error(ctl->db));
    if (strcmp(sub, "version") == 0) {
        printf("schema version %d (this kontalkd needs %d)\n", have, want);
        return 0;
    }
    if (strcmp(sub, "init") == 0 && have != 0) {
        fprintf(stderr,
                "kontalkctl: the database already has a schema (version %d); use db upgrade\n",
                have);
        return 1;
    }
    if (have > want) {
        fprintf(stderr, "kontalkctl: the schema (version %d) is newer than this kontalkd (%d)\n",
                have, want);
        return 1;
    }
    if (have == want && strcmp(sub, "upgrade") == 0) {
        printf("schema is up to date (version %d)\n", have);
        return 0;
    }
    int now = kt_db_schema_upgrade(ctl->db, err, sizeof(err));
    if (now < 0)
        return fail("%s", err);
    if (have == 0)
        printf("schema created at version %d\n", now);
    else
        printf("schema upgraded from %d to %d\n", have, now);
    return 0;
}

static bool user_exists(struct ctl *ctl, const char *localpart, int *rc_r)
{
    struct kt_db_result *res = NULL;
    struct kt_db_param p = KT_DB_P_STR(localpart);
    *rc_r = kt_db_query(ctl->db, "SELECT 1 FROM users WHERE localpart = ?", &p, 1, &res);
    bool found = *rc_r == 0 && res->nrows > 0;
    kt_db_result_free(&res);
    return found;
}

/* The localpart must make a valid JID with the network domain; we store it
 * in the normalised (lowercase) form the JID code produces. */
static struct kt_jid *account_jid(struct ctl *ctl, const char *localpart)
{
    struct kt_jid *jid = kt_jid_new(localpart, ctl->sc.core.network, NULL);
    if (!jid || strlen(jid->local) > LOCALPART_MAX) {
        fprintf(stderr, "kontalkctl: invalid localpart '%s' (a JID localpart of at most %d bytes)\n",
                localpart, LOCALPART_MAX);
        kt_jid_free(&jid);
    }
    return jid;
}

static int user_add(struct ctl *ctl, const char *localpart, const char *password)
{
    struct kt_jid *jid = account_jid(ctl, localpart);
    if (!jid)
        return 1;
    int rc = 1, qrc;
    struct kt_scram_keys k1, k256;
    unsigned iter = (unsigned)ctl->sc.core.scram_iterations;
    if (!*password) {
        fail("%s", "empty password");
        goto out;
    }
    if (db_open(ctl))
        goto out;
    if (user_exists(ctl, jid->local, &qrc) || qrc < 0) {
        if (qrc < 0)
            fail("%s", kt_db_error(ctl->db));
        else
            fail("user %s already exists", jid->bare);
        goto out;
    }
    if (kt_scram_generate(KT_SCRAM_SHA1, password, SCRAM_SALT_LEN, iter, &k1) < 0 ||
        kt_scram_generate(KT_SCRAM_SHA256, password, SCRAM_SALT_LEN, iter, &k256) < 0) {
        fail("%s", "cannot derive SCRAM keys");
        goto out;
    }
    struct kt_db_param p[] = {
        KT_DB_P_STR(jid->local),
        KT_DB_P_BLOB(k1.salt, k1.salt_len),
        KT_DB_P_INT(k1.iterations),
        KT_DB_P_BLOB(k1.stored_key, k1.key_len),
        KT_DB_P_BLOB(k1.server_key, k1.key_len),
        KT_DB_P_BLOB(k256.salt, k256.salt_len),
        KT_DB_P_INT(k256.iterations),
        KT_DB_P_BLOB(k256.stored_key, k256.key_len),
        KT_DB_P_BLOB(k256.server_key, k256.key_len),
    };
    if (kt_db_exec(ctl->db,
                   "INSERT INTO users (localpart, scram_sha1_salt, scram_sha1_iterations, "
                   "scram_sha1_stored_key, scram_sha1_server_key, scram_sha256_salt, "
                   "scram_sha256_iterations, scram_sha256_stored_key, scram_sha256_server_key) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   p, KT_ARRAY_SIZE(p), NULL, NULL) < 0) {
        fail("cannot create the account: %s", kt_db_error(ctl->db));
        goto out;
    }
    printf("created %s\n", jid->bare);
    rc = 0;
out:
    kt_jid_free(&jid);
    return rc;
}

static int user_del(struct ctl *ctl, const char *localpart)
{
    struct kt_jid *jid = account_jid(ctl, localpart);
    if (!jid)
        return 1;
    int rc = 1;
    uint64_t affected = 0;
    struct kt_db_param p = KT_DB_P_STR(jid->local);
    if (db_open(ctl))
        goto out;
    if (kt_db_exec(ctl->db, "DELETE FROM users WHERE localpart = ?", &p, 1, &affected, NULL) < 0) {
        fail("%s", kt_db_error(ctl->db));
        goto out;
    }
    if (affected == 0) {
        fail("no such user: %s", jid->bare);
        goto out;
    }
    printf("deleted %s\n", jid->bare);
    rc = 0;
out:
    kt_jid_free(&jid);
    return rc;
}

static int user_list(struct ctl *ctl)
{
    struct kt_db_result *res = NULL;
    if (db_open(ctl))
        return 1;
    if (kt_db_query(ctl->db, "SELECT localpart FROM users ORDER BY localpart", NULL, 0, &res) < 0)
        return fail("%s", kt_db_error(ctl->db));
    for (unsigned i = 0; i < res->nrows; i++)
        printf("%s@%s\n", kt_db_value(res, i, 0), ctl->sc.core.network);
    kt_db_result_free(&res);
    return 0;
}

/* Sends one command line to the admin socket and copies the reply to stdout. */
static int admin_request(struct ctl *ctl, const char *command)
{
    const char *path = ctl->sc.core.admin_socket;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return fail("admin socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "kontalkctl: kontalkd is not running (cannot connect to %s: %s)\n", path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    char line[64];
    int n = snprintf(line, sizeof(line), "%s\n", command);
    if (write(fd, line, (size_t)n) != n) {
        close(fd);
        return fail("cannot send the command: %s", strerror(errno));
    }
    size_t got = 0;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, ctl->timeout_s * 1000);
        if (pr == 0) {
            close(fd);
            fprintf(stderr, "kontalkctl: no answer from kontalkd within %d s\n", ctl->timeout_s);
            return 1;
        }
        char buf[4096];
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        fwrite(buf, 1, (size_t)r, stdout);
        got += (size_t)r;
    }
    close(fd);
    if (!got)
        return fail("%s", "kontalkd closed the connection without answering");
    return 0;
}

/* ---- The node key ---- */

/* sm.key from the same kontalk.conf; NULL (with a message) if unset. */
static const char *key_path(struct ctl *ctl)
{
    const char *path = NULL;
    if (!config_lookup_string(&ctl->sc.cfg, "sm.key", &path) || path[0] == '\0') {
        fail("sm.key is not set in %s: name the node key file there (sm = { key = \"...\"; })",
             ctl->sc.path);
        return NULL;
    }
    return path;
}

/* Reads a whole file of at most `max` bytes into a new buffer (NUL-terminated). */
static uint8_t *read_file(const char *path, size_t max, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = kt_malloc(max + 2);
    size_t len = fread(buf, 1, max + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || len > max) {
        if (bad)
            fail("cannot read %s", path);
        else
            fail("%s: too large for a key", path);
        OPENSSL_cleanse(buf, len);
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    *len_r = len;
    return buf;
}

static void free_secret(uint8_t *buf, size_t len)
{
    if (buf != NULL)
        OPENSSL_cleanse(buf, len);
    free(buf);
}

/* Loads the secret key at path: a message and -1 if it is not a usable one. */
static int key_load(const char *path, struct kt_pgp_key **key_r, EVP_PKEY **pkey_r)
{
    size_t len = 0;
    uint8_t *buf = read_file(path, KT_PGP_MAX_INPUT, &len);
    if (buf == NULL)
        return -1;
    enum kt_pgp_err err = kt_pgp_secret_parse(buf, len, key_r, pkey_r);
    free_secret(buf, len);
    if (err == KT_PGP_OK)
        return 0;
    if (err == KT_PGP_ERR_PROTECTED)
        fail("%s: the secret key is protected by a passphrase, and kontalkd has no one to ask "
             "for it: remove the passphrase (gpg --passwd KEYID, in a copy of the keyring) and "
             "export it again (gpg --export-secret-keys --armor KEYID)",
             path);
    else if (err == KT_PGP_ERR_NO_KEY)
        fail("%s: no OpenPGP secret key in it (a public key?)", path);
    else
        fail("%s: not a usable OpenPGP secret key: %s", path, kt_pgp_strerror(err));
    return -1;
}

static const char *algo_name(const struct kt_pgp_pubkey *k, char *buf, size_t size)
{
    switch (k->algo) {
    case KT_PGP_ALGO_RSA:
    case KT_PGP_ALGO_RSA_S:
        snprintf(buf, size, "rsa%u", k->bits);
        return buf;
    case KT_PGP_ALGO_EDDSA:
        return "ed25519";
    case KT_PGP_ALGO_ECDSA:
        return k->curve == KT_PGP_CURVE_P256   ? "nistp256"
               : k->curve == KT_PGP_CURVE_P384 ? "nistp384"
                                               : "nistp521";
    default:
        snprintf(buf, size, "algorithm %u", k->algo);
        return buf;
    }
}

static void print_time(const char *label, int64_t t)
{
    char when[64];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    printf("%-12s%s\n", label, when);
}

/* What `key show` prints: one "label value" line each. */
static void key_print(const struct kt_pgp_key *key)
{
    char fpr[41], algo[32];
    kt_pgp_fpr_hex(key->primary.fpr, fpr);
    printf("%-12s%s\n", "fingerprint", fpr);
    printf("%-12s%s\n", "algorithm", algo_name(&key->primary, algo, sizeof(algo)));
    print_time("created", key->primary.created);
    int64_t exp = kt_pgp_key_expiry(key);
    if (exp > 0)
        print_time("expires", exp);
    if (kt_pgp_key_revoked(key))
        printf("%-12s%s\n", "revoked", "yes");
    for (size_t i = 0; i < key->nuids; i++)
        printf("%-12s%s\n", "uid", key->uids[i].uid);
}

/* Refuses a key kontalkd could not certify with: not self-signed, revoked
 * or expired. Prints why. */
static int key_check(const char *what, struct kt_pgp_key *key)
{
    time_t now = time(NULL);
    if (kt_pgp_key_verify(key) != 0)
        return fail("%s: a self-signature of the key does not verify", what);
    if (kt_pgp_key_revoked(key))
        return fail("%s: the key is revoked", what);
    int64_t exp = kt_pgp_key_expiry(key);
    if (exp < 0)
        return fail("%s: the key has no valid self-signature", what);
    if (exp > 0 && (int64_t)now >= exp)
        return fail("%s: the key has expired", what);
    return 0;
}

/* Writes the armored secret of key to path, mode 0600: a temporary file
 * next to it, then link() (fails if path exists) or, with force, rename(). */
static int key_write(struct ctl *ctl, const char *path, const struct kt_pgp_key *key,
                     EVP_PKEY *pkey)
{
    char *text = kt_pgp_secret_armor(key, pkey);
    if (text == NULL)
        return fail("%s", "cannot write the secret key (the private key does not match)");
    size_t n = strlen(text), tl = strlen(path) + 16;
    char *tmp = kt_malloc(tl);
    snprintf(tmp, tl, "%s.new", path);
    int rc = 1;
    unlink(tmp); /* a leftover of an interrupted run */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fail("cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    bool good = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    int werr = errno;
    if (close(fd) != 0 && good) {
        good = false;
        werr = errno;
    }
    if (!good) {
        fail("cannot write %s: %s", tmp, strerror(werr));
        unlink(tmp);
        goto out;
    }
    if (ctl->force ? rename(tmp, path) != 0 : link(tmp, path) != 0) {
        if (errno == EEXIST)
            fail("%s exists: use --force to replace it", path);
        else
            fail("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (!ctl->force)
        unlink(tmp);
    printf("wrote %s\n", path);
    rc = 0;
out:
    OPENSSL_cleanse(text, n);
    free(text);
    free(tmp);
    return rc;
}

/* Early refusal, before a key is made or read: the write checks again. */
static int key_target_free(struct ctl *ctl, const char *path)
{
    struct stat st;
    if (!ctl->force && lstat(path, &st) == 0)
        return fail("%s exists: use --force to replace it", path);
    return 0;
}

static int key_generate(struct ctl *ctl)
{
    const char *path = key_path(ctl);
    const char *type = ctl->key_type ? ctl->key_type : "ed25519";
    EVP_PKEY *pkey = NULL;
    struct kt_pgp_key *key = NULL;
    int rc = 1;

    if (path == NULL)
        return 1;
    if (strcmp(type, "ed25519") != 0 && strcmp(type, "rsa") != 0)
        return fail("unknown key type '%s' (ed25519 or rsa)", type);
    if (ctl->key_bits != 0 && strcmp(type, "rsa") != 0)
        return fail("%s", "--bits is for rsa keys");
    int bits = ctl->key_bits ? ctl->key_bits : RSA_BITS_DEFAULT;
    if (bits < 2048 || bits > 8192)
        return fail("%s", "--bits must be between 2048 and 8192");
    if (key_target_free(ctl, path))
        return 1;
    if (strcmp(type, "rsa") == 0)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    else
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (pkey == NULL)
        return fail("%s", "OpenSSL cannot generate the key");
    size_t ul = strlen(ctl->sc.core.host) + 32;
    char *uid = kt_malloc(ul);
    snprintf(uid, ul, "kontalkd <node@%s>", ctl->sc.core.host);
    if (kt_pgp_key_generate_from(pkey, uid, time(NULL), &key) < 0) {
        fail("%s", "cannot make the OpenPGP key");
        goto out;
    }
    if (key_write(ctl, path, key, pkey))
        goto out;
    key_print(key);
    rc = 0;
out:
    free(uid);
    kt_pgp_key_free(&key);
    EVP_PKEY_free(pkey);
    return rc;
}

static int key_import(struct ctl *ctl, const char *file)
{
    const char *path = key_path(ctl);
    struct kt_pgp_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    int rc = 1;

    if (path == NULL || key_target_free(ctl, path))
        return 1;
    if (key_load(file, &key, &pkey) < 0)
        return 1;
    if (key_check(file, key) == 0 && key_write(ctl, path, key, pkey) == 0) {
        key_print(key);
        rc = 0;
    }
    kt_pgp_key_free(&key);
    EVP_PKEY_free(pkey);
    return rc;
}

/* key show and key export: the key in sm.key, checked as kontalkd would. */
static int key_show(struct ctl *ctl, bool export)
{
    const char *path = key_path(ctl);
    struct kt_pgp_key *key = NULL;
    EVP_PKEY *pkey = NULL;

    if (path == NULL || key_load(path, &key, &pkey) < 0)
        return 1;
    if (export) {
        char *text = kt_pgp_armor(key->raw, key->raw_len, "PGP PUBLIC KEY BLOCK");
        fputs(text, stdout);
        free(text);
    } else {
        key_print(key);
    }
    kt_pgp_key_free(&key);
    EVP_PKEY_free(pkey);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG, *password = NULL;
    struct ctl ctl = {.timeout_s = 30};
    int c;
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    /* Options may also follow the command words (user add x --password y). */
    char *words[4];
    int nwords = 0;
    for (int i = optind; i < argc; i++) {
        const char *a = argv[i];
        bool takes_value = strcmp(a, "--password") == 0 || strcmp(a, "--timeout") == 0 ||
                           strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
                           strcmp(a, "--type") == 0 || strcmp(a, "--bits") == 0;
        if (takes_value && i + 1 >= argc) {
            usage(stderr);
            return 1;
        }
        if (strcmp(a, "--password") == 0)
            password = argv[++i];
        else if (strcmp(a, "--timeout") == 0) {
            int t = atoi(argv[++i]);
            ctl.timeout_s = t > 0 ? t : 30;
        }
        else if (strcmp(a, "--type") == 0)
            ctl.key_type = argv[++i];
        else if (strcmp(a, "--bits") == 0) {
            int b = atoi(argv[++i]);
            ctl.key_bits = b > 0 ? b : -1; /* refused by key generate */
        } else if (strcmp(a, "--force") == 0)
            ctl.force = true;
        else if (takes_value)
            path = argv[++i];
        else if (a[0] == '-' || nwords == (int)KT_ARRAY_SIZE(words)) {
            usage(stderr);
            return 1;
        } else
            words[nwords++] = argv[i];
    }
    if (nwords == 0) {
        usage(stderr);
        return 1;
    }

    char err[1024];
    int rc = 1;
    if (kt_server_conf_load(&ctl.sc, path, err, sizeof(err)) < 0) {
        fprintf(stderr, "kontalkctl: %s\n", err);
        goto out;
    }
#define IS(i, w) (nwords > (i) && strcmp(words[i], (w)) == 0)
    if (IS(0, "db") && nwords == 2 && (IS(1, "init") || IS(1, "upgrade") || IS(1, "version")))
        rc = cmd_db(&ctl, words[1]);
    else if (IS(0, "db") && IS(1, "ping") && nwords == 2)
        rc = admin_request(&ctl, "dbping");
    else if (IS(0, "status") && nwords == 1)
        rc = admin_request(&ctl, "status");
    else if (IS(0, "user") && IS(1, "add") && nwords == 3 && password)
        rc = user_add(&ctl, words[2], password);
    else if (IS(0, "user") && IS(1, "del") && nwords == 3)
        rc = user_del(&ctl, words[2]);
    else if (IS(0, "user") && IS(1, "list") && nwords == 2)
        rc = user_list(&ctl);
    else if (IS(0, "key") && IS(1, "generate") && nwords == 2)
        rc = key_generate(&ctl);
    else if (IS(0, "key") && IS(1, "import") && nwords == 3)
        rc = key_import(&ctl, words[2]);
    else if (IS(0, "key") && IS(1, "show") && nwords == 2)
        rc = key_show(&ctl, false);
    else if (IS(0, "key") && IS(1, "export") && nwords == 2)
        rc = key_show(&ctl, true);
    else
        usage(stderr);
#undef IS
out:
    kt_db_free(&ctl.db);
    kt_server_conf_free(&ctl.sc);
    return rc;
}
