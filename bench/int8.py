"""Is an int8 mode worth shipping? Static int8 (NNCF post-training quantization) of a
model's OpenVINO conversion against the precisions the product runs (fp32, and bf16
where the CPU has it natively): quality on McMaster and speed on one image, side by side.

The bars (issue #17): int8 ships only if it costs <= 0.05 dB on McMaster and runs
>= 1.5x faster on a CPU with VNNI. Needs `pip install nncf` (a bench-only tool).

    python -m bench.int8 [--model compact] [--calibration 96] [--size 1024] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from bench.metrics import SHARED, jpeg, mcmaster, psnr
from core import openvino_runtime as ovr
from core import weights
from core.devices import cpu_has_bf16
from core.engine import qf_to_model

QFS = (10, 20, 30, 40)


def to_input(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 1x3xHxW float32 in 0..1, cropped to multiples of 8."""
    h, w = rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8
    return np.ascontiguousarray(rgb[:h, :w].transpose(2, 0, 1)[None], np.float32) / 255.0


def to_rgb(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def calibration_items(n: int, side: int = 256, seed: int = 0) -> list:
    """n JPEG-damaged training crops at QFs 5..95 with their QF input: what the model meets."""
    files = sorted(p for p in (SHARED / "train").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
    rng = random.Random(seed)
    items = []
    while len(items) < n:
        img = np.asarray(Image.open(rng.choice(files)).convert("RGB"))
        if min(img.shape[:2]) < side:
            continue
        y, x = rng.randrange(img.shape[0] - side + 1), rng.randrange(img.shape[1] - side + 1)
        qf = rng.randrange(5, 96)
        lq = jpeg(np.ascontiguousarray(img[y:y + side, x:x + side]), qf)
        items.append([to_input(lq), np.full((1, 1), qf_to_model(qf), np.float32)])
    return items


def compile_variants(name: str, calibration: int, cache: pathlib.Path) -> dict:
    import nncf
    ov = ovr.openvino()
    net = weights.load_model(name)
    if net.config.in_nc != 3:
        raise SystemExit(f"{name} is a gray model; this bench measures colour models")
    xml = cache / "model.xml"
    ovr.convert(net, xml)
    core = ov.Core()
    fp_model = core.read_model(xml)
    t = time.monotonic()
    int8_model = nncf.quantize(fp_model, nncf.Dataset(calibration_items(calibration)),
                               subset_size=calibration, preset=nncf.QuantizationPreset.MIXED)
    print(f"quantized with {calibration} calibration crops in {time.monotonic() - t:.0f} s")
    hint = {"PERFORMANCE_HINT": "LATENCY"}
    variants = {"fp32": core.compile_model(fp_model, "CPU", dict(hint, INFERENCE_PRECISION_HINT="f32"))}
    if cpu_has_bf16():
        variants["bf16"] = core.compile_model(fp_model, "CPU", dict(hint, INFERENCE_PRECISION_HINT="bf16"))
    # The layers int8 leaves in float run as the CPU's default float precision.
    variants["int8"] = core.compile_model(int8_model, "CPU", hint)
    return variants


def run(compiled, x: np.ndarray, qf: int) -> np.ndarray:
    out = compiled([x, np.full((1, 1), qf_to_model(qf), np.float32)])
    return next(iter(out.values()))


def quality(variants: dict) -> dict:
    """Mean PSNR gain over the JPEG input per QF (the true QF given), per variant."""
    gains = {k: {q: [] for q in QFS} for k in variants}
    for _name, img in mcmaster():
        for q in QFS:
            lq = jpeg(img, q)
            x = to_input(lq)
            h, w = x.shape[2:]
            base = psnr(lq[:h, :w], img[:h, :w])
            for k, c in variants.items():
                gains[k][q].append(psnr(to_rgb(run(c, x, q)), img[:h, :w]) - base)
    return {k: {q: float(np.mean(v)) for q, v in g.items()} for k, g in gains.items()}


def speed(variants: dict, size: int, rounds: int) -> dict:
    """Median seconds per megapixel over interleaved rounds of one size x size image."""
    img = np.asarray(Image.open(sorted((SHARED / "val" / "McMaster").glob("*.png"))[0]).convert("RGB"))
    big = np.ascontiguousarray(np.resize(img, (size, size, 3)))
    x = to_input(jpeg(big, 20))
    times = {k: [] for k in variants}
    for c in variants.values():
        run(c, x, 20)  # warm
    for _ in range(rounds):
        for k, c in variants.items():
            t = time.perf_counter()
            run(c, x, 20)
            times[k].append(time.perf_counter() - t)
    mp = size * size / 1e6
    return {k: statistics.median(v) / mp for k, v in times.items()}


def cpu_flags() -> str:
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    keep = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
    return " ".join(f for f in keep if f in flags) or "no AVX2"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="compact")
    ap.add_argument("--calibration", type=int, default=96, help="calibration crops (256 px)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    print(f"CPU: {cpu_flags()}; {os.cpu_count()} threads; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        variants = compile_variants(a.model, a.calibration, pathlib.Path(tmp))
        q = quality(variants)
        s = speed(variants, a.size, a.rounds)
    ref = "bf16" if "bf16" in variants else "fp32"
    print(f"\nMcMaster x18, gain over JPEG (dB), true QF given; speed at {a.size}^2, median of {a.rounds}")
    print(f"{'':6}" + "".join(f"  QF{qq:<5}" for qq in QFS) + "   s/MP   vs " + ref)
    for k in variants:
        print(f"{k:6}" + "".join(f"  {q[k][qq]:+.3f} " for qq in QFS) + f"  {s[k]:.3f}   {s[ref] / s[k]:.2f}x")
    cost = max(q[ref][qq] - q["int8"][qq] for qq in QFS)
    faster = s[ref] / s["int8"]
    verdict = "ship" if cost <= 0.05 and faster >= 1.5 else "do not ship"
    print(f"\nint8 vs {ref}: costs up to {cost:.3f} dB (bar 0.05), {faster:.2f}x faster (bar 1.5): {verdict}")


if __name__ == "__main__":
    main()
