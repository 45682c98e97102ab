"""Host pixel arrays as the engine and the QF estimators take them: one check, and luma.

An image is HxWxC with C in 1..4 (gray, gray+alpha, RGB, RGBA), in uint8, uint16,
float16 or float32 (float on the 0..1 scale).
"""
from __future__ import annotations

import numpy as np

DTYPES = (np.uint8, np.uint16, np.float16, np.float32)
BAND = 256  # rows per finiteness check: no image-sized boolean mask at 400 MP


def check(pixels, *, allow_2d: bool = False) -> np.ndarray:
    """pixels, checked, as HxWxC (an HxW array too when allow_2d, as HxWx1).

    Raises ValueError saying what is wrong; a float image must hold no NaN or infinity.
    """
    if not isinstance(pixels, np.ndarray):
        raise ValueError(f"pixels must be a numpy array, not {type(pixels).__name__}")
    if pixels.dtype.type not in DTYPES:
        raise ValueError(f"unsupported pixel type {pixels.dtype}: the dtype must be uint8, uint16, "
                         "float16 or float32")
    if allow_2d and pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4:
        raise ValueError(f"pixels must be an HxWxC array with C in 1..4 (gray, gray+alpha, RGB, RGBA), "
                         f"got shape {pixels.shape}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"the image is empty (shape {pixels.shape})")
    if pixels.dtype.kind == "f":
        for y in range(0, pixels.shape[0], BAND):
            if not np.isfinite(pixels[y:y + BAND]).all():
                raise ValueError("float pixels contain NaN or infinity")
    return pixels


def colour_channels(pixels: np.ndarray) -> int:
    """1 or 3: a 2nd or 4th channel is alpha."""
    return 3 if pixels.shape[2] >= 3 else 1


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 full-range luma (as JPEG and OpenCV; what the official gray models were
    trained on) of an HxWx3+ array, float32, HxWx1, on the array's own scale."""
    f = rgb[:, :, :3].astype(np.float32, copy=False)
    return (f[:, :, 0:1] * np.float32(0.299) + f[:, :, 1:2] * np.float32(0.587)
            + f[:, :, 2:3] * np.float32(0.114))
