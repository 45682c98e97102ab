#!/bin/sh
# Install a GIMP 3 that the GIMP tests can drive headless.  Idempotent.
#
#   Debian 13 (apt candidate gimp >= 3): apt-get install gimp natively.
#   Debian 12 (apt has only 2.10):       the shared, cached Debian 13 chroot
#                                        (tests/hosts/chroot.sh), with GIMP in it.
#
# Environment:
#   FBCNN_GIMP_SETUP   "native" or "chroot" forces the variant
#   FBCNN_CHROOT, FBCNN_MIRROR: see chroot.sh
#
# The last line printed is "gimp: native" or "gimp: chroot <path>".
# See ../shared/notes/gimp3-headless.md for why every step is here.
set -eu

SETUP_NAME=setup_gimp
. "$(dirname "$0")/chroot.sh"
# Bump when the package list below changes, so old chroots get completed.
MARKER_VERSION=3
PKGS="gimp xvfb xauth x11-apps imagemagick xdotool"

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
if [ "${FBCNN_GIMP_SETUP:-}" != native ] && chroot_ready gimp "$MARKER_VERSION"; then
    echo "gimp: chroot $CHROOT_ROOT"; exit 0
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

chroot_install gimp "$MARKER_VERSION" "$PKGS" gimp-console-3.0 --version
echo "gimp: chroot $CHROOT_ROOT"
