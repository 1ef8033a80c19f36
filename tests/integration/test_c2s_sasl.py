"""mod_c2s SASL over real sockets: SCRAM-SHA-1/256 (RFC 5802, RFC 7677), their -PLUS variants
with tls-server-end-point (RFC 5929) and tls-exporter (RFC 9266), PLAIN (RFC 4616), and the
failure conditions of RFC 6120 §6.4.5.

The accounts (kt.xmpp.PASSWORDS) are created with `kontalkctl user add`.  One node serves the
module (c2s_node, auth_attempts_per_ip lifted); the per-IP limit has its own node.
"""

import base64
import ssl

import pytest

from kt.xmpp import (NS_BIND, NS_SASL, NS_SM, NS_CSI, PASSWORDS, Closed, client_for, local,
                     mechanisms, q, show, tls_exporter)

MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]


def started(node, **kw):
    c = client_for(node, **kw)
    feats = c.start()
    return c, feats


def condition(failure):
    """The condition element name of a SASL <failure/>."""
    assert failure.tag == q(NS_SASL, "failure"), show(failure)
    names = [local(ch.tag) for ch in failure if local(ch.tag) != "text"]
    return names[0] if names else None


def assert_success_and_bind(c, node, user, resource):
    feats = c.restart()
    assert feats.find(q(NS_BIND, "bind")) is not None, show(feats)
    assert c.bind(resource) == "%s@%s/%s" % (user, node.jid_domain, resource)


@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("user", ["alice", "carol"])
def test_mechanism_success(c2s_node, mech, user):
    c, feats = started(c2s_node)
    with c:
        assert mech in mechanisms(feats)
        result = c.auth(mech, user, PASSWORDS[user])  # checks the server signature too
        assert result.tag == q(NS_SASL, "success"), show(result)
        assert_success_and_bind(c, c2s_node, user, "m")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
def test_plus_on_direct_tls(c2s_node, mech):
    c, feats = started(c2s_node, direct=True)
    with c:
        assert mech in mechanisms(feats)
        assert c.auth(mech, "bob", PASSWORDS["bob"]).tag == q(NS_SASL, "success")
        assert_success_and_bind(c, c2s_node, "bob", "plus")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
def test_plus_tls_exporter(c2s_node, mech):
    c, feats = started(c2s_node)
    with c:
        assert c.sock.version() == "TLSv1.3", "tls-exporter needs TLS 1.3 (RFC 9266)"
        data = tls_exporter(c.sock)
        if data is None:
            pytest.skip("OpenSSL's SSL_export_keying_material not reachable from Python here")
        result = c.auth_scram(mech, "alice", PASSWORDS["alice"], cb_type="tls-exporter",
                              cb_data=data)
        assert result.tag == q(NS_SASL, "success"), show(result)
        assert_success_and_bind(c, c2s_node, "alice", "exporter")


@pytest.mark.parametrize("mech", MECHS)
def test_wrong_password(c2s_node, mech):
    c, _ = started(c2s_node)
    with c:
        result = c.auth(mech, "alice", PASSWORDS["alice"] + "x")
        assert condition(result) == "not-authorized", show(result)


@pytest.mark.parametrize("mech", MECHS)
def test_unknown_user(c2s_node, mech):
    c, _ = started(c2s_node)
    with c:
        result = c.auth(mech, "nobody", PASSWORDS["alice"])
        assert condition(result) == "not-authorized", show(result)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_tampered_proof(c2s_node, mech):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_scram(mech, "alice", PASSWORDS["alice"], proof_tamper=True)
        assert condition(result) == "not-authorized", show(result)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-exporter"])
def test_plus_wrong_binding_data(c2s_node, mech, cb_type):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_scram(mech, "alice", PASSWORDS["alice"], cb_type=cb_type,
                              cb_data=b"\x42" * 32)
        assert condition(result) == "not-authorized", show(result)


def test_plus_unsupported_binding_type(c2s_node):
    """tls-unique is not offered (it is undefined for TLS 1.3): the exchange fails."""
    c, _ = started(c2s_node)
    with c:
        result = c.auth_scram("SCRAM-SHA-256-PLUS", "alice", PASSWORDS["alice"],
                              cb_type="tls-unique",
                              cb_data=c.sock.get_channel_binding("tls-unique"))
        assert result.tag == q(NS_SASL, "failure"), show(result)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_y_flag_when_plus_offered_fails_if_strict(make_c2s_node, mech):
    """RFC 5802 §6: 'y' says the client thinks the server lacks channel binding; the server
    offered -PLUS, so this is a downgrade and authentication MUST fail (strict_channel_binding;
    the default tolerates it for tls-unique-only clients on TLS 1.3, see the next test)."""
    node = make_c2s_node(strict_channel_binding=True)
    c, feats = started(node)
    with c:
        assert mech + "-PLUS" in mechanisms(feats)
        result = c.auth_scram(mech, "alice", PASSWORDS["alice"], gs2_flag="y")
        assert condition(result) == "not-authorized", show(result)
        assert c.auth(mech, "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")


def test_y_flag_tolerated_by_default(c2s_node):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_scram("SCRAM-SHA-256", "alice", PASSWORDS["alice"], gs2_flag="y")
        assert result.tag == q(NS_SASL, "success"), show(result)


def test_channel_binding_types_advertised(c2s_node):
    """XEP-0440: the binding types the server supports for this connection."""
    for version in (None, ssl.TLSVersion.TLSv1_2):
        with client_for(c2s_node) as c:
            c.connect()
            c.open_stream()
            c.features()
            feats = c.starttls(max_version=version)
            cb = feats.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding")
            assert cb is not None, show(feats)
            types = {e.get("type") for e in cb.findall("{urn:xmpp:sasl-cb:0}channel-binding")}
            assert "tls-server-end-point" in types, show(cb)
            assert "tls-unique" not in types, show(cb)
            if c.sock.version() == "TLSv1.3":
                assert "tls-exporter" in types, show(cb)


def test_n_flag_with_plus_mechanism_fails(c2s_node):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_scram("SCRAM-SHA-256-PLUS", "alice", PASSWORDS["alice"], cb_type=None,
                              gs2_flag="n")
        assert result.tag == q(NS_SASL, "failure"), show(result)


def test_binding_with_non_plus_mechanism_fails(c2s_node):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_scram("SCRAM-SHA-256", "alice", PASSWORDS["alice"],
                              cb_type="tls-server-end-point")
        assert result.tag == q(NS_SASL, "failure"), show(result)


@pytest.mark.parametrize("mech", ["EXTERNAL", "DIGEST-MD5", "SCRAM-SHA-512"])
def test_mechanism_not_offered(c2s_node, mech):
    """EXTERNAL is offered only with a client certificate; RFC 6120 §6.4.5 invalid-mechanism."""
    c, feats = started(c2s_node)
    with c:
        assert mech not in mechanisms(feats)
        c.send("<auth xmlns='%s' mechanism='%s'>=</auth>" % (NS_SASL, mech))
        result = c.next()
        assert condition(result) == "invalid-mechanism", show(result)
        # The stream goes on: a correct login still works.
        assert c.auth("SCRAM-SHA-256", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")


def test_plain_bad_base64(c2s_node):
    c, _ = started(c2s_node)
    with c:
        c.send("<auth xmlns='%s' mechanism='PLAIN'>!!not base64!!</auth>" % NS_SASL)
        assert condition(c.next()) == "incorrect-encoding"


def test_plain_other_authzid_refused(c2s_node):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_plain("alice", PASSWORDS["alice"],
                              authzid="bob@%s" % c2s_node.jid_domain)
        assert condition(result) in ("invalid-authzid", "not-authorized"), show(result)


def test_plain_own_authzid_accepted(c2s_node):
    c, _ = started(c2s_node)
    with c:
        result = c.auth_plain("alice", PASSWORDS["alice"],
                              authzid="alice@%s" % c2s_node.jid_domain)
        assert result.tag == q(NS_SASL, "success"), show(result)
        assert_success_and_bind(c, c2s_node, "alice", "authzid")


def test_abort_then_retry(c2s_node):
    """RFC 6120 §6.4.4: <abort/> gets <failure><aborted/></failure>; a new attempt may follow."""
    c, _ = started(c2s_node)
    with c:
        c.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>%s</auth>"
               % (NS_SASL, c.b64(b"n,,n=alice,r=abcdefghijklmnop")))
        assert c.next().tag == q(NS_SASL, "challenge")
        c.send("<abort xmlns='%s'/>" % NS_SASL)
        assert condition(c.next()) == "aborted"
        assert c.auth("SCRAM-SHA-1", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")


def test_features_after_auth(c2s_node):
    c, _ = started(c2s_node)
    with c:
        tls_stream_id = c.header.get("id")
        assert c.auth("PLAIN", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")
        feats = c.restart()
        assert c.header.get("id") and c.header["id"] != tls_stream_id, \
            "stream id not renewed after SASL (RFC 6120 §6.4.6): %r" % c.header
        assert feats.find(q(NS_BIND, "bind")) is not None, show(feats)
        assert feats.find(q(NS_SM, "sm")) is not None, show(feats)
        assert feats.find(q(NS_CSI, "csi")) is not None, show(feats)
        assert mechanisms(feats) == [], "mechanisms offered again after success: " + show(feats)


def test_auth_again_after_success_refused(c2s_node):
    c, _ = started(c2s_node)
    with c:
        assert c.auth("PLAIN", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")
        c.restart()
        c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
               % (NS_SASL, c.b64(b"\0bob\0" + PASSWORDS["bob"].encode())))
        try:
            elem = c.next()
        except Closed:
            return  # a stream error is a fine answer
        assert elem.tag != q(NS_SASL, "success"), show(elem)


def test_auth_attempts_per_connection(c2s_node):
    """auth_attempts (3): after three failures the fourth attempt cannot succeed, even with
    the right password; the stream ends with policy-violation (RFC 6120 §6.4.5 retries)."""
    c, _ = started(c2s_node)
    with c:
        for _ in range(3):
            result = c.auth("PLAIN", "alice", "wrong")
            assert condition(result) == "not-authorized", show(result)
        try:
            c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                   % (NS_SASL, c.b64(b"\0alice\0" + PASSWORDS["alice"].encode())))
        except OSError:
            pass  # already closed
        closed = c.wait_closed()
        assert closed.error == "policy-violation", closed
        assert all(e.tag != q(NS_SASL, "success") for e in c.skipped), \
            [show(e) for e in c.skipped]


def test_auth_attempts_per_ip(make_c2s_node):
    """auth_attempts_per_ip: beyond it, failures are temporary-auth-failure for that address,
    even with the right password; another address still logs in."""
    node = make_c2s_node(auth_attempts_per_ip=4, auth_attempts=3)
    for _ in range(4):
        c, _ = started(node, source="127.0.0.3")
        with c:
            assert condition(c.auth("PLAIN", "alice", "wrong")) == "not-authorized"
    c, _ = started(node, source="127.0.0.3")
    with c:
        result = c.auth("SCRAM-SHA-256", "alice", PASSWORDS["alice"])
        assert condition(result) == "temporary-auth-failure", show(result)
    c, _ = started(node, source="127.0.0.4")
    with c:
        assert c.auth("SCRAM-SHA-256", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")


def test_plain_not_offered_when_disallowed(make_c2s_node):
    node = make_c2s_node(allow_plain=False)
    c, feats = started(node)
    with c:
        assert "PLAIN" not in mechanisms(feats)
        assert "SCRAM-SHA-256" in mechanisms(feats)
        msg = base64.b64encode(b"\0alice\0" + PASSWORDS["alice"].encode()).decode()
        c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, msg))
        assert condition(c.next()) == "invalid-mechanism"
