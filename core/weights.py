"""Model registry (placeholder until the weights module lands)."""
from core.network import Config

COMPACT_CONFIG = Config(in_nc=3, out_nc=3, nc=(16, 32, 64, 128), nb=2, qf_nc=64, residual=True)
