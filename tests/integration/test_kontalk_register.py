"""Kontalk phone registration over the wire (kontalk-protocol.md §2.1, §2.3, flows 1-2 of §4):
the form, a number, the code (dummy provider, or a command the operator configures) with a
bridge certificate whose key GnuPG made, the key signed by the node and the login with it;
refusals (bad number, wrong code, duplicate, throttling), key rollover with revocation, and
private-key parking with a one-time token."""

import base64
import shutil
import stat

import pytest

from conftest import check_sanitizer_reports, setup_c2s
from kt.kontalk import KeyUser, phone_local
from kt.xmpp import Client, q, show, stanza_error_condition

NS_REGISTER = "jabber:iq:register"
NS_DATA = "jabber:x:data"
NS_ACCOUNT = "http://kontalk.org/protocol/register#account"
FORM_CODE = "http://kontalk.org/protocol/register#code"

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="GnuPG (gnupg) missing")


@pytest.fixture
def reg_node(make_node, node_key):
    """Factory: a started node with registration; register settings override the defaults
    (dummy provider, IP throttle off)."""
    made = []

    def make(**register):
        node = make_node()
        settings = {"provider": "dummy", "throttle_ip_delay": 0}
        settings.update(register)
        node.conf["sm"] = {"key": node_key[1], "register": settings}
        made.append(setup_c2s(node, auth_attempts_per_ip=100000))
        return node
    yield make
    for node in made:
        check_sanitizer_reports(node)


def client(node, cert=None, source=None):
    return Client(node.c2s_port("starttls"), node.jid_domain, cert=cert, source=source)


def form(form_type, **fields):
    out = ["<x xmlns='%s' type='submit'>" % NS_DATA,
           "<field var='FORM_TYPE' type='hidden'><value>%s</value></field>" % form_type]
    for var, value in fields.items():
        out.append("<field var='%s'><value>%s</value></field>" % (var.replace("_", "-"), value))
    out.append("</x>")
    return "".join(out)


def register_iq(c, type_, payload):
    return c.iq(type_, "<query xmlns='%s'>%s</query>" % (NS_REGISTER, payload), to="")


def fields(reply):
    x = reply.find("%s/%s" % (q(NS_REGISTER, "query"), q(NS_DATA, "x")))
    assert x is not None, show(reply)
    out = {}
    for f in x.findall(q(NS_DATA, "field")):
        v = f.find(q(NS_DATA, "value"))
        out[f.get("var")] = v.text if v is not None else None
    return out


def error_of(reply):
    assert reply.get("type") == "error", show(reply)
    return stanza_error_condition(reply)


def submit_phone(node, number, source=None, **extra):
    with client(node, source=source) as c:
        c.start()
        return register_iq(c, "set", form(NS_REGISTER, phone=number, **extra))


def submit_code(node, user, code):
    with client(node, cert=user.files) as c:
        c.start()
        return register_iq(c, "set", form(FORM_CODE, code=code))


def new_user(keys, tmp_path, node, number):
    return KeyUser(keys, tmp_path, phone_local(number), node.jid_domain)


def test_register_then_login(reg_node, keys, tmp_path, node_key):
    node = reg_node()
    number = "+15555215554"
    assert phone_local(number) == "4bdd4f929f3a1062253e4e496bafba0bdfb5db75"
    with client(node) as c:
        feats = c.start()
        assert feats.find(q("http://jabber.org/features/iq-register", "register")) is not None
        r = register_iq(c, "get", "")
        assert r.get("type") == "result", show(r)
        f = fields(r)
        assert f["FORM_TYPE"] == NS_REGISTER and "phone" in f and f["challenge"] == "pin"
        assert "fallback" not in f  # nothing to fall back to: not offered
        r = register_iq(c, "set", form(NS_REGISTER, phone="+1 (555) 521-5554", challenge="pin"))
        assert r.get("type") == "result", show(r)
        assert fields(r)["from"]
    user = new_user(keys, tmp_path, node, number)
    r = submit_code(node, user, "123456")
    assert r.get("type") == "result", show(r)
    f = fields(r)
    assert f["FORM_TYPE"] == FORM_CODE
    signed = base64.b64decode(f["publickey"])
    assert keys.show(signed) == [user.fpr]
    # The signed key, in a new bridge certificate, logs in.
    user.write_cert(keyring=signed)
    with client(node, cert=user.files) as c:
        c.login_external()
        assert c.jid.startswith("%s@%s/" % (user.local, node.jid_domain))
    # A second registration of the number is a conflict, unless forced.
    assert error_of(submit_phone(node, number))[1] == "conflict"
    assert submit_phone(node, number, force="true").get("type") == "result"


def test_refusals(reg_node, keys, tmp_path):
    node = reg_node()
    for bad in ("15555215554", "+1555abc", "+0123456789", "+12", "+1234567890123456"):
        assert error_of(submit_phone(node, bad))[1] == "bad-request", bad
    assert error_of(submit_phone(node, "+15555215560", challenge="missedcall"))[1] == \
        "not-acceptable"
    number = "+15555215561"
    assert submit_phone(node, number).get("type") == "result"
    user = new_user(keys, tmp_path, node, number)
    assert error_of(submit_code(node, user, "654321"))[1] == "bad-request"
    # A key for another number is refused even with the right code.
    other = new_user(keys, tmp_path, node, "+15555215562")
    assert error_of(submit_code(node, other, "123456"))[1] == "bad-request"
    # Three wrong codes drop the pending one: then even the right code fails.
    assert error_of(submit_code(node, user, "000000"))[1] == "bad-request"
    assert error_of(submit_code(node, user, "111111"))[1] == "bad-request"
    assert error_of(submit_code(node, user, "123456"))[1] == "bad-request"
    # No certificate and no key in the form.
    with client(node) as c:
        c.start()
        assert error_of(register_iq(c, "set", form(FORM_CODE, code="123456")))[1] == \
            "bad-request"
    # Nothing was created; the stream still works for SASL afterwards.
    assert node.db.scalar("SELECT COUNT(*) FROM users WHERE fingerprint IS NOT NULL",
                          node.db_name) == "0"


def test_throttling(reg_node):
    node = reg_node(throttle_attempts=2, throttle_phone_delay=300, throttle_prefix_delay=0,
                    throttle_ip_delay=300)
    number = "+15555215570"
    assert submit_phone(node, number).get("type") == "result"
    assert submit_phone(node, number).get("type") == "result"
    r = submit_phone(node, number)
    assert r.find(q("jabber:client", "error")).get("type") == "wait", show(r)
    assert error_of(r)[1] == "service-unavailable"
    # The IP throttle: another number from the same address is now over its limit too,
    # while another address may still ask for it.
    assert error_of(submit_phone(node, "+15555215571"))[1] == "service-unavailable"
    assert submit_phone(node, "+15555215571", source="127.0.0.7").get("type") == "result"


def test_command_provider(reg_node, keys, tmp_path):
    out = tmp_path / "sent.txt"
    script = tmp_path / "send-sms"
    script.write_text("#!/bin/sh\necho \"$1 $2\" > '%s'\n" % out)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    node = reg_node(provider="command", command=str(script))
    number = "+15555215580"
    assert submit_phone(node, number).get("type") == "result"
    sent_number, code = out.read_text().split()
    assert sent_number == number and len(code) == 6 and code.isdigit()
    user = new_user(keys, tmp_path, node, number)
    assert submit_code(node, user, code).get("type") == "result"


def test_command_provider_failure(reg_node, tmp_path):
    node = reg_node(provider="command", command="/bin/false")
    assert error_of(submit_phone(node, "+15555215581"))[1] == "not-acceptable"


def registered(node, keys, tmp_path, number):
    assert submit_phone(node, number).get("type") == "result"
    user = new_user(keys, tmp_path, node, number)
    r = submit_code(node, user, "123456")
    assert r.get("type") == "result", show(r)
    user.write_cert(keyring=base64.b64decode(fields(r)["publickey"]))
    return user


def test_rollover(reg_node, keys, tmp_path):
    node = reg_node()
    number = "+15555215590"
    old = registered(node, keys, tmp_path, number)
    new = KeyUser(keys, tmp_path, old.local, node.jid_domain)
    new_ring = base64.b64encode(new.keyring).decode()
    with client(node, cert=old.files) as c:
        c.login_external()
        # Without the old key revoked: refused.
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#key",
                                       publickey=new_ring))
        assert error_of(r)[1] == "forbidden"
        # The old key, not revoked: refused.
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#key",
                                       publickey=new_ring,
                                       revoked=base64.b64encode(old.keyring).decode()))
        assert error_of(r)[1] == "forbidden"
        keys.revoke(old.fpr)
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#key",
                                       publickey=new_ring,
                                       revoked=base64.b64encode(old.keyring).decode()))
        assert r.get("type") == "result", show(r)
        signed = base64.b64decode(fields(r)["publickey"])
    assert node.db.scalar("SELECT fingerprint FROM users WHERE localpart = '%s'" % old.local,
                          node.db_name) == new.fpr
    new.write_cert(keyring=signed)
    with client(node, cert=new.files) as c:
        c.login_external()


def test_private_key_parking(reg_node, keys, tmp_path):
    node = reg_node(privatekey_max=1024)
    user = registered(node, keys, tmp_path, "+15555215595")
    secret = b"client-encrypted private key \x00\x01\x02"
    with client(node, cert=user.files) as c:
        c.login_external()
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#privatekey",
                                       privatekey=base64.b64encode(secret).decode()))
        assert r.get("type") == "result", show(r)
        token = fields(r)["token"]
        assert len(token) == 40 and token.isdigit()
        # privatekey_max (the minimum, 1024 bytes here) and undecodable data.
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#privatekey",
                                       privatekey=base64.b64encode(b"k" * 1025).decode()))
        assert error_of(r)[1] == "not-acceptable"
        r = register_iq(c, "set", form("http://kontalk.org/protocol/register#privatekey",
                                       privatekey="not base64!"))
        assert error_of(r)[1] == "bad-request"
    fetch = ("<account xmlns='%s'><privatekey><token>%s</token></privatekey></account>"
             % (NS_ACCOUNT, token))
    with client(node) as c:
        c.start()
        r = register_iq(c, "get", fetch)
        assert r.get("type") == "result", show(r)
        pk = r.find("%s/%s/%s" % (q(NS_REGISTER, "query"), q(NS_ACCOUNT, "account"),
                                  q(NS_ACCOUNT, "privatekey")))
        assert base64.b64decode(pk.find(q(NS_ACCOUNT, "private")).text) == secret
        assert keys.show(base64.b64decode(pk.find(q(NS_ACCOUNT, "public")).text)) == [user.fpr]
        # One time only.
        assert error_of(register_iq(c, "get", fetch))[1] == "not-authorized"
        assert error_of(register_iq(c, "get", fetch.replace(token, "1" * 40)))[1] == \
            "not-authorized"


def test_no_registration_without_provider(make_node, node_key):
    node = make_node()
    node.conf["sm"] = {"key": node_key[1]}
    setup_c2s(node)
    with client(node) as c:
        feats = c.start()
        assert feats.find(q("http://jabber.org/features/iq-register", "register")) is None
        c.send("<iq type='get' id='r1'><query xmlns='%s'/></iq>" % NS_REGISTER)
        c.expect_stream_error("not-authorized")
