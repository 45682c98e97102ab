"""QF detection figures (core.quality) on McMaster (../shared/datasets/val).

    python -m bench.detect [--images N]

Prints: file-QF exactness for Pillow JPEGs at QF 5..100; the double-JPEG detector's
dominant QF on re-saved images (targets: within +-5 of QF1 in >= 90 %); its false
claims on single JPEGs (target: none in >= 95 %); its time on a 12 MP image
(target: <= 2 s). Then the same checks on other sets (Urban100, Classic5 gray,
Sun-Hays photos as released). Figures, not a test.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.metrics import SHARED, jpeg, mcmaster, resave
from core import quality
from core.double_jpeg import DIP_MAX

PAIRS = [(10, 30), (10, 50), (20, 60), (30, 70)]          # the targets
EXTRA_PAIRS = [(12, 40), (23, 55), (37, 75), (70, 90)]    # off the 5-step grid, and a high QF1
SINGLES = list(range(10, 91, 10))


def bench_file(img: np.ndarray, name: str) -> None:
    exact = 0
    wrong = []
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.jpg"
        for q in range(5, 101):
            Image.fromarray(img).save(p, quality=q)
            e = quality.file_quality(p)
            if e is not None and e.qf == q and e.details.get("exact"):
                exact += 1
            else:
                wrong.append((q, None if e is None else e.qf))
    print(f"file QF, Pillow JPEGs of McMaster {name} at QF 5..100: exact {exact}/96"
          + (f"  wrong: {wrong}" if wrong else ""))


def bench_pairs(images, pairs, shift=(4, 4), label="") -> tuple[int, int]:
    ok_all = n_all = 0
    for q1, q2 in pairs:
        found = ok = right_shift = 0
        errs = []
        for _, img in images:
            e = quality.double_jpeg(resave(img, q1, q2, shift))
            if e is None:
                continue
            found += 1
            errs.append(abs(e.qf - q1))
            ok += abs(e.qf - q1) <= 5
            right_shift += tuple(e.details["shift"]) == ((8 - shift[0]) % 8, (8 - shift[1]) % 8)
        n = len(images)
        ok_all += ok
        n_all += n
        mae = f"{np.mean(errs):.2f}" if errs else "-"
        print(f"  {label}({q1},{q2}) shift {shift}: found {found}/{n}, right shift {right_shift}/{n}, "
              f"QF within +-5 of {q1}: {ok}/{n} ({100 * ok / n:.0f} %), mean |err| {mae}")
    return ok_all, n_all


def bench_singles(images, qfs=SINGLES, label="single JPEGs") -> None:
    clean = total = 0
    closest = []
    for q in qfs:
        claims = 0
        for _, img in images:
            e, info = quality._double_jpeg(quality.check_pixels(jpeg(img, q)))
            claims += e is not None
            if e is None and "dip" in info:
                closest.append((info["dip"], info["rise"], q))
        clean += len(images) - claims
        total += len(images)
        print(f"  {label} QF {q}: claimed double {claims}/{len(images)}")
    print(f"{label} QF {qfs[0]}..{qfs[-1]}: no double claimed in {clean}/{total} "
          f"({100 * clean / total:.1f} %, target >= 95 %)")
    # Margin: the single JPEG that came closest to a claim (dip must be < DIP_MAX).
    dip, rise, q = min(closest)
    print(f"  closest single: dip {dip} (claims need < {DIP_MAX}), rise {rise}, QF {q}")
    png = sum(quality.double_jpeg(img) is not None for _, img in images)
    print(f"{label}: the uncompressed originals, claimed double {png}/{len(images)}")


def bench_crop_only(images, qf=25, shift=(3, 5)) -> None:
    """A JPEG cropped off its grid and kept lossless (GIMP: open, crop, filter)."""
    ok = sum(
        (e := quality.double_jpeg(np.ascontiguousarray(jpeg(img, qf)[shift[0]:, shift[1]:]))) is not None
        and abs(e.qf - qf) <= 5 for _, img in images)
    print(f"  JPEG QF {qf} cropped by {shift}, not re-saved: QF within +-5 in {ok}/{len(images)}")


def other_sets(n: int) -> None:
    """Urban100 (regular structures that could mimic a grid), Classic5 gray, Sun-Hays photos."""
    root = SHARED
    urban = [(p.stem, np.asarray(Image.open(p).convert("RGB")))
             for p in sorted((root / "train" / "Urban100_half").glob("*.png"))[:n]]
    if urban:
        print(f"Urban100_half x {len(urban)}:")
        bench_pairs(urban, [(10, 50), (20, 60)])
        bench_singles(urban, [20, 50, 80], label="Urban100 single JPEGs")
    classic = [(p.stem, np.asarray(Image.open(p).convert("L"))[:, :, None])
               for p in sorted((root / "val" / "Classic5").glob("*.png"))]
    if classic:
        found = [quality.double_jpeg(jpeg_gray(img, 20, 60)) for _, img in classic]
        single = sum(quality.double_jpeg(jpeg_gray(img, None, q)) is not None
                     for _, img in classic for q in (10, 50, 90))
        print(f"Classic5 gray: (20,60) shift (4, 4) QF found {[e and e.qf for e in found]}; "
              f"single JPEGs QF 10/50/90 claimed double {single}/{3 * len(classic)}")
    sun = sorted((root / "train" / "SunHays80_q75_jpegsrc").glob("*.jpg"))[:n]
    if sun:
        exact = claims = 0
        for p in sun:
            px = np.asarray(Image.open(p).convert("RGB"))
            e = quality.estimate_quality(px, source_path=p)
            exact += e.source == "file" and e.qf == 75 and e.details["file"]["exact"]
            claims += e.details["double_jpeg"].get("found", False)
        print(f"Sun-Hays80 photos as released (q75) x {len(sun)}: file QF 75 exact {exact}, "
              f"double claimed {claims}")


def jpeg_gray(y: np.ndarray, q1, q2, shift=(4, 4)) -> np.ndarray:
    def rt(a, q):
        buf = io.BytesIO()
        Image.fromarray(a[:, :, 0]).save(buf, "JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())))[:, :, None]
    if q1 is not None:
        y = np.ascontiguousarray(rt(y, q1)[shift[0]:, shift[1]:])
    return rt(y, q2)


def bench_time(img: np.ndarray) -> None:
    """12 MP: a McMaster image upscaled to 4000x3000, saved at 20, shifted, saved at 60."""
    big = np.asarray(Image.fromarray(img).resize((4000, 3000), Image.BICUBIC))
    # A single QF 90 save is the slowest case: the second pass searches QF 1..90.
    for label, px in (("20 then 60", resave(big, 20, 60)), ("single QF 90", jpeg(big, 90))):
        quality.double_jpeg(px)          # warm-up (imports, allocator)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            e = quality.double_jpeg(px)
            times.append(time.perf_counter() - t)
        got = "none found" if e is None else f"QF {e.qf}, shift {e.details['shift']}"
        print(f"double_jpeg on {px.shape[1]}x{px.shape[0]} ({px.shape[0] * px.shape[1] / 1e6:.0f} MP, "
              f"{label}): best {min(times):.2f} s, median {sorted(times)[1]:.2f} s "
              f"(target <= 2 s); {got}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=18, help="how many McMaster images (default all 18)")
    ap.add_argument("--other", type=int, default=30,
                    help="images per extra set (Urban100, Sun-Hays); 0 skips them (default 30)")
    args = ap.parse_args(argv)
    images = mcmaster()[:args.images]
    t0 = time.perf_counter()

    bench_file(images[0][1], images[0][0])

    print(f"double JPEG, McMaster x {len(images)}, first save QF1, crop, second save QF2:")
    ok, n = bench_pairs(images, PAIRS)
    print(f"double JPEG target pairs overall: QF within +-5 of QF1 in {ok}/{n} "
          f"({100 * ok / n:.1f} %, target >= 90 %)")
    print("double JPEG, further cases (not targets):")
    bench_pairs(images, EXTRA_PAIRS)
    bench_pairs(images, [(20, 60)], shift=(2, 5))
    bench_pairs(images, [(20, 60)], shift=(0, 3))
    bench_pairs(images, [(50, 30)], label="higher QF first ")

    bench_crop_only(images)

    bench_singles(images)
    bench_time(images[0][1])
    if args.other:
        other_sets(args.other)
    print(f"(bench took {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
