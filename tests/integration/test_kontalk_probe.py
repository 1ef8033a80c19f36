"""probe@host (kontalk-protocol.md §2.5): Kontalk's roster match answered from this node's
accounts. Items naming a user come back as localpart@<network> whatever domain (host or
network) the client wrote; unknown users, other domains and malformed items are left out;
sm.probe_max bounds a request; only iq get is defined."""

import hashlib

import pytest

from conftest import shared_node
from kt.xmpp import NS_CLIENT, NS_STANZA_ERRORS, PASSWORDS, client_for, q, show, \
    stanza_error_condition

NS_ROSTER = "http://kontalk.org/extensions/roster"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

PROBE_MAX = 600  # above 256, so one request spans several SELECTs; below c2s.max_children


def phone_hash(number):
    """A Kontalk localpart: SHA-1 of the E.164 number (kontalk-protocol.md §3)."""
    return hashlib.sha1(number.encode()).hexdigest()


# Accounts inserted directly (Kontalk key accounts have a hash localpart).
KNOWN = [phone_hash("+1555000%04d" % i) for i in range(320)]
UNKNOWN = [phone_hash("+1666000%04d" % i) for i in range(400)]


@pytest.fixture(scope="module")
def probe_node(binaries, mariadb, certs, tmp_path_factory):
    for node in shared_node(mariadb, certs, tmp_path_factory, "probe",
                            sm={"probe_max": PROBE_MAX}):
        node.sql("INSERT INTO users (localpart) VALUES %s"
                 % ", ".join("('%s')" % h for h in KNOWN))
        yield node


@pytest.fixture
def alice(probe_node):
    c = client_for(probe_node)
    c.login("alice", PASSWORDS["alice"], "probe")
    yield c
    c.close()


def probe_jid(node):
    return "probe@%s" % node.host


def roster_match(client, to, jids, raw_items=""):
    items = "".join("<item jid='%s'/>" % j for j in jids) + raw_items
    return client.iq("get", "<query xmlns='%s'>%s</query>" % (NS_ROSTER, items), to=to)


def matched(reply):
    """The JIDs of a roster match result, in order."""
    assert reply.get("type") == "result", show(reply)
    query = reply.find(q(NS_ROSTER, "query"))
    assert query is not None, show(reply)
    assert all(child.tag == q(NS_ROSTER, "item") for child in query), show(reply)
    return [item.get("jid") for item in query]


def expect_error(reply, condition):
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == condition, show(reply)
    return reply


def error_text(reply):
    t = reply.find("%s/%s" % (q(NS_CLIENT, "error"), q(NS_STANZA_ERRORS, "text")))
    return t.text if t is not None else None


def test_match_returns_exactly_the_users_with_the_network_domain(probe_node, alice):
    host, net = probe_node.host, probe_node.jid_domain
    jids = [
        "bob@%s" % net,                        # a password account, network domain
        "%s@%s" % (UNKNOWN[0], host),          # nobody
        "%s@%s" % (KNOWN[0], host),            # a hash account, written with the host
        "carol@other.example",                 # carol exists, but this is another domain
        "%s@other.example" % KNOWN[1],         # same: not this node's to answer
        "%s@%s" % (KNOWN[2].upper(), net),     # localparts are case-insensitive
        "dave@%s" % host,                      # nobody
        "alice@%s/phone" % host,               # the resource is ignored
        "bob@%s" % host,                       # bob again, other domain: listed once
        "%s@%s" % (UNKNOWN[1], net),           # nobody
        "probe@%s" % host,                     # a service, not a user
        host,                                  # no localpart: skipped
    ]
    bad = ("<item/><item jid=''/><item jid='a@b@c'/><item jid='x@%s/'/>"
           "<other xmlns='urn:example:x' jid='carol@%s'/>" % (host, net))
    reply = roster_match(alice, probe_jid(probe_node), jids, bad)
    assert reply.get("from") == probe_jid(probe_node), show(reply)
    assert reply.get("to") == alice.jid, show(reply)
    assert matched(reply) == ["bob@%s" % net, "%s@%s" % (KNOWN[0], net),
                              "%s@%s" % (KNOWN[2], net), "alice@%s" % net], show(reply)


def test_match_at_the_network_domain_address(probe_node, alice):
    net = probe_node.jid_domain
    reply = roster_match(alice, "probe@%s" % net, ["carol@%s" % net, "%s@%s" % (KNOWN[5], net)])
    assert reply.get("from") == "probe@%s" % net, show(reply)
    assert matched(reply) == ["carol@%s" % net, "%s@%s" % (KNOWN[5], net)]


def test_empty_query_and_no_match(probe_node, alice):
    assert matched(roster_match(alice, probe_jid(probe_node), [])) == []
    assert matched(alice.iq("get", "<query xmlns='%s'/>" % NS_ROSTER,
                            to=probe_jid(probe_node))) == []
    none = ["%s@%s" % (h, probe_node.host) for h in UNKNOWN[:10]]
    assert matched(roster_match(alice, probe_jid(probe_node), none)) == []


def test_a_full_batch_spans_several_queries(probe_node, alice):
    # PROBE_MAX items: every known account (320, more than one SELECT of 256) mixed with
    # unknown ones, in an order of their own; the answer keeps the request's order.
    host, net = probe_node.host, probe_node.jid_domain
    backwards = KNOWN[::-1]
    names = []
    for k, u in zip(backwards[:280], UNKNOWN[:280]):
        names += [u, k]
    names += backwards[280:]
    assert len(names) == PROBE_MAX
    reply = roster_match(alice, probe_jid(probe_node), ["%s@%s" % (n, host) for n in names])
    expected = [n for n in names if n in set(KNOWN)]
    assert len(expected) == len(KNOWN)
    assert matched(reply) == ["%s@%s" % (n, net) for n in expected]


def test_too_many_items(probe_node, alice):
    # Every <item/> counts, even one that would be skipped.
    jids = ["%s@%s" % (KNOWN[0], probe_node.host)] * PROBE_MAX
    reply = roster_match(alice, probe_jid(probe_node), jids, "<item/>")
    expect_error(reply, "not-acceptable")
    assert error_text(reply) == "more than %d items" % PROBE_MAX, show(reply)
    # The connection is fine and the service answers the next request.
    assert matched(roster_match(alice, probe_jid(probe_node),
                                ["%s@%s" % (KNOWN[0], probe_node.host)])) == \
        ["%s@%s" % (KNOWN[0], probe_node.jid_domain)]


def test_the_account_table_is_read_for_each_request(probe_node, alice):
    name = phone_hash("+15555215554")
    jid = "%s@%s" % (name, probe_node.host)
    assert matched(roster_match(alice, probe_jid(probe_node), [jid])) == []
    probe_node.sql("INSERT INTO users (localpart) VALUES ('%s')" % name)
    try:
        assert matched(roster_match(alice, probe_jid(probe_node), [jid])) == \
            ["%s@%s" % (name, probe_node.jid_domain)]
    finally:
        probe_node.sql("DELETE FROM users WHERE localpart = '%s'" % name)
    assert matched(roster_match(alice, probe_jid(probe_node), [jid])) == []


def test_refusals(probe_node, alice):
    to = probe_jid(probe_node)
    item = "<item jid='bob@%s'/>" % probe_node.jid_domain
    # Only iq get is defined.
    expect_error(alice.iq("set", "<query xmlns='%s'>%s</query>" % (NS_ROSTER, item), to=to),
                 "bad-request")
    # Other payloads and stanzas: service-unavailable (named.c).
    expect_error(alice.iq("get", "<query xmlns='jabber:iq:version'/>", to=to),
                 "service-unavailable")
    expect_error(alice.iq("get", "<other xmlns='%s'/>" % NS_ROSTER, to=to), "service-unavailable")
    alice.send("<message to='%s' id='pm1' type='chat'><body>hi</body></message>" % to)
    expect_error(alice.wait_id("pm1"), "service-unavailable")
    # Results and errors to the service are never answered.
    alice.send("<iq type='result' id='pr1' to='%s'/>" % to)
    alice.send("<iq type='error' id='pr2' to='%s'><error type='cancel'>"
               "<bad-request xmlns='%s'/></error></iq>" % (to, NS_STANZA_ERRORS))
    got = [e for e in alice.quiet(0.5) if e.get("id") in ("pr1", "pr2")]
    assert not got, show(got[0])
    # The service still works.
    assert matched(roster_match(alice, to, ["bob@%s" % probe_node.host])) == \
        ["bob@%s" % probe_node.jid_domain]


def test_disco(probe_node, alice):
    to = probe_jid(probe_node)
    info = alice.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to)
    assert info.get("type") == "result", show(info)
    ident = info.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
    assert (ident.get("category"), ident.get("type"), ident.get("name")) == \
        ("component", "generic", "Contact lookup"), show(info)
    feats = {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
    assert feats == {NS_DISCO_INFO, NS_ROSTER}, show(info)

    items = alice.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=to)
    assert items.get("type") == "result", show(items)
    assert not list(items.iter(q(NS_DISCO_ITEMS, "item"))), show(items)

    # The node's disco#items lists the service.
    top = alice.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=probe_node.host)
    listed = {(i.get("jid"), i.get("name")) for i in top.iter(q(NS_DISCO_ITEMS, "item"))}
    assert (to, "Contact lookup") in listed, show(top)
