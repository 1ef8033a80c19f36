"""The client side of Kontalk key accounts, built from independent tools: GnuPG makes and
certifies the OpenPGP keys, python3-cryptography holds the private key, and the X.509 bridge
certificate (kontalk-protocol.md §2.2) is written here in DER by hand, because Debian 12's
cryptography cannot encode the extension's OID (its last arc is a 128-bit number).

A bridge certificate looks like the ones real clients make: self-signed with SHA-1, marked CA,
notAfter equal to notBefore for a key that never expires, the keyring in extension
2.25.49058212633447845622587297037800555803 as an OCTET STRING wrapping a BIT STRING."""

import base64
import datetime
import hashlib
import os
import subprocess

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

BRIDGE_OID = "2.25.49058212633447845622587297037800555803"


def phone_local(e164):
    """The Kontalk localpart of an E.164 number: lowercase hex SHA-1 (kontalk-protocol.md §3)."""
    return hashlib.sha1(e164.encode()).hexdigest()


# -- GnuPG ----------------------------------------------------------------------

class GnuPG:
    """A private GnuPG home; keys without passphrase."""

    def __init__(self, home):
        self.home = str(home)
        os.makedirs(self.home, mode=0o700, exist_ok=True)

    def run(self, *args, input_=None, check=True):
        cmd = ["gpg", "--homedir", self.home, "--batch", "--quiet", "--no-tty", "--passphrase=",
               "--pinentry-mode", "loopback"] + list(args)
        r = subprocess.run(cmd, input=input_, capture_output=True, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.decode(errors="replace")))
        return r.stdout

    def close(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"],
                       capture_output=True, timeout=30)

    def fingerprint(self, spec):
        out = self.run("--with-colons", "--fingerprint", spec).decode()
        return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")][0]

    def generate(self, uid, algo="rsa2048", usage="sign,cert", expire="never", faked_time=None):
        extra = ["--faked-system-time", faked_time] if faked_time else []
        out = self.run(*extra, "--yes", "--status-fd", "1", "--quick-gen-key", uid, algo, usage,
                       expire).decode()
        return [line.split()[3] for line in out.splitlines() if "KEY_CREATED" in line][0]

    def export(self, fpr, armor=False):
        return self.run(*(["--armor"] if armor else []), "--export", fpr)

    def export_secret(self, fpr, armor=False):
        return self.run(*(["--armor"] if armor else []), "--export-secret-keys", fpr)

    def certify(self, signer_fpr, fpr):
        """signer certifies every UID of fpr (what the node does at registration)."""
        self.run("--default-key", signer_fpr, "--quick-sign-key", fpr)

    def revoke(self, fpr):
        """Imports the revocation certificate GnuPG made at generation."""
        path = os.path.join(self.home, "openpgp-revocs.d", fpr + ".rev")
        with open(path) as f:
            text = f.read().replace(":-----BEGIN", "-----BEGIN")
        self.run("--import", input_=text.encode())

    def show(self, keyring):
        """Fingerprints of a keyring (binary or armored), as GnuPG reads it."""
        out = subprocess.run(["gpg", "--homedir", self.home, "--batch", "--with-colons",
                              "--import-options", "show-only", "--import"], input=keyring,
                             capture_output=True, timeout=60).stdout.decode()
        return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


# -- OpenPGP secret keys -> cryptography ------------------------------------------

def _packets(data):
    """(tag, body) of each OpenPGP packet (RFC 4880 §4.2; no partial lengths in keys)."""
    i = 0
    while i < len(data):
        hdr = data[i]
        if hdr & 0x40:  # new format
            tag = hdr & 0x3f
            o = data[i + 1]
            if o < 192:
                n, i = o, i + 2
            elif o < 224:
                n, i = ((o - 192) << 8) + data[i + 2] + 192, i + 3
            else:
                n, i = int.from_bytes(data[i + 2:i + 6], "big"), i + 6
        else:
            tag = (hdr >> 2) & 0x0f
            lt = hdr & 3
            size = {0: 1, 1: 2, 2: 4}[lt]
            n, i = int.from_bytes(data[i + 1:i + 1 + size], "big"), i + 1 + size
        yield tag, data[i:i + n]
        i += n


def _mpi(body, off):
    bits = int.from_bytes(body[off:off + 2], "big")
    n = (bits + 7) // 8
    return int.from_bytes(body[off + 2:off + 2 + n], "big"), off + 2 + n


def rsa_private_key(secret_export):
    """The RSA private key of the primary secret-key packet of a GnuPG export."""
    for tag, body in _packets(secret_export):
        if tag != 5:
            continue
        assert body[0] == 4 and body[5] in (1, 3), "not a v4 RSA key"
        off = 6
        n, off = _mpi(body, off)
        e, off = _mpi(body, off)
        assert body[off] == 0, "protected secret key"
        off += 1
        d, off = _mpi(body, off)
        p, off = _mpi(body, off)
        q, off = _mpi(body, off)
        pub = rsa.RSAPublicNumbers(e, n)
        priv = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                     rsa.rsa_crt_iqmp(p, q), pub)
        return priv.private_key()
    raise ValueError("no secret key packet")


# -- DER --------------------------------------------------------------------------

def _len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der(tag, content):
    return bytes([tag]) + _len(len(content)) + content


def seq(*items):
    return der(0x30, b"".join(items))


def der_int(v):
    b = v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)
    return der(0x02, b)


def der_oid(text):
    arcs = [int(a) for a in text.split(".")]
    out = bytes([arcs[0] * 40 + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7f]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7f))
            a >>= 7
        out += bytes(reversed(chunk))
    return der(0x06, out)


def der_time(t):
    if 1950 <= t.year < 2050:
        return der(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return der(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


def der_name(cns):
    rdns = [der(0x31, seq(der_oid("2.5.4.10"), der(0x0c, b"OpenPGP to X.509 Bridge")))]
    for cn in cns:
        rdns.append(der(0x31, seq(der_oid("2.5.4.3"), der(0x0c, cn.encode()))))
    return seq(*rdns)


def bridge_certificate(private_key, keyring, uids, not_before, not_after=None,
                       cert_key=None):
    """A self-signed (SHA-1) X.509 bridge certificate in PEM carrying keyring.

    private_key signs; cert_key (default: private_key) is the key the certificate names, so a
    test can make a certificate whose key is not the OpenPGP key. not_after defaults to
    not_before, as real clients write it for keys that never expire."""
    cert_key = cert_key or private_key
    spki = cert_key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    sha1_rsa = seq(der_oid("1.2.840.113549.1.1.5"), der(0x05, b""))
    name = der_name(uids)
    bridge_value = der(0x03, b"\x00" + keyring)  # BIT STRING, no unused bits
    extensions = seq(
        seq(der_oid("2.5.29.19"), der(0x01, b"\xff"), der(0x04, seq(der(0x01, b"\xff")))),
        seq(der_oid(BRIDGE_OID), der(0x04, bridge_value)),
    )
    tbs = seq(
        der(0xa0, der_int(2)),
        der_int(int.from_bytes(os.urandom(8), "big")),
        sha1_rsa,
        name,
        seq(der_time(not_before), der_time(not_after or not_before)),
        name,
        spki,
        der(0xa3, extensions),
    )
    signature = private_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    cert = seq(tbs, sha1_rsa, der(0x03, b"\x00" + signature))
    b64 = base64.encodebytes(cert).decode().replace("\n", "")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) +
            "\n-----END CERTIFICATE-----\n").encode()


def key_pem(private_key):
    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


class KeyUser:
    """A Kontalk user: a GnuPG key with UID 'Name <local@domain>' and its bridge certificate
    files (cert, key) for kt.xmpp.Client(cert=...)."""

    def __init__(self, gpg, directory, local, domain, certifier=None, algo="rsa2048",
                 expire="never", faked_time=None, cert_key=None):
        self.gpg = gpg
        self.local = local
        self.uid = "Test User <%s@%s>" % (local, domain)
        self.fpr = gpg.generate(self.uid, algo=algo, expire=expire, faked_time=faked_time)
        if certifier:
            gpg.certify(certifier, self.fpr)
        self.directory = str(directory)
        self.private_key = rsa_private_key(gpg.export_secret(self.fpr))
        self.cert_key = cert_key
        self.write_cert()

    @property
    def keyring(self):
        return self.gpg.export(self.fpr)

    def write_cert(self, keyring=None):
        created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        pem = bridge_certificate(self.private_key,
                                 self.keyring if keyring is None else keyring, [self.uid],
                                 created - datetime.timedelta(days=1), cert_key=self.cert_key)
        self.cert = os.path.join(self.directory, self.fpr + ".crt")
        self.key = os.path.join(self.directory, self.fpr + ".key")
        with open(self.cert, "wb") as f:
            f.write(pem)
        with open(self.key, "wb") as f:
            f.write(key_pem(self.cert_key or self.private_key))
        return self.cert, self.key

    @property
    def files(self):
        return self.cert, self.key
