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


@pytest.fixture(scope="session")
def random_model_path(tmp_path_factory):
    """A compact-architecture model with random weights: real inference, no training needed."""
    import torch
    from core import network, weights
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("model") / "compact_random.pth"
    torch.save(network.build(weights.COMPACT_CONFIG).state_dict(), p)
    return str(p)
