"""Fixtures shared by the integration tests.

One private MariaDB server serves the whole session; every node gets its own
database (kt_1, kt_2, ...), so tests do not see each other's data.  A test that
stops MariaDB on purpose asks for `private_mariadb` instead.  Everything a test
starts is stopped by PID in teardown, whether the test passed or not.
"""

import itertools
import os
import re
import signal
import tempfile

import pytest

from kt.mariadb import MariaDB
from kt.node import Node, make_cert, kontalkd_path, kontalkctl_path
from kt.xmpp import PASSWORDS

_db_counter = itertools.count(1)


def pytest_configure(config):
    # make stops tests with SIGTERM: turn it into an interrupt so that fixtures
    # still stop their servers and nodes.
    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, interrupt)


def _new_server():
    # mkdtemp under /tmp keeps the socket path short (unix sockets: 107 bytes).
    return MariaDB(tempfile.mkdtemp(prefix="kt-db-"))


@pytest.fixture(scope="session")
def binaries():
    for path in (kontalkd_path(), kontalkctl_path()):
        if not os.access(path, os.X_OK):
            pytest.fail("%s not built (is top_builddir set? run through `make check`)" % path)
    return kontalkd_path(), kontalkctl_path()


def _running_server():
    server = _new_server()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def mariadb():
    yield from _running_server()


@pytest.fixture
def private_mariadb():
    """A server of the test's own, for tests that stop and restart MariaDB."""
    yield from _running_server()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def make_node(binaries, mariadb, certs, tmp_path):
    """Factory: make_node(db=None, **config_args) -> Node with a fresh, empty database."""
    made = []

    def make(db=None, **config_args):
        server = db or mariadb
        name = "kt_%d" % next(_db_counter)
        server.create_database(name, "kontalk", "kontalk")
        node = Node(str(tmp_path / ("node%d" % len(made))), server, name, certs[0], certs[1],
                    **config_args)
        made.append(node)
        return node

    yield make
    problems = []
    for node in made:
        # A clean SIGTERM stop ends every test: exit 0, and in a sanitizer build the leak
        # check runs at exit, so every test is also a leak test.
        if node.running():
            try:
                rc = node.stop(timeout=20)
            except AssertionError as e:
                rc, problems = None, problems + [str(e)[-3000:]]
            if rc not in (0, None):
                problems.append("kontalkd exited %d on SIGTERM:\n%s" % (rc, node.all_logs()[-3000:]))
        node.kill()
        found = SANITIZER_RE.findall(node.all_logs())
        if found:
            problems.append("sanitizer reports in %s:\n%s" % (node.log_path, "\n".join(found[:10])))
        if node.db.pid() is not None:
            node.db.drop_database(node.db_name)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def node(make_node):
    """A node with a fresh database, neither initialised nor started."""
    return make_node()


@pytest.fixture
def running_node(node):
    """A node with its schema created and kontalkd started."""
    node.init_db()
    node.start()
    return node


# -- c2s -----------------------------------------------------------------------

def setup_c2s(node, users=None, log_level=None, **c2s):
    """A node with a direct-TLS listener next to the STARTTLS one, the c2s settings given,
    the test accounts (kt.xmpp.PASSWORDS) created, and kontalkd started."""
    node.add_c2s_listener("direct")
    node.conf["c2s"].update(c2s)
    if log_level:
        node.conf["core"]["log_level"] = log_level
    node.init_db()
    for user, password in (PASSWORDS if users is None else users).items():
        node.add_user(user, password)
    node.start()
    return node


SANITIZER_RE = re.compile(r"^.*(runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer).*$",
                          re.M)


def check_sanitizer_reports(node):
    """Fail if a sanitizer build of kontalkd reported anything (UBSan goes on after a report,
    so a test can pass over one)."""
    found = SANITIZER_RE.findall(node.all_logs())
    if found:
        pytest.fail("sanitizer reports in %s:\n%s" % (node.log_path, "\n".join(found[:10])))


@pytest.fixture
def make_c2s_node(make_node):
    """Factory: make_c2s_node(users=None, log_level=None, **c2s_settings) -> a started node
    (its own configuration)."""
    made = []

    def make(users=None, log_level=None, **c2s):
        made.append(setup_c2s(make_node(), users, log_level, **c2s))
        return made[-1]
    yield make
    for node in made:
        check_sanitizer_reports(node)


def shared_node(mariadb, certs, tmp_path_factory, label, sm=None):
    """Generator for a module-scoped started node (c2s defaults, test accounts): stopped with
    SIGTERM at the end, which must exit 0 with no sanitizer report.

    auth_attempts_per_ip is raised: the modules fail logins on purpose, all from 127.0.0.1,
    and that limit has a test of its own."""
    name = "kt_%d" % next(_db_counter)
    mariadb.create_database(name, "kontalk", "kontalk")
    node = Node(str(tmp_path_factory.mktemp(label)), mariadb, name, certs[0], certs[1])
    if sm:
        node.conf["sm"] = dict(sm)
    try:
        setup_c2s(node, auth_attempts_per_ip=100000)
        yield node
        if node.running():
            assert node.stop(timeout=20) == 0, node.all_logs()[-3000:]
        check_sanitizer_reports(node)
    finally:
        node.kill()
        if mariadb.pid() is not None:
            mariadb.drop_database(name)


@pytest.fixture(scope="module")
def c2s_node(binaries, mariadb, certs, tmp_path_factory):
    """One started node with the default c2s settings, shared by a test module."""
    yield from shared_node(mariadb, certs, tmp_path_factory, "c2s")


# -- Kontalk key accounts --------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A private GnuPG home (kt.kontalk.GnuPG) for a test module's keys."""
    from kt.kontalk import GnuPG
    gpg = GnuPG(tmp_path_factory.mktemp("gnupg"))
    yield gpg
    gpg.close()


@pytest.fixture(scope="module")
def node_key(keys, tmp_path_factory):
    """(fingerprint, path): a node key GnuPG made, exported as sm.key wants it."""
    fpr = keys.generate("kontalkd test node <node@localhost>", algo="ed25519")
    path = os.path.join(str(tmp_path_factory.mktemp("nodekey")), "node.key")
    with open(path, "wb") as f:
        f.write(keys.export_secret(fpr, armor=True))
    return fpr, path
