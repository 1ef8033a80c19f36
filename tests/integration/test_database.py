"""kontalkd and MariaDB: schema check at start, queued work surviving a database restart."""

import re
import subprocess
import time

import pytest

from kt.node import schema_version


def reap(proc):
    """Teardown for a background kontalkctl: stop it by PID if it still runs."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_db_ping(running_node):
    r = running_node.ctl("db", "ping", "--timeout", "20", timeout=60, check=True)
    assert r.stdout.startswith("database ok"), r.stdout


def test_db_ping_without_kontalkd_fails(node):
    node.init_db()
    r = node.ctl("db", "ping", "--timeout", "5", timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip()


def test_queued_work_waits_for_mariadb_restart(private_mariadb, make_node):
    node = make_node(db=private_mariadb)
    node.init_db()
    node.start()

    private_mariadb.stop()
    ping = node.ctl_background("db", "ping", "--timeout", "60")
    try:
        time.sleep(2)
        assert ping.poll() is None, \
            "db ping finished while MariaDB was down: %r" % (ping.communicate(),)
        assert node.running(), node.all_logs()
        # The admin socket still answers while the database is away.
        r = node.ctl("status", timeout=30)
        assert r.returncode == 0, r.stderr
        assert "database:" in r.stdout

        private_mariadb.start()
        out, err = ping.communicate(timeout=60)
    finally:
        reap(ping)
    assert ping.returncode == 0, "stdout: %s\nstderr: %s\nlog:\n%s" % (out, err, node.all_logs())
    assert out.startswith("database ok"), out

    assert node.running(), node.all_logs()
    status = node.ctl("status", check=True).stdout
    m = re.search(r"^database: up \(reconnects: (\d+)\)$", status, re.M)
    assert m, status
    assert int(m.group(1)) >= 1
    # Work submitted after the reconnect runs at once.
    r = node.ctl("db", "ping", "--timeout", "20", timeout=60, check=True)
    assert r.stdout.startswith("database ok"), r.stdout
    assert node.stop() == 0, node.all_logs()


def test_refuses_uninitialised_schema(node):
    node.start(wait=False)
    assert node.wait_exit(timeout=60) == 1
    want = "database schema is at version 0, this kontalkd needs %d: run kontalkctl db upgrade" \
        % schema_version()
    assert want in node.log(), node.log()
    assert "started" not in node.log()


@pytest.mark.parametrize("breakage", ["socket", "password", "name"])
def test_refuses_unreachable_database(node, breakage):
    node.init_db()
    if breakage == "socket":
        node.conf["database"]["socket"] = "/nonexistent/mysqld.sock"
    elif breakage == "password":
        node.conf["database"]["password"] = "wrong"
    else:
        node.conf["database"]["name"] = "kt_nonexistent"
    node.start(wait=False)
    try:
        status = node.wait_exit(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("kontalkd keeps running without its database; log:\n" + node.all_logs())
    assert status == 1, node.all_logs()
    assert node.log().strip(), "no message"
    assert "started" not in node.log()
