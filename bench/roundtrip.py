"""Worker round-trip overhead: Engine.restore called directly vs through client -> worker -> client.

    python bench/roundtrip.py [--model compact|PATH] [--size 1632x1232] [--runs 3] [--qf 30]

Same image, model and settings on both paths; each path is warmed up once (model
loaded, worker started), then timed `--runs` times, alternating the two so that
background load hits both alike. Prints the medians and the overhead in percent
(target: <= 10% on a 2 MP image).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.frontend.client import Worker, pixel_format  # noqa: E402
from core.engine import Engine  # noqa: E402
from core import weights  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets" / "val"


def test_image(width: int, height: int) -> np.ndarray:
    """A natural photo from the validation set, tiled and cropped to the size; noise without it."""
    from PIL import Image
    # McMaster is colour (Classic5 is gray), so the colour path does real work.
    photos = [p for d in (SHARED / "McMaster", SHARED) if d.is_dir() for p in sorted(d.rglob("*"))
              if p.suffix.lower() in (".png", ".bmp", ".jpg", ".tif")]
    if not photos:
        print(f"(no photos under {SHARED}; using noise)")
        return np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    tile = np.asarray(Image.open(photos[0]).convert("RGB"))
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def model_for_bench(name: str) -> str:
    """The named model if it loads; else compact-architecture random weights (same cost)."""
    if name != "compact" or weights.status("compact") in ("bundled", "downloaded"):
        return name
    import torch
    from core import network
    torch.manual_seed(0)
    path = pathlib.Path(tempfile.mkdtemp()) / "compact_random.pth"
    torch.save(network.build(weights.COMPACT_CONFIG).state_dict(), path)
    print("(compact model not bundled yet: random weights in the compact architecture)")
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="compact")
    ap.add_argument("--size", default="1632x1232", help="WIDTHxHEIGHT (default about 2 MP)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--qf", type=int, default=30, help="manual QF, so both paths do the same work")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    img = test_image(width, height)
    model = model_for_bench(args.model)
    opts = dict(model=model, qf=args.qf)
    fmt = pixel_format(width, height, "u8", "RGB")
    payload = img.tobytes()

    engine = Engine(args.device)
    worker = Worker(python=sys.executable, core_path=str(ROOT), timeout=600)
    try:
        def direct():
            return engine.restore(img.copy(), **opts).pixels

        inside = []  # the worker's own engine time, to split off transport and conversion

        def through_worker():
            out, info = worker.restore(payload, fmt, device=args.device, **opts)
            inside.append(info["seconds"])
            return out

        def timed(fn):
            t = time.perf_counter()
            result = fn()
            return time.perf_counter() - t, result

        # Warm-up: model loads, worker start-up, first-call allocations.
        _, ref = timed(direct)
        _, got = timed(through_worker)
        diff = np.abs(np.frombuffer(got, np.uint8).reshape(img.shape).astype(int) - ref).max()
        t_direct, t_worker = [], []
        inside.clear()
        for _ in range(args.runs):
            t_direct.append(timed(direct)[0])
            t_worker.append(timed(through_worker)[0])
    finally:
        worker.close()

    md, mw = statistics.median(t_direct), statistics.median(t_worker)
    mp = width * height / 1e6
    print(f"image {width}x{height} ({mp:.2f} MP) u8 RGB, model {args.model}, qf {args.qf}, "
          f"device {args.device}, {args.runs} runs each (after one warm-up)")
    print(f"direct Engine.restore : median {md:.3f} s  runs {', '.join(f'{t:.3f}' for t in t_direct)}")
    print(f"client->worker->client: median {mw:.3f} s  runs {', '.join(f'{t:.3f}' for t in t_worker)}")
    overhead = 100.0 * (mw - md) / md
    # Wall-clock medians move with background load; the time spent outside the
    # engine on the worker path (framing, pipes, layout conversion, start of
    # the call) does not, so it is the steadier figure of the two.
    outside = statistics.median(w - i for w, i in zip(t_worker, inside))
    print(f"overhead {mw - md:+.3f} s = {overhead:+.1f}% (target <= 10%); "
          f"max |worker - direct| = {diff} (u8 levels)")
    print(f"engine time inside the worker: median {statistics.median(inside):.3f} s "
          f"(vs {md:.3f} s direct: the same work, so a gap here is load noise)")
    print(f"time outside the engine on the worker path: median {outside * 1000:.1f} ms "
          f"= {100.0 * outside / md:.2f}% of the direct call")
    return 0 if outside <= 0.10 * md else 1


if __name__ == "__main__":
    sys.exit(main())
