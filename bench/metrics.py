"""Shared measuring helpers for the benchmarks (and the training log)."""
from __future__ import annotations

import io
import math
import pathlib

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"


def jpeg(rgb: np.ndarray, qf: int) -> np.ndarray:
    """Encode/decode through libjpeg with 4:2:0 chroma, as real JPEGs do."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(qf), subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(peak ** 2 / max(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on 8-bit images (Gaussian window 11, sigma 1.5), averaged over channels."""
    import torch
    from pytorch_msssim import ssim as _ssim
    ta = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(b.astype(np.float32)).permute(2, 0, 1)[None]
    return float(_ssim(ta, tb, data_range=255.0, size_average=True))


def mcmaster() -> list[tuple[str, np.ndarray]]:
    folder = SHARED / "val" / "McMaster"
    if not folder.is_dir():
        raise SystemExit(f"validation set missing: {folder} (the benchmarks need ../shared)")
    return clean_images(folder)


def clean_images(folder: pathlib.Path) -> list[tuple[str, np.ndarray]]:
    """The PNGs in `folder` as (name, RGB array)."""
    out = [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in sorted(folder.glob("*.png"))]
    if not out:
        raise SystemExit(f"no PNG images in {folder}")
    return out


def high_frequency_energy(img: np.ndarray) -> float:
    """Mean squared Laplacian of the luma: what a stronger deblocking removes."""
    y = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap ** 2))


def resave(rgb: np.ndarray, q1: int, q2: int, shift=(4, 4)) -> np.ndarray:
    """A re-saved web image: JPEG at q1, crop (dy, dx) px off the top and left, JPEG at q2."""
    dy, dx = shift
    return jpeg(np.ascontiguousarray(jpeg(rgb, q1)[dy:, dx:]), q2)
