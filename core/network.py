"""The FBCNN network (Jiang, Zhang, Timofte, ICCV 2021).

Parameter names and shapes equal the official ``models/network_fbcnn.py`` so the
released ``.pth`` files load with ``strict=True`` and no renaming. The widths of
the QF head and embedding (``qf_nc``), an optional global residual and QF experts
exist for our compact model; with the defaults this is exactly the official network.

QF experts (``qf_experts`` = K > 0): every decoder convolution after the body gets K
weight deltas, mixed per image by coefficients from the QF embedding, so its weight
is ``W + sum_k s_k(QF) D_k``. At one QF the mixed weight is formed once per call, so
this adds capacity for QF-specific behaviour at no cost per pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.config import Config, config_from_state_dict  # noqa: F401 - both are part of this API


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=True)


def _apply(conv, x, weight=None, weight_scale=None, bias=None):
    """`conv` on x, with per-image weights (B or 1, *conv.weight.shape) when given.

    Different weights per image run as one grouped convolution over the batch.
    """
    bias = conv.bias if bias is None else bias
    transposed = isinstance(conv, nn.ConvTranspose2d)
    f = F.conv_transpose2d if transposed else F.conv2d
    if weight is None:
        weight = conv.weight[None]
    if weight_scale is not None:
        weight = weight * (weight_scale[:, None, :, None, None] if transposed else weight_scale[:, :, None, None, None])
    n = weight.shape[0]
    if n == 1:
        return f(x, weight[0], bias if bias.dim() == 1 else bias[0], conv.stride, conv.padding)
    b, c, h, w = x.shape
    bias = (bias.expand(n, -1) if bias.dim() == 1 else bias).reshape(-1)
    y = f(x.reshape(1, b * c, h, w), weight.reshape(-1, *weight.shape[2:]), bias, conv.stride, conv.padding,
          groups=n)
    return y.reshape(b, -1, *y.shape[-2:])


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

    def forward(self, x, gamma, beta, weights=(None, None)):
        """`weights`: per-image weights of the two convs (QF experts), or None for their own."""
        w0, w2 = weights
        if torch.is_grad_enabled() or gamma.shape[0] != 1:
            if w0 is None and w2 is None:
                return x + gamma[:, :, None, None] * self.res(x) + beta[:, :, None, None]
            r = _apply(self.res[2], F.relu(_apply(self.res[0], x, w0)), w2)
            return x + gamma[:, :, None, None] * r + beta[:, :, None, None]
        # Inference with one QF: fold gamma and beta into the last conv, saving two
        # full-resolution passes per block.
        conv = self.res[2]
        g = gamma.to(conv.weight.dtype)
        r = _apply(conv, self.res[1](_apply(self.res[0], x, w0)), w2, g,
                   conv.bias * g + beta.to(conv.bias.dtype))
        r += x
        return r


def _down(nb: int, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(cin) for _ in range(nb)], nn.Conv2d(cin, cout, 2, 2, 0, bias=True))


def _up(nb: int, cin: int, cout: int) -> nn.ModuleList:
    return nn.ModuleList([nn.ConvTranspose2d(cin, cout, 2, 2, 0, bias=True),
                          *[QFAttention(cout) for _ in range(nb)]])


class FBCNN(nn.Module):
    def __init__(self, in_nc=3, out_nc=3, nc=(64, 128, 256, 512), nb=4, qf_nc=512, residual=False,
                 qf_experts=0):
        super().__init__()
        nc = tuple(int(c) for c in nc)
        self.config = Config(in_nc, out_nc, nc, nb, qf_nc, bool(residual), int(qf_experts))
        if residual and in_nc != out_nc:
            raise ValueError("a global residual needs in_nc == out_nc")
        n = self.config.blocks()
        self.m_head = _conv(in_nc, nc[0])
        self.m_down1 = _down(n["scale1"], nc[0], nc[1])
        self.m_down2 = _down(n["scale2"], nc[1], nc[2])
        self.m_down3 = _down(n["scale3"], nc[2], nc[3])
        self.m_body_encoder = nn.Sequential(*[ResBlock(nc[3]) for _ in range(n["body"])])
        self.m_body_decoder = nn.Sequential(*[ResBlock(nc[3]) for _ in range(n["body"])])
        self.m_up3 = _up(n["scale3"], nc[3], nc[2])
        self.m_up2 = _up(n["scale2"], nc[2], nc[1])
        self.m_up1 = _up(n["scale1"], nc[1], nc[0])
        self.m_tail = _conv(nc[0], out_nc)
        # Indices 4 and 5 (pooling, flatten) hold no parameters but keep upstream's key numbering.
        self.qf_pred = nn.Sequential(
            *[ResBlock(nc[3]) for _ in range(n["qf_head"])],
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
        if qf_experts:
            convs = self._expert_convs()
            # Deltas start at zero: a model given experts restores exactly as before. The K
            # deltas of a conv are stacked along its first axis, so they stay 4-D like it.
            self.qf_delta = nn.ParameterList(
                [nn.Parameter(torch.zeros(qf_experts * c.weight.shape[0], *c.weight.shape[1:])) for c in convs])
            self.qf_mix = nn.Linear(qf_nc, len(convs) * qf_experts)
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

    def _expert_convs(self) -> list:
        """The convs that QF experts modulate, in the order of their deltas."""
        convs = []
        for up in (self.m_up3, self.m_up2, self.m_up1):
            convs.append(up[0])
            for block in up[1:]:
                convs += [block.res[0], block.res[2]]
        return convs + [self.m_tail]

    def _expert_weights(self, emb) -> list:
        """Per-image weights (B, *shape) of each expert conv, or Nones without experts."""
        convs = self._expert_convs()
        if not self.config.qf_experts:
            return [None] * len(convs)
        # In the weights' own precision: under autocast the convs cast them on use anyway.
        with torch.autocast(emb.device.type, enabled=False):
            dtype = self.qf_delta[0].dtype
            mix = self.qf_mix(emb.to(dtype)).view(emb.shape[0], len(convs), self.config.qf_experts)
            return [c.weight[None] + torch.einsum("bk,k...->b...", mix[:, i], d.reshape(-1, *c.weight.shape))
                    for i, (c, d) in enumerate(zip(convs, self.qf_delta))]

    def _decode(self, xp, skips, enc, qf):
        x1, x2, x3, x4 = skips
        y = self.m_body_decoder(enc)
        emb = self.qf_embed(qf.to(enc.dtype))
        weights = iter(self._expert_weights(emb))
        for k, up, skip in ((3, self.m_up3, x4), (2, self.m_up2, x3), (1, self.m_up1, x2)):
            gamma, beta = getattr(self, f"to_gamma_{k}")(emb), getattr(self, f"to_beta_{k}")(emb)
            w = next(weights)
            y = up[0](y + skip) if w is None else _apply(up[0], y + skip, w.to(y.dtype))
            for block in up[1:]:
                w0, w2 = next(weights), next(weights)
                y = block(y, gamma, beta, (None if w0 is None else w0.to(y.dtype), None if w2 is None else w2.to(y.dtype)))
        # The tail runs in fp32 even under autocast: a bf16 image would hold only ~8 bits,
        # and high-bit-depth layers must not be squeezed through 8 bits.
        with torch.autocast(xp.device.type, enabled=False):
            w = next(weights)
            y = (y + x1).float()
            y = self.m_tail(y) if w is None else _apply(self.m_tail, y, w.float())
            if self.config.residual:
                y = y + xp.float()
        return y


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
