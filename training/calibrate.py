"""Which QF to tell the decoder, for each JPEG quality, measured on training crops.

    python -m training.calibrate core/models/fbcnn_compact.pth

Our compact model restores a QF-q image best when its decoder is told a QF a few
points above q (it learnt "QF q" partly from double JPEGs labelled with their lower
QF, which are more damaged than a single save at q). The engine adds the offset
printed here (core/weights.py, COMPACT_QF_OFFSETS), so the slider's QF means the
file's JPEG quality and auto QF gives the best result. Training images only: the
validation set stays out of it.
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from bench.metrics import psnr
from core.engine import Engine
from training import data, degrade
from training.train import SHARED

QFS = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
OFFSETS = (0, 2, 4, 6, 8, 10)


def crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    images = data.load_images(SHARED / "train", size)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        img = images[rng.randrange(len(images))]
        h, w = img.shape[:2]
        y, x = rng.randrange(h - size + 1) // 8 * 8, rng.randrange(w - size + 1) // 8 * 8
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


def best_offsets(model: str, samples: list[np.ndarray]) -> list[tuple[int, int, float]]:
    """(qf, best offset, dB gained over no offset) per QF in QFS."""
    eng = Engine("cpu")
    rows = []
    for qf in QFS:
        pairs = [(degrade.jpeg(gt, qf), gt) for gt in samples]
        score = [np.mean([psnr(eng.restore(lq, model=model, qf=min(100, qf + off)).pixels, gt) for lq, gt in pairs])
                 for off in OFFSETS]
        k = int(np.argmax(score))
        rows.append((qf, OFFSETS[k], float(score[k] - score[0])))
        print(f"  QF {qf:>2}: " + " ".join(f"+{o}:{s:.3f}" for o, s in zip(OFFSETS, score)), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="a weights file (not a registry name, which would apply the current offsets)")
    ap.add_argument("--crops", type=int, default=32)
    ap.add_argument("--size", type=int, default=192)
    a = ap.parse_args(argv)
    rows = best_offsets(a.model, crops(a.crops, a.size))
    for qf, off, gain in rows:
        print(f"QF {qf:>2}: offset +{off} ({gain:+.3f} dB)")
    print("COMPACT_QF_OFFSETS = (" + ", ".join(f"({qf}, {off})" for qf, off, _ in rows) + ")")


if __name__ == "__main__":
    main()
