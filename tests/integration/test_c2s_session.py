"""mod_c2s after authentication: resource binding (RFC 6120 §7), legacy session, 'from'
stamping and checks (§8.1.2), 'to' validation, XEP-0198 stream management and XEP-0352 CSI.

Without mod_sm, iq get/set addressed to the server with an unknown payload are answered by the
router with service-unavailable: those answers are the stanzas these tests count.
"""

import re
import time

import pytest

from kt.xmpp import (NS_BIND, NS_CSI, NS_SASL, NS_SESSION, NS_SM, PASSWORDS,
                     client_for, local, q, show, stanza_error_condition, unknown_iq)


def logged_in(node, user="alice", resource="test", **kw):
    c = client_for(node, **kw)
    c.login(user, PASSWORDS[user], resource)
    return c


def authenticated(node, user="alice"):
    """Authenticated and restarted, not bound: returns (client, features)."""
    c = client_for(node)
    c.start()
    assert c.auth("SCRAM-SHA-256", user, PASSWORDS[user]).tag == q(NS_SASL, "success")
    return c, c.restart()


def expect_unavailable(reply, id_, to=None):
    assert reply.get("id") == id_ and reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == "service-unavailable", show(reply)
    if to is not None:
        assert reply.get("to") == to, "answer not addressed to the stamped JID: " + show(reply)


def alive(node):
    assert node.running(), "kontalkd died:\n" + node.all_logs()[-3000:]


# -- binding --------------------------------------------------------------------------------

def test_bind_chosen_resource(c2s_node):
    with logged_in(c2s_node, resource="phone") as c:
        assert c.jid == "alice@%s/phone" % c2s_node.jid_domain


def test_bind_generated_resource(c2s_node):
    jids = []
    for _ in range(2):
        c, _ = authenticated(c2s_node)
        with c:
            jid = c.bind(None)
            m = re.fullmatch(r"alice@%s/(.+)" % re.escape(c2s_node.jid_domain), jid)
            assert m and m.group(1).strip(), jid
            jids.append(jid)
    assert jids[0] != jids[1], jids


def test_bind_empty_resource_element_generates_one(c2s_node):
    c, _ = authenticated(c2s_node)
    with c:
        assert c.bind("").startswith("alice@%s/" % c2s_node.jid_domain)
        assert not c.jid.endswith("/")


def test_bind_resource_too_long_bad_request(c2s_node):
    """RFC 6120 §7.7.2.1: a resourcepart that cannot be processed (over 1023 bytes)."""
    c, _ = authenticated(c2s_node)
    with c:
        reply = c.iq("set", "<bind xmlns='%s'><resource>%s</resource></bind>"
                     % (NS_BIND, "r" * 1100), to="")
        assert reply.get("type") == "error", show(reply)
        assert stanza_error_condition(reply) == ("modify", "bad-request"), show(reply)
        assert c.bind("after-error").endswith("/after-error")


def test_bind_conflict_replaces_old_session(c2s_node):
    old = logged_in(c2s_node, resource="dup")
    try:
        new = logged_in(c2s_node, resource="dup")
        with new:
            assert new.jid == "alice@%s/dup" % c2s_node.jid_domain
            old.expect_stream_error("conflict")
            # The new session works.
            expect_unavailable(new.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>",
                                      id_="after-replace"), "after-replace", new.jid)
    finally:
        old.close()
    alive(c2s_node)


def test_same_resource_other_user_no_conflict(c2s_node):
    with logged_in(c2s_node, "alice", "shared") as a, logged_in(c2s_node, "bob", "shared") as b:
        assert a.jid.startswith("alice@") and b.jid.startswith("bob@")
        expect_unavailable(a.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="a1"),
                           "a1", a.jid)
        expect_unavailable(b.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="b1"),
                           "b1", b.jid)


def test_legacy_session_accepted(c2s_node):
    with logged_in(c2s_node, resource="legacy") as c:
        reply = c.iq("set", "<session xmlns='%s'/>" % NS_SESSION, to="")
        assert reply.get("type") == "result", show(reply)


def test_session_feature_optional_if_advertised(c2s_node):
    c, feats = authenticated(c2s_node)
    with c:
        session = feats.find(q(NS_SESSION, "session"))
        if session is not None:
            assert session.find(q(NS_SESSION, "optional")) is not None, show(feats)


# -- stanzas before authentication / binding --------------------------------------------------

def test_stanza_before_auth_not_authorized(c2s_node):
    c = client_for(c2s_node)
    with c:
        c.start()
        c.send(unknown_iq("early", c2s_node.jid_domain))
        c.expect_stream_error("not-authorized")
        assert all(e.get("id") != "early" for e in c.skipped)


@pytest.mark.parametrize("stanza", [
    "<message to='bob@%(d)s' id='m1'><body>hi</body></message>",
    "<presence/>",
])
def test_other_stanzas_before_auth_not_authorized(c2s_node, stanza):
    c = client_for(c2s_node)
    with c:
        c.start()
        c.send(stanza % {"d": c2s_node.jid_domain})
        c.expect_stream_error("not-authorized")


# -- from / to ------------------------------------------------------------------------------

def test_from_stamped_by_server(c2s_node):
    with logged_in(c2s_node, resource="stamp") as c:
        expect_unavailable(c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="nofrom"),
                           "nofrom", c.jid)


@pytest.mark.parametrize("which", ["full", "bare"])
def test_own_from_accepted(c2s_node, which):
    with logged_in(c2s_node, resource="own") as c:
        own = c.jid if which == "full" else c.jid.split("/")[0]
        reply = c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="own",
                     attrs="from='%s'" % own)
        expect_unavailable(reply, "own", c.jid)


@pytest.mark.parametrize("spoof", [
    "bob@%(d)s", "bob@%(d)s/own", "alice@%(d)s/other-resource", "alice@evil.example/own",
    "%(d)s", "evil.example",
])
def test_spoofed_from_invalid_from(c2s_node, spoof):
    with logged_in(c2s_node, resource="own") as c:
        c.send("<iq type='get' id='spoof' to='%s' from='%s'><query xmlns='urn:x'/></iq>"
               % (c2s_node.jid_domain, spoof % {"d": c2s_node.jid_domain}))
        c.expect_stream_error("invalid-from")
        assert all(e.get("id") != "spoof" for e in c.skipped)
    alive(c2s_node)


@pytest.mark.parametrize("to", ["a@b@c", "@kontalk.test", "alice@", "alice@kontalk.test/",
                                "al ice@kontalk.test", "a" * 1100 + "@kontalk.test"])
def test_invalid_to_jid_malformed(c2s_node, to):
    with logged_in(c2s_node, resource="to") as c:
        reply = c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="badto", to=to)
        assert reply.get("type") == "error", show(reply)
        assert stanza_error_condition(reply) == ("modify", "jid-malformed"), show(reply)
        # The stream goes on.
        expect_unavailable(c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="ok"),
                           "ok", c.jid)


def test_invalid_to_on_message_jid_malformed(c2s_node):
    with logged_in(c2s_node, resource="to") as c:
        c.send("<message to='a@b@c' id='badmsg' type='chat'><body>x</body></message>")
        reply = c.wait_id("badmsg")
        assert local(reply.tag) == "message" and reply.get("type") == "error", show(reply)
        assert stanza_error_condition(reply)[1] == "jid-malformed", show(reply)


# -- XEP-0352 client state indication ---------------------------------------------------------

def test_csi_advertised_and_accepted(c2s_node):
    c, feats = authenticated(c2s_node)
    with c:
        assert feats.find(q(NS_CSI, "csi")) is not None, show(feats)
        c.bind("csi")
        c.send("<inactive xmlns='%s'/>" % NS_CSI)
        # iq answers are never delayed by CSI.
        t0 = time.monotonic()
        expect_unavailable(c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>",
                                id_="inactive-iq", timeout=2), "inactive-iq", c.jid)
        assert time.monotonic() - t0 < 2
        c.send("<active xmlns='%s'/>" % NS_CSI)
        expect_unavailable(c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>",
                                id_="active-iq"), "active-iq", c.jid)
        assert all(local(e.tag) not in ("error",) for e in getattr(c, "other", [])), \
            [show(e) for e in c.other]


# -- XEP-0198 stream management -----------------------------------------------------------------

def sm_enable(c, resume=True):
    c.send("<enable xmlns='%s'%s/>" % (NS_SM, " resume='true'" if resume else ""))
    while True:
        elem = c.next()
        if elem.tag in (q(NS_SM, "enabled"), q(NS_SM, "failed")):
            break
    assert elem.tag == q(NS_SM, "enabled"), show(elem)
    c.counting = True
    c.received = 0
    return elem


def send_unknown(c, ids):
    c.send("".join(unknown_iq(i, c.domain) for i in ids))


def read_answers(c, ids, answer_r=True):
    """Read the answers to ids (in order); answers server <r/> with our count."""
    got = []
    while len(got) < len(ids):
        elem = c.next()
        if elem.tag == q(NS_SM, "r"):
            if answer_r:
                c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, c.received))
            continue
        if elem.tag == q(NS_SM, "a"):
            continue
        got.append(elem.get("id"))
    assert got == list(ids), got
    return got


def wait_ack(c):
    while True:
        elem = c.next()
        if elem.tag == q(NS_SM, "a"):
            return int(elem.get("h"))
        if elem.tag == q(NS_SM, "r"):
            c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, c.received))


def test_sm_enable_and_ack(c2s_node):
    c, feats = authenticated(c2s_node)
    with c:
        assert feats.find(q(NS_SM, "sm")) is not None, show(feats)
        c.bind("sm")
        enabled = sm_enable(c)
        assert enabled.get("id"), show(enabled)
        assert enabled.get("resume") in ("true", "1"), show(enabled)
        send_unknown(c, ["s1", "s2"])
        c.send("<r xmlns='%s'/>" % NS_SM)
        read_answers(c, ["s1", "s2"])
        assert wait_ack(c) == 2
        # Our acks are accepted; the stream goes on.
        c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, c.received))
        send_unknown(c, ["s3"])
        read_answers(c, ["s3"])
        c.send("<r xmlns='%s'/>" % NS_SM)
        assert wait_ack(c) == 3


def test_sm_enable_without_resume(c2s_node):
    with logged_in(c2s_node, resource="smnr") as c:
        enabled = sm_enable(c, resume=False)
        assert enabled.get("resume") not in ("true", "1"), show(enabled)


def test_sm_enable_before_bind_fails(c2s_node):
    """XEP-0198 §3: enable is only allowed after binding → <failed><unexpected-request/>."""
    c, _ = authenticated(c2s_node)
    with c:
        c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        elem = c.next()
        assert elem.tag == q(NS_SM, "failed"), show(elem)
        assert elem.find("{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request") is not None, \
            show(elem)
        c.bind("late")


def test_sm_enable_twice_fails(c2s_node):
    with logged_in(c2s_node, resource="sm2") as c:
        sm_enable(c)
        c.send("<enable xmlns='%s'/>" % NS_SM)
        elem = c.next()
        assert elem.tag == q(NS_SM, "failed"), show(elem)


def test_sm_handled_count_too_high(c2s_node):
    """XEP-0198 §4: an ack for more stanzas than were sent → undefined-condition stream error
    carrying <handled-count-too-high/>."""
    with logged_in(c2s_node, resource="smhigh") as c:
        sm_enable(c)
        send_unknown(c, ["h1"])
        read_answers(c, ["h1"])
        c.send("<a xmlns='%s' h='50'/>" % NS_SM)
        closed = c.expect_stream_error("undefined-condition")
        assert closed.element.find(q(NS_SM, "handled-count-too-high")) is not None, \
            show(closed.element)


def resume_on_new_connection(node, previd, h, user="alice"):
    c, feats = authenticated(node, user)
    assert feats.find(q(NS_SM, "sm")) is not None, show(feats)
    c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
    return c, c.next()


def test_sm_resume_after_dropped_connection(c2s_node):
    old = logged_in(c2s_node, resource="resume")
    jid = old.jid
    previd = sm_enable(old).get("id")
    send_unknown(old, ["q1", "q2", "q3"])
    read_answers(old, ["q1", "q2", "q3"], answer_r=False)
    old.send("<a xmlns='%s' h='1'/>" % NS_SM)   # we acknowledge q1 only
    time.sleep(0.2)
    old.drop()                                   # TCP gone, no </stream:stream>

    new, resumed = resume_on_new_connection(c2s_node, previd, 2)  # we claim q1 and q2
    with new:
        assert resumed.tag == q(NS_SM, "resumed"), show(resumed)
        assert resumed.get("previd") == previd, show(resumed)
        assert int(resumed.get("h")) == 3, "the server received 3 stanzas: " + show(resumed)
        # q3 was neither acknowledged nor claimed: it is sent again, and only it.
        elem = new.next()
        while elem.tag in (q(NS_SM, "r"), q(NS_SM, "a")):
            elem = new.next()
        assert elem.get("id") == "q3", show(elem)
        # The session kept its full JID and goes on.
        expect_unavailable(new.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>",
                                  id_="after-resume"), "after-resume", jid)


def test_sm_resume_unknown_id_fails(c2s_node):
    c, elem = resume_on_new_connection(c2s_node, "no-such-session-id", 0)
    with c:
        assert elem.tag == q(NS_SM, "failed"), show(elem)
        assert elem.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None, \
            show(elem)
        assert c.bind("after-failed").endswith("/after-failed")


def test_sm_resume_other_users_session_fails(c2s_node):
    old = logged_in(c2s_node, "alice", resource="mine")
    previd = sm_enable(old).get("id")
    old.drop()
    c, elem = resume_on_new_connection(c2s_node, previd, 0, user="bob")
    with c:
        assert elem.tag == q(NS_SM, "failed"), show(elem)


def test_sm_queue_resent_are_not_lost_when_old_stream_still_open(c2s_node):
    """Resumption while the server still holds the old TCP connection: the old one is closed
    (XEP-0198 §5) and the new one takes over."""
    old = logged_in(c2s_node, resource="takeover")
    previd = sm_enable(old).get("id")
    send_unknown(old, ["t1"])
    read_answers(old, ["t1"], answer_r=False)
    new, resumed = resume_on_new_connection(c2s_node, previd, 0)
    with new:
        assert resumed.tag == q(NS_SM, "resumed"), show(resumed)
        elem = new.next()
        while elem.tag in (q(NS_SM, "r"), q(NS_SM, "a")):
            elem = new.next()
        assert elem.get("id") == "t1", show(elem)
        closed = old.wait_closed()
        assert closed.error is not None or closed.stream_end or closed.reset, closed
    old.close()


# -- traffic between two sessions (full JIDs: routed without mod_sm) -----------------------------

def message(to, id_, body="hi", extra=""):
    return "<message to='%s' id='%s' type='chat'>%s%s</message>" % (
        to, id_, "<body>%s</body>" % body if body is not None else "", extra)


def test_message_between_full_jids_from_stamped(c2s_node):
    with logged_in(c2s_node, "alice", "ra") as a, logged_in(c2s_node, "bob", "rb") as b:
        b.send(message(a.jid, "m1"))
        got = a.wait_id("m1")
        assert got.get("from") == b.jid and got.get("to") == a.jid, show(got)
        assert got.findtext(q("jabber:client", "body")) == "hi", show(got)


def test_sm_resume_delivers_unacked_and_detached_messages(c2s_node):
    """XEP-0198 §5: what the client had not handled before the drop is sent again, and what
    arrived while the session was detached is queued, then delivered in order: nothing lost."""
    a = logged_in(c2s_node, "alice", "mobile")
    previd = sm_enable(a).get("id")
    with logged_in(c2s_node, "bob", "desk") as b:
        b.send(message(a.jid, "m1") + message(a.jid, "m2"))
        assert [a.wait_id("m1").get("id"), a.wait_id("m2").get("id")] == ["m1", "m2"]
        a.drop()                                     # we handled m1 only (h=1 below)
        time.sleep(0.3)
        b.send(message(a.jid, "m3"))                 # to the detached session
        bounced = [e for e in b.quiet(0.5) if e.get("type") == "error"]
        assert bounced == [], [show(e) for e in bounced]
        new, resumed = resume_on_new_connection(c2s_node, previd, 1)
        with new:
            assert resumed.tag == q(NS_SM, "resumed"), show(resumed)
            assert int(resumed.get("h")) == 0, show(resumed)   # alice sent nothing
            got = []
            while len(got) < 2:
                elem = new.next()
                if local(elem.tag) == "message":
                    got.append(elem.get("id"))
            assert got == ["m2", "m3"], got
            # The resumed session still receives new traffic.
            b.send(message("alice@%s/mobile" % c2s_node.jid_domain, "m4"))
            assert new.wait_id("m4").get("from") == b.jid


# -- XEP-0352: what waits while inactive -----------------------------------------------------------

CHATSTATE = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"


def test_csi_queues_presence_drops_chat_states_delivers_messages(c2s_node):
    with logged_in(c2s_node, "alice", "csi-a") as a, logged_in(c2s_node, "bob", "csi-b") as b, \
            logged_in(c2s_node, "carol", "csi-c") as c:
        a.send("<inactive xmlns='%s'/>" % NS_CSI)
        time.sleep(0.2)
        b.send("<presence to='%s'><status>b1</status></presence>" % a.jid)
        b.send("<presence to='%s'><status>b2</status></presence>" % a.jid)
        c.send("<presence to='%s'><status>c1</status></presence>" % a.jid)
        b.send(message(a.jid, "state", body=None, extra=CHATSTATE))
        b.send(message(a.jid, "receipt", body=None,
                       extra="<received xmlns='urn:xmpp:receipts' id='x1'/>"))
        b.send(message(a.jid, "body", body="urgent", extra=CHATSTATE))
        t0 = time.monotonic()
        while_inactive = a.quiet(1)
        ids = [e.get("id") for e in while_inactive]
        assert "receipt" in ids and "body" in ids, [show(e) for e in while_inactive]
        assert time.monotonic() - t0 < 2
        assert not any(local(e.tag) == "presence" for e in while_inactive), \
            [show(e) for e in while_inactive]
        assert "state" not in ids, "chat state delivered while inactive"

        a.send("<active xmlns='%s'/>" % NS_CSI)
        flushed = a.quiet(1)
        presences = {(e.get("from"), e.findtext(q("jabber:client", "status")))
                     for e in flushed if local(e.tag) == "presence"}
        assert presences == {(b.jid, "b2"), (c.jid, "c1")}, [show(e) for e in flushed]
        assert "state" not in [e.get("id") for e in flushed], "chat state queued, not dropped"

        # Active again: presence goes straight through.
        b.send("<presence to='%s'><status>b3</status></presence>" % a.jid)
        got = a.next(2)
        assert local(got.tag) == "presence" and got.findtext(q("jabber:client", "status")) == "b3"
