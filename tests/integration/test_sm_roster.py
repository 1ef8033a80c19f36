"""mod_sm roster (RFC 6121 §2), subscriptions (§3) and presence (§4), over the wire."""

import time

import pytest

from conftest import setup_c2s
from kt.im import online
from kt.xmpp import q, show, stanza_error_condition

NS_ROSTER = "jabber:iq:roster"
NS_CLIENT = "jabber:client"


@pytest.fixture
def node(make_node):
    n = make_node()
    n.conf["sm"] = {"roster_max": 3}
    return setup_c2s(n, auth_attempts_per_ip=100000)


def wait_for(c, pred, what, timeout=5):
    """The first element c receives that satisfies pred (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "timed out waiting for " + what
        elem = c.next(left)
        if pred(elem):
            return elem


def expect_all(c, preds, timeout=5):
    """Waits until every predicate matched one element, in any order; returns the matches."""
    found = [None] * len(preds)
    deadline = time.monotonic() + timeout
    while None in found:
        left = deadline - time.monotonic()
        assert left > 0, "timed out; still missing %d of %d" % (found.count(None), len(preds))
        elem = c.next(left)
        for i, pred in enumerate(preds):
            if found[i] is None and pred(elem):
                found[i] = elem
                if elem.tag == q(NS_CLIENT, "iq") and elem.get("type") == "set":
                    c.send("<iq type='result' id='%s'/>" % elem.get("id"))
                break
    return found


def is_presence(frm, type_=None):
    return lambda e: (e.tag == q(NS_CLIENT, "presence") and (e.get("from") or "").startswith(frm)
                      and e.get("type") == type_)


def is_push(jid, subscription):
    def pred(e):
        item = e.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
        return (e.tag == q(NS_CLIENT, "iq") and e.get("type") == "set" and item is not None
                and item.get("jid") == jid and item.get("subscription") == subscription)
    return pred


def presence_of(c, frm, type_=None, timeout=5):
    def pred(e):
        return (e.tag == q(NS_CLIENT, "presence") and (e.get("from") or "").startswith(frm)
                and e.get("type") == type_)
    return wait_for(c, pred, "presence %s from %s" % (type_, frm), timeout)


def push_for(c, jid, timeout=5):
    def pred(e):
        if e.tag != q(NS_CLIENT, "iq") or e.get("type") != "set":
            return False
        item = e.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
        return item is not None and item.get("jid") == jid
    e = wait_for(c, pred, "roster push for " + jid, timeout)
    c.send("<iq type='result' id='%s'/>" % e.get("id"))
    return e.find(q(NS_ROSTER, "query")), e.find("%s/%s" % (q(NS_ROSTER, "query"),
                                                           q(NS_ROSTER, "item")))


def roster_get(c, ver=None):
    attr = "" if ver is None else " ver='%s'" % ver
    r = c.iq("get", "<query xmlns='%s'%s/>" % (NS_ROSTER, attr))
    assert r.get("type") == "result", show(r)
    return r.find(q(NS_ROSTER, "query"))


def items(query):
    return {i.get("jid"): i for i in query.findall(q(NS_ROSTER, "item"))}


def roster_set(c, jid, name=None, groups=(), remove=False):
    attrs = " jid='%s'" % jid
    if name:
        attrs += " name='%s'" % name
    if remove:
        attrs += " subscription='remove'"
    g = "".join("<group>%s</group>" % x for x in groups)
    return c.iq("set", "<query xmlns='%s'><item%s>%s</item></query>" % (NS_ROSTER, attrs, g))


def test_roster_set_get_push_and_versioning(node):
    dom = node.jid_domain
    with online(node, "alice", "a") as a, online(node, "alice", "b") as b:
        q0 = roster_get(b)                 # b is now interested in pushes
        assert items(q0) == {} and q0.get("ver"), show(q0)
        r = roster_set(a, "bob@%s" % dom, name="Bob", groups=["Friends", "Work"])
        assert r.get("type") == "result", show(r)
        query, item = push_for(b, "bob@%s" % dom)
        assert item.get("name") == "Bob" and item.get("subscription") == "none", show(item)
        assert sorted(g.text for g in item.findall(q(NS_ROSTER, "group"))) == ["Friends", "Work"]
        ver = query.get("ver")
        assert ver and ver != q0.get("ver")
        full = roster_get(a)
        assert set(items(full)) == {"bob@%s" % dom} and full.get("ver") == ver, show(full)
        # Unchanged since ver: an empty result (RFC 6121 §2.6.3).
        r = a.iq("get", "<query xmlns='%s' ver='%s'/>" % (NS_ROSTER, ver))
        assert r.get("type") == "result" and r.find(q(NS_ROSTER, "query")) is None, show(r)
        # Stale ver: the whole roster.
        assert "bob@%s" % dom in items(roster_get(a, ver=q0.get("ver")))
        # Remove.
        assert roster_set(a, "bob@%s" % dom, remove=True).get("type") == "result"
        _, item = push_for(b, "bob@%s" % dom)
        assert item.get("subscription") == "remove", show(item)
        assert items(roster_get(a)) == {}


def test_roster_errors_and_limit(node):
    dom = node.jid_domain
    with online(node, "alice") as a:
        r = roster_set(a, "alice@%s" % dom)
        assert stanza_error_condition(r)[1] == "not-allowed", show(r)
        r = roster_set(a, "x@%s" % dom, groups=["dup", "dup"])
        assert r.get("type") == "error", show(r)
        r = a.iq("set", "<query xmlns='%s'><item jid='a@%s'/><item jid='b@%s'/></query>"
                 % (NS_ROSTER, dom, dom))
        assert stanza_error_condition(r)[1] == "bad-request", show(r)
        for i in range(3):
            assert roster_set(a, "c%d@%s" % (i, dom)).get("type") == "result"
        r = roster_set(a, "c3@%s" % dom)
        assert stanza_error_condition(r)[1] == "not-allowed", show(r)
        r = roster_set(a, "nobody@example.org", remove=True)
        assert stanza_error_condition(r)[1] == "item-not-found", show(r)


def test_subscription_handshake_both_ways_with_presence(node):
    dom = node.jid_domain
    alice, bob = "alice@%s" % dom, "bob@%s" % dom
    with online(node, "alice") as a, online(node, "bob") as b:
        roster_get(a)
        roster_get(b)
        a.send("<presence to='%s' type='subscribe'/>" % bob)
        _, item = push_for(a, bob)
        assert item.get("ask") == "subscribe" and item.get("subscription") == "none", show(item)
        req = presence_of(b, alice, "subscribe")
        assert req.get("from") == alice, show(req)   # stamped with the bare JID
        b.send("<presence to='%s' type='subscribed'/>" % alice)
        expect_all(b, [is_push(alice, "from")])
        push, _ = expect_all(a, [is_push(bob, "to"), is_presence(bob + "/")])  # + bob's presence
        item = push.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
        assert item.get("ask") is None, show(item)
        # And back: bob subscribes to alice.
        b.send("<presence to='%s' type='subscribe'/>" % alice)
        presence_of(a, bob, "subscribe")
        a.send("<presence to='%s' type='subscribed'/>" % bob)
        expect_all(a, [is_push(bob, "both")])
        expect_all(b, [is_push(alice, "both"), is_presence(alice + "/")])
        # A later presence change of bob's reaches alice: the subscription cache, loaded at
        # bob's initial presence, followed the handshake.
        b.send("<presence><status>away</status></presence>")
        away = presence_of(a, bob + "/", None)
        assert away.findtext(q(NS_CLIENT, "status")) == "away", show(away)
        # Bob leaves: alice learns it (c2s announces unavailable for him).
        b.send("</stream:stream>")
        presence_of(a, bob + "/", "unavailable")


def test_subscription_request_waits_for_offline_user(node):
    dom = node.jid_domain
    with online(node, "alice") as a:
        a.send("<presence to='carol@%s' type='subscribe'/>" % dom)
        a.quiet(0.5)
    with online(node, "carol") as c:
        req = presence_of(c, "alice@%s" % dom, "subscribe")
        assert req.get("from") == "alice@%s" % dom, show(req)


def test_pre_approval(node):
    dom = node.jid_domain
    alice, bob = "alice@%s" % dom, "bob@%s" % dom
    with online(node, "alice") as a, online(node, "bob") as b:
        roster_get(b)
        assert roster_set(b, alice).get("type") == "result"
        push_for(b, alice)
        b.send("<presence to='%s' type='subscribed'/>" % alice)   # before any request
        _, item = push_for(b, alice)
        assert item.get("approved") == "true", show(item)
        roster_get(a)
        a.send("<presence to='%s' type='subscribe'/>" % bob)
        _, item = wait_for_item(a, bob, "to")
        assert item.get("subscription") == "to", show(item)
        # Bob was not asked.
        assert not [e for e in b.quiet(0.5) if e.tag == q(NS_CLIENT, "presence")
                    and e.get("type") == "subscribe"]


def wait_for_item(c, jid, subscription):
    while True:
        query, item = push_for(c, jid)
        if item.get("subscription") == subscription:
            return query, item


def subscribe(c_from, c_to, frm, to):
    """frm (client c_from) subscribes to `to` (client c_to, online), who approves; returns once
    frm has the roster push 'to' and to's presence."""
    roster_get(c_from)
    c_from.send("<presence to='%s' type='subscribe'/>" % to)
    presence_of(c_to, frm, "subscribe")
    c_to.send("<presence to='%s' type='subscribed'/>" % frm)
    expect_all(c_from, [is_push(to, "to"), is_presence(to + "/")])


def test_probe_on_login_shows_contacts_presence(node):
    dom = node.jid_domain
    alice, bob = "alice@%s" % dom, "bob@%s" % dom
    with online(node, "alice") as a, online(node, "bob") as b:
        subscribe(a, b, alice, bob)
        a.send("</stream:stream>")
        with online(node, "alice", "again") as a2:   # initial presence probes bob
            presence_of(a2, bob + "/", None)


def test_block_hides_presence_and_unblock_restores_it(node):
    """XEP-0191 §3.4/§3.5 with a subscribed contact."""
    dom = node.jid_domain
    alice, bob = "alice@%s" % dom, "bob@%s" % dom
    with online(node, "alice") as a, online(node, "bob") as b:
        subscribe(a, b, alice, bob)
        r = b.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='%s'/></block>" % alice, to="")
        assert r.get("type") == "result", show(r)
        presence_of(a, bob + "/", "unavailable")
        # A new presence of bob's does not reach alice while she is blocked.
        b.send("<presence><status>busy</status></presence>")
        assert not [e for e in a.quiet(0.6) if e.tag == q(NS_CLIENT, "presence")]
        r = b.iq("set", "<unblock xmlns='urn:xmpp:blocking'><item jid='%s'/></unblock>" % alice, to="")
        assert r.get("type") == "result", show(r)
        presence_of(a, bob + "/", None)


def test_user_last_activity_and_disco_need_a_subscription(node):
    dom = node.jid_domain
    alice, bob = "alice@%s" % dom, "bob@%s" % dom
    with online(node, "alice") as a, online(node, "carol") as c:
        b = online(node, "bob")
        subscribe(a, b, alice, bob)
        r = a.iq("get", "<query xmlns='jabber:iq:last'/>", to=bob)
        assert r.get("type") == "result", show(r)
        assert r.find(q("jabber:iq:last", "query")).get("seconds") == "0", show(r)  # online
        info = a.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=bob)
        ident = info.find("%s/%s" % (q("http://jabber.org/protocol/disco#info", "query"),
                                     q("http://jabber.org/protocol/disco#info", "identity")))
        assert ident is not None and ident.get("category") == "account" \
            and ident.get("type") == "registered", show(info)
        # Not subscribed: nothing about bob.
        for payload in ("<query xmlns='jabber:iq:last'/>",
                        "<query xmlns='http://jabber.org/protocol/disco#info'/>"):
            r = c.iq("get", payload, to=bob)
            assert stanza_error_condition(r)[1] == "forbidden", show(r)
        b.send("</stream:stream>")
        b.close()
        presence_of(a, bob + "/", "unavailable")
        time.sleep(1.2)
        r = a.iq("get", "<query xmlns='jabber:iq:last'/>", to=bob)
        secs = int(r.find(q("jabber:iq:last", "query")).get("seconds"))
        assert 1 <= secs < 60, show(r)
        r = a.iq("get", "<query xmlns='jabber:iq:last'/>", to="nobody@%s" % dom)
        assert stanza_error_condition(r)[1] == "service-unavailable", show(r)


def test_directed_presence_gets_the_unavailable(node):
    """RFC 6121 §4.6: whoever got directed presence learns when the resource leaves."""
    dom = node.jid_domain
    with online(node, "carol") as c:
        a = online(node, "alice")
        a.send("<presence to='carol@%s'><status>hi</status></presence>" % dom)
        presence_of(c, "alice@%s/" % dom, None)
        a.send("</stream:stream>")
        a.close()
        presence_of(c, "alice@%s/" % dom, "unavailable")


def test_csi_holds_contacts_presence_until_active(node):
    """XEP-0352 with real presence traffic: while bob is inactive, alice's presence changes
    are held (only the latest is kept); a message with a body is not delayed."""
    dom = node.jid_domain
    alice, bob = "alice@%s" % dom, "bob@%s" % dom
    with online(node, "alice") as a, online(node, "bob") as b:
        subscribe(b, a, bob, alice)
        b.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        for status in ("one", "two", "three"):
            a.send("<presence><status>%s</status></presence>" % status)
        a.send("<message to='%s' type='chat' id='c1'><body>now</body></message>" % bob)
        got = wait_for(b, lambda e: e.tag == q(NS_CLIENT, "message"), "the message")
        assert got.get("id") == "c1", show(got)
        held = [e for e in b.quiet(0.5) if e.tag == q(NS_CLIENT, "presence")]
        assert not held, "presence went out while inactive: %s" % show(held[0])
        b.send("<active xmlns='urn:xmpp:csi:0'/>")
        flushed = presence_of(b, alice + "/", None)
        assert flushed.findtext(q(NS_CLIENT, "status")) == "three", show(flushed)
        rest = [e for e in b.quiet(0.5) if e.tag == q(NS_CLIENT, "presence")]
        assert not rest, "more than the latest presence: %s" % show(rest[0])
