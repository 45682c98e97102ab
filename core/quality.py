"""JPEG quality (QF 1..100) of an image: from the file, from double compression, or the network.

Three sources, in the precedence fixed by docs/contracts.md:

- ``file``: the quantization tables of the JPEG the pixels came from (read with
  Pillow, or GIMP's ``jpeg-settings`` parasite). They describe only the last save.
- ``double-jpeg``: a re-saved JPEG whose first save sits on a shifted 8x8 grid still
  carries the first, usually stronger, compression. We find it by re-quantizing the
  luma at every grid shift with the IJG tables of candidate qualities: at the first
  save's shift and quality the DCT coefficients already lie on that lattice, so the
  re-quantization error dips far below the error at the other shifts (the idea behind
  FBCNN-D). This wins over the file when its QF is lower.
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
# IJG tables (JPEG standard, Annex K), natural (row-major) order, and their scaling.

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
_LUMA_TABLES = {b: np.stack([ijg_table(IJG_LUMA, int(q), b) for q in QUALITIES]) for b in (True, False)}
_CHROMA_TABLES = {b: np.stack([ijg_table(IJG_CHROMA, int(q), b) for q in QUALITIES]) for b in (True, False)}


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
    tables = [(luma, _LUMA_TABLES)]
    if chroma is not None:
        tables.append((_check_table(chroma, "chroma"), _CHROMA_TABLES))

    for baseline in (True, False):
        same = np.ones(len(QUALITIES), bool)
        for t, ref in tables:
            same &= (ref[baseline] == t).all(axis=1)
        if same.any():
            # Each quality gives distinct tables, so at most one matches.
            return {"qf": int(QUALITIES[np.argmax(same)]), "exact": True, "distance": 0.0,
                    "baseline": baseline}

    dist = np.zeros(len(QUALITIES))
    count = 0
    for t, ref in tables:
        dist += np.abs(np.log2(t[None, :] / ref[True])).sum(axis=1)
        count += 64
    dist /= count
    best = int(np.argmin(dist))
    out = {"qf": int(QUALITIES[best]), "exact": False, "distance": round(float(dist[best]), 4)}
    # Per-table nearest qualities show encoders that scale luma and chroma differently.
    out["luma_qf"] = int(QUALITIES[np.argmin(np.abs(np.log2(luma[None, :] / _LUMA_TABLES[True])).sum(1))])
    if chroma is not None:
        c = tables[1][0]
        out["chroma_qf"] = int(QUALITIES[np.argmin(np.abs(np.log2(c[None, :] / _CHROMA_TABLES[True])).sum(1))])
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


def luma(pixels: np.ndarray) -> np.ndarray:
    """HxW luma on the 0..255 scale (BT.601 full range, as JPEG and OpenCV), float32.

    ``pixels`` have been through check_pixels.
    Not rounded to 8 bits: rounding would add noise on top of the lattice we look for.
    Alpha is ignored; 16-bit data is scaled by 1/257 so 8-bit JPEG values come back
    exactly.
    """
    scale = {np.uint8: 1.0, np.uint16: 1.0 / 257.0}.get(pixels.dtype.type, 255.0)
    if pixels.shape[2] <= 2:
        y = pixels[:, :, 0].astype(np.float32)
    else:
        y = pixels_mod.luma(pixels)[:, :, 0]
    return y * np.float32(scale)


# ---------------------------------------------------------------------------
# double-jpeg source

WINDOW = 320            # side of the analysed luma window, a multiple of 8
MIN_WINDOW = 64         # below this there are too few blocks to trust a minimum
# First pass over qualities, at all 64 shifts, to find the shift. The dip at the
# first save's shift is sharp towards lower qualities but stays low for a while
# towards higher ones, so a 10-step grid still sees it; the second pass (one shift,
# single steps) finds the quality.
COARSE_QFS = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98)
MAX_FIRST_QF = 90       # a first save above this is near-lossless: not worth a claim
DIP_MAX = 0.62          # error ratio at the dip must be below this ...
RISE_MIN = 0.25         # ... and climb back by this much at finer qualities
DEEP_DIP = 0.2          # a dip this deep needs no climb (a shifted crop with no later save:
                        # every finer divisor lattice matches too, so the ratio stays low)
DIP_SLACK = 0.15        # a coarser dip this close to the deepest one is the true quality
FLAT_MSE = 0.25         # reference re-quantization error (per pixel, QF 50) of a flat window

# The 8x8 orthonormal DCT-II (JPEG's FDCT is this transform).
_n = np.arange(8)
_DCT = np.sqrt(2.0 / 8) * np.cos((2 * _n[None, :] + 1) * _n[:, None] * np.pi / 16)
_DCT[0] /= np.sqrt(2.0)
_DCT = _DCT.astype(np.float32)

# Shift classes: a shift in the same row or column as the last save's grid (0, 0)
# is half-aligned with it, which lowers its error at fine qualities. Comparing each
# shift only with shifts of its own class cancels that bias. Shift 0 itself is
# compared with the unaligned class 3.
_SHIFTS = [(dy, dx) for dy in range(8) for dx in range(8)]
_CLASS = np.array([0 if s == (0, 0) else 1 if s[0] == 0 else 2 if s[1] == 0 else 3 for s in _SHIFTS])
_REF_CLASS = {0: 3, 1: 1, 2: 2, 3: 3}


def _pick_window(h: int, w: int, n: int, y_of) -> tuple[int, int]:
    """Top-left (multiples of 8) of the most textured n+8 window among a 3x3 grid.

    Flat areas (sky, background) carry no quantization evidence, so a plain centre
    crop can miss a re-saved photo. ``y_of(top, left, size)`` yields luma.
    """
    side = n + 8
    tops = sorted({(h - side) * k // 4 // 8 * 8 for k in (1, 2, 3)})
    lefts = sorted({(w - side) * k // 4 // 8 * 8 for k in (1, 2, 3)})
    best, where = -1.0, (tops[len(tops) // 2], lefts[len(lefts) // 2])
    for t in tops:
        for l in lefts:
            y = y_of(t, l, side)[::2, ::2]
            texture = float(np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean())
            if texture > best:
                best, where = texture, (t, l)
    return where


def _block_dct(y: np.ndarray, n: int) -> np.ndarray:
    """DCT coefficients of the 8x8 blocks of an n x n window at each of the 64 shifts.

    y is (n+8) x (n+8), level-shifted like JPEG so the DC lattice lines up.
    Returns (64, blocks, 8, 8) float32.
    """
    k = n // 8
    out = np.empty((64, k * k, 8, 8), np.float32)
    for i, (dy, dx) in enumerate(_SHIFTS):
        b = y[dy:dy + n, dx:dx + n].reshape(k, 8, k, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
        out[i] = _DCT @ b @ _DCT.T
    return out


def _requant_error(coefs: np.ndarray, qfs) -> np.ndarray:
    """Squared error of re-quantizing with the IJG luma table of each QF: (shifts, len(qfs)).

    By Parseval this is the pixel error of a JPEG round trip at that quality before
    the decoder's rounding, i.e. what re-saving with Pillow measures, without its
    rounding noise and many times faster. Works through a few shifts at a time so
    the passes over the coefficients stay in the CPU cache.
    """
    flat = coefs.reshape(coefs.shape[0], coefs.shape[1], 64)
    out = np.empty((flat.shape[0], len(qfs)))
    step = max(1, _CHUNK // (flat.shape[1] * 64))
    tables = _LUMA_TABLES[True][np.asarray(qfs) - 1].astype(np.float32)
    for a in range(0, flat.shape[0], step):
        c = flat[a:a + step]
        t = np.empty_like(c)
        r = np.empty_like(c)
        for j, q in enumerate(tables):
            # error = q * (c/q - round(c/q)); sum its square per frequency, then weight by q^2
            np.multiply(c, 1.0 / q, out=t)
            np.rint(t, out=r)
            t -= r
            per_freq = np.einsum("sbf,sbf->sf", t, t)
            out[a:a + step, j] = per_freq @ (q.astype(np.float64) ** 2)
    return out


_CHUNK = 1 << 18        # coefficients per block of work (1 MiB of float32)


def _ratios(err: np.ndarray) -> np.ndarray:
    """err (64, Q) -> each shift's error over the median of its reference class."""
    ratio = np.empty_like(err)
    for s in range(64):
        ref = np.median(err[_CLASS == _REF_CLASS[_CLASS[s]]], axis=0)
        ratio[s] = err[s] / np.maximum(ref, 1e-12)
    return ratio


def _dip_prominence(curve: np.ndarray, qfs) -> float:
    """How far the ratio curve falls to a point (QF <= MAX_FIRST_QF) and climbs after it.

    A lattice match is a dip: the ratio is ~1 at coarser qualities, drops at the
    first save's quality and climbs back at finer ones (unless no later save added
    noise, then it drops further). A shift half-aligned with the last save has
    ratios falling steadily with quality instead, and a random shift stays near 1.
    """
    best = 0.0
    for i, q in enumerate(qfs):
        if q > MAX_FIRST_QF:
            break
        fall = float(curve[:i].max() - curve[i]) if i else 0.0
        climb = float(curve[i + 1:].max() - curve[i]) if i + 1 < len(qfs) else 0.0
        best = max(best, max(fall, 0.0) + max(climb, 0.0))
    return best


class _Errors:
    """Re-quantization errors per (shift, QF), computed once per analysed window.

    The second pass looks at the candidate shift and at shift 0 against the same
    reference shifts over overlapping qualities; sharing them halves its cost.
    """

    def __init__(self, coefs: np.ndarray):
        self.coefs = coefs
        self.known: dict[tuple[int, int], float] = {}

    def get(self, shifts, qfs) -> np.ndarray:
        for s in shifts:
            todo = [q for q in qfs if (s, q) not in self.known]
            if todo:
                for q, e in zip(todo, _requant_error(self.coefs[s:s + 1], todo)[0]):
                    self.known[(s, q)] = float(e)
        return np.array([[self.known[(s, q)] for q in qfs] for s in shifts])


def _refine(errors: _Errors, shift: int, coarse_qfs, coarse_curve: np.ndarray,
            max_qf: int = 100) -> tuple[int, float]:
    """Single-step QF of the dip at ``shift``; returns (qf, ratio at the dip).

    Coefficients on the lattice of a quality also lie on the lattices of its
    divisors, i.e. of some finer qualities (QF 25's steps are twice QF 50's), so
    the coarse pass may find a finer multiple of the true dip. Every quality up to
    the coarse minimum is therefore searched, and the coarsest clear dip wins.
    Only this shift and a third of its reference class are re-quantized, which
    keeps this pass cheap.
    """
    allowed = [i for i, q in enumerate(coarse_qfs) if q <= max_qf]
    i = min(allowed, key=lambda k: coarse_curve[k])
    hi = coarse_qfs[i + 1] - 1 if i + 1 < len(coarse_qfs) else 100
    qfs = list(range(1, min(hi, max_qf) + 1))
    refs = np.flatnonzero(_CLASS == _REF_CLASS[_CLASS[shift]])
    refs = refs[refs != shift][::3] if len(refs) > 12 else refs[refs != shift]
    err = errors.get([shift] + [int(r) for r in refs], qfs)
    curve = err[0] / np.maximum(np.median(err[1:], axis=0), 1e-12)
    best = float(curve.min())
    for j, r in enumerate(curve):
        local_min = (j == 0 or r <= curve[j - 1]) and (j + 1 == len(curve) or r <= curve[j + 1])
        if local_min and r < DIP_MAX and r <= best + DIP_SLACK:
            return qfs[j], float(r)
    j = int(np.argmin(curve))
    return qfs[j], float(curve[j])


def _double_jpeg(px: np.ndarray) -> tuple[Optional[Estimate], dict]:
    """``double_jpeg`` plus what was measured, also when nothing was found.

    ``px`` has been through check_pixels.
    """
    h, w = px.shape[:2]
    n = min(WINDOW, (min(h, w) - 8) // 8 * 8)
    if n < MIN_WINDOW:
        return None, {"checked": False, "reason": f"image smaller than {MIN_WINDOW + 8} px"}

    def y_of(t, l, side):
        return luma(px[t:t + side, l:l + side])

    top, left = _pick_window(h, w, n, y_of)
    coefs = _block_dct(y_of(top, left, n + 8) - np.float32(128.0), n)

    qfs = list(COARSE_QFS)
    err = _requant_error(coefs, qfs)
    info = {"checked": True, "window": [int(left), int(top), n + 8]}
    ref_mse = float(np.median(err[_CLASS == 3, qfs.index(50)])) / (n * n)
    if ref_mse < FLAT_MSE:
        info.update(found=False, reason="window too flat to judge")
        return None, info

    ratio = _ratios(err)
    prominence = np.array([_dip_prominence(ratio[s], qfs) if s else -1.0 for s in range(64)])
    s = int(np.argmax(prominence))
    errors = _Errors(coefs)
    qf, dip = _refine(errors, s, qfs, ratio[s], MAX_FIRST_QF)
    finer = [ratio[s, i] for i, q in enumerate(qfs) if q > qf]
    rise = float(max(finer) - dip) if finer else 0.0
    last_qf, last_ratio = _refine(errors, 0, qfs, ratio[0])
    last_visible = last_ratio < DIP_MAX
    info.update(shift=[int(_SHIFTS[s][0]), int(_SHIFTS[s][1])], dip=round(dip, 3), rise=round(rise, 3),
                candidate_qf=int(qf), last_qf_estimate=int(last_qf) if last_visible else None,
                last_ratio=round(last_ratio, 3))
    is_dip = dip < DEEP_DIP or (dip < DIP_MAX and rise > RISE_MIN)
    # A first save finer than a visible last save cannot survive it: the last,
    # coarser quantization on another grid wipes the finer lattice out. Such a dip
    # is the last save's own blocking seen from a neighbouring shift.
    if is_dip and not (last_visible and qf >= last_qf):
        info["found"] = True
        return Estimate(int(qf), "double-jpeg", info), info
    info["found"] = False
    return None, info


def double_jpeg(pixels_u8_rgb_or_gray: np.ndarray) -> Optional[Estimate]:
    """Dominant QF of a non-aligned re-saved JPEG, or None if no double compression shows.

    Pixel [0, 0] must sit on the last save's 8x8 grid. ``details["shift"]`` is
    (dy, dx) of the first save's grid in these pixels, ``last_qf_estimate`` the
    last save's QF as the pixels show it.
    """
    return _double_jpeg(check_pixels(pixels_u8_rgb_or_gray))[0]


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
