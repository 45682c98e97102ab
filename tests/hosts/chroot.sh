# Cached Debian chroots that hold the editor versions the host can't install itself.
# Sourced, not run.  One chroot per suite, under $FBCNN_CHROOTS/SUITE:
#
#   trixie        GIMP 3.0 and Krita 5.2 (only on Debian 12 hosts)
#   sid           GIMP 3.2 and Krita 5.3 (one chroot for both, to save a gigabyte)
#   experimental  Krita 6 with PyQt6 (Krita 6 can't be installed beside 5.3)
#
# A chroot is finished when its marker "$ROOT/.fbcnn-ready" holds the package list
# it was built for: a changed list completes an old chroot, an unchanged one costs
# one file read.  tests/hosts/chroot.py runs programs inside.
#
# Environment:
#   FBCNN_CHROOTS  where the chroots live (default /var/cache/fbcnn-hosts; cached
#                  outside the repo, because CI clones fresh)
#   FBCNN_MIRROR   Debian mirror (default: the one in the host's apt sources)
#
# The caller sets SETUP_NAME (the prefix of log lines) before sourcing.  Needs a
# shell with `local` (bash, dash).

CHROOTS_DIR=${FBCNN_CHROOTS:-/var/cache/fbcnn-hosts}
export DEBIAN_FRONTEND=noninteractive

log() { echo "${SETUP_NAME:-setup}: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

chroot_root() { echo "$CHROOTS_DIR/$1"; }

# chroot_ready SUITE PKGS: the chroot was finished for exactly this package list.
chroot_ready() {
    local marker
    marker="$(chroot_root "$1")/.fbcnn-ready"
    [ -f "$marker" ] && [ "$(cat "$marker")" = "$2" ]
}

# chroot_pkg_version SUITE PKG: the version of PKG installed there ("" if none),
# read from its dpkg database without entering it.
chroot_pkg_version() {
    dpkg-query --admindir="$(chroot_root "$1")/var/lib/dpkg" -W -f='${Version}' "$2" \
        2>/dev/null || true
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

# in_chroot SUITE CMD...: run a command inside as root, with /proc, in a private
# mount namespace so that nothing stays mounted afterwards.
in_chroot() {
    local root
    root=$(chroot_root "$1")
    shift
    as_root unshare -m --propagation private sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc"
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive HOME=/root "$@"' sh "$root" "$@"
}

# Serialise every apt/debootstrap step on one chroot (parallel setups, and the
# installer's tests, may reach for it at once).  Held on fd 9 until the calling
# (sub)shell exits, so run each chroot's build in its own subshell.
chroot_lock() {
    as_root mkdir -p "$CHROOTS_DIR"
    if [ "$(id -u)" = 0 ] && command -v flock >/dev/null 2>&1; then
        exec 9>"$(chroot_root "$1").lock"
        flock 9
    fi
}

# The apt sources of each suite.  sid and experimental have no -updates or
# -security suites.
suite_sources() {
    local mirror=$1 suite=$2 security
    case "$suite" in
        sid) echo "deb $mirror sid main" ;;
        experimental) printf 'deb %s sid main\ndeb %s experimental main\n' "$mirror" "$mirror" ;;
        *)
            security=$(echo "$mirror" | sed 's#/debian/*$#/debian-security#')
            printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
                "$mirror" "$suite" "$mirror" "$suite" "$security" "$suite" ;;
    esac
}

chroot_bootstrap() {
    local suite=$1 root mirror base
    root=$(chroot_root "$suite")
    mirror=$(host_mirror)
    # experimental is not a whole distribution: start from sid and add it.
    base=$suite
    [ "$suite" = experimental ] && base=sid
    if [ ! -f "$root/.fbcnn-debootstrap-done" ]; then
        command -v debootstrap >/dev/null 2>&1 || as_root apt-get install -y debootstrap
        # A debootstrap cut short is not worth repairing: start it over.
        log "debootstrap $base into $root from $mirror"
        as_root rm -rf "$root"
        as_root debootstrap --variant=minbase "$base" "$root" "$mirror"
        as_root touch "$root/.fbcnn-debootstrap-done"
    fi
    suite_sources "$mirror" "$suite" | as_root sh -c "cat > '$root/etc/apt/sources.list'"
    # The mirror serves a frozen snapshot whose Release files are past their
    # Valid-Until date; apt refuses those unless told not to check.
    as_root sh -c "echo 'Acquire::Check-Valid-Until \"false\";' \
        > '$root/etc/apt/apt.conf.d/99fbcnn-snapshot'"
    # No daemons may start inside the chroot.
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > '$root/usr/sbin/policy-rc.d'"
    as_root chmod 755 "$root/usr/sbin/policy-rc.d"
    as_root cp -L /etc/resolv.conf "$root/etc/resolv.conf"
}

# chroot_install SUITE "PKGS" CHECK...: build the chroot if needed, install PKGS
# (no Recommends; from experimental where SUITE is experimental) into it, run CHECK
# inside it, then write the marker.
chroot_install() {
    local suite=$1 pkgs=$2 root target=""
    shift 2
    root=$(chroot_root "$suite")
    chroot_lock "$suite"
    if chroot_ready "$suite" "$pkgs"; then return 0; fi   # another run finished it
    chroot_bootstrap "$suite"
    [ "$suite" = experimental ] && target="-t experimental"
    log "installing $pkgs in the $suite chroot"
    in_chroot "$suite" dpkg --configure -a          # recover an interrupted earlier run
    in_chroot "$suite" apt-get update -qq
    # shellcheck disable=SC2086
    in_chroot "$suite" apt-get install -y -q --no-install-recommends $target $pkgs
    in_chroot "$suite" apt-get clean
    in_chroot "$suite" "$@" >&2
    as_root sh -c "echo '$pkgs' > '$root/.fbcnn-ready'"
}
