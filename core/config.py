"""An FBCNN-family architecture, as numbers: what a state dict's shapes say.

Kept apart from the network so that the parts of the product that only need to
know a model's shape (the worker's first answers, the OpenVINO runtime reading a
cached model) run without importing torch, which takes seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


# The stages whose ResBlock count a Config gives: full, 1/2 and 1/4 resolution (each an
# encoder and a decoder stage), the 1/8-resolution body (encoder and decoder), the QF head.
# Depth at low resolution costs the same FLOPs per pixel as at full resolution but sees
# further, which is where a compact model's capacity pays (issue #21).
STAGES = ("scale1", "scale2", "scale3", "body", "qf_head")


@dataclass(frozen=True)
class Config:
    in_nc: int = 3
    out_nc: int = 3
    nc: tuple = (64, 128, 256, 512)
    nb: int = 4
    qf_nc: int = 512
    residual: bool = False
    qf_experts: int = 0

    def __post_init__(self):
        # A list (from JSON) becomes a tuple, so configs compare and hash alike.
        if not isinstance(self.nb, int):
            object.__setattr__(self, "nb", tuple(int(n) for n in self.nb))
            if len(self.nb) != len(STAGES):
                raise ValueError(f"nb: one block count or {len(STAGES)} ({', '.join(STAGES)})")

    def blocks(self) -> dict:
        """Blocks per stage: `nb` is one count for all (as upstream) or one per stage."""
        counts = (self.nb,) * len(STAGES) if isinstance(self.nb, int) else self.nb
        return dict(zip(STAGES, counts))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["nc"] = list(self.nc)
        if not isinstance(self.nb, int):
            d["nb"] = list(self.nb)
        return d


def config_from_state_dict(sd) -> Config:
    """Infer an FBCNN-family architecture from tensor shapes, or raise ValueError."""
    try:
        head, tail = sd["m_head.weight"], sd["m_tail.weight"]
        counts = tuple(_count(sd, prefix) for prefix in ("m_down1", "m_down2", "m_down3", "m_body_encoder", "qf_pred"))
        nb = counts[0] if len(set(counts)) == 1 else counts
        # The stride conv follows the ResBlocks of each down stage.
        nc = (head.shape[0], sd[f"m_down1.{counts[0]}.weight"].shape[0],
              sd[f"m_down2.{counts[1]}.weight"].shape[0], sd[f"m_down3.{counts[2]}.weight"].shape[0])
        qf_nc = sd["qf_embed.0.weight"].shape[0]
        # The first expert conv is m_up3.0; its K deltas are stacked along its first axis.
        experts = sd["qf_delta.0"].shape[0] // sd["m_up3.0.weight"].shape[0] if "qf_delta.0" in sd else 0
    except (KeyError, AttributeError, IndexError, TypeError) as e:
        raise ValueError(f"not an FBCNN-family state dict (missing or malformed {e})") from None
    if 0 in counts:
        raise ValueError("not an FBCNN-family state dict (a stage without blocks)")
    return Config(int(head.shape[1]), int(tail.shape[0]), tuple(int(c) for c in nc), nb,
                  int(qf_nc), "global_residual" in sd, int(experts))


def _count(sd, prefix: str) -> int:
    n = 0
    while f"{prefix}.{n}.res.0.weight" in sd:
        n += 1
    return n
