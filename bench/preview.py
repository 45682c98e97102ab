"""How the dialogs' preview feels: the plug-ins' own requests through the client.

    python -m bench.preview [--runs 7] [--runtime auto|torch|openvino]

For each plug-in's preview region (GIMP: 200 px plus its 32 px context; Krita:
384x288 plus 32 px) this starts a fresh worker the way a dialog does, and times
1. the first preview after the dialog opens: worker start, hello, the QF estimate
   from the file's tables, and the first restore (target < 2 s);
2. a slider move with the worker warm: one restore at a new manual QF (target
   < 0.3 s), median of --runs.
The OpenVINO cache is a fresh folder at first, so the first run also shows the
one-time conversion; a second dialog (a new worker) then starts from the cache.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from bench.roundtrip import ROOT, test_image
from core.frontend.client import Worker, pixel_format

REGIONS = {"GIMP": (200 + 2 * 32, 200 + 2 * 32), "Krita": (384 + 2 * 32, 288 + 2 * 32)}


def jpeg_photo(path: str, size=(1024, 768), quality=20) -> np.ndarray:
    img = test_image(*size)
    Image.fromarray(img).save(path, quality=quality)
    return np.asarray(Image.open(path).convert("RGB"))


def one_dialog(photo, path, region, runtime, runs) -> tuple:
    """(seconds to the first preview, [seconds per slider move]) for one fresh worker."""
    w, h = region
    crop = np.ascontiguousarray(photo[160:160 + h, 200:200 + w])
    fmt = pixel_format(w, h, "u8", "RGB")
    opened = time.perf_counter()
    worker = Worker(python=sys.executable, core_path=str(ROOT), timeout=600)
    try:
        worker.hello()
        est = worker.estimate(crop.tobytes(), fmt, source_path=path)
        worker.restore(crop.tobytes(), fmt, model="compact", qf=int(est["qf"]), origin=(200, 160),
                       runtime=runtime)
        first = time.perf_counter() - opened
        moves = []
        for i in range(runs):
            t = time.perf_counter()
            worker.restore(crop.tobytes(), fmt, model="compact", qf=20 + 5 * i, origin=(200, 160),
                           runtime=runtime)
            moves.append(time.perf_counter() - t)
    finally:
        worker.close()
    return first, moves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--runtime", default="auto")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp()
    os.environ["FBCNN_CACHE_DIR"] = os.path.join(work, "cache")  # the worker inherits it
    path = os.path.join(work, "photo.jpg")
    photo = jpeg_photo(path)
    print(f"runtime {args.runtime}, load average {os.getloadavg()[0]:.1f}")
    for plugin, region in REGIONS.items():
        for start in ("first dialog", "second dialog"):
            first, moves = one_dialog(photo, path, region, args.runtime, args.runs)
            print(f"  {plugin} {region[0]}x{region[1]}, {start}: first preview {first:.2f} s "
                  f"(target < 2 s); slider move median {statistics.median(moves):.3f} s "
                  f"(target < 0.3 s), runs {', '.join(f'{m:.3f}' for m in moves)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
