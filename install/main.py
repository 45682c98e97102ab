"""The installer's command line: install (the steps in order, then a summary),
--uninstall (what the manifest lists), --check and --dry-run."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import doctor
from .console import say, step
from .doctor import choose_client, device_line, models_lines, print_self_check, run_self_check
from .kritarc import restore_kritarc
from .manifest import Manifest, make_dirs, remove_path
from .paths import KRITA_PLUGIN, REPO, default_venv, manifest_path, openvino_cache, venv_script
from .placing import install_gimp, install_krita, link_cli, write_frontend_configs
from .plan import Plan, make_plan, print_plan
from .worker_env import download_models, ensure_venv, install_project, install_torch, venv_info

NEXT_STEP_GIMP = "Open GIMP -> Filters -> Enhance -> Remove JPEG Artifacts..."
NEXT_STEP_KRITA = "Open Krita -> Filter -> Remove JPEG Artifacts..."


def install(plan: Plan, args) -> int:
    if plan.problems:
        for p in plan.problems:
            say(f"error: {p}")
        return 1
    manifest = Manifest.load(manifest_path())
    make_dirs(manifest.path.parent, manifest)
    manifest.data["repo"] = str(REPO)
    manifest.save()
    summary = {"installed": [], "problems": []}

    step("Virtual environment")
    vpy = ensure_venv(plan, manifest)
    manifest.data["venv"] = str(plan.venv)
    manifest.save()

    step(f"torch ({plan.torch.kind.upper()} build)")
    install_torch(vpy, plan)

    step("The project (core, bundled compact model, fbcnn CLI)")
    core_path = install_project(vpy, manifest, plan.dev)
    info = venv_info(vpy)
    say(f"  core installed in {core_path}")
    summary["installed"].append(f"worker Python   {vpy}")

    step("Models")
    summary["problems"] += download_models(vpy, plan, manifest, info)
    if not plan.models:
        say("  nothing to download (" + plan.models_why + ")")
    manifest.save()

    for host, targets, place, none_found in (
            ("GIMP 3", plan.gimp, install_gimp, "no GIMP 3 profile found; skipped (use --gimp-dir)"),
            ("Krita", plan.krita, install_krita, "no Krita resource folder found; skipped (use --krita-dir)")):
        step(f"{host.split()[0]} plug-in")
        if not targets:
            say(f"  {none_found}")
        for t in targets:
            for n in place(t, plan, manifest):
                say(f"  {n}")
            summary["installed"].append(f"{t.title():<15} {t.plugin_dir}")
            manifest.save()

    step("Front-end config")
    write_frontend_configs(plan, vpy, core_path, manifest)
    for path, _ in plan.configs:
        summary["installed"].append(f"config          {path}")
    link = link_cli(vpy, plan, manifest)
    manifest.save()

    step("Self-check: the worker, started through the plug-ins' own client")
    client = choose_client(plan.gimp + plan.krita, core_path)
    check = run_self_check(client, plan.base_python) if client else {"ok": False, "error": "no client file"}
    print_self_check(check)
    if not check.get("ok"):
        first = str(check.get("error") or "see above").strip().splitlines()[0]
        summary["problems"].append("the self-check failed: " + first)
    info = venv_info(vpy)
    print_summary(plan, summary, info, check, link)
    return 0 if not summary["problems"] else 1


def print_summary(plan: Plan, summary: dict, info: dict, check: dict, link) -> None:
    hello = check.get("hello") or {}
    say("\n" + "=" * 72)
    say("FBCNN " + ("installed" if not summary["problems"] else "installed WITH PROBLEMS"))
    say("=" * 72)
    say("Installed:")
    for line in summary["installed"]:
        say(f"  {line}")
    cli = venv_script(plan.venv, "fbcnn")
    say(f"  fbcnn CLI       {link or cli}" + ("" if link else "  (add its folder to PATH, or call it by path)"))
    say(f"Device: {device_line(info, hello)}")
    say("Models:")
    for line in models_lines(info, hello):
        say(f"  {line}")
    say(f"Self-check: {'passed' if check.get('ok') else 'FAILED'}")
    if plan.flatpak_commands:
        say("Flatpak: run this once so the sandboxed editor may start the worker on the host:")
        for c in plan.flatpak_commands:
            say(f"  {c}")
    for p in summary["problems"]:
        say(f"PROBLEM: {p}")
    say("Next step:")
    if plan.gimp:
        say(f"  {NEXT_STEP_GIMP}")
    if plan.krita:
        say(f"  {NEXT_STEP_KRITA} (restart Krita if it was running)")
    if not plan.gimp and not plan.krita:
        say(f"  no editor was found; `{cli} --help` works now, and a re-run after installing "
            "GIMP 3 or Krita adds the plug-ins")


def uninstall(args) -> int:
    manifest = Manifest.load(manifest_path())
    if not manifest.exists():
        say(f"Nothing to uninstall: no manifest at {manifest.path}.")
        return 0
    d = manifest.data
    step("Uninstall" + (" (dry run)" if args.dry_run else ""))
    for rc_path, record in d.get("kritarc", {}).items():
        if args.dry_run:
            say(f"  would restore {rc_path} (enable_{KRITA_PLUGIN} -> {record.get('previous')})")
        else:
            say(f"  {rc_path}: {restore_kritarc(Path(rc_path), record)}")
    for key in ("files", "links", "trees"):
        for p in d.get(key, []):
            p = Path(p)
            if not (p.exists() or p.is_symlink()):
                continue
            if args.dry_run:
                say(f"  would remove {p}")
            elif remove_path(p):
                say(f"  removed {p}")
    # The worker's own cache (the self-check and every editor run fill it): ours too.
    cache = openvino_cache()
    if cache.exists():
        if args.dry_run:
            say(f"  would remove {cache}")
        elif remove_path(cache):
            say(f"  removed {cache}")
            for parent in (cache.parent, cache.parent.parent):
                if parent.name in ("fbcnn", "cache") and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
    if args.dry_run:
        return 0
    manifest.path.unlink()
    # Folders we created, deepest first, only when nothing else was put there since.
    for p in sorted((Path(x) for x in d.get("dirs", [])), key=lambda q: len(q.parts), reverse=True):
        try:
            p.rmdir()
            say(f"  removed empty folder {p}")
        except OSError:
            if p.exists():
                say(f"  kept {p} (not empty: it holds files the installer did not create)")
    say("FBCNN is uninstalled. Restart GIMP and Krita if they are running.")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="installer.py", description="Install FBCNN's JPEG artifact removal into GIMP 3 and Krita.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Re-running is safe: it upgrades what is there. Everything created is listed in "
               f"{manifest_path()}.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--uninstall", action="store_true", help="remove what the installer put in place")
    mode.add_argument("--check", action="store_true", help="diagnose only; change nothing")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--venv", help=f"the virtual environment (default {default_venv()})")
    p.add_argument("--python", help="the base Python for the venv (default: the one running this)")
    p.add_argument("--torch", choices=("auto", "cpu", "cuda", "rocm", "mps"), default="auto",
                   help="which torch build (default auto: nvidia-smi, ROCm, platform)")
    p.add_argument("--torch-index-url", help="install torch from this pip index instead")
    p.add_argument("--models", help="official models to download: color,gray,gray-double (or all, "
                   "none); default none on CPU-only machines, color with a GPU")
    p.add_argument("--no-download", action="store_true", help="download nothing; use the bundled model")
    p.add_argument("--model-url-base", help="download models from BASE/<file> instead of the "
                   "official release (env FBCNN_MODEL_URL_BASE)")
    p.add_argument("--gimp-dir", action="append", metavar="PROFILE", help="also install into this "
                   "GIMP 3 profile folder (repeatable)")
    p.add_argument("--krita-dir", action="append", metavar="DIR", help="also install into this Krita "
                   "resource folder, the one holding pykrita/ (repeatable)")
    p.add_argument("--kritarc", help="the kritarc to enable the plug-in in (default: the platform's)")
    p.add_argument("--gimp-python", metavar="PYTHON", help="make GIMP run Python plug-ins with this "
                   "python3 (written to the profile's interpreters/python3.interp; by default only "
                   "when the python3 on PATH cannot load GIMP 3's bindings)")
    p.add_argument("--dev", action="store_true", help="for working on the plug-ins: link them "
                   "(and the front-end package) to this checkout instead of copying, and install "
                   "the project editable (pip install -e), so an edit in the repo is live in the "
                   "editors; --uninstall removes the links, never the checkout")
    p.add_argument("--no-gimp", action="store_true", help="skip GIMP")
    p.add_argument("--no-krita", action="store_true", help="skip Krita")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.uninstall:
        return uninstall(args)
    if args.check:
        return doctor.check(args)
    say("FBCNN for GIMP and Krita: installer" + (" (dry run: nothing is changed)" if args.dry_run else ""))
    plan = make_plan(args)
    print_plan(plan)
    if args.dry_run:
        if plan.flatpak_commands:
            say("\nFlatpak: after installing, run once:")
            for c in plan.flatpak_commands:
                say(f"  {c}")
        say("\nDry run: nothing was changed.")
        return 0 if not plan.problems else 1
    return install(plan, args)

