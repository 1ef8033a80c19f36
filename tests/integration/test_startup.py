"""kontalkd start-up, status over the admin socket, and signals."""

import os
import re
import signal
import subprocess
import time

from kt.node import DEFAULT_MODULES, kontalkd_path, version

STUB_MODULES = ["net", "s2s"]
LEVELS = ("error", "warn", "notice", "info", "debug")
# "<ISO time> <level> message"
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*\s+(\w+)\s+(.*)$")


def parse_status(text):
    status = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            status[key.strip()] = value.strip()
    return status


def uptime_seconds(text):
    m = re.fullmatch(r"(\d+)s", text)
    assert m, "uptime %r is not like '3s'" % text
    return int(m.group(1))


def test_version(binaries):
    r = subprocess.run([kontalkd_path(), "--version"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "kontalkd %s (module ABI 1)" % version()


def test_starts_and_reports_status(running_node):
    log = running_node.log()
    started = [line for line in log.splitlines() if re.search(r"kontalkd \S+ started", line)]
    assert len(started) == 1, log
    assert "kontalkd %s started" % version() in started[0]
    m = LOG_LINE_RE.match(started[0])
    assert m and m.group(1) in LEVELS, "not '<ISO time> <level> message': %r" % started[0]

    r = running_node.ctl("status", check=True)
    status = parse_status(r.stdout)
    assert status.get("version") == version(), r.stdout
    assert sorted(status.get("modules", "").split()) == sorted(DEFAULT_MODULES), r.stdout
    assert re.fullmatch(r"up \(reconnects: 0\)", status.get("database", "")), r.stdout
    assert status.get("connections") == "0", r.stdout
    assert re.fullmatch(r"2 \(pending jobs: \d+\)", status.get("workers", "")), r.stdout
    first = uptime_seconds(status.get("uptime", ""))

    time.sleep(1.2)
    later = uptime_seconds(parse_status(running_node.ctl("status", check=True).stdout)["uptime"])
    assert later >= first + 1
    assert running_node.running()


def test_stub_modules_say_not_implemented(running_node):
    log = running_node.log()
    assert re.search(r"\bc2s: listening on 127\.0\.0\.1 port %d \(STARTTLS\)" %
                     running_node.c2s_port(), log), log
    for name in STUB_MODULES:
        assert re.search(r"\b%s: .*not implemented yet" % name, log), \
            "no 'not implemented yet' line from %s:\n%s" % (name, log)
    for line in log.splitlines():
        m = LOG_LINE_RE.match(line)
        assert m and m.group(1) in LEVELS, "not '<ISO time> <level> message': %r" % line


def test_sigterm_stops_cleanly(running_node):
    since = len(running_node.log())
    assert running_node.stop(signal.SIGTERM) == 0, running_node.all_logs()
    assert "stopping" in running_node.log()[since:]
    # The admin socket is gone with the process: status says so and fails.
    r = running_node.ctl("status", timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip(), "kontalkctl status failed without a message"


def test_sigint_stops_cleanly(running_node):
    assert running_node.stop(signal.SIGINT) == 0, running_node.all_logs()
    assert "stopping" in running_node.log()


def test_status_without_kontalkd_fails(node):
    node.write_config()
    r = node.ctl("status", timeout=30)
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip()


def test_sighup_reloads_and_reopens_log(node, tmp_path):
    logfile = str(tmp_path / "kontalkd-file.log")
    node.conf["core"]["log_file"] = logfile
    node.init_db()
    node.start()
    assert "started" in node.log(logfile)

    # Log rotation: move the file away; after SIGHUP kontalkd writes a new one.
    os.rename(logfile, logfile + ".1")
    node.proc.send_signal(signal.SIGHUP)
    node.wait_log(r"reloaded", timeout=15)
    assert os.path.exists(logfile)
    assert node.running()
    assert node.ctl("status", check=True).returncode == 0

    # A second SIGHUP works as well.
    since = len(node.log())
    node.proc.send_signal(signal.SIGHUP)
    node.wait_log(r"reloaded", timeout=15, since=since)
    assert node.running()
    assert node.stop() == 0, node.all_logs()
