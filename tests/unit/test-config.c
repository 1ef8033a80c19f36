/* Unit tests for core/config.c: settings tables of every type (nested
 * groups included), defaults, every error class with its file:line, the
 * file loader (syntax errors, relative @include) and the markdown reference.
 * Configuration files are written to a temporary directory so their line
 * numbers are known here. */
#include "config.h"
#include <kontalk/buf.h>
#include <kontalk/config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

int main(void);

struct tconf {
    long long port;
    long long big;
    bool tls;
    const char *name;
    int mode;
    long long stanza_max;
    bool strict;
    const char *deep;
};

static const char *const modes[] = {"off", "on", "auto", NULL};

static const struct kt_setting inner_tbl[] = {
    KT_SET_STR("deep", struct tconf, deep, NULL, "a string two groups down"),
    KT_SET_END,
};

static const struct kt_setting limits_tbl[] = {
    KT_SET_INT("stanza_max", struct tconf, stanza_max, 65536, 512, 16777216, "largest stanza"),
    KT_SET_BOOL("strict", struct tconf, strict, false, "refuse sloppy peers"),
    KT_SET_GROUP("inner", inner_tbl, "nested again"),
    KT_SET_END,
};

static const struct kt_setting tbl[] = {
    KT_SET_INT("port", struct tconf, port, 5222, 1, 65535, "TCP port"),
    KT_SET_INT("big", struct tconf, big, 0, 0, 10000000000LL, "needs 64 bits"),
    KT_SET_BOOL("tls", struct tconf, tls, true, "offer TLS"),
    KT_SET_STR("name", struct tconf, name, "kontalk", "a name"),
    KT_SET_ENUM("mode", struct tconf, mode, 2, modes, "how"),
    KT_SET_GROUP("limits", limits_tbl, "resource limits"),
    KT_SET_RAW("listen", "listeners, read by the module"),
    KT_SET_END,
};

static char tmpdir[] = "/tmp/kt-test-config-XXXXXX";

/* Writes text to tmpdir/name; returns the path in a static buffer. */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        diag("cannot write %s", path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as file name, applies tbl to its "c2s" group and returns the
 * apply result; err receives the message. cfg stays alive for strings. */
static int apply_file(config_t *cfg, const char *name, const char *text, struct tconf *c, char *err,
                      size_t errlen, char *path_r)
{
    const char *path = write_file(name, text);
    strcpy(path_r, path);
    config_init(cfg);
    if (kt_config_load(cfg, path, err, errlen) < 0) {
        diag("load failed: %s", err);
        return -2;
    }
    return kt_settings_apply(tbl, config_lookup(cfg, "c2s"), "c2s", c, err, errlen);
}

/* One config file that must fail with "path:line: rest". */
static void expect_error(const char *name, const char *text, int line, const char *rest)
{
    config_t cfg;
    struct tconf c;
    char err[512] = "", path[512], want[1024];

    int rc = apply_file(&cfg, name, text, &c, err, sizeof(err), path);
    snprintf(want, sizeof(want), "%s:%d: %s", path, line, rest);
    is_int(rc, -1, name);
    is_str(err, want, "  message");
    config_destroy(&cfg);
}

static void test_defaults(void)
{
    struct tconf c;
    memset(&c, 0xAB, sizeof(c));
    char err[64] = "";

    is_int(kt_settings_apply(tbl, NULL, "c2s", &c, err, sizeof(err)), 0, "NULL group: ok");
    is_int(c.port, 5222, "default int");
    is_int(c.big, 0, "default int 0");
    ok(c.tls == true, "default bool");
    is_str(c.name, "kontalk", "default string");
    is_int(c.mode, 2, "default enum index");
    is_int(c.stanza_max, 65536, "default in nested group");
    ok(c.strict == false, "default bool in nested group");
    ok(c.deep == NULL, "NULL string default two groups down");

    memset(&c, 0, sizeof(c));
    kt_settings_defaults(tbl, &c);
    is_int(c.port, 5222, "kt_settings_defaults fills ints");
    is_int(c.stanza_max, 65536, "kt_settings_defaults recurses");
}

static void test_valid(void)
{
    config_t cfg;
    struct tconf c;
    char err[512] = "", path[512];
    const char *text =
        "c2s = {\n"
        "  port = 5223;\n"
        "  big = 5000000000L;\n"
        "  tls = false;\n"
        "  name = \"node1\";\n"
        "  mode = \"on\";\n"
        "  limits = { stanza_max = 512; strict = true; inner = { deep = \"x\"; }; };\n"
        "  listen = ( { port = 1; }, { port = 2; } );\n"
        "};\n";

    int rc = apply_file(&cfg, "valid.cfg", text, &c, err, sizeof(err), path);
    is_int(rc, 0, "valid config applies");
    if (rc != 0)
        diag("%s", err);
    is_int(c.port, 5223, "int");
    is_int(c.big, 5000000000LL, "int64 value");
    ok(c.tls == false, "bool");
    is_str(c.name, "node1", "string");
    is_int(c.mode, 1, "enum index");
    is_int(c.stanza_max, 512, "nested int at its minimum");
    ok(c.strict, "nested bool");
    is_str(c.deep, "x", "doubly nested string");
    const char *tree = NULL;
    config_lookup_string(&cfg, "c2s.name", &tree);
    ok(c.name == tree, "string points into the libconfig tree");

    /* kt_setting_where on a RAW value */
    char where[600], want[600];
    config_setting_t *listen = config_lookup(&cfg, "c2s.listen");
    kt_setting_where(listen, where, sizeof(where));
    snprintf(want, sizeof(want), "%s:8", path);
    is_str(where, want, "kt_setting_where gives file:line");
    config_destroy(&cfg);

    /* An empty group keeps defaults; an int in an int64 field range. */
    rc = apply_file(&cfg, "empty.cfg", "c2s = { };\n", &c, err, sizeof(err), path);
    is_int(rc, 0, "empty group");
    is_int(c.port, 5222, "empty group keeps defaults");
    config_destroy(&cfg);

    /* No path prefix: messages and lookups still work at the root. */
    config_init(&cfg);
    ok(config_read_string(&cfg, "port = 7;\n") == CONFIG_TRUE, "root from string");
    rc = kt_settings_apply(tbl, config_root_setting(&cfg), "", &c, err, sizeof(err));
    is_int(rc, 0, "root group with empty path");
    is_int(c.port, 7, "root value");
    config_destroy(&cfg);
}

static void test_errors(void)
{
    expect_error("unknown.cfg", "c2s = {\n  port = 1;\n\n  prot = 2;\n};\n", 4,
                 "c2s.prot: unknown setting (known: port, big, tls, name, mode, limits, listen)");
    expect_error("int-float.cfg", "c2s = {\n  port = 1.5;\n};\n", 2,
                 "c2s.port: expected an integer");
    expect_error("int-string.cfg", "c2s = {\n\n  port = \"5222\";\n};\n", 3,
                 "c2s.port: expected an integer");
    expect_error("bool.cfg", "c2s = {\n  tls = \"yes\";\n};\n", 2, "c2s.tls: expected a boolean");
    expect_error("bool-int.cfg", "c2s = {\n  tls = 1;\n};\n", 2, "c2s.tls: expected a boolean");
    expect_error("string.cfg", "c2s = {\n  name = 5;\n};\n", 2, "c2s.name: expected a string");
    expect_error("enum-type.cfg", "c2s = {\n  mode = true;\n};\n", 2,
                 "c2s.mode: expected one of \"off\", \"on\", \"auto\"");
    expect_error(
        "enum-value.cfg", "c2s = {\n  mode = \"sometimes\";\n};\n", 2,
        "c2s.mode: invalid value \"sometimes\", expected one of \"off\", \"on\", \"auto\"");
    expect_error("group-type.cfg", "c2s = {\n  limits = 5;\n};\n", 2,
                 "c2s.limits: expected a group");
    expect_error("group-list.cfg", "c2s = {\n  limits = ( 1 );\n};\n", 2,
                 "c2s.limits: expected a group");
    expect_error("range-hi.cfg", "c2s = {\n  port = 65536;\n};\n", 2,
                 "c2s.port: value 65536 out of range [1, 65535]");
    expect_error("range-lo.cfg", "c2s = {\n  port = 0;\n};\n", 2,
                 "c2s.port: value 0 out of range [1, 65535]");
    expect_error("range-neg.cfg", "c2s = {\n  port = -1;\n};\n", 2,
                 "c2s.port: value -1 out of range [1, 65535]");
    expect_error("range-64.cfg", "c2s = {\n  big = 10000000001L;\n};\n", 2,
                 "c2s.big: value 10000000001 out of range [0, 10000000000]");
    expect_error("nested-unknown.cfg", "c2s = {\n  limits = {\n    stanza = 1;\n  };\n};\n", 3,
                 "c2s.limits.stanza: unknown setting (known: stanza_max, strict, inner)");
    expect_error("nested-range.cfg", "c2s = {\n  limits = {\n\n\n    stanza_max = 511;\n  };\n};\n",
                 5, "c2s.limits.stanza_max: value 511 out of range [512, 16777216]");
    expect_error("deep.cfg", "c2s = {\n  limits = { inner = {\n deep = 1; }; };\n};\n", 3,
                 "c2s.limits.inner.deep: expected a string");
    expect_error("not-group.cfg", "\nc2s = 5;\n", 2, "c2s: expected a group");
}

static void test_string_source(void)
{
    config_t cfg;
    struct tconf c;
    char err[256] = "";

    config_init(&cfg);
    ok(config_read_string(&cfg, "c2s = {\n  tls = true;\n  port = 99999;\n};\n") == CONFIG_TRUE,
       "read from string");
    int rc = kt_settings_apply(tbl, config_lookup(&cfg, "c2s"), "c2s", &c, err, sizeof(err));
    is_int(rc, -1, "string config error");
    is_str(err, "<config>:3: c2s.port: value 99999 out of range [1, 65535]",
           "no file name: <config>");

    char small[16];
    rc = kt_settings_apply(tbl, config_lookup(&cfg, "c2s"), "c2s", &c, small, sizeof(small));
    is_int(rc, -1, "short error buffer still fails");
    is_str(small, "<config>:3: c2s", "message truncated, NUL-terminated");
    rc = kt_settings_apply(tbl, config_lookup(&cfg, "c2s"), "c2s", &c, NULL, 0);
    is_int(rc, -1, "NULL error buffer");
    config_destroy(&cfg);
}

static void test_load(void)
{
    config_t cfg;
    char err[512] = "", want[1024];

    const char *path = write_file("syntax.cfg", "a = 1;\nb = 2;\nc = = 3;\n");
    config_init(&cfg);
    is_int(kt_config_load(&cfg, path, err, sizeof(err)), -1, "syntax error refused");
    snprintf(want, sizeof(want), "%s:3: ", path);
    ok(strncmp(err, want, strlen(want)) == 0, "syntax error message has file:line");
    ok(strstr(err, "syntax error") != NULL, "syntax error text");
    diag("%s", err);
    config_destroy(&cfg);

    char missing[600];
    snprintf(missing, sizeof(missing), "%s/none.cfg", tmpdir);
    config_init(&cfg);
    is_int(kt_config_load(&cfg, missing, err, sizeof(err)), -1, "missing file refused");
    snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", missing);
    is_str(err, want, "missing file message");
    config_destroy(&cfg);

    /* @include is relative to the including file, not to the cwd. */
    write_file("inc.cfg", "c2s = {\n  port = 4242;\n  name = 3;\n};\n");
    path = write_file("main.cfg", "# main\n@include \"inc.cfg\"\n");
    struct tconf c;
    config_init(&cfg);
    int rc = kt_config_load(&cfg, path, err, sizeof(err));
    is_int(rc, 0, "relative @include loads");
    if (rc < 0)
        diag("%s", err);
    rc = kt_settings_apply(tbl, config_lookup(&cfg, "c2s"), "c2s", &c, err, sizeof(err));
    snprintf(want, sizeof(want), "%s/inc.cfg:3: c2s.name: expected a string", tmpdir);
    is_int(rc, -1, "included value checked");
    is_str(err, want, "error points into the included file");
    config_destroy(&cfg);

    /* A syntax error inside an included file names that file. */
    write_file("incbad.cfg", "x = 1;\ny = ;\n");
    path = write_file("main2.cfg", "@include \"incbad.cfg\"\n");
    config_init(&cfg);
    is_int(kt_config_load(&cfg, path, err, sizeof(err)), -1, "syntax error in an include");
    snprintf(want, sizeof(want), "%s/incbad.cfg:2: ", tmpdir);
    ok(strncmp(err, want, strlen(want)) == 0, "included file's path and line");
    diag("%s", err);
    config_destroy(&cfg);

    /* A bad include: the error names the main file's line. */
    path = write_file("badinc.cfg", "a = 1;\n@include \"nothere.cfg\"\n");
    config_init(&cfg);
    is_int(kt_config_load(&cfg, path, err, sizeof(err)), -1, "missing include refused");
    ok(strstr(err, ":2: ") != NULL, "missing include reports line 2");
    diag("%s", err);
    config_destroy(&cfg);
}

static void test_describe(void)
{
    struct kt_buf b = {0};

    kt_settings_describe(tbl, "c2s", &b);
    ok(b.data != NULL, "describe writes something");
    if (!b.data)
        return;
    ok(strstr(b.data, "- `c2s.port` (integer, default 5222, range [1, 65535]): TCP port\n") != NULL,
       "int row");
    ok(strstr(b.data, "- `c2s.tls` (boolean, default true): offer TLS\n") != NULL, "bool row");
    ok(strstr(b.data, "- `c2s.name` (string, default \"kontalk\"): a name\n") != NULL,
       "string row");
    ok(strstr(b.data, "- `c2s.mode` (enum, one of \"off\", \"on\", \"auto\", default \"auto\"): "
                      "how\n") != NULL,
       "enum row");
    ok(strstr(b.data, "- `c2s.limits` (group): resource limits\n") != NULL, "group row");
    ok(strstr(b.data, "- `c2s.limits.stanza_max` (integer, default 65536") != NULL,
       "nested rows carry the full path");
    ok(strstr(b.data, "- `c2s.limits.inner.deep` (string, no default): ") != NULL,
       "doubly nested row");
    ok(strstr(b.data, "- `c2s.listen` (any): listeners, read by the module\n") != NULL, "raw row");
    int lines = 0;
    for (const char *p = b.data; *p; p++)
        lines += *p == '\n';
    is_int(lines, 11, "one line per row");
    kt_buf_free(&b);
}

static void cleanup(void)
{
    static const char *const names[] = {
        "unknown.cfg",      "int-float.cfg",  "int-string.cfg",
        "bool.cfg",         "bool-int.cfg",   "string.cfg",
        "enum-type.cfg",    "enum-value.cfg", "group-type.cfg",
        "group-list.cfg",   "range-hi.cfg",   "range-lo.cfg",
        "range-neg.cfg",    "range-64.cfg",   "nested-unknown.cfg",
        "nested-range.cfg", "deep.cfg",       "not-group.cfg",
        "valid.cfg",        "empty.cfg",      "syntax.cfg",
        "inc.cfg",          "main.cfg",       "badinc.cfg",
        "incbad.cfg",       "main2.cfg",      NULL,
    };
    char path[600];
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    test_defaults();
    test_valid();
    test_errors();
    test_string_source();
    test_load();
    test_describe();
    cleanup();
    return done_testing();
}
