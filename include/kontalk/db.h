/* MariaDB access for worker threads. Each worker owns one connection;
 * statements are prepared once per connection and cached by SQL text.
 * When the server goes away, the call reconnects with backoff and retries,
 * so queued work waits instead of failing (a statement that was in flight
 * when the connection dropped may have committed: writes must be idempotent
 * or tolerate that). Only kt_db_stop() makes the retry loop give up. */
#ifndef KONTALK_DB_H
#define KONTALK_DB_H

#include "base.h"
#include <stdint.h>

struct kt_db_conf {
    const char *host;   /* used when socket is empty */
    long long port;
    const char *socket; /* unix socket path; preferred when set */
    const char *name;
    const char *user;
    const char *password;
    long long connect_timeout; /* seconds */
};

enum kt_db_param_type { KT_DB_NULL, KT_DB_INT, KT_DB_TEXT, KT_DB_BLOB };
struct kt_db_param {
    enum kt_db_param_type type;
    long long i;
    const void *data; /* TEXT/BLOB */
    size_t len;
};
#define KT_DB_P_INT(v) ((struct kt_db_param){.type = KT_DB_INT, .i = (v)})
#define KT_DB_P_STR(s) ((struct kt_db_param){.type = KT_DB_TEXT, .data = (s), .len = strlen(s)})
#define KT_DB_P_BLOB(p, n) ((struct kt_db_param){.type = KT_DB_BLOB, .data = (p), .len = (n)})
#define KT_DB_P_NULL ((struct kt_db_param){.type = KT_DB_NULL})

/* A fully buffered result: every value as bytes (NUL-terminated) or NULL. */
struct kt_db_result {
    unsigned nrows, ncols;
    char **values;  /* nrows * ncols, row-major; NULL for SQL NULL */
    size_t *lens;
};
KT_API const char *kt_db_value(const struct kt_db_result *r, unsigned row, unsigned col);
KT_API long long kt_db_int(const struct kt_db_result *r, unsigned row, unsigned col);
KT_API void kt_db_result_free(struct kt_db_result **r);

struct kt_db;

/* Creates a handle; connects lazily on first use. */
KT_API struct kt_db *kt_db_new(const struct kt_db_conf *conf);
KT_API void kt_db_free(struct kt_db **db);
/* Connects now; returns -1 and a message (no retry) if it cannot. */
KT_API int kt_db_connect(struct kt_db *db, char *err, size_t errlen);

/* Runs a statement with ? parameters. Returns 0, or -1 on an SQL error that
 * is not a lost connection (duplicate key, syntax...), with the message in
 * kt_db_error(). affected_r/insert_id_r may be NULL. */
KT_API int kt_db_exec(struct kt_db *db, const char *sql, const struct kt_db_param *params,
                      unsigned nparams, uint64_t *affected_r, uint64_t *insert_id_r);
/* As kt_db_exec for a SELECT; *res_r is set on success (caller frees). */
KT_API int kt_db_query(struct kt_db *db, const char *sql, const struct kt_db_param *params,
                       unsigned nparams, struct kt_db_result **res_r);
/* Runs a plain SQL text (no parameters, no result), e.g. DDL from migrations. */
KT_API int kt_db_exec_text(struct kt_db *db, const char *sql);
KT_API const char *kt_db_error(const struct kt_db *db);
/* MariaDB error number of the last failed call (1062 duplicate key, 1146 no
 * such table...), 0 after a success or for errors not from the server. */
KT_API unsigned kt_db_errno(const struct kt_db *db);
KT_API int kt_db_begin(struct kt_db *db);
KT_API int kt_db_commit(struct kt_db *db);
KT_API int kt_db_rollback(struct kt_db *db);

/* Any thread: makes every retry loop give up (shutdown). */
KT_API void kt_db_stop(void);
/* Process-wide counters (status). */
KT_API unsigned long long kt_db_reconnects(void);
KT_API bool kt_db_is_up(void);

/* Schema. Migrations are compiled in from sql/NNN_name.sql. */
KT_API int kt_db_schema_latest(void);
/* Current version from schema_version, 0 if the table is missing, -1 on error. */
KT_API int kt_db_schema_version(struct kt_db *db);
/* Applies every migration above the current version, each in order.
 * Returns the resulting version or -1 (message in err). */
KT_API int kt_db_schema_upgrade(struct kt_db *db, char *err, size_t errlen);

#endif
