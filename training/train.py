"""Train the bundled compact FBCNN, resumably, on the CPU or a GPU.

    python -m training.train --iters 16000 --out training/run
    python -m training.train --device cuda --workers 12 --batch 64 --patch 128 ...

Reproduces core/models/fbcnn_compact.pth (see training/README.md for what ran).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench.metrics import psnr
from core.engine import cpu_has_bf16
from core.network import build, config_from_state_dict
from core.weights import COMPACT_CONFIG
from training import data, degrade

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"


def load_val(n=18, crop=256):
    out = []
    for p in sorted((SHARED / "val" / "McMaster").glob("*.png"))[:n]:
        from PIL import Image
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[:2]
        y, x = (h - crop) // 2 // 8 * 8, (w - crop) // 2 // 8 * 8
        out.append(np.ascontiguousarray(a[y:y + crop, x:x + crop]))
    return out


@torch.inference_mode()
def validate(model, val, qfs=(10, 20, 30, 40)) -> dict:
    model.eval()
    device = next(model.parameters()).device
    res = {}
    for qf in qfs:
        gains, qerr = [], []
        for gt in val:
            lq = degrade.jpeg(gt, qf)
            x = torch.from_numpy(lq.copy()).permute(2, 0, 1)[None].float().to(device) / 255
            y, q = model(x)
            out = (y[0].float().permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            gains.append(psnr(out, gt) - psnr(lq, gt))
            qerr.append(abs((1 - q.item()) * 100 - qf))
        res[f"gain_qf{qf}"] = round(float(np.mean(gains)), 3)
        res[f"qf_mae_qf{qf}"] = round(float(np.mean(qerr)), 2)
    model.train()
    return res


def plain_state_dict(model) -> dict:
    """Contiguous tensors, as the shipped file holds them (channels_last is a runtime layout)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def batches(images, rng: random.Random, batch: int, sampling: data.Sampling):
    """Endless (degraded, clean, QF label) tensor batches drawn from `rng`."""
    while True:
        yield tuple(torch.from_numpy(v) for v in data.batch(images, rng, batch, sampling))


class Batches(torch.utils.data.IterableDataset):
    """`batches` in DataLoader worker processes, each drawing from its own seeded stream.

    On a GPU the JPEG round trips on the CPU are the bottleneck, so they run in parallel.
    """

    def __init__(self, images, seed: str, batch: int, sampling: data.Sampling):
        self.images, self.seed, self.batch, self.sampling = images, seed, batch, sampling

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed}-{0 if info is None else info.id}")
        return batches(self.images, rng, self.batch, self.sampling)


def image_loss(y, gt, lq, power=0.0, floor=0.01):
    """L1, each sample weighted by its JPEG's own L1 error to the power -`power` (mean weight 1).

    PSNR gain is a ratio, so plain L1 spends most of a small model's capacity on the
    heaviest compression; the floor keeps nearly clean samples from dominating.
    """
    err = (y - gt).abs().mean(dim=(1, 2, 3))
    if not power:
        return err.mean()
    w = (lq.float() - gt).abs().mean(dim=(1, 2, 3)).clamp_min(floor) ** -power
    return (err * (w / w.mean())).mean()


# Brings the log-MSE gradient to about the size of L1's at this model's errors (RMS ~0.025).
PSNR_LOSS_SCALE = 0.012


def psnr_loss(y, gt, eps=1e-6):
    """The mean of the samples' log MSE: minimising it maximises their mean PSNR, the score itself.

    Each sample's gradient is divided by its own MSE, as a PSNR gain weighs errors; the scale
    keeps the QF head's share of the loss and the clipping threshold meaning what they did.
    """
    mse = (y - gt).square().mean(dim=(1, 2, 3))
    return PSNR_LOSS_SCALE * torch.log(mse + eps).mean()


def lr_at(it, total, base, warm=300):
    if it < warm:
        return base * (it + 1) / warm
    t = (it - warm) / max(1, total - warm)
    return 1e-6 + 0.5 * (base - 1e-6) * (1 + math.cos(math.pi * min(t, 1.0)))


def qf_list(text: str) -> tuple[int, ...]:
    try:
        qfs = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of QFs") from None
    if not all(1 <= q <= 100 for q in qfs):
        raise argparse.ArgumentTypeError(f"QFs are 1..100, not {text}")
    return qfs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=16000)
    ap.add_argument("--schedule", type=int, default=None,
                    help="length of the cosine learning-rate schedule (default: --iters)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--qf-weight", type=float, default=0.1)
    ap.add_argument("--p-double", type=float, default=0.3)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes making batches (0: in the training loop, the exact resumable stream)")
    # Emulated bf16 (CPUs without AVX512-BF16) ran 24x slower than fp32 here.
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on a GPU, and on CPUs with native bf16)")
    ap.add_argument("--ema", type=float, default=0.999,
                    help="decay of the weight average that is validated and saved (0: no average)")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "training" / "run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=pathlib.Path, default=None,
                    help="start from these weights (e.g. core/models/fbcnn_compact.pth) when no checkpoint exists")
    ap.add_argument("--blocks", type=int, default=None,
                    help="blocks per stage of a model trained from scratch (default: the shipped model's)")
    ap.add_argument("--experts", type=int, default=None,
                    help="QF experts per decoder conv (default: the starting model's, else the shipped model's); "
                         "an --init model without them gets zero deltas")
    ap.add_argument("--loss", choices=("l1", "psnr"), default="l1",
                    help="l1 (weighted by --loss-power) or psnr: the samples' mean log MSE")
    ap.add_argument("--loss-power", type=float, default=0.0,
                    help="weight each sample's L1 by (its JPEG's L1 error)^-p, so lightly compressed samples "
                         "are not drowned out by heavy ones (0: plain L1)")
    ap.add_argument("--min-scale", type=float, default=1.0,
                    help="zoom each training crop out by a random factor down to this (1: no zoom)")
    ap.add_argument("--permute-channels", action="store_true",
                    help="show each crop in a random order of R, G and B (new colours from the same photographs)")
    ap.add_argument("--qf-grid", type=qf_list, default=degrade.QF_GRID,
                    help="comma-separated QFs that 3/4 of the samples are compressed at; the rest are uniform "
                         "in 5..95 (default: the paper's 10,20,...,70)")
    ap.add_argument("--extra", type=pathlib.Path, action="append", default=[], metavar="DIR",
                    help="another folder of clean photographs (PNG) to train on besides ../shared's; repeatable")
    ap.add_argument("--skip-gray", action="store_true",
                    help="train on colour images only (the gray textures and scans are about 10%% of the images)")
    a = ap.parse_args(argv)
    if not 0 < a.min_scale <= 1:
        ap.error("--min-scale is a zoom-out factor in (0, 1]")
    for d in a.extra:
        suffixes = {p.suffix.lower() for p in d.rglob("*")}
        if ".png" not in suffixes:
            ap.error(f"--extra {d}: no PNG images there")
        # load_images reads JPEGs too (../shared's q95 originals), but here they would be taught as clean.
        if suffixes & {".jpg", ".jpeg"}:
            ap.error(f"--extra {d}: holds JPEGs; extra photographs must be lossless")
    if a.loss == "psnr" and a.loss_power:
        ap.error("--loss-power weights the L1 loss; --loss psnr already weighs each sample by its own error")
    if a.bf16 is None:
        a.bf16 = a.device != "cpu" or cpu_has_bf16()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = a.out / "checkpoint.pt", a.out / "log.jsonl"

    torch.manual_seed(a.seed)
    ck = torch.load(ckpt_path, map_location=a.device, weights_only=False) if ckpt_path.exists() else None
    init = torch.load(a.init, map_location="cpu", weights_only=True) if a.init is not None and ck is None else None
    # The architecture comes from what the run starts from (e.g. a deepened model), else the shipped one.
    start_sd = ck["model"] if ck is not None else init
    config = config_from_state_dict(start_sd) if start_sd is not None else replace(COMPACT_CONFIG, nb=a.blocks or COMPACT_CONFIG.nb)
    if a.experts is not None and ck is None:
        config = replace(config, qf_experts=a.experts)
    model = build(config).train()
    # Start at "no change": with the global residual a zero tail makes the output equal the input.
    torch.nn.init.zeros_(model.m_tail.weight)
    torch.nn.init.zeros_(model.m_tail.bias)
    rng = random.Random(a.seed)
    start, spent, best = 0, 0.0, float("-inf")
    if init is not None:
        missing, unexpected = model.load_state_dict(init, strict=False)
        # Only new QF experts may be absent from the starting file; they start at zero.
        if unexpected or any(not k.startswith(("qf_delta.", "qf_mix.")) for k in missing):
            raise SystemExit(f"{a.init} does not fit {model.config}: missing {missing}, unexpected {unexpected}")
        print(f"initialised from {a.init} ({model.config.nb} blocks per stage, "
              f"{model.config.qf_experts} QF experts{', new' if missing else ''})")
    # channels_last: 1.15x faster per step in fp32 on these CPUs.
    model = model.to(a.device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    # The average of recent weights is what gets validated and shipped: it is smoother
    # than the last step's weights at no training cost.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(a.ema)) if a.ema else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if ema is not None and "ema" in ck:
            ema.load_state_dict(ck["ema"])
        rng.setstate(ck["rng"])
        start, spent = ck["iter"], ck["seconds"]
        best = ck.get("best", best)
        print(f"resumed at iteration {start} ({spent / 3600:.2f} h so far)")

    images = data.load_images(SHARED / "train", a.patch + 8, a.skip_gray)
    for d in a.extra:
        images += data.load_images(d, a.patch + 8, a.skip_gray)
    val = load_val()
    print(f"{len(images)} training images; {len(val)} validation crops; {a.device}; bf16 {a.bf16}; "
          f"{a.threads} threads; {a.workers} batch workers; EMA {a.ema}", flush=True)
    sampling = data.Sampling(a.patch, a.p_double, a.min_scale, a.permute_channels, a.qf_grid)
    if a.workers:
        source = Batches(images, f"{a.seed}-{start}", a.batch, sampling)
        stream = iter(torch.utils.data.DataLoader(source, batch_size=None, num_workers=a.workers, prefetch_factor=4))
    else:
        # In the loop, from the checkpointed rng: a resumed run continues the exact stream.
        stream = batches(images, rng, a.batch, sampling)
    t0, running = time.time(), []
    for it in range(start, a.iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(it, a.schedule or a.iters, a.lr)
        lq, gt, qf = (v.to(a.device, non_blocking=True) for v in next(stream))
        lq = lq.contiguous(memory_format=torch.channels_last)
        with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16):
            y, q = model(lq)
        restored = psnr_loss(y.float(), gt) if a.loss == "psnr" else image_loss(y.float(), gt, lq, a.loss_power)
        loss = restored + a.qf_weight * F.l1_loss(q.float(), qf)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # bf16 backward at lr 1e-3 once blew up (loss 86 by iteration 1000): clip, and skip
        # any step whose gradient is not finite.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        if torch.isfinite(norm):
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
        running.append(loss.item())
        done = it + 1
        if done % a.val_every == 0 or done == a.iters:
            elapsed = spent + time.time() - t0
            shipped = model if ema is None else ema.module
            rec = {"iter": done, "hours": round(elapsed / 3600, 3), "loss": round(float(np.mean(running)), 5),
                   "lr": opt.param_groups[0]["lr"], **validate(shipped, val)}
            running = []
            print(json.dumps(rec), flush=True)
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            weights = plain_state_dict(shipped)
            torch.save(weights, a.out / "compact_latest.pth")
            score = sum(v for k, v in rec.items() if k.startswith("gain_"))
            if score > best:
                best = score
                torch.save(weights, a.out / "compact_best.pth")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.getstate(),
                        **({"ema": ema.state_dict()} if ema is not None else {}), "best": best,
                        "iter": done, "seconds": elapsed, "args": {k: str(v) for k, v in vars(a).items()}},
                       ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)


if __name__ == "__main__":
    main()
