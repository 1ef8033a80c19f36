"""A private MariaDB server for tests and the development node.

The server lives entirely in one directory (data, unix socket, pid and log
files), listens on no TCP port, and is started and stopped by PID, so it never
touches the system's MariaDB service.  The administrator account is the OS
user who created the datadir, authenticated by unix_socket, so no root
password exists anywhere.  Other programs reach the server only through its
socket, with the `mariadb` command-line client: the tests need no Python
database package.

Also usable from the shell (scripts/kontalk-dev):
    python3 mariadb.py start DIR [--database NAME --user USER --password PW]
    python3 mariadb.py stop DIR
    python3 mariadb.py status DIR
"""

import argparse
import getpass
import os
import shutil
import signal
import subprocess
import sys
import time

# Small and fast rather than durable: these servers hold throw-away data.
# Every option exists in Debian 12's MariaDB 10.11.
SERVER_OPTIONS = [
    "--skip-networking",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-log-buffer-size=2M",
    "--innodb-data-file-path=ibdata1:4M:autoextend",
    "--innodb-temp-data-file-path=ibtmp1:4M:autoextend",
    "--innodb-doublewrite=0",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-use-native-aio=0",
    "--key-buffer-size=1M",
    "--aria-pagecache-buffer-size=1M",
    "--performance-schema=OFF",
    "--max-connections=100",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
]

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"


def _find(name):
    path = shutil.which(name)
    if path is None:
        for d in ("/usr/sbin", "/usr/bin"):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        raise RuntimeError("%s not found: install the Debian package mariadb-server" % name)
    return path


def _alive(pid):
    """True if pid runs and is not a zombie (a detached server's parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def die_with_parent():
    """preexec_fn: the child gets SIGTERM when the process that started it dies, so a
    test run killed hard leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def quote(s):
    """A SQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MariaDB:
    """One server: directory layout, install, start, stop, SQL through the CLI."""

    def __init__(self, basedir):
        self.basedir = os.path.abspath(basedir)
        self.datadir = os.path.join(self.basedir, "data")
        self.socket = os.path.join(self.basedir, "mysqld.sock")
        self.pidfile = os.path.join(self.basedir, "mysqld.pid")
        self.logfile = os.path.join(self.basedir, "mysqld.log")
        self.admin = getpass.getuser()
        self.proc = None
        if len(self.socket) >= 100:
            raise RuntimeError("socket path too long for a unix socket: " + self.socket)

    # -- life cycle ---------------------------------------------------------

    def installed(self):
        return os.path.isdir(os.path.join(self.datadir, "mysql"))

    def install(self):
        """Create the system tables; the admin account is the current OS user (unix_socket)."""
        os.makedirs(self.basedir, exist_ok=True)
        cmd = [_find("mariadb-install-db"), "--no-defaults", "--datadir=" + self.datadir,
               "--auth-root-authentication-method=socket", "--skip-test-db",
               "--user=" + self.admin] + SERVER_OPTIONS
        with open(os.path.join(self.basedir, "install.log"), "wb") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError("mariadb-install-db failed (see %s/install.log)" % self.basedir)

    def pid(self):
        """PID of the running server, from our process or the pid file; None if not running."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self, detach=False, timeout=60):
        """Start the server (installing it first if needed) and wait until it answers."""
        if self.pid() is not None:
            return
        if not self.installed():
            self.install()
        cmd = [MARIADBD, "--no-defaults", "--datadir=" + self.datadir,
               "--socket=" + self.socket, "--pid-file=" + self.pidfile,
               "--log-error=" + self.logfile] + SERVER_OPTIONS
        if os.geteuid() == 0:
            cmd.append("--user=root")
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=detach,
                                         preexec_fn=None if detach else die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited with status %d:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.socket) and self.ping():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mariadbd did not start in %ds:\n%s" % (timeout, self.log_tail()))
            time.sleep(0.1)
        if detach:
            # The pid file is how a later `stop` finds a detached server.
            with open(self.pidfile, "w") as f:
                f.write("%d\n" % self.proc.pid)

    def stop(self, timeout=60):
        """SIGTERM by PID and wait; SIGKILL if it does not go.  No-op if not running."""
        pid = self.pid()
        if pid is None:
            self.proc = None
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    break
            elif not _alive(pid):
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                if self.proc is not None and self.proc.pid == pid:
                    self.proc.wait()
                break
            time.sleep(0.05)
        self.proc = None
        for path in (self.pidfile, self.socket):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.basedir, ignore_errors=True)

    def log_tail(self, lines=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- SQL through the command-line client -------------------------------

    def client_cmd(self, database=None):
        cmd = [_find("mariadb"), "--no-defaults", "--socket=" + self.socket, "-u", self.admin,
               "--batch", "--skip-column-names"]
        if database:
            cmd.append("--database=" + database)
        return cmd

    def ping(self):
        r = subprocess.run(self.client_cmd() + ["-e", "SELECT 1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def sql(self, query, database=None):
        """Run statements as the admin; returns the rows as lists of strings (tab-separated output)."""
        r = subprocess.run(self.client_cmd(database) + ["-e", query], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        if r.returncode != 0:
            raise RuntimeError("SQL failed: %s\n%s" % (query, r.stderr.strip()))
        return [line.split("\t") for line in r.stdout.splitlines()]

    def scalar(self, query, database=None):
        rows = self.sql(query, database)
        return rows[0][0] if rows else None

    def create_database(self, name, user, password):
        """An empty database and an account (user@localhost) with every right on it."""
        self.sql("CREATE DATABASE `%s`; CREATE USER IF NOT EXISTS %s@'localhost' IDENTIFIED BY %s; "
                 "GRANT ALL ON `%s`.* TO %s@'localhost';"
                 % (name, quote(user), quote(password), name, quote(user)))

    def ensure_database(self, name, user, password):
        """Like create_database, but keep the database if it exists (the dev node's data)."""
        self.sql("CREATE DATABASE IF NOT EXISTS `%s`; "
                 "CREATE USER IF NOT EXISTS %s@'localhost' IDENTIFIED BY %s; "
                 "ALTER USER %s@'localhost' IDENTIFIED BY %s; "
                 "GRANT ALL ON `%s`.* TO %s@'localhost';"
                 % (name, quote(user), quote(password), quote(user), quote(password), name,
                    quote(user)))

    def drop_database(self, name):
        self.sql("DROP DATABASE IF EXISTS `%s`" % name)


def main(argv):
    p = argparse.ArgumentParser(description="private MariaDB server on a unix socket")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("dir", help="directory holding data, socket, pid and log")
    p.add_argument("--database")
    p.add_argument("--user", default="kontalk")
    p.add_argument("--password", default="kontalk")
    a = p.parse_args(argv)
    db = MariaDB(a.dir)
    try:
        if a.action == "start":
            was_running = db.pid() is not None
            db.start(detach=True)
            if a.database:
                db.ensure_database(a.database, a.user, a.password)
            print("mariadb %s (pid %d, socket %s)"
                  % ("already running" if was_running else "started", db.pid(), db.socket))
        elif a.action == "stop":
            pid = db.pid()
            db.stop()
            print("mariadb stopped (pid %d)" % pid if pid else "mariadb was not running")
        else:
            pid = db.pid()
            print("mariadb running (pid %d, socket %s)" % (pid, db.socket) if pid
                  else "mariadb not running")
            return 0 if pid else 1
    except RuntimeError as e:
        print("mariadb: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
