/* Module loader: ABI and dependency refusals, ordering by requires,
 * settings validation, and the example module driven through a router. */
#include "config.h"
#include "core/core_conf.h"
#include "core/module.h"
#include "tap.h"

#include <kontalk/router.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char mod_dir[1024], test_mod_dir[1024];
static const char *const known[] = {"core", "tls", "database", NULL};

static struct kt_modules *load(const char *text, const char *dir, config_t *cfg, char *err,
                               size_t errlen)
{
    config_init(cfg);
    err[0] = '\0';
    if (!config_read_string(cfg, text)) {
        snprintf(err, errlen, "syntax error at line %d", config_error_line(cfg));
        return NULL;
    }
    return kt_modules_load(cfg, dir, known, err, errlen);
}

static void expect_refusal(const char *text, const char *dir, const char *want, const char *name)
{
    config_t cfg;
    char err[1024];
    struct kt_modules *m = load(text, dir, &cfg, err, sizeof(err));
    ok(m == NULL, "%s: refused", name);
    if (!ok(strstr(err, want) != NULL, "%s: message names the problem", name))
        diag("message: %s", err);
    kt_modules_free(&m);
    config_destroy(&cfg);
}

/* Captures what the router delivers to the users' domain. */
static struct kt_stanza *captured[8];
static unsigned ncaptured;

static enum kt_verdict capture(struct kt_stanza *st, void *data)
{
    (void)data;
    if (ncaptured < KT_ARRAY_SIZE(captured))
        captured[ncaptured++] = kt_stanza_ref(st);
    return KT_HANDLED;
}

static struct kt_stanza *make_stanza(const char *kind, const char *type, const char *to,
                                     const char *payload, const char *ns)
{
    struct kt_xml *x = kt_xml_new(kind, KT_NS_CLIENT);
    kt_xml_set_attr(x, "type", type);
    kt_xml_set_attr(x, "id", "t1");
    kt_xml_set_attr(x, "from", "alice@kontalk.test/phone");
    kt_xml_set_attr(x, "to", to);
    struct kt_xml *p = kt_xml_add_child(x, payload, ns);
    if (strcmp(payload, "body") == 0)
        kt_xml_add_text(p, "hi", 2);
    return kt_stanza_new(x);
}

static void clear_captured(void)
{
    for (unsigned i = 0; i < ncaptured; i++)
        kt_stanza_unref(&captured[i]);
    ncaptured = 0;
}

static void test_example_module(void)
{
    config_t cfg;
    char err[1024];
    struct kt_modules *m =
        load("modules = [\"example\"]; example = { greeting = \"hej\"; max_echo = 1; };", mod_dir,
             &cfg, err, sizeof(err));
    if (!ok(m != NULL, "example loads")) {
        diag("%s", err);
        return;
    }
    struct kt_server srv = {0};
    srv.core.host = "localhost";
    srv.core.network = "kontalk.test";
    srv.core.config = &cfg;
    srv.core.router = kt_router_new();
    kt_route_add(srv.core.router, "kontalk.test", 0, capture, NULL);
    is_int(kt_modules_init(m, &srv.core), 0, "example init");
    kt_router_freeze(srv.core.router);

    struct kt_stanza *st = make_stanza("iq", "get", "example.localhost", "hello",
                                       "urn:kontalk:example:0");
    kt_router_dispatch(srv.core.router, st);
    kt_stanza_unref(&st);
    if (ok(ncaptured == 1, "hello iq answered")) {
        is_str(kt_stanza_wire(captured[0], NULL),
               "<iq to='alice@kontalk.test/phone' from='example.localhost' type='result' id='t1'>"
               "<hello xmlns='urn:kontalk:example:0'>hej</hello></iq>",
               "hello reply carries the configured greeting");
    }
    clear_captured();

    st = make_stanza("iq", "get", "example.localhost", "query", "urn:other");
    kt_router_dispatch(srv.core.router, st);
    kt_stanza_unref(&st);
    if (ok(ncaptured == 1, "unknown iq bounced")) {
        const struct kt_xml *e = kt_xml_child(kt_stanza_xml(captured[0]), "error", NULL);
        ok(e && kt_xml_child(e, "service-unavailable", KT_NS_STANZAS),
           "bounce is service-unavailable");
    }
    clear_captured();

    st = make_stanza("message", "chat", "example.localhost", "body", KT_NS_CLIENT);
    kt_router_dispatch(srv.core.router, st);
    kt_router_dispatch(srv.core.router, st);
    kt_stanza_unref(&st);
    if (ok(ncaptured == 2, "message echoed, then refused")) {
        is_str(kt_stanza_from(captured[0])->full, "example.localhost", "echo comes from the service");
        ok(kt_stanza_type(captured[1]) == KT_TYPE_ERROR &&
               kt_xml_child(kt_xml_child(kt_stanza_xml(captured[1]), "error", NULL),
                            "resource-constraint", KT_NS_STANZAS),
           "beyond max_echo: resource-constraint");
    }
    clear_captured();

    if (ok(srv.nstatus == 1, "example registered a status line")) {
        struct kt_buf out = {0};
        srv.status[0].fn(&out, srv.status[0].data);
        is_str(out.data, "example: 8 stanzas seen, 1 echoed\n", "status counts what the IN hook saw");
        kt_buf_free(&out);
    }
    kt_modules_free(&m);
    free(srv.status);
    kt_router_free(&srv.core.router);
    config_destroy(&cfg);
}

static void test_order(void)
{
    config_t cfg;
    char err[1024];
    struct kt_modules *m = load("modules = [\"sm\", \"example\", \"c2s\"];", mod_dir, &cfg, err,
                                sizeof(err));
    if (ok(m != NULL, "sm before c2s in the list loads")) {
        is_str(kt_modules_names(m), "example c2s sm", "sm is ordered after c2s, which it requires");
        is_int(kt_modules_count(m), 3, "three modules");
    } else {
        diag("%s", err);
    }
    kt_modules_free(&m);
    config_destroy(&cfg);
}

int main(void)
{
    const char *b = getenv("top_builddir");
    if (!b)
        b = ".";
    snprintf(mod_dir, sizeof(mod_dir), "%s/modules/.libs", b);
    snprintf(test_mod_dir, sizeof(test_mod_dir), "%s/tests/unit/.libs", b);

    expect_refusal("modules = [\"badabi\"];", test_mod_dir, "built for module ABI 999",
                   "wrong ABI");
    expect_refusal("modules = [\"needy\"];", test_mod_dir,
                   "module 'needy' requires module 'nosuch', which is not loaded",
                   "missing dependency");
    expect_refusal("modules = [\"nosuchmod\"];", mod_dir, "module 'nosuchmod': cannot load",
                   "missing module file");
    expect_refusal("modules = [\"sm\"];", mod_dir, "requires module 'c2s'", "sm without c2s");
    expect_refusal("modules = [\"c2s\", \"c2s\"];", mod_dir, "listed twice", "duplicate");
    expect_refusal("modules = [\"../x\"];", mod_dir, "not a module name", "path in a name");
    expect_refusal("modules = [\"example\"];\nexample = { greeting = 5; };", mod_dir,
                   ":2: example.greeting: expected a string", "module setting type");
    expect_refusal("modules = [\"example\"];\nexample = {\n  bogus = 1; };", mod_dir,
                   ":3: example.bogus: unknown setting", "module unknown setting");
    expect_refusal("modules = [\"c2s\"];\n\nsm = { };", mod_dir, ":3: sm: unknown setting",
                   "group of a module not loaded");
    expect_refusal("modules = [\"net\"];\nnet = { port = 1; };", mod_dir,
                   "net.port: unknown setting (module 'net' has no settings)",
                   "settings for a module without settings");
    test_order();
    test_example_module();
    return done_testing();
}
