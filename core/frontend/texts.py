"""What the dialogs say: model and device labels, where a QF came from, and what to do
when the worker fails. One wording for both editors; `editor` fills in the name."""
from __future__ import annotations

# By the worker's model name. The official models are a 288 MB download each.
MODEL_LABELS = {
    "auto": "Automatic",
    "compact": "Compact (bundled, fast)",
    "fbcnn_color": "FBCNN color (official)",
    "fbcnn_gray": "FBCNN gray (official)",
    "fbcnn_gray_double": "FBCNN gray, re-saved JPEGs (official)",
}
# By the worker's device name; Intel accelerators are reached through OpenVINO.
DEVICE_LABELS = {
    "auto": "Automatic",
    "gpu": "GPU",
    "cuda": "GPU (CUDA/ROCm)",
    "mps": "GPU (Apple)",
    "cpu": "CPU",
    "intel-gpu": "Intel GPU (OpenVINO)",
    "npu": "Intel NPU (OpenVINO)",
}
SOURCE_TEXT = {
    "file": "file quantization tables",
    "double-jpeg": "re-saved JPEG detected",
    "network": "predicted by the network",
    "manual": "set by hand",
}


def model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)


def describe_qf(estimate: dict) -> str:
    """"Detected QF 23 (file quantization tables)" and friends, from an estimate reply."""
    qf, source = int(estimate["qf"]), estimate["source"]
    if source == "double-jpeg":
        last = (estimate.get("details") or {}).get("last_qf")
        extra = f"; last save was QF {last}" if last else ""
        return f"QF {qf} ({SOURCE_TEXT['double-jpeg']}{extra})"
    if source == "file":
        return f"Detected QF {qf} ({SOURCE_TEXT['file']})"
    return f"QF {qf} ({SOURCE_TEXT.get(source, source)})"


def advice(error, editor: str) -> str:
    """A worker error (the client's WorkerError) as a message that says what to do."""
    kind = getattr(error, "kind", "internal")
    message = getattr(error, "message", None) or str(error)
    if kind == "not-configured":
        return f"FBCNN is not set up for {editor} yet: {message}"
    if kind == "version-mismatch":
        return f"{message[:1].upper()}{message[1:]}."
    if kind == "missing-model":
        return (f"{message}\n\nDownload that model with the FBCNN installer (or `fbcnn download "
                "NAME` in its Python), or choose the Compact model in the dialog.")
    if kind == "out-of-memory":
        return (f"Not enough memory: {message}\n\nChoose the Compact model or the CPU device, "
                "filter a smaller selection, or close other programs, then try again.")
    if kind == "bad-request":
        return f"The FBCNN worker refused the request: {message}"
    if kind == "cancelled":
        return "Cancelled."
    if kind in ("worker-died", "timeout", "protocol"):
        text = f"The FBCNN worker failed: {message}"
        if "installer" not in message:
            text += (f"\n\nRe-run the FBCNN installer (python installer.py) to repair it, "
                     f"then restart {editor}.")
        return text
    return (f"The FBCNN worker reported an error ({kind}): {message}\n\n"
            "If this keeps happening, report it with the details.")
