"""Blocking Command (XEP-0191) over the wire: the blocklist get, block, unblock and unblock
all with pushes to the resources that asked for the list, inbound stanzas from a blocked
contact (messages and iq bounced with service-unavailable, presence dropped, nothing stored
offline), outbound ones refused with not-acceptable + <blocked/>, JID matching, request
errors, and the list surviving a restart."""

import time

import pytest

from conftest import setup_c2s
from kt.im import expect_message, message, no_message, online
from kt.xmpp import q, show, stanza_error_condition

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_VCARD = "vcard-temp"


@pytest.fixture
def node(make_node):
    return setup_c2s(make_node(), auth_attempts_per_ip=100000)


def blocklist(c):
    reply = c.iq("get", "<blocklist xmlns='%s'/>" % NS_BLOCKING, to="")
    assert reply.get("type") == "result", show(reply)
    el = reply.find(q(NS_BLOCKING, "blocklist"))
    assert el is not None, show(reply)
    return sorted(i.get("jid") for i in el.findall(q(NS_BLOCKING, "item")))


def command(c, name, *jids):
    items = "".join("<item jid='%s'/>" % j for j in jids)
    return c.iq("set", "<%s xmlns='%s'>%s</%s>" % (name, NS_BLOCKING, items, name), to="")


def ok(reply):
    assert reply.get("type") == "result", show(reply)


def error(reply, condition):
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == condition, show(reply)
    return reply


def expect_push(c, name, jids):
    """The next iq c gets must be a push of name with these items; answers it."""
    elem = c.next(5)
    while elem.tag != q("jabber:client", "iq"):
        elem = c.next(5)
    assert elem.get("type") == "set", show(elem)
    el = elem.find(q(NS_BLOCKING, name))
    assert el is not None, show(elem)
    assert sorted(i.get("jid") for i in el.findall(q(NS_BLOCKING, "item"))) == sorted(jids), \
        show(elem)
    c.send("<iq type='result' id='%s'/>" % elem.get("id"))


def no_iq(c, duration=0.5):
    got = [e for e in c.quiet(duration) if e.tag == q("jabber:client", "iq")]
    assert not got, "unexpected: %s" % show(got[0])


def test_block_unblock_with_pushes_and_enforcement(node):
    dom = node.jid_domain
    bob_jid = "bob@%s" % dom
    with online(node, "alice", "a") as a, online(node, "alice", "b") as b, \
            online(node, "alice", "nolist") as other, online(node, "bob") as bob:
        assert blocklist(a) == []
        assert blocklist(b) == []
        time.sleep(0.2)
        for c in (a, b, other, bob):
            c.quiet(0.2)

        ok(command(a, "block", bob_jid))
        expect_push(a, "block", [bob_jid])
        expect_push(b, "block", [bob_jid])
        no_iq(other)  # never asked for the list
        assert blocklist(b) == [bob_jid]

        # Inbound: a message comes back as service-unavailable, nothing reaches alice.
        bob.send(message("alice@%s" % dom, "hello?", "in1"))
        bob.send(message("alice@%s/a" % dom, "hello a?", "in2"))
        error(bob.wait_id("in1"), "service-unavailable")
        error(bob.wait_id("in2"), "service-unavailable")
        # An iq get too (a vCard is otherwise public); presence is dropped silently.
        error(bob.iq("get", "<vCard xmlns='%s'/>" % NS_VCARD, to="alice@%s" % dom),
              "service-unavailable")
        bob.send("<presence to='alice@%s/a'/>" % dom)
        bob.quiet(0.3)
        for c in (a, b, other):
            got = c.quiet(0.3)
            assert not got, show(got[0])

        # Outbound: refused with not-acceptable and <blocked/>; bob gets nothing.
        b.send(message(bob_jid, "are you there?", "out1"))
        err = error(b.wait_id("out1"), "not-acceptable")
        assert err.find(q("jabber:client", "error") + "/" + q(NS_BLOCKING_ERRORS, "blocked")) \
            is not None, show(err)
        no_message(bob, 0.4)

        # Unblock: pushed, and messages flow both ways again.
        ok(command(b, "unblock", bob_jid))
        expect_push(a, "unblock", [bob_jid])
        expect_push(b, "unblock", [bob_jid])
        assert blocklist(a) == []
        bob.send(message("alice@%s/a" % dom, "back", "in3"))
        expect_message(a, "in3")
        a.send(message(bob_jid, "welcome back", "out2"))
        expect_message(bob, "out2")


def test_unblock_all(node):
    dom = node.jid_domain
    with online(node, "alice", "a") as a, online(node, "bob") as bob:
        assert blocklist(a) == []
        ok(command(a, "block", "bob@%s" % dom, "carol@%s" % dom))
        expect_push(a, "block", ["bob@%s" % dom, "carol@%s" % dom])
        assert blocklist(a) == ["bob@%s" % dom, "carol@%s" % dom]
        ok(command(a, "unblock"))
        expect_push(a, "unblock", [])
        assert blocklist(a) == []
        bob.send(message("alice@%s/a" % dom, "hi", "u1"))
        expect_message(a, "u1")


def test_blocked_contact_is_not_stored_offline(node):
    dom = node.jid_domain
    with online(node, "alice", "a") as a:
        ok(command(a, "block", "bob@%s" % dom))
    time.sleep(0.3)
    with online(node, "bob") as bob:
        bob.send(message("alice@%s" % dom, "while you were out", "off1"))
        error(bob.wait_id("off1"), "service-unavailable")
    with online(node, "alice", "later") as a:
        no_message(a, 0.8)


def test_blocklist_survives_restart(node):
    dom = node.jid_domain
    with online(node, "alice", "a") as a:
        ok(command(a, "block", "bob@%s" % dom))
    assert node.stop(timeout=20) == 0
    node.start()
    with online(node, "alice", "a") as a, online(node, "bob") as bob:
        assert blocklist(a) == ["bob@%s" % dom]
        bob.send(message("alice@%s/a" % dom, "still blocked?", "rs1"))
        error(bob.wait_id("rs1"), "service-unavailable")
        no_message(a, 0.3)


def test_jid_matching(node):
    dom = node.jid_domain
    with online(node, "alice", "a") as a, online(node, "bob", "r") as bob, \
            online(node, "carol", "r") as carol:
        time.sleep(0.2)
        # A full JID blocks only that resource.
        ok(command(a, "block", "bob@%s/other" % dom))
        bob.send(message("alice@%s/a" % dom, "not me", "j1"))
        expect_message(a, "j1")
        ok(command(a, "block", "bob@%s/r" % dom))
        bob.send(message("alice@%s/a" % dom, "me", "j2"))
        error(bob.wait_id("j2"), "service-unavailable")
        # A domain blocks its users (but never the user's own server or own resources).
        ok(command(a, "unblock"))
        ok(command(a, "block", dom))
        carol.send(message("alice@%s/a" % dom, "domain", "j3"))
        error(carol.wait_id("j3"), "service-unavailable")
        ping = a.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
        assert ping.get("type") == "result", show(ping)
        no_message(a, 0.3)


def test_request_errors(node):
    dom = node.jid_domain
    with online(node, "alice", "a") as a, online(node, "bob") as bob:
        error(command(a, "block"), "bad-request")               # no item
        error(command(a, "block", "@bad@"), "jid-malformed")
        error(a.iq("set", "<blocklist xmlns='%s'/>" % NS_BLOCKING, to=""), "bad-request")
        error(a.iq("get", "<block xmlns='%s'><item jid='x@y'/></block>" % NS_BLOCKING, to=""),
              "bad-request")
        # To one's own bare JID is the same request; to someone else it is not ours.
        ok(a.iq("get", "<blocklist xmlns='%s'/>" % NS_BLOCKING, to="alice@%s" % dom))
        error(bob.iq("get", "<blocklist xmlns='%s'/>" % NS_BLOCKING, to="alice@%s" % dom),
              "service-unavailable")
        assert blocklist(a) == []


def test_disco_lists_blocking(node):
    with online(node, "alice", "a") as a:
        reply = a.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        vars_ = {f.get("var") for f in reply.iter(q("http://jabber.org/protocol/disco#info",
                                                     "feature"))}
        assert NS_BLOCKING in vars_, show(reply)
