"""multicast@ (XEP-0033 as Kontalk uses it, kontalk-protocol.md §2.12) over the wire: a
message or presence to the service is copied to each to/cc/bcc address with the sender's
'from' and without the <addresses/> header, once per JID, and each copy then follows the
normal rules (offline storage, blocking, directed presence); a bad header is refused as a
whole before anything goes out; disco of the service and of the node."""

import time

import pytest

from conftest import shared_node
from kt.im import expect_message, no_message, online
from kt.xmpp import NS_CLIENT, q, show, stanza_error_condition

NS_ADDRESS = "http://jabber.org/protocol/address"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_BLOCKING = "urn:xmpp:blocking"
NS_DELAY = "urn:xmpp:delay"
MAX = 5


@pytest.fixture(scope="module")
def mc_node(binaries, mariadb, certs, tmp_path_factory):
    yield from shared_node(mariadb, certs, tmp_path_factory, "multicast",
                           sm={"multicast_max": MAX})


def jid(node, user):
    return "%s@%s" % (user, node.jid_domain)


def service(node):
    return "multicast@%s" % node.jid_domain


def addresses(*items):
    """<addresses/> from (type, jid[, extra attributes]) tuples."""
    out = []
    for item in items:
        extra = " " + item[2] if len(item) > 2 else ""
        out.append("<address type='%s' jid='%s'%s/>" % (item[0], item[1], extra))
    return "<addresses xmlns='%s'>%s</addresses>" % (NS_ADDRESS, "".join(out))


def multicast_message(node, id_, body, header):
    return "<message type='chat' to='%s' id='%s'><body>%s</body>%s</message>" % (
        service(node), id_, body, header)


def wait_for(c, pred, what, timeout=5):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no %s; got %s" % (what, [show(e) for e in seen]))
        elem = c.next(remaining)
        if pred(elem):
            return elem
        seen.append(elem)


def expect_error(c, id_, condition):
    err = wait_for(c, lambda e: e.get("id") == id_ and e.get("type") == "error",
                   "error for %s" % id_)
    assert stanza_error_condition(err)[1] == condition, show(err)
    return err


def assert_copy(got, node, sender, body):
    assert got.get("from") == sender, show(got)
    assert got.find(q(NS_ADDRESS, "addresses")) is None, "header left in a copy: " + show(got)
    assert got.findtext(q(NS_CLIENT, "body")) == body, show(got)


# -- disco ---------------------------------------------------------------------------------

def test_disco_info_of_service(mc_node):
    with online(mc_node, "alice", "disco", presence=False) as a:
        reply = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=service(mc_node))
        assert reply.get("type") == "result" and reply.get("from") == service(mc_node), show(reply)
        query = reply.find(q(NS_DISCO_INFO, "query"))
        ids = [dict(i.attrib) for i in query.findall(q(NS_DISCO_INFO, "identity"))]
        assert ids == [{"category": "service", "type": "multicast", "name": "Multicast"}], \
            show(reply)
        features = {f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature"))}
        assert NS_ADDRESS in features and NS_DISCO_INFO in features, show(reply)


def test_node_disco_items_list_service(mc_node):
    with online(mc_node, "alice", "items", presence=False) as a:
        reply = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS)
        assert reply.get("type") == "result", show(reply)
        items = [dict(i.attrib) for i in reply.iter(q(NS_DISCO_ITEMS, "item"))]
        assert {"jid": "multicast@%s" % mc_node.host, "name": "Multicast"} in items, show(reply)


# -- messages ------------------------------------------------------------------------------

def test_message_to_two_recipients(mc_node):
    dom = mc_node.jid_domain
    with online(mc_node, "alice") as a, online(mc_node, "bob") as b, \
            online(mc_node, "carol") as c:
        time.sleep(0.3)
        a.send(multicast_message(mc_node, "g1", "hello group", addresses(
            ("to", jid(mc_node, "bob")), ("to", jid(mc_node, "carol")))))
        for client in (b, c):
            assert_copy(expect_message(client, "g1"), mc_node, "alice@%s/r" % dom, "hello group")
        no_message(b)
        no_message(c)
        no_message(a)  # no error, and no copy of its own


def test_sender_devices_get_one_sent_carbon(mc_node):
    """XEP-0280: the sender's other resource gets a 'sent' carbon of the message to
    multicast@, and none of each copy the service makes."""
    with online(mc_node, "alice") as a, online(mc_node, "alice", "tablet") as a2, \
            online(mc_node, "bob") as b, online(mc_node, "carol") as c:
        r = a2.iq("set", "<enable xmlns='urn:xmpp:carbons:2'/>", to="")
        assert r.get("type") == "result", show(r)
        time.sleep(0.3)
        a.send(multicast_message(mc_node, "g9", "to the group", addresses(
            ("to", jid(mc_node, "bob")), ("to", jid(mc_node, "carol")))))
        expect_message(b, "g9")
        expect_message(c, "g9")
        sent = [e for e in a2.quiet(1.0) if e.tag == q(NS_CLIENT, "message")]
        assert len(sent) == 1, [show(e) for e in sent]
        fwd = sent[0].find("{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/"
                           "{%s}message" % NS_CLIENT)
        assert fwd is not None and fwd.get("to") == service(mc_node), show(sent[0])


def test_cc_bcc_duplicates_and_delivered(mc_node):
    """cc and bcc are delivered like to; one copy per JID; delivered='true' is skipped and
    the other address types name nobody."""
    with online(mc_node, "alice") as a, online(mc_node, "bob") as b, \
            online(mc_node, "carol") as c:
        time.sleep(0.3)
        a.send(multicast_message(mc_node, "g2", "cc and bcc", addresses(
            ("cc", jid(mc_node, "bob")), ("bcc", jid(mc_node, "carol")),
            ("to", jid(mc_node, "bob")), ("to", jid(mc_node, "alice"), "delivered='true'"),
            ("replyto", jid(mc_node, "alice")), ("noreply", jid(mc_node, "alice")))))
        assert_copy(expect_message(b, "g2"), mc_node, "alice@%s/r" % mc_node.jid_domain,
                    "cc and bcc")
        assert_copy(expect_message(c, "g2"), mc_node, "alice@%s/r" % mc_node.jid_domain,
                    "cc and bcc")
        no_message(b)  # bob was named twice: one copy
        no_message(c)
        no_message(a)  # the delivered address of alice's own is not delivered again


def test_offline_recipient_gets_copy_at_login(mc_node):
    with online(mc_node, "alice", "off") as a, online(mc_node, "bob", "off") as b:
        time.sleep(0.3)
        a.send(multicast_message(mc_node, "g3", "while you were out", addresses(
            ("to", jid(mc_node, "bob")), ("to", jid(mc_node, "carol")))))
        assert_copy(expect_message(b, "g3"), mc_node, "alice@%s/off" % mc_node.jid_domain,
                    "while you were out")
        no_message(a, 1.0)
    with online(mc_node, "carol", "later") as c:
        got = expect_message(c, "g3")
        assert_copy(got, mc_node, "alice@%s/off" % mc_node.jid_domain, "while you were out")
        assert got.find(q(NS_DELAY, "delay")) is not None, show(got)


# -- refusals ------------------------------------------------------------------------------

def test_too_many_addresses_not_acceptable(mc_node):
    with online(mc_node, "alice", "lim") as a, online(mc_node, "bob", "lim") as b:
        time.sleep(0.3)
        many = [("to", "user%d@%s" % (i, mc_node.jid_domain)) for i in range(MAX)]
        a.send(multicast_message(mc_node, "l1", "too many",
                                 addresses(("to", jid(mc_node, "bob")), *many)))
        err = expect_error(a, "l1", "not-acceptable")
        assert err.get("from") == service(mc_node), show(err)
        no_message(b)
        # Exactly the limit passes (delivered ones count, they are receiver fields too).
        a.send(multicast_message(mc_node, "l2", "just enough", addresses(
            ("to", jid(mc_node, "bob")),
            *[("cc", "user%d@%s" % (i, mc_node.jid_domain), "delivered='true'")
              for i in range(MAX - 1)])))
        expect_message(b, "l2")


@pytest.mark.parametrize("bad", ["bob@", "@nobody.test", "a:b@kontalk.test", ""])
def test_bad_jid_refuses_everything(mc_node, bad):
    with online(mc_node, "alice", "bad") as a, online(mc_node, "bob", "bad") as b:
        time.sleep(0.3)
        a.send(multicast_message(mc_node, "b1", "never sent", addresses(
            ("to", jid(mc_node, "bob")), ("to", bad))))
        expect_error(a, "b1", "jid-malformed")
        no_message(b)


@pytest.mark.parametrize("header,condition", [
    ("", "bad-request"),
    ("<addresses xmlns='%s'/>" % NS_ADDRESS, "bad-request"),
    (addresses(("to", "bob@kontalk.test", "delivered='true'")), "bad-request"),
    ("<addresses xmlns='%s'><address type='to'/></addresses>" % NS_ADDRESS, "bad-request"),
    ("<addresses xmlns='%s'><address type='sideways' jid='bob@kontalk.test'/></addresses>"
     % NS_ADDRESS, "bad-request"),
    ("<addresses xmlns='%s'><address type='to' uri='sip:bob@example.com'/></addresses>"
     % NS_ADDRESS, "jid-malformed"),
    (addresses(("to", "bob@kontalk.test")) + addresses(("to", "carol@kontalk.test")),
     "bad-request"),
])
def test_bad_header_refused(mc_node, header, condition):
    assert mc_node.jid_domain == "kontalk.test"
    with online(mc_node, "alice", "hdr") as a, online(mc_node, "bob", "hdr") as b:
        time.sleep(0.3)
        a.send(multicast_message(mc_node, "h1", "refused", header))
        expect_error(a, "h1", condition)
        no_message(b)


def test_iq_is_not_fanned_out(mc_node):
    with online(mc_node, "alice", "iq") as a, online(mc_node, "bob", "iq") as b:
        time.sleep(0.3)
        reply = a.iq("set", addresses(("to", jid(mc_node, "bob"))), to=service(mc_node),
                     id_="i1")
        assert reply.get("type") == "error", show(reply)
        assert stanza_error_condition(reply)[1] == "feature-not-implemented", show(reply)
        assert not [e for e in b.quiet(0.5) if e.get("id") == "i1"]


def test_subscription_to_service_denied(mc_node):
    with online(mc_node, "alice", "sub") as a:
        a.send("<presence type='subscribe' to='%s'/>" % service(mc_node))
        got = wait_for(a, lambda e: e.tag == q(NS_CLIENT, "presence") and
                       e.get("type") == "unsubscribed", "unsubscribed from the service")
        assert got.get("from") == service(mc_node), show(got)
        a.iq("set", "<query xmlns='jabber:iq:roster'><item jid='%s' subscription='remove'/>"
             "</query>" % service(mc_node), to="")


def test_blocking_applies_to_each_copy(mc_node):
    """bob blocks alice: bob gets nothing and alice gets bob's service-unavailable (XEP-0191
    §3.4) while carol gets her copy; alice blocks carol: her copy is refused with
    not-acceptable."""
    with online(mc_node, "alice", "blk") as a, online(mc_node, "bob", "blk") as b, \
            online(mc_node, "carol", "blk") as c:
        r = b.iq("set", "<block xmlns='%s'><item jid='%s'/></block>" % (NS_BLOCKING,
                                                                        jid(mc_node, "alice")),
                 to="")
        assert r.get("type") == "result", show(r)
        try:
            time.sleep(0.3)
            a.send(multicast_message(mc_node, "k1", "not for bob", addresses(
                ("to", jid(mc_node, "bob")), ("to", jid(mc_node, "carol")))))
            expect_message(c, "k1")
            err = expect_error(a, "k1", "service-unavailable")
            assert err.get("from") == jid(mc_node, "bob"), show(err)
            no_message(b)
        finally:
            r = b.iq("set", "<unblock xmlns='%s'/>" % NS_BLOCKING, to="")
            assert r.get("type") == "result", show(r)
        r = a.iq("set", "<block xmlns='%s'><item jid='%s'/></block>" % (NS_BLOCKING,
                                                                        jid(mc_node, "carol")),
                 to="")
        assert r.get("type") == "result", show(r)
        try:
            a.send(multicast_message(mc_node, "k2", "not to carol", addresses(
                ("to", jid(mc_node, "bob")), ("to", jid(mc_node, "carol")))))
            expect_message(b, "k2")
            err = expect_error(a, "k2", "not-acceptable")
            assert err.get("from") == jid(mc_node, "carol"), show(err)
            no_message(c)
        finally:
            r = a.iq("set", "<unblock xmlns='%s'/>" % NS_BLOCKING, to="")
            assert r.get("type") == "result", show(r)


# -- presence ------------------------------------------------------------------------------

def is_presence_from(sender, type_=None):
    return lambda e: (e.tag == q(NS_CLIENT, "presence") and e.get("from") == sender and
                      e.get("type") == type_)


def test_presence_fan_out_and_unavailable(mc_node):
    """A presence reaches each address as directed presence, so the sender's unavailable
    reaches them too when it leaves (RFC 6121 §4.6.3, XEP-0033 1.2)."""
    sender = "alice@%s/pres" % mc_node.jid_domain
    with online(mc_node, "bob", "pres") as b, online(mc_node, "carol", "pres") as c:
        with online(mc_node, "alice", "pres") as a:
            time.sleep(0.3)
            a.send("<presence to='%s'><status>in the group</status>%s</presence>" % (
                service(mc_node), addresses(("to", jid(mc_node, "bob")),
                                            ("to", jid(mc_node, "carol")))))
            for client in (b, c):
                got = wait_for(client, is_presence_from(sender), "presence from alice")
                assert got.findtext(q(NS_CLIENT, "status")) == "in the group", show(got)
                assert got.find(q(NS_ADDRESS, "addresses")) is None, show(got)
            a.send("</stream:stream>")
        for client in (b, c):
            wait_for(client, is_presence_from(sender, "unavailable"), "unavailable from alice")
