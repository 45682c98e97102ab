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


@pytest.fixture(scope="session", autouse=True)
def openvino_cache(tmp_path_factory):
    """OpenVINO's converted and compiled models go to one folder for the whole run,
    never into the user's cache: each random model converts once, not once a test."""
    path = tmp_path_factory.mktemp("fbcnn-cache")
    old = os.environ.get("FBCNN_CACHE_DIR")
    os.environ["FBCNN_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FBCNN_CACHE_DIR", None)
    else:
        os.environ["FBCNN_CACHE_DIR"] = old


def runtimes() -> list:
    """The runtimes this machine has for the CPU: torch, and OpenVINO where installed.
    Engine tests run on each, so both keep every behaviour."""
    from core import openvino_runtime
    return ["torch"] + (["openvino"] if openvino_runtime.installed() else [])


@pytest.fixture(scope="session")
def random_model_path(tmp_path_factory):
    """A compact-architecture model with random weights: real inference, no training needed."""
    import torch
    from core import network, weights
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("model") / "compact_random.pth"
    torch.save(network.build(weights.COMPACT_CONFIG).state_dict(), p)
    return str(p)
