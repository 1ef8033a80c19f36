"""kontalkd -t: configuration checks and module loading, without connecting to anything."""

import glob
import os
import re

import pytest

from kt.node import Raw, builddir, line_of, render_config


def check(node, conf=None):
    """Write conf (default: the node's), run kontalkd -t; returns (result, path, text)."""
    path, text = node.write_config(conf)
    return node.check_config(path), path, text


def expect_error(node, needle, message):
    """kontalkd -t fails with '<path>:<line of needle>: <message>' on stderr."""
    r, path, text = check(node)
    assert r.returncode == 1, "accepted:\n%s\nstdout: %s\nstderr: %s" % (text, r.stdout, r.stderr)
    where = "%s:%d: " % (path, line_of(text, needle))
    assert where + message in r.stderr, \
        "expected %r in stderr:\n%s\nconfiguration:\n%s" % (where + message, r.stderr, text)
    assert "configuration ok" not in r.stdout
    return r


def test_good_config(node):
    r, path, _ = check(node)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration ok: %s" % path


def test_good_config_does_not_need_the_database(node):
    node.conf["database"]["socket"] = "/nonexistent/mysqld.sock"
    r, _, _ = check(node)
    assert r.returncode == 0, r.stderr


def test_missing_file(node):
    r = node.check_config("/nonexistent/kontalk.conf")
    assert r.returncode == 1
    assert "/nonexistent/kontalk.conf" in r.stderr


def test_unknown_core_key(node):
    node.conf["core"]["bogus"] = 1
    r = expect_error(node, "bogus = ", "core.bogus: unknown setting")
    # The message lists the settings that do exist.
    assert "known:" in r.stderr and "io_threads" in r.stderr


def test_unknown_module_key(node):
    node.conf["c2s"]["frobnicate"] = "yes"
    expect_error(node, "frobnicate = ", "c2s.frobnicate: unknown setting")


def test_unknown_key_in_group_of_module_without_one(node):
    node.conf["example"] = {"nonsense": 1}
    expect_error(node, "nonsense = ", "example.nonsense: unknown setting")


def test_unknown_database_key(node):
    node.conf["database"]["pasword"] = "typo"
    expect_error(node, "pasword = ", "database.pasword: unknown setting")


def test_wrong_type(node):
    node.conf["core"]["host"] = 42
    expect_error(node, "host = 42", "core.host: expected a string")


def test_wrong_type_integer(node):
    node.conf["core"]["workers"] = "two"
    expect_error(node, "workers = ", "core.workers: ")


@pytest.mark.parametrize("value", [0, 65, -1])
def test_io_threads_out_of_range(node, value):
    node.conf["core"]["io_threads"] = value
    expect_error(node, "io_threads = ", "core.io_threads: value %d out of range [1, 64]" % value)


def test_scram_iterations_too_low(node):
    node.conf["core"]["scram_iterations"] = 4095
    r = expect_error(node, "scram_iterations = ", "core.scram_iterations: value 4095 out of range")
    assert "4096" in r.stderr


def test_bad_log_level(node):
    node.conf["core"]["log_level"] = "loud"
    expect_error(node, "log_level = ", "core.log_level: ")


def test_syntax_error(node):
    node.conf["core"]["broken"] = Raw("  broken = = 2;")
    r, path, text = check(node)
    assert r.returncode == 1
    assert "%s:%d: syntax error" % (path, line_of(text, "= = 2")) in r.stderr, r.stderr


def test_syntax_error_unterminated_group(node):
    path = os.path.join(node.dir, "broken.conf")
    text = render_config(node.conf).replace("};\ntls", "\ntls", 1)
    with open(path, "w") as f:
        f.write(text)
    r = node.check_config(path)
    assert r.returncode == 1
    assert path + ":" in r.stderr and "syntax error" in r.stderr, r.stderr


def expect_module_error(r, path, text, message):
    """kontalkd -t fails with 'kontalkd: [FILE:LINE: ]message'; a location is the modules line."""
    assert r.returncode == 1, r.stdout
    m = re.search(r"^kontalkd: (?:(\S+):(\d+): )?" + re.escape(message), r.stderr, re.M)
    assert m, "expected %r in stderr:\n%s" % (message, r.stderr)
    if m.group(1):
        assert (m.group(1), int(m.group(2))) == (path, line_of(text, "modules = ")), r.stderr


def test_unknown_module(node):
    node.conf["modules"].append("nosuchmod")
    expect_module_error(*check(node), "module 'nosuchmod': cannot load")


def _test_modules_dir(node, extra):
    """A modules_dir with the real modules plus test modules, all as symlinks."""
    d = os.path.join(node.dir, "modules")
    os.makedirs(d, exist_ok=True)
    real = glob.glob(os.path.join(builddir(), "modules", ".libs", "mod_*.so"))
    assert real, "modules not built"
    for path in real:
        os.symlink(path, os.path.join(d, os.path.basename(path)))
    for name in extra:
        path = os.path.join(builddir(), "tests", "unit", ".libs", "mod_%s.so" % name)
        assert os.path.exists(path), "%s not built (make check builds it)" % path
        os.symlink(path, os.path.join(d, "mod_%s.so" % name))
    node.conf["core"]["modules_dir"] = d


def test_real_modules_through_symlinks(node):
    _test_modules_dir(node, [])
    r, _, _ = check(node)
    assert r.returncode == 0, r.stderr


def test_module_with_wrong_abi(node):
    _test_modules_dir(node, ["badabi"])
    node.conf["modules"].append("badabi")
    expect_module_error(*check(node),
                        "module 'badabi': built for module ABI 999, this kontalkd has ABI 1")


def test_module_with_missing_dependency(node):
    _test_modules_dir(node, ["needy"])
    node.conf["modules"].append("needy")
    expect_module_error(*check(node),
                        "module 'needy' requires module 'nosuch', which is not loaded")
