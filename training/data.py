"""Training images from ../shared/datasets/train, held in memory as uint8 RGB."""
from __future__ import annotations

import pathlib
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training import degrade


def is_gray(a: np.ndarray) -> bool:
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def load_images(train_dir: pathlib.Path, min_side: int, skip_gray: bool = False) -> list[np.ndarray]:
    """`skip_gray` leaves out images without colour: a colour model learns no chroma from them."""
    images = []
    for p in sorted(train_dir.rglob("*")):
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        im = Image.open(p).convert("RGB")
        if "SunHays80_q75" in str(p):
            # Quality-75 originals: halve with an anti-aliasing filter to hide their 8x8 blocks.
            im = im.resize((im.width // 2, im.height // 2), Image.LANCZOS)
        a = np.asarray(im)
        if min(im.size) >= min_side and not (skip_gray and is_gray(a)):
            images.append(a)
    return images


@dataclass(frozen=True)
class Sampling:
    """How training crops are drawn.

    `min_scale` < 1 zooms each crop out by a random factor in [min_scale, 1]: new
    scales of the same few hundred photographs, so more data in effect.
    `permute_channels` shows each crop in a random order of R, G and B: new colours
    (and new luma, which mixes the channels unequally) from the same photographs.
    Off, neither draws from the rng, so earlier runs' streams are unchanged.
    `qf_grid`: the QFs that three quarters of the samples are compressed at (the rest
    are uniform in 5..95).
    """
    patch: int
    p_double: float = 0.3
    min_scale: float = 1.0
    permute_channels: bool = False
    qf_grid: tuple[int, ...] = degrade.QF_GRID


def augment(a: np.ndarray, rng: random.Random, permute_channels: bool = False) -> np.ndarray:
    k = rng.randrange(4)
    a = np.rot90(a, k)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    if permute_channels:
        a = a[..., rng.sample(range(3), 3)]
    return np.ascontiguousarray(a)


def sample(images, rng: random.Random, s: Sampling):
    """One (degraded, clean, qf) triple as uint8 HxWx3 arrays and an int QF."""
    img = images[rng.randrange(len(images))]
    h, w = img.shape[:2]
    side = src = s.patch + 8
    if s.min_scale < 1:
        src = min(h, w, round(side / rng.uniform(max(s.min_scale, side / min(h, w)), 1.0)))
    y, x = rng.randrange(h - src + 1), rng.randrange(w - src + 1)
    crop = img[y:y + src, x:x + src]
    if src != side:
        crop = np.asarray(Image.fromarray(crop).resize((side, side), Image.LANCZOS))
    crop = augment(crop, rng, s.permute_channels)
    if rng.random() < s.p_double:
        return degrade.double(crop, rng, s.patch, s.qf_grid)
    return degrade.single(crop, rng, s.patch, s.qf_grid)


def batch(images, rng: random.Random, n: int, s: Sampling):
    triples = [sample(images, rng, s) for _ in range(n)]
    lq = np.stack([t[0] for t in triples]).astype(np.float32) / 255
    gt = np.stack([t[1] for t in triples]).astype(np.float32) / 255
    qf = np.array([[1 - t[2] / 100] for t in triples], dtype=np.float32)
    return lq.transpose(0, 3, 1, 2), gt.transpose(0, 3, 1, 2), qf
