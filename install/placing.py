"""The plug-ins into the editors' folders, each with the shared front-end package
(core/frontend) in it as fbcnn_frontend: copied, or with --dev linked to this
checkout so that an edit in the repo is live in the editor. Then frontend.json,
which tells both plug-ins how to start the worker, and the `fbcnn` command on PATH.
The host test harnesses place the plug-ins with place_gimp_plugin and
place_krita_plugin too."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .console import say
from .discovery import Target
from .gimp_python import interp_text
from .kritarc import enable_krita_plugin
from .manifest import COPY_IGNORE, Manifest, clear, copy_tree, link_path, write_file
from .paths import FRONTEND_NAME, GIMP_PLUGIN, KRITA_PLUGIN, REPO, home, os_kind, venv_script

if TYPE_CHECKING:
    from .plan import Plan

MANUAL = "Manual.html"   # named by Krita's .desktop; its plug-in manager looks inside the package


def place_frontend(src: Path, plugin_dir: Path) -> Path:
    """The shared front-end package into a plug-in's folder (which the manifest owns as
    a whole), as the plug-ins import it."""
    dst = plugin_dir / FRONTEND_NAME
    clear(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    return dst


def link_plugin(src: Path, plugin_dir: Path, beside: dict, manifest: Manifest) -> list | None:
    """--dev: plugin_dir becomes a link to the checkout's plug-in folder `src`. What the
    installed plug-in has beside it (beside: name -> target; the front-end package)
    is linked into `src` itself (git ignores those names): Python runs a plug-in from
    its real folder, so that is where it looks. Returns notes, or None where this
    system cannot make links (Windows without the privilege): then copy."""
    for name, target in beside.items():
        inner = src / name
        if inner.exists() and not inner.is_symlink():
            say(f"  note: {inner} is not a link; left as it is")
            continue
        if inner.is_symlink() and inner.resolve() == Path(target).resolve():
            continue  # an earlier --dev made it (that install's manifest owns it)
        why = link_path(inner, Path(target), manifest, relative=True)
        if why:
            return cannot_link(why)
    why = link_path(plugin_dir, src, manifest)
    if why:
        return cannot_link(why)
    return [f"linked {plugin_dir} -> {src} (--dev: an edit in the repo is live)"]


def cannot_link(why: str) -> None:
    say(f"  cannot make symbolic links here ({why}); copying instead: with --dev an edit "
        "in the repo needs a re-run of the installer")
    return None


def place_gimp_plugin(sources: dict, plugin_dir: Path, manifest: Manifest | None = None,
                      link: bool = False) -> list:
    """The GIMP plug-in folder (sources["gimp"]) with the front-end package in it;
    returns notes."""
    manifest = manifest or Manifest.scratch()
    main = plugin_dir / f"{GIMP_PLUGIN}.py"
    if link:
        notes = link_plugin(sources["gimp"], plugin_dir, {FRONTEND_NAME: sources["frontend"]}, manifest)
        if notes is not None:
            if not os.access(main, os.X_OK):
                notes.append(f"{main} is not executable and GIMP skips it: chmod +x it in the checkout")
            return notes
    files = copy_tree(sources["gimp"], plugin_dir, manifest, skip=(FRONTEND_NAME,))
    frontend = place_frontend(sources["frontend"], plugin_dir)
    # GIMP silently skips a plug-in that is not executable.
    main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return [f"{len(files) + len(list(frontend.rglob('*.py')))} files in {plugin_dir}"]


def place_krita_plugin(sources: dict, pykrita: Path, manifest: Manifest | None = None,
                       link: bool = False) -> list:
    """The Krita plug-in package (sources["krita_dir"]) with the front-end package and
    the manual in it, and its .desktop file, into a pykrita folder; returns notes."""
    manifest = manifest or Manifest.scratch()
    plugin_dir = pykrita / KRITA_PLUGIN
    manual = sources["krita_desktop"].parent / MANUAL
    notes = None
    if link:
        beside = {FRONTEND_NAME: sources["frontend"], **({MANUAL: manual} if manual.is_file() else {})}
        notes = link_plugin(sources["krita_dir"], plugin_dir, beside, manifest)
    if notes is None:
        copy_tree(sources["krita_dir"], plugin_dir, manifest, skip=(FRONTEND_NAME, MANUAL))
        place_frontend(sources["frontend"], plugin_dir)
        if manual.is_file():
            shutil.copy2(manual, plugin_dir / MANUAL)
    desktop = pykrita / f"{KRITA_PLUGIN}.desktop"
    write_file(desktop, sources["krita_desktop"].read_bytes(), manifest)
    return notes or [f"{len(list(plugin_dir.rglob('*.*'))) + 1} files in {pykrita}"]


def install_gimp(target: Target, plan: Plan, manifest: Manifest) -> list:
    notes = place_gimp_plugin(plan.sources, target.plugin_dir, manifest, link=plan.dev)
    if plan.gimp_pin and target.kind != "flatpak":
        interp = target.root / "interpreters" / "python3.interp"
        want = interp_text(plan.gimp_pin)
        if interp.exists() and not manifest.owns(interp) and interp.read_text() != want:
            notes.append(f"left {interp} as it is (not ours); GIMP may need python3={plan.gimp_pin}")
        else:
            write_file(interp, want.encode(), manifest)
            notes.append(f"pinned python3={plan.gimp_pin} in {interp}")
    return notes


def install_krita(target: Target, plan: Plan, manifest: Manifest) -> list:
    notes = place_krita_plugin(plan.sources, target.root / "pykrita", manifest, link=plan.dev)
    previous = enable_krita_plugin(target.kritarc, manifest)
    notes.append(f"enabled in {target.kritarc} (was {previous if previous is not None else 'unset'})")
    return notes


def write_frontend_configs(plan: Plan, vpy: Path, core_path: str, manifest: Manifest) -> None:
    for path, flatpak in plan.configs:
        cfg = {"python": str(vpy), "core_path": core_path, "flatpak_spawn": flatpak,
               "venv": str(plan.venv), "installed_by": str(REPO / "installer.py"),
               "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_file(path, (json.dumps(cfg, indent=2) + "\n").encode(), manifest)
        say(f"  wrote {path}")


def link_cli(vpy: Path, plan: Plan, manifest: Manifest):
    """~/.local/bin/fbcnn -> the venv's fbcnn, when that folder is on PATH (Linux, macOS)."""
    exe = venv_script(plan.venv, "fbcnn")
    if os_kind() == "windows" or not exe.exists():
        return None
    bindir = home() / ".local" / "bin"
    on_path = [os.path.normcase(os.path.abspath(p)) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if os.path.normcase(str(bindir)) not in on_path or not bindir.is_dir():
        return None
    link = bindir / "fbcnn"
    if link.is_symlink() and manifest.owns(link):
        link.unlink()
    if link.exists() or link.is_symlink():
        return None  # someone else's fbcnn: leave it
    link.symlink_to(exe)
    manifest.add_file(link)
    return link
