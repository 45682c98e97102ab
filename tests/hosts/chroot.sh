# One cached Debian 13 (trixie) chroot, shared by setup_gimp.sh and setup_krita.sh.
# Sourced, not run.  Each user installs its own packages into it and keeps its own
# marker file, "$CHROOT_ROOT/.fbcnn-NAME-ready", holding the version of its package
# list: a bumped version completes an old chroot, and one tool's setup never
# invalidates the other's.  tests/hosts/chroot.py runs programs inside it.
#
# Environment:
#   FBCNN_CHROOT  chroot location (default /var/cache/fbcnn-hosts/trixie; cached
#                 outside the repo, because CI clones fresh)
#   FBCNN_MIRROR  Debian mirror (default: the one in the host's apt sources)
#
# The caller sets SETUP_NAME (the prefix of log lines) before sourcing.  Needs a
# shell with `local` (bash, dash).

CHROOT_ROOT=${FBCNN_CHROOT:-/var/cache/fbcnn-hosts/trixie}
export DEBIAN_FRONTEND=noninteractive

log() { echo "${SETUP_NAME:-setup}: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# chroot_ready NAME VERSION: NAME's packages are in the chroot at that list version.
chroot_ready() {
    [ -f "$CHROOT_ROOT/.fbcnn-$1-ready" ] && [ "$(cat "$CHROOT_ROOT/.fbcnn-$1-ready")" = "$2" ]
}

# chroot_pkg_version PKG: the version of PKG installed in the chroot ("" if none),
# read from its dpkg database without entering it.
chroot_pkg_version() {
    dpkg-query --admindir="$CHROOT_ROOT/var/lib/dpkg" -W -f='${Version}' "$1" 2>/dev/null || true
}

host_mirror() {
    if [ -n "${FBCNN_MIRROR:-}" ]; then echo "$FBCNN_MIRROR"; return; fi
    # The Debian mirror the host already uses (deb822 "URIs:" or one-line "deb").
    local mirror
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                 /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | grep -Eo 'https?://[^ ]*/debian/?( |$)' | grep -v security \
             | head -n1 | tr -d ' ')
    echo "${mirror:-http://deb.debian.org/debian}"
}

# Run a command inside the chroot as root, with /proc, in a private mount
# namespace so that nothing stays mounted afterwards.
in_chroot() {
    as_root unshare -m --propagation private sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc"
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive HOME=/root "$@"' sh "$CHROOT_ROOT" "$@"
}

# Serialise every apt/debootstrap step on the chroot (setup_gimp.sh, setup_krita.sh
# and the installer's tests may run at once).  Held until the calling script exits.
chroot_lock() {
    as_root mkdir -p "$(dirname "$CHROOT_ROOT")"
    if [ "$(id -u)" = 0 ] && command -v flock >/dev/null 2>&1; then
        exec 9>"$CHROOT_ROOT.lock"
        flock 9
    fi
}

chroot_bootstrap() {
    local mirror security
    mirror=$(host_mirror)
    if [ ! -f "$CHROOT_ROOT/.fbcnn-debootstrap-done" ]; then
        command -v debootstrap >/dev/null 2>&1 || as_root apt-get install -y debootstrap
        # A debootstrap cut short is not worth repairing: start it over.
        log "debootstrap trixie into $CHROOT_ROOT from $mirror"
        as_root rm -rf "$CHROOT_ROOT"
        as_root debootstrap --variant=minbase trixie "$CHROOT_ROOT" "$mirror"
        as_root touch "$CHROOT_ROOT/.fbcnn-debootstrap-done"
    fi
    security=$(echo "$mirror" | sed 's#/debian/*$#/debian-security#')
    as_root sh -c "cat > '$CHROOT_ROOT/etc/apt/sources.list'" <<SRC
deb $mirror trixie main
deb $mirror trixie-updates main
deb $security trixie-security main
SRC
    # No daemons may start inside the chroot.
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > '$CHROOT_ROOT/usr/sbin/policy-rc.d'"
    as_root chmod 755 "$CHROOT_ROOT/usr/sbin/policy-rc.d"
    as_root cp -L /etc/resolv.conf "$CHROOT_ROOT/etc/resolv.conf"
}

# chroot_install NAME VERSION "PKGS" CHECK...: build the chroot if needed, install
# PKGS (no Recommends) into it, run CHECK inside it, then write NAME's marker.
chroot_install() {
    local name=$1 version=$2 pkgs=$3
    shift 3
    chroot_lock
    if chroot_ready "$name" "$version"; then return 0; fi   # another run finished it
    chroot_bootstrap
    log "installing $pkgs in the chroot"
    in_chroot dpkg --configure -a          # recover an interrupted earlier run
    in_chroot apt-get update -qq
    # shellcheck disable=SC2086
    in_chroot apt-get install -y --no-install-recommends $pkgs
    in_chroot apt-get clean
    in_chroot "$@" >&2
    as_root sh -c "echo $version > '$CHROOT_ROOT/.fbcnn-$name-ready'"
}
