"""Peak memory of a restore against the bound, at 24, 144 and 400 MP.

    python -m bench.memory [--sizes 24 144 400] [--runtime auto]

Each size runs in a fresh process: a synthetic 8-bit RGB picture (3 bytes a pixel)
through the engine with the bundled compact model at a known QF, on the CPU. The
bound is 1.5 GB plus 8 bytes a pixel (the input and the output at their own depth,
3 + 3, plus a little). Prints peak RSS, the bound and the time.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, time
import numpy as np
from bench.speed import peak_rss_mb
from core.engine import Engine
h, w = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
row = (128 + 60 * np.sin(np.arange(w) / 17.0)).astype(np.uint8)
img = np.empty((h, w, 3), np.uint8)
for y in range(0, h, 1024):       # filled in bands: no float copy of the picture
    n = min(1024, h - y)
    img[y:y + n] = (row[None, :, None] + rng.integers(0, 24, (n, w, 3), np.uint8))
engine = Engine("cpu", runtime=sys.argv[3])
t = time.perf_counter()
res = engine.restore(img, model="compact", qf=30)
print(time.perf_counter() - t, peak_rss_mb(), res.runtime)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 144, 400], help="megapixels")
    ap.add_argument("--runtime", default="auto")
    args = ap.parse_args(argv)
    ok = True
    for mp in args.sizes:
        w = int(round((mp * 1e6 * 3 / 2) ** 0.5)) // 8 * 8   # 3:2, like a camera
        h = int(mp * 1e6 // w)
        out = subprocess.run([sys.executable, "-c", CHILD, str(h), str(w), args.runtime],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{mp} MP: failed\n{out.stderr[-2000:]}")
            ok = False
            continue
        seconds, peak, runtime = out.stdout.split()[-3:]
        bound = 1500 + 8 * h * w / 1e6
        within = float(peak) <= bound
        ok &= within
        print(f"{mp:4d} MP ({w}x{h}), {runtime}: peak RSS {float(peak):6.0f} MB, bound "
              f"{bound:6.0f} MB ({'within' if within else 'OVER'}), {float(seconds):.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
