"""kontalkd nodes for tests and the development node.

A Node owns a directory holding its configuration, admin socket and log.  Its
configuration is a plain dict rendered to libconfig syntax one setting per
line, so a test can change any value (or break it on purpose) and find the
line an error message must point at.  kontalkd runs in the foreground with
stderr in a log file; start() waits for its "started" line and stop() sends a
signal to its PID and returns the exit status.

Binaries come from $top_builddir (set by `make check`), else the current
directory.  Also usable from the shell (scripts/kontalk-dev):
    python3 node.py cert DIR [--host NAME] [--days N]
    python3 node.py config --out FILE --builddir B --dir D --db-socket S [options]
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

try:
    from kt.mariadb import die_with_parent
except ImportError:  # run as a script from kt/
    from mariadb import die_with_parent

STARTED_RE = r"kontalkd \S+ started"
DEFAULT_MODULES = ["c2s", "sm", "net", "s2s", "example"]


def builddir():
    return os.path.abspath(os.environ.get("top_builddir") or os.getcwd())


def srcdir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(os.environ.get("top_srcdir") or os.path.join(here, "..", "..", ".."))


def kontalkd_path():
    return os.path.join(builddir(), "kontalkd")


def kontalkctl_path():
    return os.path.join(builddir(), "kontalkctl")


def version():
    """PACKAGE_VERSION from the build's config.h (the version kontalkd must report)."""
    with open(os.path.join(builddir(), "config.h")) as f:
        return re.search(r'#define PACKAGE_VERSION "([^"]*)"', f.read()).group(1)


def schema_version():
    """The newest migration in sql/ (NNN_name.sql): the schema kontalkd needs."""
    names = [n for n in os.listdir(os.path.join(srcdir(), "sql")) if re.match(r"\d+_.*\.sql$", n)]
    return max(int(n.split("_", 1)[0]) for n in names)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory, host="localhost", days=2):
    """A self-signed P-256 certificate and key: (cert_path, key_path).  Kept if present."""
    os.makedirs(directory, exist_ok=True)
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    if not (os.path.exists(cert) and os.path.exists(key)):
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", str(days),
                            "-subj", "/CN=" + host, "-addext", "subjectAltName=DNS:" + host,
                            "-keyout", key, "-out", cert],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        if r.returncode != 0:
            raise RuntimeError("openssl req failed:\n" + r.stdout)
        os.chmod(key, 0o600)
    return cert, key


# -- libconfig rendering -----------------------------------------------------

class Raw:
    """Text put into the configuration verbatim (to write broken syntax on purpose)."""

    def __init__(self, text):
        self.text = text


def _value(v):
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, _value(x)) for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        if not v:
            return "[ ]"
        # libconfig: arrays hold scalars, lists hold groups (or mixed values).
        if all(isinstance(x, (str, int, float, bool)) for x in v):
            return "[ " + ", ".join(_value(x) for x in v) + " ]"
        return "( " + ", ".join(_value(x) for x in v) + " )"
    raise TypeError("cannot render %r" % (v,))


def render_config(conf, header="kontalkd configuration"):
    """libconfig text: top-level groups one setting per line, nested values inline."""
    out = ["# " + header]
    for name, value in conf.items():
        if isinstance(value, Raw):
            out.append(value.text)
        elif isinstance(value, dict):
            out.append("%s = {" % name)
            for k, v in value.items():
                out.append(v.text if isinstance(v, Raw) else "  %s = %s;" % (k, _value(v)))
            out.append("};")
        else:
            out.append("%s = %s;" % (name, _value(value)))
    return "\n".join(out) + "\n"


def line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise ValueError("%r not in the configuration" % needle)


def default_config(*, directory, db_socket, db_name, db_user="kontalk", db_password="kontalk",
                   cert, key, port, host="localhost", network="kontalk.test",
                   modules_dir=None, address="127.0.0.1"):
    return {
        "core": {
            "host": host,
            "network": network,
            "io_threads": 2,
            "workers": 2,
            "modules_dir": modules_dir or os.path.join(builddir(), "modules", ".libs"),
            "log_level": "info",
            "log_file": "",
            "admin_socket": os.path.join(directory, "admin.sock"),
            "scram_iterations": 4096,
        },
        "tls": {"certificate": cert, "key": key},
        "database": {"socket": db_socket, "name": db_name, "user": db_user,
                     "password": db_password},
        "modules": list(DEFAULT_MODULES),
        "c2s": {"listen": [{"port": port, "tls": "starttls", "address": address}]},
    }


# -- running the binaries -----------------------------------------------------

class Node:
    """One kontalkd node: its directory, configuration, database and process."""

    def __init__(self, directory, db, db_name, cert, key, db_user="kontalk",
                 db_password="kontalk", **config_args):
        self.dir = os.path.abspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.db = db
        self.db_name = db_name
        self.conf = default_config(directory=self.dir, db_socket=db.socket, db_name=db_name,
                                   db_user=db_user, db_password=db_password, cert=cert, key=key,
                                   port=config_args.pop("port", None) or free_port(),
                                   **config_args)
        self.conf_path = os.path.join(self.dir, "kontalk.conf")
        self.log_path = os.path.join(self.dir, "kontalkd.log")
        self.proc = None
        self._log_file = None

    @property
    def jid_domain(self):
        return self.conf["core"]["network"]

    @property
    def host(self):
        return self.conf["core"]["host"]

    # -- c2s listeners -------------------------------------------------------

    def c2s_port(self, tls="starttls"):
        """Port of the first c2s listener with this tls mode ("starttls" or "direct")."""
        for listener in self.conf["c2s"]["listen"]:
            if listener.get("tls") == tls:
                return listener["port"]
        raise KeyError("no c2s listener with tls = %r" % tls)

    def add_c2s_listener(self, tls="direct", address="127.0.0.1", port=None):
        """Another c2s listener (a free port unless given); returns its port."""
        port = port or free_port()
        self.conf["c2s"]["listen"].append({"port": port, "tls": tls, "address": address})
        return port

    def add_user(self, localpart, password):
        self.ctl("user", "add", localpart, "--password", password, check=True)

    def pid(self):
        return self.proc.pid if self.running() else None

    def rss_kb(self):
        """VmRSS of the running kontalkd, in kB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.proc.pid)

    def write_config(self, conf=None, path=None):
        """Render the configuration to a file; returns (path, text)."""
        text = render_config(self.conf if conf is None else conf)
        path = path or self.conf_path
        with open(path, "w") as f:
            f.write(text)
        return path, text

    def sql(self, query):
        return self.db.sql(query, self.db_name)

    # -- kontalkctl and kontalkd -t ---------------------------------------

    def ctl(self, *args, timeout=60, check=False):
        """Run kontalkctl -c CONF ARGS; returns the CompletedProcess (text)."""
        if not os.path.exists(self.conf_path):
            self.write_config()
        r = subprocess.run([kontalkctl_path(), "-c", self.conf_path] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("kontalkctl %s: exit %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r

    def ctl_background(self, *args):
        """Start kontalkctl without waiting; the caller owns the Popen (and must reap it)."""
        if not os.path.exists(self.conf_path):
            self.write_config()
        return subprocess.Popen([kontalkctl_path(), "-c", self.conf_path] + [str(a) for a in args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)

    def check_config(self, path=None, timeout=60):
        """kontalkd -t -c FILE."""
        path = path or self.write_config()[0]
        return subprocess.run([kontalkd_path(), "-t", "-c", path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)

    def init_db(self):
        self.ctl("db", "init", check=True)

    # -- the daemon ----------------------------------------------------------

    def start(self, timeout=30, wait=True):
        """kontalkd -f with stderr to the log; waits for the "started" line unless wait=False."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        self.write_config()
        since = len(self.log())  # a restart must not match the previous run's line
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([kontalkd_path(), "-f", "-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        if wait:
            try:
                self.wait_log(STARTED_RE, timeout=timeout, since=since)
            except AssertionError:
                self.kill()
                raise
        return self.proc

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_file(self):
        """Where kontalkd logs: core.log_file if set, else its stderr (self.log_path)."""
        return self.conf["core"].get("log_file") or self.log_path

    def log(self, path=None):
        """What the node logged so far (all runs)."""
        try:
            with open(path or self.log_file(), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def all_logs(self):
        """The log and, if kontalkd logs to a file, its stderr too (sanitizer reports)."""
        text = self.log(self.log_path)
        if self.log_file() != self.log_path:
            text = "--- %s:\n%s--- stderr:\n%s" % (self.log_file(), self.log(), text)
        return text

    def wait_log(self, regex, timeout=15, since=0):
        """Wait for a log line matching regex (from byte offset since); returns the match.

        Fails early, with the log, if kontalkd exits before the line shows up.
        """
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[since:]
            m = pat.search(text)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("kontalkd exited with status %d before logging %r; log:\n%s"
                                     % (self.proc.returncode, regex, self.all_logs()))
            if time.monotonic() > deadline:
                raise AssertionError("no log line matching %r after %ds; log:\n%s"
                                     % (regex, timeout, self.all_logs()))
            time.sleep(0.05)

    def wait_exit(self, timeout=30):
        """Wait for kontalkd to exit by itself; returns the exit status."""
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._close_log()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send sig to kontalkd's PID and wait; returns its exit status (SIGKILL on timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_log()
                raise AssertionError("kontalkd did not exit %ds after signal %d; log:\n%s"
                                     % (timeout, sig, self.all_logs()))
        self._close_log()
        return self.proc.returncode

    def kill(self):
        """Teardown: make sure the process is gone, whatever state it is in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def main(argv):
    p = argparse.ArgumentParser(description="kontalkd configuration and certificate helper")
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("cert", help="self-signed certificate DIR/cert.pem and DIR/key.pem")
    c.add_argument("dir")
    c.add_argument("--host", default="localhost")
    c.add_argument("--days", type=int, default=365)
    g = sub.add_parser("config", help="write a kontalkd configuration")
    g.add_argument("--out", required=True)
    g.add_argument("--builddir", required=True)
    g.add_argument("--dir", required=True, help="node directory (admin socket, certificates)")
    g.add_argument("--db-socket", required=True)
    g.add_argument("--db-name", default="kontalk")
    g.add_argument("--db-user", default="kontalk")
    g.add_argument("--db-password", default="kontalk")
    g.add_argument("--port", type=int, default=5222)
    g.add_argument("--host", default="localhost")
    g.add_argument("--network", default="kontalk.test")
    g.add_argument("--address", default="127.0.0.1")
    g.add_argument("--log-level", default="info")
    g.add_argument("--node-key", help="the node's OpenPGP key file (sm.key); with it, phone "
                   "registration with the dummy provider (code 123456) is on")
    a = p.parse_args(argv)
    try:
        if a.action == "cert":
            print("%s %s" % make_cert(a.dir, host=a.host, days=a.days))
            return 0
        d = os.path.abspath(a.dir)
        cert, key = make_cert(os.path.join(d, "tls", a.host), host=a.host, days=365)
        conf = default_config(directory=d, db_socket=a.db_socket, db_name=a.db_name,
                              db_user=a.db_user, db_password=a.db_password, cert=cert, key=key,
                              port=a.port, host=a.host, network=a.network,
                              modules_dir=os.path.join(os.path.abspath(a.builddir), "modules",
                                                       ".libs"),
                              address=a.address)
        conf["core"]["log_level"] = a.log_level
        if a.node_key:
            conf["sm"] = {"key": os.path.abspath(a.node_key),
                          "register": {"provider": "dummy", "dummy_code": "123456"}}
        with open(a.out, "w") as f:
            f.write(render_config(conf, header="development node: generated by scripts/kontalk-dev"
                                                " (edits are overwritten)"))
        print(a.out)
    except RuntimeError as e:
        print("node.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
