#!/bin/sh
# Install a GIMP 3 that the GIMP tests can drive headless.  Idempotent.
#
#   Debian 13 (apt candidate gimp >= 3): apt-get install gimp natively.
#   Debian 12 (apt has only 2.10):       a Debian 13 chroot built with debootstrap,
#                                        cached outside the repo (CI clones fresh).
#
# Environment:
#   FBCNN_GIMP_CHROOT  chroot location (default /var/cache/fbcnn-hosts/gimp-trixie)
#   FBCNN_GIMP_MIRROR  Debian mirror (default: the one in the host's apt sources)
#   FBCNN_GIMP_SETUP   "native" or "chroot" forces the variant
#
# The last line printed is "gimp: native" or "gimp: chroot <path>".
# See ../shared/notes/gimp3-headless.md for why every step is here.
set -eu

ROOT=${FBCNN_GIMP_CHROOT:-/var/cache/fbcnn-hosts/gimp-trixie}
MARKER="$ROOT/.fbcnn-gimp-ready"
# Bump when the package list below changes, so old chroots get completed.
MARKER_VERSION=3
PKGS="gimp xvfb xauth x11-apps imagemagick xdotool"
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup_gimp: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

native_gimp_ok() {
    command -v gimp-console-3.0 >/dev/null 2>&1
}

candidate_major() {
    apt-cache policy gimp 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9]*\).*/\1/p' | head -n1
}

# --- fast paths: already done -------------------------------------------------
if [ "${FBCNN_GIMP_SETUP:-}" != chroot ] && native_gimp_ok; then
    echo "gimp: native"; exit 0
fi
if [ "${FBCNN_GIMP_SETUP:-}" != native ] && [ -f "$MARKER" ] \
        && [ "$(cat "$MARKER")" = "$MARKER_VERSION" ]; then
    echo "gimp: chroot $ROOT"; exit 0
fi

# --- choose -----------------------------------------------------------------
mode=${FBCNN_GIMP_SETUP:-}
if [ -z "$mode" ]; then
    major=$(candidate_major)
    if [ -n "$major" ] && [ "$major" -ge 3 ]; then mode=native; else mode=chroot; fi
fi

if [ "$mode" = native ]; then
    log "installing GIMP 3 from apt"
    as_root apt-get update -qq
    as_root apt-get install -y --no-install-recommends $PKGS
    native_gimp_ok || { log "gimp-console-3.0 missing after install"; exit 1; }
    echo "gimp: native"; exit 0
fi

# --- chroot ------------------------------------------------------------------
command -v debootstrap >/dev/null 2>&1 || as_root apt-get install -y debootstrap

mirror=${FBCNN_GIMP_MIRROR:-}
if [ -z "$mirror" ]; then
    # The Debian mirror the host already uses (deb822 "URIs:" or one-line "deb").
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                 /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | grep -Eo 'https?://[^ ]*/debian/?( |$)' | grep -v security \
             | head -n1 | tr -d ' ')
    mirror=${mirror:-http://deb.debian.org/debian}
fi
security=$(echo "$mirror" | sed 's#/debian/*$#/debian-security#')

as_root mkdir -p "$(dirname "$ROOT")"
# One setup at a time (tests/run.sh and the installer's tests may both call us).
if [ "$(id -u)" = 0 ] && command -v flock >/dev/null 2>&1; then
    exec 9>"$ROOT.lock"
    flock 9
    if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$MARKER_VERSION" ]; then
        echo "gimp: chroot $ROOT"; exit 0     # another run finished it meanwhile
    fi
fi
if [ ! -f "$ROOT/.fbcnn-debootstrap-done" ]; then
    # A debootstrap cut short is not worth repairing: start it over.
    log "debootstrap trixie into $ROOT from $mirror"
    as_root rm -rf "$ROOT"
    as_root debootstrap --variant=minbase trixie "$ROOT" "$mirror"
    as_root touch "$ROOT/.fbcnn-debootstrap-done"
fi

as_root sh -c "cat > '$ROOT/etc/apt/sources.list'" <<SRC
deb $mirror trixie main
deb $mirror trixie-updates main
deb $security trixie-security main
SRC
# No daemons may start inside the chroot.
as_root sh -c "printf '#!/bin/sh\nexit 101\n' > '$ROOT/usr/sbin/policy-rc.d'"
as_root chmod 755 "$ROOT/usr/sbin/policy-rc.d"
as_root cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

in_root() {
    as_root unshare -m --propagation private sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc"
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive HOME=/root "$@"' sh "$ROOT" "$@"
}

log "installing $PKGS in the chroot"
in_root dpkg --configure -a          # recover an interrupted earlier run
in_root apt-get update -qq
in_root apt-get install -y --no-install-recommends $PKGS
in_root apt-get clean
in_root gimp-console-3.0 --version >&2

as_root sh -c "echo $MARKER_VERSION > '$MARKER'"
echo "gimp: chroot $ROOT"
