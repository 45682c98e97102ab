"""The FBCNN network (Jiang, Zhang, Timofte, ICCV 2021).

Parameter names and shapes equal the official ``models/network_fbcnn.py`` so the
released ``.pth`` files load with ``strict=True`` and no renaming. The widths of
the QF head and embedding (``qf_nc``) and an optional global residual exist for
our compact model; with the defaults this is exactly the official network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Config:
    in_nc: int = 3
    out_nc: int = 3
    nc: tuple = (64, 128, 256, 512)
    nb: int = 4
    qf_nc: int = 512
    residual: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["nc"] = list(self.nc)
        return d


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=True)


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))); the inner Sequential is named ``res`` as upstream."""

    def __init__(self, nc: int):
        super().__init__()
        self.res = nn.Sequential(_conv(nc, nc), nn.ReLU(inplace=True), _conv(nc, nc))

    def forward(self, x):
        # In place: a fresh full-resolution tensor per add cost a quarter of CPU inference.
        # Safe under autograd too, since a conv's backward does not need its output.
        r = self.res(x)
        r += x
        return r


class QFAttention(nn.Module):
    """x + gamma * conv(relu(conv(x))) + beta, gamma/beta per channel from the QF embedding."""

    def __init__(self, nc: int):
        super().__init__()
        self.res = nn.Sequential(_conv(nc, nc), nn.ReLU(inplace=True), _conv(nc, nc))

    def forward(self, x, gamma, beta):
        if torch.is_grad_enabled() or gamma.shape[0] != 1:
            return x + gamma[:, :, None, None] * self.res(x) + beta[:, :, None, None]
        # Inference with one QF: fold gamma and beta into the last conv, saving two
        # full-resolution passes per block.
        conv = self.res[2]
        g = gamma[0].to(conv.weight.dtype)
        r = F.conv2d(self.res[1](self.res[0](x)), conv.weight * g[:, None, None, None],
                     conv.bias * g + beta[0].to(conv.bias.dtype), padding=1)
        r += x
        return r


def _down(nb: int, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(cin) for _ in range(nb)], nn.Conv2d(cin, cout, 2, 2, 0, bias=True))


def _up(nb: int, cin: int, cout: int) -> nn.ModuleList:
    return nn.ModuleList([nn.ConvTranspose2d(cin, cout, 2, 2, 0, bias=True),
                          *[QFAttention(cout) for _ in range(nb)]])


class FBCNN(nn.Module):
    def __init__(self, in_nc=3, out_nc=3, nc=(64, 128, 256, 512), nb=4, qf_nc=512, residual=False):
        super().__init__()
        nc = tuple(int(c) for c in nc)
        self.config = Config(in_nc, out_nc, nc, nb, qf_nc, bool(residual))
        if residual and in_nc != out_nc:
            raise ValueError("a global residual needs in_nc == out_nc")
        self.nb = nb
        self.m_head = _conv(in_nc, nc[0])
        self.m_down1 = _down(nb, nc[0], nc[1])
        self.m_down2 = _down(nb, nc[1], nc[2])
        self.m_down3 = _down(nb, nc[2], nc[3])
        self.m_body_encoder = nn.Sequential(*[ResBlock(nc[3]) for _ in range(nb)])
        self.m_body_decoder = nn.Sequential(*[ResBlock(nc[3]) for _ in range(nb)])
        self.m_up3 = _up(nb, nc[3], nc[2])
        self.m_up2 = _up(nb, nc[2], nc[1])
        self.m_up1 = _up(nb, nc[1], nc[0])
        self.m_tail = _conv(nc[0], out_nc)
        # Indices 4 and 5 (pooling, flatten) hold no parameters but keep upstream's key numbering.
        self.qf_pred = nn.Sequential(
            *[ResBlock(nc[3]) for _ in range(nb)],
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
            nn.Linear(nc[3], qf_nc), nn.ReLU(inplace=True),
            nn.Linear(qf_nc, qf_nc), nn.ReLU(inplace=True),
            nn.Linear(qf_nc, 1), nn.Sigmoid())
        self.qf_embed = nn.Sequential(
            nn.Linear(1, qf_nc), nn.ReLU(inplace=True),
            nn.Linear(qf_nc, qf_nc), nn.ReLU(inplace=True),
            nn.Linear(qf_nc, qf_nc), nn.ReLU(inplace=True))
        for k, c in ((3, nc[2]), (2, nc[1]), (1, nc[0])):
            setattr(self, f"to_gamma_{k}", nn.Sequential(nn.Linear(qf_nc, c), nn.Sigmoid()))
            setattr(self, f"to_beta_{k}", nn.Sequential(nn.Linear(qf_nc, c), nn.Tanh()))
        if residual:
            # A persistent marker, so the architecture can be read back from a state dict.
            self.register_buffer("global_residual", torch.ones(1))

    def encode(self, x):
        """Pad, run the encoder; returns the skips and the encoder output."""
        h, w = x.shape[-2:]
        pad_b, pad_r = -h % 8, -w % 8
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b), mode="replicate")
        x1 = self.m_head(x)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        return x, (x1, x2, x3, x4), self.m_body_encoder(x4)

    def predict_qf(self, x):
        """The QF head alone (model convention: 1 - QF/100), skipping the decoder."""
        return self.qf_pred(self.encode(x)[2])

    def forward(self, x, qf_input=None):
        h, w = x.shape[-2:]
        xp, skips, enc = self.encode(x)
        qf = self.qf_pred(enc)
        return self._decode(xp, skips, enc, qf if qf_input is None else qf_input)[..., :h, :w], qf

    def restore(self, x, qf_input):
        """The restored image alone, at a given QF (model convention): skips the QF head."""
        h, w = x.shape[-2:]
        xp, skips, enc = self.encode(x)
        return self._decode(xp, skips, enc, qf_input)[..., :h, :w]

    def _decode(self, xp, skips, enc, qf):
        x1, x2, x3, x4 = skips
        y = self.m_body_decoder(enc)
        emb = self.qf_embed(qf.to(enc.dtype))
        for k, up, skip in ((3, self.m_up3, x4), (2, self.m_up2, x3), (1, self.m_up1, x2)):
            gamma, beta = getattr(self, f"to_gamma_{k}")(emb), getattr(self, f"to_beta_{k}")(emb)
            y = up[0](y + skip)
            for block in up[1:]:
                y = block(y, gamma, beta)
        # The tail runs in fp32 even under autocast: a bf16 image would hold only ~8 bits,
        # and high-bit-depth layers must not be squeezed through 8 bits.
        with torch.autocast(xp.device.type, enabled=False):
            y = self.m_tail((y + x1).float())
            if self.config.residual:
                y = y + xp.float()
        return y


def config_from_state_dict(sd) -> Config:
    """Infer an FBCNN-family architecture from tensor shapes, or raise ValueError."""
    try:
        head, tail = sd["m_head.weight"], sd["m_tail.weight"]
        nb = 0
        while f"m_body_encoder.{nb}.res.0.weight" in sd:
            nb += 1
        # The stride conv follows the nb ResBlocks of each down stage.
        nc = (head.shape[0], sd[f"m_down1.{nb}.weight"].shape[0],
              sd[f"m_down2.{nb}.weight"].shape[0], sd[f"m_down3.{nb}.weight"].shape[0])
        qf_nc = sd["qf_embed.0.weight"].shape[0]
    except (KeyError, AttributeError, IndexError, TypeError) as e:
        raise ValueError(f"not an FBCNN-family state dict (missing or malformed {e})") from None
    if nb == 0:
        raise ValueError("not an FBCNN-family state dict (no encoder blocks)")
    return Config(int(head.shape[1]), int(tail.shape[0]), tuple(int(c) for c in nc), nb,
                  int(qf_nc), "global_residual" in sd)


def build(config: Config) -> FBCNN:
    return FBCNN(**config.as_dict())


def flops_per_pixel(config: Config, size: int = 256) -> float:
    """FLOPs per input pixel of one forward pass, counted by torch on a size x size input."""
    from torch.utils.flop_counter import FlopCounterMode
    model = build(config).eval()
    x = torch.zeros(1, config.in_nc, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / (size * size)
