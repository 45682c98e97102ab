"""Diagnosis: the self-check (the worker started through the plug-ins' own client),
what an install holds (models, device), the editors found, and --check."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .console import last_json_line, run_capture, say, step
from .discovery import (GIMP_TESTED, KRITA_TESTED, dotted, editors_found, find_gimp_targets,
                        find_krita_targets, version_advice)
from .kritarc import ini_get
from .manifest import Manifest
from .paths import (GIMP_PLUGIN, KRITA_PLUGIN, default_venv, frontend_config_path, manifest_path,
                    venv_python)
from .torch_choice import Probes
from .worker_env import venv_info

SELF_CHECK = str(Path(__file__).resolve().with_name("self_check.py"))


def run_self_check(frontend: Path, base_python: str, timeout: float = 300.0, qf: int = 20) -> dict:
    """Start the worker through the plug-ins' own client (`frontend`: the package's
    folder) and restore a built-in sample: install/self_check.py, run by base_python."""
    # -I: ignore PYTHONPATH and the cwd, exactly like an editor's embedded Python would
    # not see our repo; -B: no __pycache__ left in the plug-in folder.
    rc, out = run_capture([base_python, "-I", "-B", SELF_CHECK, str(frontend), str(timeout), str(qf)],
                          timeout=timeout + 60, cwd=tempfile.gettempdir())
    res = last_json_line(out or "")
    if not res:
        res = {"ok": False, "error": f"self-check did not run (exit {rc}): {(out or '').strip()[-1500:]}"}
    return res


def choose_client(targets: list, core_path: str | None) -> Path | None:
    """The front-end package a plug-in imports (its folder), for the self-check."""
    placed = [t for t in targets if (t.frontend_path / "client.py").is_file()]
    placed.sort(key=lambda t: t.kind == "flatpak")   # a native one first
    if placed:
        return placed[0].frontend_path
    if core_path and Path(core_path, "core", "frontend", "client.py").is_file():
        return Path(core_path, "core", "frontend")
    return None


def print_self_check(check: dict) -> None:
    if check.get("client"):
        say(f"  client  {check['client']}")
    hello = check.get("hello") or {}
    if hello:
        say(f"  worker  Python {hello.get('python')}, torch {hello.get('torch')}, "
            f"devices {hello.get('devices')}, default {hello.get('default_device')}")
    res = check.get("result") or {}
    if res:
        say(f"  sample  restored by {res.get('model')} on {res.get('device')} at QF {res.get('qf_used')}; "
            f"blockiness {check.get('blockiness_before')} -> {check.get('blockiness_after')}, "
            f"{check.get('psnr_vs_input')} dB from the input")
    say("  result  " + ("PASSED" if check.get("ok") else f"FAILED {check.get('error') or ''}"))


def models_lines(info: dict, hello: dict) -> list:
    lines = []
    for name, m in (info.get("models") or {}).items():
        state = m.get("state")
        mark = {"bundled": "present, verified (bundled)", "downloaded": "present, verified",
                "missing": "not downloaded", "corrupt": "CORRUPT"}.get(state, state)
        if m.get("bundled") and state == "missing":
            mark = "MISSING (it should ship inside the package)"
        lines.append(f"{name:18} {mark}" + (f"  {m['path']}" if state in ("bundled", "downloaded") else ""))
    if not lines and hello.get("models"):
        lines = [f"{m.get('name'):18} {m.get('state')}" for m in hello["models"]]
    return lines


def device_line(info: dict, hello: dict) -> str:
    if info.get("cuda"):
        return f"GPU: {info.get('gpu_name', 'CUDA device')} (torch {info.get('torch')})"
    if info.get("mps"):
        return f"GPU: Apple MPS (torch {info.get('torch')})"
    d = hello.get("default_device")
    return f"CPU only (torch {info.get('torch')})" + (f"; worker default device {d}" if d else "")


def print_editors() -> list:
    """A line per GIMP and Krita with its version, advice under those outside the
    tested range; returns the warnings."""
    found = editors_found()
    if not found:
        say(f"  no GIMP or Krita found (the plug-ins need GIMP {dotted(GIMP_TESTED[0])} or Krita "
            f"{dotted(KRITA_TESTED[0])} or newer)")
    warnings = []
    for app, where, version in found:
        say(f"  {app + ' ' + (version or '(version unknown)'):<16} {where}")
        advice = version_advice(app, version)
        if advice:
            say(f"{'':19}{advice}")
        if advice.startswith("WARNING"):
            warnings.append(f"{app} {version} ({where}): {advice.split(': ', 1)[1]}")
    return warnings


def check(args, probes: Probes | None = None) -> int:
    probes = probes or Probes()
    problems = []
    manifest = Manifest.load(manifest_path())
    step("Diagnosis (nothing is changed)")
    say(f"  manifest      {manifest.path} ({'present' if manifest.exists() else 'absent: not installed?'})")
    cfg_path = frontend_config_path()
    cfg = None
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        say(f"  config        {cfg_path}: python {cfg.get('python')}, core_path {cfg.get('core_path')}")
    except (OSError, ValueError) as e:
        problems.append(f"config {cfg_path} unreadable: {e}")
    venv = Path(args.venv).expanduser() if args.venv else Path(
        manifest.data.get("venv") or default_venv())
    vpy = Path(cfg["python"]) if cfg and cfg.get("python") else venv_python(venv)
    if cfg:
        if not Path(cfg.get("python", "")).exists():
            problems.append(f"the worker Python {cfg.get('python')} does not exist")
        if not Path(cfg.get("core_path", ""), "core").is_dir():
            problems.append(f"core_path {cfg.get('core_path')} holds no core package")

    step("GPU")
    nv, nv_cuda, nv_detail = probes.nvidia()
    say(f"  NVIDIA        {nv_detail}" + (f", driver CUDA {nv_cuda}" if nv else ""))
    rocm, rocm_detail = probes.rocm()
    say(f"  ROCm          {rocm_detail}")
    info = venv_info(vpy) if vpy.exists() else {"error": f"{vpy} does not exist"}
    if info.get("torch"):
        say(f"  venv torch    {info['torch']} (CUDA build {info.get('cuda_build')}, "
            f"ROCm build {info.get('hip_build')}); torch sees a GPU: "
            f"{'yes, ' + info.get('gpu_name', '') if info.get('cuda') else 'MPS' if info.get('mps') else 'no'}")
        if (nv or rocm) and not info.get("cuda"):
            problems.append("a GPU is present but the venv's torch cannot use it; re-run the "
                            "installer with --torch cuda (or rocm)")
    elif info.get("torch_error") or not vpy.exists():
        problems.append(f"the venv's torch does not import: {info.get('torch_error') or info.get('error')}")
    else:
        # An install from before `fbcnn models --json` existed, or a broken core.
        problems.append(f"`fbcnn models --json` does not run in the venv ({vpy}); re-run the "
                        f"installer: {info.get('error')}")

    step("Models")
    for line in models_lines(info, {}):
        say(f"  {line}")
    for name, m in (info.get("models") or {}).items():
        if m.get("state") == "corrupt":
            problems.append(f"model {name} at {m.get('path')} is corrupt; re-run the installer")
        if m.get("bundled") and m.get("state") != "bundled":
            problems.append(f"the bundled model {name} is {m.get('state')}")

    step("Editors")
    warnings = print_editors()

    step("Plug-in files")
    gimp = find_gimp_targets(args.gimp_dir or ())
    krita = find_krita_targets(args.krita_dir or (), args.kritarc)
    for t in gimp:
        main = t.plugin_dir / f"{GIMP_PLUGIN}.py"
        ok = main.is_file() and os.access(main, os.X_OK) and (t.frontend_path / "client.py").is_file()
        say(f"  {t.title():<16} {t.plugin_dir}: {'ok' if ok else 'MISSING or not executable'}")
        if t.note:
            say(f"{'':19}note: {t.note}")
        if not ok:
            problems.append(f"GIMP plug-in incomplete in {t.plugin_dir}")
        interp = t.root / "interpreters" / "python3.interp"
        if interp.is_file():
            say(f"                 {interp}: {interp.read_text().strip()}")
    for t in krita:
        desktop = t.root / "pykrita" / f"{KRITA_PLUGIN}.desktop"
        ok = desktop.is_file() and (t.frontend_path / "client.py").is_file()
        text = t.kritarc.read_text(encoding="utf-8") if t.kritarc and t.kritarc.is_file() else ""
        enabled = ini_get(text, "python", f"enable_{KRITA_PLUGIN}") == "true"
        say(f"  {t.title():<16} {t.plugin_dir}: {'ok' if ok else 'MISSING'}; "
            f"{t.kritarc}: {'enabled' if enabled else 'NOT enabled'}")
        if not ok or not enabled:
            problems.append(f"Krita plug-in incomplete or disabled for {t.root}")
    if not gimp and not krita:
        say("  no GIMP 3 profile or Krita resource folder found")

    step("Worker start")
    client = choose_client(gimp + krita, cfg.get("core_path") if cfg else None)
    if client and cfg:
        res = run_self_check(client, args.python or sys.executable)
        print_self_check(res)
        if not res.get("ok"):
            problems.append("the worker did not start or restore the sample")
    else:
        problems.append("no installed client or config to start the worker with")

    say("\n" + ("All checks passed." if not problems else "Problems found:"))
    for p in problems:
        say(f"  - {p}")
    for w in warnings:
        say(f"  warning: {w}")
    if problems:
        say("Running `python installer.py` again repairs an install (it is safe to re-run).")
    return 0 if not problems else 1
