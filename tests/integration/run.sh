#!/bin/sh
# Runs the pytest integration suite and reports it as TAP (one point per test
# case) for automake's tap-driver.  pytest's own output goes to stderr, i.e.
# into tests/integration/run.sh.log.  Nothing is written under $top_srcdir (no
# cache, no bytecode), so it runs from the read-only tree of `make distcheck`.
#
# Environment: top_srcdir, top_builddir, PYTHON3 (set by `make check`);
# KT_PYTEST_ARGS adds pytest arguments (e.g. KT_PYTEST_ARGS="-k startup").

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$(pwd)}"
: "${PYTHON3:=/usr/bin/python3}"
export top_srcdir top_builddir PYTHONDONTWRITEBYTECODE=1

if ! "$PYTHON3" -c 'import pytest, slixmpp' 2>/dev/null; then
    echo "1..0 # SKIP pytest not available (Debian: python3-pytest python3-slixmpp)"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kt-pytest.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
tests="$top_srcdir/tests/integration"

cd "$tmp" || exit 99
# shellcheck disable=SC2086 # KT_PYTEST_ARGS is a list of words on purpose
"$PYTHON3" -m pytest -p no:cacheprovider --rootdir="$tests" --junitxml="$tmp/junit.xml" \
    -o junit_family=xunit1 -o junit_logging=no -q -rfEs $KT_PYTEST_ARGS "$tests" 1>&2
status=$?
"$PYTHON3" "$tests/junit2tap.py" "$tmp/junit.xml" "$status"
