"""The IJG (libjpeg) quantization tables: the JPEG standard's Annex K tables in
natural (row-major) order, scaled for every quality as libjpeg's jpeg_set_quality does.
Pillow, GIMP, Krita and most encoders write these; core.quality matches a file's tables
against them and core.double_jpeg re-quantizes with them."""
from __future__ import annotations

import numpy as np

IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)

IJG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.int64)


def ijg_table(base: np.ndarray, qf: int, baseline: bool = True) -> np.ndarray:
    """libjpeg's jpeg_set_quality: the base table scaled for quality ``qf``.

    ``baseline`` clamps to 255 as Pillow (and most encoders) do; cjpeg without
    -baseline keeps 16-bit steps up to 32767 at low qualities.
    """
    if not 1 <= qf <= 100:
        raise ValueError(f"IJG quality must be 1..100, not {qf}")
    scale = 5000 // qf if qf < 50 else 200 - 2 * qf
    return np.clip((base * scale + 50) // 100, 1, 255 if baseline else 32767)


QUALITIES = np.arange(1, 101)
# [baseline?][quality-1] -> table; both variants so exact matching covers cjpeg too.
LUMA_TABLES = {b: np.stack([ijg_table(IJG_LUMA, int(q), b) for q in QUALITIES]) for b in (True, False)}
CHROMA_TABLES = {b: np.stack([ijg_table(IJG_CHROMA, int(q), b) for q in QUALITIES]) for b in (True, False)}
