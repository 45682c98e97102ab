"""The worker's Python: the private venv (reusing a torch at hand where it fits), the
torch build in it, this project pip-installed into it (--dev: editable), and the
official models it downloads. What runs inside the venv is the project's own
`fbcnn` command (`fbcnn models --json`, `fbcnn download`), never code of ours."""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .console import clean_env, last_json_line, run_capture, run_shown, say
from .manifest import Manifest, make_dirs, missing_chain
from .paths import REPO, venv_python
from .torch_choice import TORCH_REQ, Probes, TorchChoice, venv_torch_fits

if TYPE_CHECKING:
    from .plan import Plan

# What `pip install` of the project needs from the repo (a staged copy keeps the
# checkout free of build/ and *.egg-info, and leaves training data behind).
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py")
LINK_PTH = "fbcnn-linked-torch.pth"
# The folder holding the core package a Python imports (run with -I, cwd outside the repo).
CORE_PATH_CODE = "import core, os; print(os.path.dirname(os.path.dirname(os.path.abspath(core.__file__))))"


def ensure_venv(plan: Plan, manifest: Manifest) -> Path:
    vpy = venv_python(plan.venv)
    if vpy.exists():
        rc, out = run_capture([vpy, "-c", "import sys; print(sys.version)"], timeout=60)
        if rc == 0:
            say(f"  reusing {plan.venv} (Python {out.strip().split()[0]})")
            if plan.torch.linked_site:
                link_site(vpy, plan.torch.linked_site)
            if plan.torch.reuse_base and not _venv_sees_system(plan.venv):
                say("  note: this venv does not see the base Python's packages; torch is installed into it")
            return vpy
        if manifest.owns(plan.venv):
            say(f"  {plan.venv} is broken ({out.strip()[-200:]}); recreating it")
            shutil.rmtree(plan.venv)
        else:
            raise SystemExit(f"{plan.venv} holds a Python that does not run, and the installer did "
                             "not create it. Remove it or choose another --venv.")
    if plan.venv.exists() and any(plan.venv.iterdir()):
        raise SystemExit(f"{plan.venv} exists and is not a virtual environment; choose another --venv.")
    make_dirs(plan.venv.parent, manifest)
    existed = plan.venv.exists()
    cmd = [plan.base_python, "-m", "venv"]
    if plan.torch.reuse_base:
        cmd.append("--system-site-packages")
        if base_has_pip(plan.base_python):
            # The venv then uses the base's pip and setuptools too: a bundled older
            # setuptools would shadow the base's, and torch's requirement on a newer
            # one would make pip download it. This way nothing is downloaded.
            cmd.append("--without-pip")
    cmd.append(str(plan.venv))
    # Record before creating: a half-made venv must still be removable.
    if not existed:
        manifest.add_tree(plan.venv)
    manifest.save()
    if run_shown(cmd) != 0:
        raise SystemExit("Creating the virtual environment failed. On Debian/Ubuntu the base "
                         "Python may need `apt install python3-venv`; or pass --python.")
    manifest.add_tree(plan.venv)
    if plan.torch.linked_site:
        link_site(vpy, plan.torch.linked_site)
    return vpy


def link_site(vpy: Path, site: str) -> None:
    """Let the venv import what another venv's site-packages holds (its torch): a folder
    named in a .pth file is added to sys.path after the venv's own packages."""
    rc, out = run_capture([vpy, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          timeout=60)
    if rc != 0:
        raise SystemExit(f"The new venv's Python does not run: {(out or '').strip()[-500:]}")
    own = Path(out.strip().splitlines()[-1])
    (own / LINK_PTH).write_text(site + "\n", encoding="utf-8")
    say(f"  linked {site} into the venv ({own / LINK_PTH})")


def base_has_pip(python: str) -> bool:
    rc, _ = run_capture([python, "-m", "pip", "--version"], timeout=120)
    return rc == 0


def can_build_in_place(vpy: Path, editable: bool = False) -> bool:
    """True when the venv already has a setuptools that builds the project (an editable
    install needs 64 or newer), so pip needs no isolated build environment (which it
    would fill from the index)."""
    code = ("import importlib.util, sys, setuptools\n"
            "v = tuple(int(x) for x in setuptools.__version__.split('.')[:2])\n"
            "need = (64, 0) if sys.argv[1:] == ['editable'] else (61, 0)\n"
            "ok = v >= (70, 1) or (v >= need and importlib.util.find_spec('wheel') is not None)\n"
            "raise SystemExit(0 if ok else 1)\n")
    rc, _ = run_capture([vpy, "-I", "-c", code] + (["editable"] if editable else []), timeout=120,
                        cwd=str(vpy.parent))
    return rc == 0


def _venv_sees_system(venv: Path) -> bool:
    try:
        text = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return False
    return bool(re.search(r"include-system-site-packages\s*=\s*true", text, re.I))


def stage_project(dest: Path) -> Path:
    """A copy of what pip needs to build the project (not the whole checkout)."""
    for name in PROJECT_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    if not (dest / "README.md").exists():
        # pyproject.toml names README.md as the long description; the package does
        # not depend on its text.
        (dest / "README.md").write_text("FBCNN for GIMP and Krita\n", encoding="utf-8")
    shutil.copytree(REPO / "core", dest / "core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.part", "*.verified"))
    return dest


def base_interpreter(python: str) -> str:
    """The interpreter a new venv made by `python` is really based on.

    Run from inside a venv, `python -m venv --system-site-packages` links to the *base*
    installation's site-packages, not the running venv's, so the torch probe must look
    at that base interpreter too."""
    if python == sys.executable:
        if sys.prefix == sys.base_prefix:
            return python
        return getattr(sys, "_base_executable", None) or python
    rc, out = run_capture([python, "-c", "import sys; print(sys.prefix != sys.base_prefix); "
                           "print(getattr(sys, '_base_executable', '') or sys.executable)"], timeout=60)
    lines = (out or "").strip().splitlines()
    if rc == 0 and len(lines) >= 2 and lines[-2] == "True" and Path(lines[-1]).exists():
        return lines[-1]
    return python


def torch_install_cmd(vpy: Path, choice: TorchChoice, replacing: bool) -> list:
    cmd = pip_cmd(vpy, TORCH_REQ)
    if choice.index_url:
        cmd += ["--index-url", choice.index_url]
    if replacing:
        # Replace the unfitting build (maybe the base's, seen through system site-packages)
        # together with its dependencies: a CUDA build needs its nvidia-* wheels.
        cmd += ["--upgrade", "--force-reinstall"]
    return cmd


def pip_cmd(vpy: Path, *args) -> list:
    # No pip cache: a multi-GB torch wheel would otherwise sit twice on disk, and the
    # install leaves nothing in ~/.cache that the manifest does not know of.
    return [vpy, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", *args]


def pip_env() -> dict:
    return clean_env({"PIP_NO_CACHE_DIR": "1"})  # also for pip's build-isolation sub-installs


def tree_digest(root: Path) -> dict:
    """relative path -> sha256 of every .py/.pth file below root (the package's payload)."""
    import hashlib
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".pth") and "__pycache__" not in p.parts:
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def venv_torch(vpy: Path) -> dict:
    """The torch the venv imports now (its own, the base's or a linked one) in the keys
    of `fbcnn models --json`, asked without core (not installed yet on a first run)."""
    have = Probes().base_torch(str(vpy))
    if not have:
        return {}
    return {"torch": have.get("version"), "torch_file": have.get("file"),
            "cuda_build": have.get("cuda"), "hip_build": have.get("hip")}


def install_torch(vpy: Path, plan: Plan) -> None:
    info = venv_torch(vpy)
    fits, why = venv_torch_fits(plan.torch.kind, info)
    if fits:
        say(f"  torch {info['torch']} is already usable in the venv ({info.get('torch_file')})")
        return
    say(f"  {why}" if not info.get("torch") else f"  torch {info['torch']} in the venv does not fit: {why}")
    if run_shown(torch_install_cmd(vpy, plan.torch, bool(info.get("torch"))), env=pip_env()) != 0:
        raise SystemExit("Installing torch failed (see pip's message above). Choose another build "
                         "with --torch cpu|cuda|rocm|mps or give --torch-index-url.")


def installed_core(vpy: Path) -> tuple:
    """(the folder holding the core package the venv imports, None), or (None, why not)."""
    # cwd outside the repo and -I: the venv must import its installed core, not ours.
    rc, out = run_capture([vpy, "-I", "-c", CORE_PATH_CODE], timeout=300, cwd=str(vpy.parent))
    lines = (out or "").strip().splitlines()
    if rc == 0 and lines:
        return lines[-1], None
    return None, (out or "").strip()[-2000:] or f"exit {rc}"


def install_project(vpy: Path, manifest: Manifest, dev: bool = False) -> str:
    """pip install the project; returns the folder holding the installed core package."""
    if dev:
        return install_editable(vpy, manifest)
    with tempfile.TemporaryDirectory(prefix="fbcnn-src-") as tmp:
        src = stage_project(Path(tmp))
        extra = ["--no-build-isolation"] if can_build_in_place(vpy) else []
        # Dependencies only when missing (a reused torch is never swapped here).
        if run_shown(pip_cmd(vpy, *extra, str(src)), env=pip_env()) != 0:
            raise SystemExit("Installing the project into the venv failed (see pip above).")
        core_path, error = installed_core(vpy)
        want = tree_digest(src / "core")
        if core_path and (tree_digest(Path(core_path) / "core") != want or in_checkout(core_path)):
            # Same version number as the installed one: some pip versions keep the old
            # files (or the editable install of an earlier --dev). A re-run must upgrade,
            # so force it.
            say("  the installed core differs from this checkout; reinstalling it"
                if not in_checkout(core_path) else
                "  the venv still imports core from this checkout (an earlier --dev); reinstalling it")
            if run_shown(pip_cmd(vpy, *extra, "--no-deps", "--force-reinstall", str(src)),
                         env=pip_env()) != 0:
                raise SystemExit("Reinstalling the project into the venv failed (see pip above).")
            core_path, error = installed_core(vpy)
        if not core_path:
            raise SystemExit(f"The venv cannot import core after pip install: {error}")
        if tree_digest(Path(core_path) / "core") != want:
            raise SystemExit(f"The core package in {core_path} does not match {REPO / 'core'} "
                             "after installing; remove the venv and run again.")
        if (REPO / "core" / "models").is_dir() and not any((Path(core_path) / "core" / "models").glob("*.pth")) \
                and any((REPO / "core" / "models").glob("*.pth")):
            raise SystemExit("The bundled model did not come along with the package (package-data).")
    return core_path


def in_checkout(core_path: str) -> bool:
    return Path(core_path).resolve() == REPO.resolve()


def install_editable(vpy: Path, manifest: Manifest) -> str:
    """--dev: `pip install -e` this checkout, so the worker runs the repo's core as it is
    edited; what pip's build leaves in the checkout (*.egg-info) goes into the manifest."""
    before = {p.name for p in REPO.iterdir()}
    extra = ["--no-build-isolation"] if can_build_in_place(vpy, editable=True) else []
    rc = run_shown(pip_cmd(vpy, *extra, "-e", str(REPO)), env=pip_env())
    for p in sorted(REPO.iterdir()):
        if p.name not in before and (p.name.endswith(".egg-info") or p.name == "build"):
            manifest.add_tree(p)
    if rc != 0:
        raise SystemExit("Installing the project into the venv failed (see pip above).")
    core_path, error = installed_core(vpy)
    if not core_path:
        raise SystemExit(f"The venv cannot import core after pip install -e: {error}")
    if not in_checkout(core_path):
        raise SystemExit(f"The venv imports core from {core_path}, not from this checkout "
                         f"({REPO}), after pip install -e; remove the venv and run again.")
    return core_path


def fbcnn_cmd(vpy: Path, *args) -> list:
    """The venv's `fbcnn` command: -I and a cwd outside the repo (run_* with
    cwd=vpy.parent) make it the venv's installed core, not this checkout's."""
    return [vpy, "-I", "-m", "core", *args]


def venv_info(vpy: Path) -> dict:
    """`fbcnn models --json` in the venv: its Python, core, torch and the GPU it sees,
    the models and their state; {"error": ...} when it does not run."""
    rc, out = run_capture(fbcnn_cmd(vpy, "models", "--json"), timeout=300, cwd=str(vpy.parent))
    info = last_json_line(out) if rc == 0 else None
    return info or {"error": (out or "").strip()[-2000:] or f"exit {rc}"}


def download_models(vpy: Path, plan: Plan, manifest: Manifest, info: dict) -> list:
    """Fetch the asked-for models with `fbcnn download` (verified, resumable); returns
    problems. Files we fetch go into the manifest."""
    problems = []
    states = info.get("models", {})
    model_dir = info.get("model_dir")
    if model_dir:
        # Remember the folders the download will create (uninstall removes them when empty).
        for d in missing_chain(Path(model_dir)):
            manifest.add_dir(d)
    for name in plan.models:
        st = states.get(name, {})
        if st.get("state") in ("downloaded", "bundled"):
            say(f"  {name}: already present and verified ({st.get('path')})")
            continue
        path = Path(st["path"]) if st.get("path") else None
        base = ["--url-base", plan.url_base] if plan.url_base else []
        if run_shown(fbcnn_cmd(vpy, "download", name, *base), cwd=str(vpy.parent)) != 0:
            problems.append(f"model {name} could not be downloaded (see above)")
            continue
        if path is not None:
            for p in (path, path.with_name(path.name + ".verified")):
                manifest.add_file(p)
        manifest.save()
    return problems
