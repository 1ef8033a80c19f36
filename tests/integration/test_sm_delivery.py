"""mod_sm delivery (RFC 6121 §8.5) and offline storage (XEP-0160, XEP-0203): messages to
bare and full JIDs, priorities, offline storage in order with delay stamps, the per-user
limit, unknown users, and what a closing stream leaves unacknowledged."""

import time
from datetime import datetime, timezone

import pytest

from conftest import setup_c2s
from kt.im import no_message
from kt.xmpp import PASSWORDS, client_for, q, show, stanza_error_condition

NS_DELAY = "urn:xmpp:delay"
NS_SM = "urn:xmpp:sm:3"


def online(node, user, resource="r", priority=None):
    c = client_for(node)
    c.login(user, PASSWORDS[user], resource)
    prio = "" if priority is None else "<priority>%d</priority>" % priority
    c.send("<presence>%s</presence>" % prio)
    return c


def message(to, body, id_, type_="chat", extra=""):
    return "<message type='%s' to='%s' id='%s'><body>%s</body>%s</message>" % (
        type_, to, id_, body, extra)


def expect_message(c, id_, timeout=5):
    elem = c.next(timeout)
    while elem.tag != q("jabber:client", "message"):
        elem = c.next(timeout)
    assert elem.get("id") == id_, show(elem)
    return elem


@pytest.fixture
def sm_node(make_node):
    node = make_node()
    node.conf["sm"] = {"offline_max": 5}
    return setup_c2s(node, auth_attempts_per_ip=100000)


def test_message_between_online_users_both_ways(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a, online(sm_node, "bob") as b:
        time.sleep(0.2)
        a.send(message("bob@%s" % dom, "hi bob", "m1"))
        got = expect_message(b, "m1")
        assert got.get("from") == "alice@%s/r" % dom, show(got)
        assert got.find(q(NS_DELAY, "delay")) is None, "live delivery must not be delayed"
        b.send(message("alice@%s" % dom, "hi alice", "m2"))
        expect_message(a, "m2")


def test_bare_jid_goes_to_highest_priority(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "bob", "low", 1) as low, online(sm_node, "bob", "high", 5) as high, \
            online(sm_node, "alice") as a:
        time.sleep(0.3)
        a.send(message("bob@%s" % dom, "to the best", "p1"))
        expect_message(high, "p1")
        no_message(low, 0.5)


def test_negative_priority_gets_nothing_and_message_is_stored(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "bob", "neg", -1) as neg, online(sm_node, "alice") as a:
        time.sleep(0.3)
        a.send(message("bob@%s" % dom, "stored", "n1"))
        no_message(neg, 0.5)
    with online(sm_node, "bob", "later", 0) as b:
        got = expect_message(b, "n1")
        assert got.find(q(NS_DELAY, "delay")) is not None, show(got)


def test_offline_messages_in_order_with_delay(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a:
        for i in range(3):
            a.send(message("carol@%s" % dom, "offline %d" % i, "o%d" % i))
        no_message(a, 1.0)
    before = datetime.now(timezone.utc)
    with online(sm_node, "carol") as c:
        for i in range(3):
            got = expect_message(c, "o%d" % i)
            delay = got.find(q(NS_DELAY, "delay"))
            assert delay is not None and delay.get("from") == dom, show(got)
            stamp = datetime.strptime(delay.get("stamp"), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc)
            assert abs((before - stamp).total_seconds()) < 60, show(got)
    # Delivered once: a second login finds nothing.
    with online(sm_node, "carol", "again") as c:
        no_message(c, 0.8)


def test_offline_survives_kill_9(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a:
        a.send(message("carol@%s" % dom, "durable", "k1"))
        no_message(a, 1.0)
    sm_node.kill()
    sm_node.start()
    with online(sm_node, "carol") as c:
        expect_message(c, "k1")


def test_offline_limit_bounces_resource_constraint(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a:
        for i in range(5):
            a.send(message("carol@%s" % dom, "fill %d" % i, "f%d" % i))
        no_message(a, 1.0)
        a.send(message("carol@%s" % dom, "one too many", "f5"))
        err = a.next(5)
        assert err.get("id") == "f5" and err.get("type") == "error", show(err)
        assert stanza_error_condition(err)[1] == "resource-constraint", show(err)


def test_unknown_user_bounces_service_unavailable(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a:
        a.send(message("nobody@%s" % dom, "hello?", "u1"))
        err = a.next(5)
        assert err.get("id") == "u1" and err.get("type") == "error", show(err)
        assert stanza_error_condition(err)[1] == "service-unavailable", show(err)


def test_chat_states_and_headlines_to_offline_user_are_dropped(sm_node):
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a:
        a.send("<message type='chat' to='carol@%s' id='cs'><composing "
               "xmlns='http://jabber.org/protocol/chatstates'/></message>" % dom)
        a.send(message("carol@%s" % dom, "news", "hl", type_="headline"))
        no_message(a, 1.0)
    with online(sm_node, "carol") as c:
        no_message(c, 0.8)


def test_unacked_message_of_closing_stream_goes_offline(sm_node):
    """XEP-0198: what the recipient never acknowledged is routed again when its stream ends
    without resumption, and lands in offline storage (it has no other session)."""
    dom = sm_node.jid_domain
    b = online(sm_node, "bob", "phone")
    b.send("<enable xmlns='%s'/>" % NS_SM)
    assert b.next(5).tag == q(NS_SM, "enabled")
    with online(sm_node, "alice") as a:
        time.sleep(0.2)
        a.send(message("bob@%s/phone" % dom, "unacked", "ua"))
        expect_message(b, "ua")   # received, never acknowledged
        b.send("</stream:stream>")
        b.close()
        no_message(a, 1.0)
    with online(sm_node, "bob", "tablet") as b2:
        got = expect_message(b2, "ua")
        assert got.find(q(NS_DELAY, "delay")) is not None, show(got)


def test_resumption_timeout_sends_unacked_to_offline_storage(make_node):
    """XEP-0198: a session that is not resumed in time ends; what it never acknowledged is
    stored offline (the user has no other session), and a late <resume/> fails cleanly."""
    node = make_node()
    node.conf["sm"] = {"offline_max": 5}
    setup_c2s(node, auth_attempts_per_ip=100000, sm_resume_timeout=1)
    dom = node.jid_domain
    b = online(node, "bob", "phone")
    b.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    enabled = b.next(5)
    assert enabled.tag == q(NS_SM, "enabled") and enabled.get("resume") == "true", show(enabled)
    with online(node, "alice") as a:
        time.sleep(0.2)
        a.send(message("bob@%s/phone" % dom, "never acked", "na"))
        expect_message(b, "na")
        b.drop()                      # TCP gone, no </stream:stream>, no ack
        time.sleep(2.5)               # past sm_resume_timeout
        no_message(a, 0.5)
    late = client_for(node)
    late.login("bob", PASSWORDS["bob"], bind=False)
    late.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, enabled.get("id")))
    failed = late.next(5)
    assert failed.tag == q(NS_SM, "failed"), show(failed)
    late.close()
    with online(node, "bob", "tablet") as b2:
        got = expect_message(b2, "na")
        assert got.find(q(NS_DELAY, "delay")) is not None, show(got)


def acked(c, want, timeout=5):
    """Waits for an <a/> acknowledging at least `want` stanzas (there may be earlier ones)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no <a h='%d'/>" % want
        e = c.next(left)
        if e.tag == q(NS_SM, "a") and int(e.get("h")) >= want:
            return int(e.get("h"))


def test_sm_ack_covers_the_offline_write(sm_node):
    """XEP-0198 h counts handled stanzas: a message stored offline is acked once stored (the
    immediate answer may be lower, then an unsolicited <a/> follows)."""
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a:
        a.send("<enable xmlns='%s'/>" % NS_SM)
        assert a.next(5).tag == q(NS_SM, "enabled")
        a.send(message("carol@%s" % dom, "store me", "s1"))
        a.send("<r xmlns='%s'/>" % NS_SM)
        assert acked(a, 1) == 1
    with online(sm_node, "carol") as c:
        expect_message(c, "s1")


def test_sm_ack_not_held_by_a_recipient_that_never_acks(sm_node):
    """The recipient keeps its own copy for its XEP-0198 queue: its missing acks do not delay
    the sender's."""
    dom = sm_node.jid_domain
    with online(sm_node, "alice") as a, online(sm_node, "bob") as b:
        for c in (a, b):
            c.send("<enable xmlns='%s'/>" % NS_SM)
            assert c.next(5).tag == q(NS_SM, "enabled")
        a.send(message("bob@%s/r" % dom, "hold?", "h1"))
        expect_message(b, "h1")      # bob never acks it
        a.send("<r xmlns='%s'/>" % NS_SM)
        assert acked(a, 1) == 1
