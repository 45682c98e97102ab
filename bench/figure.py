"""The README's before/after picture: a McMaster crop at JPEG QF 10, restored by the bundled model.

    python -m bench.figure docs/before-after.png
"""
import sys

import numpy as np
from PIL import Image, ImageDraw

from bench.metrics import jpeg, mcmaster, psnr
from core.engine import Engine


def main(out="docs/before-after.png", name="05", box=(200, 130, 380, 310)):
    gt = dict(mcmaster())[name]
    lq = jpeg(gt, 10)
    res = Engine("cpu").restore(lq, model="compact").pixels
    x0, y0, x1, y1 = box
    panels = [("JPEG QF 10", lq), ("compact model, auto QF", res), ("original", gt)]
    tiles = []
    for label, img in panels:
        crop = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1])).resize(((x1 - x0) * 2, (y1 - y0) * 2), Image.NEAREST)
        d = ImageDraw.Draw(crop)
        text = label if img is gt else f"{label}: {psnr(img, gt):.2f} dB (whole image)"
        d.rectangle((0, 0, 8 + 6 * len(text), 16), fill=(0, 0, 0))
        d.text((4, 2), text, fill=(255, 255, 255))
        tiles.append(crop)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (3 * w + 8, h), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * (w + 4), 0))
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
