"""Kontalk key accounts over the wire (kontalk-protocol.md §2.2, §2.4): SASL EXTERNAL with an
X.509 bridge certificate carrying an OpenPGP key that GnuPG made and the node's key certified,
the refusals (key not certified, certificate key differs, revoked, expired, older key), and the
public keys: urn:xmpp:pubkey:2 of the server, a contact and oneself, the fingerprint in
presence and the key in subscription requests."""

import base64
import os
import shutil

import pytest

from conftest import shared_node
from kt.im import presence_where
from kt.kontalk import KeyUser
from kt.xmpp import NS_SASL, client_for, q, show, stanza_error_condition

NS_PUBKEY = "urn:xmpp:pubkey:2"

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="GnuPG (gnupg) missing")


@pytest.fixture(scope="module")
def peer_key(keys, tmp_path_factory):
    """Another node of the network, whose key this node trusts (sm.trusted_keys)."""
    fpr = keys.generate("kontalkd peer node <node@peer.localhost>", algo="rsa2048")
    path = os.path.join(str(tmp_path_factory.mktemp("peerkey")), "peer.asc")
    with open(path, "wb") as f:
        f.write(keys.export(fpr, armor=True))
    return fpr, path


@pytest.fixture(scope="module")
def knode(binaries, mariadb, certs, tmp_path_factory, node_key, peer_key):
    yield from shared_node(mariadb, certs, tmp_path_factory, "kontalk",
                           sm={"key": node_key[1], "trusted_keys": [peer_key[1]]})


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bridge")


def scalar(node, query):
    return node.db.scalar(query, node.db_name)


def user(keys, certdir, knode, node_key, local, certified=True, **kw):
    return KeyUser(keys, certdir, local, knode.jid_domain,
                   certifier=node_key[0] if certified else None, **kw)


def key_client(knode, u, **kw):
    return client_for(knode, cert=u.files, **kw)


def test_external_login_with_bridge_certificate(keys, certdir, knode, node_key):
    u = user(keys, certdir, knode, node_key, "4bdd4f929f3a1062253e4e496bafba0bdfb5db75")
    with key_client(knode, u) as c:
        feats = c.start()
        mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
        assert "EXTERNAL" in mechs
        result = c.auth_external()
        assert result.tag == q(NS_SASL, "success"), show(result)
        c.restart()
        jid = c.bind("phone")
        assert jid == "%s@%s/phone" % (u.local, knode.jid_domain)
    assert scalar(knode, "SELECT fingerprint FROM users WHERE localpart = '%s'" % u.local) == u.fpr
    # The login is recorded (account expiry counts from it).
    assert scalar(knode, "SELECT last_login > NOW() - INTERVAL 1 MINUTE FROM users "
                  "WHERE localpart = '%s'" % u.local) == "1"
    # The stored keyring is the certified one.
    ring = scalar(knode, "SELECT HEX(keyring) FROM pubkeys WHERE localpart = '%s'" % u.local)
    assert keys.show(bytes.fromhex(ring)) == [u.fpr]


def test_external_authzid(keys, certdir, knode, node_key):
    """An authzid may name the certificate's own account (localpart, @network or @host), no
    other."""
    local = "9" * 40
    u = user(keys, certdir, knode, node_key, local)
    for authzid, ok in ((local, True), ("%s@%s" % (local, knode.jid_domain), True),
                        ("%s@%s" % (local, knode.host), True),
                        ("%s@%s" % ("0" * 40, knode.jid_domain), False),
                        ("%s@elsewhere.example" % local, False)):
        with key_client(knode, u) as c:
            c.start()
            result = c.auth_external(authzid)
            assert (result.tag == q(NS_SASL, "success")) == ok, (authzid, show(result))


def test_external_with_host_domain_uid(keys, certdir, knode, node_key):
    """A UID naming the node's host (generation 2 clients) is the same account."""
    local = "1" * 40
    u = KeyUser(keys, certdir, local, knode.host, certifier=node_key[0])
    with key_client(knode, u) as c:
        c.login_external()
        assert c.jid.startswith("%s@%s/" % (local, knode.jid_domain))


def test_external_with_key_certified_by_trusted_node(keys, certdir, knode, peer_key):
    local = "8" * 40
    u = KeyUser(keys, certdir, local, knode.jid_domain, certifier=peer_key[0])
    with key_client(knode, u) as c:
        c.login_external()
        assert c.jid.startswith("%s@%s/" % (local, knode.jid_domain))


@pytest.mark.parametrize("case", ["uncertified", "other-key", "revoked", "expired",
                                  "other-domain", "no-extension"])
def test_external_refusals(keys, certdir, knode, node_key, case):
    local = {"uncertified": "a", "other-key": "b", "revoked": "c", "expired": "d",
             "other-domain": "e", "no-extension": "f"}[case] * 40
    if case == "uncertified":
        u = user(keys, certdir, knode, node_key, local, certified=False)
    elif case == "other-key":
        from cryptography.hazmat.primitives.asymmetric import rsa
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        u = user(keys, certdir, knode, node_key, local, cert_key=other)
    elif case == "revoked":
        u = user(keys, certdir, knode, node_key, local)
        keys.revoke(u.fpr)
        u.write_cert()
    elif case == "expired":
        # Made three days ago, valid for one day.
        u = user(keys, certdir, knode, node_key, local, expire="1d",
                 faked_time="%d" % (__import__("time").time() - 3 * 86400))
    elif case == "other-domain":
        u = KeyUser(keys, certdir, local, "elsewhere.example", certifier=node_key[0])
    else:
        u = user(keys, certdir, knode, node_key, local)
        u.write_cert(keyring=b"")  # an empty keyring: not a key
    with key_client(knode, u) as c:
        c.start()
        result = c.auth_external()
        assert result.tag == q(NS_SASL, "failure"), show(result)
        assert result.find(q(NS_SASL, "not-authorized")) is not None, show(result)
    assert scalar(knode, "SELECT COUNT(*) FROM users WHERE localpart = '%s'" % local) == "0"


def test_newer_key_replaces_older_refused_the_other_way(keys, certdir, knode, node_key):
    local = "2" * 40
    old = user(keys, certdir, knode, node_key, local,
               faked_time="%d" % (__import__("time").time() - 86400))
    new = user(keys, certdir, knode, node_key, local)
    with key_client(knode, new) as c:
        c.login_external()
    # The stored key is the newer one; the older one, still valid, may not take it back.
    with key_client(knode, old) as c:
        c.start()
        assert c.auth_external().tag == q(NS_SASL, "failure")
    assert scalar(knode, "SELECT fingerprint FROM users WHERE localpart = '%s'" % local) == new.fpr


def pubkey_of(c, to):
    return c.iq("get", "<pubkey xmlns='%s'/>" % NS_PUBKEY, to=to)


def test_node_disco_lists_key_features(keys, certdir, knode, node_key):
    """With a node key, the node claims public keys and (authenticated) registration."""
    u = user(keys, certdir, knode, node_key, "5" * 39 + "a")
    with key_client(knode, u) as c:
        c.login_external()
        r = c.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        features = {f.get("var") for f in r.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert {NS_PUBKEY, "jabber:iq:register"} <= features, show(r)


def test_pubkey_of_server_contact_and_self(keys, certdir, knode, node_key):
    a = user(keys, certdir, knode, node_key, "3" * 40)
    b = user(keys, certdir, knode, node_key, "4" * 40)
    with key_client(knode, a) as ca, key_client(knode, b) as cb:
        ca.login_external()
        cb.login_external()
        for to in (None, knode.jid_domain, knode.host):
            r = pubkey_of(ca, to)
            assert r.get("type") == "result", show(r)
            ring = base64.b64decode(r.find(q(NS_PUBKEY, "pubkey")).text)
            assert keys.show(ring) == [node_key[0]]
        for who in (b, a):
            r = pubkey_of(ca, "%s@%s" % (who.local, knode.jid_domain))
            assert r.get("type") == "result", show(r)
            ring = base64.b64decode(r.find(q(NS_PUBKEY, "pubkey")).text)
            assert keys.show(ring) == [who.fpr]
        r = pubkey_of(ca, "%s@%s" % ("5" * 40, knode.jid_domain))
        assert r.get("type") == "error" and stanza_error_condition(r)[1] == "item-not-found"
        r = ca.iq("set", "<pubkey xmlns='%s'>AAAA</pubkey>" % NS_PUBKEY)
        assert r.get("type") == "error" and stanza_error_condition(r)[1] == "not-allowed"


def test_presence_print_and_subscribe_key(keys, certdir, knode, node_key):
    a = user(keys, certdir, knode, node_key, "6" * 40)
    b = user(keys, certdir, knode, node_key, "7" * 40)
    b_jid = "%s@%s" % (b.local, knode.jid_domain)
    with key_client(knode, a) as ca, key_client(knode, b) as cb:
        ca.login_external()
        cb.login_external()
        cb.send("<presence/>")
        # A subscription request carries the sender's key and fingerprint; a forged one from
        # the client is replaced.
        ca.send("<presence type='subscribe' to='%s'><pubkey xmlns='%s'><key>Zm9v</key>"
                "<print>%s</print></pubkey></presence>" % (b_jid, NS_PUBKEY, "0" * 40))
        a_jid = "%s@%s" % (a.local, knode.jid_domain)
        sub = presence_where(cb, lambda e: e.get("from", "").startswith(a_jid))
        assert sub.get("type") == "subscribe", show(sub)
        pks = sub.findall(q(NS_PUBKEY, "pubkey"))
        assert len(pks) == 1, show(sub)
        assert pks[0].find(q(NS_PUBKEY, "print")).text == a.fpr
        assert keys.show(base64.b64decode(pks[0].find(q(NS_PUBKEY, "key")).text)) == [a.fpr]
        # Directed available presence carries the print only.
        ca.send("<presence to='%s'/>" % b_jid)
        p = presence_where(cb, lambda e: e.get("from", "").startswith(a_jid + "/"))
        pk = p.find(q(NS_PUBKEY, "pubkey"))
        assert pk is not None and pk.find(q(NS_PUBKEY, "print")).text == a.fpr, show(p)
        assert pk.find(q(NS_PUBKEY, "key")) is None


def test_password_accounts_get_no_pubkey(knode):
    with client_for(knode) as c:
        c.login("alice", __import__("kt.xmpp").xmpp.PASSWORDS["alice"])
        r = pubkey_of(c, "alice@%s" % knode.jid_domain)
        assert r.get("type") == "error" and stanza_error_condition(r)[1] == "item-not-found"
