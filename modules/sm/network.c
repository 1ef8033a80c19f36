/* network@host: information about the Kontalk network this node belongs
 * to (kontalk-protocol.md §2.13). One XEP-0050 ad-hoc command, `serverlist`,
 * answers with the servers a client may use: this node first (with its
 * OpenPGP key fingerprint when it has a key), then every enabled row of the
 * `servers` table except this node. The command has a single stage, so the
 * answer is always status='completed' and nothing is kept between requests.
 *
 * Also served here (named.c answers the rest of the service's disco):
 * disco#items of the node http://jabber.org/protocol/commands lists the
 * command (XEP-0050 §2.2), disco#info of the node `serverlist` describes it
 * (§2.3). Errors follow XEP-0050 §4.6: an unknown command node is
 * item-not-found, an action other than execute is bad-request with
 * <bad-action/>.
 *
 * Threads: the handler runs on an I/O thread; the table is read on a worker
 * and the answer is sent from the job's completion. Anyone may ask: the
 * list is public, as it was in both Kontalk generations. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/db.h>
#include <kontalk/log.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_COMMANDS "http://jabber.org/protocol/commands"
#define NS_SERVERLIST "http://kontalk.org/extensions/serverlist"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_DATA "jabber:x:data"
#define CMD_SERVERLIST "serverlist"
#define CMD_LABEL "Server list"

struct serverlist_job {
    struct sm *sm;
    struct kt_stanza *st; /* the request (our reference) */
    struct kt_db_result *rows;
    bool failed;
};

/* --- the command --- */

static void serverlist_run(struct kt_db *db, void *data)
{
    struct serverlist_job *j = data;
    struct kt_db_param p = KT_DB_P_STR(j->sm->core->host);
    if (kt_db_query(db,
                    "SELECT host, fingerprint FROM servers WHERE enabled AND host <> ? "
                    "ORDER BY host",
                    &p, 1, &j->rows) < 0) {
        kt_log(KT_LOG_ERROR, "sm: reading the server list: %s", kt_db_error(db));
        j->failed = true;
    }
}

static void add_server(struct kt_xml *list, const char *host, const char *fingerprint)
{
    struct kt_xml *item = kt_xml_add_child(list, "item", NS_SERVERLIST);
    kt_xml_set_attr(item, "node", host);
    if (fingerprint && *fingerprint)
        kt_xml_set_attr(item, "fingerprint", fingerprint);
}

/* A session id of its own for each execution: the command completes at
 * once, so the id only has to be unique, never looked up. */
static void new_sessionid(char *buf, size_t len)
{
    static atomic_ulong counter;
    snprintf(buf, len, "sl-%llx-%lx", (unsigned long long)time(NULL),
             atomic_fetch_add(&counter, 1) + 1);
}

static void serverlist_done(void *data)
{
    struct serverlist_job *j = data;
    struct sm *sm = j->sm;
    if (j->failed) {
        kt_router_bounce(sm->core->router, j->st, KT_SE_INTERNAL_SERVER_ERROR, NULL);
    } else {
        struct kt_stanza *reply = kt_stanza_iq_result(j->st);
        struct kt_xml *cmd = kt_xml_add_child(kt_stanza_xml_mut(reply), "command", NS_COMMANDS);
        char sessionid[64];
        new_sessionid(sessionid, sizeof(sessionid));
        kt_xml_set_attr(cmd, "node", CMD_SERVERLIST);
        kt_xml_set_attr(cmd, "status", "completed");
        kt_xml_set_attr(cmd, "sessionid", sessionid);
        struct kt_xml *list = kt_xml_add_child(cmd, "serverlist", NS_SERVERLIST);
        add_server(list, sm->core->host, sm_keys_fingerprint(sm));
        for (unsigned i = 0; i < j->rows->nrows; i++)
            add_server(list, kt_db_value(j->rows, i, 0), kt_db_value(j->rows, i, 1));
        kt_stanza_touch(reply);
        sm_send(sm, reply);
        kt_stanza_unref(&reply);
    }
    kt_db_result_free(&j->rows);
    kt_stanza_unref(&j->st);
    free(j);
}

/* An error with the XEP-0050 application condition `app` (e.g. bad-action)
 * beside the RFC 6120 one. */
static void command_error(struct sm *sm, const struct kt_stanza *st, enum kt_stanza_err err,
                          const char *app)
{
    struct kt_stanza *reply = kt_stanza_error_reply(st, err, NULL);
    if (!reply)
        return;
    /* The error element is appended after the request's own children. */
    struct kt_xml *error = NULL;
    for (struct kt_xml *el = kt_xml_first_element(kt_stanza_xml_mut(reply)); el;
         el = kt_xml_next_element(el)) {
        if (strcmp(el->name, "error") == 0)
            error = el;
    }
    if (error) {
        kt_xml_add_child(error, app, NS_COMMANDS);
        kt_stanza_touch(reply);
    }
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
}

static void command_in(struct sm *sm, struct kt_stanza *st, const struct kt_xml *cmd)
{
    const char *node = kt_xml_attr(cmd, "node");
    const char *action = kt_xml_attr(cmd, "action");
    if (kt_stanza_type(st) != KT_TYPE_SET) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST, "commands are iq set");
    } else if (!node || strcmp(node, CMD_SERVERLIST) != 0) {
        kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND, "no such command");
    } else if (action && strcmp(action, "execute") != 0) {
        /* One stage, completed at once: there is nothing to go next,
         * back, complete or cancel. */
        command_error(sm, st, KT_SE_BAD_REQUEST, "bad-action");
    } else {
        struct serverlist_job *j = kt_new(struct serverlist_job);
        j->sm = sm;
        j->st = kt_stanza_ref(st);
        kt_job_submit(sm->core->workers, NULL, serverlist_run, serverlist_done, j);
    }
}

/* --- disco of the command node --- */

static void disco_in(struct sm *sm, struct kt_stanza *st, const struct kt_xml *query, bool info)
{
    const char *node = kt_xml_attr(query, "node");
    bool commands = strcmp(node, NS_COMMANDS) == 0, serverlist = strcmp(node, CMD_SERVERLIST) == 0;
    if (kt_stanza_type(st) != KT_TYPE_GET) {
        kt_router_bounce(sm->core->router, st, KT_SE_BAD_REQUEST,
                         "service discovery defines only iq get");
        return;
    }
    if (info ? !serverlist : !commands) {
        kt_router_bounce(sm->core->router, st, KT_SE_ITEM_NOT_FOUND, NULL);
        return;
    }
    struct kt_stanza *reply = kt_stanza_iq_result(st);
    struct kt_xml *q;
    if (info) {
        q = sm_disco_info_query(reply, "automation", "command-node", CMD_LABEL);
        sm_disco_feature(q, NS_COMMANDS);
        sm_disco_feature(q, NS_DATA);
    } else {
        q = kt_xml_add_child(kt_stanza_xml_mut(reply), "query", NS_DISCO_ITEMS);
        struct kt_xml *item = kt_xml_add_child(q, "item", NS_DISCO_ITEMS);
        kt_xml_set_attr(item, "jid", kt_stanza_to(st)->bare); /* the address the client used */
        kt_xml_set_attr(item, "node", CMD_SERVERLIST);
        kt_xml_set_attr(item, "name", CMD_LABEL);
    }
    kt_xml_set_attr(q, "node", node);
    kt_stanza_touch(reply);
    sm_send(sm, reply);
    kt_stanza_unref(&reply);
}

static enum kt_verdict network_in(struct sm *sm, struct kt_stanza *st, void *data)
{
    (void)data;
    if (kt_stanza_kind(st) != KT_KIND_IQ)
        return KT_PASS;
    if (kt_stanza_type(st) & (KT_TYPE_RESULT | KT_TYPE_ERROR))
        return KT_HANDLED; /* we send no requests: nothing to match, never answered */
    const struct kt_xml *payload = kt_xml_first_element(kt_stanza_xml(st));
    const char *ns = kt_stanza_ns(st);
    if (!payload || !ns)
        return KT_PASS;
    if (strcmp(ns, NS_COMMANDS) == 0 && strcmp(payload->name, "command") == 0) {
        command_in(sm, st, payload);
        return KT_HANDLED;
    }
    /* named.c answers disco without a node; one with a node comes here. */
    bool info = strcmp(ns, NS_DISCO_INFO) == 0;
    if ((info || strcmp(ns, NS_DISCO_ITEMS) == 0) && strcmp(payload->name, "query") == 0 &&
        kt_xml_attr(payload, "node")) {
        disco_in(sm, st, payload, info);
        return KT_HANDLED;
    }
    return KT_PASS;
}

int sm_network_init(struct sm *sm)
{
    static const char *const features[] = {NS_COMMANDS, NULL};
    static const struct sm_service service = {
        .name = "network",
        .category = "component",
        .type = "generic",
        .label = "Network information",
        .features = features,
        .fn = network_in,
    };
    sm_service_add(sm, &service);
    return 0;
}
