"""Add one block to every stage of a trained FBCNN-family model, to train on from there.

    python -m training.deepen IN.pth OUT.pth

Each new block starts with a zero last convolution, so every new ResBlock is the
identity and the trained function is kept; a new QF-attention block adds its stage's
beta once more (x + gamma * 0 + beta), a small shift that the first steps of training
absorb. Cheaper than training the deeper model from scratch, which on 2 CPU cores
would cost the ~7 h the current weights took.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import replace

import torch

from core.network import build, config_from_state_dict

# Stages whose blocks are followed by parameterless or other modules: indices from nb on shift by one.
_SHIFTED = ("m_down1", "m_down2", "m_down3", "qf_pred")


def deepen(sd: dict, seed: int = 0) -> dict:
    old = config_from_state_dict(sd)
    if old.qf_experts:
        # Expert deltas are numbered by conv; a deeper model renumbers them.
        raise ValueError("deepen a model before it gets QF experts, not after")
    nb = old.nb
    torch.manual_seed(seed)
    new = build(replace(old, nb=nb + 1))
    out = new.state_dict()
    for key, value in sd.items():
        m = re.match(r"(\w+)\.(\d+)\.(.*)", key)
        if m and m.group(1) in _SHIFTED and int(m.group(2)) >= nb:
            key = f"{m.group(1)}.{int(m.group(2)) + 1}.{m.group(3)}"
        if key not in out or out[key].shape != value.shape:
            raise ValueError(f"cannot place {key} in the deeper model")
        out[key] = value.float()
    # The new blocks sit at index nb (before the stride conv or the pooling) or, in the
    # body and the decoder stages, last (index nb, or nb + 1 after the transposed conv).
    for prefix in ("m_down1", "m_down2", "m_down3", "qf_pred", "m_body_encoder", "m_body_decoder"):
        for p in ("weight", "bias"):
            out[f"{prefix}.{nb}.res.2.{p}"].zero_()
    for prefix in ("m_up3", "m_up2", "m_up1"):
        for p in ("weight", "bias"):
            out[f"{prefix}.{nb + 1}.res.2.{p}"].zero_()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args(argv)
    sd = torch.load(a.src, map_location="cpu", weights_only=True)
    nb = config_from_state_dict(sd).nb
    torch.save(deepen(sd), a.dst)
    print(f"{a.src} ({nb} blocks per stage) -> {a.dst} ({nb + 1})")


if __name__ == "__main__":
    main()
