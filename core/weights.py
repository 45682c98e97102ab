"""Model registry, verified downloads and safe loading of FBCNN weights.

Official weights come from the v1.0 release of jiaxi-jiang/FBCNN and are checked
against a pinned sha256 before they are used; our compact model ships inside the
package. Every load goes through ``torch.load(weights_only=True)``, so a ``.pth``
that carries code is refused instead of run.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING
from http.client import HTTPException

import numpy as np

# torch and the network are imported where weights are loaded: asking for a model's
# state, path or file key must stay quick (the worker's first answers).
from core.config import Config, config_from_state_dict

if TYPE_CHECKING:
    from core.network import FBCNN

COMPACT_CONFIG = Config(in_nc=3, out_nc=3, nc=(16, 32, 64, 128), nb=3, qf_nc=64, residual=True,
                        qf_experts=4)

# The bundled compact model's sha256; training/README.md says how the file was made.
COMPACT_SHA256: str | None = "285a5a2cee2a9592bfa28347cf92f000ba74e6c9321ce271bea9b1d6d33ec9ee"
# (JPEG QF, points added to the QF its decoder is told), measured for that file on
# training crops by training/calibrate.py: it restores best a few points above the
# true QF. Re-measure whenever the file changes.
COMPACT_QF_OFFSETS: tuple = ((5, 0), (10, 2), (20, 2), (30, 4), (40, 4), (50, 4), (60, 4), (70, 2), (80, 0), (90, 0))

_RELEASE = "https://github.com/jiaxi-jiang/FBCNN/releases/download/v1.0/"
PACKAGE_MODELS = pathlib.Path(__file__).resolve().parent / "models"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelEntry:
    name: str
    filename: str
    url: str | None
    size: int | None          # None: unknown, verified by hash only
    sha256: str | None        # None: only for the bundled model before its file lands
    config: Config
    bundled: bool
    description: str


def _official(name, size, sha, config, description) -> ModelEntry:
    return ModelEntry(name, name + ".pth", _RELEASE + name + ".pth", size, sha, config, False, description)


_GRAY = Config(in_nc=1, out_nc=1)

# Decoder-QF offsets belong to the weights they were measured for, whatever the file is
# called or however it is reached (by name or by path): keyed by the file's sha256.
# The official models are used as released.
QF_OFFSETS_BY_FILE: dict = {COMPACT_SHA256: COMPACT_QF_OFFSETS}

REGISTRY: dict[str, ModelEntry] = {
    "compact": ModelEntry("compact", "fbcnn_compact.pth", None, None, COMPACT_SHA256, COMPACT_CONFIG, True,
                          "small bundled model, trained by this project (fast on CPU)"),
    "fbcnn_color": _official("fbcnn_color", 287755111,
                             "8b0e4ef23d59cf7ac934a342cb31a17619e4fa4a0b3374a9d78c5174312387e8",
                             Config(), "official FBCNN, color"),
    "fbcnn_gray": _official("fbcnn_gray", None,
                            "7beec25b883a6c3bd7d103429b78a2371f7e85c1f5261a6e2e5d0702d9e9f977",
                            _GRAY, "official FBCNN, grayscale"),
    "fbcnn_gray_double": _official("fbcnn_gray_double", 287745895,
                                   "4444b8b2393649a4acd5d8730410ec3106d15b6e262a49081e4e87b44cfa5cea",
                                   _GRAY, "official FBCNN-A, grayscale, trained on double JPEG"),
}


class ModelMissing(Exception):
    """A model's file is absent and could not be fetched; the message says how to get it."""


class VerificationError(Exception):
    """A model file does not have the expected size or sha256 (it has been moved aside)."""


class InvalidModel(ValueError):
    """A file that is not a loadable FBCNN-family state dict."""


# ---------------------------------------------------------------- locations

def cache_dir() -> pathlib.Path:
    """Where downloaded models live: the platform's user data dir + fbcnn/models."""
    override = os.environ.get("FBCNN_MODEL_DIR")
    if override:
        return pathlib.Path(override).expanduser()
    home = pathlib.Path.home()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(home / "Library" / "Application Support")
    else:
        # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = xdg if os.path.isabs(xdg) else str(home / ".local" / "share")
    return pathlib.Path(base) / "fbcnn" / "models"


def entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)} "
                         f"(or give a path to a .pth file)") from None


def decoder_qf(model: str, qf: int) -> float:
    """The QF to condition a model's decoder on for a JPEG of quality `qf`: the offsets
    measured for its file (QF_OFFSETS_BY_FILE), by registry name or path alike."""
    offsets = QF_OFFSETS_BY_FILE.get(_known_key(model))
    if not offsets:
        return float(qf)
    knots, offsets = zip(*offsets)
    return min(100.0, qf + float(np.interp(qf, knots, offsets)))


_keys: dict = {}


def _known_key(model: str) -> str | None:
    """A model file's sha256 (the registry's pin for a name), hashed once per file
    version; None for a file that is not there."""
    e = REGISTRY.get(model) if isinstance(model, str) else None
    if e is not None:
        return e.sha256
    path = pathlib.Path(model).expanduser()
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if stamp not in _keys:
        _keys[stamp] = sha256_file(path)
    return _keys[stamp]


def model_path(name: str) -> pathlib.Path:
    """Where the model's file is, or would be once downloaded."""
    e = entry(name)
    return (PACKAGE_MODELS if e.bundled else cache_dir()) / e.filename


def _missing_message(e: ModelEntry, reason: str = "") -> str:
    path = model_path(e.name)
    why = f" ({reason})" if reason else ""
    if e.bundled:
        return (f"model {e.name!r} is missing{why}: its bundled file {path} is not there (it ships "
                f"with the package once trained; reinstall to restore it). Meanwhile use an official "
                f"model: `fbcnn download fbcnn_color` (or fbcnn_gray), then `--model fbcnn_color`.")
    size = f", {e.size} bytes" if e.size else ""
    return (f"model {e.name!r} is missing{why}. Get it with `fbcnn download {e.name}`, or download "
            f"{e.url} by hand (sha256 {e.sha256}{size}) and place it at {path}")


# ---------------------------------------------------------------- verification

def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: pathlib.Path, sha: str) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


# In-process memo as well as the sidecar: the bundled model may sit in a read-only
# install folder where no sidecar can be written.
_verified: dict[str, dict] = {}


def _is_verified(path: pathlib.Path, sha: str) -> bool:
    """True when the file was hashed before and has not changed since (same size and mtime)."""
    try:
        now = _stamp(path, sha)
    except OSError:
        return False
    if _verified.get(str(path)) == now:
        return True
    try:
        return json.loads(_sidecar(path).read_text()) == now
    except (OSError, ValueError):
        return False


def _remember(path: pathlib.Path, sha: str, sidecar: bool = True) -> None:
    stamp = _stamp(path, sha)
    _verified[str(path)] = stamp
    if not sidecar:
        return
    try:
        _sidecar(path).write_text(json.dumps(stamp))
    except OSError:
        pass  # read-only folder: the in-process memo still saves re-hashing in this process


def _forget(path: pathlib.Path) -> None:
    _verified.pop(str(path), None)
    _sidecar(path).unlink(missing_ok=True)


def _check(path: pathlib.Path, e: ModelEntry) -> str | None:
    """None when the file matches the entry, else what is wrong (hashes only when needed)."""
    if e.sha256 is None:
        return None
    if _is_verified(path, e.sha256):
        return None
    size = path.stat().st_size
    if e.size is not None and size != e.size:
        return f"size {size} bytes, expected {e.size}"
    got = sha256_file(path)
    if got != e.sha256:
        return f"sha256 {got}, expected {e.sha256}"
    # No sidecar beside the bundled file: it is small, and its folder is the package (or the repo).
    _remember(path, e.sha256, sidecar=not e.bundled)
    return None


def verify(name: str) -> pathlib.Path:
    """The model's path after checking it. A file that fails is moved aside to
    NAME.rejected, never deleted: it may be a 288 MB copy a user placed by hand."""
    e = entry(name)
    path = model_path(name)
    if not path.is_file():
        raise ModelMissing(_missing_message(e))
    problem = _check(path, e)
    if problem:
        if e.bundled:
            raise VerificationError(f"bundled model {path} is corrupt ({problem}); reinstall the package")
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        _forget(path)
        raise VerificationError(f"{path} failed verification ({problem}). It was moved aside to "
                                f"{rejected}, not deleted: if it is the right model, compare it "
                                "with the download; else delete it. " + _missing_message(e))
    return path


def status(name: str) -> str:
    """'bundled' | 'downloaded' (and verified) | 'missing' | 'corrupt'. Never deletes anything."""
    e = entry(name)
    path = model_path(name)
    if not path.is_file():
        return "missing"
    if _check(path, e):
        return "corrupt"
    return "bundled" if e.bundled else "downloaded"


# ---------------------------------------------------------------- download

class _Transient(Exception):
    """A failure worth retrying (cut connection, short body, 5xx)."""


def _default_backoff(attempt: int) -> float:
    return min(30.0, 2.0 ** attempt)


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "fbcnn-weights/1"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _fetch_once(url: str, part: pathlib.Path, expected: int | None, progress, timeout: float) -> None:
    """One HTTP request that continues ``part``; raises _Transient when it ends early."""
    start = part.stat().st_size if part.exists() else 0
    if expected is not None and start > expected:
        part.unlink()  # longer than the real file: cannot be a prefix of it
        start = 0
    if expected is not None and start == expected:
        return  # complete from an earlier run; the hash check decides
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            part.unlink()  # our partial file does not fit the server's; start over
            raise _Transient("server refused the resume range (416)") from None
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise
    with resp:
        if start and resp.status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {start}-"):
                part.unlink()
                raise _Transient(f"unexpected Content-Range {crange!r}")
            mode, done = "ab", start
        else:
            mode, done = "wb", 0  # 200: the server ignored Range and sends the whole file
        length = resp.headers.get("Content-Length")
        body = int(length) if length and length.isdigit() else None
        total = expected or (done + body if body is not None else None)
        with open(part, mode) as f:
            while True:
                block = resp.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    # http.client returns b"" on a cut connection instead of raising: count ourselves.
    if body is not None and done - (start if mode == "ab" else 0) < body:
        raise _Transient(f"connection closed after {done} bytes")
    if expected is not None and done < expected:
        raise _Transient(f"only {done} of {expected} bytes received")


def download(name: str, progress=None, url: str | None = None, retries: int = 4,
             backoff=_default_backoff, timeout: float = 60.0) -> pathlib.Path:
    """Fetch a registry model into cache_dir(), resuming a previous .part; returns its path.

    ``progress(done_bytes, total_bytes|None)``; ``backoff(attempt) -> seconds`` between tries.
    Raises ModelMissing when the file cannot be fetched, VerificationError when it arrived wrong.
    """
    e = entry(name)
    if e.bundled:
        return verify(name)
    final = model_path(name)
    if final.is_file() and not _check(final, e):
        return final
    url = url or e.url
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, e.size, progress, timeout)
            break
        except urllib.error.HTTPError as err:
            raise ModelMissing(_missing_message(e, f"download from {url} failed: HTTP {err.code} {err.reason}")) \
                from None
        except (_Transient, urllib.error.URLError, HTTPException, OSError, socket.timeout) as err:
            if isinstance(getattr(err, "reason", None), socket.gaierror):
                # No name resolution: offline, or no DNS. Retrying only makes the user wait.
                host = urllib.parse.urlsplit(url).hostname
                raise ModelMissing(
                    f"cannot reach {host} (its name does not resolve: offline?). On a machine "
                    f"that is online, download {url}, then place the file at {final}; "
                    "`fbcnn models` checks it.") from None
            if attempt == retries:
                reason = getattr(err, "reason", None) or err
                raise ModelMissing(_missing_message(
                    e, f"download from {url} failed after {retries + 1} tries: {reason}")) from None
            time.sleep(backoff(attempt))
    problem = _check(part, e)
    if problem:
        part.unlink(missing_ok=True)
        _forget(part)
        raise VerificationError(f"download of {name} from {url} is corrupt ({problem}); the file was "
                                f"deleted. Try again, or place the file by hand at {final}")
    os.replace(part, final)
    _forget(part)
    if e.sha256:
        _remember(final, e.sha256)
    return final


# ---------------------------------------------------------------- loading

_WRAPPERS = ("params_ema", "params", "state_dict", "model")


def _unwrap(obj, source) -> dict:
    """A plain {name: tensor} dict from a state dict or a common training checkpoint."""
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    import torch
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidModel(f"{source} is not an FBCNN state dict (expected a dict of tensors)")
    # Weights saved from nn.DataParallel carry a "module." prefix on every key.
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def resolve(path_or_name) -> tuple[pathlib.Path, str]:
    """(file, label) for a registry name or a path; registry files are verified first."""
    if isinstance(path_or_name, str) and path_or_name in REGISTRY:
        return verify(path_or_name), path_or_name
    path = pathlib.Path(path_or_name).expanduser()
    if not path.is_file():
        if isinstance(path_or_name, str) and os.sep not in path_or_name and not path.suffix:
            entry(path_or_name)  # raises: neither a file nor a known name
        raise InvalidModel(f"model file {path} does not exist")
    return path, str(path)


def _refusal(label: str, err: Exception) -> str:
    """Why a file was not loaded, in our words. torch's own text for a file with code
    in it ends in advice to load it with weights_only=False, which would run that code:
    it is never shown."""
    text = str(err).strip()
    if "Unsupported global" in text:
        return (f"{label} was not loaded: besides tensors it holds Python objects, and "
                "unpickling them could run code hidden in the file (refused by safe loading). "
                "Use a weights file that holds only tensors, e.g. one written by "
                "torch.save(model.state_dict(), path).")
    # torch's reason, without the advice around it.
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip()
    first = reason.splitlines()[0] if reason else type(err).__name__
    return f"{label} is not a loadable weights file (refused by safe loading: {first[:200]})"


def load_state_dict(path_or_name) -> dict:
    """A verified, code-free state dict (torch.load with weights_only=True)."""
    import torch
    path, label = resolve(path_or_name)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise InvalidModel(_refusal(label, err)) from None
    return _unwrap(obj, label)


def check_sane(model, label: str) -> None:
    """Refuse weights that load but cannot restore anything: non-finite values, or a
    network whose output on a small textured tile is not finite or degenerate (flat,
    or far from the picture: what a state dict that lost a marker such as the global
    residual gives). Runs once per load, on a 64x64 tile."""
    import torch
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise InvalidModel(f"{label} holds NaN or infinite weights ({len(bad)} tensors, e.g. "
                           f"{bad[0]}); the file is damaged: download or export it again")
    c = model.config.in_nc
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    tile = 0.5 + 0.25 * torch.sin(x / 5) * torch.cos(y / 7) + 0.1 * torch.sin(x * y / 50)
    tile = tile.expand(1, c, 64, 64).contiguous()
    with torch.inference_mode():
        out = model.restore(tile, torch.full((1, 1), 0.5)).float()
    if not torch.isfinite(out).all():
        raise InvalidModel(f"{label} gives non-finite pixels on a test tile; the file is damaged "
                           "or not a restoration model")
    spread, error = float(out.std()), float((out - tile).abs().mean())
    if spread < 0.2 * float(tile.std()) or error > 0.25:
        raise InvalidModel(f"{label} gives a degenerate result on a test tile (contrast "
                           f"{spread:.3f} against {float(tile.std()):.3f}, mean error "
                           f"{error:.3f}): it loads, but it is damaged or incomplete (a missing "
                           "entry such as global_residual makes it another network)")


def file_key(path_or_name) -> str:
    """The sha256 of a model's file, without reading its tensors: the registry's pin for
    a verified registry model, else the file hashed once per version (_known_key)."""
    path, _ = resolve(path_or_name)   # verifies a registry file, or says what is missing
    return _known_key(path_or_name) or sha256_file(path)


def load_model(path_or_name) -> "FBCNN":
    """Any FBCNN-family .pth (official, compact, a fine-tune): architecture read from shapes."""
    from core.network import build
    sd = load_state_dict(path_or_name)
    label = path_or_name if isinstance(path_or_name, str) else str(path_or_name)
    try:
        config = config_from_state_dict(sd)
    except ValueError as err:
        raise InvalidModel(f"{label}: {err}") from None
    model = build(config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise InvalidModel(f"{label} does not match the FBCNN architecture inferred from it: "
                           f"{' '.join(lines[1:3])[:300]}") from None
    return model.eval()
