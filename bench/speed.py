"""Speed and memory of the engine on this machine.

    python -m bench.speed [--size 512] [--skip-24mp]

A: the official-style baseline (whole image, fp32, one forward) and B: our engine at
default settings, on the same image and the same deterministic full-size official
weights, in one process. Then a 24 MP image through B (time extrapolated from the
first tiles), and the bundled compact model through the engine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from core import engine as engine_mod
from core.engine import Engine
from core.network import FBCNN, Config, build, flops_per_pixel
from core.weights import COMPACT_CONFIG, status
from tests.det_init import det_init_v2


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    return np.clip(base[:, :, None] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def run_a(model, img):
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        t = time.perf_counter()
        model(x, qf_input=torch.tensor([[0.7]]))
        return time.perf_counter() - t


def run_b(eng, path, img, **kw):
    t = time.perf_counter()
    eng.restore(img, model=path, qf=30, **kw)
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--skip-24mp", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16: {engine_mod.cpu_has_bf16()}, "
          f"default precision: {engine_mod.pick_dtype('cpu')}")
    f_full, f_compact = flops_per_pixel(Config()), flops_per_pixel(COMPACT_CONFIG)
    print(f"FLOPs per pixel: official {f_full / 1e3:.0f} k, compact {f_compact / 1e3:.0f} k "
          f"(1/{f_full / f_compact:.1f} of the official; bar 1/20)")
    full = FBCNN().eval()
    full.load_state_dict({k: torch.from_numpy(det_init_v2(k, tuple(v.shape), 1.0)) for k, v in full.state_dict().items()})
    tmp = tempfile.mkdtemp()
    full_path = os.path.join(tmp, "full_det.pth")
    torch.save(full.state_dict(), full_path)
    img = test_image(a.size, a.size)
    mp = a.size * a.size / 1e6

    eng = Engine("cpu")
    run_b(eng, full_path, img[:64, :64])  # load and warm up outside the timing
    run_a(full, img[:64, :64])
    reset_peak()
    ta = run_a(full, img)
    pa = peak_rss_mb()
    reset_peak()
    tb = run_b(eng, full_path, img)
    pb = peak_rss_mb()
    print(f"\nfull official-size model, {a.size}x{a.size} ({mp:.2f} MP):")
    print(f"  A baseline (whole image, fp32, one forward): {ta / mp:7.1f} s/MP, peak RSS {pa:6.0f} MB")
    print(f"  B engine (defaults):                         {tb / mp:7.1f} s/MP, peak RSS {pb:6.0f} MB")
    print(f"  B is {ta / tb:.2f}x faster than A")

    if not a.skip_24mp:
        big = test_image(4000, 6000, seed=1)
        done = []
        reset_peak()
        t = time.perf_counter()
        try:
            eng.restore(big, model=full_path, qf=30, progress=lambda d, n: done.append((d, n, time.perf_counter())),
                        cancel=lambda: len(done) >= 2)
        except engine_mod.Cancelled:
            pass
        n_tiles = done[0][1]
        per_tile = done[1][2] - done[0][2]
        print(f"\n24 MP (6000x4000) through B with the full model: peak RSS {peak_rss_mb():.0f} MB "
              f"(bar 3000 MB); {n_tiles} tiles, {per_tile:.1f} s per tile -> about "
              f"{per_tile * n_tiles / 60:.0f} min extrapolated ({time.perf_counter() - t:.0f} s measured)")

    compact = "compact" if status("compact") == "bundled" else None
    if compact is None:
        compact = os.path.join(tmp, "compact_random.pth")
        torch.save(build(COMPACT_CONFIG).state_dict(), compact)
        print("\n(bundled compact model absent: timing a randomly initialised one of the same shape)")
    img2 = test_image(1024, 1024, seed=2)
    run_b(eng, compact, img2[:64, :64])
    t2 = min(run_b(eng, compact, img2) for _ in range(2))
    print(f"\ncompact model through the engine, 1024x1024: {t2 / 1.048576:.2f} s/MP (bar 3 s/MP)")

    print("\nlevers on the compact model, 1024x1024 (s/MP):")
    # Emulated bf16 (no AVX512-BF16/AMX) ran 24x slower than fp32 on an AVX2 EPYC: not worth timing.
    for precision in ("fp32", "bf16") if engine_mod.cpu_has_bf16() else ("fp32",):
        for cl in (False, True):
            engine_mod.CPU_CHANNELS_LAST = cl
            e = Engine("cpu", precision)
            run_b(e, compact, img2[:64, :64])
            t = min(run_b(e, compact, img2) for _ in range(2))
            print(f"  {precision}, channels_last={cl}: {t / 1.048576:.2f}")
    engine_mod.CPU_CHANNELS_LAST = True


if __name__ == "__main__":
    main()
