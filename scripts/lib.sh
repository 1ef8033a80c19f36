# Shell functions shared by scripts/kontalk-dev and scripts/run-tests (sourced,
# not run): Debian packages, configuring a build directory out of tree.
# shellcheck shell=bash disable=SC2034

# Everything needed to build kontalkd and run a node.
KT_BUILD_PACKAGES="build-essential autoconf automake libtool pkg-config libxml2-dev libssl-dev
    libmariadb-dev libconfig-dev mariadb-server mariadb-client openssl python3"
# Added for the tests.
KT_TEST_PACKAGES="python3-pytest python3-slixmpp python3-cryptography valgrind gnupg"

kt_die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

kt_say() {
    echo "==> $*" >&2
}

# Installs the Debian packages of "$@" that are missing, and nothing when all
# are there.  Package installs must not start services (mariadb-server would
# start the system's MariaDB): a policy-rc.d that denies every start is put in
# place for the install and removed afterwards, unless one existed before.
kt_install_packages() {
    local missing=() p sudo=() created_policy=0 rc=0
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || kt_die "missing packages (${missing[*]}) and no apt-get: install them by hand"
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || kt_die "missing packages (${missing[*]}): run as root or install sudo"
        sudo=(sudo)
    fi
    kt_say "installing ${missing[*]}"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# scripts/kontalk-dev|run-tests: no service starts during install\nexit 101\n' |
            "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null &&
            "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d && created_policy=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" || rc=$?
    [ $created_policy -eq 1 ] && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    [ $rc -eq 0 ] || kt_die "apt-get install failed"
}

# kt_configure SRCDIR BUILDDIR FLAGS...: generates configure if needed and
# configures BUILDDIR (again only when FLAGS changed or it never was).
kt_configure() {
    local src=$1 build=$2
    shift 2
    if [ -f "$src/config.status" ]; then
        kt_die "$src is configured in-tree; run 'make distclean' there first (builds here are out of tree)"
    fi
    if [ ! -x "$src/configure" ] || [ "$src/configure.ac" -nt "$src/configure" ]; then
        kt_say "autogen"
        "$src/autogen.sh" || kt_die "autogen.sh failed"
    fi
    mkdir -p "$build" || kt_die "cannot create $build"
    local flags="$*"
    if [ ! -f "$build/Makefile" ] || [ "$(cat "$build/.kt-configure-flags" 2>/dev/null)" != "$flags" ]; then
        kt_say "configure $flags (in $build)"
        (cd "$build" && "$src/configure" -q "$@") || kt_die "configure failed (see $build/config.log)"
        echo "$flags" >"$build/.kt-configure-flags"
    fi
}
