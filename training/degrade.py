"""JPEG degradations used for training (paper's recipe), built on Pillow's libjpeg."""
from __future__ import annotations

import random

import numpy as np

# The JPEG round trip is the benchmarks' own, so training and measuring degrade alike.
from bench.metrics import jpeg  # noqa: F401 - re-exported for training.data and the tests

QF_GRID = (10, 20, 30, 40, 50, 60, 70)


def draw_qf(rng: random.Random, grid=QF_GRID) -> int:
    """75% from the grid, 25% uniform in 5..95 (the paper's single-JPEG distribution with its grid {10..70})."""
    return rng.choice(grid) if rng.random() < 0.75 else rng.randint(5, 95)


def single(clean: np.ndarray, rng: random.Random, size: int, grid=QF_GRID):
    qf = draw_qf(rng, grid)
    patch = clean[:size, :size]
    return jpeg(patch, qf), patch, qf


def double(clean: np.ndarray, rng: random.Random, size: int, grid=QF_GRID):
    """y = JPEG(shift(JPEG(x, QF1)), QF2), non-aligned (FBCNN-A style).

    The label is the dominant (lower) QF: it sets how much information is gone, so
    it is what the decoder must be told to remove. A label of QF2 would tell the
    network to keep the first compression's blocking.
    """
    q1, q2 = draw_qf(rng, grid), draw_qf(rng, grid)
    dy, dx = rng.randrange(8), rng.randrange(8)
    if dy == 0 and dx == 0:
        dx = rng.randrange(1, 8)
    first = jpeg(clean[:size + 8, :size + 8], q1)
    shifted = np.ascontiguousarray(first[dy:dy + size, dx:dx + size])
    return jpeg(shifted, q2), clean[dy:dy + size, dx:dx + size], min(q1, q2)
