"""A Kontalk-style client, scripted end to end (kontalk-protocol.md §4 "Flows to script"), over
real TLS against one node: two phones register with the dummy code and bridge certificates
whose keys GnuPG made, log in with EXTERNAL, look around (disco, public keys, roster match,
server list), exchange a message with a receipt through offline storage, subscribe with the
key injected, block and unblock, go inactive (CSI), and get a push wake-up at a loopback HTTP
receiver while offline."""

import base64
import shutil

import pytest

from conftest import shared_node
from kt.http_receiver import Receiver
from kt.im import expect_message, no_message, presence_where
from kt.kontalk import KeyUser, phone_local
from kt.xmpp import NS_CLIENT, Client, q, show, stanza_error_condition

NS_REGISTER = "jabber:iq:register"
NS_DATA = "jabber:x:data"
NS_PUBKEY = "urn:xmpp:pubkey:2"
NS_ROSTER_MATCH = "http://kontalk.org/extensions/roster"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_SERVERLIST = "http://kontalk.org/extensions/serverlist"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_DELAY = "urn:xmpp:delay"
NS_PUSH = "http://kontalk.org/extensions/presence#push"
NS_BLOCKING = "urn:xmpp:blocking"
NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="GnuPG (gnupg) missing")


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def knode(binaries, mariadb, certs, tmp_path_factory, node_key, receiver):
    sm = {"key": node_key[1], "register": {"provider": "dummy", "throttle_ip_delay": 0},
          "push": {"url": "http://127.0.0.1:%d/send" % receiver.port, "auth": "Bearer t",
                   "interval": 1}}
    yield from shared_node(mariadb, certs, tmp_path_factory, "flow", sm=sm)


def form(form_type, **fields):
    return ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value>"
            "</field>%s</x>" % (NS_DATA, form_type, "".join(
                "<field var='%s'><value>%s</value></field>" % (k, v) for k, v in fields.items())))


def register_iq(c, type_, payload):
    return c.iq(type_, "<query xmlns='%s'>%s</query>" % (NS_REGISTER, payload), to="")


def form_fields(reply):
    x = reply.find("%s/%s" % (q(NS_REGISTER, "query"), q(NS_DATA, "x")))
    return {f.get("var"): (f.findtext(q(NS_DATA, "value"))) for f in x.findall(q(NS_DATA, "field"))}


def register(knode, keys, directory, number):
    """Flow 1: form, number, code with the bridge certificate; returns the user with a
    certificate carrying the signed key."""
    with Client(knode.c2s_port(), knode.jid_domain) as c:
        c.start()
        assert register_iq(c, "get", "").get("type") == "result"
        r = register_iq(c, "set", form(NS_REGISTER, phone=number, challenge="pin"))
        assert r.get("type") == "result", show(r)
    user = KeyUser(keys, directory, phone_local(number), knode.jid_domain)
    with Client(knode.c2s_port(), knode.jid_domain, cert=user.files) as c:
        c.start()
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#code",
                                       code="123456"))
        assert r.get("type") == "result", show(r)
    user.write_cert(keyring=base64.b64decode(form_fields(r)["publickey"]))
    user.jid = "%s@%s" % (user.local, knode.jid_domain)
    return user


def connect(knode, user, resource):
    """Flow 2: EXTERNAL, bind, roster, presence."""
    c = Client(knode.c2s_port("direct"), knode.jid_domain, direct_tls=True, cert=user.files)
    c.login_external(resource)
    assert c.iq("get", "<query xmlns='jabber:iq:roster'/>", to="").get("type") == "result"
    c.send("<presence><status/></presence>")
    return c


def test_kontalk_client_flow(knode, keys, tmp_path, node_key, receiver):
    a = register(knode, keys, tmp_path, "+15555215554")
    b = register(knode, keys, tmp_path, "+393331234567")
    ca = connect(knode, a, "phoneA")
    try:
        # 3: disco, public keys, roster match, server list.
        items = ca.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS)
        jids = {i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))}
        assert {"probe@" + knode.host, "network@" + knode.host,
                "multicast@" + knode.host, "push@" + knode.host} <= jids, show(items)
        for to, fpr in ((None, node_key[0]), (b.jid, b.fpr), (a.jid, a.fpr)):
            r = ca.iq("get", "<pubkey xmlns='%s'/>" % NS_PUBKEY, to=to)
            assert keys.show(base64.b64decode(r.findtext(q(NS_PUBKEY, "pubkey")))) == [fpr]
        unknown = phone_local("+15555550000")
        r = ca.iq("get", "<query xmlns='%s'><item jid='%s@%s'/><item jid='%s@%s'/></query>"
                  % (NS_ROSTER_MATCH, b.local, knode.host, unknown, knode.host),
                  to="probe@" + knode.host)
        assert r.get("type") == "result", show(r)
        assert [i.get("jid") for i in r.iter(q(NS_ROSTER_MATCH, "item"))] == [b.jid]
        r = ca.iq("set", "<command xmlns='%s' node='serverlist' action='execute'/>"
                  % NS_COMMANDS, to="network@" + knode.host)
        servers = [(i.get("node"), i.get("fingerprint"))
                   for i in r.iter(q(NS_SERVERLIST, "item"))]
        assert servers == [(knode.host, node_key[0])], show(r)

        # 4: a message with a receipt request to B, offline: stored, then a push wake-up.
        cb = connect(knode, b, "phoneB")
        r = cb.iq("set", "<register xmlns='%s' provider='fcm'>B-TOKEN</register>" % NS_PUSH,
                  to="push@" + knode.host)
        assert r.get("type") == "result", show(r)
        cb.close()
        receiver.clear()
        ca.send("<message type='chat' to='%s' id='m1'><body>hello B</body>"
                "<request xmlns='%s'/></message>" % (b.jid, NS_RECEIPTS))
        posts = receiver.wait(1)
        assert b"B-TOKEN" in posts[0]["body"] and b"hello" not in posts[0]["body"]
        cb = connect(knode, b, "phoneB")
        m = expect_message(cb, "m1")
        assert m.findtext(q(NS_CLIENT, "body")) == "hello B"
        assert m.find(q(NS_DELAY, "delay")) is not None, show(m)
        assert m.get("from").startswith(a.jid + "/")
        cb.send("<message to='%s' id='r1'><received xmlns='%s' id='m1'/></message>"
                % (m.get("from"), NS_RECEIPTS))
        rec = expect_message(ca, "r1")
        assert rec.find(q(NS_RECEIPTS, "received")).get("id") == "m1"

        # 5: subscribe with the key injected, subscribed, presence with the fingerprint.
        ca.send("<presence type='subscribe' to='%s'/>" % b.jid)
        sub = presence_where(cb, lambda e: e.get("type") == "subscribe")
        pk = sub.find(q(NS_PUBKEY, "pubkey"))
        assert pk.findtext(q(NS_PUBKEY, "print")) == a.fpr, show(sub)
        assert keys.show(base64.b64decode(pk.findtext(q(NS_PUBKEY, "key")))) == [a.fpr]
        cb.send("<presence type='subscribed' to='%s'/>" % a.jid)
        p = presence_where(ca, lambda e: e.get("type") is None and
                           e.get("from", "").startswith(b.jid + "/"))
        assert p.find(q(NS_PUBKEY, "pubkey")).findtext(q(NS_PUBKEY, "print")) == b.fpr

        # 6: B blocks A: A's messages are refused; unblocked, they pass again.
        r = cb.iq("set", "<block xmlns='%s'><item jid='%s'/></block>" % (NS_BLOCKING, a.jid),
                  to="")
        assert r.get("type") == "result", show(r)
        ca.send("<message type='chat' to='%s' id='m2'><body>blocked?</body></message>" % b.jid)
        err = expect_message(ca, "m2")
        # XEP-0191 §3.3: a blocked contact's message gets service-unavailable.
        assert err.get("type") == "error" and \
            stanza_error_condition(err)[1] == "service-unavailable"
        no_message(cb)
        r = cb.iq("set", "<unblock xmlns='%s'><item jid='%s'/></unblock>" % (NS_BLOCKING, a.jid),
                  to="")
        assert r.get("type") == "result", show(r)
        ca.send("<message type='chat' to='%s' id='m3'><body>again</body></message>" % b.jid)
        expect_message(cb, "m3")

        # 7: CSI: while B is inactive, chat states are dropped and messages still arrive.
        cb.send("<inactive xmlns='%s'/>" % NS_CSI)
        ca.send("<message type='chat' to='%s' id='c1'><composing xmlns='%s'/></message>"
                % (b.jid, NS_CHATSTATES))
        ca.send("<message type='chat' to='%s' id='m4'><body>while inactive</body></message>"
                % b.jid)
        expect_message(cb, "m4")
        cb.send("<active xmlns='%s'/>" % NS_CSI)
        no_message(cb)
        cb.close()
    finally:
        ca.close()
