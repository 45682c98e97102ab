"""JPEG quality (QF 1..100) of an image: from the file, from double compression, or the network.

Three sources, in the precedence fixed by docs/contracts.md:

- ``file``: the quantization tables of the JPEG the pixels came from (read with
  Pillow, or GIMP's ``jpeg-settings`` parasite). They describe only the last save.
- ``double-jpeg``: a re-saved JPEG whose first save sits on a shifted 8x8 grid still
  carries the first, usually stronger, compression (``core.double_jpeg`` finds it).
  This wins over the file when its QF is lower.
- ``network``: the caller's predictor (the engine's QF head), asked only when the
  other two found nothing.

All numbers are user-facing QF (1..100, IJG scale).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from core import double_jpeg as double_jpeg_search
from core import ijg
from core import pixels as pixels_mod

# Returned only when no source found anything and no predictor was given. The engine
# always passes its predictor, so this reaches no user of the plug-ins; 75 is the IJG
# and Pillow default quality, the most common QF of an unknown JPEG.
DEFAULT_QF = 75
DEFAULT_SOURCE = "default"


@dataclass
class Estimate:
    qf: int
    source: str
    details: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# file source

def match_ijg(luma: np.ndarray, chroma: Optional[np.ndarray] = None) -> dict:
    """The IJG quality whose tables equal these, or the nearest one.

    Returns ``{"qf", "exact", "distance", ...}``. ``distance`` is the mean
    |log2(step / IJG step)| over all table entries at the chosen quality: 0 for an
    exact match, 0.1 means steps about 7 % off on average. Log ratios because a
    step's effect on artifacts is relative; absolute differences would let the few
    large high-frequency steps decide.
    """
    luma = _check_table(luma, "luma")
    tables = [(luma, ijg.LUMA_TABLES)]
    if chroma is not None:
        tables.append((_check_table(chroma, "chroma"), ijg.CHROMA_TABLES))

    for baseline in (True, False):
        same = np.ones(len(ijg.QUALITIES), bool)
        for t, ref in tables:
            same &= (ref[baseline] == t).all(axis=1)
        if same.any():
            # Each quality gives distinct tables, so at most one matches.
            return {"qf": int(ijg.QUALITIES[np.argmax(same)]), "exact": True, "distance": 0.0,
                    "baseline": baseline}

    dist = np.zeros(len(ijg.QUALITIES))
    count = 0
    for t, ref in tables:
        dist += np.abs(np.log2(t[None, :] / ref[True])).sum(axis=1)
        count += 64
    dist /= count
    best = int(np.argmin(dist))
    out = {"qf": int(ijg.QUALITIES[best]), "exact": False, "distance": round(float(dist[best]), 4)}
    # Per-table nearest qualities show encoders that scale luma and chroma differently.
    out["luma_qf"] = int(ijg.QUALITIES[np.argmin(np.abs(np.log2(luma[None, :] / ijg.LUMA_TABLES[True])).sum(1))])
    if chroma is not None:
        c = tables[1][0]
        out["chroma_qf"] = int(ijg.QUALITIES[np.argmin(np.abs(np.log2(c[None, :] / ijg.CHROMA_TABLES[True])).sum(1))])
    return out


def _check_table(t, name: str) -> np.ndarray:
    a = np.asarray(t, dtype=np.int64).reshape(-1)
    if a.size != 64:
        raise ValueError(f"{name} quantization table must have 64 entries, got {a.size}")
    if a.min() < 1 or a.max() > 65535:
        raise ValueError(f"{name} quantization table entries must be 1..65535, got {a.min()}..{a.max()}")
    return a


def parse_jpeg_settings(data) -> dict:
    """Decode GIMP's ``jpeg-settings`` parasite.

    Layout (GIMP's jpeg plug-in): colour space, IJG quality, C components, T tables,
    C x 2 sampling factors, then T x 64 big-endian uint16 tables in natural order.
    GIMP stores the tables only when they are not exact IJG tables, so T == 0 means
    the quality byte is exact.
    """
    if isinstance(data, str):
        raise ValueError("jpeg_settings must be bytes; decode a hex string with bytes.fromhex() first")
    try:
        b = bytes(data)
    except TypeError:
        raise ValueError(f"jpeg_settings must be bytes, not {type(data).__name__}") from None
    if len(b) < 4:
        raise ValueError(f"jpeg_settings parasite too short ({len(b)} bytes; the header alone is 4)")
    colorspace, q, ncomp, ntab = b[0], b[1], b[2], b[3]
    if not 1 <= ncomp <= 4:
        raise ValueError(f"jpeg_settings parasite: {ncomp} components (expected 1..4)")
    if ntab > 4:
        raise ValueError(f"jpeg_settings parasite: {ntab} tables (a JPEG has at most 4)")
    need = 4 + 2 * ncomp + 128 * ntab
    if len(b) < need:
        raise ValueError(f"jpeg_settings parasite truncated: {len(b)} bytes, its header announces {need}")
    sampling = [(b[4 + 2 * i], b[5 + 2 * i]) for i in range(ncomp)]
    off = 4 + 2 * ncomp
    tables = [np.frombuffer(b, dtype=">u2", count=64, offset=off + 128 * t).astype(np.int64)
              for t in range(ntab)]
    if ntab == 0 and not 1 <= q <= 100:
        raise ValueError(f"jpeg_settings parasite has no tables and quality {q}, not 1..100")
    return {"colorspace": colorspace, "quality": q, "components": ncomp, "sampling": sampling,
            "tables": tables, "extra_bytes": len(b) - need}


def _file_quality(path=None, jpeg_settings=None) -> tuple[Optional[Estimate], str]:
    """``file_quality`` plus, when it finds nothing, the reason why."""
    if jpeg_settings is not None:
        p = parse_jpeg_settings(jpeg_settings)
        if not p["tables"]:
            return Estimate(p["quality"], "file", {"from": "jpeg-settings", "exact": True, "distance": 0.0}), ""
        chroma = p["tables"][1] if len(p["tables"]) > 1 else None
        m = match_ijg(p["tables"][0], chroma)
        m["from"] = "jpeg-settings"
        m["gimp_quality"] = p["quality"]
        return Estimate(m.pop("qf"), "file", m), ""
    if path is None:
        return None, "no file given"
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ValueError(f"source_path must be a path, not {type(path).__name__}")
    tables, reason = _read_tables(path)
    if tables is None:
        return None, reason
    m = match_ijg(*tables)
    m["from"] = "file"
    return Estimate(m.pop("qf"), "file", m), ""


def _read_tables(path) -> tuple[Optional[tuple], str]:
    """(luma table, chroma table or None) of a JPEG file, or None and why not."""
    try:
        with Image.open(path) as im:
            # Cameras' multi-picture files open as MPO, a JPEG with extra frames.
            if im.format not in ("JPEG", "MPO"):
                return None, f"not a JPEG file ({im.format or 'unknown format'})"
            q = dict(getattr(im, "quantization", None) or {})
            # im.layer maps each component to its table: (id, h, v, table index).
            layer = list(getattr(im, "layer", None) or [])
    except FileNotFoundError:
        return None, f"file not found: {os.fsdecode(path)}"
    except (UnidentifiedImageError, OSError) as e:
        return None, f"unreadable file: {e}"
    if not q:
        return None, "JPEG without quantization tables"
    luma_idx = layer[0][3] if layer else min(q)
    chroma_idx = layer[1][3] if len(layer) > 1 else None
    if luma_idx not in q or (chroma_idx is not None and chroma_idx not in q):
        return None, "JPEG refers to a quantization table it does not define"
    chroma = q[chroma_idx] if chroma_idx is not None else None
    return (np.asarray(q[luma_idx]), None if chroma is None else np.asarray(chroma)), ""


def file_quality(path=None, jpeg_settings: Optional[bytes] = None) -> Optional[Estimate]:
    """QF of the last save from the JPEG's tables (the parasite wins over the path).

    None when there is no JPEG to read (no path, a PNG, a missing file); a malformed
    parasite raises ValueError.
    """
    return _file_quality(path, jpeg_settings)[0]


# ---------------------------------------------------------------------------
# pixels

def check_pixels(pixels) -> np.ndarray:
    """pixels checked (core.pixels.check), an HxW gray array too, as HxWxC."""
    return pixels_mod.check(pixels, allow_2d=True)


def double_jpeg(pixels_u8_rgb_or_gray: np.ndarray) -> Optional[Estimate]:
    """Dominant QF of a non-aligned re-saved JPEG, or None if no double compression shows.

    Pixel [0, 0] must sit on the last save's 8x8 grid. ``details["shift"]`` is
    (dy, dx) of the first save's grid in these pixels, ``last_qf_estimate`` the
    last save's QF as the pixels show it.
    """
    return _double_jpeg(check_pixels(pixels_u8_rgb_or_gray))[0]


def _double_jpeg(px: np.ndarray) -> tuple[Optional[Estimate], dict]:
    """``double_jpeg`` plus what was measured, also when nothing was found."""
    qf, info = double_jpeg_search.search(px)
    return (None if qf is None else Estimate(qf, "double-jpeg", info)), info


# ---------------------------------------------------------------------------
# all sources

def estimate_quality(pixels, source_path=None, jpeg_settings=None,
                     predict: Optional[Callable[[np.ndarray], int]] = None) -> Estimate:
    """The QF to remove, with its source and how it was found.

    Precedence: a double compression with a lower QF than the file's beats the file;
    else the file; else the double compression (pixels only); else ``predict``;
    else DEFAULT_QF with source ``default``.

    ``details`` (JSON-ready): ``file`` (the file's finding: qf, exact, distance,
    from; or found False and the reason), ``double_jpeg`` (the search: shift, dip,
    rise, candidate_qf, last_qf_estimate, found; or the reason it was skipped),
    ``last_qf`` (the last save's QF, when known) and ``reason`` for the default.
    """
    px = check_pixels(pixels)
    if predict is not None and not callable(predict):
        raise ValueError(f"predict must be callable(pixels) -> int, not {type(predict).__name__}")
    file_est, file_reason = _file_quality(source_path, jpeg_settings)
    dbl, dbl_info = _double_jpeg(px)
    details = {"double_jpeg": dbl_info}
    if file_est is not None:
        details["file"] = dict(file_est.details, qf=file_est.qf)
    else:
        details["file"] = {"found": False, "reason": file_reason}

    if file_est is not None:
        if dbl is not None and dbl.qf < file_est.qf:
            return Estimate(dbl.qf, "double-jpeg", dict(details, last_qf=file_est.qf))
        return Estimate(file_est.qf, "file", dict(details, last_qf=file_est.qf))
    if dbl is not None:
        return Estimate(dbl.qf, "double-jpeg", dict(details, last_qf=dbl_info["last_qf_estimate"]))
    if predict is not None:
        qf = predict(pixels)
        if isinstance(qf, float) and qf.is_integer():
            qf = int(qf)
        if not isinstance(qf, (int, np.integer)) or isinstance(qf, bool) or not 1 <= int(qf) <= 100:
            raise ValueError(f"predict returned {qf!r}; it must return an integer QF 1..100")
        return Estimate(int(qf), "network", details)
    return Estimate(DEFAULT_QF, DEFAULT_SOURCE,
                    dict(details, reason=f"no file, no double compression and no predictor: "
                                         f"default QF {DEFAULT_QF}"))
