#!/bin/sh
# Regenerates the OpenPGP fixtures of tests/unit/test-openpgp.c with GnuPG
# (Debian package gnupg) and python3 (only to flip one byte). The outputs are
# committed, so the tests never need GnuPG. Run from anywhere:
#   sh tests/data/openpgp/make-fixtures.sh
# Each key NAME is written as NAME.asc (armored) and NAME.gpg (binary);
# fingerprints.txt lists "NAME PRIMARY-FPR [SUBKEY-FPR ...]" as gpg prints them.
set -eu
out=$(cd "$(dirname "$0")" && pwd)
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
G="gpg --batch --quiet --no-greeting --no-tty --passphrase= --pinentry-mode loopback"

uid() { echo "Test $1 <$2@kontalk.test>"; }
fpr_of() { gpg --with-colons --fingerprint "$1" | awk -F: '$1=="fpr"{print $10; exit}'; }
fprs_of() { gpg --with-colons --fingerprint --fingerprint "$1" | awk -F: '$1=="fpr"{printf "%s%s", s, $10; s=" "} END{print ""}'; }
export_key() { # NAME KEYSPEC [extra export options]
    name=$1; spec=$2; shift 2
    $G "$@" --export "$spec" > "$out/$name.gpg"
    $G "$@" --armor --export "$spec" > "$out/$name.asc"
    echo "$name $(fprs_of "$spec")" >> "$out/fingerprints.txt"
}
: > "$out/fingerprints.txt"

U1=4bdd4f929f3a1062253e4e496bafba0bdfb5db75
# RSA-2048 primary, SHA-256 self-signature.
$G --cert-digest-algo SHA256 --quick-gen-key "$(uid rsa $U1)" rsa2048 sign,cert never
export_key rsa "$(uid rsa $U1)"
# Ed25519 primary (EdDSA), SHA-512 self-signature.
$G --cert-digest-algo SHA512 --quick-gen-key "$(uid ed25519 $U1)" ed25519 sign,cert never
export_key ed25519 "$(uid ed25519 $U1)"
# DSA-2048 primary.
$G --quick-gen-key "$(uid dsa $U1)" dsa2048 sign,cert never
export_key dsa "$(uid dsa $U1)"
# ECDSA P-384 and P-521 primaries.
$G --quick-gen-key "$(uid p384 $U1)" nistp384 sign,cert never
export_key p384 "$(uid p384 $U1)"
$G --quick-gen-key "$(uid p521 $U1)" nistp521 sign,cert never
export_key p521 "$(uid p521 $U1)"
# Like Kontalk's Android clients: RSA-2048 master, ECDH P-256 encryption and
# ECDSA P-256 signing subkeys; SHA-1 self-signature and encryption binding
# as old clients made (GnuPG refuses SHA-1 for the ECDSA back-signature).
$G --cert-digest-algo SHA1 --quick-gen-key "$(uid android $U1)" rsa2048 cert never
F=$(fpr_of "$(uid android $U1)")
$G --cert-digest-algo SHA1 --quick-add-key "$F" nistp256 encr never
$G --quick-add-key "$F" nistp256/ecdsa sign never
export_key android "$F"
# A revoked key: GnuPG leaves a revocation certificate in openpgp-revocs.d.
$G --quick-gen-key "$(uid revoked $U1)" ed25519 sign,cert never
F=$(fpr_of "$(uid revoked $U1)")
sed 's/^:-----/-----/' "$GNUPGHOME/openpgp-revocs.d/$F.rev" > "$GNUPGHOME/rev.asc"
$G --import "$GNUPGHOME/rev.asc"
export_key revoked "$F"
# An expired key: created on 2020-01-01 and valid for one day.
$G --faked-system-time 20200101T000000 --quick-gen-key "$(uid expired $U1)" ed25519 sign,cert 1d
export_key expired "$(uid expired $U1)"
# A node key and a user key whose UID the node certifies; a second user key
# that it does not certify. Both nodes certify with SHA-512 (GnuPG 2.2
# prefers it for certifications).
$G --quick-gen-key "$(uid node node)" rsa2048 sign,cert never
NODE=$(fpr_of "$(uid node node)")
export_key node "$NODE"
$G --quick-gen-key "$(uid user $U1)" rsa2048 sign,cert never
USER=$(fpr_of "$(uid user $U1)")
$G --default-key "$NODE" --quick-sign-key "$USER" >/dev/null
$G --quick-gen-key "$(uid node2 node2)" ed25519 sign,cert never
NODE2=$(fpr_of "$(uid node2 node2)")
export_key node2 "$NODE2"
$G --cert-digest-algo SHA512 --default-key "$NODE2" --quick-sign-key "$USER" >/dev/null
export_key certified "$USER"
$G --quick-gen-key "$(uid stranger $U1)" ed25519 sign,cert never
export_key uncertified "$(uid stranger $U1)"
# A copy of rsa.gpg whose UID self-signature has one byte of its MPI flipped.
python3 - "$out/rsa.gpg" "$out/tampered.gpg" <<'PY'
import sys
data = bytearray(open(sys.argv[1], 'rb').read())
off = 0
while off < len(data):
    b = data[off]
    if b & 0x40:                       # new format (GnuPG uses it for some)
        tag = b & 0x3f; l = data[off + 1]; hl = 2
        if 192 <= l < 224:
            l = ((l - 192) << 8) + data[off + 2] + 192; hl = 3
        elif l == 255:
            l = int.from_bytes(data[off + 2:off + 6], 'big'); hl = 6
    else:
        tag = (b >> 2) & 0xf; lt = b & 3; n = (1, 2, 4)[lt]
        l = int.from_bytes(data[off + 1:off + 1 + n], 'big'); hl = 1 + n
    if tag == 2:                       # first signature: the UID self-signature
        data[off + hl + l - 10] ^= 0x01
        break
    off += hl + l
open(sys.argv[2], 'wb').write(data)
PY
echo "tampered $(awk '$1=="rsa"{$1=""; print substr($0, 2)}' "$out/fingerprints.txt")" >> "$out/fingerprints.txt"
