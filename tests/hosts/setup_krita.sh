#!/bin/sh
# Install what the Krita tests need, only when something is missing.
# Idempotent: when everything is present this only runs dpkg-query (well under 1 s).
set -eu

missing=""
for pkg in krita python3-pyqt5 xvfb xauth; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        "install ok installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "setup_krita: krita, python3-pyqt5, xvfb and xauth are installed"
    exit 0
fi

echo "setup_krita: installing$missing"
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# python3-pyqt5 is only a Recommends of krita: name it explicitly.
# shellcheck disable=SC2086
$SUDO apt-get install -y -q $missing
