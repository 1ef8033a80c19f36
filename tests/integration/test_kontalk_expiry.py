"""Account expiry (kontalk-protocol.md §2.6) on a node that checks every second: a key account
unused for sm.expire_days is deleted with its roster (cascade), and its online contact gets
'unsubscribed' and 'unsubscribe' from it; a recent key account, an old password account and
an old key account with a session stay; sm.expire_days = 0 deletes nothing."""

import time

import pytest

from conftest import setup_c2s
from kt.im import online
from kt.xmpp import NS_CLIENT, q, show

KEY1 = "a1" * 20  # 40 hex digits, as Kontalk's localparts
KEY2 = "b2" * 20
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
RUN_RE = r"account expiry: (\d+) deleted, (\d+) in use again, (\d+) online, (\d+) failed"


def expiry_node(make_node, days=1):
    node = make_node()
    node.conf["sm"] = {"expire_days": days, "expire_check": 1}
    return setup_c2s(node, auth_attempts_per_ip=100000)


def users(node):
    return {row[0] for row in node.sql("SELECT localpart FROM users")}


def add_key_account(node, local, age_days=0):
    node.sql("INSERT INTO users (localpart, fingerprint, created) VALUES "
             "('%s', '%s', NOW() - INTERVAL %d DAY)" % (local, FPR, age_days))


def make_old(node, local, days=3):
    node.sql("UPDATE users SET created = NOW() - INTERVAL %d DAY, "
             "last_login = NOW() - INTERVAL %d DAY, last_logout = NOW() - INTERVAL %d DAY "
             "WHERE localpart = '%s'" % (days, days, days, local))


def two_runs(node, timeout=10):
    """The counts of the next two runs logged from now on: the second one started after
    now (the first may have started before)."""
    since = len(node.log())
    first = node.wait_log(RUN_RE, timeout=timeout, since=since)
    second = node.wait_log(RUN_RE, timeout=timeout, since=since + first.end())
    return [tuple(int(x) for x in m.groups()) for m in (first, second)]


def test_unused_key_account_deleted_and_contact_told(make_node):
    node = expiry_node(make_node)
    dom = node.jid_domain
    key_jid = "%s@%s" % (KEY1, dom)
    add_key_account(node, KEY1)
    node.sql("INSERT INTO roster (owner, contact, in_roster, subscription) VALUES "
             "('%s', 'alice@%s', 1, 3), ('alice', '%s', 1, 3)" % (KEY1, dom, key_jid))
    node.sql("INSERT INTO vcards (localpart, vcard) VALUES ('%s', '<vCard xmlns=\"vcard-temp\"/>')"
             % KEY1)
    with online(node, "alice") as a:
        roster = a.iq("get", "<query xmlns='jabber:iq:roster'/>", to="")
        assert roster.get("type") == "result", show(roster)
        time.sleep(0.3)
        assert KEY1 in users(node)  # recent: the runs so far left it
        make_old(node, KEY1)
        got = set()
        deadline = time.monotonic() + 10
        while got != {"unsubscribe", "unsubscribed"}:
            elem = a.next(max(0.1, deadline - time.monotonic()))
            if elem.tag == q(NS_CLIENT, "presence") and elem.get("from") == key_jid:
                got.add(elem.get("type"))
        assert KEY1 not in users(node)
    assert node.sql("SELECT COUNT(*) FROM roster WHERE owner = '%s'" % KEY1) == [["0"]]
    assert node.sql("SELECT COUNT(*) FROM vcards WHERE localpart = '%s'" % KEY1) == [["0"]]
    # alice's side: both directions ended (the item itself is hers to remove).
    assert node.sql("SELECT subscription, ask FROM roster WHERE owner = 'alice' AND "
                    "contact = '%s'" % key_jid) == [["0", "0"]]
    assert "alice" in users(node)


def test_recent_password_and_online_accounts_stay(make_node):
    node = expiry_node(make_node)
    add_key_account(node, KEY1)            # recent key account
    make_old(node, "bob")                  # old password account: never expires
    node.sql("UPDATE users SET fingerprint = '%s' WHERE localpart = 'carol'" % FPR)
    with online(node, "carol"):            # old key account with a session here
        time.sleep(0.3)
        make_old(node, "carol")
        runs = two_runs(node)
        assert runs[1] == (0, 0, 1, 0), runs
        assert {KEY1, "bob", "carol"} <= users(node)
        # An old key account without a session: deleted once, by one of the two runs.
        add_key_account(node, KEY2, age_days=5)
        runs = two_runs(node)
        assert sum(r[0] for r in runs) == 1 and all(r[2] == 1 for r in runs), runs
    assert KEY2 not in users(node)
    assert {KEY1, "alice", "bob", "carol"} <= users(node)


def test_expire_days_zero_deletes_nothing(make_node):
    node = expiry_node(make_node, days=0)
    add_key_account(node, KEY1, age_days=400)
    time.sleep(2.5)
    assert KEY1 in users(node)
    assert "account expiry off" in node.log()
    assert "account expiry:" not in node.log()


@pytest.mark.parametrize("bad", [-1, 0])
def test_expire_check_range(make_node, bad):
    node = make_node()
    node.conf["sm"] = {"expire_check": bad}
    r = node.check_config()
    assert r.returncode != 0 and "expire_check" in (r.stdout + r.stderr), r
