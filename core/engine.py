"""Tiled FBCNN inference on the local GPU (CUDA/ROCm, MPS) or the CPU.

The one place that converts between the user's QF (1..100) and the network's
`1 - QF/100`, and between host pixel arrays and model tensors.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import platform
import platform
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from core import openvino_runtime, quality, tiling, weights
from core.devices import (OPENVINO_DEVICES, RUNTIMES, available_devices,  # noqa: F401 - API
                          bf16_native, cpu_has_bf16, low_precision, pick_device, pick_runtime)


class _LazyTorch:
    """torch, imported on first use: that takes seconds, and a dialog's first preview
    (the QF from the file, the tiles through a cached OpenVINO model) never needs it."""

    def __getattr__(self, name):
        import torch as real
        return getattr(real, name)


torch = _LazyTorch()

GRAY_MODELS = ("fbcnn_gray", "fbcnn_gray_double")
QF_WINDOWS = 9
QF_WINDOW_SIZE = 256
OVERLAP = 64
CPU_MEMORY_BUDGET = 1.0e9  # bytes of activations per tile; keeps a 24 MP run under 3 GB
# channels_last on the CPU: measured by bench/speed.py (see README, Performance).
CPU_CHANNELS_LAST = True


class Cancelled(Exception):
    """The caller cancelled; no partial result exists."""


def qf_to_model(qf: float) -> float:
    return 1.0 - qf / 100.0


def model_to_qf(value: float) -> int:
    return int(min(100, max(1, round(100 * (1.0 - value)))))


@dataclass
class Result:
    pixels: np.ndarray
    qf_used: int
    qf_detected: Optional[int]
    qf_source: str
    details: dict
    model: str
    device: str
    warnings: list = field(default_factory=list)
    runtime: str = "torch"


# glibc's malloc hands large freed buffers back to the kernel and faults them in again
# for every tile. Keeping them (both thresholds raised together; either alone does
# nothing) made torch CPU restores 1.08x faster here (bench/malloc.py, 6 MP; 1.18-1.25x
# on an AVX2 machine) for a few hundred MB more at 24 MP. OpenVINO keeps its own
# buffers: 1.00x, so it is left alone there.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 4 << 30}


@functools.lru_cache(maxsize=None)
def keep_freed_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (ours: the worker or the
    CLI, never an editor); False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes
    mallopt = ctypes.CDLL(None).mallopt
    return all(mallopt(param, value) == 1 for param, value in KEEP_FREED.items())


@functools.lru_cache(maxsize=None)
def _say_openvino_is_missing() -> None:
    """Once per process: why the CPU runs on torch."""
    logging.getLogger(__name__).warning(
        "OpenVINO is not installed here; the CPU runs the network through torch "
        "(pip install openvino makes it faster)")



def pick_dtype(device: str, precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype, or None for plain fp32."""
    low = low_precision(device, precision)
    return None if low is None else {"bf16": torch.bfloat16, "fp16": torch.float16}[low]


def autocast(device: str, precision: str):
    """Autocast for the chosen precision, or nothing for fp32."""
    dtype = pick_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=dtype)


def is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


# ---------------------------------------------------------------- pixels

def split_pixels(pixels: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """HxWxC host array -> (float32 HxWx{1,3} colour, alpha or None), range 0..1."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ValueError("pixels must be an HxWxC array with C in 1..4")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError("the image is empty")
    if pixels.dtype == np.uint8:
        f = pixels.astype(np.float32) / 255.0
    elif pixels.dtype == np.uint16:
        f = pixels.astype(np.float32) / 65535.0
    elif pixels.dtype in (np.float16, np.float32):
        f = pixels.astype(np.float32)
        if not np.isfinite(f).all():
            raise ValueError("float pixels contain NaN or infinity")
    else:
        raise ValueError(f"unsupported pixel type {pixels.dtype}; use uint8, uint16, float16 or float32")
    c = pixels.shape[2]
    if c in (2, 4):
        return f[:, :, :c - 1], pixels[:, :, c - 1:]
    return f, None


def join_pixels(color: np.ndarray, alpha: Optional[np.ndarray], like: np.ndarray) -> np.ndarray:
    """Back to the input's dtype and depth; alpha is the untouched original channel."""
    if like.dtype == np.uint8:
        out = np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)
    elif like.dtype == np.uint16:
        out = np.clip(np.rint(color * 65535.0), 0, 65535).astype(np.uint16)
    else:
        out = color.astype(like.dtype)
    return out if alpha is None else np.concatenate([out, alpha], axis=2)


def luma(rgb: np.ndarray) -> np.ndarray:
    """OpenCV-style BT.601 full-range luma, what the official gray models were trained on."""
    return (0.299 * rgb[:, :, 0:1] + 0.587 * rgb[:, :, 1:2] + 0.114 * rgb[:, :, 2:3]).astype(np.float32)


def pad_to_grid(a: np.ndarray, origin: tuple) -> tuple[np.ndarray, int, int]:
    """Replicate-pad top/left so that a[0, 0] sits on the whole image's 8x8 grid."""
    ox, oy = (int(v) for v in origin)
    top, left = oy % tiling.GRID, ox % tiling.GRID
    if top or left:
        a = np.pad(a, ((top, 0), (left, 0), (0, 0)), mode="edge")
    return a, top, left


# ---------------------------------------------------------------- engine

class Engine:
    def __init__(self, device: str = "auto", precision: str = "auto", runtime: str = "auto",
                 check_weights: bool = True):
        """check_weights=False skips the sanity run on each loaded model: for timing
        synthetic weights (bench.speed), which restore nothing."""
        self.requested_device = device
        self.check_weights = check_weights
        self.device, self._device_warnings = pick_device(device)
        self.precision = precision
        self.runtime = pick_runtime(runtime, self.device)
        # torch serves the QF head and the conversion; on an Intel accelerator it runs
        # on the CPU beside it.
        self.torch_device = "cpu" if self.device in OPENVINO_DEVICES else self.device
        keep = os.environ.get("FBCNN_KEEP_FREED")  # "0" never, "1" always: bench/malloc.py
        if keep == "1" or (keep != "0" and self.device == "cpu" and self.runtime == "torch"):
            keep_freed_buffers()
        if self.device == "cpu" and self.runtime == "torch" and (runtime or "auto") == "auto":
            _say_openvino_is_missing()
        self._models: dict = {}
        self._compiled: dict = {}

    # models -------------------------------------------------------------
    def resolve_model(self, model: str, gray: bool) -> str:
        if model and model != "auto":
            return str(model)
        if self.device != "cpu":
            for name in (GRAY_MODELS[0], "fbcnn_color") if gray else ("fbcnn_color",):
                if weights.status(name) in ("downloaded", "bundled"):
                    return name
        return "compact"

    def _load(self, name: str, device: str) -> torch.nn.Module:
        key = (name, device)
        if key not in self._models:
            m = weights.load_model(name)
            if self.check_weights:
                weights.check_sane(m, name)
            m = m.to(device).eval()
            if device == "cpu" and CPU_CHANNELS_LAST:
                m = m.to(memory_format=torch.channels_last)
            self._models[key] = m
        return self._models[key]

    def _uses_openvino(self, device: str) -> bool:
        return self.runtime == "openvino" and device in ("cpu", *OPENVINO_DEVICES)

    def _compiled_net(self, name: str, device: str) -> openvino_runtime.CompiledNet:
        """The model compiled by OpenVINO; from the cache (without torch) once converted."""
        if (name, device) not in self._compiled:
            self._compiled[name, device] = openvino_runtime.CompiledNet(
                device=openvino_runtime.DEVICE_NAMES.get(device, "CPU"),
                bf16=low_precision("cpu", self.precision) == "bf16",
                key=weights.file_key(name), load=lambda: self._load(name, "cpu"))
        return self._compiled[name, device]

    def _config(self, name: str, device: str):
        """The model's architecture, from whichever runtime runs it on `device`."""
        if self._uses_openvino(device):
            return self._compiled_net(name, device).config
        return self._load(name, device).config

    # inference ----------------------------------------------------------
    def _forward(self, model, x: torch.Tensor, qf: float, device: str) -> torch.Tensor:
        """The restored tile at a fixed QF (model convention); the QF head is not run."""
        with torch.inference_mode(), autocast(device, self.precision):
            if device == "cpu" and CPU_CHANNELS_LAST:
                x = x.contiguous(memory_format=torch.channels_last)
            return model.restore(x, torch.full((x.shape[0], 1), qf, device=device))

    def _to_tensor(self, a: np.ndarray, device: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)

    def _predict_qf(self, model, image: np.ndarray, device: str) -> int:
        """Median of the QF head over windows spread across the image: one QF per image."""
        h, w = image.shape[:2]
        votes = []
        for t in tiling.sample_windows(h, w, QF_WINDOW_SIZE, QF_WINDOWS):
            x = self._to_tensor(np.clip(image[t.y0:t.y1, t.x0:t.x1], 0, 1), device)
            with torch.inference_mode(), autocast(device, self.precision):
                votes.append(float(model.predict_qf(x).float().item()))
        return model_to_qf(float(np.median(votes)))

    def _model_input(self, color: np.ndarray, in_nc: int) -> np.ndarray:
        if in_nc == color.shape[2]:
            return color
        return np.repeat(color, 3, axis=2) if in_nc == 3 else luma(color)

    def _model_output(self, out: np.ndarray, color: np.ndarray) -> np.ndarray:
        """Map the model's channels back onto the input's: gray via luma, colour via a luma delta."""
        if out.shape[2] == color.shape[2]:
            return out
        if color.shape[2] == 1:
            return luma(out)
        return color + (out - luma(color))

    def default_tile(self, config, device: str) -> int:
        """The largest grid-aligned tile whose activations fit the device's budget.

        Measured on the CPU: about 16 live full-resolution feature maps of width nc[0]
        per pixel. Large tiles matter: overlap is recomputed work.
        """
        budget = CPU_MEMORY_BUDGET
        if device == "cuda":
            free, _ = torch.cuda.mem_get_info()
            budget = 0.5 * free
        element = 4 if low_precision(device, self.precision) is None else 2
        side = int(math.sqrt(budget / (config.nc[0] * element * 16)))
        return int(min(2048, max(tiling.MIN_TILE, side // 64 * 64)))

    def _prepare(self, pixels: np.ndarray, model: str):
        color, alpha = split_pixels(pixels)
        name = self.resolve_model(model, color.shape[2] == 1)
        in_nc = self._config(name, self.device).in_nc
        return color, alpha, name, self._model_input(color, in_nc)

    def predict_qf(self, pixels: np.ndarray, *, model: str = "auto") -> int:
        """The network's own QF for the whole image (no file, no double-JPEG check)."""
        _, _, name, image = self._prepare(pixels, model)
        return self._predict_qf(self._load(name, self.torch_device), image, self.torch_device)

    def _estimate(self, pixels, name, image, source_path, jpeg_settings):
        # The QF head runs on torch, loaded only when the file and the double-JPEG
        # check leave the QF open.
        return quality.estimate_quality(
            pixels, source_path=source_path, jpeg_settings=jpeg_settings,
            predict=lambda _p: self._predict_qf(self._load(name, self.torch_device), image,
                                                self.torch_device))

    def estimate(self, pixels: np.ndarray, *, model: str = "auto", source_path=None, jpeg_settings=None):
        # The model is loaded only if the file and the double-JPEG check leave the QF open.
        return quality.estimate_quality(pixels, source_path=source_path, jpeg_settings=jpeg_settings,
                                        predict=lambda p: self.predict_qf(p, model=model))

    def restore(self, pixels: np.ndarray, *, model: str = "auto", qf=None, origin=(0, 0), tile=None,
                source_path=None, jpeg_settings=None,
                progress: Optional[Callable[[int, int], None]] = None,
                cancel: Optional[Callable[[], bool]] = None) -> Result:
        if qf is not None and qf != "auto" and not (isinstance(qf, (int, np.integer)) and 1 <= int(qf) <= 100):
            raise ValueError(f"QF must be an integer 1..100 or auto, not {qf!r}")
        if tile is not None and (int(tile) < tiling.MIN_TILE or int(tile) % 8):
            raise ValueError(f"tile must be a multiple of 8 and at least {tiling.MIN_TILE}")
        color, alpha, name, image = self._prepare(pixels, model)
        warns = list(self._device_warnings)

        if qf is None or qf == "auto":
            # The double-JPEG search assumes pixel [0, 0] sits on the last save's 8x8 grid.
            ox, oy = (int(v) for v in origin)
            on_grid = pixels[(-oy) % 8:, (-ox) % 8:] if min(pixels.shape[:2]) > 8 else pixels
            est = self._estimate(on_grid, name, image, source_path, jpeg_settings)
            qf_used, qf_detected, source, details = est.qf, est.qf, est.source, dict(est.details)
        else:
            qf_used, qf_detected, source, details = int(qf), None, "manual", {}

        padded, top, left = pad_to_grid(image, origin)
        out, device = self._run(name, padded, qf_to_model(weights.decoder_qf(name, qf_used)), tile, progress, cancel, warns)
        out = out[top:, left:]
        restored = self._model_output(out, color)
        if pixels.dtype in (np.float16, np.float32):
            # Keep out-of-range float values (HDR, negative) as they were, changing only the correction.
            restored = color + (restored - np.clip(color, 0, 1))
        return Result(join_pixels(restored, alpha, pixels), qf_used, qf_detected, source, details,
                      name, device, warns,
                      self.runtime if device in ("cpu", *OPENVINO_DEVICES) else "torch")

    def _run(self, name, image, qf_value, tile, progress, cancel, warns):
        """Tiled inference with the out-of-memory ladder: halve the tile to 128, then the CPU."""
        device = self.device
        while True:
            if self._uses_openvino(device):
                compiled = self._compiled_net(name, device)
                config = compiled.config

                def fn(a, compiled=compiled):
                    x = np.clip(a, 0, 1).transpose(2, 0, 1)[None]
                    return compiled.restore(x, qf_value)[0].transpose(1, 2, 0)
            else:
                net = self._load(name, device)
                config = net.config

                def fn(a, net=net, device=device):
                    x = self._to_tensor(np.clip(a, 0, 1), device)
                    y = self._forward(net, x, qf_value, device)
                    return y[0].float().permute(1, 2, 0).cpu().numpy()

            size = int(tile) if tile else self.default_tile(config, device)
            overlap = min(OVERLAP, max(tiling.MIN_OVERLAP, size // 4 // 8 * 8))

            try:
                out = tiling.run_tiled(image, fn, size, overlap, progress, cancel)
            except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(err):
                    raise
                if device == "cuda":
                    torch.cuda.empty_cache()
                if size > tiling.MIN_TILE:
                    tile = max(tiling.MIN_TILE, size // 2 // 8 * 8)
                    warns.append(f"out of memory at tile {size}; retrying with tile {tile}")
                    continue
                if device != "cpu":
                    warns.append(f"out of memory on {device} even at tile {size}; falling back to the CPU")
                    device, tile = "cpu", None
                    continue
                raise
            if out is None:
                raise Cancelled("cancelled")
            return out, device
