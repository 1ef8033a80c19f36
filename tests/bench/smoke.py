#!/usr/bin/python3
"""Smoke test of kontalk-bench's counting against tests/bench/fake_xmpp.py (TAP output).

Not a benchmark: tiny runs (seconds in all) that check what the tool reports.  The fake server
drops exactly one message on purpose; the bench must report exactly that one loss and exit 1,
and report zero loss with the exact message count when nothing is dropped.  Login, idle, direct
TLS, each SASL mechanism, wrong passwords and bad usage are covered too.
"""

import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
builddir = os.environ.get("top_builddir") or os.getcwd()
BENCH = os.path.join(builddir, "bench", "kontalk-bench")
FAKE = os.path.join(here, "fake_xmpp.py")
n = 0
failed = 0


def ok(cond, name, diag=None):
    global n, failed
    n += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", n, name))
    if not cond:
        failed += 1
        if diag:
            for line in str(diag).splitlines():
                print("# " + line)
    sys.stdout.flush()


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", key, "-out", cert], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Fake:
    def __init__(self, cert, key, *extra):
        # stdin is a pipe: the server exits when we (or this test) go away.
        self.p = subprocess.Popen([sys.executable, FAKE, "--cert", cert, "--key", key] +
                                  list(extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  universal_newlines=True)
        line = self.p.stdout.readline().split()
        assert line and line[0] == "ready", "fake server did not start"
        self.port = int(line[1])

    def stop(self):
        self.p.stdin.close()
        out = self.p.stdout.read()
        self.p.wait(timeout=10)
        return out


def bench(port, *args):
    """(exit status, parsed JSON line or None, all output)."""
    r = subprocess.run([BENCH, "--port", str(port), "--timeout", "1", "--json"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=60)
    js = None
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            js = json.loads(line)
    return r.returncode, js, r.stdout


def main():
    if not os.access(BENCH, os.X_OK):
        print("1..0 # SKIP %s not built" % BENCH)
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="bench-smoke-")
    cert, key = make_cert(tmp.name)

    # One message dropped on purpose: exactly one loss, exit status 1.
    fake = Fake(cert, key, "--drop", "7")
    rc, js, out = bench(fake.port, "--clients", "3", "--messages", "20", "--window", "4",
                        "message")
    ok(rc == 1, "message with one drop: exit status 1", out)
    ok(js is not None and js["lost"] == 1, "message with one drop: exactly one loss", out)
    ok(js is not None and js["sent"] == 120 and js["delivered"] == 119,
       "message with one drop: 120 sent, 119 delivered", out)
    ok(js is not None and js["duplicates"] == 0 and js["reordered"] == 0 and js["unsent"] == 0,
       "message with one drop: no duplicates, reordering or unsent", out)
    ok(js is not None and js["ok"] == 6 and js["failed"] == 0, "message: 6 clients logged in",
       out)
    summary = fake.stop()
    ok("dropped 1" in summary, "the fake server dropped exactly one message", summary)

    # Nothing dropped: zero loss and the exact count, exit status 0.
    fake = Fake(cert, key)
    rc, js, out = bench(fake.port, "--clients", "2", "--messages", "50", "--window", "8",
                        "--size", "300", "--threads", "1", "message")
    ok(rc == 0, "message without drops: exit status 0", out)
    ok(js is not None and js["lost"] == 0 and js["delivered"] == 200 and js["sent"] == 200,
       "message without drops: 200 delivered, none lost", out)
    ok(js is not None and js["p50_ms"] >= 0 and js["max_ms"] >= js["p99_ms"] >= js["p50_ms"],
       "message: latency percentiles ordered", out)

    # Window 1 and one drop: the flow stalls; the rest counts as unsent, still a failure.
    fake2 = Fake(cert, key, "--drop", "1")
    rc, js, out = bench(fake2.port, "--clients", "1", "--messages", "5", "--window", "1",
                        "--threads", "1", "message")
    ok(rc == 1 and js is not None and js["lost"] == 1 and js["unsent"] == 4,
       "message window 1 with a drop: 1 lost, 4 unsent, exit 1", out)
    fake2.stop()

    # Paced (--rate): the same counting, and sending follows the schedule: 4 flows of 25 at
    # 200/s in all are 50/s per flow, so the last message cannot leave before 24/50 s.
    rc, js, out = bench(fake.port, "--clients", "2", "--messages", "25", "--rate", "200",
                        "--window", "50", "--threads", "1", "message")
    ok(rc == 0 and js is not None and js["delivered"] == 100 and js["lost"] == 0 and
       js["target_rate"] == 200, "paced message: 100 delivered, none lost", out)
    ok(js is not None and js["wall_s"] >= 0.45, "paced message: follows the schedule", out)
    fake2 = Fake(cert, key, "--drop", "3")
    rc, js, out = bench(fake2.port, "--clients", "2", "--messages", "10", "--rate", "400",
                        "message")
    ok(rc == 1 and js is not None and js["lost"] == 1 and js["delivered"] == 39,
       "paced message with one drop: exactly one loss, exit 1", out)
    fake2.stop()
    # 2 flows at 2/s in all: the second messages are due 1.5 s in, beyond --timeout 1, which
    # counts from the schedule, not from the last delivery.
    rc, js, out = bench(fake.port, "--clients", "1", "--messages", "2", "--rate", "2",
                        "--timeout", "1", "message")
    ok(rc == 0 and js is not None and js["delivered"] == 4, "paced message: a slow schedule "
       "is not a timeout", out)

    # --trace: stanzas of the chosen users only, both directions.
    rc, js, out = bench(fake.port, "--clients", "2", "--mech", "PLAIN", "--trace", "1",
                        "--no-warmup", "login")
    ok(rc == 0 and " user 1 << " in out and " user 1 >> " in out and " user 2 " not in out,
       "--trace prints user 1's stanzas only", out)

    # Logins with each mechanism; the warm-up pass must not count.
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        rc, js, out = bench(fake.port, "--clients", "5", "--mech", mech, "login")
        ok(rc == 0 and js is not None and js["ok"] == 5 and js["failed"] == 0 and
           js["rate"] > 0, "login %s: 5 ok" % mech, out)
    rc, js, out = bench(fake.port, "--clients", "4", "--rate", "200", "--concurrency", "1",
                        "--source-addrs", "127.0.0.2-127.0.0.3", "--tls-min", "1.3", "login")
    ok(rc == 0 and js is not None and js["ok"] == 4, "login at a rate from 2 source addresses",
       out)
    rc, js, out = bench(fake.port, "--clients", "3", "--password", "wrong", "login")
    ok(rc == 1 and js is not None and js["failed"] == 3 and js["ok"] == 0 and
       "not-authorized" in js["first_error"], "wrong password: 3 failures, exit 1", out)
    rc, js, out = bench(fake.port, "--clients", "3", "--mech", "PLAIN", "--password", "wrong",
                        "login")
    ok(rc == 1 and js is not None and js["failed"] == 3, "wrong PLAIN password: 3 failures",
       out)

    # The server's CPU per operation, with another process counted as its database.
    rc, js, out = bench(fake.port, "--clients", "4", "--server-pid", str(fake.p.pid),
                        "--cpu-pid", str(os.getpid()), "login")
    ok(rc == 0 and js is not None and js["server_cpu_s"] >= 0 and
       js["server_cpu_us_per_op"] >= 0, "login with --server-pid: server CPU reported", out)
    rc, js, out = bench(fake.port, "--clients", "2", "login")
    ok(rc == 0 and js is not None and js["server_cpu_s"] == -1 and
       js["server_cpu_us_per_op"] == -1, "without --server-pid: no server CPU (-1)", out)

    # Idle sessions and the server's RSS.
    rc, js, out = bench(fake.port, "--clients", "4", "--duration", "0.2",
                        "--server-pid", str(fake.p.pid), "idle")
    ok(rc == 0 and js is not None and js["alive"] == 4 and js["rss_before_kb"] > 0 and
       js["rss_after_kb"] > 0, "idle: 4 sessions held, RSS read", out)

    # Presence: a ring of 4 contacts among 8 users, each must see all 4 online.
    rc, js, out = bench(fake.port, "--clients", "8", "--roster", "4", "presence")
    ok(rc == 0 and js is not None and js["contacts_seen"] == 32 and
       js["contacts_expected"] == 32 and js["presences"] >= 32, "presence: 32 of 32 contacts",
       out)
    fake.stop()

    # Direct TLS.
    fake = Fake(cert, key, "--direct")
    rc, js, out = bench(fake.port, "--clients", "3", "--tls", "direct", "login")
    ok(rc == 0 and js is not None and js["ok"] == 3, "login over direct TLS", out)
    rc, js, out = bench(fake.port, "--clients", "2", "--tls", "starttls", "--timeout", "1",
                        "login")
    ok(rc == 1 and js is not None and js["failed"] == 2, "STARTTLS against a direct TLS port "
       "fails", out)
    fake.stop()

    # Nobody listening; bad usage.
    rc, js, out = bench(1, "--clients", "2", "login")
    ok(rc == 1 and js is not None and js["failed"] == 2 and "refused" in js["first_error"],
       "connection refused: counted as failures", out)
    rc, _, out = bench(5222, "--users", "nope", "login")
    ok(rc == 2, "--users without %d: usage error", out)
    rc, _, out = bench(5222, "frobnicate")
    ok(rc == 2, "unknown scenario: usage error", out)
    rc, _, out = bench(5222, "--roster", "3", "--clients", "10", "presence")
    ok(rc == 2, "odd roster size: usage error", out)

    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
