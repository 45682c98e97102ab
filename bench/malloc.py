"""Does raising glibc's mmap and trim thresholds still pay? CLI restores, interleaved.

    python -m bench.malloc [--size 4000x3000] [--rounds 3] [--runtime openvino torch]

glibc returns large freed buffers to the kernel and faults them in again on the
next tile. Raising its mmap threshold to 32 MB and its trim threshold to 4 GB
(together; either alone does nothing) keeps them: the engine does that with mallopt
(core.engine.keep_freed_buffers) where it was measured to pay, on the torch CPU
path. Each round runs `fbcnn restore` once with glibc's defaults
(FBCNN_KEEP_FREED=0) and once with the thresholds (FBCNN_KEEP_FREED=1), per runtime;
prints medians of wall time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from PIL import Image

from bench.speed import test_image

MODES = {"default": "0", "thresholds": "1"}   # FBCNN_KEEP_FREED


def one_run(src: str, out: str, runtime: str, env: dict) -> float:
    """Seconds of one CLI restore in a fresh process."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "restore", src, "-o", out, "--qf", "20",
                    "--runtime", runtime], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    os.unlink(out)
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", nargs="+", default=["openvino", "torch"])
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    work = tempfile.mkdtemp()
    src = os.path.join(work, "photo.jpg")
    Image.fromarray(test_image(h, w, seed=4)).save(src, quality=20)
    base = dict(os.environ)
    base["FBCNN_CACHE_DIR"] = os.path.join(work, "cache")
    print(f"{w}x{h}, {args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}")
    for runtime in args.runtime:
        one_run(src, os.path.join(work, "warm.png"), runtime, base)  # converts, fills caches
        times = {"default": [], "thresholds": []}
        for _ in range(args.rounds):
            for name, keep in MODES.items():
                env = dict(base, FBCNN_KEEP_FREED=keep)
                times[name].append(one_run(src, os.path.join(work, "out.png"), runtime, env))
        d, t = statistics.median(times["default"]), statistics.median(times["thresholds"])
        print(f"  {runtime:<9} default {d:6.2f} s, thresholds {t:6.2f} s: {d / t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
