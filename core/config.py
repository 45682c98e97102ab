"""An FBCNN-family architecture, as numbers: what a state dict's shapes say.

Kept apart from the network so that the parts of the product that only need to
know a model's shape (the worker's first answers, the OpenVINO runtime reading a
cached model) run without importing torch, which takes seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Config:
    in_nc: int = 3
    out_nc: int = 3
    nc: tuple = (64, 128, 256, 512)
    nb: int = 4
    qf_nc: int = 512
    residual: bool = False
    qf_experts: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["nc"] = list(self.nc)
        return d


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
        # The first expert conv is m_up3.0; its K deltas are stacked along its first axis.
        experts = sd["qf_delta.0"].shape[0] // sd["m_up3.0.weight"].shape[0] if "qf_delta.0" in sd else 0
    except (KeyError, AttributeError, IndexError, TypeError) as e:
        raise ValueError(f"not an FBCNN-family state dict (missing or malformed {e})") from None
    if nb == 0:
        raise ValueError("not an FBCNN-family state dict (no encoder blocks)")
    return Config(int(head.shape[1]), int(tail.shape[0]), tuple(int(c) for c in nc), nb,
                  int(qf_nc), "global_residual" in sd, int(experts))
