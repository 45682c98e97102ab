"""Overlapping tiles on the image's 8x8 JPEG grid, blended with a feathered window."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

GRID = 8
MIN_TILE = 128
MIN_OVERLAP = 32
WRITE_PIXELS = 2_000_000  # finished rows go to the writer in pieces of about this many pixels


@dataclass(frozen=True)
class Tile:
    y0: int
    y1: int
    x0: int
    x1: int


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end pairs covering 0..length, none longer than `tile`; every start is a multiple of 8.

    Starting on the grid matters: the network has seen JPEG blocks aligned with its
    own 8x8 padding grid, so a tile that cut a block would see it as a different image.
    The spans are as even as the grid allows: a 1024 px side under a 960 px tile is
    two spans of 544, not 960 and 128 + overlap (that cost 3.7x the pixels of compute).
    """
    if tile % GRID or overlap % GRID:
        raise ValueError("tile and overlap must be multiples of 8")
    if overlap >= tile:
        raise ValueError("the overlap must be smaller than the tile")
    if length <= tile:
        return [(0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    stride = -(-(length - overlap) // (n * GRID)) * GRID
    starts = [k * stride for k in range(n) if k * stride + overlap < length]
    return [(a, b) for a, b in zip(starts, [s + stride + overlap for s in starts[:-1]] + [length])]


def tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    return [Tile(y0, y1, x0, x1) for y0, y1 in spans(height, tile, overlap)
            for x0, x1 in spans(width, tile, overlap)]


def _ramp(n: int, lead: bool, trail: bool, overlap: int) -> np.ndarray:
    w = np.ones(n, np.float32)
    r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    k = min(overlap, n)
    if lead:
        w[:k] = np.minimum(w[:k], r[:k])
    if trail:
        w[n - k:] = np.minimum(w[n - k:], r[:k][::-1])
    return w


def feather(t: Tile, height: int, width: int, overlap: int) -> np.ndarray:
    """Weights falling to ~0 at edges shared with a neighbour, 1 at the image border."""
    wy = _ramp(t.y1 - t.y0, t.y0 > 0, t.y1 < height, overlap)
    wx = _ramp(t.x1 - t.x0, t.x0 > 0, t.x1 < width, overlap)
    return wy[:, None] * wx[None, :]


def run_tiled(height: int, width: int, read: Callable[[Tile], np.ndarray],
              fn: Callable[[np.ndarray], np.ndarray],
              write: Callable[[int, int, np.ndarray], None], tile: int, overlap: int,
              progress: Optional[Callable[[int, int], None]] = None,
              cancelled: Optional[Callable[[], bool]] = None) -> bool:
    """Restore a height x width image tile by tile, holding one band of rows at a time.

    ``read(tile)`` gives a tile's input (float32), ``fn`` restores it, and
    ``write(y0, y1, rows)`` receives the finished rows (full width, blended,
    float32) top to bottom, each exactly once, a few at a time. Only the band under work is held
    in float, so memory does not grow with the image's height. False when cancelled.
    """
    ys, xs = spans(height, tile, overlap), spans(width, tile, overlap)
    total, done = len(ys) * len(xs), 0
    acc = wsum = None
    base = 0  # acc holds rows base .. base + len(acc)
    for k, (y0, y1) in enumerate(ys):
        for x0, x1 in xs:
            if cancelled is not None and cancelled():
                return False
            t = Tile(y0, y1, x0, x1)
            out = fn(read(t))
            if acc is None:
                acc = np.zeros((y1 - base, width, out.shape[2]), np.float32)
                wsum = np.zeros((y1 - base, width, 1), np.float32)
            elif len(acc) < y1 - base:  # a new band: room for its rows below the carried ones
                grow = y1 - base - len(acc)
                acc = np.concatenate([acc, np.zeros((grow,) + acc.shape[1:], np.float32)])
                wsum = np.concatenate([wsum, np.zeros((grow,) + wsum.shape[1:], np.float32)])
            wt = feather(t, height, width, overlap)[:, :, None]
            acc[y0 - base:y1 - base, x0:x1] += out * wt
            wsum[y0 - base:y1 - base, x0:x1] += wt
            done += 1
            if progress is not None:
                progress(done, total)
        # Rows above the next band's first row get no more tiles: finished.
        final = ys[k + 1][0] if k + 1 < len(ys) else height
        n = final - base
        step = max(GRID, WRITE_PIXELS // width)  # the writer's float temporaries stay small
        for r in range(0, n, step):
            r2 = min(n, r + step)
            write(base + r, base + r2, acc[r:r2] / wsum[r:r2])
        acc, wsum, base = acc[n:].copy(), wsum[n:].copy(), final
    return True


def sample_windows(height: int, width: int, size: int, count: int) -> list[Tile]:
    """Up to `count` grid-aligned windows spread evenly over the image (for QF prediction).

    Never more pixels than the image: where `count` windows would add up to more
    (they overlap on a small image), one window covers the whole image instead.
    """
    if height * width <= count * size * size:
        return [Tile(0, height, 0, width)]
    per_side = max(1, int(np.ceil(np.sqrt(count))))
    ys = np.linspace(0, max(0, height - size), per_side).astype(int) // GRID * GRID
    xs = np.linspace(0, max(0, width - size), per_side).astype(int) // GRID * GRID
    wins = sorted({(int(y), int(x)) for y in ys for x in xs})
    step = max(1, len(wins) // count)
    return [Tile(y, min(height, y + size), x, min(width, x + size)) for y, x in wins[::step][:count]]
