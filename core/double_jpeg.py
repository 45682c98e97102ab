"""Non-aligned double JPEG: the first, usually stronger, compression of a re-saved JPEG.

A re-saved JPEG whose first save sits on a shifted 8x8 grid still carries that
save. We re-quantize the luma at every grid shift with the IJG tables of candidate
qualities: at the first save's shift and quality the DCT coefficients already lie on
that lattice, so the re-quantization error dips far below the error at the other
shifts (the idea behind FBCNN-D). ``core.quality`` weighs this against the file's
own tables.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from core import pixels as pixels_mod
from core import ijg

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
    tables = ijg.LUMA_TABLES[True][np.asarray(qfs) - 1].astype(np.float32)
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


def search(px: np.ndarray) -> tuple[Optional[int], dict]:
    """The first save's QF (None when no double compression shows) and what was
    measured, also when nothing was found. ``px`` has been through core.pixels.check
    (HxWxC); pixel [0, 0] sits on the last save's 8x8 grid.
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
        return int(qf), info
    info["found"] = False
    return None, info
