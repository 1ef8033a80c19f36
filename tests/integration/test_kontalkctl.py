"""kontalkctl: schema management and password accounts (SCRAM keys checked in Python)."""

import hashlib
import hmac
import re

import pytest

from kt.node import schema_version

PASSWORD = "correct horse battery staple 42"
SCRAM_COLUMNS = ["salt", "iterations", "stored_key", "server_key"]


def test_db_init_version_upgrade(node):
    want = schema_version()
    r = node.ctl("db", "init", check=True)
    assert r.stdout.strip() == "schema created at version %d" % want

    r = node.ctl("db", "version", check=True)
    assert re.search(r"\b%d\b" % want, r.stdout), r.stdout

    r = node.ctl("db", "upgrade", check=True)
    assert r.stdout.strip() == "schema is up to date (version %d)" % want

    # init refuses a database that already holds a schema.
    r = node.ctl("db", "init")
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip()
    tables = [row[0] for row in node.sql("SHOW TABLES")]
    assert "users" in tables


def test_db_upgrade_creates_schema_on_empty_database(node):
    want = schema_version()
    r = node.ctl("db", "upgrade", check=True)
    assert r.stdout.strip() in ("schema upgraded from 0 to %d" % want,
                                "schema created at version %d" % want), r.stdout
    r = node.ctl("db", "version", check=True)
    assert re.search(r"\b%d\b" % want, r.stdout), r.stdout
    r = node.ctl("db", "upgrade", check=True)
    assert r.stdout.strip() == "schema is up to date (version %d)" % want


def test_db_version_on_unreachable_database_fails(node):
    node.conf["database"]["socket"] = "/nonexistent/mysqld.sock"
    r = node.ctl("db", "version")
    assert r.returncode == 1
    assert r.stderr.strip()


def test_user_add_list_del(node):
    node.init_db()
    assert node.ctl("user", "list", check=True).stdout.strip() == ""

    for name in ("carol", "alice", "bob"):
        r = node.ctl("user", "add", name, "--password", PASSWORD, check=True)
        assert r.stdout.strip() == "created %s@kontalk.test" % name

    r = node.ctl("user", "list", check=True)
    assert r.stdout.splitlines() == ["alice@kontalk.test", "bob@kontalk.test", "carol@kontalk.test"]

    r = node.ctl("user", "del", "bob", check=True)
    assert r.stdout.startswith("deleted") and "bob" in r.stdout, r.stdout
    r = node.ctl("user", "list", check=True)
    assert r.stdout.splitlines() == ["alice@kontalk.test", "carol@kontalk.test"]

    r = node.ctl("user", "del", "bob")
    assert r.returncode == 1
    assert r.stderr.strip()
    assert [row[0] for row in node.sql("SELECT localpart FROM users ORDER BY localpart")] == \
        ["alice", "carol"]


def test_user_add_duplicate_refused(node):
    node.init_db()
    node.ctl("user", "add", "alice", "--password", PASSWORD, check=True)
    before = node.sql("SELECT HEX(scram_sha256_stored_key) FROM users WHERE localpart = 'alice'")
    r = node.ctl("user", "add", "alice", "--password", "another password")
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip()
    # The existing account is untouched.
    after = node.sql("SELECT HEX(scram_sha256_stored_key) FROM users WHERE localpart = 'alice'")
    assert before == after


@pytest.mark.parametrize("localpart", ["a@b", "a b", "a/b", "", "x" * 1100],
                         ids=["at", "space", "slash", "empty", "too-long"])
def test_user_add_invalid_localpart_refused(node, localpart):
    node.init_db()
    r = node.ctl("user", "add", localpart, "--password", PASSWORD)
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip()
    assert node.sql("SELECT COUNT(*) FROM users") == [["0"]]


def scram_row(node, localpart, mech):
    cols = ", ".join("HEX(%s_%s)" % (mech, c) if c != "iterations" else "%s_%s" % (mech, c)
                     for c in SCRAM_COLUMNS)
    rows = node.sql("SELECT %s FROM users WHERE localpart = '%s'" % (cols, localpart))
    assert len(rows) == 1, rows
    salt, iterations, stored, server = rows[0]
    return bytes.fromhex(salt), int(iterations), bytes.fromhex(stored), bytes.fromhex(server)


def check_scram(node, localpart, password, iterations):
    """RFC 5802: SaltedPassword = Hi(password, salt, i); StoredKey = H(HMAC(SP, "Client Key"));
    ServerKey = HMAC(SP, "Server Key")."""
    salts = []
    for mech, algo in (("scram_sha1", "sha1"), ("scram_sha256", "sha256")):
        salt, iters, stored, server = scram_row(node, localpart, mech)
        assert iters == iterations, "%s iterations" % mech
        assert len(salt) >= 12, "%s salt of %d bytes" % (mech, len(salt))
        salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        assert stored == hashlib.new(algo, client_key).digest(), "%s StoredKey" % mech
        assert server == hmac.new(salted, b"Server Key", algo).digest(), "%s ServerKey" % mech
        salts.append(salt)
    return salts


def test_scram_keys_follow_rfc5802(node):
    node.init_db()
    node.ctl("user", "add", "alice", "--password", PASSWORD, check=True)
    node.ctl("user", "add", "bob", "--password", PASSWORD, check=True)
    alice = check_scram(node, "alice", PASSWORD, 4096)
    bob = check_scram(node, "bob", PASSWORD, 4096)
    # Fresh random salts: the same password gives different keys.
    assert len({alice[0], alice[1], bob[0], bob[1]}) == 4


def test_scram_iterations_follow_config(make_node):
    node = make_node()
    node.conf["core"]["scram_iterations"] = 5000
    node.init_db()
    node.ctl("user", "add", "alice", "--password", "s3cr3t-ü", check=True)
    check_scram(node, "alice", "s3cr3t-ü", 5000)


def test_no_column_holds_the_password(node):
    node.init_db()
    node.ctl("user", "add", "alice", "--password", PASSWORD, check=True)
    columns = [row[0] for row in node.sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = 'users'")]
    for c in ["localpart"] + ["scram_%s_%s" % (m, k) for m in ("sha1", "sha256")
                              for k in SCRAM_COLUMNS]:
        assert c in columns
    values = node.sql("SELECT %s FROM users" % ", ".join("HEX(`%s`)" % c for c in columns))
    assert len(values) == 1
    secret = PASSWORD.encode().hex().upper()
    for column, value in zip(columns, values[0]):
        assert secret not in value, "column %s holds the password" % column
        assert "636F727265637420686F727365" not in value, "column %s holds part of it" % column


def test_user_del_removes_the_users_data(running_node):
    """Every table that belongs to an account goes with it (foreign keys, ON DELETE CASCADE)."""
    node = running_node
    node.ctl("user", "add", "gone", "--password", "pw", check=True)
    db = node.db
    for sql in ("INSERT INTO offline (owner, stanza, expires) VALUES ('gone', 'x', NOW())",
                "INSERT INTO vcards (localpart, vcard) VALUES ('gone', 'v')",
                "INSERT INTO roster (owner, contact, in_roster) VALUES ('gone', 'a@b', 1)",
                "INSERT INTO roster_version (owner, ver) VALUES ('gone', 1)"):
        db.sql(sql, database=node.db_name)
    node.ctl("user", "del", "gone", check=True)
    for table, col in (("offline", "owner"), ("vcards", "localpart"), ("roster", "owner"),
                       ("roster_version", "owner")):
        n = db.scalar("SELECT COUNT(*) FROM %s WHERE %s = 'gone'" % (table, col),
                      database=node.db_name)
        assert n == "0", (table, n)
