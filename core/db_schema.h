/* Compiled-in schema migrations (generated into core/migrations.c). */
#ifndef KT_CORE_DB_SCHEMA_H
#define KT_CORE_DB_SCHEMA_H

struct kt_migration {
    int version;
    const char *name;
    const char *sql; /* statements separated by ";\n" */
};

/* Ordered by version, terminated by {0, NULL, NULL}. */
extern const struct kt_migration kt_migrations[];

#endif
