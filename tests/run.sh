#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 or 13 machine: installs what the tests
# need (idempotent, cached outside the repo), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# The project and its test tools go into a venv of the tests' own, never the base
# Python. --system-site-packages lets it reuse a torch the base already has.
VENV=${FBCNN_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fbcnn-tests/venv}
if ! "$VENV/bin/python" -c "" 2>/dev/null; then
    rm -rf "$VENV"
    "$PY" -m venv --system-site-packages "$VENV"
fi
VPY="$VENV/bin/python"

# torch==2.13.0 is pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
# The cluster extra (Ray) too: tests/test_ray.py runs a real two-node Ray cluster.
# Reinstall when the importable `core` (seen from outside the repo) is not this checkout's.
here=$(pwd -P)
installed=$(cd / && "$VPY" -c "import torch, numpy, PIL, tqdm, pytest, png, tifffile, openvino, ray.data, core, os; print(os.path.dirname(os.path.dirname(os.path.realpath(core.__file__))))" 2>/dev/null || true)
if [ "$installed" != "$here" ] || [ ! -x "$VENV/bin/fbcnn" ]; then
    "$VPY" -m pip install -q torch==2.13.0 -e ".[test,cluster]"
fi
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"

# Every GIMP and Krita the host tests run on: the host's own, and the cached
# trixie, sid and experimental chroots (tests/hosts/setup.sh says which holds what).
sh tests/hosts/setup.sh

exec "$VPY" -m pytest -v -rs tests "$@"
