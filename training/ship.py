"""Write trained weights as the bundled file: fp16 tensors, the same names and shapes.

    python -m training.ship training/run5/compact_best.pth core/models/fbcnn_compact.pth

Half precision halves the file (the 10 MB limit) and changes the output by far less
than bf16 inference does; the engine loads it into an fp32 model. Prints the sha256
that goes into core/weights.py COMPACT_SHA256.
"""
from __future__ import annotations

import argparse
import pathlib

import torch

from core.network import config_from_state_dict
from core.weights import sha256_file


def half(sd: dict) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=pathlib.Path)
    ap.add_argument("dst", type=pathlib.Path)
    a = ap.parse_args(argv)
    sd = torch.load(a.src, map_location="cpu", weights_only=True)
    config_from_state_dict(sd)  # refuses anything that is not an FBCNN-family state dict
    torch.save(half(sd), a.dst)
    print(f"{a.dst}: {a.dst.stat().st_size / 1e6:.2f} MB, sha256 {sha256_file(a.dst)}")


if __name__ == "__main__":
    main()
