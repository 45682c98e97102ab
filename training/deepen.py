"""Add blocks to the stages of a trained FBCNN-family model, to train on from there.

    python -m training.deepen IN.pth OUT.pth                      # one more block everywhere
    python -m training.deepen IN.pth OUT.pth --add scale3=2 body=3

Each new block starts with a zero last convolution, so every new ResBlock is the
identity and the trained function is kept; a new QF-attention block adds its stage's
beta once more (x + gamma * 0 + beta), a small shift that the first steps of training
absorb. New blocks go last in their stage (before the stride conv or the pooling).
Cheaper than training the deeper model from scratch, which on 2 CPU cores would cost
the many hours the current weights took.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import replace

import torch

from core.config import STAGES
from core.network import build, config_from_state_dict

# Where each module's blocks come from: (module, stage, index of its first block).
_MODULES = {"m_down1": ("scale1", 0), "m_down2": ("scale2", 0), "m_down3": ("scale3", 0),
            "m_body_encoder": ("body", 0), "m_body_decoder": ("body", 0), "qf_pred": ("qf_head", 0),
            "m_up3": ("scale3", 1), "m_up2": ("scale2", 1), "m_up1": ("scale1", 1)}


def _new_key(key: str, old: dict, add: dict) -> str:
    m = re.match(r"(\w+)\.(\d+)\.(.*)", key)
    if not m or m.group(1) not in _MODULES:
        return key
    stage, first = _MODULES[m.group(1)]
    i = int(m.group(2))
    # What follows the blocks (the stride conv, the QF head's pooling and layers) moves down.
    if i >= first + old[stage]:
        i += add[stage]
    return f"{m.group(1)}.{i}.{m.group(3)}"


def _expert_conv_names(model) -> list:
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(c)] for c in model._expert_convs()]


def deepen(sd: dict, add: dict | None = None, seed: int = 0) -> dict:
    """`add`: blocks to add per stage (core.config.STAGES); default one in every stage."""
    add = {s: (add or {}).get(s, 0 if add else 1) for s in STAGES}
    old_cfg = config_from_state_dict(sd)
    old = old_cfg.blocks()
    counts = tuple(old[s] + add[s] for s in STAGES)
    torch.manual_seed(seed)
    new_model = build(replace(old_cfg, nb=counts[0] if len(set(counts)) == 1 else counts))
    out = new_model.state_dict()
    old_model = build(old_cfg)
    old_names, new_names = _expert_conv_names(old_model), _expert_conv_names(new_model)
    for key, value in sd.items():
        if key.startswith(("qf_delta.", "qf_mix.")):
            continue
        new_key = _new_key(key, old, add)
        if new_key not in out or out[new_key].shape != value.shape:
            raise ValueError(f"cannot place {key} in the deeper model")
        out[new_key] = value.float()
    for module, (stage, first) in _MODULES.items():
        for i in range(first + old[stage], first + old[stage] + add[stage]):
            for p in ("weight", "bias"):
                out[f"{module}.{i}.res.2.{p}"].zero_()
    if old_cfg.qf_experts:
        _place_experts(sd, out, old_names, new_names, old_cfg.qf_experts, old, add)
    return out


def _place_experts(sd, out, old_names, new_names, k, old, add):
    """Old convs keep their deltas and mixing rows; a new conv gets zero deltas (so the
    function is kept) and the mixing rows of the conv it copies the role of (the same conv
    of its stage's last old block), so that its deltas get gradients from the first step."""
    index = {n: i for i, n in enumerate(new_names)}
    source = {}
    for i, name in enumerate(old_names):
        new_name = _new_key(name + ".x", old, add)[:-2]
        source[index[new_name]] = i
        out[f"qf_delta.{index[new_name]}"] = sd[f"qf_delta.{i}"].float()
    for j, name in enumerate(new_names):
        if j not in source:
            m = re.match(r"(\w+)\.(\d+)\.(.*)", name)
            stage, first = _MODULES[m.group(1)]
            last_old = f"{m.group(1)}.{first + old[stage] - 1}.{m.group(3)}"
            source[j] = old_names.index(last_old)
            out[f"qf_delta.{j}"].zero_()
    w, b = sd["qf_mix.weight"].float(), sd["qf_mix.bias"].float()
    rows = torch.cat([torch.arange(source[j] * k, source[j] * k + k) for j in range(len(new_names))])
    out["qf_mix.weight"], out["qf_mix.bias"] = w[rows].clone(), b[rows].clone()


def _parse_add(items) -> dict:
    add = {}
    for item in items:
        stage, _, n = item.partition("=")
        if stage not in STAGES or not n.isdigit():
            raise SystemExit(f"--add takes STAGE=N with STAGE one of {', '.join(STAGES)}, not {item!r}")
        add[stage] = int(n)
    return add


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--add", nargs="*", default=[], metavar="STAGE=N",
                    help=f"blocks to add per stage ({', '.join(STAGES)}); default one in each")
    a = ap.parse_args(argv)
    sd = torch.load(a.src, map_location="cpu", weights_only=True)
    before = config_from_state_dict(sd).nb
    deeper = deepen(sd, _parse_add(a.add))
    torch.save(deeper, a.dst)
    print(f"{a.src} (blocks {before}) -> {a.dst} (blocks {config_from_state_dict(deeper).nb})")


if __name__ == "__main__":
    main()
