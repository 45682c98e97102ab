"""Speed and memory of the engine on this machine.

    python -m bench.speed [--size 512] [--skip-24mp] [--rounds 5]

A: the official-style baseline (whole image, fp32, one forward) and B: our engine at
default settings, on the same image and the same deterministic full-size official
weights, in one process. Then a 24 MP image through B (time extrapolated from the
first tiles), the bundled compact model through the engine on each runtime (torch
and OpenVINO side by side, interleaved rounds, with the load average they ran
under), the fraction of this CPU's measured 3x3-convolution rate the engine
reaches, and OpenVINO's first (conversion) and warm start.
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
from bench.det_init import det_init_v2


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


def run_b(eng, path, img, qf=30, **kw):
    t = time.perf_counter()
    eng.restore(img, model=path, qf=qf, **kw)
    return time.perf_counter() - t


def conv_peak_gflops(channels=64, side=256, repeats=10) -> float:
    """This CPU's rate for a plain 3x3 convolution at `channels`, in GFLOP/s, at the
    engine's default precision, the best of torch and OpenVINO: the roof that the
    network's convolutions run against."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.rand(1, channels, side, side)
    runs = {}
    with torch.inference_mode(), engine_mod.autocast("cpu", "auto"):
        xl, cl = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
        runs["torch"] = lambda: cl(xl)
    from core import openvino_runtime
    if openvino_runtime.installed():
        ov = openvino_runtime.openvino()
        with torch.no_grad():
            ir = ov.convert_model(conv, example_input=x)
        bf16 = engine_mod.low_precision("cpu") == "bf16"
        compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
                                                       "PERFORMANCE_HINT": "LATENCY"})
        request, xn = compiled.create_infer_request(), x.numpy()
        runs["openvino"] = lambda: request.infer([xn])
    best = 0.0
    for run in runs.values():
        with torch.inference_mode(), engine_mod.autocast("cpu", "auto"):
            run()
            times = []
            for _ in range(repeats):  # the fastest: a roof is what the CPU can do, unloaded
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
        best = max(best, 2 * 9 * channels * channels * side * side / min(times) / 1e9)
    return best


def whole_24mp(compact) -> tuple:
    """(seconds, peak RSS in MB, runtime) of one 24 MP restore in a fresh process, so
    that this bench's other models don't count in its memory."""
    import subprocess
    import sys
    code = ("import time; from bench.speed import test_image, peak_rss_mb; "
            "from core.engine import Engine; big = test_image(4000, 6000, seed=1); "
            "e = Engine('cpu'); t = time.perf_counter(); "
            f"r = e.restore(big, model={compact!r}, qf=30); "
            "print(time.perf_counter() - t, peak_rss_mb(), r.runtime)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[-3]), float(out[-2]), out[-1]


def runtimes_side_by_side(compact, img, rounds, precision="auto"):
    """s/MP of the compact model on each runtime, medians of interleaved rounds."""
    from core import openvino_runtime
    names = ["torch"] + (["openvino"] if openvino_runtime.installed() else [])
    engines = {n: Engine("cpu", precision, runtime=n) for n in names}
    for e in engines.values():
        run_b(e, compact, img[:64, :64])  # load (and convert) outside the timing
    times = {n: [] for n in names}
    for _ in range(rounds):
        for n, e in engines.items():
            times[n].append(run_b(e, compact, img))
    mp = img.shape[0] * img.shape[1] / 1e6
    return {n: float(np.median(v)) / mp for n, v in times.items()}


def candidate_vs_bundled(candidate, img, rounds) -> None:
    """A new compact model on the CPU's default runtime beside the bundled one on torch
    and on the default runtime (issue #21's speed bar), interleaved rounds, with FLOPs."""
    from core.config import config_from_state_dict
    from core.weights import load_state_dict
    f_full = flops_per_pixel(Config())
    mp = img.shape[0] * img.shape[1] / 1e6
    runs = {"bundled, torch": ("compact", Engine("cpu", runtime="torch")),
            "bundled, default runtime": ("compact", Engine("cpu")),
            "candidate, default runtime": (candidate, Engine("cpu"))}
    for model, e in runs.values():
        run_b(e, model, img[:64, :64])  # load (and convert) outside the timing
    times = {n: [] for n in runs}
    load = os.getloadavg()[0]
    for _ in range(rounds):
        for n, (model, e) in runs.items():
            times[n].append(run_b(e, model, img))
    print(f"candidate {candidate} beside the bundled model, {img.shape[1]}x{img.shape[0]}, medians of "
          f"{rounds} interleaved rounds (load average {load:.1f} -> {os.getloadavg()[0]:.1f}):")
    for n, (model, e) in runs.items():
        flops = flops_per_pixel(config_from_state_dict(load_state_dict(model)))
        print(f"  {n:<27} {np.median(times[n]) / mp:5.2f} s/MP on {e.runtime}, "
              f"{flops / 1e3:.0f} kFLOP/px (1/{f_full / flops:.1f} of the official)")
    ratio = np.median(times["candidate, default runtime"]) / np.median(times["bundled, torch"])
    print(f"  candidate / bundled-on-torch time: {ratio:.2f} (bar <= 1.00)")


def openvino_start(compact) -> tuple:
    """(first start with conversion, warm start from the cache), seconds from a fresh
    process's first import to a compiled model, as the worker meets them."""
    import subprocess
    import sys
    cache = tempfile.mkdtemp()
    # As the engine does it: keyed by the file, torch loaded only to convert.
    code = ("import time; t=time.perf_counter(); from core import weights, openvino_runtime as o; "
            f"o.CompiledNet(key=weights.file_key({compact!r}), "
            f"load=lambda: weights.load_model({compact!r})); print(time.perf_counter()-t)")
    env = dict(os.environ, FBCNN_CACHE_DIR=cache)
    out = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout.split()[-1]) for _ in range(2)]
    return out[0], out[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--skip-24mp", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per runtime")
    ap.add_argument("--candidate", metavar="PTH",
                    help="only compare this compact model (default runtime) with the bundled one")
    a = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    if a.candidate:
        return candidate_vs_bundled(a.candidate, test_image(1024, 1024, seed=2), a.rounds)
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

    # The full-size weights are deterministic test values (no download here): they
    # restore nothing, so the engine's sanity run on them is skipped; the cost is the same.
    eng = Engine("cpu", check_weights=False)
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
    tc = run_b(eng, full_path, img, qf="auto")  # no file: double-JPEG check, then the network
    print(f"  B with auto QF from the pixels:              {tc / mp:7.1f} s/MP ({ta / tc:.2f}x A; "
          f"the QF costs {100 * (tc - tb) / tb:.0f}% of the restore)")

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
    if not a.skip_24mp:
        seconds, peak, runtime = whole_24mp(compact)
        print(f"\n24 MP (6000x4000) with the compact model, a whole run on {runtime} in a fresh "
              f"process: {seconds:.0f} s, peak RSS {peak:.0f} MB (bar 3000 MB)")
    img2 = test_image(1024, 1024, seed=2)
    load = os.getloadavg()[0]
    side = runtimes_side_by_side(compact, img2, a.rounds)
    print(f"\ncompact model through the engine, 1024x1024, default precision, medians of "
          f"{a.rounds} interleaved rounds (load average {load:.1f} -> {os.getloadavg()[0]:.1f}):")
    for name, spmp in side.items():
        print(f"  {name:<9} {spmp:5.2f} s/MP (bar 3 s/MP)")
    if "openvino" in side:
        print(f"  OpenVINO is {side['torch'] / side['openvino']:.2f}x torch (target >= 1.5x on AVX2)")
        fp32 = runtimes_side_by_side(compact, img2, a.rounds, "fp32")
        print(f"  at fp32: torch {fp32['torch']:.2f}, OpenVINO {fp32['openvino']:.2f} s/MP "
              f"({fp32['torch'] / fp32['openvino']:.2f}x)")
        first, warm = openvino_start(compact)
        print(f"  OpenVINO start: first {first:.1f} s (converts and compiles), warm {warm:.1f} s "
              "(from the cache)")
    peak = conv_peak_gflops()
    best = min(side.values())
    useful = f_compact * 1024 * 1024 / best / 1e9
    print(f"  useful work {useful:.0f} GFLOP/s = {100 * useful / peak:.0f}% of this CPU's "
          f"3x3-conv rate at 64 channels ({peak:.0f} GFLOP/s, default precision, the best "
          "of torch and OpenVINO)")

    print("\ntorch's levers on the compact model, 1024x1024 (s/MP):")
    # Emulated bf16 (no AVX512-BF16/AMX) ran 24x slower than fp32 on an AVX2 EPYC: not worth timing.
    for precision in ("fp32", "bf16") if engine_mod.cpu_has_bf16() else ("fp32",):
        for cl in (False, True):
            engine_mod.CPU_CHANNELS_LAST = cl
            e = Engine("cpu", precision, runtime="torch")
            run_b(e, compact, img2[:64, :64])
            t = min(run_b(e, compact, img2) for _ in range(2))
            print(f"  {precision}, channels_last={cl}: {t / 1.048576:.2f}")
    engine_mod.CPU_CHANNELS_LAST = True


if __name__ == "__main__":
    main()
