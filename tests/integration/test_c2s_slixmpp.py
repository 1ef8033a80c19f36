"""A real XMPP client library against mod_c2s: slixmpp (python3-slixmpp) logs in and binds.

Each login runs slixmpp on an event loop of its own, bounded by a timeout, with certificate
verification off (the test certificate is self-signed).
"""

import asyncio
import ssl

import pytest
import slixmpp

from kt.xmpp import PASSWORDS

TIMEOUT = 15


def slixmpp_login(node, user, mech=None, direct=False, password=None):
    """Log in with slixmpp; returns (bound JID or None, what went wrong or None)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    outcome = {"jid": None, "error": None}
    try:
        xmpp = slixmpp.ClientXMPP("%s@%s/slix" % (user, node.jid_domain),
                                  password or PASSWORDS[user], sasl_mech=mech)
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        done = loop.create_future()

        def finish(error=None):
            if error and outcome["error"] is None:
                outcome["error"] = error
            if not done.done():
                done.set_result(None)

        def session_start(_):
            outcome["jid"] = str(xmpp.boundjid.full)
            xmpp.disconnect()

        xmpp.add_event_handler("session_start", session_start)
        # failed_auth is one mechanism failing: slixmpp then tries the next one.
        xmpp.add_event_handler("failed_auth", lambda _: outcome.setdefault("failed", 0))
        xmpp.add_event_handler("failed_all_auth", lambda _: finish("failed_all_auth"))
        xmpp.add_event_handler("stream_error", lambda e: finish("stream_error: %s" % e))
        xmpp.add_event_handler("connection_failed", lambda e: finish("connection_failed: %s" % e))
        xmpp.add_event_handler("disconnected", lambda _: finish())
        port = node.c2s_port("direct" if direct else "starttls")
        xmpp.connect(address=("127.0.0.1", port), use_ssl=direct)
        try:
            loop.run_until_complete(asyncio.wait_for(done, TIMEOUT))
        except asyncio.TimeoutError:
            outcome["error"] = outcome["error"] or "no session within %ds" % TIMEOUT
            xmpp.abort()
            loop.run_until_complete(asyncio.sleep(0.1))
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)
    return outcome["jid"], outcome["error"]


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_slixmpp_login(c2s_node, mech):
    jid, error = slixmpp_login(c2s_node, "alice", mech)
    assert jid == "alice@%s/slix" % c2s_node.jid_domain, (jid, error)


def test_slixmpp_default_mechanism_choice(c2s_node):
    """With no mechanism forced slixmpp picks its own (it may try -PLUS with tls-unique, which
    the server does not offer as a binding: the server must fail that cleanly)."""
    jid, error = slixmpp_login(c2s_node, "bob")
    assert jid == "bob@%s/slix" % c2s_node.jid_domain, (jid, error)


def test_slixmpp_direct_tls(c2s_node):
    jid, error = slixmpp_login(c2s_node, "carol", "SCRAM-SHA-256", direct=True)
    assert jid == "carol@%s/slix" % c2s_node.jid_domain, (jid, error)


def test_slixmpp_wrong_password_fails(c2s_node):
    jid, error = slixmpp_login(c2s_node, "alice", "SCRAM-SHA-256",
                               password=PASSWORDS["alice"] + "-wrong")
    assert jid is None and error and "auth" in error, (jid, error)
