"""The restoring half of FBCNN compiled by OpenVINO, for the CPU (and Intel GPUs and NPUs).

The engine keeps its tiles, QF and blending; only each tile's forward pass runs
here. The model is converted once per weights (any FBCNN-family state dict:
compact, official or a user's), with dynamic height and width and the QF as an
input, so one compiled model serves every tile size and every slider position.
The converted model is kept in the user's cache folder, and OpenVINO's own
compiled-blob cache beside it, so a second worker start neither converts nor
compiles again.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import sys
import threading
import warnings
from typing import Callable, Optional

import numpy as np

from core.config import Config

# The code a conversion depends on besides the weights: a change here converts again.
NETWORK_SOURCES = ("network.py", "config.py")

# OpenVINO's names for the accelerators it can reach, and ours.
DEVICE_NAMES = {"intel-gpu": "GPU", "npu": "NPU"}


def installed() -> bool:
    """Whether the openvino package can be imported here (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def openvino():
    """The openvino module, imported without its usage reporting. Importing OpenVINO
    writes ~/intel, and converting a model reports to Google Analytics, unless the user
    opted out with Intel's tool; someone restoring a photo in GIMP never agreed to that.
    A None in sys.modules makes `import openvino_telemetry` fail, and OpenVINO then uses
    its own stand-in, as when that package is not installed."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino as ov
    return ov


@functools.lru_cache(maxsize=None)
def _core():
    return openvino().Core()


def ov_devices(lister=None) -> list[str]:
    """OpenVINO's device names here ("CPU", "GPU.0", "NPU"), [] without OpenVINO."""
    if lister is None:
        if not installed():
            return []
        lister = lambda: _core().available_devices  # noqa: E731
    try:
        return list(lister())
    except Exception:  # a broken driver must not take the CPU path down with it
        return []


def accelerators(names: list[str]) -> list[str]:
    """Our names ("intel-gpu", "npu") for the Intel accelerators among OpenVINO's devices."""
    ours = []
    for ours_name, ov_name in DEVICE_NAMES.items():
        if any(n == ov_name or n.startswith(ov_name + ".") for n in names):
            ours.append(ours_name)
    return ours


def cache_dir() -> pathlib.Path:
    """The user's cache folder for converted and compiled models (FBCNN_CACHE_DIR wins)."""
    override = os.environ.get("FBCNN_CACHE_DIR")
    if override:
        return pathlib.Path(override).expanduser() / "openvino"
    home = pathlib.Path.home()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return pathlib.Path(base) / "fbcnn" / "cache" / "openvino"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "fbcnn" / "openvino"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return pathlib.Path(xdg if os.path.isabs(xdg) else home / ".cache") / "fbcnn" / "openvino"


def ir_name(weights_key: str) -> str:
    """The cache name of a conversion: the weights, our network code and OpenVINO's
    version, so that a change to any of them converts again."""
    ov = openvino()
    h = hashlib.sha256(ov.__version__.encode())
    for name in NETWORK_SOURCES:
        h.update((pathlib.Path(__file__).with_name(name)).read_bytes())
    h.update(weights_key.encode())
    return "fbcnn-" + h.hexdigest()[:24]


def model_key(net) -> str:
    """A key for weights that exist only in memory (no file to hash): their tensors."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def convert(net, path: pathlib.Path) -> None:
    """torch -> OpenVINO IR at path (.xml, .bin and the architecture in .json), written
    so that a reader never sees half of it (the .json, written last, marks it done)."""
    ov = openvino()
    import torch

    class Restore(torch.nn.Module):
        """FBCNN's decoder path at a given QF, for tiles whose sides are multiples of
        8 (CompiledNet pads them): traced, a size-dependent pad or crop would freeze
        into the graph at the example's size."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, qf):
            xp, skips, enc = self.net.encode(x)
            return self.net._decode(xp, skips, enc, qf)

    c = net.config.in_nc
    example = (torch.rand(1, c, 64, 64), torch.full((1, 1), 0.5))
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python branch on a shape; Restore's inputs
        # make each of them take the same side at every size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.13 deprecates the tracing OpenVINO's converter still uses.
        warnings.simplefilter("ignore", DeprecationWarning)
        model = ov.convert_model(Restore().eval(), example_input=example,
                                 input=[ov.PartialShape([1, c, -1, -1]), ov.PartialShape([1, 1])])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
    # compress_to_fp16=False: the weights stay as trained (fp32 in memory).
    ov.save_model(model, tmp, compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)
    meta = path.with_name(f"{path.stem}.{os.getpid()}.tmp.json")
    meta.write_text(json.dumps({"config": net.config.as_dict()}))
    os.replace(meta, path.with_suffix(".json"))


class CompiledNet:
    """One network compiled for one OpenVINO device; `restore` runs one tile."""

    def __init__(self, net=None, device: str = "CPU", bf16: bool = False,
                 cache: Optional[pathlib.Path] = None, *, key: Optional[str] = None,
                 load: Optional[Callable] = None, threads: Optional[int] = None):
        """`net`: a torch FBCNN, keyed by its tensors; or `key` (the weights file's
        sha256) and `load` (returns the torch FBCNN), called only when the cache has
        no conversion yet: a cached model starts without torch."""
        cache = cache_dir() if cache is None else cache
        if key is None:
            key, load = model_key(net), (lambda: net)
        self.path = cache / f"{ir_name(key)}.xml"
        meta = self.path.with_suffix(".json")
        self.converted = not meta.is_file()
        if self.converted:
            convert(load(), self.path)
        saved = json.loads(meta.read_text())["config"]
        self.config = Config(**dict(saved, nc=tuple(saved["nc"])))
        config = {"CACHE_DIR": str(cache / "blobs"),
                  # One image at a time, as fast as possible: all cores on one request.
                  "PERFORMANCE_HINT": "LATENCY"}
        if threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)   # a share of the cores (--jobs)
        if device == "CPU":
            config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        self.compiled = _core().compile_model(str(self.path), device, config)
        self._local = threading.local()

    def _request(self):
        # An infer request is not thread-safe; the worker runs one request at a time,
        # but a request per thread costs nothing and rules the question out.
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def restore(self, x: np.ndarray, qf_value: float) -> np.ndarray:
        """x: 1xCxHxW float32 (any H, W); the restored 1xC'xHxW float32."""
        h, w = x.shape[-2:]
        pad_b, pad_r = -h % 8, -w % 8
        if pad_b or pad_r:
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_b), (0, pad_r)), mode="edge")
        qf = np.full((1, 1), qf_value, np.float32)
        out = self._request().infer([np.ascontiguousarray(x, np.float32), qf])
        # A copy: the request reuses its output buffer on the next tile.
        return np.array(next(iter(out.values()))[..., :h, :w])
