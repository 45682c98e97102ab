"""Images per second of `fbcnn restore` over one set of pictures (issue #20's bench):
one process (`--jobs 1`, the engine in the command's own process), `--jobs 2..N`
worker processes, and `--ray` on a local two-node cluster (bench/ray_cluster.py: one
CPU a node, so one actor a node with one thread), each a whole command in a fresh
process (start-up, model load, reading, restoring, writing: what a user waits for;
for Ray also connecting and starting the actors, not starting the cluster, which
outlives a job), best of --repeat runs.

    python -m bench.batch [--images 24] [--size 512] [--max-jobs N] [--repeat 2] [--no-ray]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_set(folder: pathlib.Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, (x + y) // 2], axis=2) * (255.0 / (2 * size))
    for i in range(count):
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"p{i:03d}.jpg", quality=20 + i % 30)


def timed_run(src: pathlib.Path, out: pathlib.Path, how: list, model: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "core", "restore", str(src), "--out-dir", str(out),
           *how, "--model", model, "--device", "cpu"]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--model", default="compact")
    p.add_argument("--no-ray", action="store_true", help="leave out the Ray row")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = pathlib.Path(tmp, "in"), pathlib.Path(tmp, "out")
        src.mkdir()
        make_set(src, a.images, a.size)
        timed_run(src, out, ["--jobs", "1"], a.model)   # warm-up: the OpenVINO conversion is cached once
        print(f"{a.images} JPEGs of {a.size}x{a.size}, model {a.model}, CPU, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
        for jobs in range(1, a.max_jobs + 1):
            best = min(timed_run(src, out, ["--jobs", str(jobs)], a.model) for _ in range(a.repeat))
            label = "one process (--jobs 1)" if jobs == 1 else f"--jobs {jobs}"
            show(label, a.images, best)
        if not a.no_ray:
            show("--ray (2 nodes x 1 CPU)", a.images, ray_best(src, out, a))


def show(label: str, images: int, seconds: float) -> None:
    print(f"{label:<24} {images / seconds:6.2f} images/s  ({seconds:.1f} s)", flush=True)


def ray_best(src: pathlib.Path, out: pathlib.Path, a) -> float:
    from bench.ray_cluster import Cluster   # needs Ray: `pip install ".[cluster]"`
    with Cluster() as cluster:
        how = ["--ray", cluster.address]
        timed_run(src, out, how, a.model)   # warm-up: the nodes' first worker processes
        return min(timed_run(src, out, how, a.model) for _ in range(a.repeat))


if __name__ == "__main__":
    main()
