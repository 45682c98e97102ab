"""Which device runs the network, on which runtime, at which precision.

Answered without importing torch where that is possible (it takes seconds, and a
dialog's first preview should not wait for it): a CPU-only torch build is told
apart by its version file, and the CPU's bf16 by its flags.
"""
from __future__ import annotations

import functools
import importlib.util
import pathlib
import platform
import re
import sys
from typing import Optional

from core import openvino_runtime

# bf16 on CPU is the default only where it was measured to cost <= 0.05 dB (bench/quality.py).
CPU_BF16_DEFAULT = True


def torch_may_see_a_gpu() -> bool:
    """False only for a torch built without CUDA, ROCm and XPU on a non-Apple system,
    read from torch/version.py; True when unsure (then torch itself is asked)."""
    if "torch" in sys.modules or sys.platform == "darwin":
        return True
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return True
    try:
        text = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return True
    builds = re.findall(r"^(cuda|hip|xpu)\b[^=\n]*=\s*(.+)$", text, re.M)
    return len(builds) < 3 or any(value.strip() != "None" for _, value in builds)


# Devices only OpenVINO reaches (Intel GPUs and NPUs): untested on real hardware.
OPENVINO_DEVICES = ("intel-gpu", "npu")


def available_devices(ov_lister=None) -> list[str]:
    """Present devices, in the order "auto" prefers them; Intel accelerators last
    (they are used only when asked for, by name or as "gpu")."""
    found = ["cpu"]
    if torch_may_see_a_gpu():
        import torch
        if torch.cuda.is_available():  # ROCm builds answer here too
            found.insert(0, "cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            found.insert(0, "mps")
    return found + openvino_runtime.accelerators(openvino_runtime.ov_devices(ov_lister))


def pick_device(requested: str = "auto", available: Optional[list] = None) -> tuple[str, list]:
    """Resolve auto/gpu/cuda/mps/intel-gpu/npu/cpu to a present device, CUDA -> MPS -> CPU
    for auto; warnings if downgraded."""
    available = available_devices() if available is None else available
    requested = (requested or "auto").lower()
    order = {"auto": ["cuda", "mps", "cpu"], "gpu": ["cuda", "mps", "intel-gpu"], "cuda": ["cuda"],
             "rocm": ["cuda"], "mps": ["mps"], "intel-gpu": ["intel-gpu"], "npu": ["npu"],
             "cpu": ["cpu"]}
    if requested not in order:
        raise ValueError(f"unknown device {requested!r}; use auto, gpu, cuda, mps, intel-gpu, "
                         "npu or cpu")
    for d in order[requested]:
        if d in available:
            return d, []
    return "cpu", [f"no {requested.upper()} device is available here; running on the CPU instead"]


RUNTIMES = ("auto", "torch", "openvino")


def pick_runtime(requested: str, device: str, openvino_installed: Optional[bool] = None) -> str:
    """torch or openvino for a device: OpenVINO on the CPU where it is installed
    (it uses the CPU more fully) and on Intel GPUs and NPUs (only it reaches them),
    torch on CUDA, ROCm and MPS."""
    requested = (requested or "auto").lower()
    if requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {requested!r}; use auto, torch or openvino")
    if openvino_installed is None:
        openvino_installed = openvino_runtime.installed()
    if device in OPENVINO_DEVICES:
        if requested == "torch":
            raise ValueError(f"{device} is reached through OpenVINO only; use --runtime openvino")
        return "openvino"
    if requested == "torch" or (requested == "auto" and (device != "cpu" or not openvino_installed)):
        return "torch"
    if device != "cpu":
        raise ValueError(f"the OpenVINO runtime runs on the CPU, not on {device}; "
                         "use --runtime torch or --device cpu")
    if not openvino_installed:
        raise ValueError("the OpenVINO runtime is not installed here (pip install openvino); "
                         "use --runtime torch")
    return "openvino"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively, so that bf16 autocast pays off."""
    return bf16_native(platform.machine(), _cpu_flags())


def bf16_native(machine: str, flags: Optional[set]) -> bool:
    """x86 needs AVX512-BF16 or AMX-BF16 in the CPU's flags (None: flags unknown).

    oneDNN's own check also says yes on plain AVX512 (Skylake-X, Ice Lake, Tiger Lake),
    where it emulates bf16: a compact-model training step took 3.6x as long there as in
    fp32. Where the flags can't be read, fp32 is the safe guess on x86.
    """
    if machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        return bool(flags and flags & {"avx512_bf16", "amx_bf16"})
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> Optional[frozenset]:
    """The CPU's feature flags from Linux's /proc/cpuinfo, or None elsewhere.

    Read once: autocast asks for every tile, and the file is long on many-core machines.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def low_precision(device: str, precision: str = "auto") -> Optional[str]:
    """"bf16", "fp16" or None (fp32) for a device and the requested precision."""
    precision = (precision or "auto").lower()
    if precision in ("fp32", "bf16", "fp16"):
        return None if precision == "fp32" else precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if device in ("cuda", "mps"):
        return "fp16"
    return "bf16" if CPU_BF16_DEFAULT and cpu_has_bf16() else None
