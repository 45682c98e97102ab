#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 or 13 machine: installs what the tests
# need (idempotent, cached outside the repo), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch==2.13.0 is pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
# Reinstall when the importable `core` (seen from outside the repo) is not this checkout's.
here=$(pwd -P)
installed=$(cd / && "$PY" -c "import torch, numpy, PIL, tqdm, pytest, png, tifffile, openvino, core, os; print(os.path.dirname(os.path.dirname(os.path.realpath(core.__file__))))" 2>/dev/null || true)
if [ "$installed" != "$here" ] || ! command -v fbcnn >/dev/null; then
    "$PY" -m pip install -q torch==2.13.0 -e ".[test]"
fi

# Every GIMP and Krita the host tests run on: the host's own, and the cached
# trixie, sid and experimental chroots (tests/hosts/setup.sh says which holds what).
sh tests/hosts/setup.sh

exec "$PY" -m pytest -v -rs tests "$@"
