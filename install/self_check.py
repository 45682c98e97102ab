"""The installer's self-check: start the worker through the plug-ins' own client and
restore a small built-in sample.

Run by the base Python as a script, the way an editor's Python would see things:

    python -I -B install/self_check.py FRONTEND_DIR TIMEOUT QF

FRONTEND_DIR is the front-end package as placed in a plug-in folder (fbcnn_frontend);
it is imported from there, under that name. Prints one JSON object. Standard library
only (it runs where numpy and torch do not exist); Python 3.9 or newer.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys

W, H = 64, 48


def load_frontend(folder, name: str = "fbcnn_frontend", submodule: str = ""):
    """The front-end package in `folder`, imported under `name` (once), or one of its
    submodules: what a plug-in imports, whatever else is on sys.path."""
    folder = os.fspath(folder)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return importlib.import_module(f"{name}.{submodule}") if submodule else sys.modules[name]


def sample() -> bytes:
    """RGB u8, W x H: a smooth gradient flattened to 8x8 blocks, what a low JPEG
    quality does to skies."""
    px = bytearray()
    for y in range(H):
        for x in range(W):
            bx, by = x // 8 * 8 + 4, y // 8 * 8 + 4
            px += bytes((40 + bx * 2, 60 + by * 3, 200 - bx - by))
    return bytes(px)


def blockiness(buf: bytes) -> float:
    """Mean jump across 8x8 block edges minus the mean jump inside blocks."""
    edge = inner = ne = ni = 0
    for y in range(H):
        for x in range(W - 1):
            for c in range(3):
                d = abs(buf[(y * W + x + 1) * 3 + c] - buf[(y * W + x) * 3 + c])
                if x % 8 == 7:
                    edge += d
                    ne += 1
                else:
                    inner += d
                    ni += 1
    return edge / ne - inner / ni


def check(folder, timeout: float, qf: int) -> dict:
    """Restore the sample through the client in `folder`; 'ok' says whether it worked."""
    client = load_frontend(folder, "fbcnn_frontend", "client")
    px = sample()
    out = {"client": client.__file__}
    try:
        with client.Worker(timeout=timeout) as w:
            out["hello"] = w.hello()
            fmt = {"width": W, "height": H, "dtype": "u8", "order": "RGB"}
            res, meta = w.restore(px, fmt, model="auto", qf=qf, device="auto")
            out["result"] = {k: v for k, v in meta.items() if k not in ("nbytes",)}
            out["size_ok"] = len(res) == len(px)
            out["changed"] = res != px
            out["blockiness_before"] = round(blockiness(px), 3)
            out["blockiness_after"] = round(blockiness(res), 3) if out["size_ok"] else None
            mse = sum((a - b) ** 2 for a, b in zip(res, px)) / len(px) if out["size_ok"] else 1e9
            # A restoration smooths the block edges and stays close to the input; garbage
            # (wrong weights, a channel-order mix-up) fails the second test.
            out["psnr_vs_input"] = round(10 * math.log10(255.0 ** 2 / max(mse, 1e-9)), 2)
            out["ok"] = bool(out["size_ok"] and out["changed"]
                             and out["blockiness_after"] < out["blockiness_before"]
                             and out["psnr_vs_input"] >= 25.0)
    except Exception as e:
        out["ok"] = False
        out["error"] = "%s: %s" % (type(e).__name__, e)
    return out


def main(argv) -> int:
    # Run as a script, this folder is first on sys.path (before Python 3.11, even
    # with -I); an editor's Python does not see the installer's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    folder, timeout, qf = argv
    print(json.dumps(check(folder, float(timeout), int(qf))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
