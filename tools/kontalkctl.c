/* kontalkctl: administration of a kontalkd node. Reads the same kontalk.conf
 * as kontalkd. Database commands connect directly (this is a CLI: blocking
 * is fine); `status` and `db ping` talk to the running kontalkd over its
 * admin socket. */
#include "config.h"
#include "core/core_conf.h"

#include <kontalk/db.h>
#include <kontalk/jid.h>
#include <kontalk/scram.h>

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_CONFIG KT_SYSCONFDIR "/kontalk.conf"
#define SCRAM_SALT_LEN 16
#define LOCALPART_MAX 64 /* users.localpart column width */

struct ctl {
    struct kt_server_conf sc;
    struct kt_db *db;
    int timeout_s;
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
                           strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0;
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
    else
        usage(stderr);
#undef IS
out:
    kt_db_free(&ctl.db);
    kt_server_conf_free(&ctl.sc);
    return rc;
}
