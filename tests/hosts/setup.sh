#!/bin/sh
# Install every GIMP and Krita the host tests run against.  Idempotent and cached:
# when all is in place this only reads a few marker files (well under 1 s).
#
#   the host itself:    Krita (5.1 on Debian 12, 5.2 on Debian 13), PyQt5, Xvfb;
#                       GIMP 3.0 too where apt has GIMP 3 (Debian 13);
#   trixie chroot:      GIMP 3.0.4 and Krita 5.2.9, only where the host's apt has no
#                       GIMP 3 (Debian 12);
#   sid chroot:         GIMP 3.2.6 and Krita 5.3.4.1;
#   experimental:       Krita 6.0.4.1 (Qt6) with PyQt6.
#
# The chroots are built in parallel (downloads and unpacking overlap), each logging
# to $FBCNN_CHROOTS/SUITE.log, shown when it fails.  The chroots' Kritas use the
# host's Xvfb; each GIMP chroot has its own (for xvfb-run and the dialog test).
# Environment: FBCNN_CHROOTS, FBCNN_MIRROR (see chroot.sh).
# See docs/editors-headless.md for why each step is here.
set -eu

SETUP_NAME=setup
. "$(dirname "$0")/chroot.sh"

GIMP_PKGS="gimp xvfb xauth x11-apps imagemagick xdotool"
# python3-pyqt5/6 are only Recommends of krita: name them.
KRITA5_PKGS="krita python3-pyqt5"
KRITA6_PKGS="krita python3-pyqt6"
HOST_PKGS="krita python3-pyqt5 xvfb xauth"

gimp_candidate_major() {
    apt-cache policy gimp 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9]*\).*/\1/p' | head -n1
}

missing_on_host() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || printf ' %s' "$pkg"
    done
}

# The host: GIMP natively where its apt has GIMP 3 (a Debian 13 host).  A Debian
# 12 host gets debootstrap instead, for the trixie chroot.
if dpkg-query -W -f='${Version}' gimp 2>/dev/null | grep -q '^3'; then
    native_gimp=yes
elif [ -n "$(missing_on_host $HOST_PKGS)" ] || ! command -v debootstrap >/dev/null 2>&1; then
    # apt-cache needs fresh lists on a new machine before it can tell.
    as_root apt-get update -q >&2
    major=$(gimp_candidate_major)
    if [ -n "$major" ] && [ "$major" -ge 3 ]; then native_gimp=yes; else native_gimp=no; fi
else
    native_gimp=no
fi
wanted=$HOST_PKGS
if [ "$native_gimp" = yes ]; then wanted="$wanted $GIMP_PKGS"; else wanted="$wanted debootstrap"; fi
missing=$(missing_on_host $wanted)
if [ -n "$missing" ]; then
    log "installing on the host:$missing"
    as_root apt-get update -q >&2
    # shellcheck disable=SC2086
    as_root apt-get install -y -q $missing >&2
fi

# SUITE "PKGS" CHECK...: one chroot, built in the background unless it is ready.
pids=""
build() {
    local suite=$1 pkgs=$2
    chroot_ready "$suite" "$pkgs" && return 0
    as_root mkdir -p "$CHROOTS_DIR"
    log "building the $suite chroot ($pkgs); log: $(chroot_root "$suite").log"
    (
        started=$(date +%s)
        chroot_install "$@" > "$(chroot_root "$suite").log" 2>&1 || {
            log "the $suite chroot failed; its log:"; tail -n 60 "$(chroot_root "$suite").log" >&2
            exit 1
        }
        log "the $suite chroot is ready after $(( $(date +%s) - started )) s," \
            "$(du -sm "$(chroot_root "$suite")" | cut -f1) MB"
    ) &
    pids="$pids $!"
}

if [ "$native_gimp" = no ]; then
    build trixie "$GIMP_PKGS $KRITA5_PKGS" gimp-console-3 --version
fi
build sid "$GIMP_PKGS $KRITA5_PKGS" gimp-console-3 --version
build experimental "$KRITA6_PKGS" python3 -c 'import PyQt6.QtWidgets'
failed=0
for pid in $pids; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || { log "a chroot failed to build (see above)"; exit 1; }

# What is in place now, one line per editor build.
upstream() { v=${1#*:}; v=${v%-*}; v=${v%%+*}; echo "${v:-none}"; }
echo "host: gimp $(upstream "$(dpkg-query -W -f='${Version}' gimp 2>/dev/null || true)")" \
     "krita $(upstream "$(dpkg-query -W -f='${Version}' krita 2>/dev/null || true)")"
for suite in trixie sid experimental; do
    [ -d "$(chroot_root "$suite")" ] || continue
    echo "$suite: gimp $(upstream "$(chroot_pkg_version "$suite" gimp)")" \
         "krita $(upstream "$(chroot_pkg_version "$suite" krita)")"
done
