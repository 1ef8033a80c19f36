"""network@host (kontalk-protocol.md §2.13): the XEP-0050 `serverlist` command answered from
this node and the enabled rows of the `servers` table, the command's disco nodes, and the
XEP-0050 errors for unknown commands and actions."""

import pytest

from conftest import shared_node
from kt.xmpp import NS_CLIENT, PASSWORDS, client_for, q, show, stanza_error_condition

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_SERVERLIST = "http://kontalk.org/extensions/serverlist"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

EXECUTE = "<command xmlns='%s' node='serverlist' action='execute'/>" % NS_COMMANDS


@pytest.fixture(scope="module")
def net_node(binaries, mariadb, certs, tmp_path_factory):
    yield from shared_node(mariadb, certs, tmp_path_factory, "network")


@pytest.fixture
def servers(net_node):
    """Rows of the servers table for one test: two enabled peers (one without fingerprint),
    a disabled one, and a row for this node itself (listed once, first, all the same)."""
    net_node.sql("DELETE FROM servers; INSERT INTO servers (host, fingerprint, enabled) VALUES "
                 "('prime.kontalk.test', 'AB12CD34AB12CD34AB12CD34AB12CD34AB12CD34', TRUE), "
                 "('beta.kontalk.test', NULL, TRUE), "
                 "('off.kontalk.test', 'FFFF', FALSE), "
                 "('%s', 'SELF', TRUE)" % net_node.host)
    yield
    net_node.sql("DELETE FROM servers")


@pytest.fixture
def alice(net_node):
    c = client_for(net_node)
    c.login("alice", PASSWORDS["alice"], "net")
    yield c
    c.close()


def network_jid(node):
    return "network@%s" % node.host


def expect_error(reply, condition):
    assert reply.get("type") == "error", show(reply)
    assert stanza_error_condition(reply)[1] == condition, show(reply)
    return reply


def serverlist(reply):
    assert reply.get("type") == "result", show(reply)
    cmd = reply.find(q(NS_COMMANDS, "command"))
    assert cmd is not None, show(reply)
    assert cmd.get("node") == "serverlist" and cmd.get("status") == "completed", show(reply)
    assert cmd.get("sessionid"), show(reply)
    sl = cmd.find(q(NS_SERVERLIST, "serverlist"))
    assert sl is not None, show(reply)
    return cmd, [(i.get("node"), i.get("fingerprint")) for i in sl.findall(q(NS_SERVERLIST, "item"))]


def test_serverlist_lists_this_node_then_enabled_servers(net_node, servers, alice):
    _, items = serverlist(alice.iq("set", EXECUTE, to=network_jid(net_node)))
    # This node first, without a fingerprint (no node key configured); then the enabled rows
    # except this host, in host order; the disabled one never.
    assert items == [(net_node.host, None), ("beta.kontalk.test", None),
                     ("prime.kontalk.test", "AB12CD34AB12CD34AB12CD34AB12CD34AB12CD34")], items


def test_serverlist_follows_the_table(net_node, servers, alice):
    net_node.sql("UPDATE servers SET enabled = FALSE WHERE host = 'prime.kontalk.test'; "
                 "UPDATE servers SET enabled = TRUE WHERE host = 'off.kontalk.test'")
    _, items = serverlist(alice.iq("set", EXECUTE, to=network_jid(net_node)))
    assert items == [(net_node.host, None), ("beta.kontalk.test", None),
                     ("off.kontalk.test", "FFFF")], items


def test_serverlist_without_action_and_at_the_network_domain(net_node, servers, alice):
    # action defaults to execute (XEP-0050 §3.1); network@network is the same service.
    cmd1, items1 = serverlist(alice.iq("set", "<command xmlns='%s' node='serverlist'/>"
                                       % NS_COMMANDS, to="network@%s" % net_node.jid_domain))
    cmd2, items2 = serverlist(alice.iq("set", EXECUTE, to=network_jid(net_node)))
    assert items1 == items2 and len(items1) == 3
    assert cmd1.get("sessionid") != cmd2.get("sessionid")


def test_serverlist_with_an_empty_table(net_node, alice):
    net_node.sql("DELETE FROM servers")
    _, items = serverlist(alice.iq("set", EXECUTE, to=network_jid(net_node)))
    assert items == [(net_node.host, None)], items


def test_disco_of_the_service_and_its_command(net_node, alice):
    to = network_jid(net_node)
    info = alice.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to)
    assert info.get("type") == "result", show(info)
    ident = info.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
    assert (ident.get("category"), ident.get("type"), ident.get("name")) == \
        ("component", "generic", "Network information"), show(info)
    feats = {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
    assert NS_COMMANDS in feats, show(info)

    items = alice.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, NS_COMMANDS),
                     to=to)
    assert items.get("type") == "result", show(items)
    query = items.find(q(NS_DISCO_ITEMS, "query"))
    assert query.get("node") == NS_COMMANDS, show(items)
    listed = [(i.get("jid"), i.get("node"), i.get("name"))
              for i in query.findall(q(NS_DISCO_ITEMS, "item"))]
    assert listed == [(to, "serverlist", "Server list")], show(items)

    node_info = alice.iq("get", "<query xmlns='%s' node='serverlist'/>" % NS_DISCO_INFO, to=to)
    assert node_info.get("type") == "result", show(node_info)
    ident = node_info.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
    assert (ident.get("category"), ident.get("type")) == ("automation", "command-node")
    feats = {f.get("var") for f in node_info.iter(q(NS_DISCO_INFO, "feature"))}
    assert feats == {NS_COMMANDS, "jabber:x:data"}, show(node_info)

    # The node's disco#items lists the service.
    top = alice.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=net_node.host)
    assert to in {i.get("jid") for i in top.iter(q(NS_DISCO_ITEMS, "item"))}, show(top)


def test_unknown_disco_nodes(net_node, alice):
    to = network_jid(net_node)
    expect_error(alice.iq("get", "<query xmlns='%s' node='nope'/>" % NS_DISCO_ITEMS, to=to),
                 "item-not-found")
    expect_error(alice.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, NS_COMMANDS),
                          to=to), "item-not-found")
    expect_error(alice.iq("set", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, NS_COMMANDS),
                          to=to), "bad-request")


def test_command_errors(net_node, alice):
    to = network_jid(net_node)
    expect_error(alice.iq("set", "<command xmlns='%s' node='nosuch' action='execute'/>"
                          % NS_COMMANDS, to=to), "item-not-found")
    expect_error(alice.iq("set", "<command xmlns='%s' action='execute'/>" % NS_COMMANDS, to=to),
                 "item-not-found")
    for action in ("cancel", "next", "complete", "prev", "dance"):
        reply = expect_error(alice.iq("set", "<command xmlns='%s' node='serverlist' action='%s'/>"
                                      % (NS_COMMANDS, action), to=to), "bad-request")
        err = reply.find(q(NS_CLIENT, "error"))
        assert err.find(q(NS_COMMANDS, "bad-action")) is not None, show(reply)
    expect_error(alice.iq("get", EXECUTE, to=to), "bad-request")
    # Anything else to the service: service-unavailable (named.c).
    expect_error(alice.iq("get", "<query xmlns='jabber:iq:version'/>", to=to),
                 "service-unavailable")


def test_messages_to_the_service_bounce(net_node, alice):
    alice.send("<message to='%s' id='nm1' type='chat'><body>hi</body></message>"
               % network_jid(net_node))
    reply = alice.wait_id("nm1")
    expect_error(reply, "service-unavailable")
