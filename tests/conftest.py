import os
import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("FBCNN_SHARED", ROOT.parent / "shared"))


def shared_path(*parts) -> pathlib.Path:
    """A path under ../shared, or a loud skip when that folder is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        msg = f"SKIPPED LOUDLY: shared material {p} is absent; this test needs ../shared"
        warnings.warn(msg)
        pytest.skip(msg)
    return p
