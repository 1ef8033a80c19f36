"""Message Carbons (XEP-0280) over the wire: enabling and disabling, received copies for
messages to a full or a bare JID, sent copies, what is not copied (private, no-copy, chat
states without carbons-eligible types, errors), and the feature in disco."""

import time

import pytest

from conftest import setup_c2s
from kt.im import expect_message, message, next_message, no_message, online
from kt.xmpp import q, show, stanza_error_condition

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_CLIENT = "jabber:client"
ENABLE = "<enable xmlns='%s'/>" % NS_CARBONS
DISABLE = "<disable xmlns='%s'/>" % NS_CARBONS


@pytest.fixture
def node(make_node):
    return setup_c2s(make_node(), auth_attempts_per_ip=100000)


def carbons(c, on=True):
    reply = c.iq("set", ENABLE if on else DISABLE, to="")
    assert reply.get("type") == "result", show(reply)


def expect_carbon(c, how, inner_id, dom, user="alice"):
    """The next message c gets must be a <sent/> or <received/> carbon of inner_id."""
    got = next_message(c)
    assert got.get("from") == "%s@%s" % (user, dom), show(got)
    wrapper = got.find(q(NS_CARBONS, how))
    assert wrapper is not None, show(got)
    inner = wrapper.find(q(NS_FORWARD, "forwarded") + "/" + q(NS_CLIENT, "message"))
    assert inner is not None and inner.get("id") == inner_id, show(got)
    assert got.get("to").startswith("%s@%s/" % (user, dom)), show(got)
    return got, inner


@pytest.fixture
def three(node):
    """alice/a (carbons on), alice/b, bob/r, all online with priority 0."""
    a = online(node, "alice", "a")
    b = online(node, "alice", "b")
    bob = online(node, "bob", "r")
    carbons(a)
    time.sleep(0.3)
    for c in (a, b, bob):
        c.quiet(0.2)  # presence broadcast, if any
    yield node.jid_domain, a, b, bob
    for c in (a, b, bob):
        c.close()


def test_received_copy_for_full_jid(three):
    dom, a, b, bob = three
    bob.send(message("alice@%s/b" % dom, "to b", "r1"))
    expect_message(b, "r1")
    got, inner = expect_carbon(a, "received", "r1", dom)
    assert got.get("to") == "alice@%s/a" % dom and got.get("type") == "chat", show(got)
    assert inner.get("from") == "bob@%s/r" % dom, show(got)
    assert inner.find(q(NS_CLIENT, "body")).text == "to b", show(got)
    no_message(b)  # the addressee gets no copy of its own message


def test_no_received_copy_for_the_addressee(three):
    dom, a, b, bob = three
    bob.send(message("alice@%s/a" % dom, "to a", "r2"))
    expect_message(a, "r2")
    no_message(a)
    no_message(b)  # carbons are off on b


def test_sent_copy(three):
    dom, a, b, bob = three
    b.send(message("bob@%s" % dom, "from b", "s1"))
    expect_message(bob, "s1")
    got, inner = expect_carbon(a, "sent", "s1", dom)
    assert got.get("to") == "alice@%s/a" % dom, show(got)
    assert inner.get("from") == "alice@%s/b" % dom, show(got)
    assert inner.get("to") == "bob@%s" % dom, show(got)


def test_sender_gets_no_copy_of_its_own_message(three):
    dom, a, b, bob = three
    a.send(message("bob@%s" % dom, "from a", "s2"))
    expect_message(bob, "s2")
    no_message(a)
    no_message(b)


def test_bare_jid_copies_to_who_did_not_get_it(node):
    dom = node.jid_domain
    with online(node, "alice", "low", 1) as low, online(node, "alice", "high", 5) as high, \
            online(node, "bob") as bob:
        carbons(low)
        carbons(high)
        time.sleep(0.3)
        bob.send(message("alice@%s" % dom, "to the best", "b1"))
        expect_message(high, "b1")
        expect_carbon(low, "received", "b1", dom)
        no_message(high)


def test_private_and_no_copy_are_not_copied(three):
    dom, a, b, bob = three
    b.send(message("bob@%s" % dom, "secret", "p1", extra="<private xmlns='%s'/>" % NS_CARBONS))
    b.send(message("bob@%s" % dom, "hint", "p2", extra="<no-copy xmlns='urn:xmpp:hints'/>"))
    bob.send(message("alice@%s/b" % dom, "secret back", "p3",
                     extra="<private xmlns='%s'/>" % NS_CARBONS))
    expect_message(bob, "p1")
    expect_message(bob, "p2")
    expect_message(b, "p3")
    no_message(a)


def test_which_messages_are_copied(three):
    dom, a, b, bob = three
    # Copied: chat (even a chat state alone) and normal with a body.
    bob.send("<message type='chat' to='alice@%s/b' id='c1'><composing "
             "xmlns='http://jabber.org/protocol/chatstates'/></message>" % dom)
    expect_carbon(a, "received", "c1", dom)
    bob.send(message("alice@%s/b" % dom, "normal", "c2", type_="normal"))
    got, _ = expect_carbon(a, "received", "c2", dom)
    assert got.get("type") == "normal", show(got)
    # Not copied: normal without body, headline, groupchat, errors.
    bob.send("<message to='alice@%s/b' id='n1'><x xmlns='urn:example'/></message>" % dom)
    bob.send(message("alice@%s/b" % dom, "news", "n2", type_="headline"))
    bob.send("<message type='error' to='alice@%s/b' id='n3'><error type='cancel'>"
             "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
             % dom)
    for id_ in ("c1", "c2", "n1", "n2", "n3"):
        expect_message(b, id_)
    no_message(a)


def test_carbons_are_not_copied_again(three):
    """A client that sends a message carrying a carbons element gets it routed but never
    copied (no loops)."""
    dom, a, b, bob = three
    b.send("<message type='chat' to='bob@%s' id='l1'><body>x</body><sent xmlns='%s'/>"
           "</message>" % (dom, NS_CARBONS))
    expect_message(bob, "l1")
    no_message(a)


def test_disable_stops_copies(three):
    dom, a, b, bob = three
    carbons(a, on=False)
    carbons(a, on=False)  # twice is fine (§8.1)
    bob.send(message("alice@%s/b" % dom, "no copy", "d1"))
    b.send(message("bob@%s" % dom, "no copy", "d2"))
    expect_message(b, "d1")
    expect_message(bob, "d2")
    no_message(a)
    carbons(a)
    carbons(a)  # enabling twice too
    bob.send(message("alice@%s/b" % dom, "copy again", "d3"))
    expect_carbon(a, "received", "d3", dom)


def test_enable_errors(three):
    dom, a, b, bob = three
    reply = a.iq("get", ENABLE, to="")
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == "bad-request", show(reply)
    # To one's own bare JID is the same request.
    reply = a.iq("set", DISABLE, to="alice@%s" % dom)
    assert reply.get("type") == "result", show(reply)
    # To the server or to someone else: not a carbons request, nobody handles it.
    reply = a.iq("set", ENABLE, to="bob@%s" % dom)
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == "service-unavailable", show(reply)
    bob.quiet(0.3)


def test_disco_lists_carbons(three):
    dom, a, b, bob = three
    reply = a.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    vars_ = {f.get("var") for f in reply.iter(q("http://jabber.org/protocol/disco#info",
                                                 "feature"))}
    assert NS_CARBONS in vars_, show(reply)
