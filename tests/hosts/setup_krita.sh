#!/bin/sh
# Install the Krita(s) the Krita tests run against.  Idempotent and cached: when all
# is in place this only reads dpkg databases (well under 1 s).
#
#   always:                     the host's own Krita, python3-pyqt5, Xvfb, xauth (apt);
#   native Krita older than 5.2 (Debian 12: 5.1): also Krita 5.2 from Debian 13, in the
#                               shared, cached chroot (tests/hosts/chroot.sh).  It uses
#                               the host's Xvfb, so only Krita and PyQt5 go in.
#
# Environment:
#   FBCNN_KRITA_CHROOT  "auto" (default), "yes" (also on a 5.2 host) or "no" (never)
#   FBCNN_CHROOT, FBCNN_MIRROR: see chroot.sh
#
# The last line printed is "krita: native VERSION" plus ", chroot VERSION PATH"
# when the chroot has one.  See ../shared/notes/krita-headless.md.
set -eu

SETUP_NAME=setup_krita
. "$(dirname "$0")/chroot.sh"
NATIVE_PKGS="krita python3-pyqt5 xvfb xauth"
# python3-pyqt5 is only a Recommends of krita: name it explicitly.
CHROOT_PKGS="krita python3-pyqt5"
# Bump when CHROOT_PKGS changes, so old chroots get completed.
MARKER_VERSION=1

missing_native() {
    local pkg status
    for pkg in $NATIVE_PKGS; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || printf ' %s' "$pkg"
    done
}

setup_native() {
    local missing
    missing=$(missing_native)
    [ -n "$missing" ] || return 0
    log "installing$missing"
    as_root apt-get update -q
    # shellcheck disable=SC2086
    as_root apt-get install -y -q $missing
}

# Upstream version without epoch and Debian revision: 1:5.1.5+dfsg-1 -> 5.1.5+dfsg.
upstream() {
    local v=${1#*:}
    echo "${v%-*}"
}

want_chroot() {
    case "${FBCNN_KRITA_CHROOT:-auto}" in
        yes) return 0 ;;
        no) return 1 ;;
    esac
    # Only where the native Krita is not 5.2 already (Debian 12).
    ! dpkg --compare-versions "$(upstream "$native")" ge 5.2~
}

setup_native
native=$(dpkg-query -W -f='${Version}' krita)
summary="krita: native $(upstream "$native")"
if want_chroot; then
    chroot_ready krita "$MARKER_VERSION" || chroot_install krita "$MARKER_VERSION" \
        "$CHROOT_PKGS" python3 -c 'import PyQt5.QtWidgets, shutil; print("krita", shutil.which("krita"))'
fi
if chroot_ready krita "$MARKER_VERSION"; then
    summary="$summary, chroot $(upstream "$(chroot_pkg_version krita)") $CHROOT_ROOT"
fi
echo "$summary"
