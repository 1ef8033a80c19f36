"""mod_c2s streams over real sockets: STARTTLS, direct TLS, stream headers, stream errors,
restricted XML, size limits, flood (RFC 6120 §4, §5, §11; XEP-0368).

All tests share one node with the default c2s settings (fixture c2s_node).
"""

import socket
import ssl
import time

import pytest

from kt.node import free_port
from kt.xmpp import (NS_BIND, NS_CLIENT, NS_SASL, NS_STANZA_ERRORS, NS_STREAM, NS_TLS, PASSWORDS,
                     Client, Closed, client_for, local, mechanisms, q, show,
                     stanza_error_condition, unknown_iq)

ALL_MECHS = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}


def alive(node):
    assert node.running(), "kontalkd died:\n" + node.all_logs()[-3000:]


def tls_client(node, **kw):
    """Connected, stream opened, TLS done: returns (client, features)."""
    c = client_for(node, **kw)
    feats = c.start()
    return c, feats


def logged_in(node, user="alice", resource="test", **kw):
    c = client_for(node, **kw)
    c.login(user, PASSWORDS[user], resource)
    return c


def expect_service_unavailable(reply, id_):
    assert reply.tag == q(NS_CLIENT, "iq") and reply.get("id") == id_, show(reply)
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply) == ("cancel", "service-unavailable"), show(reply)


# -- STARTTLS ------------------------------------------------------------------

def test_features_before_tls_only_starttls_required(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        header = c.open_stream()
        assert header.get("version") == "1.0", header
        assert header.get("id"), "no stream id: %r" % header
        feats = c.features()
        children = list(feats)
        assert [ch.tag for ch in children] == [q(NS_TLS, "starttls")], show(feats)
        assert children[0].find(q(NS_TLS, "required")) is not None, show(feats)
        assert mechanisms(feats) == []


def test_auth_before_tls_refused(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream()
        c.features()
        c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
               % (NS_SASL, c.b64(b"\0alice\0" + PASSWORDS["alice"].encode())))
        elem = c.next()
        assert elem.tag == q(NS_SASL, "failure"), show(elem)
        assert elem.find(q(NS_SASL, "encryption-required")) is not None, show(elem)
        # Whatever follows (more features or a stream error), never a success.
        try:
            c.quiet(0.5)
        except Closed:
            pass
        rest = c.skipped
        assert all(e.tag != q(NS_SASL, "success") for e in rest), [show(e) for e in rest]
    alive(c2s_node)


def test_starttls_restarts_stream_with_mechanisms(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        first_id = c.open_stream()["id"]
        c.features()
        feats = c.starttls()
        assert c.header.get("id") and c.header["id"] != first_id, \
            "stream id not renewed after STARTTLS: %r" % c.header
        assert feats.find(q(NS_TLS, "starttls")) is None, show(feats)
        mechs = mechanisms(feats)
        assert set(mechs) == ALL_MECHS, mechs
        assert "EXTERNAL" not in mechs  # no client certificate presented
        assert len(mechs) == len(set(mechs)), mechs
        # Stanzas of the new stream are read with a fresh parser: a bind is not offered yet.
        assert feats.find(q(NS_BIND, "bind")) is None, show(feats)


def test_starttls_twice_refused(c2s_node):
    with tls_client(c2s_node)[0] as c:
        c.send("<starttls xmlns='%s'/>" % NS_TLS)
        closed = c.wait_closed()
        assert closed.error is not None or closed.stream_end, closed
        assert not any(e.tag == q(NS_TLS, "proceed") for e in c.skipped), \
            [show(e) for e in c.skipped]


def test_plaintext_injected_after_starttls_refused(c2s_node):
    """'<starttls/><iq/>' in one TCP write: the iq must never be processed (CVE-2011-1431 style)."""
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream()
        c.features()
        c.send("<starttls xmlns='%s'/>%s" % (NS_TLS, unknown_iq("inject", c2s_node.jid_domain)))
        seen = []
        try:
            elem = c.next()
            seen.append(elem)
            if elem.tag == q(NS_TLS, "proceed"):
                try:
                    c._wrap_tls()
                    c.open_stream(wait=False)
                    closed = c.wait_closed(timeout=3)
                    seen.extend(c.skipped)
                except (ssl.SSLError, OSError):
                    closed = None  # the server closed the connection during the handshake
            else:
                closed = c.wait_closed(timeout=3)
                seen.extend(c.skipped)
                assert closed.error is not None, "neither <proceed/> nor a stream error: %s" % \
                    show(elem)
        except Closed as e:
            closed = e
        assert all(e.get("id") != "inject" for e in seen), [show(e) for e in seen]
        assert not any(e.tag == q(NS_STREAM, "features") and mechanisms(e) for e in seen), \
            "the stream went on after injected plaintext: %s" % [show(e) for e in seen]
    alive(c2s_node)


def test_stanza_before_tls_refused(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream()
        c.features()
        c.send(unknown_iq("pre-tls", c2s_node.jid_domain))
        closed = c.wait_closed()
        assert closed.error in ("not-authorized", "policy-violation"), closed
        assert all(e.get("id") != "pre-tls" for e in c.skipped)


# -- direct TLS and stream addressing --------------------------------------------------

def test_direct_tls_port(c2s_node):
    with client_for(c2s_node, direct=True) as c:
        c.connect()
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3"), c.sock.version()
        c.open_stream()
        feats = c.features()
        assert feats.find(q(NS_TLS, "starttls")) is None, show(feats)
        assert set(mechanisms(feats)) == ALL_MECHS, show(feats)
        result = c.auth("SCRAM-SHA-256", "alice", PASSWORDS["alice"])
        assert result.tag == q(NS_SASL, "success"), show(result)
        feats = c.restart()
        assert feats.find(q(NS_BIND, "bind")) is not None, show(feats)
        assert c.bind("direct") == "alice@%s/direct" % c2s_node.jid_domain


def test_tls12_works(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream()
        c.features()
        c.starttls(max_version=ssl.TLSVersion.TLSv1_2)
        assert c.sock.version() == "TLSv1.2"
        assert c.auth("SCRAM-SHA-1", "alice", PASSWORDS["alice"]).tag == q(NS_SASL, "success")


@pytest.mark.parametrize("to", ["host", "network"])
def test_stream_to_host_or_network_binds_network_jid(c2s_node, to):
    domain = c2s_node.host if to == "host" else c2s_node.jid_domain
    with client_for(c2s_node) as c:
        c.login("alice", PASSWORDS["alice"], "addr-" + to, to=domain)
        assert c.jid == "alice@%s/addr-%s" % (c2s_node.jid_domain, to)


def test_stream_to_other_domain_host_unknown(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream(to="example.org")
        c.expect_stream_error("host-unknown")


@pytest.mark.parametrize("version", ["0.9", None])
def test_pre_1_0_stream_unsupported_version(c2s_node, version):
    """RFC 6120 §4.7.5: no version means 0.9; this server speaks 1.0 only (TLS is required)."""
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream(version=version)
        c.expect_stream_error("unsupported-version")


def test_higher_minor_version_answered_with_1_0(c2s_node):
    """RFC 6120 §4.7.5 rule 2: the receiving entity answers with the lower of the two versions
    (a higher minor version is compatible: the stream goes on)."""
    with client_for(c2s_node) as c:
        c.connect()
        header = c.open_stream(version="1.5")
        assert header.get("version") == "1.0", header
        feats = c.features()
        assert feats.find(q(NS_TLS, "starttls")) is not None, show(feats)


def test_higher_major_version(c2s_node):
    """version='2.0': §4.7.5 rule 2 answers 1.0 and leaves unsupported-version to the client;
    the §4.9.3.25 example has the server raise it.  Either is accepted."""
    with client_for(c2s_node) as c:
        c.connect()
        header = c.open_stream(version="2.0")
        assert header.get("version") == "1.0", header
        elem = c.next()
        if elem.tag == q(NS_STREAM, "error"):
            assert c.wait_closed().error == "unsupported-version"
        else:
            assert elem.tag == q(NS_STREAM, "features"), show(elem)


@pytest.mark.parametrize("kind", ["stream-ns", "content-ns"])
def test_wrong_namespace_invalid_namespace(c2s_node, kind):
    with client_for(c2s_node) as c:
        c.connect()
        if kind == "stream-ns":
            c.open_stream(stream_ns="http://etherx.jabber.org/streams/wrong", wait=False)
        else:
            c.open_stream(xmlns="urn:example:not-a-client", wait=False)
        c.expect_stream_error("invalid-namespace")


# -- malformed and restricted XML -----------------------------------------------------

@pytest.mark.parametrize("junk", [
    "<iq type='get' id='x'><query xmlns='urn:x'></iq>",      # mismatched end tag
    "<iq type='get' id='x' id='y'/>",                         # duplicate attribute
    "<<<>>>",
    "<iq type='get\x01' id='x'/>",                           # control character
])
def test_malformed_xml_not_well_formed(c2s_node, junk):
    c, _ = tls_client(c2s_node)
    with c:
        c.send(junk)
        c.expect_stream_error("not-well-formed")
    alive(c2s_node)


def test_unbound_prefix_refused(c2s_node):
    """An unbound prefix breaks Namespaces in XML: not-well-formed, or RFC 6120 §4.9.3.2
    bad-namespace-prefix (also fitting)."""
    c, _ = tls_client(c2s_node)
    with c:
        c.send("<iq type='get' id='x'><q:query/></iq>")
        closed = c.wait_closed()
        assert closed.error in ("not-well-formed", "bad-namespace-prefix"), closed


def test_malformed_utf8_not_well_formed(c2s_node):
    c, _ = tls_client(c2s_node)
    with c:
        c.send(b"<iq type='get' id='x'><query xmlns='urn:x'>\xc3\x28</query></iq>")
        c.expect_stream_error("not-well-formed")


@pytest.mark.parametrize("where,text", [
    ("prolog", "<!DOCTYPE stream:stream>"),
    ("prolog", "<!DOCTYPE stream:stream [<!ENTITY x 'y'>]>"),
    ("stream", "<!-- a comment -->"),
    ("stream", "<?kontalk processing instruction?>"),
    ("stanza", "<iq type='get' id='c'><query xmlns='urn:x'><!-- c --></query></iq>"),
    ("stanza", "<iq type='get' id='p'><query xmlns='urn:x'><?pi x?></query></iq>"),
])
def test_restricted_xml(c2s_node, where, text):
    with client_for(c2s_node) as c:
        c.connect()
        if where == "prolog":
            c.open_stream(prolog="<?xml version='1.0'?>" + text, wait=False)
        else:
            c.open_stream()
            c.features()
            c.send(text)
        c.expect_stream_error("restricted-xml")
    alive(c2s_node)


def test_undeclared_entity_reference_refused(c2s_node):
    """Only the five predefined entities exist in XMPP (RFC 6120 §11.1); an undeclared one is
    also a well-formedness error, so either condition is right."""
    c, _ = tls_client(c2s_node)
    with c:
        c.send("<iq type='get' id='e'><query xmlns='urn:x'>&lol;</query></iq>")
        closed = c.wait_closed()
        assert closed.error in ("restricted-xml", "not-well-formed"), closed


def test_predefined_entities_and_char_refs_accepted(c2s_node):
    with logged_in(c2s_node) as c:
        reply = c.iq("get", "<query xmlns='urn:kontalk:test:unknown'>&amp;&lt;&gt;&quot;&apos;"
                            "&#65;&#x42;</query>", id_="ents")
        expect_service_unavailable(reply, "ents")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'
 to='%s' version='1.0'>&lol9;<iq type='get' id='lol'><query xmlns='urn:x'>&lol9;</query></iq>"""


def test_billion_laughs_rss_flat(c2s_node):
    before = c2s_node.rss_kb()
    for _ in range(3):
        with client_for(c2s_node) as c:
            c.connect()
            c.parser = None
            c.send(BILLION_LAUGHS % c2s_node.jid_domain)
            closed = c.wait_closed(timeout=5)
            assert closed.error == "restricted-xml", closed
    time.sleep(0.2)
    alive(c2s_node)
    after = c2s_node.rss_kb()
    assert after - before < 5 * 1024, "RSS grew from %d kB to %d kB" % (before, after)


# -- size and shape limits ----------------------------------------------------------------

def test_preauth_stanza_size_limit(c2s_node):
    """max_stanza_preauth (8 KiB by default): a 9 KiB <auth/> is a policy violation."""
    c, _ = tls_client(c2s_node)
    with c:
        c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, "A" * 9216))
        c.expect_stream_error("policy-violation")
    alive(c2s_node)


def test_preauth_stanza_size_limit_before_tls(c2s_node):
    with client_for(c2s_node) as c:
        c.connect()
        c.open_stream()
        c.features()
        c.send("<starttls xmlns='%s'><x>%s</x></starttls>" % (NS_TLS, "A" * 9216))
        c.expect_stream_error("policy-violation")


def test_preauth_stanza_under_limit_is_not_a_stream_error(c2s_node):
    c, _ = tls_client(c2s_node)
    with c:
        payload = b"\0alice\0" + b"x" * 5000  # about 6.7 KiB of base64: a wrong password
        result = c.auth_plain("alice", "x" * 5000)
        assert result.tag == q(NS_SASL, "failure"), show(result)
        assert len(c.b64(payload)) > 6000


def test_postauth_stanza_size_limit(c2s_node):
    """max_stanza (256 KiB by default): 200 KiB passes after auth, 300 KiB does not."""
    with logged_in(c2s_node) as c:
        c.timeout = 10
        big = "<query xmlns='urn:kontalk:test:unknown'>%s</query>" % ("b" * (200 * 1024))
        expect_service_unavailable(c.iq("get", big, id_="big200"), "big200")
        huge = "<query xmlns='urn:kontalk:test:unknown'>%s</query>" % ("h" * (300 * 1024))
        c.send("<iq type='get' id='big300' to='%s'>%s</iq>" % (c2s_node.jid_domain, huge))
        c.expect_stream_error("policy-violation", timeout=10)
        assert all(e.get("id") != "big300" for e in c.skipped)
    alive(c2s_node)


@pytest.mark.parametrize("shape", ["depth", "attrs", "children"])
def test_stanza_shape_limits(c2s_node, shape):
    """max_depth 32, max_attrs 64, max_children 1024 (defaults) → policy-violation."""
    with logged_in(c2s_node) as c:
        if shape == "depth":
            inner = "<a>" * 40 + "</a>" * 40
        elif shape == "attrs":
            inner = "<a %s/>" % " ".join("a%d='x'" % i for i in range(100))
        else:
            inner = "<a/>" * 2000
        c.send("<iq type='get' id='shape' to='%s'><query xmlns='urn:kontalk:test:unknown'>%s"
               "</query></iq>" % (c2s_node.jid_domain, inner))
        c.expect_stream_error("policy-violation")
        assert all(e.get("id") != "shape" for e in c.skipped)


def test_stanza_shape_within_limits(c2s_node):
    with logged_in(c2s_node) as c:
        inner = "<a>" * 20 + "</a>" * 20 + "<b %s/>" % " ".join("b%d='x'" % i for i in range(30)) \
            + "<c/>" * 500
        reply = c.iq("get", "<query xmlns='urn:kontalk:test:unknown'>%s</query>" % inner,
                     id_="fits")
        expect_service_unavailable(reply, "fits")


# -- throughput ---------------------------------------------------------------------------

def test_flood_1000_stanzas_in_order(c2s_node):
    with logged_in(c2s_node) as c:
        c.timeout = 20
        ids = ["flood%d" % i for i in range(1000)]
        c.send("".join(unknown_iq(i, c2s_node.jid_domain) for i in ids))
        got = []
        deadline = time.monotonic() + 20
        while len(got) < len(ids) and time.monotonic() < deadline:
            elem = c.next(timeout=max(0.1, deadline - time.monotonic()))
            if local(elem.tag) == "iq":
                expect_service_unavailable(elem, elem.get("id"))
                assert elem.get("to") == c.jid, show(elem)
                got.append(elem.get("id"))
        assert got == ids, "lost or reordered: %d answers, first difference at %s" % (
            len(got), next((i for i, (a, b) in enumerate(zip(got, ids)) if a != b), len(got)))
    alive(c2s_node)


def test_router_answer_carries_stanza_error_namespace(c2s_node):
    with logged_in(c2s_node) as c:
        reply = c.iq("get", "<query xmlns='urn:kontalk:test:unknown'/>", id_="ns")
        err = reply.find(q(NS_CLIENT, "error"))
        assert err is not None and err.find(q(NS_STANZA_ERRORS, "service-unavailable")) \
            is not None, show(reply)


# -- IPv6 --------------------------------------------------------------------------------------

def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_ipv6_loopback_listener(make_c2s_node):
    port6 = ipv6_loopback()
    if port6 is None:
        pytest.skip("no IPv6 loopback on this machine")
    node = make_c2s_node(listen=[{"port": free_port(), "tls": "starttls", "address": "127.0.0.1"},
                                 {"port": port6, "tls": "direct", "address": "::1"}])
    with Client(port6, node.jid_domain, host="::1", direct_tls=True) as c:
        c.login("alice", PASSWORDS["alice"], "v6")
        assert c.jid == "alice@%s/v6" % node.jid_domain
    with client_for(node) as c:
        c.login("alice", PASSWORDS["alice"], "v4")
