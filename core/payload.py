"""The pixels of a worker request: the descriptor (shape, dtype, channel order, stride),
the payload as an array in canonical channel order (RGB[A] or Y[A]) and back, and the
selection mask's blend. numpy only; the frame format itself is core.frontend.protocol."""
from __future__ import annotations

import numpy as np

from core.frontend.protocol import DTYPES, ORDERS, frame_nbytes

NP_DTYPES = {"u8": np.dtype("=u1"), "u16": np.dtype("=u2"), "f16": np.dtype("=f2"),
             "f32": np.dtype("=f4")}
# Memory order -> index of each canonical channel (RGB[A] or Y[A]) in memory.
TO_CANONICAL = {"RGB": None, "RGBA": None, "Y": None, "YA": None, "BGRA": [2, 1, 0, 3]}
assert set(TO_CANONICAL) == set(ORDERS) and set(NP_DTYPES) == set(DTYPES)


class BadRequest(ValueError):
    """A request that cannot be served as sent; the reply is kind bad-request."""


def parse_format(req: dict) -> dict:
    """The pixel descriptor of a request, checked."""
    try:
        w, h, dtype, order = req["width"], req["height"], req["dtype"], req["order"]
    except KeyError as e:
        raise BadRequest(f"the pixel descriptor lacks {e.args[0]!r}") from None
    for name, v in (("width", w), ("height", h)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BadRequest(f"{name} must be a positive integer, not {v!r}")
    if dtype not in NP_DTYPES:
        raise BadRequest(f"dtype must be one of {sorted(NP_DTYPES)}, not {dtype!r}")
    if order not in TO_CANONICAL:
        raise BadRequest(f"order must be one of {list(TO_CANONICAL)}, not {order!r}")
    return {"width": w, "height": h, "dtype": dtype, "order": order}


def split_payload(fmt: dict, payload, with_mask: bool):
    """(pixel bytes, mask bytes or None), after checking the byte count."""
    n = frame_nbytes(fmt)
    m = fmt["width"] * fmt["height"] if with_mask else 0
    if len(payload) != n + m:
        what = f"{n} bytes of pixels" + (f" + {m} bytes of mask" if m else "")
        raise BadRequest(f"payload has {len(payload)} bytes, but {fmt['width']}x{fmt['height']} "
                         f"{fmt['order']} {fmt['dtype']} needs {what}")
    view = memoryview(payload)
    return view[:n], (view[n:] if m else None)


def layout_array(fmt: dict, data) -> np.ndarray:
    """The bytes as an HxWxC array in memory order (a read-only view, no copy)."""
    return np.frombuffer(data, NP_DTYPES[fmt["dtype"]]).reshape(
        fmt["height"], fmt["width"], len(fmt["order"]))


def to_canonical(fmt: dict, data) -> np.ndarray:
    """HxWxC in RGB[A] / Y[A] order, contiguous, ready for the engine.

    half floats are widened to float32, which is exact and spares the engine a
    dtype it does not need to know.
    """
    arr = layout_array(fmt, data)
    perm = TO_CANONICAL[fmt["order"]]
    if perm is not None:
        arr = arr[..., perm]
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return np.array(arr, copy=True)  # the engine gets a writable array it owns


def from_canonical(fmt: dict, arr: np.ndarray) -> np.ndarray:
    """Back to the request's memory order and dtype."""
    perm = TO_CANONICAL[fmt["order"]]
    if perm is not None:
        arr = arr[..., np.argsort(perm)]
    return np.ascontiguousarray(arr, dtype=NP_DTYPES[fmt["dtype"]])


def blend(orig: np.ndarray, res: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """orig + (res - orig) * mask/255 in float, back in orig's dtype."""
    dt = orig.dtype
    m = (mask.astype(np.float32) / 255.0)[..., None]
    out = orig.astype(np.float32) + (res.astype(np.float32) - orig.astype(np.float32)) * m
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dt)


def apply_mask(fmt: dict, orig_bytes, mask_bytes, res_canon, orig_canon) -> np.ndarray:
    """The masked result in memory layout; unselected pixels are the original bytes."""
    mask = np.frombuffer(mask_bytes, np.uint8).reshape(fmt["height"], fmt["width"])
    out = from_canonical(fmt, blend(orig_canon, res_canon, mask))
    keep = mask == 0
    # Copy the original samples, so an unselected pixel comes back bit-identical
    # whatever the float round trip would have made of it (NaN payloads, -0.0).
    out[keep] = layout_array(fmt, orig_bytes)[keep]
    return out
