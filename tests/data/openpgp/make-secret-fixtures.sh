#!/bin/sh
# Makes the secret-key fixtures of tests/unit/test-openpgp.c with GnuPG
# (Debian package gnupg), apart from make-fixtures.sh so that the public
# fixtures stay as they are. The outputs are committed. Run from anywhere:
#   sh tests/data/openpgp/make-secret-fixtures.sh
# Each key NAME is written as NAME.asc (armored --export-secret-keys),
# NAME.gpg (binary) and NAME.pub.gpg (its public --export), and listed in
# secret-fingerprints.txt as "NAME PRIMARY-FPR [SUBKEY-FPR ...]".
# secret-*: exported with an empty passphrase (unprotected);
# protected-*: exported with the passphrase "kontalk".
set -eu
out=$(cd "$(dirname "$0")" && pwd)
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
G="gpg --batch --quiet --no-greeting --no-tty --pinentry-mode loopback"

uid() { echo "Test $1 <$1@kontalk.test>"; }
fpr_of() { gpg --with-colons --fingerprint "$1" | awk -F: '$1=="fpr"{print $10; exit}'; }
fprs_of() { gpg --with-colons --fingerprint --fingerprint "$1" | awk -F: '$1=="fpr"{printf "%s%s", s, $10; s=" "} END{print ""}'; }
export_secret() { # NAME KEYSPEC PASSPHRASE
    $G --passphrase "$3" --export-secret-keys "$2" > "$out/$1.gpg"
    $G --passphrase "$3" --armor --export-secret-keys "$2" > "$out/$1.asc"
    $G --export "$2" > "$out/$1.pub.gpg"
    echo "$1 $(fprs_of "$2")" >> "$out/secret-fingerprints.txt"
}
: > "$out/secret-fingerprints.txt"

# RSA-2048 certify+sign primary, no subkey.
$G --passphrase '' --quick-gen-key "$(uid secret-rsa)" rsa2048 sign,cert never
export_secret secret-rsa "$(uid secret-rsa)" ''
# Ed25519 primary with a Curve25519 encryption subkey (GnuPG's default shape).
$G --passphrase '' --quick-gen-key "$(uid secret-ed25519)" ed25519 sign,cert never
F=$(fpr_of "$(uid secret-ed25519)")
$G --passphrase '' --quick-add-key "$F" cv25519 encr never
export_secret secret-ed25519 "$F" ''
# ECDSA P-256 primary.
$G --passphrase '' --quick-gen-key "$(uid secret-p256)" nistp256 sign,cert never
export_secret secret-p256 "$(uid secret-p256)" ''
# The same shapes behind a passphrase.
$G --passphrase kontalk --quick-gen-key "$(uid protected-rsa)" rsa2048 sign,cert never
export_secret protected-rsa "$(uid protected-rsa)" kontalk
$G --passphrase kontalk --quick-gen-key "$(uid protected-ed25519)" ed25519 sign,cert never
F=$(fpr_of "$(uid protected-ed25519)")
$G --passphrase kontalk --quick-add-key "$F" cv25519 encr never
export_secret protected-ed25519 "$F" kontalk
