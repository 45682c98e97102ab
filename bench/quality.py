"""Quality of a model through the engine on McMaster (../shared/datasets/val).

    python -m bench.quality [--model compact|PATH] [--images N] [--skip-bf16] [--folder DIR]

`--folder` measures on other clean photographs instead: McMaster's saturated colours
can favour what other photographs do not (e.g. CBSD68, as PNGs, from
github.com/majedelhelou/denoising_datasets; none of it is in the training data).

Prints PSNR/SSIM gains over the JPEG input, double-JPEG gains, the QF prediction
error, what the QF slider does, and the bf16-vs-fp32 difference. Figures, not a test.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from bench.metrics import clean_images, high_frequency_energy, jpeg, mcmaster, psnr, resave, ssim
from core.engine import Engine


def double_jpeg(rgb: np.ndarray, q1: int, q2: int, shift=(4, 4)) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = shift
    return resave(rgb, q1, q2, shift), rgb[dy:, dx:]


def gains(eng, model, pairs, qf=None):
    rows = []
    for lq, gt in pairs:
        res = eng.restore(lq, model=model, qf=qf)
        rows.append((psnr(lq, gt), psnr(res.pixels, gt), ssim(lq, gt), ssim(res.pixels, gt), res.qf_used, res.qf_source))
    a = np.array([r[:5] for r in rows], dtype=np.float64)
    return a.mean(axis=0), [r[5] for r in rows]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="compact")
    ap.add_argument("--images", type=int, default=None, help="the first N images (default: all)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--folder", type=pathlib.Path, default=None,
                    help="clean PNG photographs to measure on instead of McMaster")
    a = ap.parse_args(argv)
    t0 = time.time()
    images = (mcmaster() if a.folder is None else clean_images(a.folder))[:a.images]
    eng = Engine("cpu", a.precision)
    where = "McMaster" if a.folder is None else str(a.folder)
    print(f"model {a.model}, precision {a.precision}, {where} x{len(images)}, Pillow JPEG 4:2:0, auto QF from pixels only")

    print("\n== single JPEG (bar: gain >= +1.3 dB at each QF)")
    print("  QF  PSNR jpeg -> out (gain)      SSIM jpeg -> out     mean QF used")
    single = {}
    for qf in (10, 20, 30, 40):
        m, _ = gains(eng, a.model, [(jpeg(gt, qf), gt) for _, gt in images])
        single[qf] = m
        print(f"  {qf:>2}  {m[0]:6.2f} -> {m[1]:6.2f} ({m[1] - m[0]:+.3f} dB)   {m[2]:.4f} -> {m[3]:.4f}   {m[4]:.1f}")

    print("\n== non-aligned double JPEG, shift (4,4) (bar: gain >= +1.0 dB)")
    for q1, q2 in ((10, 30), (10, 50)):
        m, sources = gains(eng, a.model, [double_jpeg(gt, q1, q2) for _, gt in images])
        share = sources.count("double-jpeg") / len(sources)
        print(f"  ({q1},{q2})  {m[0]:6.2f} -> {m[1]:6.2f} ({m[1] - m[0]:+.3f} dB)  mean QF used {m[4]:.1f}, "
              f"double-jpeg detected in {share:.0%}")

    print("\n== QF prediction on single JPEGs, QF 10..90 (bar: MAE <= 5)")
    err_net, err_est = [], []
    for qf in range(10, 91, 10):
        e_net, e_est = [], []
        for _, gt in images:
            lq = jpeg(gt, qf)
            e_net.append(abs(eng.predict_qf(lq, model=a.model) - qf))
            e_est.append(abs(eng.estimate(lq, model=a.model).qf - qf))
        err_net += e_net
        err_est += e_est
        print(f"  QF {qf:>2}: network MAE {np.mean(e_net):5.2f}   engine estimate MAE {np.mean(e_est):5.2f}")
    print(f"  overall: network MAE {np.mean(err_net):.2f}, engine estimate (double-JPEG check, then network) MAE {np.mean(err_est):.2f}")

    print("\n== the QF slider (manual QF) on QF-10 and QF-30 inputs")
    sweep = (5, 10, 15, 20, 30, 40, 50, 70, 90)
    for true_qf in (10, 30):
        pairs = [(jpeg(gt, true_qf), gt) for _, gt in images]
        row = []
        for manual in sweep:
            row.append(np.mean([psnr(eng.restore(lq, model=a.model, qf=manual).pixels, gt) for lq, gt in pairs]))
        best = sweep[int(np.argmax(row))]
        print(f"  true QF {true_qf}: " + "  ".join(f"{q}:{p:.2f}" for q, p in zip(sweep, row)) + f"  -> best at QF {best}")
    lq10 = [jpeg(gt, 10) for _, gt in images]
    hf5 = np.mean([high_frequency_energy(eng.restore(lq, model=a.model, qf=5).pixels) for lq in lq10])
    hf50 = np.mean([high_frequency_energy(eng.restore(lq, model=a.model, qf=50).pixels) for lq in lq10])
    print(f"  high-frequency energy on QF-10 inputs: manual QF 5 -> {hf5:.1f}, manual QF 50 -> {hf50:.1f} "
          f"(ratio {hf50 / hf5:.2f}; > 1 means QF 50 keeps more detail)")

    if not a.skip_bf16:
        print("\n== bf16 vs fp32 on the CPU (bf16 is the default only if the loss is <= 0.05 dB)")
        e32, e16 = Engine("cpu", "fp32"), Engine("cpu", "bf16")
        for qf in (10, 20, 30, 40):
            pairs = [(jpeg(gt, qf), gt) for _, gt in images]
            p32 = np.mean([psnr(e32.restore(lq, model=a.model, qf=qf).pixels, gt) for lq, gt in pairs])
            p16 = np.mean([psnr(e16.restore(lq, model=a.model, qf=qf).pixels, gt) for lq, gt in pairs])
            print(f"  QF {qf}: fp32 {p32:.3f} dB, bf16 {p16:.3f} dB, difference {p16 - p32:+.3f} dB")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
