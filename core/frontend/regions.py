"""Where on the canvas a request reads and writes: rectangles (x, y, w, h) snapped to
the image's 8x8 JPEG grid, the context read around them, and cutting a rectangle's
bytes out of a larger one. Both editors' plug-ins use these, never their own copies.
"""
from __future__ import annotations

GRID = 8   # JPEG blocks: every region sent to the worker starts on the image's grid

# Context read around a selection for the run: the engine's tile overlap (64 px,
# feathered over both tiles), so a selection's border is restored as a tile's interior is.
RUN_CONTEXT = 64
# Around the preview: half of that. A preview is looked at, not kept, and the smaller
# request keeps a slider move under 0.3 s on a 2-core laptop.
PREVIEW_CONTEXT = 32


def _floor(v: int) -> int:
    return v // GRID * GRID


def _ceil(v: int) -> int:
    return -(-v // GRID) * GRID


def clip_rect(rect, width: int, height: int) -> tuple:
    """rect cut to a width x height canvas; w or h is 0 when nothing is left."""
    x, y, w, h = rect
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def grow_to_grid(rect, margin: int, width: int, height: int, offset=(0, 0)) -> tuple:
    """rect grown by margin on each side, clipped to the layer (width x height).

    The start is floored and the end rounded up to the *image's* 8-px grid, so the
    worker's tiles land on the same 8x8 blocks as in the JPEG file; `offset` is the
    layer's origin in the image (GIMP's layers can sit anywhere), rect and the
    result are in layer pixels.
    """
    x, y, w, h = rect
    ox, oy = offset
    x0, y0 = max(0, _floor(ox + x - margin) - ox), max(0, _floor(oy + y - margin) - oy)
    x1 = min(width, _ceil(ox + x + w + margin) - ox)
    y1 = min(height, _ceil(oy + y + h + margin) - oy)
    return (x0, y0, x1 - x0, y1 - y0)


def preview_rect(center, size, width: int, height: int) -> tuple:
    """A size=(w, h) window around center, moved inside the canvas, start on the grid."""
    pw, ph = min(size[0], width), min(size[1], height)
    x = min(max(0, center[0] - pw // 2), width - pw)
    y = min(max(0, center[1] - ph // 2), height - ph)
    return (_floor(x), _floor(y), pw, ph)


def crop(data, data_rect, rect, bytes_per_pixel: int) -> bytes:
    """The bytes of rect, cut out of row-major data that covers data_rect (same coordinates)."""
    dx, dy, dw, _ = data_rect
    x, y, w, h = rect
    stride = dw * bytes_per_pixel
    start = (x - dx) * bytes_per_pixel
    n = w * bytes_per_pixel
    view = memoryview(data)
    return b"".join(view[(y - dy + r) * stride + start:(y - dy + r) * stride + start + n]
                    for r in range(h))
