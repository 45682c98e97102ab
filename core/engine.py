"""Tiled FBCNN inference on the local GPU (CUDA/ROCm, MPS) or the CPU.

The one place that converts between the user's QF (1..100) and the network's
`1 - QF/100`, and between host pixel arrays and model tensors.
"""
from __future__ import annotations

import contextlib
import functools
import math
import platform
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from core import quality, tiling, weights

GRAY_MODELS = ("fbcnn_gray", "fbcnn_gray_double")
QF_WINDOWS = 9
QF_WINDOW_SIZE = 256
OVERLAP = 64
CPU_MEMORY_BUDGET = 1.0e9  # bytes of activations per tile; keeps a 24 MP run under 3 GB
# bf16 on CPU is the default only where it was measured to cost <= 0.05 dB (bench/quality.py).
CPU_BF16_DEFAULT = True
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


# ---------------------------------------------------------------- devices

def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():  # ROCm builds answer here too
        found.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.insert(0, "mps")
    return found


def pick_device(requested: str = "auto", available: Optional[list] = None) -> tuple[str, list]:
    """Resolve auto/gpu/cuda/mps/cpu to a present device, CUDA -> MPS -> CPU; warnings if downgraded."""
    available = available_devices() if available is None else available
    requested = (requested or "auto").lower()
    order = {"auto": ["cuda", "mps", "cpu"], "gpu": ["cuda", "mps"], "cuda": ["cuda"], "rocm": ["cuda"],
             "mps": ["mps"], "cpu": ["cpu"]}
    if requested not in order:
        raise ValueError(f"unknown device {requested!r}; use auto, gpu, cuda, mps or cpu")
    for d in order[requested]:
        if d in available:
            return d, []
    return "cpu", [f"no {requested.upper()} device is available here; running on the CPU instead"]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively, so that bf16 autocast pays off."""
    return bf16_native(platform.machine(), _cpu_flags())


def bf16_native(machine: str, flags: Optional[set]) -> bool:
    """x86 needs AVX512-BF16 or AMX-BF16 in the CPU's flags (None: flags unknown).

    oneDNN's own check also says yes on plain AVX512 (Skylake-X, Ice Lake, Tiger Lake),
    where it emulates bf16: a compact-model training step took 3.6x as long there as in
    fp32. Where the flags can't be read, fp32 is the safe guess on x86.
    """
    if machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        return bool(flags and flags & {"avx512_bf16", "amx_bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> Optional[frozenset]:
    """The CPU's feature flags from Linux's /proc/cpuinfo, or None elsewhere.

    Read once: autocast asks for every tile, and the file is long on many-core machines.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def pick_dtype(device: str, precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype, or None for plain fp32."""
    precision = (precision or "auto").lower()
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if device in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16 if CPU_BF16_DEFAULT and cpu_has_bf16() else None


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
    def __init__(self, device: str = "auto", precision: str = "auto"):
        self.requested_device = device
        self.device, self._device_warnings = pick_device(device)
        self.precision = precision
        self._models: dict = {}

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
            m = weights.load_model(name).to(device).eval()
            if device == "cpu" and CPU_CHANNELS_LAST:
                m = m.to(memory_format=torch.channels_last)
            self._models[key] = m
        return self._models[key]

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

    def default_tile(self, model: torch.nn.Module, device: str) -> int:
        """The largest grid-aligned tile whose activations fit the device's budget.

        Measured on the CPU: about 16 live full-resolution feature maps of width nc[0]
        per pixel. Large tiles matter: overlap is recomputed work.
        """
        budget = CPU_MEMORY_BUDGET
        if device == "cuda":
            free, _ = torch.cuda.mem_get_info()
            budget = 0.5 * free
        element = 4 if pick_dtype(device, self.precision) is None else 2
        side = int(math.sqrt(budget / (model.config.nc[0] * element * 16)))
        return int(min(2048, max(tiling.MIN_TILE, side // 64 * 64)))

    def _prepare(self, pixels: np.ndarray, model: str):
        color, alpha = split_pixels(pixels)
        name = self.resolve_model(model, color.shape[2] == 1)
        net = self._load(name, self.device)
        return color, alpha, name, net, self._model_input(color, net.config.in_nc)

    def predict_qf(self, pixels: np.ndarray, *, model: str = "auto") -> int:
        """The network's own QF for the whole image (no file, no double-JPEG check)."""
        _, _, _, net, image = self._prepare(pixels, model)
        return self._predict_qf(net, image, self.device)

    def _estimate(self, pixels, net, image, source_path, jpeg_settings):
        return quality.estimate_quality(pixels, source_path=source_path, jpeg_settings=jpeg_settings,
                                        predict=lambda _p: self._predict_qf(net, image, self.device))

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
        color, alpha, name, net, image = self._prepare(pixels, model)
        warns = list(self._device_warnings)

        if qf is None or qf == "auto":
            # The double-JPEG search assumes pixel [0, 0] sits on the last save's 8x8 grid.
            ox, oy = (int(v) for v in origin)
            on_grid = pixels[(-oy) % 8:, (-ox) % 8:] if min(pixels.shape[:2]) > 8 else pixels
            est = self._estimate(on_grid, net, image, source_path, jpeg_settings)
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
                      name, device, warns)

    def _run(self, name, image, qf_value, tile, progress, cancel, warns):
        """Tiled inference with the out-of-memory ladder: halve the tile to 128, then the CPU."""
        device = self.device
        while True:
            net = self._load(name, device)
            size = int(tile) if tile else self.default_tile(net, device)
            overlap = min(OVERLAP, max(tiling.MIN_OVERLAP, size // 4 // 8 * 8))

            def fn(a, net=net, device=device):
                x = self._to_tensor(np.clip(a, 0, 1), device)
                y = self._forward(net, x, qf_value, device)
                return y[0].float().permute(1, 2, 0).cpu().numpy()

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
