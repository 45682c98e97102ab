#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 or 13 machine: installs what the tests
# need (idempotent, cached outside the repo), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch==2.13.0 is pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
if ! { "$PY" -c "import torch, numpy, PIL, tqdm, pytest" 2>/dev/null && command -v fbcnn >/dev/null; }; then
    "$PY" -m pip install -q torch==2.13.0 -e ".[test]"
fi

bash tests/hosts/setup_gimp.sh
bash tests/hosts/setup_krita.sh

exec "$PY" -m pytest -v -rs tests "$@"
