"""push@host (kontalk-protocol.md §2.8, §7): registrations (register, replace, unregister, bad
input), the providers in disco, and wake-ups over the wire: an HTTP receiver on loopback
records what the FCM-shaped provider posts (one POST per wake-up, the token and the
Authorization header, never the message text or its sender), a logged-in raw client plays the
XEP-0357 app server. Triggers: a message stored offline, and one delivered only to sessions
that are inactive (XEP-0352) or idle; one wake-up per user per interval; retries on server
errors; a token FCM calls UNREGISTERED is deleted; https with a CA file."""

import json
import ssl
import time

import pytest

from conftest import setup_c2s, shared_node
from kt.http_receiver import Receiver
from kt.im import expect_message, message
from kt.xmpp import NS_CLIENT, PASSWORDS, client_for, q, show, stanza_error_condition

NS_PUSH = "http://kontalk.org/extensions/presence#push"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUSH0 = "urn:xmpp:push:0"
NS_DATA = "jabber:x:data"
NS_RECEIPTS = "urn:xmpp:receipts"

AUTH = "Bearer test-credential-0123"
SECRET = "the secret body text"
IDLE = 2        # sm.push.idle
INTERVAL = 2    # sm.push.interval
REG_ID_MAX = 64
APP_SERVER_RES = "appserver"

EXPECTED_BODY = {"message": {"token": None,
                             "data": {"action": "org.kontalk.CHECK_MESSAGES"},
                             "android": {"priority": "high", "collapse_key": "new"}}}


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def push_node(binaries, mariadb, certs, tmp_path_factory, receiver):
    sm = {"push": {"url": "http://127.0.0.1:%d/v1/projects/kt/messages:send" % receiver.port,
                   "auth": AUTH, "app_server": "carol@kontalk.test/" + APP_SERVER_RES,
                   "idle": IDLE, "interval": INTERVAL, "timeout": 3, "retries": 2,
                   "reg_id_max": REG_ID_MAX}}
    for node in shared_node(mariadb, certs, tmp_path_factory, "push", sm=sm):
        for i in range(1, 12):
            node.add_user("user%d" % i, "pw%d" % i)
        yield node


@pytest.fixture
def rx(receiver):
    receiver.clear()
    yield receiver
    receiver.clear()


def login(node, user, resource="r", presence=True):
    c = client_for(node)
    c.login(user, PASSWORDS.get(user, "pw" + user[4:]), resource)
    if presence:
        c.send("<presence/>")
    return c


def push_jid(node):
    return "push@%s" % node.host


def register(c, node, provider, reg_id, element="register"):
    prov = "" if provider is None else " provider='%s'" % provider
    body = "" if reg_id is None else reg_id
    return c.iq("set", "<%s xmlns='%s'%s>%s</%s>" % (element, NS_PUSH, prov, body, element),
                to=push_jid(node))


def expect_result(reply):
    assert reply.get("type") == "result", show(reply)
    return reply


def expect_error(reply, condition):
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == condition, show(reply)
    return reply


def rows(node, user):
    return node.sql("SELECT provider, reg_id FROM push WHERE localpart = '%s' ORDER BY provider"
                    % user)


def check_wake(req, token):
    """One wake-up request: the token, the credential, JSON of the FCM v1 shape, nothing of
    the message."""
    assert req["path"] == "/v1/projects/kt/messages:send", req
    assert req["headers"].get("authorization") == AUTH, req
    assert req["headers"].get("content-type") == "application/json", req
    body = json.loads(req["body"])
    expected = json.loads(json.dumps(EXPECTED_BODY))
    expected["message"]["token"] = token
    assert body == expected, body
    everything = req["body"].decode() + req["raw_headers"]
    for leak in (SECRET, "alice", "kontalk.test", "secret"):
        assert leak not in everything, (leak, req)


# -- disco --------------------------------------------------------------------------------------

def test_disco_lists_the_feature_and_the_providers(push_node):
    with login(push_node, "alice", presence=False) as a:
        info = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=push_node.host)
        feats = {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
        assert NS_PUSH in feats, show(info)
        expected = [(push_jid(push_node), "fcm"), (push_jid(push_node), "xmpp")]
        for to in (push_node.host, push_node.jid_domain, push_jid(push_node)):
            items = a.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, NS_PUSH), to=to)
            assert items.get("type") == "result", show(items)
            query = items.find(q(NS_DISCO_ITEMS, "query"))
            assert query.get("node") == NS_PUSH, show(items)
            got = [(i.get("jid"), i.get("node")) for i in query.findall(q(NS_DISCO_ITEMS, "item"))]
            assert got == expected, show(items)
            assert all(i.get("name") for i in query), show(items)
        svc = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=push_jid(push_node))
        ident = svc.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
        assert ident is not None and ident.get("category") == "component", show(svc)
        assert NS_PUSH in {f.get("var") for f in svc.iter(q(NS_DISCO_INFO, "feature"))}
        # Other nodes stay unknown.
        expect_error(a.iq("get", "<query xmlns='%s' node='other'/>" % NS_DISCO_ITEMS,
                          to=push_node.host), "item-not-found")
        expect_error(a.iq("get", "<query xmlns='%s' node='other'/>" % NS_DISCO_ITEMS,
                          to=push_jid(push_node)), "item-not-found")


def test_no_provider_no_feature(make_node):
    node = setup_c2s(make_node(), auth_attempts_per_ip=100000)
    with login(node, "alice", presence=False) as a:
        info = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=node.host)
        assert NS_PUSH not in {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
        expect_error(a.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, NS_PUSH),
                          to=node.host), "item-not-found")
        # Registration for a provider this node does not run.
        expect_error(register(a, node, "fcm", "tok"), "item-not-found")


# -- registrations ----------------------------------------------------------------------------

def test_register_replace_unregister(push_node, rx):
    with login(push_node, "user1", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "  tok-A:1_x-\n "))
        assert rows(push_node, "user1") == [["fcm", "tok-A:1_x-"]]
        expect_result(register(c, push_node, "gcm", "tok-B"))  # the clients' name for it
        assert rows(push_node, "user1") == [["fcm", "tok-B"]]
        expect_result(register(c, push_node, "xmpp", "node-1"))
        assert rows(push_node, "user1") == [["fcm", "tok-B"], ["xmpp", "node-1"]]
        expect_result(register(c, push_node, "fcm", None, "unregister"))
        assert rows(push_node, "user1") == [["xmpp", "node-1"]]
        expect_result(register(c, push_node, "xmpp", None, "unregister"))
        expect_result(register(c, push_node, "xmpp", None, "unregister"))  # idempotent
        assert rows(push_node, "user1") == []
        # Also at push@network.
        reply = c.iq("set", "<register xmlns='%s' provider='fcm'>tok-C</register>" % NS_PUSH,
                     to="push@%s" % push_node.jid_domain)
        expect_result(reply)
        assert rows(push_node, "user1") == [["fcm", "tok-C"]]
        expect_result(register(c, push_node, "fcm", None, "unregister"))
    rx.wait(0, timeout=0, quiet=0.2)  # registering wakes nobody


def test_bad_registrations(push_node):
    with login(push_node, "user2", presence=False) as c:
        expect_error(register(c, push_node, None, "tok"), "bad-request")
        expect_error(register(c, push_node, "", "tok"), "bad-request")
        expect_error(register(c, push_node, "fcm", ""), "bad-request")
        expect_error(register(c, push_node, "fcm", " \n "), "bad-request")
        expect_error(register(c, push_node, "fcm", "two words"), "bad-request")
        expect_error(register(c, push_node, "fcm", "caf\u00e9"), "bad-request")
        expect_error(register(c, push_node, "fcm", "x" * (REG_ID_MAX + 1)), "not-acceptable")
        expect_error(register(c, push_node, "apns", "tok"), "item-not-found")
        expect_error(register(c, push_node, None, None, "unregister"), "bad-request")
        expect_error(c.iq("get", "<register xmlns='%s' provider='fcm'>t</register>" % NS_PUSH,
                          to=push_jid(push_node)), "bad-request")
        expect_error(c.iq("set", "<other xmlns='%s'/>" % NS_PUSH, to=push_jid(push_node)),
                     "service-unavailable")
        expect_error(c.iq("get", "<query xmlns='jabber:iq:version'/>", to=push_jid(push_node)),
                     "service-unavailable")
        assert rows(push_node, "user2") == []
        # The longest id that fits is taken.
        expect_result(register(c, push_node, "fcm", "y" * REG_ID_MAX))
        assert rows(push_node, "user2") == [["fcm", "y" * REG_ID_MAX]]
        expect_result(register(c, push_node, "fcm", None, "unregister"))


def test_a_message_to_push_bounces(push_node):
    with login(push_node, "alice", presence=False) as a:
        a.send("<message to='%s' id='pm1'><body>x</body></message>" % push_jid(push_node))
        expect_error(a.wait_id("pm1"), "service-unavailable")


# -- wake-ups over HTTP -------------------------------------------------------------------------

def test_offline_message_wakes_once_without_content(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "user3", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "token-user3"))
    with login(push_node, "alice") as a:
        a.send(message("user3@%s" % dom, SECRET, "w1"))
        (req,) = rx.wait(1)
    check_wake(req, "token-user3")
    # The message itself was stored, not lost.
    with login(push_node, "user3") as c:
        got = expect_message(c, "w1")
        assert got.find(q(NS_CLIENT, "body")).text == SECRET


def test_one_wake_up_per_interval(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "user4", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "token-user4"))
    with login(push_node, "alice") as a:
        for i in range(5):
            a.send(message("user4@%s" % dom, SECRET, "r%d" % i))
        rx.wait(1, quiet=0.5)
        time.sleep(INTERVAL + 0.2)
        a.send(message("user4@%s" % dom, SECRET, "r5"))
        reqs = rx.wait(2)
    for req in reqs:
        check_wake(req, "token-user4")


def test_receipt_request_wakes_but_not_chat_states_or_headlines(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "user5", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "token-user5"))
    with login(push_node, "alice") as a:
        a.send("<message type='chat' to='user5@%s' id='cs1'><composing xmlns="
               "'http://jabber.org/protocol/chatstates'/></message>" % dom)
        a.send("<message type='headline' to='user5@%s' id='h1'><body>news</body></message>" % dom)
        a.send("<message type='chat' to='user5@%s' id='rc1'><received xmlns='%s' id='x'/>"
               "</message>" % (dom, NS_RECEIPTS))
        rx.wait(0, timeout=0, quiet=1.0)
        a.send("<message type='chat' to='user5@%s' id='rq1'><request xmlns='%s'/></message>"
               % (dom, NS_RECEIPTS))
        (req,) = rx.wait(1)
    check_wake(req, "token-user5")


def test_unregistered_user_gets_no_wake_up(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "user6", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "token-user6"))
        expect_result(register(c, push_node, "fcm", None, "unregister"))
    with login(push_node, "alice") as a:
        a.send(message("user6@%s" % dom, SECRET, "u1"))
        a.send(message("user7@%s" % dom, SECRET, "u2"))  # never registered
    rx.wait(0, timeout=0, quiet=1.5)


def test_delivered_to_active_inactive_and_idle_sessions(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "alice") as a, login(push_node, "user8", "phone") as c:
        expect_result(register(c, push_node, "fcm", "token-user8"))
        # Active and not idle: the message is enough.
        a.send(message("user8@%s" % dom, SECRET, "d1"))
        expect_message(c, "d1")
        rx.wait(0, timeout=0, quiet=0.8)
        # XEP-0352 inactive: delivered and pushed.
        c.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        time.sleep(0.2)
        a.send(message("user8@%s" % dom, SECRET, "d2"))
        expect_message(c, "d2")
        (req,) = rx.wait(1)
        check_wake(req, "token-user8")
        rx.clear()
        # Active again, then quiet for longer than sm.push.idle: pushed again (the full JID
        # path as well).
        c.send("<active xmlns='urn:xmpp:csi:0'/>")
        time.sleep(max(IDLE, INTERVAL) + 0.5)
        a.send(message("user8@%s/phone" % dom, SECRET, "d3"))
        expect_message(c, "d3")
        (req,) = rx.wait(1)
        check_wake(req, "token-user8")
        rx.clear()
        # A stanza from the client makes it active again.
        time.sleep(INTERVAL + 0.2)
        expect_result(c.iq("get", "<ping xmlns='urn:xmpp:ping'/>"))
        a.send(message("user8@%s" % dom, SECRET, "d4"))
        expect_message(c, "d4")
        rx.wait(0, timeout=0, quiet=0.8)


def test_idle_and_active_sessions_of_one_user(push_node, rx):
    """A wake-up only when every session the message went to is away."""
    dom = push_node.jid_domain
    with login(push_node, "alice") as a, login(push_node, "user9", "one") as one, \
            login(push_node, "user9", "two") as two:
        expect_result(register(one, push_node, "fcm", "token-user9"))
        one.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        time.sleep(0.2)
        a.send(message("user9@%s" % dom, SECRET, "b1"))
        expect_message(one, "b1")
        expect_message(two, "b1")
        rx.wait(0, timeout=0, quiet=0.8)
        two.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        time.sleep(0.2)
        a.send(message("user9@%s" % dom, SECRET, "b2"))
        (req,) = rx.wait(1)
        check_wake(req, "token-user9")


def test_retries_then_success_and_no_retry_on_refusal(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "user10", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "token-user10"))
    rx.answers.extend([(503, "{}"), (500, "{}")])
    with login(push_node, "alice") as a:
        a.send(message("user10@%s" % dom, SECRET, "t1"))
        reqs = rx.wait(3, timeout=10)
        for req in reqs:
            check_wake(req, "token-user10")
        rx.clear()
        # 401 is a configuration problem: logged, not tried again.
        rx.answers.append((401, "{}"))
        time.sleep(INTERVAL + 0.2)
        a.send(message("user10@%s" % dom, SECRET, "t2"))
        rx.wait(1)
    assert rows(push_node, "user10") == [["fcm", "token-user10"]]
    push_node.wait_log(r"push to 127\.0\.0\.1 refused with HTTP 401")


def test_unregistered_token_is_deleted(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "user11", presence=False) as c:
        expect_result(register(c, push_node, "fcm", "token-user11"))
        expect_result(register(c, push_node, "xmpp", "node-user11"))
    rx.answers.append((404, json.dumps({"error": {"code": 404, "status": "NOT_FOUND", "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
         "errorCode": "UNREGISTERED"}]}})))
    with login(push_node, "alice") as a:
        a.send(message("user11@%s" % dom, SECRET, "g1"))
        rx.wait(1)
    deadline = time.monotonic() + 5
    while rows(push_node, "user11") != [["xmpp", "node-user11"]] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rows(push_node, "user11") == [["xmpp", "node-user11"]]


# -- XEP-0357 -----------------------------------------------------------------------------------

def test_xep0357_publish_to_the_app_server(push_node, rx):
    dom = push_node.jid_domain
    with login(push_node, "carol", APP_SERVER_RES) as app, login(push_node, "bob") as b, \
            login(push_node, "alice") as a:
        expect_result(register(b, push_node, "xmpp", "bob-node-7"))
        b.close()
        time.sleep(0.3)
        app.quiet(0.3)  # presence
        a.send(message("bob@%s" % dom, SECRET, "x1"))
        iq = app.next(5)
        while iq.tag != q(NS_CLIENT, "iq"):
            iq = app.next(5)
        assert iq.get("type") == "set" and iq.get("from") == push_node.host, show(iq)
        assert iq.get("to") == "carol@%s/%s" % (dom, APP_SERVER_RES), show(iq)
        publish = iq.find("%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "publish")))
        assert publish is not None and publish.get("node") == "bob-node-7", show(iq)
        form = publish.find("%s/%s/%s" % (q(NS_PUBSUB, "item"), q(NS_PUSH0, "notification"),
                                          q(NS_DATA, "x")))
        assert form is not None and form.get("type") == "submit", show(iq)
        fields = {f.get("var"): [v.text for v in f.findall(q(NS_DATA, "value"))]
                  for f in form.findall(q(NS_DATA, "field"))}
        assert fields == {"FORM_TYPE": ["urn:xmpp:push:summary"]}, show(iq)
        text = show(iq)
        assert SECRET not in text and "alice" not in text, text
        # The app server answers; nothing comes back to it.
        app.send("<iq type='result' id='%s' to='%s'/>" % (iq.get("id"), iq.get("from")))
        assert [e for e in app.quiet(0.5) if e.tag == q(NS_CLIENT, "iq")] == []
    rx.wait(0, timeout=0, quiet=0.1)  # bob has no HTTP registration
    with login(push_node, "bob") as b:
        expect_message(b, "x1")
        expect_result(register(b, push_node, "xmpp", None, "unregister"))


# -- https ----------------------------------------------------------------------------------------

def test_https_with_a_ca_file(make_node, certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs[0], certs[1])
    r = Receiver(ctx)
    try:
        node = make_node()
        node.conf["sm"] = {"push": {"url": "https://localhost:%d/send" % r.port, "auth": AUTH,
                                    "ca_file": certs[0], "timeout": 3, "retries": 0}}
        setup_c2s(node, auth_attempts_per_ip=100000)
        dom = node.jid_domain
        with login(node, "bob", presence=False) as b:
            expect_result(register(b, node, "fcm", "tls-token"))
        with login(node, "alice") as a:
            a.send(message("bob@%s" % dom, SECRET, "s1"))
            (req,) = r.wait(1)
        assert req["path"] == "/send"
        assert json.loads(req["body"])["message"]["token"] == "tls-token"
    finally:
        r.close()


def test_https_refuses_an_unknown_certificate(make_node, certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs[0], certs[1])
    r = Receiver(ctx)
    try:
        node = make_node()
        node.conf["sm"] = {"push": {"url": "https://localhost:%d/send" % r.port,
                                    "timeout": 2, "retries": 0}}  # the system's CAs
        setup_c2s(node, auth_attempts_per_ip=100000)
        with login(node, "bob", presence=False) as b:
            expect_result(register(b, node, "fcm", "tls-token"))
        with login(node, "alice") as a:
            a.send(message("bob@%s" % node.jid_domain, SECRET, "s1"))
            node.wait_log(r"push to localhost failed .*certificate not accepted")
        r.wait(0, timeout=0, quiet=0.2)
    finally:
        r.close()


@pytest.mark.parametrize("url", ["ftp://example.org/", "http://", "http://h:0/", "http://h:99999/",
                                 "http://user@h/", "http://[::1/", "http://h/a b"])
def test_bad_url_is_a_start_error(node, url):
    node.conf["sm"] = {"push": {"url": url}}
    node.init_db()
    node.start(wait=False)
    assert node.wait_exit(timeout=20) != 0
    assert "sm.push.url" in node.all_logs()


def test_bad_app_server_is_a_start_error(node):
    node.conf["sm"] = {"push": {"app_server": "not a jid@@"}}
    node.init_db()
    node.start(wait=False)
    assert node.wait_exit(timeout=20) != 0
    assert "sm.push.app_server" in node.all_logs()
