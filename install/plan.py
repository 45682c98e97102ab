"""The plan: what an install will do, worked out from the options and the machine
(nothing is changed), and its printout (also all that --dry-run does)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .console import say, step
from .discovery import find_gimp_targets, find_krita_targets
from .gimp_python import gimp_interpreter_pin
from .manifest import Manifest
from .paths import (GIMP_PLUGIN, KRITA_PLUGIN, REPO, default_venv, flatpak_frontend_config_path,
                    frontend_config_path, manifest_path, os_kind, plugin_sources, venv_python)
from .torch_choice import Probes, TorchChoice, choose_torch
from .worker_env import base_interpreter

# User-facing model choices -> registry names (docs/contracts.md).
MODEL_CHOICES = {"color": "fbcnn_color", "gray": "fbcnn_gray", "gray-double": "fbcnn_gray_double"}


@dataclass
class Plan:
    base_python: str
    venv: Path
    venv_exists: bool
    torch: TorchChoice
    models: list
    models_why: str
    url_base: str | None
    gimp: list
    krita: list
    gimp_pin: str | None
    gimp_pin_why: str
    configs: list                 # (path, flatpak_spawn)
    flatpak_commands: list
    sources: dict
    upgrade: bool
    problems: list = field(default_factory=list)
    dev: bool = False             # --dev: link the plug-ins, install the project editable


def parse_models(value: str | None, gpu: bool, no_download: bool) -> tuple:
    """(registry names to download, why)."""
    if no_download:
        return [], "--no-download: only the bundled compact model"
    if value is None:
        if gpu:
            return ["fbcnn_color"], "default with a GPU: color"
        return [], "default on a CPU-only machine: none (the bundled compact model is used)"
    names = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        if item in ("none", ""):
            continue
        if item == "all":
            names += list(MODEL_CHOICES.values())
            continue
        if item not in MODEL_CHOICES and item not in MODEL_CHOICES.values():
            raise SystemExit(f"--models: unknown model {item!r}; choose from "
                             f"{', '.join(MODEL_CHOICES)} (comma-separated), all or none")
        names.append(MODEL_CHOICES.get(item, item))
    return list(dict.fromkeys(names)), "--models given"


def model_url_base(arg: str | None) -> str | None:
    # The env override lets tests (and mirrors) point downloads elsewhere.
    return arg or os.environ.get("FBCNN_MODEL_URL_BASE") or None


def flatpak_override_command(app: str) -> str:
    return f"flatpak override --user --talk-name=org.freedesktop.Flatpak {app}"


def krita_running() -> bool:
    """Linux only: Krita rewrites kritarc when it quits, dropping an edit made meanwhile."""
    if os_kind() != "linux" or not Path("/proc").is_dir():
        return False
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "krita":
                return True
        except OSError:
            continue
    return False


def make_plan(args, probes: Probes | None = None) -> Plan:
    given_python = args.python or sys.executable
    base_python = base_interpreter(given_python)
    venv = Path(args.venv).expanduser().resolve() if args.venv else default_venv()
    torch = choose_torch(args.torch, args.torch_index_url, base_python, probes, given_python)
    models, why = parse_models(args.models, torch.gpu, args.no_download)
    gimp = [] if args.no_gimp else find_gimp_targets(args.gimp_dir or ())
    krita = [] if args.no_krita else find_krita_targets(args.krita_dir or (), args.kritarc)
    pin, pin_why = (None, "")
    if args.gimp_python:
        pin, pin_why = args.gimp_python, "--gimp-python given"
    elif any(t.kind != "flatpak" for t in gimp):
        pin, pin_why = gimp_interpreter_pin()
    configs = [(frontend_config_path(), False)]
    flatpak_cmds = []
    for app in dict.fromkeys(t.flatpak_app for t in gimp + krita if t.flatpak_app):
        configs.append((flatpak_frontend_config_path(app), True))
        flatpak_cmds.append(flatpak_override_command(app))
    sources = plugin_sources()
    problems = []
    if gimp and not (sources["gimp"] / f"{GIMP_PLUGIN}.py").is_file():
        problems.append(f"the GIMP plug-in source {sources['gimp'] / (GIMP_PLUGIN + '.py')} is missing")
    if krita and not (sources["krita_desktop"].is_file() and sources["krita_dir"].is_dir()):
        problems.append(f"the Krita plug-in source {sources['krita_dir']} (+ .desktop) is missing")
    if not (sources["frontend"] / "client.py").is_file():
        problems.append(f"the front-end package {sources['frontend']} is missing")
    return Plan(base_python, venv, venv_python(venv).exists(), torch, models, why,
                model_url_base(args.model_url_base), gimp, krita, pin, pin_why, configs,
                flatpak_cmds, sources, Manifest.load(manifest_path()).exists(), problems, args.dev)


def print_plan(plan: Plan) -> None:
    step("Plan" + (" (upgrade of an earlier install)" if plan.upgrade else ""))
    say(f"  base Python      {plan.base_python}")
    say(f"  virtual env      {plan.venv} ({'reuse' if plan.venv_exists else 'create'})")
    t = plan.torch
    say(f"  torch            {t.kind.upper()} build, "
        + (f"reused from {t.linked_site}" if t.linked_site else
           "reused from the base Python" if t.reuse_base else f"from {t.index_url or 'PyPI'}"))
    for r in t.reasons:
        say(f"                   - {r}")
    if plan.dev:
        say(f"  project          pip install -e {REPO} (--dev: the worker runs this checkout's core)")
    else:
        say(f"  project          pip install {REPO} (core + bundled compact model, `fbcnn` CLI)")
    say(f"  models           {', '.join(plan.models) or 'none to download'} ({plan.models_why})"
        + (f"; from {plan.url_base}" if plan.url_base and plan.models else ""))
    linked = "  (linked to the checkout)" if plan.dev else ""
    if not plan.gimp:
        say("  GIMP 3           none found (use --gimp-dir to name a profile)")
    for g in plan.gimp:
        say(f"  {g.title():<16} {g.plugin_dir}" + ("" if g.exists else "  (profile created)") + linked)
        if g.note:
            say(f"{'':19}note: {g.note}")
    if plan.gimp_pin:
        say(f"  GIMP python3     pin {plan.gimp_pin} in interpreters/python3.interp ({plan.gimp_pin_why})")
    if not plan.krita:
        say("  Krita            none found (use --krita-dir to name a resource folder)")
    for k in plan.krita:
        say(f"  {k.title():<16} {k.plugin_dir}" + ("" if k.exists else "  (folder created)") + linked)
        say(f"                   enable in {k.kritarc} ([python] enable_{KRITA_PLUGIN}=true)")
    for path, fp in plan.configs:
        say(f"  config           {path}" + ("  (flatpak-spawn --host)" if fp else ""))
    say("  self-check       start the worker through the installed client, restore a sample")
    for p in plan.problems:
        say(f"  PROBLEM          {p}")
    if plan.krita and krita_running():
        say("  NOTE             Krita is running: quit it before installing, or it may overwrite "
            "kritarc on exit (re-run the installer then)")
