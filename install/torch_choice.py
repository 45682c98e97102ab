"""Which torch build the worker gets (CPU, CUDA, ROCm, MPS), from which pip index, and
whether a torch already at hand (the base Python's, or a given venv's) is reused."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .console import last_json_line, run_capture
from .paths import os_kind

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
# CUDA wheel tags, newest first, with the lowest driver CUDA version each needs.
CUDA_TAGS = [((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"), ((11, 8), "cu118")]
ROCM_TAG = "rocm6.4"
TORCH_REQ = "torch>=2.0,<3"


@dataclass
class TorchChoice:
    kind: str                     # cpu | cuda | rocm | mps
    index_url: str | None         # None: pip's configured index (PyPI)
    reuse_base: bool              # venv with --system-site-packages sees the base's torch
    reasons: list = field(default_factory=list)
    base_torch: dict | None = None
    # The site-packages of a venv given with --python whose torch is reused: `venv
    # --system-site-packages` reaches only a venv's base, so the new venv links it by a .pth.
    linked_site: str | None = None

    @property
    def gpu(self) -> bool:
        return self.kind != "cpu"


class Probes:
    """Looks at the machine. Tests inject their own, or put fakes on PATH."""

    def nvidia(self):
        """(present, driver CUDA version 'X.Y' or None, detail)."""
        exe = shutil.which("nvidia-smi")
        if not exe:
            return False, None, "no nvidia-smi on PATH"
        rc, out = run_capture([exe], timeout=20)
        if rc != 0:
            return False, None, f"nvidia-smi failed ({(out or '').strip().splitlines()[-1:] or rc})"
        m = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", out)
        gpu = re.search(r"\|\s+\d+\s+([^|]*?)\s{2,}", out)
        name = gpu.group(1).strip() if gpu else "NVIDIA GPU"
        return True, (m.group(1) if m else None), f"nvidia-smi sees {name}"

    def rocm(self):
        """(present, detail)."""
        for tool in ("rocminfo", "rocm-smi"):
            p = shutil.which(tool)
            if p:
                return True, f"{tool} found at {p}"
        for root in filter(None, (os.environ.get("ROCM_PATH"), "/opt/rocm")):
            if Path(root).is_dir() and os_kind() == "linux":
                return True, f"ROCm installed at {root}"
        return False, "no ROCm (rocminfo, rocm-smi, /opt/rocm)"

    def machine(self) -> str:
        import platform
        return platform.machine().lower()

    def base_torch(self, python: str):
        """What torch this Python imports, as a dict, or None: the base's, a given venv's,
        or the new venv's before the project is in it (nothing of ours is imported)."""
        code = ("import json, torch\n"
                "mps = getattr(getattr(torch, 'backends', None), 'mps', None)\n"
                "print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda,"
                " 'hip': getattr(torch.version, 'hip', None),"
                " 'mps': bool(mps and mps.is_built()), 'file': torch.__file__}))\n")
        rc, out = run_capture([python, "-I", "-c", code], timeout=300, cwd=tempfile.gettempdir())
        return last_json_line(out) if rc == 0 else None


def cuda_tag(driver_cuda: str | None) -> str:
    if driver_cuda:
        try:
            have = tuple(int(x) for x in driver_cuda.split(".")[:2])
        except ValueError:
            have = None
        if have:
            for need, tag in CUDA_TAGS:
                if have >= need:
                    return tag
    return "cu126"


def torch_version_ok(version: str) -> bool:
    m = re.match(r"(\d+)\.", version or "")
    return bool(m) and m.group(1) == "2"


def base_torch_suits(kind: str, info: dict | None) -> tuple:
    """(suits, why) for reusing the base Python's torch for this kind of device."""
    if not info:
        return False, "the base Python has no torch"
    v = info.get("version", "?")
    if not torch_version_ok(v):
        return False, f"the base Python's torch {v} is outside {TORCH_REQ}"
    if kind == "cpu":
        return True, f"the base Python already has torch {v}, which runs on the CPU"
    if kind == "cuda" and info.get("cuda"):
        return True, f"the base Python already has torch {v} built for CUDA {info['cuda']}"
    if kind == "rocm" and info.get("hip"):
        return True, f"the base Python already has torch {v} built for ROCm {info['hip']}"
    if kind == "mps" and info.get("mps"):
        return True, f"the base Python already has torch {v} with MPS"
    return False, f"the base Python's torch {v} is not a {kind.upper()} build"


def choose_torch(requested: str, index_override: str | None, base_python: str,
                 probes: Probes | None = None, given_python: str | None = None) -> TorchChoice:
    """Which torch build to use, where pip gets it, and whether the base's torch can be reused."""
    probes = probes or Probes()
    reasons = []
    osk = os_kind()
    kind = requested
    nv_cuda = None
    if requested == "auto":
        nv, nv_cuda, nv_detail = probes.nvidia()
        if nv:
            kind = "cuda"
            reasons.append(f"auto: {nv_detail} (driver CUDA {nv_cuda or 'unknown'}) -> CUDA build")
        else:
            rocm, rocm_detail = probes.rocm() if osk == "linux" else (False, "ROCm is Linux-only")
            if rocm:
                kind = "rocm"
                reasons.append(f"auto: {nv_detail}; {rocm_detail} -> ROCm build")
            elif osk == "macos" and probes.machine() in ("arm64", "aarch64"):
                kind = "mps"
                reasons.append(f"auto: {nv_detail}; Apple silicon -> MPS (PyPI's macOS torch)")
            else:
                kind = "cpu"
                reasons.append(f"auto: {nv_detail}; {rocm_detail} -> CPU build")
    else:
        reasons.append(f"--torch {requested} given")
        if requested == "cuda":
            _, nv_cuda, _ = probes.nvidia()
        if requested == "rocm" and osk != "linux":
            reasons.append("warning: ROCm wheels exist only for Linux")
        if requested == "mps" and osk != "macos":
            reasons.append("warning: MPS exists only on macOS")

    if index_override:
        index = index_override
        reasons.append(f"index {index} (from --torch-index-url)")
    elif kind == "cuda":
        index = PYTORCH_INDEX + cuda_tag(nv_cuda)
    elif kind == "rocm":
        index = PYTORCH_INDEX + ROCM_TAG
    elif kind == "cpu" and osk != "macos":
        index = PYTORCH_INDEX + "cpu"  # the small CPU-only wheels, not the CUDA ones
    else:
        index = None  # macOS: PyPI's wheels are the CPU/MPS ones

    base = probes.base_torch(base_python)
    suits, why = base_torch_suits(kind, base)
    linked = None
    if not suits and given_python and given_python != base_python:
        # A venv given with --python (or running the installer) that has a fitting torch.
        own = probes.base_torch(given_python)
        own_suits, own_why = base_torch_suits(kind, own)
        if own_suits and own.get("file"):
            base, suits = own, True
            why = own_why.replace("the base Python", f"the venv of {given_python}")
            linked = str(Path(own["file"]).parent.parent)
    reuse = suits and not index_override
    if reuse:
        how = f"a .pth link to {linked}" if linked else "--system-site-packages"
        reasons.append(why + f": the venv reuses it ({how}), nothing is downloaded")
    else:
        if suits and index_override:
            why += ", but --torch-index-url asks for a fresh install"
        reasons.append(why + f": pip installs torch from {index or 'PyPI'}")
        if not base:
            reasons.append("(a Python that already has torch can be reused instead: --python PATH)")
    return TorchChoice(kind, index, reuse, reasons, base, linked if reuse else None)


def venv_torch_fits(kind: str, info: dict) -> tuple:
    """(fits, why) for the torch the venv imports now (its own or the base's)."""
    if not info.get("torch"):
        return False, "the venv has no torch"
    return base_torch_suits(kind, {"version": info["torch"], "cuda": info.get("cuda_build"),
                                   "hip": info.get("hip_build"), "mps": kind == "mps"})
