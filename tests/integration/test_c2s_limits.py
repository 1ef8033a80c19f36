"""mod_c2s limits and timers, each on a node of its own with short settings: unauthenticated
timeout, XEP-0199 pings to idle clients, connections per IP, output queue of a client that does
not read, XEP-0198 resumption window and unacked queue, resource_conflict = "refuse".
"""

import socket
import ssl
import time

from kt.xmpp import (NS_CLIENT, NS_PING, NS_SASL, NS_SM, PASSWORDS, Closed, client_for, q, show,
                     stanza_error_condition, unknown_iq)


def alive(node):
    assert node.running(), "kontalkd died:\n" + node.all_logs()[-3000:]


def logged_in(node, user="alice", resource="test", **kw):
    c = client_for(node, **kw)
    c.login(user, PASSWORDS[user], resource)
    return c


def test_unauthenticated_stream_times_out(make_c2s_node):
    node = make_c2s_node(auth_timeout=1)
    t0 = time.monotonic()
    with client_for(node) as c:
        c.connect()
        c.open_stream()
        c.features()
        c.expect_stream_error("connection-timeout", timeout=6)
    assert 0.8 < time.monotonic() - t0 < 6
    # Also after TLS, before SASL.
    with client_for(node) as c:
        c.start()
        c.expect_stream_error("connection-timeout", timeout=6)
    # An authenticated stream is not subject to it.
    with logged_in(node) as c:
        assert c.quiet(1.5) == []
    alive(node)


def next_ping(c, timeout):
    elem = c.next(timeout)
    assert elem.tag == q(NS_CLIENT, "iq") and elem.get("type") == "get", show(elem)
    assert elem.find(q(NS_PING, "ping")) is not None, show(elem)
    assert elem.get("id"), show(elem)
    return elem


def test_idle_ping_answered_keeps_stream_unanswered_times_out(make_c2s_node):
    node = make_c2s_node(ping_interval=1, ping_timeout=1)
    with logged_in(node, resource="idle") as c:
        for _ in range(2):
            ping = next_ping(c, timeout=4)
            assert ping.get("to") in (None, c.jid), show(ping)
            c.send("<iq type='result' id='%s'%s/>"
                   % (ping.get("id"), " to='%s'" % ping.get("from") if ping.get("from") else ""))
        next_ping(c, timeout=4)          # not answered
        c.expect_stream_error("connection-timeout", timeout=5)
    alive(node)


def test_traffic_postpones_ping(make_c2s_node):
    node = make_c2s_node(ping_interval=2, ping_timeout=2)
    with logged_in(node, resource="busy") as c:
        for i in range(4):                # 4 x 0.8 s of client traffic: never idle 2 s
            time.sleep(0.8)
            reply = c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="busy%d" % i)
            assert reply.get("type") == "error", show(reply)
        assert not any(e.find(q(NS_PING, "ping")) is not None for e in getattr(c, "other", [])), \
            [show(e) for e in c.other]


def test_max_connections_per_ip(make_c2s_node):
    node = make_c2s_node(max_connections_per_ip=3)
    held = []
    try:
        for _ in range(3):
            c = client_for(node, source="127.0.0.5")
            c.connect()
            c.open_stream()
            c.features()
            held.append(c)
        extra = client_for(node, source="127.0.0.5")
        held.append(extra)
        try:
            extra.connect()
            extra.open_stream(wait=False)
            closed = extra.wait_closed()
        except (ConnectionResetError, BrokenPipeError) as e:
            raise AssertionError("closed without a stream error: %r" % e)
        assert closed.error == "policy-violation", closed
        # Another address is not affected.
        with client_for(node, source="127.0.0.6") as other:
            other.connect()
            other.open_stream()
            other.features()
        # A slot freed is a slot available.
        held.pop(0).close()
        time.sleep(0.3)
        again = client_for(node, source="127.0.0.5")
        held.append(again)
        again.connect()
        again.open_stream()
        again.features()
    finally:
        for c in held:
            c.close()
    alive(node)


def test_max_connections(make_c2s_node):
    node = make_c2s_node(max_connections=3)
    held = []
    try:
        for i in range(3):
            c = client_for(node, source="127.0.1.%d" % (i + 1))
            held.append(c)
            c.connect()
            c.open_stream()
            c.features()
        extra = client_for(node, source="127.0.1.9")
        held.append(extra)
        extra.connect()
        extra.open_stream(wait=False)
        closed = extra.wait_closed()
        assert closed.error == "policy-violation", closed
    finally:
        for c in held:
            c.close()
    alive(node)


def test_rate_limit(make_c2s_node):
    """rate (bytes/s, token bucket with a 1 s burst): 60 KB at 20 KB/s take about 2 s to be
    read, however fast they were sent."""
    node = make_c2s_node(rate=20000)
    with logged_in(node, resource="slow") as c:
        c.timeout = 20
        ids = ["rate%d" % i for i in range(60)]
        pad = "p" * 900
        t0 = time.monotonic()
        c.send("".join("<iq type='get' id='%s' to='%s'><query xmlns='urn:kontalk:test:unknown'>"
                       "%s</query></iq>" % (i, node.jid_domain, pad) for i in ids))
        for i in ids:
            assert c.wait_id(i).get("type") == "error"
        elapsed = time.monotonic() - t0
        assert 1.5 < elapsed < 15, "60 KB read in %.2f s at 20 KB/s" % elapsed
    alive(node)


def test_max_output_for_a_client_that_does_not_read(make_c2s_node):
    """A client that keeps sending but never reads: its answers pile up in the server; past
    max_output the server ends the stream instead of growing its memory."""
    node = make_c2s_node(max_output=65536, log_level="debug")
    c = client_for(node, rcvbuf=4096, source="127.0.0.7")
    c.login("alice", PASSWORDS["alice"], "noreader")
    rss_before = node.rss_kb()
    chunk = "".join(unknown_iq("o%d" % i, node.jid_domain, ns="urn:kontalk:test:" + "x" * 200)
                    for i in range(200)).encode()
    sent = 0
    closed_on_send = None
    deadline = time.monotonic() + 20
    c.sock.settimeout(1)
    try:
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                c.sock.sendall(chunk)
                sent += len(chunk)
            except (socket.timeout, ssl.SSLWantWriteError):
                continue  # the server is not reading us (yet): keep trying until the deadline
            except (OSError, ssl.SSLError) as e:
                closed_on_send = e
                break
        if closed_on_send is None:
            # Still writable: the server must have closed by now; read what is left.
            closed = c.wait_closed(timeout=10)
            assert closed.error in ("policy-violation", None), closed
        alive(node)
        assert node.rss_kb() - rss_before < 32 * 1024, "server memory grew with the queue"
    finally:
        c.drop()
    assert closed_on_send is not None or c.ended is not None, \
        "sent %d bytes, connection still open" % sent
    # Closed for the right reason (the stream error itself is lost with the unread data): the
    # debug log says why the connection ended.
    node.wait_log(r"c2s\[\d+\] alice@\S+/noreader: .*(output|not reading)", timeout=15)
    # The node still serves others.
    with logged_in(node, resource="reader") as ok:
        assert ok.jid.endswith("/reader")


def test_sm_resume_after_timeout_fails(make_c2s_node):
    node = make_c2s_node(sm_resume_timeout=1)
    old = logged_in(node, resource="late")
    old.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    enabled = old.expect(q(NS_SM, "enabled"))
    previd = enabled.get("id")
    assert enabled.get("max") is None or int(enabled.get("max")) <= 1, \
        "max (the window in seconds) above sm_resume_timeout: " + show(enabled)
    old.send(unknown_iq("late1", node.jid_domain))
    old.drop()
    time.sleep(2.5)
    c = client_for(node)
    with c:
        c.start()
        assert c.auth("SCRAM-SHA-256", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")
        c.restart()
        c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, previd))
        elem = c.next()
        assert elem.tag == q(NS_SM, "failed"), show(elem)
        assert elem.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None, \
            show(elem)
        # A fresh session can start on the same stream.
        assert c.bind("late").endswith("/late")
    alive(node)


def test_sm_max_unacked(make_c2s_node):
    """sm_max_unacked: a client that never acks gets policy-violation once more stanzas than
    that wait for an ack."""
    node = make_c2s_node(sm_max_unacked=10)
    # A client that answers the server's <r/> (XEP-0198 §4) receives any number of stanzas.
    with logged_in(node, resource="acks") as c:
        c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        c.expect(q(NS_SM, "enabled"))
        c.counting = True
        requests = 0
        for round_ in range(10):
            ids = ["r%d-%d" % (round_, i) for i in range(5)]
            c.send("".join(unknown_iq(i, node.jid_domain) for i in ids))
            got = []
            while len(got) < len(ids):
                elem = c.next()
                if elem.tag == q(NS_SM, "r"):
                    requests += 1
                    c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, c.received))
                elif elem.tag == q(NS_CLIENT, "iq"):
                    got.append(elem.get("id"))
            assert got == ids, got
        assert requests > 0, "the server never asked for an ack with 10 unacked allowed"
    # One that never acks is cut off.
    with logged_in(node, resource="noack") as c:
        c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        c.expect(q(NS_SM, "enabled"))
        c.send("".join(unknown_iq("u%d" % i, node.jid_domain) for i in range(30)))
        closed = c.wait_closed(timeout=5)
        assert closed.error == "policy-violation", closed
        answered = [e.get("id") for e in c.skipped if e.tag == q(NS_CLIENT, "iq")]
        assert len(answered) <= 11, answered
    alive(node)


def test_resource_conflict_refuse(make_c2s_node):
    node = make_c2s_node(resource_conflict="refuse")
    with logged_in(node, resource="only") as first:
        second = client_for(node)
        with second:
            second.login("alice", PASSWORDS["alice"], bind=False)
            reply = second.iq("set", "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                                     "<resource>only</resource></bind>", to="")
            assert reply.get("type") == "error", show(reply)
            assert stanza_error_condition(reply) == ("cancel", "conflict"), show(reply)
        # The first session is untouched.
        reply = first.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="still")
        assert reply.get("type") == "error" and reply.get("to") == first.jid, show(reply)
        try:
            assert first.quiet(0.3) == []
        except Closed as e:
            raise AssertionError("first session closed: %s" % e)
    alive(node)


def test_sigterm_sends_system_shutdown(make_c2s_node):
    node = make_c2s_node()
    c = logged_in(node, resource="shutdown")
    pre = client_for(node)
    pre.connect()
    pre.open_stream()
    pre.features()
    try:
        node.proc.terminate()
        c.expect_stream_error("system-shutdown", timeout=10)
        pre.expect_stream_error("system-shutdown", timeout=10)
        assert node.wait_exit(timeout=10) == 0, node.all_logs()
    finally:
        c.drop()
        pre.drop()

