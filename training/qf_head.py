"""Calibrate the QF predictor head of a trained compact model, everything else frozen.

    python -m training.qf_head IN.pth OUT.pth [--iters 1500]

Why a second stage: after the joint training the head read whole images about 5
points too low at every QF (McMaster, QF 10..90: mean prediction 6 at 10, 32 at 40,
81 at 90). The joint stage labels re-saved samples with their lower QF and sees
only 96 px patches. Here the head learns from single JPEGs only (for re-saved
images `core.quality`'s double-JPEG search gives the QF, not this head) and from
larger crops. The encoder is frozen and the decoder is not run, so the restoration
given a QF is bit-identical to IN; only the predicted QF changes.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from core.network import build, config_from_state_dict
from training import data, degrade
from training.train import SHARED, load_val, plain_state_dict


@torch.inference_mode()
def qf_mae(model, val, qfs=range(10, 91, 10)) -> dict:
    """Mean absolute QF error of the head on the validation crops, per QF and overall."""
    model.eval()
    errs = {}
    for qf in qfs:
        e = []
        for gt in val:
            x = torch.from_numpy(degrade.jpeg(gt, qf).copy()).permute(2, 0, 1)[None].float() / 255
            e.append(abs((1 - model.predict_qf(x).item()) * 100 - qf))
        errs[qf] = round(float(np.mean(e)), 2)
    model.train()
    return {"qf_mae": round(float(np.mean(list(errs.values()))), 3), "per_qf": errs}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", type=pathlib.Path)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log", type=pathlib.Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)

    sd = torch.load(a.weights, map_location="cpu", weights_only=True)
    model = build(config_from_state_dict(sd))
    model.load_state_dict(sd)
    model = model.train().to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    head = list(model.qf_pred.parameters())
    for p in head:
        p.requires_grad_(True)
    opt = torch.optim.Adam(head, lr=a.lr)

    images = data.load_images(SHARED / "train", a.patch + 8)
    val = load_val()
    log = open(a.log, "a") if a.log else None

    def record(it, losses, t0):
        rec = {"iter": it, "minutes": round((time.time() - t0) / 60, 1),
               "loss": round(float(np.mean(losses)), 5) if losses else None, **qf_mae(model, val)}
        print(json.dumps(rec), flush=True)
        if log:
            log.write(json.dumps(rec) + "\n")
            log.flush()

    t0, losses = time.time(), []
    record(0, losses, t0)
    for it in range(a.iters):
        lq, _, qf = (torch.from_numpy(v) for v in data.batch(images, rng, a.batch, data.Sampling(a.patch, p_double=0.0)))
        with torch.no_grad():
            enc = model.encode(lq.contiguous(memory_format=torch.channels_last))[2]
        loss = F.l1_loss(model.qf_pred(enc), qf)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (it + 1) % a.val_every == 0 or it + 1 == a.iters:
            record(it + 1, losses, t0)
            losses = []
    torch.save(plain_state_dict(model), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
