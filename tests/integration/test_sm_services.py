"""mod_sm's IQ services of the node, over the wire with logged-in clients: ping (XEP-0199),
software version (XEP-0092), entity time (XEP-0202), last activity / uptime (XEP-0012),
service discovery of the node (XEP-0030) and vcard-temp (XEP-0054), with RFC 6120 §8 error
semantics (one answer per request, errors for what the services do not define).

The disco test asserts the exact feature set: when another part of mod_sm registers a feature,
add it to EXPECTED_FEATURES."""

import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest

from conftest import setup_c2s, shared_node
from kt.node import version
from kt.xmpp import (NS_CLIENT, NS_PING, NS_STANZA_ERRORS, PASSWORDS, client_for, q, show,
                     stanza_error_condition, unknown_iq)

NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_LAST = "jabber:iq:last"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_VCARD = "vcard-temp"

EXPECTED_FEATURES = {NS_PING, NS_VERSION, NS_TIME, NS_LAST, NS_VCARD, NS_DISCO_INFO,
                     NS_DISCO_ITEMS,
                     "msgoffline",  # XEP-0160 §5, registered by offline.c
                     "urn:xmpp:carbons:2", "urn:xmpp:blocking"}  # carbons.c, blocking.c
# pubkey.c and register.c add urn:xmpp:pubkey:2 and jabber:iq:register only with a node key
# (test_kontalk_auth.py checks them there).

VCARD_MAX = 2048

# Special characters in text and attributes, non-ASCII, nesting, an extension namespace.
RICH_VCARD = (
    "<vCard xmlns='vcard-temp'>"
    "<FN>A &amp; B &lt;tag&gt; \"quoted\" 'single' ]]&gt;</FN>"
    "<N><FAMILY>M\u00fcller</FAMILY><GIVEN>Zo\u00eb</GIVEN><MIDDLE/></N>"
    "<TEL><WORK/><VOICE/><NUMBER>+39 06 1234</NUMBER></TEL>"
    "<X xmlns='urn:example:vcard-ext' label='a&amp;b&lt;c' xml:lang='it'>ciao <B>grassetto</B></X>"
    "<DESC>line one\nline two</DESC>"
    "</vCard>")


# -- helpers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svc_node(binaries, mariadb, certs, tmp_path_factory):
    """One started node with a small vcard_max, shared by this module."""
    yield from shared_node(mariadb, certs, tmp_path_factory, "smsvc", sm={"vcard_max": VCARD_MAX})


def logged_in(node, user="alice", resource="svc"):
    c = client_for(node)
    c.login(user, PASSWORDS[user], resource)
    return c


def expect_result(reply, id_=None):
    assert reply.get("type") == "result", show(reply)
    if id_ is not None:
        assert reply.get("id") == id_, show(reply)
    return reply


def expect_error(reply, condition, type_=None):
    assert reply.get("type") == "error", show(reply)
    etype, cond = stanza_error_condition(reply)
    assert cond == condition, show(reply)
    if type_ is not None:
        assert etype == type_, show(reply)
    return reply


def error_text(reply):
    t = reply.find("%s/%s" % (q(NS_CLIENT, "error"), q(NS_STANZA_ERRORS, "text")))
    return t.text if t is not None else None


def no_more_answers(c, id_):
    """RFC 6120 §8.2.3: exactly one answer per request."""
    extra = [e for e in c.quiet(0.3) if e.get("id") == id_]
    assert not extra, "second answer: %s" % show(extra[0])


def canonical(elem):
    """A comparable form of an element tree: tag, sorted attributes, text, children."""
    return (elem.tag, sorted(elem.attrib.items()), (elem.text or ""),
            [canonical(c) + ((c.tail or ""),) for c in elem])


def vcard_of(reply):
    v = reply.find(q(NS_VCARD, "vCard"))
    assert v is not None, "result without vCard: " + show(reply)
    return v


# -- ping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("to", ["domain", "host", "none"])
def test_ping_server(svc_node, to):
    addr = {"domain": svc_node.jid_domain, "host": svc_node.host, "none": ""}[to]
    with logged_in(svc_node) as c:
        reply = expect_result(c.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=addr, id_="p1"), "p1")
        assert len(reply) == 0, "a ping result is empty: " + show(reply)
        if addr:
            assert reply.get("from") == addr, show(reply)
        assert reply.get("to") == c.jid, show(reply)
        no_more_answers(c, "p1")


def test_ping_own_bare_jid_answered_by_server(svc_node):
    with logged_in(svc_node) as c:
        bare = "alice@%s" % svc_node.jid_domain
        reply = expect_result(c.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=bare))
        assert reply.get("from") == bare, show(reply)
        assert len(reply) == 0, show(reply)


def test_ping_set_is_bad_request(svc_node):
    with logged_in(svc_node) as c:
        reply = expect_error(c.iq("set", "<ping xmlns='%s'/>" % NS_PING, id_="ps"),
                             "bad-request", "modify")
        # RFC 6120 §8.3.1: the error carries the original payload.
        assert reply.find(q(NS_PING, "ping")) is not None, show(reply)
        no_more_answers(c, "ps")


# -- version -------------------------------------------------------------------------------

def test_version(svc_node):
    with logged_in(svc_node) as c:
        reply = expect_result(c.iq("get", "<query xmlns='%s'/>" % NS_VERSION))
        query = reply.find(q(NS_VERSION, "query"))
        assert query is not None, show(reply)
        assert query.findtext(q(NS_VERSION, "name")) == "kontalkd", show(reply)
        assert query.findtext(q(NS_VERSION, "version")) == version(), show(reply)
        assert query.find(q(NS_VERSION, "os")) is None, "the OS must not leak: " + show(reply)


def test_version_set_is_error(svc_node):
    with logged_in(svc_node) as c:
        reply = c.iq("set", "<query xmlns='%s'><name>x</name></query>" % NS_VERSION, id_="vs")
        expect_error(reply, "bad-request", "modify")
        assert reply.find(q(NS_VERSION, "query")) is not None, show(reply)
        no_more_answers(c, "vs")


# -- time ----------------------------------------------------------------------------------

def test_time(svc_node):
    with logged_in(svc_node) as c:
        reply = expect_result(c.iq("get", "<time xmlns='%s'/>" % NS_TIME))
        t = reply.find(q(NS_TIME, "time"))
        assert t is not None, show(reply)
        assert t.findtext(q(NS_TIME, "tzo")) == "+00:00", show(reply)
        utc = t.findtext(q(NS_TIME, "utc"))
        stamp = datetime.strptime(utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        skew = abs((datetime.now(timezone.utc) - stamp).total_seconds())
        assert skew < 5, "server time %s is %.1fs off" % (utc, skew)


def test_time_set_is_error(svc_node):
    with logged_in(svc_node) as c:
        expect_error(c.iq("set", "<time xmlns='%s'/>" % NS_TIME), "bad-request")


# -- last activity (uptime) ----------------------------------------------------------------

def uptime(c):
    reply = expect_result(c.iq("get", "<query xmlns='%s'/>" % NS_LAST))
    query = reply.find(q(NS_LAST, "query"))
    assert query is not None, show(reply)
    return int(query.get("seconds"))


def test_last_activity_is_uptime(svc_node):
    with logged_in(svc_node) as c:
        first = uptime(c)
        assert first >= 0
        time.sleep(2.1)
        second = uptime(c)
        assert first + 2 <= second <= first + 4, (first, second)


def test_last_set_is_error(svc_node):
    with logged_in(svc_node) as c:
        expect_error(c.iq("set", "<query xmlns='%s' seconds='5'/>" % NS_LAST), "bad-request")


# -- service discovery ---------------------------------------------------------------------

def test_disco_info_identity_and_exact_features(svc_node):
    with logged_in(svc_node) as c:
        reply = expect_result(c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, id_="di"), "di")
        query = reply.find(q(NS_DISCO_INFO, "query"))
        assert query is not None and query.get("node") is None, show(reply)
        ids = [dict(i.attrib) for i in query.findall(q(NS_DISCO_INFO, "identity"))]
        assert ids == [{"category": "server", "type": "im", "name": "kontalkd"}], show(reply)
        features = [f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature"))]
        assert len(features) == len(set(features)), "duplicate features: %s" % features
        assert set(features) == EXPECTED_FEATURES, sorted(set(features) ^ EXPECTED_FEATURES)
        assert features == sorted(features), features
        no_more_answers(c, "di")


def test_disco_info_to_host_and_without_to(svc_node):
    with logged_in(svc_node) as c:
        for to in (svc_node.host, ""):
            reply = expect_result(c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to))
            feats = {f.get("var") for f in reply.iter(q(NS_DISCO_INFO, "feature"))}
            assert feats == EXPECTED_FEATURES, show(reply)


# The named services of the node (modules/sm/named.c), each at name@host.
EXPECTED_SERVICES = {"probe", "network", "multicast", "push"}


def test_disco_items_lists_the_services(svc_node):
    with logged_in(svc_node) as c:
        reply = expect_result(c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS))
        query = reply.find(q(NS_DISCO_ITEMS, "query"))
        items = {i.get("jid") for i in query.findall(q(NS_DISCO_ITEMS, "item"))}
        assert items == {"%s@%s" % (s, svc_node.host) for s in EXPECTED_SERVICES}, show(reply)


@pytest.mark.parametrize("ns", [NS_DISCO_INFO, NS_DISCO_ITEMS])
def test_disco_unknown_node_item_not_found(svc_node, ns):
    with logged_in(svc_node) as c:
        reply = c.iq("get", "<query xmlns='%s' node='urn:kontalk:no-such-node'/>" % ns, id_="dn")
        expect_error(reply, "item-not-found", "cancel")
        assert reply.find(q(ns, "query")).get("node") == "urn:kontalk:no-such-node", show(reply)
        no_more_answers(c, "dn")


def test_disco_set_is_error(svc_node):
    with logged_in(svc_node) as c:
        expect_error(c.iq("set", "<query xmlns='%s'/>" % NS_DISCO_INFO), "bad-request")


# -- unknown namespaces --------------------------------------------------------------------

def test_unknown_namespace_to_server_service_unavailable(svc_node):
    with logged_in(svc_node) as c:
        c.send(unknown_iq("u1", svc_node.jid_domain))
        reply = c.wait_id("u1")
        expect_error(reply, "service-unavailable", "cancel")
        no_more_answers(c, "u1")


def test_known_namespace_wrong_element_not_answered_by_service(svc_node):
    """The hooks match the payload element too: <version xmlns='jabber:iq:version'/> is not
    a version request."""
    with logged_in(svc_node) as c:
        expect_error(c.iq("get", "<version xmlns='%s'/>" % NS_VERSION), "service-unavailable")


# -- vcard-temp ----------------------------------------------------------------------------

def test_vcard_round_trip_own(svc_node):
    with logged_in(svc_node, "alice") as c:
        expect_result(c.iq("set", RICH_VCARD, to="", id_="vset"), "vset")
        no_more_answers(c, "vset")
        sent = ET.fromstring(RICH_VCARD)
        for to in ("", "alice@%s" % svc_node.jid_domain):
            got = vcard_of(expect_result(c.iq("get", "<vCard xmlns='vcard-temp'/>", to=to)))
            assert canonical(got) == canonical(sent), show(got)


def test_vcard_replaced_by_newer_set(svc_node):
    with logged_in(svc_node, "carol") as c:
        expect_result(c.iq("set", "<vCard xmlns='vcard-temp'><FN>one</FN></vCard>", to=""))
        expect_result(c.iq("set", "<vCard xmlns='vcard-temp'><NICKNAME>two</NICKNAME></vCard>",
                           to=""))
        got = vcard_of(c.iq("get", "<vCard xmlns='vcard-temp'/>", to=""))
        assert [child.tag for child in got] == [q(NS_VCARD, "NICKNAME")], show(got)
        assert got.findtext(q(NS_VCARD, "NICKNAME")) == "two"
        # An empty vCard clears it.
        expect_result(c.iq("set", "<vCard xmlns='vcard-temp'/>", to=""))
        got = vcard_of(c.iq("get", "<vCard xmlns='vcard-temp'/>", to=""))
        assert len(got) == 0 and not (got.text or "").strip(), show(got)


def test_vcard_of_another_user(svc_node):
    dom = svc_node.jid_domain
    with logged_in(svc_node, "bob") as b:
        expect_result(b.iq("set", "<vCard xmlns='vcard-temp'><FN>Bob &amp; Co</FN></vCard>",
                           to=""))
    with logged_in(svc_node, "alice") as a:
        got = vcard_of(expect_result(a.iq("get", "<vCard xmlns='vcard-temp'/>",
                                          to="bob@%s" % dom)))
        assert got.findtext(q(NS_VCARD, "FN")) == "Bob & Co", show(got)


def test_vcard_of_user_without_one_is_empty(svc_node):
    svc_node.add_user("novcard", "pw-novcard")
    with logged_in(svc_node, "alice") as a:
        reply = expect_result(a.iq("get", "<vCard xmlns='vcard-temp'/>",
                                   to="novcard@%s" % svc_node.jid_domain))
        got = vcard_of(reply)
        assert len(got) == 0, show(reply)


def test_vcard_of_unknown_user_service_unavailable(svc_node):
    with logged_in(svc_node, "alice") as a:
        reply = a.iq("get", "<vCard xmlns='vcard-temp'/>", to="nobody@%s" % svc_node.jid_domain,
                     id_="vu")
        expect_error(reply, "service-unavailable")
        no_more_answers(a, "vu")


def test_vcard_set_for_another_user_forbidden(svc_node):
    dom = svc_node.jid_domain
    with logged_in(svc_node, "bob") as b:
        expect_result(b.iq("set", "<vCard xmlns='vcard-temp'><FN>real bob</FN></vCard>", to=""))
    with logged_in(svc_node, "alice") as a:
        reply = a.iq("set", "<vCard xmlns='vcard-temp'><FN>fake bob</FN></vCard>",
                     to="bob@%s" % dom, id_="vf")
        expect_error(reply, "forbidden", "auth")
        no_more_answers(a, "vf")
        got = vcard_of(a.iq("get", "<vCard xmlns='vcard-temp'/>", to="bob@%s" % dom))
        assert got.findtext(q(NS_VCARD, "FN")) == "real bob", show(got)


def test_vcard_too_big_not_acceptable(svc_node):
    with logged_in(svc_node, "carol") as c:
        expect_result(c.iq("set", "<vCard xmlns='vcard-temp'><FN>small</FN></vCard>", to=""))
        big = "<vCard xmlns='vcard-temp'><DESC>%s</DESC></vCard>" % ("x" * VCARD_MAX)
        reply = c.iq("set", big, to="", id_="vbig")
        expect_error(reply, "not-acceptable", "modify")
        assert str(VCARD_MAX) in (error_text(reply) or ""), show(reply)
        no_more_answers(c, "vbig")
        got = vcard_of(c.iq("get", "<vCard xmlns='vcard-temp'/>", to=""))
        assert got.findtext(q(NS_VCARD, "FN")) == "small", "a refused set changed the vCard"
        # Exactly the limit is stored (the limit counts the serialised element, which here is
        # byte for byte what was sent).
        template = "<vCard xmlns='vcard-temp'><DESC>%s</DESC></vCard>"
        filler = "y" * (VCARD_MAX - len(template % ""))
        expect_result(c.iq("set", template % filler, to=""))
        got = vcard_of(c.iq("get", "<vCard xmlns='vcard-temp'/>", to=""))
        assert got.findtext(q(NS_VCARD, "DESC")) == filler


def test_vcard_to_server_domain_not_taken(svc_node):
    """vcard-temp of the server itself is not served: the router's service-unavailable."""
    with logged_in(svc_node, "alice") as a:
        expect_error(a.iq("get", "<vCard xmlns='vcard-temp'/>", to=svc_node.jid_domain),
                     "service-unavailable")


def test_vcard_deleted_with_account(svc_node):
    svc_node.add_user("shortlived", "pw-short")
    c = client_for(svc_node)
    with c:
        c.login("shortlived", "pw-short", "r")
        expect_result(c.iq("set", "<vCard xmlns='vcard-temp'><FN>gone soon</FN></vCard>", to=""))
    count = "SELECT COUNT(*) FROM vcards WHERE localpart = 'shortlived'"
    assert svc_node.db.scalar(count, svc_node.db_name) == "1"
    svc_node.ctl("user", "del", "shortlived", check=True)
    assert svc_node.db.scalar(count, svc_node.db_name) == "0"


def test_vcard_survives_restart(make_node):
    node = make_node()
    setup_c2s(node, auth_attempts_per_ip=100000)
    with logged_in(node, "alice") as a:
        expect_result(a.iq("set", RICH_VCARD, to=""))
    assert node.stop() == 0
    node.start()
    with logged_in(node, "bob") as b:
        got = vcard_of(expect_result(b.iq("get", "<vCard xmlns='vcard-temp'/>",
                                          to="alice@%s" % node.jid_domain)))
        assert canonical(got) == canonical(ET.fromstring(RICH_VCARD)), show(got)
