"""A tiny run of every kontalk-bench scenario against a real kontalkd: checks the tool's
counting end to end (the fake-server smoke test in tests/bench checks its loss detection).
Seconds, not minutes; never a timing assertion."""

import json
import os
import subprocess

import pytest

from conftest import setup_c2s

USERS = 8


@pytest.fixture
def bench_node(make_node):
    n = make_node()
    return setup_c2s(n, users={"bench%d" % i: "bench" for i in range(1, USERS + 1)},
                     auth_attempts_per_ip=100000)


def bench(node, scenario, *args):
    tool = os.path.join(os.environ.get("top_builddir", "."), "bench", "kontalk-bench")
    if not os.path.exists(tool):
        pytest.skip("bench/kontalk-bench is not built")
    cmd = [tool, "--port", str(node.c2s_port()), "--domain", node.jid_domain, "--json",
           "--threads", "1", "--timeout", "10"] + [str(a) for a in args] + [scenario]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, "no JSON from %s: rc %d\n%s\n%s" % (cmd, r.returncode, r.stdout, r.stderr)
    result = json.loads(lines[-1])
    assert r.returncode == 0, "rc %d: %s\n%s" % (r.returncode, result, r.stderr)
    return result


def test_login(bench_node):
    r = bench(bench_node, "login", "--clients", USERS)
    assert r["ok"] == USERS and r["failed"] == 0, r


def test_message_counts_every_delivery(bench_node):
    r = bench(bench_node, "message", "--clients", 3, "--messages", 20, "--window", 4)
    assert r["delivered"] == 2 * 3 * 20 and r["lost"] == 0 and r["duplicates"] == 0 \
        and r["reordered"] == 0, r


def test_idle_reads_server_memory(bench_node):
    r = bench(bench_node, "idle", "--clients", 4, "--duration", 1, "--server-pid",
              bench_node.pid())
    assert r["ok"] == 4 and r["bytes_per_session"] > 0, r


def test_presence_sees_every_contact(bench_node):
    r = bench(bench_node, "presence", "--clients", 6, "--roster", 2)
    assert r["contacts_seen"] == 6 * 2, r
