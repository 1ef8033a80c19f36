"""kontalkctl key generate|import|show|export: the node's OpenPGP key in the file sm.key names,
checked against GnuPG (Debian gnupg) as an independent implementation: the fingerprint that
`key show` prints is the one gpg computes for `key export`, gpg takes the written secret key
and signs with it, and keys gpg made keep their fingerprint through `key import`. Refusals:
an existing file without --force, a passphrase-protected key, a public key, garbage, a
revoked or expired key, no sm.key configured. Each test has its own GNUPGHOME."""

import os
import shutil
import stat
import subprocess
import tempfile
from datetime import datetime, timezone

import pytest

UID_HOST = "localhost"  # core.host of the test configuration


@pytest.fixture
def gnupg():
    """A private GNUPGHOME (short path: gpg-agent's socket lives in it); its agent is stopped
    and the directory removed afterwards."""
    if shutil.which("gpg") is None:
        pytest.fail("gpg not found: install GnuPG (Debian package gnupg)")
    home = tempfile.mkdtemp(prefix="kt-gpg-")
    os.chmod(home, 0o700)
    yield Gpg(home)
    subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=home),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    shutil.rmtree(home, ignore_errors=True)


class Gpg:
    def __init__(self, home):
        self.home = home

    def run(self, *args, passphrase="", data=None, check=True):
        cmd = ["gpg", "--homedir", self.home, "--batch", "--no-tty", "--pinentry-mode",
               "loopback", "--passphrase", passphrase] + list(args)
        r = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("%s: exit %d\n%s" % (" ".join(cmd), r.returncode,
                                                      r.stderr.decode(errors="replace")))
        return r

    def keys(self, secret=False):
        """[(fingerprint, creation time, [uids])] of the keyring, as gpg lists them."""
        out = self.run("--with-colons", "--fingerprint",
                       "--list-secret-keys" if secret else "--list-keys").stdout.decode()
        keys, want = [], "sec" if secret else "pub"
        for line in out.splitlines():
            f = line.split(":")
            if f[0] == want:
                keys.append([None, int(f[5]), []])
            elif f[0] == "fpr" and keys and keys[-1][0] is None:
                keys[-1][0] = f[9]
            elif f[0] == "uid" and keys:
                keys[-1][2].append(f[9])
        return [tuple(k) for k in keys]

    def generate(self, name, algo, passphrase="", expire="never", subkey=None, faked_time=None):
        """A new key with UID "NAME <NAME@kontalk.test>"; returns its fingerprint."""
        uid = "%s <%s@kontalk.test>" % (name, name)
        extra = ["--faked-system-time", faked_time] if faked_time else []
        self.run(*extra, "--quick-gen-key", uid, algo, "sign,cert", expire,
                 passphrase=passphrase)
        fpr = [k[0] for k in self.keys() if uid in k[2]][0]
        if subkey:
            self.run(*extra, "--quick-add-key", fpr, subkey, "encr", expire,
                     passphrase=passphrase)
        return fpr

    def export_secret(self, fpr, path, passphrase="", armor=True):
        args = ["--armor"] if armor else []
        data = self.run(*args, "--export-secret-keys", fpr, passphrase=passphrase).stdout
        assert data, "gpg exported nothing for %s" % fpr
        with open(path, "wb") as f:
            f.write(data)
        return path


def key_node(node, path):
    """Point sm.key at path and write the configuration."""
    node.conf.setdefault("sm", {})["key"] = str(path)
    node.write_config()
    return str(path)


def show_fields(stdout):
    """The "label value" lines of key show/generate/import: {label: value or [values]}."""
    fields = {}
    for line in stdout.splitlines():
        label, _, value = line.partition(" ")
        value = value.strip()
        if label == "uid":
            fields.setdefault("uid", []).append(value)
        elif label in ("fingerprint", "algorithm", "created", "expires", "revoked", "wrote"):
            fields[label] = value
    return fields


def created_at(fields):
    return int(datetime.strptime(fields["created"], "%Y-%m-%d %H:%M:%S UTC")
               .replace(tzinfo=timezone.utc).timestamp())


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("ktype,algo", [("ed25519", "ed25519"), ("rsa", "rsa3072")])
def test_generate_show_export_agree_with_gpg(node, gnupg, tmp_path, ktype, algo):
    path = key_node(node, tmp_path / "node.key")
    r = node.ctl("key", "generate", "--type", ktype, check=True)
    made = show_fields(r.stdout)
    assert made["wrote"] == path
    assert len(made["fingerprint"]) == 40 and made["algorithm"] == algo, r.stdout
    assert made["uid"] == ["kontalkd <node@%s>" % UID_HOST]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read(path).startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n")
    assert not os.path.exists(path + ".new")

    shown = show_fields(node.ctl("key", "show", check=True).stdout)
    assert shown == {k: v for k, v in made.items() if k != "wrote"}

    # The public export, read by GnuPG: same fingerprint, creation time and UID.
    public = node.ctl("key", "export", check=True).stdout
    assert public.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    assert "PRIVATE" not in public
    gnupg.run("--import", data=public.encode())
    assert gnupg.keys() == [(made["fingerprint"], created_at(made), made["uid"])]
    assert gnupg.keys(secret=True) == []

    # The secret key file, read by GnuPG: it imports and signs.
    gnupg.run("--import", path)
    assert [k[0] for k in gnupg.keys(secret=True)] == [made["fingerprint"]]
    signed = gnupg.run("--local-user", made["fingerprint"], "--sign", data=b"hello").stdout
    r = gnupg.run("--status-fd", "1", "--verify", data=signed)
    assert ("VALIDSIG " + made["fingerprint"]) in r.stdout.decode(), r.stdout


def test_generate_rsa_bits_and_bad_options(node, tmp_path):
    path = key_node(node, tmp_path / "node.key")
    r = node.ctl("key", "generate", "--type", "rsa", "--bits", "2048", check=True)
    assert show_fields(r.stdout)["algorithm"] == "rsa2048"
    before = read(path)
    for args in (["--type", "dsa"], ["--type", "rsa", "--bits", "1024"],
                 ["--type", "rsa", "--bits", "x"], ["--bits", "4096"]):
        r = node.ctl("key", "generate", "--force", *args)
        assert r.returncode == 1 and r.stderr.strip(), (args, r.stdout)
        assert read(path) == before, args
    r = node.ctl("key", "generate", "--type")
    assert r.returncode == 1 and "usage" in r.stderr


def test_existing_file_needs_force(node, tmp_path):
    path = key_node(node, tmp_path / "node.key")
    first = show_fields(node.ctl("key", "generate", check=True).stdout)["fingerprint"]
    before = read(path)
    for args in (["generate"], ["generate", "--type", "rsa"], ["import", path]):
        r = node.ctl("key", *args)
        assert r.returncode == 1, (args, r.stdout)
        assert "exists" in r.stderr and "--force" in r.stderr, r.stderr
        assert read(path) == before
    assert not os.path.exists(path + ".new")

    r = node.ctl("key", "generate", "--force", check=True)
    second = show_fields(r.stdout)["fingerprint"]
    assert second != first
    assert show_fields(node.ctl("key", "show", check=True).stdout)["fingerprint"] == second
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    # A file made by an earlier key generate imports as is, with --force over itself too.
    copy = str(tmp_path / "copy.asc")
    shutil.copy(path, copy)
    r = node.ctl("key", "import", copy, "--force", check=True)
    assert show_fields(r.stdout)["fingerprint"] == second


@pytest.mark.parametrize("algo,subkey,armor", [("ed25519", "cv25519", True),
                                               ("rsa2048", None, False)])
def test_import_gpg_key_keeps_fingerprint(node, gnupg, tmp_path, algo, subkey, armor):
    fpr = gnupg.generate("imported", algo, subkey=subkey)
    export = gnupg.export_secret(fpr, str(tmp_path / "export.key"), armor=armor)
    path = key_node(node, tmp_path / "node.key")
    r = node.ctl("key", "import", export, check=True)
    fields = show_fields(r.stdout)
    assert fields["fingerprint"] == fpr
    assert fields["uid"] == ["imported <imported@kontalk.test>"]
    assert fields["algorithm"] == algo
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read(path).startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n")
    assert show_fields(node.ctl("key", "show", check=True).stdout)["fingerprint"] == fpr

    # The exported public key is the same key for a GnuPG that never saw it, subkey included.
    public = node.ctl("key", "export", check=True).stdout
    other = Gpg(tempfile.mkdtemp(prefix="kt-gpg-"))
    try:
        other.run("--import", data=public.encode())
        assert [k[0] for k in other.keys()] == [fpr]
        listing = other.run("--with-colons", "--fingerprint", "--fingerprint", "--list-keys",
                            fpr).stdout.decode()
        subs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
        assert len(subs) == (2 if subkey else 1), listing
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=other.home),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(other.home, ignore_errors=True)


def test_import_refusals(node, gnupg, tmp_path):
    path = key_node(node, tmp_path / "node.key")

    def refused(file, *words):
        r = node.ctl("key", "import", file)
        assert r.returncode == 1, r.stdout
        for word in words:
            assert word in r.stderr, (word, r.stderr)
        assert not os.path.exists(path) and not os.path.exists(path + ".new")
        return r.stderr

    # Behind a passphrase: refused with how to export it without one.
    fpr = gnupg.generate("protected", "ed25519", passphrase="kontalk", subkey="cv25519")
    protected = gnupg.export_secret(fpr, str(tmp_path / "protected.asc"), passphrase="kontalk")
    assert b"PRIVATE KEY BLOCK" in read(protected)
    refused(protected, "passphrase", "--export-secret-keys")

    # A public key, garbage, an empty file, a missing file, a damaged secret key.
    plain = gnupg.generate("plain", "ed25519")
    public = str(tmp_path / "public.asc")
    with open(public, "wb") as f:
        f.write(gnupg.run("--armor", "--export", plain).stdout)
    refused(public, "no OpenPGP secret key")
    garbage = str(tmp_path / "garbage")
    with open(garbage, "wb") as f:
        f.write(b"this is not a key\n" * 40)
    refused(garbage, garbage)
    empty = str(tmp_path / "empty")
    open(empty, "wb").close()
    refused(empty, empty)
    refused(str(tmp_path / "missing"), "cannot read")
    good = read(gnupg.export_secret(plain, str(tmp_path / "plain.asc")))
    damaged = str(tmp_path / "damaged.asc")
    lines = good.split(b"\n")
    lines[3] = lines[3][:10] + (b"A" if lines[3][10:11] != b"A" else b"B") + lines[3][11:]
    with open(damaged, "wb") as f:
        f.write(b"\n".join(lines))
    refused(damaged, "checksum")
    truncated = str(tmp_path / "truncated.key")
    binary = gnupg.run("--export-secret-keys", plain).stdout
    with open(truncated, "wb") as f:
        f.write(binary[:60])
    refused(truncated, "truncated")

    # Revoked (GnuPG's own revocation certificate) and expired keys.
    revoked = gnupg.generate("revoked", "ed25519")
    with open(os.path.join(gnupg.home, "openpgp-revocs.d", revoked + ".rev"), "rb") as f:
        cert = f.read().replace(b":-----", b"-----")
    gnupg.run("--import", data=cert)
    refused(gnupg.export_secret(revoked, str(tmp_path / "revoked.asc")), "revoked")
    expired = gnupg.generate("expired", "ed25519", expire="1d", faked_time="20200101T000000")
    refused(gnupg.export_secret(expired, str(tmp_path / "expired.asc")), "expired")


def test_show_and_export_need_a_good_key_file(node, tmp_path):
    path = key_node(node, tmp_path / "node.key")
    for cmd in ("show", "export"):
        r = node.ctl("key", cmd)
        assert r.returncode == 1 and "cannot read" in r.stderr and path in r.stderr, r.stderr
    with open(path, "w") as f:
        f.write("not a key\n")
    for cmd in ("show", "export"):
        r = node.ctl("key", cmd)
        assert r.returncode == 1 and path in r.stderr and r.stdout == "", r.stderr


@pytest.mark.parametrize("setting", [None, ""])
def test_no_key_configured(node, tmp_path, setting):
    if setting is not None:
        node.conf.setdefault("sm", {})["key"] = setting
    node.write_config()
    some = str(tmp_path / "some.asc")
    with open(some, "w") as f:
        f.write("x")
    for args in (["generate"], ["import", some], ["show"], ["export"]):
        r = node.ctl("key", *args)
        assert r.returncode == 1, (args, r.stdout)
        assert "sm.key" in r.stderr, r.stderr
