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
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from core import openvino_runtime, quality, tiling, weights
from core import pixels as pixels_mod
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

def colour_of(pixels: np.ndarray) -> np.ndarray:
    """The colour channels of (a part of) a host array as float32, range 0..1."""
    c = 3 if pixels.shape[2] >= 3 else 1
    f = pixels[:, :, :c].astype(np.float32)
    if pixels.dtype == np.uint8:
        f /= 255.0
    elif pixels.dtype == np.uint16:
        f /= 65535.0
    return f


def store(colour: np.ndarray, dtype) -> np.ndarray:
    """Float colour back to the host array's dtype and depth."""
    if dtype == np.uint8:
        return np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.clip(np.rint(colour * 65535.0), 0, 65535).astype(np.uint16)
    return colour.astype(dtype)


def edge_slice(pixels: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """pixels[y0:y1, x0:x1] where y0 or x0 may be up to 7 below zero: those rows and
    columns repeat the edge (the image padded onto the whole picture's 8x8 grid)."""
    part = pixels[max(y0, 0):y1, max(x0, 0):x1]
    if y0 < 0 or x0 < 0:
        part = np.pad(part, ((max(-y0, 0), 0), (max(-x0, 0), 0), (0, 0)), mode="edge")
    return part


# ---------------------------------------------------------------- engine

class Engine:
    def __init__(self, device: str = "auto", precision: str = "auto", runtime: str = "auto",
                 check_weights: bool = True, threads: Optional[int] = None):
        """check_weights=False skips the sanity run on each loaded model: for timing
        synthetic weights (bench.speed), which restore nothing. threads: the CPU threads
        this engine's networks may use (default: all; `fbcnn restore --jobs` gives each
        process its share, so N processes do not fight over the same cores)."""
        self.requested_device = device
        self.threads = threads
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
            if self.threads:
                torch.set_num_threads(self.threads)   # process-wide; torch has no per-model setting
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
                key=weights.file_key(name), load=lambda: self._load(name, "cpu"),
                threads=self.threads)
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

    def _predict_qf(self, model, pixels: np.ndarray, in_nc: int, device: str) -> int:
        """Median of the QF head over windows spread across the image: one QF per image."""
        h, w = pixels.shape[:2]
        votes = []
        for t in tiling.sample_windows(h, w, QF_WINDOW_SIZE, QF_WINDOWS):
            window = self._model_input(colour_of(pixels[t.y0:t.y1, t.x0:t.x1]), in_nc)
            x = self._to_tensor(np.clip(window, 0, 1), device)
            with torch.inference_mode(), autocast(device, self.precision):
                votes.append(float(model.predict_qf(x).float().item()))
        return model_to_qf(float(np.median(votes)))

    def _model_input(self, color: np.ndarray, in_nc: int) -> np.ndarray:
        if in_nc == color.shape[2]:
            return color
        return np.repeat(color, 3, axis=2) if in_nc == 3 else pixels_mod.luma(color)

    def _model_output(self, out: np.ndarray, color: np.ndarray) -> np.ndarray:
        """Map the model's channels back onto the input's: gray via luma, colour via a luma delta."""
        if out.shape[2] == color.shape[2]:
            return out
        if color.shape[2] == 1:
            return pixels_mod.luma(out)
        return color + (out - pixels_mod.luma(color))

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

    def _prepare(self, pixels: np.ndarray, model: str) -> tuple:
        """(model name, its input channels) for these pixels, after checking them."""
        colour_channels = pixels_mod.colour_channels(pixels_mod.check(pixels))
        name = self.resolve_model(model, colour_channels == 1)
        return name, self._config(name, self.device).in_nc

    def predict_qf(self, pixels: np.ndarray, *, model: str = "auto") -> int:
        """The network's own QF for the whole image (no file, no double-JPEG check)."""
        name, in_nc = self._prepare(pixels, model)
        return self._predict_qf(self._load(name, self.torch_device), pixels, in_nc,
                                self.torch_device)

    def estimate(self, pixels: np.ndarray, *, model: str = "auto", source_path=None, jpeg_settings=None):
        """The QF to remove and its source: the file's tables, a double-JPEG, else the network."""
        name, in_nc = self._prepare(pixels, model)
        return self._estimate(pixels, name, in_nc, source_path, jpeg_settings)

    def _estimate(self, pixels, name, in_nc, source_path, jpeg_settings):
        # The QF head runs on torch, loaded only when the file and the double-JPEG
        # check leave the QF open.
        return quality.estimate_quality(
            pixels, source_path=source_path, jpeg_settings=jpeg_settings,
            predict=lambda p: self._predict_qf(self._load(name, self.torch_device), p, in_nc,
                                               self.torch_device))

    def restore(self, pixels: np.ndarray, *, model: str = "auto", qf=None, origin=(0, 0), tile=None,
                source_path=None, jpeg_settings=None,
                progress: Optional[Callable[[int, int], None]] = None,
                cancel: Optional[Callable[[], bool]] = None) -> Result:
        if qf is not None and qf != "auto" and not (isinstance(qf, (int, np.integer)) and 1 <= int(qf) <= 100):
            raise ValueError(f"QF must be an integer 1..100 or auto, not {qf!r}")
        if tile is not None and (int(tile) < tiling.MIN_TILE or int(tile) % 8):
            raise ValueError(f"tile must be a multiple of 8 and at least {tiling.MIN_TILE}")
        name, in_nc = self._prepare(pixels, model)
        warns = list(self._device_warnings)
        ox, oy = (int(v) for v in origin)

        if qf is None or qf == "auto":
            # The double-JPEG search assumes pixel [0, 0] sits on the last save's 8x8 grid.
            on_grid = pixels[(-oy) % 8:, (-ox) % 8:] if min(pixels.shape[:2]) > 8 else pixels
            est = self._estimate(on_grid, name, in_nc, source_path, jpeg_settings)
            qf_used, qf_detected, source, details = est.qf, est.qf, est.source, dict(est.details)
        else:
            qf_used, qf_detected, source, details = int(qf), None, "manual", {}

        # Tiles are cut on the whole picture's 8x8 grid: the image is seen padded by
        # (top, left) repeated edge pixels. They are read from the host array and their
        # rows written back into an output of its own dtype band by band, so no
        # image-sized float copy exists (memory stays near input + output).
        top, left = oy % tiling.GRID, ox % tiling.GRID
        h, w = pixels.shape[:2]
        out = np.empty_like(pixels)
        cc = 3 if pixels.shape[2] >= 3 else 1
        if pixels.shape[2] > cc:
            out[:, :, cc:] = pixels[:, :, cc:]  # alpha: untouched

        def read(t):
            part = edge_slice(pixels, t.y0 - top, t.y1 - top, t.x0 - left, t.x1 - left)
            return self._model_input(colour_of(part), in_nc)

        def write(y0, y1, rows):
            a = max(y0, top)
            if y1 <= a:
                return
            colour = colour_of(pixels[a - top:y1 - top])
            restored = self._model_output(rows[a - y0:, left:], colour)
            if pixels.dtype.kind == "f":
                # Keep out-of-range float values (HDR, negative) as they were, changing
                # only the correction.
                restored = colour + (restored - np.clip(colour, 0, 1))
            out[a - top:y1 - top, :, :cc] = store(restored, pixels.dtype)

        qf_value = qf_to_model(weights.decoder_qf(name, qf_used))
        device = self._run(name, h + top, w + left, read, write, qf_value, tile, progress, cancel,
                           warns)
        return Result(out, qf_used, qf_detected, source, details, name, device, warns,
                      self.runtime if device in ("cpu", *OPENVINO_DEVICES) else "torch")

    def _run(self, name, height, width, read, write, qf_value, tile, progress, cancel, warns):
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
                finished = tiling.run_tiled(height, width, read, fn, write, size, overlap, progress,
                                            cancel)
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
            if not finished:
                raise Cancelled("cancelled")
            return device
