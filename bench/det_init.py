"""The reference spec's deterministic weights (../shared/reference/fbcnn/README.md)."""
import zlib

import numpy as np


def det_init_v1(k, shape, S):
    n = int(np.prod(shape))
    idx = np.arange(n, dtype=np.float64)
    phase = (zlib.crc32(k.encode("utf-8")) % 10007) / 10007 * 2 * np.pi
    base = np.sin(idx * 0.61803398875 + phase)
    value = S * base / np.sqrt(n / shape[0]) if len(shape) >= 2 else 0.05 * base
    return value.astype(np.float32).reshape(shape)


def det_init_v2(k, shape, S):
    n = int(np.prod(shape))
    M = np.uint64(0xFFFFFFFF)
    h = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(zlib.crc32(k.encode("utf-8")))) & M
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & M
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & M
    h ^= h >> np.uint64(16)
    base = h.astype(np.float64) / 4294967296.0 * 2.0 - 1.0
    value = S * base / np.sqrt(n / shape[0]) if len(shape) >= 2 else 0.05 * base
    return value.astype(np.float32).reshape(shape)
