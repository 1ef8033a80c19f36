/* Schema versioning. Migrations are compiled in from sql/NNN_name.sql (see
 * scripts/sql2c.sh) as kt_migrations[], ordered by version. The database
 * records what was applied in schema_version; kt_db_schema_upgrade() applies
 * every newer migration in order, one statement at a time (statements are
 * separated by ";\n"), then records it. MariaDB commits DDL implicitly, so a
 * migration that fails half-way is not rolled back: migrations are written
 * to be re-runnable (CREATE TABLE IF NOT EXISTS, ADD COLUMN IF NOT EXISTS). */
#include "config.h"
#include <kontalk/db.h>
#include <kontalk/log.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/db_schema.h"

#define ER_NO_SUCH_TABLE_ 1146u /* mysqld_error.h stays private to db.c */

int kt_db_schema_latest(void)
{
    int latest = 0;
    for (const struct kt_migration *m = kt_migrations; m->name; m++)
        if (m->version > latest)
            latest = m->version;
    return latest;
}

int kt_db_schema_version(struct kt_db *db)
{
    struct kt_db_result *r;
    int v;

    if (kt_db_query(db, "SELECT MAX(version) FROM schema_version", NULL, 0, &r) < 0)
        return kt_db_errno(db) == ER_NO_SUCH_TABLE_ ? 0 : -1;
    /* MAX over an empty table is NULL: nothing applied yet. */
    v = r->nrows == 1 && r->ncols == 1 ? (int)kt_db_int(r, 0, 0) : 0;
    kt_db_result_free(&r);
    return v;
}

/* True if s holds anything besides blanks and "--" comment lines. */
static bool sql_has_statement(const char *s)
{
    while (*s) {
        s += strspn(s, " \t\r\n");
        if (s[0] == '-' && s[1] == '-') {
            s += strcspn(s, "\n");
            continue;
        }
        if (*s)
            return true;
    }
    return false;
}

static int schema_apply(struct kt_db *db, const struct kt_migration *m, char *err, size_t errlen)
{
    char *sql = kt_strdup(m->sql), *stmt = sql, *end;
    unsigned n = 0;
    int rc = -1;

    for (; stmt && *stmt; stmt = end) {
        end = strstr(stmt, ";\n");
        if (end) {
            *end = '\0';
            end += 2;
        }
        if (!sql_has_statement(stmt))
            continue;
        n++;
        if (kt_db_exec_text(db, stmt) < 0) {
            snprintf(err, errlen, "migration %s: statement %u failed: %s", m->name, n,
                     kt_db_error(db));
            goto fail;
        }
    }
    {
        struct kt_db_param p[] = {KT_DB_P_INT(m->version), KT_DB_P_STR(m->name)};
        if (kt_db_exec(db, "INSERT INTO schema_version (version, name, applied) "
                           "VALUES (?, ?, CURRENT_TIMESTAMP)",
                       p, 2, NULL, NULL) < 0) {
            snprintf(err, errlen, "migration %s: cannot record it in schema_version: %s",
                     m->name, kt_db_error(db));
            goto fail;
        }
    }
    rc = 0;
fail:
    free(sql);
    return rc;
}

int kt_db_schema_upgrade(struct kt_db *db, char *err, size_t errlen)
{
    int cur = kt_db_schema_version(db);

    if (cur < 0) {
        snprintf(err, errlen, "cannot read the schema version: %s", kt_db_error(db));
        return -1;
    }
    for (const struct kt_migration *m = kt_migrations; m->name; m++) {
        if (m->version <= cur)
            continue;
        kt_log(KT_LOG_NOTICE, "database: applying migration %s", m->name);
        if (schema_apply(db, m, err, errlen) < 0)
            return -1;
        cur = m->version;
    }
    return cur;
}
