/* MariaDB access for worker threads, over MariaDB Connector/C.
 *
 * A kt_db is one connection, owned by one thread; it connects lazily on
 * first use. Statements are prepared once per connection and cached by SQL
 * text in a fixed 64-bucket hash (FNV-1a, strcmp on collision): callers pass
 * constant SQL, so the set is small and bounded; as a guard against SQL
 * built per call, the whole cache is dropped when it reaches 256 entries.
 * Results are fully buffered (mysql_stmt_store_result) and every column is
 * fetched as bytes, NUL-terminated, or NULL for SQL NULL.
 *
 * Lost connections: when a call fails because the server went away (or the
 * connection cannot be made), the connection and its statement cache are
 * dropped, the outage is logged once at warn, and the same call is retried
 * after a back-off sleep (100 ms doubling to 5 s) on a new connection, until
 * it succeeds or kt_db_stop() is called. The sleep waits on a condition
 * variable so kt_db_stop() interrupts it. The retry is safe for single
 * statements only: one that was in flight when the connection broke may have
 * committed, so writes must be idempotent or tolerate being applied twice.
 * Inside a transaction (kt_db_begin .. commit/rollback) nothing is retried:
 * the server rolled the transaction back, so the call returns -1 and the
 * caller redoes the whole transaction; the next call reconnects. */
#include "config.h"
#include <kontalk/db.h>
#include <kontalk/log.h>

#include <errno.h>
#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DB_BACKOFF_MIN_MS 100u
#define DB_BACKOFF_MAX_MS 5000u
#define DB_STMT_BUCKETS 64u
#define DB_STMT_MAX 256u
#define DB_FETCH_BUF 256u /* initial per-column buffer; longer values are re-fetched */

/* Internal outcome of one attempt. */
enum { DB_OK = 0, DB_ERR = -1, DB_LOST = -2 };

struct db_stmt {
    char *sql;
    MYSQL_STMT *stmt;
    struct db_stmt *next;
};

struct kt_db {
    char *host, *socket, *name, *user, *password;
    unsigned port;
    unsigned connect_timeout;

    MYSQL *mysql; /* NULL while disconnected */
    bool ever_connected;
    bool outage_logged; /* this handle already reported the current outage */
    bool in_tx;

    struct db_stmt *stmts[DB_STMT_BUCKETS];
    unsigned nstmts;

    unsigned errnum;
    char err[512];
};

/* One call, replayed as is after a reconnect. */
struct db_call {
    const char *sql;
    const struct kt_db_param *params;
    unsigned nparams;
    bool text;        /* mysql_real_query, no parameters */
    bool want_result; /* kt_db_query */
    bool tx_end;      /* COMMIT/ROLLBACK: ends the transaction either way */
    uint64_t affected, insert_id;
    struct kt_db_result *res;
};

static pthread_once_t db_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t db_stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t db_stop_cond;
static atomic_bool db_stopping;
static atomic_bool db_up;
static atomic_ullong db_reconnect_count;

static void db_init_once(void)
{
    pthread_condattr_t attr;

    /* Not thread-safe itself, and mysql_init() would call it implicitly
     * from whichever worker connects first. */
    if (mysql_library_init(0, NULL, NULL))
        kt_log(KT_LOG_ERROR, "mysql_library_init failed");
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&db_stop_cond, &attr);
    pthread_condattr_destroy(&attr);
}

void kt_db_stop(void)
{
    pthread_once(&db_once, db_init_once);
    pthread_mutex_lock(&db_stop_lock);
    atomic_store(&db_stopping, true);
    pthread_cond_broadcast(&db_stop_cond);
    pthread_mutex_unlock(&db_stop_lock);
}

unsigned long long kt_db_reconnects(void)
{
    return atomic_load(&db_reconnect_count);
}

bool kt_db_is_up(void)
{
    return atomic_load(&db_up);
}

/* Sleeps ms unless kt_db_stop() is (or gets) called: then returns -1. */
static int db_sleep(unsigned ms)
{
    struct timespec until;
    bool stopped;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&db_stop_lock);
    while (!atomic_load(&db_stopping))
        if (pthread_cond_timedwait(&db_stop_cond, &db_stop_lock, &until) == ETIMEDOUT)
            break;
    stopped = atomic_load(&db_stopping);
    pthread_mutex_unlock(&db_stop_lock);
    return stopped ? -1 : 0;
}

static void db_set_error(struct kt_db *db, unsigned errnum, const char *fmt, ...) KT_PRINTF(3, 4);
static void db_set_error(struct kt_db *db, unsigned errnum, const char *fmt, ...)
{
    va_list ap;
    db->errnum = errnum;
    va_start(ap, fmt);
    vsnprintf(db->err, sizeof(db->err), fmt, ap);
    va_end(ap);
}

/* Errors meaning the connection is gone (or never came up): the call is
 * replayed on a new connection. 1053 (server shutdown in progress) and 2055
 * (lost, extended message) belong here as well. */
static bool db_errno_lost(unsigned e)
{
    switch (e) {
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
        return true;
    default:
        return false;
    }
}

/* ---- handle ---- */

struct kt_db *kt_db_new(const struct kt_db_conf *conf)
{
    struct kt_db *db = kt_new(struct kt_db);

    pthread_once(&db_once, db_init_once);
    db->host = kt_strdup(conf->host ? conf->host : "");
    db->socket = kt_strdup(conf->socket ? conf->socket : "");
    db->name = kt_strdup(conf->name ? conf->name : "");
    db->user = kt_strdup(conf->user ? conf->user : "");
    db->password = kt_strdup(conf->password ? conf->password : "");
    db->port = conf->port > 0 && conf->port < 65536 ? (unsigned)conf->port : 3306;
    db->connect_timeout = conf->connect_timeout > 0 ? (unsigned)conf->connect_timeout : 10;
    return db;
}

static void db_stmt_cache_clear(struct kt_db *db)
{
    for (unsigned b = 0; b < DB_STMT_BUCKETS; b++) {
        for (struct db_stmt *s = db->stmts[b], *next; s; s = next) {
            next = s->next;
            mysql_stmt_close(s->stmt);
            free(s->sql);
            free(s);
        }
        db->stmts[b] = NULL;
    }
    db->nstmts = 0;
}

static void db_close(struct kt_db *db)
{
    db_stmt_cache_clear(db);
    if (db->mysql) {
        mysql_close(db->mysql);
        db->mysql = NULL;
    }
    db->in_tx = false;
}

void kt_db_free(struct kt_db **dbp)
{
    struct kt_db *db = *dbp;
    if (!db)
        return;
    db_close(db);
    /* Do not leave the password lying around in freed memory. */
    memset(db->password, 0, strlen(db->password));
    free(db->host);
    free(db->socket);
    free(db->name);
    free(db->user);
    free(db->password);
    free(db);
    *dbp = NULL;
}

const char *kt_db_error(const struct kt_db *db)
{
    return db->err;
}

unsigned kt_db_errno(const struct kt_db *db)
{
    return db->errnum;
}

/* One connection attempt; on failure the message is in db->err. */
static int db_open(struct kt_db *db)
{
    MYSQL *m = mysql_init(NULL);
    my_bool reconnect = 0;
    unsigned timeout = db->connect_timeout;
    unsigned protocol = db->socket[0] ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;

    if (!m) {
        db_set_error(db, CR_OUT_OF_MEMORY, "mysql_init failed");
        return -1;
    }
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    /* The library's own reconnect would silently lose prepared statements
     * and session state; db_run() reconnects instead. */
    mysql_options(m, MYSQL_OPT_RECONNECT, &reconnect);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    /* Explicit, so "localhost" with no socket really means TCP. */
    mysql_options(m, MYSQL_OPT_PROTOCOL, &protocol);
    /* Timestamps are stored and compared in UTC, whatever the server's zone. */
    mysql_options(m, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'");

    if (!mysql_real_connect(m, db->socket[0] ? NULL : db->host, db->user, db->password,
                            db->name[0] ? db->name : NULL, db->socket[0] ? 0 : db->port,
                            db->socket[0] ? db->socket : NULL, 0)) {
        db_set_error(db, mysql_errno(m), "%s", mysql_error(m));
        mysql_close(m);
        return -1;
    }
    db->mysql = m;
    return 0;
}

static void db_mark_up(struct kt_db *db)
{
    bool was_up = atomic_exchange(&db_up, true);

    /* A handle that saw a failure (lost, or never got, its connection)
     * counts a reconnect, so an outage first noticed by a fresh worker
     * shows in the status too. */
    if (db->ever_connected || db->outage_logged) {
        atomic_fetch_add(&db_reconnect_count, 1);
        if (!was_up)
            kt_log(KT_LOG_NOTICE, "database connection restored");
        else
            kt_log(KT_LOG_DEBUG, "database: worker connection restored");
    }
    db->ever_connected = true;
    db->outage_logged = false;
}

/* Logs the outage once: by the first handle that sees it, or, before any
 * connection ever worked, once per handle. */
static void db_mark_down(struct kt_db *db)
{
    bool was_up = atomic_exchange(&db_up, false);

    if (db->outage_logged)
        return;
    db->outage_logged = true;
    if (was_up || !db->ever_connected)
        kt_log(KT_LOG_WARN, "database unavailable (%s); retrying with back-off", db->err);
    else
        kt_log(KT_LOG_DEBUG, "database: worker connection lost (%s)", db->err);
}

static const char *db_where(const struct kt_db *db, char *buf, size_t len)
{
    if (db->socket[0])
        snprintf(buf, len, "socket %s", db->socket);
    else
        snprintf(buf, len, "%s:%u", db->host[0] ? db->host : "localhost", db->port);
    return buf;
}

int kt_db_connect(struct kt_db *db, char *err, size_t errlen)
{
    char where[300];

    if (db->mysql)
        return 0;
    if (db_open(db) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "cannot connect to MariaDB at %s as '%s' (database '%s'): %s",
                     db_where(db, where, sizeof(where)), db->user, db->name, db->err);
        return -1;
    }
    db_mark_up(db);
    return 0;
}

/* ---- statements ---- */

static unsigned db_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % DB_STMT_BUCKETS;
}

static int db_stmt_fail(struct kt_db *db, MYSQL_STMT *st)
{
    unsigned e = mysql_stmt_errno(st);
    db_set_error(db, e, "%s", mysql_stmt_error(st));
    return db_errno_lost(e) ? DB_LOST : DB_ERR;
}

static int db_stmt_get(struct kt_db *db, const char *sql, MYSQL_STMT **stmt_r)
{
    unsigned b = db_hash(sql);
    struct db_stmt *s;
    MYSQL_STMT *st;
    int rc;

    for (s = db->stmts[b]; s; s = s->next) {
        if (strcmp(s->sql, sql) == 0) {
            *stmt_r = s->stmt;
            return DB_OK;
        }
    }
    st = mysql_stmt_init(db->mysql);
    if (!st) {
        db_set_error(db, mysql_errno(db->mysql), "mysql_stmt_init: %s", mysql_error(db->mysql));
        return db_errno_lost(db->errnum) ? DB_LOST : DB_ERR;
    }
    if (mysql_stmt_prepare(st, sql, strlen(sql))) {
        rc = db_stmt_fail(db, st);
        mysql_stmt_close(st);
        return rc;
    }
    if (db->nstmts >= DB_STMT_MAX) {
        kt_log(KT_LOG_WARN, "database: %u cached statements, dropping the cache "
               "(is SQL being built per call?)", db->nstmts);
        db_stmt_cache_clear(db);
    }
    s = kt_new(struct db_stmt);
    s->sql = kt_strdup(sql);
    s->stmt = st;
    s->next = db->stmts[b];
    db->stmts[b] = s;
    db->nstmts++;
    *stmt_r = st;
    return DB_OK;
}

static void db_bind_params(MYSQL_BIND *b, const struct kt_db_param *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        switch (p[i].type) {
        case KT_DB_NULL:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        case KT_DB_INT:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&p[i].i; /* read only */
            break;
        case KT_DB_TEXT:
        case KT_DB_BLOB:
            b[i].buffer_type = p[i].type == KT_DB_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            b[i].buffer = p[i].data ? (void *)p[i].data : (void *)"";
            b[i].buffer_length = p[i].data ? p[i].len : 0;
            break;
        default:
            kt_assert(!"bad kt_db_param type");
        }
    }
}

void kt_db_result_free(struct kt_db_result **rp)
{
    struct kt_db_result *r = *rp;
    if (!r)
        return;
    for (size_t i = 0; i < (size_t)r->nrows * r->ncols; i++)
        free(r->values[i]);
    free(r->values);
    free(r->lens);
    free(r);
    *rp = NULL;
}

/* Buffers the whole result of an executed statement into *res_r. */
static int db_fetch(struct kt_db *db, MYSQL_STMT *st, struct kt_db_result **res_r)
{
    struct kt_db_result *r = kt_new(struct kt_db_result);
    unsigned ncols = mysql_stmt_field_count(st), row;
    MYSQL_BIND *b = NULL;
    unsigned long *lens = NULL;
    my_bool *nulls = NULL, *errs = NULL;
    char *bufs = NULL;
    int rc = DB_OK;

    r->ncols = ncols;
    if (ncols == 0)
        goto done;
    if (mysql_stmt_store_result(st)) {
        rc = db_stmt_fail(db, st);
        goto fail;
    }
    /* num_rows is exact after store_result; the fetch loop still checks. */
    r->nrows = (unsigned)mysql_stmt_num_rows(st);
    r->values = kt_calloc((size_t)r->nrows * ncols, sizeof(*r->values));
    r->lens = kt_calloc((size_t)r->nrows * ncols, sizeof(*r->lens));

    b = kt_calloc(ncols, sizeof(*b));
    lens = kt_calloc(ncols, sizeof(*lens));
    nulls = kt_calloc(ncols, sizeof(*nulls));
    errs = kt_calloc(ncols, sizeof(*errs));
    bufs = kt_malloc((size_t)ncols * DB_FETCH_BUF);
    for (unsigned c = 0; c < ncols; c++) {
        /* STRING converts numbers and dates to text; bytes are copied as is. */
        b[c].buffer_type = MYSQL_TYPE_STRING;
        b[c].buffer = bufs + (size_t)c * DB_FETCH_BUF;
        b[c].buffer_length = DB_FETCH_BUF;
        b[c].length = &lens[c];
        b[c].is_null = &nulls[c];
        b[c].error = &errs[c];
    }
    if (mysql_stmt_bind_result(st, b)) {
        rc = db_stmt_fail(db, st);
        goto fail;
    }
    for (row = 0;; row++) {
        int f = mysql_stmt_fetch(st);
        if (f == MYSQL_NO_DATA)
            break;
        if (f == 1) {
            rc = db_stmt_fail(db, st);
            goto fail;
        }
        kt_assert(row < r->nrows);
        for (unsigned c = 0; c < ncols; c++) {
            size_t i = (size_t)row * ncols + c, len = lens[c];
            char *v;

            if (nulls[c])
                continue;
            v = kt_malloc(len + 1);
            if (len <= DB_FETCH_BUF && !errs[c]) {
                memcpy(v, b[c].buffer, len);
            } else {
                /* MYSQL_DATA_TRUNCATED: length holds the full size. */
                MYSQL_BIND fb;
                unsigned long flen = 0;
                my_bool fnull = 0;

                memset(&fb, 0, sizeof(fb));
                fb.buffer_type = MYSQL_TYPE_STRING;
                fb.buffer = v;
                fb.buffer_length = len + 1;
                fb.length = &flen;
                fb.is_null = &fnull;
                if (mysql_stmt_fetch_column(st, &fb, c, 0)) {
                    free(v);
                    rc = db_stmt_fail(db, st);
                    goto fail;
                }
                kt_assert(flen == len);
            }
            v[len] = '\0';
            r->values[i] = v;
            r->lens[i] = len;
        }
    }
    kt_assert(row == r->nrows);
    goto done;

fail:
    kt_db_result_free(&r);
done:
    free(b);
    free(lens);
    free(nulls);
    free(errs);
    free(bufs);
    *res_r = r;
    return rc;
}

static int db_attempt_stmt(struct kt_db *db, struct db_call *c)
{
    MYSQL_STMT *st = NULL;
    MYSQL_BIND *pb = NULL;
    int rc = db_stmt_get(db, c->sql, &st);

    if (rc != DB_OK)
        return rc;
    if (mysql_stmt_param_count(st) != c->nparams) {
        db_set_error(db, 0, "statement has %lu parameters, %u given: %s",
                     mysql_stmt_param_count(st), c->nparams, c->sql);
        return DB_ERR;
    }
    if (c->nparams) {
        pb = kt_calloc(c->nparams, sizeof(*pb));
        db_bind_params(pb, c->params, c->nparams);
        if (mysql_stmt_bind_param(st, pb)) {
            rc = db_stmt_fail(db, st);
            goto out;
        }
    }
    if (mysql_stmt_execute(st)) {
        rc = db_stmt_fail(db, st);
        goto out;
    }
    if (c->want_result) {
        rc = db_fetch(db, st, &c->res);
    } else {
        c->affected = mysql_stmt_affected_rows(st);
        c->insert_id = mysql_stmt_insert_id(st);
        /* A result set nobody asked for must still be consumed. */
        if (mysql_stmt_field_count(st) > 0 && mysql_stmt_store_result(st))
            rc = db_stmt_fail(db, st);
    }
    mysql_stmt_free_result(st);
out:
    free(pb);
    return rc;
}

static int db_attempt_text(struct kt_db *db, struct db_call *c)
{
    MYSQL_RES *res;
    unsigned e;

    if (mysql_real_query(db->mysql, c->sql, strlen(c->sql)) == 0) {
        c->affected = mysql_affected_rows(db->mysql);
        res = mysql_store_result(db->mysql);
        if (res) {
            mysql_free_result(res);
            return DB_OK;
        }
        if (mysql_field_count(db->mysql) == 0)
            return DB_OK;
    }
    e = mysql_errno(db->mysql);
    db_set_error(db, e, "%s", mysql_error(db->mysql));
    return db_errno_lost(e) ? DB_LOST : DB_ERR;
}

/* Runs c, reconnecting with back-off and replaying it while the connection
 * is lost, except inside a transaction (see the top of the file). */
static int db_run(struct kt_db *db, struct db_call *c)
{
    unsigned delay = DB_BACKOFF_MIN_MS;

    for (;;) {
        bool in_tx;
        int rc = DB_LOST;

        if (!db->mysql && db_open(db) == 0)
            db_mark_up(db);
        if (db->mysql) {
            rc = c->text ? db_attempt_text(db, c) : db_attempt_stmt(db, c);
            if (rc != DB_LOST) {
                db->errnum = rc == DB_OK ? 0 : db->errnum;
                return rc == DB_OK ? 0 : -1;
            }
        }
        in_tx = db->in_tx;
        db_close(db);
        db_mark_down(db);
        if (in_tx || c->tx_end) {
            char msg[sizeof(db->err)];
            snprintf(msg, sizeof(msg), "%s", db->err);
            db_set_error(db, db->errnum, "connection lost inside a transaction (%s)", msg);
            return -1;
        }
        if (db_sleep(delay) < 0) {
            char msg[sizeof(db->err)];
            snprintf(msg, sizeof(msg), "%s", db->err);
            db_set_error(db, db->errnum, "database stopped while unavailable (%s)", msg);
            return -1;
        }
        delay = delay * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : delay * 2;
    }
}

int kt_db_exec(struct kt_db *db, const char *sql, const struct kt_db_param *params,
               unsigned nparams, uint64_t *affected_r, uint64_t *insert_id_r)
{
    struct db_call c = {.sql = sql, .params = params, .nparams = nparams};

    if (db_run(db, &c) < 0)
        return -1;
    if (affected_r)
        *affected_r = c.affected;
    if (insert_id_r)
        *insert_id_r = c.insert_id;
    return 0;
}

int kt_db_query(struct kt_db *db, const char *sql, const struct kt_db_param *params,
                unsigned nparams, struct kt_db_result **res_r)
{
    struct db_call c = {.sql = sql, .params = params, .nparams = nparams, .want_result = true};

    *res_r = NULL;
    if (db_run(db, &c) < 0) {
        kt_db_result_free(&c.res);
        return -1;
    }
    *res_r = c.res;
    return 0;
}

int kt_db_exec_text(struct kt_db *db, const char *sql)
{
    struct db_call c = {.sql = sql, .text = true};
    return db_run(db, &c);
}

int kt_db_begin(struct kt_db *db)
{
    struct db_call c = {.sql = "START TRANSACTION", .text = true};

    kt_assert(!db->in_tx);
    if (db_run(db, &c) < 0)
        return -1;
    db->in_tx = true;
    return 0;
}

/* A lost connection during COMMIT leaves the outcome unknown: -1. */
int kt_db_commit(struct kt_db *db)
{
    struct db_call c = {.sql = "COMMIT", .text = true, .tx_end = true};
    int rc;

    /* A statement of the transaction already failed on a lost connection:
     * a COMMIT on the new connection would succeed and hide that. */
    if (!db->in_tx) {
        db_set_error(db, 0, "COMMIT without a transaction (was the connection lost?)");
        return -1;
    }
    rc = db_run(db, &c);
    db->in_tx = false;
    return rc;
}

/* A lost connection rolls the transaction back anyway: that counts as done. */
int kt_db_rollback(struct kt_db *db)
{
    struct db_call c = {.sql = "ROLLBACK", .text = true, .tx_end = true};
    int rc;

    if (!db->mysql) {
        db->in_tx = false;
        return 0;
    }
    rc = db_run(db, &c);
    if (rc < 0 && db->mysql == NULL)
        rc = 0;
    db->in_tx = false;
    return rc;
}

/* ---- results ---- */

const char *kt_db_value(const struct kt_db_result *r, unsigned row, unsigned col)
{
    kt_assert(row < r->nrows && col < r->ncols);
    return r->values[(size_t)row * r->ncols + col];
}

long long kt_db_int(const struct kt_db_result *r, unsigned row, unsigned col)
{
    const char *v = kt_db_value(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}
