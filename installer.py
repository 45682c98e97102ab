#!/usr/bin/env python3
"""FBCNN for GIMP and Krita: one command from a fresh download to a working filter.

    python installer.py               install or upgrade (safe to run again)
    python installer.py --dry-run     print the plan, change nothing
    python installer.py --check       diagnose only
    python installer.py --uninstall   remove what the installer put in place

What an install does (see issue 6 and docs/contracts.md):
 1. a private virtual environment (per-user data dir, or --venv) with the right
    torch build (reusing a suitable torch that the base Python already has);
 2. this project installed into it (`pip install`, bundled compact model included);
 3. the official models asked for (--models), verified and resumable (core.weights);
 4. the GIMP 3 plug-in into every GIMP 3 profile found (+ --gimp-dir);
 5. the Krita plug-in into every pykrita folder found (+ --krita-dir), enabled in kritarc;
 6. frontend.json, which tells both plug-ins how to start the worker;
 7. Flatpak hosts: flatpak-spawn in their config, and the `flatpak override` to run once;
 8. a self-check through the very client file the plug-ins import.

Standard library only, any Python >= 3.9: this file runs before anything else exists.
Everything it creates is written to a manifest, so --uninstall removes exactly that.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info < (3, 9):  # pragma: no cover - the message is the whole point
    sys.exit("FBCNN's installer needs Python 3.9 or newer; this is " + sys.version.split()[0])

REPO = Path(__file__).resolve().parent
PROJECT_NAME = "fbcnn-editors"           # the pip distribution name (pyproject.toml)
GIMP_PLUGIN = "fbcnn_gimp"
GIMP_PROCEDURE = "plug-in-fbcnn-remove-jpeg-artifacts"
KRITA_PLUGIN = "fbcnn_krita"
GIMP_FLATPAK = "org.gimp.GIMP"
KRITA_FLATPAK = "org.kde.krita"
# The shared front-end package (core/frontend in the repo), copied into each plug-in's
# folder under this name; both plug-ins import it so.
FRONTEND_NAME = "fbcnn_frontend"
MANIFEST_VERSION = 1
# User-facing model choices -> registry names (docs/contracts.md).
MODEL_CHOICES = {"color": "fbcnn_color", "gray": "fbcnn_gray", "gray-double": "fbcnn_gray_double"}
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
# CUDA wheel tags, newest first, with the lowest driver CUDA version each needs.
CUDA_TAGS = [((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"), ((11, 8), "cu118")]
ROCM_TAG = "rocm6.4"
TORCH_REQ = "torch>=2.0,<3"
# What `pip install` of the project needs from the repo (a staged copy keeps the
# checkout free of build/ and *.egg-info, and leaves training data behind).
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py")
NEXT_STEP_GIMP = "Open GIMP -> Filters -> Enhance -> Remove JPEG Artifacts..."
NEXT_STEP_KRITA = "Open Krita -> Filter -> Remove JPEG Artifacts..."
# The versions the plug-ins are tested with, (oldest, newest) as (major, minor). An
# older one cannot run them (GIMP 2 lacks the GIMP 3 Python API); a newer one only
# gets a note. Krita 6 is the Qt6 build.
GIMP_TESTED = ((3, 0), (3, 2))
KRITA_TESTED = ((5, 1), (6, 0))
TESTED = {"GIMP": GIMP_TESTED, "Krita": KRITA_TESTED}
TOO_OLD_ADVICE = {
    "GIMP": "install GIMP 3 (https://www.gimp.org/downloads/, your distribution's GIMP 3 "
            "package or the Flatpak org.gimp.GIMP), start it once, then run this installer again",
    "Krita": "install a newer Krita (https://krita.org/en/download/ or the Flatpak "
             "org.kde.krita), then run this installer again",
}
# GIMP 3's profile folder when its version cannot be learned: the first GIMP 3 series.
GIMP_SERIES_UNKNOWN = "3.0"
VERSION_RE = re.compile(r"\d+\.\d+(?:\.\d+)*")
# gimp, gimp-2.10, gimp-3, gimp-3.2, gimp-console-3.0.exe, ...
GIMP_EXE = re.compile(r"gimp(-console)?(-\d+(\.\d+)?)?(\.exe)?", re.I)
KRITA_EXE = re.compile(r"krita(\.exe)?", re.I)


# ============================================================== small helpers

def say(msg: str = "") -> None:
    print(msg, flush=True)


def step(msg: str) -> None:
    say(f"\n==> {msg}")


def os_kind() -> str:
    """'linux', 'windows' or 'macos': read sys.platform at call time so tests can patch it."""
    if sys.platform.startswith("win") or sys.platform == "cygwin":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def home() -> Path:
    # HOME first (also on Windows under test); USERPROFILE is Windows' own.
    for var in ("HOME", "USERPROFILE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(os.path.expanduser("~"))


def env_path(var: str, default: Path) -> Path:
    """An environment variable holding a directory, or the default.

    A relative XDG_* value is invalid per the XDG spec and ignored, like core.weights does."""
    value = os.environ.get(var, "")
    if value and (os.path.isabs(value) or not var.startswith("XDG_")):
        return Path(value)
    return default


def xdg_config_home() -> Path:
    return env_path("XDG_CONFIG_HOME", home() / ".config")


def xdg_data_home() -> Path:
    return env_path("XDG_DATA_HOME", home() / ".local" / "share")


def openvino_cache() -> Path:
    """Where the worker keeps OpenVINO's converted and compiled models: the rules of
    core.openvino_runtime.cache_dir() (a test holds the two together), repeated here
    because the installer runs without the project's packages."""
    if os.environ.get("FBCNN_CACHE_DIR"):
        return Path(os.environ["FBCNN_CACHE_DIR"]).expanduser() / "openvino"
    kind = os_kind()
    if kind == "windows":
        return localappdata() / "fbcnn" / "cache" / "openvino"
    if kind == "macos":
        return home() / "Library" / "Caches" / "fbcnn" / "openvino"
    return env_path("XDG_CACHE_HOME", home() / ".cache") / "fbcnn" / "openvino"


def appdata() -> Path:
    return env_path("APPDATA", home() / "AppData" / "Roaming")


def localappdata() -> Path:
    return env_path("LOCALAPPDATA", home() / "AppData" / "Local")


def mac_support() -> Path:
    return home() / "Library" / "Application Support"


def data_dir() -> Path:
    """Per-user data dir of the project; core.weights keeps models in <this>/models."""
    kind = os_kind()
    if kind == "windows":
        return localappdata() / "fbcnn"
    if kind == "macos":
        return mac_support() / "fbcnn"
    return xdg_data_home() / "fbcnn"


def default_venv() -> Path:
    return data_dir() / "venv"


def manifest_path() -> Path:
    return data_dir() / "install-manifest.json"


def frontend_config_path() -> Path:
    """Same rule as core.client.config_path(): the plug-ins read this file."""
    if os.environ.get("FBCNN_FRONTEND_CONFIG"):
        return Path(os.environ["FBCNN_FRONTEND_CONFIG"])
    kind = os_kind()
    if kind == "windows":
        return appdata() / "fbcnn" / "frontend.json"
    if kind == "macos":
        return mac_support() / "fbcnn" / "frontend.json"
    return xdg_config_home() / "fbcnn" / "frontend.json"


def flatpak_app_dir(app: str) -> Path:
    return home() / ".var" / "app" / app


def flatpak_frontend_config_path(app: str) -> Path:
    # Inside the sandbox XDG_CONFIG_HOME is ~/.var/app/APP/config, so the client's
    # config_path() lands here, not in the host's ~/.config.
    return flatpak_app_dir(app) / "config" / "fbcnn" / "frontend.json"


def venv_python(venv: Path) -> Path:
    if os_kind() == "windows":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def venv_script(venv: Path, name: str) -> Path:
    if os_kind() == "windows":
        return venv / "Scripts" / (name + ".exe")
    return venv / "bin" / name


def clean_env(extra: dict | None = None) -> dict:
    """The environment for child Pythons: no PYTHONPATH/PYTHONHOME leaking in (Krita,
    a dev shell) that could make the venv import the wrong core or stdlib."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra or {})
    return env


def run_capture(cmd, timeout: float = 60, env=None, cwd=None):
    """(returncode, stdout+stderr text); (None, reason) when it cannot run at all."""
    try:
        p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=env if env is not None else clean_env(), cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def run_shown(cmd, env=None, cwd=None) -> int:
    """Run with output streaming to the user's terminal (pip and download progress)."""
    say("    $ " + " ".join(str(c) for c in cmd))
    try:
        return subprocess.call([str(c) for c in cmd], env=env if env is not None else clean_env(),
                               cwd=cwd)
    except OSError as e:
        say(f"    cannot run {cmd[0]}: {e}")
        return 127


def last_json_line(text: str):
    """The last line of a child's output that parses as a JSON object (logs may precede it)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


# ============================================================== manifest

class Manifest:
    """What the installer put in place, so --uninstall removes exactly that.

    files: single files we wrote; trees: folders that are wholly ours (plug-in
    folders, the venv); dirs: folders we had to create (removed only when empty);
    kritarc: per file, the value enable_fbcnn_krita had before we first touched it.
    """

    KEYS = ("files", "trees", "dirs")

    def __init__(self, path: Path, data: dict | None = None):
        self.path = path
        self.data = data or {}
        self.data.setdefault("version", MANIFEST_VERSION)
        for key in self.KEYS:
            self.data.setdefault(key, [])
        self.data.setdefault("kritarc", {})

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = None
        except (OSError, ValueError) as e:
            raise SystemExit(f"The install manifest {path} cannot be read ({e}). Move it away "
                             "and run the installer again.")
        return cls(path, data if isinstance(data, dict) else None)

    def exists(self) -> bool:
        return self.path.exists()

    def _add(self, key: str, p: Path) -> None:
        s = str(p)
        if s not in self.data[key]:
            self.data[key].append(s)

    def add_file(self, p: Path) -> None:
        self._add("files", p)

    def add_tree(self, p: Path) -> None:
        self._add("trees", p)

    def add_dir(self, p: Path) -> None:
        self._add("dirs", p)

    def owns(self, p: Path) -> bool:
        s = str(p)
        return any(s in self.data[k] for k in self.KEYS)

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2), encoding="utf-8")
        os.replace(tmp, self.path)


def missing_chain(path: Path) -> list:
    """The folders from path upwards that do not exist yet, outermost first."""
    chain = []
    p = Path(path)
    while not p.exists() and p != p.parent:
        chain.append(p)
        p = p.parent
    return list(reversed(chain))


def make_dirs(path: Path, manifest: Manifest) -> None:
    """mkdir -p, recording each folder we create so uninstall can remove it when empty."""
    for d in missing_chain(path):
        d.mkdir()
        manifest.add_dir(d)


def write_file(path: Path, data: bytes, manifest: Manifest, mode: int | None = None) -> None:
    make_dirs(path.parent, manifest)
    tmp = path.with_name(path.name + ".fbcnn-tmp")
    tmp.write_bytes(data)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    manifest.add_file(path)


def copy_tree(src: Path, dst: Path, manifest: Manifest) -> list:
    """Replace dst with a copy of src (no caches); dst becomes a tree we own."""
    if dst.exists():
        # An upgrade: drop stale files of the previous version first.
        shutil.rmtree(dst) if dst.is_dir() and not dst.is_symlink() else dst.unlink()
    make_dirs(dst.parent, manifest)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    manifest.add_tree(dst)
    return sorted(p for p in dst.rglob("*") if p.is_file())


def remove_path(p: Path) -> bool:
    try:
        if p.is_symlink() or p.is_file():
            p.unlink()
            return True
        if p.is_dir():
            shutil.rmtree(p)
            return True
    except OSError as e:
        say(f"    could not remove {p}: {e}")
    return False


# ============================================================== kritarc (Qt INI)

def _split_lines(text: str):
    return text.splitlines(keepends=True)


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _section_span(lines, section: str):
    """(header index, end index) of [section] in lines, or None."""
    header = f"[{section}]"
    start = None
    for i, line in enumerate(lines):
        s = line.strip()
        if start is None:
            if s == header:
                start = i
        elif s.startswith("[") and s.endswith("]"):
            return start, i
    return (start, len(lines)) if start is not None else None


def _key_of(line: str):
    s = line.strip()
    if not s or s.startswith(("#", ";")) or "=" not in s:
        return None
    return s.split("=", 1)[0].strip()


def ini_get(text: str, section: str, key: str):
    lines = _split_lines(text)
    span = _section_span(lines, section)
    if span is None:
        return None
    for line in lines[span[0] + 1:span[1]]:
        if _key_of(line) == key:
            return line.split("=", 1)[1].strip()
    return None


def ini_set(text: str, section: str, key: str, value: str) -> str:
    """Set section/key, touching no other line of the file."""
    nl = _newline(text)
    lines = _split_lines(text)
    span = _section_span(lines, section)
    entry = f"{key}={value}{nl}"
    if span is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        if lines and lines[-1].strip():
            lines.append(nl)  # Krita separates groups by a blank line
        lines += [f"[{section}]{nl}", entry]
        return "".join(lines)
    start, end = span
    for i in range(start + 1, end):
        if _key_of(lines[i]) == key:
            lines[i] = entry
            return "".join(lines)
    # Append after the section's last non-blank line.
    insert = end
    while insert > start + 1 and not lines[insert - 1].strip():
        insert -= 1
    if not lines[insert - 1].endswith(("\n", "\r")):
        lines[insert - 1] += nl
    lines.insert(insert, entry)
    return "".join(lines)


def ini_unset(text: str, section: str, key: str, drop_empty_section: bool) -> str:
    lines = _split_lines(text)
    span = _section_span(lines, section)
    if span is None:
        return text
    start, end = span
    kept = [ln for ln in lines[start + 1:end] if _key_of(ln) != key]
    if drop_empty_section and not any(ln.strip() for ln in kept):
        # Drop the header too, and the blank line we put before it.
        before = lines[:start]
        if before and not before[-1].strip() and end == len(lines):
            before = before[:-1]
        return "".join(before + lines[end:])
    return "".join(lines[:start + 1] + kept + lines[end:])


def read_exact(path: Path) -> str:
    """File text with its line endings untouched (read_text would turn CRLF into LF)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def write_exact(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def enable_krita_plugin(kritarc: Path, manifest: Manifest) -> str | None:
    """Set [python] enable_fbcnn_krita=true; remember the earlier value once. Returns it."""
    key = f"enable_{KRITA_PLUGIN}"
    existed = kritarc.is_file()
    text = read_exact(kritarc) if existed else ""
    previous = ini_get(text, "python", key)
    records = manifest.data["kritarc"]
    if str(kritarc) not in records:
        # Only the first install records: a re-run must not take our own "true" as the
        # user's earlier setting.
        records[str(kritarc)] = {"key": key, "previous": previous, "file_existed": existed,
                                 "final_newline": text.endswith(("\n", "\r")) or not text,
                                 "section_existed": _section_span(_split_lines(text), "python") is not None}
    new = ini_set(text, "python", key, "true")
    if new != text:
        make_dirs(kritarc.parent, manifest)
        write_exact(kritarc, new)
    return previous


def restore_kritarc(kritarc: Path, record: dict) -> str:
    """Put enable_fbcnn_krita back as it was before the first install."""
    if not kritarc.is_file():
        return "already gone"
    text = read_exact(kritarc)
    key = record.get("key", f"enable_{KRITA_PLUGIN}")
    if record.get("previous") is None:
        new = ini_unset(text, "python", key, drop_empty_section=not record.get("section_existed"))
        what = f"removed {key}"
        if record.get("final_newline") is False and new.endswith("\n"):
            # We had to end the last line to append our section; undo that too.
            new = new[:-2] if new.endswith("\r\n") else new[:-1]
    else:
        new = ini_set(text, "python", key, record["previous"])
        what = f"{key} back to {record['previous']}"
    if not record.get("file_existed") and not new.strip():
        kritarc.unlink()
        return what + " (file removed: the installer had created it)"
    if new != text:
        write_exact(kritarc, new)
    return what


# ============================================================== finding GIMP and Krita

@dataclass
class Target:
    app: str                      # "gimp" | "krita"
    kind: str                     # "native" | "flatpak" | "custom"
    root: Path                    # GIMP profile dir, or Krita resource dir (holds pykrita/)
    kritarc: Path | None = None
    exists: bool = True           # False: the folder will be created (the program was found)
    flatpak_app: str | None = None
    note: str = ""
    version: str = ""             # GIMP: the series whose profile this is ("3.2"); "" unknown

    @property
    def plugin_dir(self) -> Path:
        if self.app == "gimp":
            return self.root / "plug-ins" / GIMP_PLUGIN
        return self.root / "pykrita" / KRITA_PLUGIN

    @property
    def frontend_path(self) -> Path:
        return self.plugin_dir / FRONTEND_NAME

    def label(self) -> str:
        return {"native": "", "flatpak": " (Flatpak)", "custom": " (given)"}[self.kind]

    def title(self) -> str:
        """'GIMP 3.2 (Flatpak)', 'GIMP 3 (given)', 'Krita'."""
        name = f"GIMP {self.version or '3'}" if self.app == "gimp" else "Krita"
        return name + self.label()


def first_version(text) -> str | None:
    m = VERSION_RE.search(text or "")
    return m.group(0) if m else None


def version_key(text) -> tuple | None:
    """(major, minor) of the first version number in text, or None."""
    version = first_version(text)
    return tuple(int(x) for x in version.split(".")[:2]) if version else None


def dotted(key: tuple) -> str:
    return ".".join(str(x) for x in key)


def version_advice(app: str, version: str | None) -> str:
    """What to tell about a GIMP or Krita version outside the tested range ('' inside it)."""
    oldest, newest = TESTED[app]
    key = version_key(version)
    tested = f"{app} {dotted(oldest)} to {dotted(newest)}"
    if key is None:
        return f"note: its version could not be learned; the plug-in is tested with {tested}"
    if key < oldest:
        return f"WARNING: the plug-in needs {app} {dotted(oldest)} or newer: {TOO_OLD_ADVICE[app]}"
    if key > newest:
        return (f"note: {app} {version} is newer than tested ({tested}); it is untested there "
                "and likely works; please report what does not")
    return ""


def flatpak_installed(app: str) -> bool:
    """A Flatpak app installed per-user or system-wide (no flatpak command needed)."""
    roots = [xdg_data_home() / "flatpak", Path("/var/lib/flatpak")]
    return any((r / "app" / app).is_dir() for r in roots)


def flatpak_version(app: str) -> str | None:
    if not shutil.which("flatpak"):
        return None
    # LC_ALL=C: the "Version:" label is translated otherwise.
    rc, out = run_capture(["flatpak", "info", app], timeout=30, env=clean_env({"LC_ALL": "C"}))
    m = re.search(r"^\s*Version:\s*(\S+)", out or "", re.M) if rc == 0 else None
    return m.group(1) if m else None


def bundle_version(exe: str) -> str | None:
    """macOS: the app bundle's Info.plist (the binary inside may print nothing)."""
    if "/Contents/MacOS/" not in exe:
        return None
    plist = Path(exe).parents[1] / "Info.plist"
    try:
        import plistlib
        with open(plist, "rb") as f:
            return first_version(plistlib.load(f).get("CFBundleShortVersionString"))
    except Exception:
        return None


def version_tool(exe: str) -> str | None:
    """Krita's `krita_version` beside it: `krita --version` needs a display on Linux (it
    forces the xcb platform, whatever QT_QPA_PLATFORM says)."""
    tool = Path(exe).with_name("krita_version" + Path(exe).suffix)
    if not Path(exe).name.lower().startswith("krita") or not tool.is_file():
        return None
    rc, out = run_capture([tool], timeout=15)
    return first_version(out) if rc == 0 else None


def version_option(exe: str) -> str | None:
    """`exe --version`: GIMP prints 'GNU Image Manipulation Program version 3.2.6'."""
    # offscreen: a Qt build that honours it answers without a display (Debian's Krita
    # does not, hence version_tool first).
    rc, out = run_capture([exe, "--version"], timeout=15,
                          env=clean_env({"QT_QPA_PLATFORM": "offscreen"}))
    return first_version(out) if rc == 0 else None


def package_version(exe: str) -> str | None:
    """The Debian package that owns exe, and its version (epoch and revision dropped)."""
    if os_kind() != "linux" or not shutil.which("dpkg-query"):
        return None
    rc, out = run_capture(["dpkg-query", "-S", os.path.realpath(exe)], timeout=20)
    pkg = (out or "").split(":")[0].strip() if rc == 0 else ""
    if not pkg:
        return None
    rc, out = run_capture(["dpkg-query", "-W", "-f=${Version}", pkg], timeout=20)
    return first_version(out.split(":", 1)[-1]) if rc == 0 else None


def name_version(exe: str) -> str | None:
    """The series a name carries: gimp-3.2, gimp-2.10.exe, GIMP-2.10.app."""
    names = [Path(exe).name] + [p for p in Path(exe).parts if p.endswith(".app")]
    return next(filter(None, (first_version(n) for n in names)), None)


def program_version(exe: str) -> str | None:
    """A GIMP or Krita executable's version, asking the most precise source first."""
    for learn in (bundle_version, version_tool, version_option, package_version, name_version):
        version = learn(exe)
        if version:
            return version
    return None


def unique_files(paths) -> list:
    """Paths in order, dropping a second name for the same file (/bin = /usr/bin, links)."""
    seen, out = set(), []
    for p in paths:
        key = os.path.normcase(os.path.realpath(p))
        if key not in seen:
            seen.add(key)
            out.append(str(p))
    return out


def on_path(pattern) -> list:
    """Executables on PATH whose file names match pattern, in PATH order."""
    found = []
    for d in filter(None, os.environ.get("PATH", "").split(os.pathsep)):
        try:
            paths = [os.path.join(d, n) for n in sorted(os.listdir(d)) if pattern.fullmatch(n)]
        except OSError:
            continue
        found += [p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)]
    return found


def program_files() -> list:
    """Windows' folders for installed programs (system-wide and per-user)."""
    local = os.environ.get("LOCALAPPDATA")
    return [Path(b) for b in (os.environ.get("ProgramFiles"), os.environ.get("ProgramW6432"),
                              local and str(Path(local) / "Programs")) if b]


def app_bundles(pattern: str, exe: str) -> list:
    """macOS: the executables of the app bundles matching pattern, system-wide and per-user."""
    found = []
    for apps in (Path("/Applications"), home() / "Applications"):
        found += [str(a / "Contents" / "MacOS" / exe) for a in sorted(apps.glob(pattern))
                  if (a / "Contents" / "MacOS" / exe).exists()]
    return found


def gimp_programs() -> list:
    """Every native GIMP executable (GIMP 2.10 too, so --check can warn about it)."""
    kind = os_kind()
    found = []
    if kind == "windows":
        for base in program_files():
            found += [str(p) for folder in sorted(base.glob("GIMP*"))
                      for p in sorted((folder / "bin").glob("*.exe")) if GIMP_EXE.fullmatch(p.name)]
    elif kind == "macos":
        found += app_bundles("GIMP*.app", "gimp")
    return unique_files(found + on_path(GIMP_EXE))


def krita_programs() -> list:
    kind = os_kind()
    found = []
    if kind == "windows":
        found += [str(b / "Krita (x64)" / "bin" / "krita.exe") for b in program_files()
                  if (b / "Krita (x64)" / "bin" / "krita.exe").is_file()]
    elif kind == "macos":
        found += app_bundles("krita*.app", "krita")
    return unique_files(found + on_path(KRITA_EXE))


def gimp_profile_homes() -> list:
    """(kind, the folder holding GIMP's per-series profiles, flatpak app) on this OS."""
    kind = os_kind()
    if kind == "windows":
        return [("native", appdata() / "GIMP", None)]
    if kind == "macos":
        return [("native", mac_support() / "GIMP", None)]
    return [("native", xdg_config_home() / "GIMP", None),
            ("flatpak", flatpak_app_dir(GIMP_FLATPAK) / "config" / "GIMP", GIMP_FLATPAK)]


def profiles_in(folder: Path) -> list:
    """((major, minor), path) of every profile folder (2.10, 3.0, 3.2, ...), oldest first."""
    if not folder.is_dir():
        return []
    return sorted((version_key(p.name), p) for p in folder.iterdir()
                  if re.fullmatch(r"\d+\.\d+", p.name) and p.is_dir())


def gimp3_series(versions: dict) -> dict:
    """{series: note} of the GIMP 3s among {where: version}. A version that cannot be
    learned counts as GIMP_SERIES_UNKNOWN, with a note, only when no other is known."""
    series = {dotted(k): "" for k in map(version_key, versions.values()) if k and k[0] == 3}
    unknown = [where for where, v in versions.items() if version_key(v) is None]
    if unknown and not series:
        series[GIMP_SERIES_UNKNOWN] = (f"the version of {', '.join(unknown)} could not be learned; "
                                       f"GIMP {GIMP_SERIES_UNKNOWN}'s profile folder is assumed")
    return series


def flatpak_gimp3(app: str, flatpak_check) -> dict:
    """gimp3_series() of the Flatpak GIMP, {} when it is not installed."""
    return gimp3_series({f"Flatpak {app}": flatpak_version(app)}) if flatpak_check(app) else {}


def krita_candidates() -> list:
    """(kind, resource dir, kritarc, flatpak app) for Krita on this OS."""
    kind = os_kind()
    if kind == "windows":
        return [("native", appdata() / "krita", localappdata() / "kritarc", None)]
    if kind == "macos":
        return [("native", mac_support() / "krita", home() / "Library" / "Preferences" / "kritarc",
                 None)]
    fp = flatpak_app_dir(KRITA_FLATPAK)
    return [("native", xdg_data_home() / "krita", xdg_config_home() / "kritarc", None),
            ("flatpak", fp / "data" / "krita", fp / "config" / "kritarc", KRITA_FLATPAK)]


def native_kritarc() -> Path:
    return krita_candidates()[0][2]


def target_collector():
    """A list of targets and an add() that drops a second target for the same folder."""
    targets, seen = [], set()

    def add(t: Target):
        key = os.path.normcase(os.path.abspath(t.root))
        if key not in seen:
            seen.add(key)
            targets.append(t)
    return targets, add


def find_gimp_targets(extra_dirs=(), programs=None, flatpak_check=flatpak_installed) -> list:
    """Every GIMP 3 profile to install into.

    Every existing GIMP/3.x profile counts: GIMP 3.0 and 3.2 each read their own. A
    GIMP 3 without a profile gets one for its own series, unless an older profile
    (2.10, or 3.0 beside a new 3.2) sits beside it: GIMP takes an older profile's
    settings over only into a folder that does not exist yet, so we must not create
    it first (the user is told to start that GIMP once)."""
    programs = gimp_programs() if programs is None else programs
    native = gimp3_series({exe: program_version(exe) for exe in programs})
    targets, add = target_collector()

    for d in extra_dirs:
        root = Path(d).expanduser()
        add(Target("gimp", "custom", root, exists=root.is_dir(),
                   version=root.name if re.fullmatch(r"3\.\d+", root.name) else ""))
    if os.environ.get("GIMP3_DIRECTORY"):
        root = Path(os.environ["GIMP3_DIRECTORY"])
        if root.is_dir() or native:
            add(Target("gimp", "native", root, exists=root.is_dir()))
    for kind, folder, app in gimp_profile_homes():
        profiles = profiles_in(folder)
        for key, root in profiles:
            if key[0] == 3:
                add(Target("gimp", kind, root, flatpak_app=app, version=root.name))
        installed = flatpak_gimp3(app, flatpak_check) if app else native
        for series, note in installed.items():
            if (folder / series).is_dir():
                continue
            older = [root for key, root in profiles if key < version_key(series)]
            if older:
                say(f"  note: GIMP {series}{' (Flatpak)' if app else ''} is installed but has no "
                    f"profile yet and a GIMP {older[-1].name} profile exists; start GIMP {series} "
                    "once (it takes your settings over), then run this installer again.")
                continue
            add(Target("gimp", kind, folder / series, exists=False, flatpak_app=app,
                       version=series, note=note))
    return targets


def find_krita_targets(extra_dirs=(), kritarc_override=None, programs=None,
                       flatpak_check=flatpak_installed) -> list:
    """Every Krita resource folder (holding pykrita/) to install into, with its kritarc."""
    programs = krita_programs() if programs is None else programs
    targets, add = target_collector()

    for d in extra_dirs:
        d = Path(d).expanduser()
        add(Target("krita", "custom", d, kritarc=Path(kritarc_override or native_kritarc()),
                   exists=d.is_dir()))
    for kind, root, rc, app in krita_candidates():
        if kritarc_override and kind == "native":
            rc = Path(kritarc_override)
        if root.is_dir():
            add(Target("krita", kind, root, kritarc=rc, flatpak_app=app))
        elif flatpak_check(app) if app else bool(programs):
            # Krita creates this folder on first start; creating it first is harmless.
            add(Target("krita", kind, root, kritarc=rc, exists=False, flatpak_app=app))
    return targets


# ============================================================== GIMP's python3 (the PATH pitfall)

def python_has_gi(python: str) -> bool:
    """Can this Python import gi *and* GIMP 3's bindings (the Gimp-3.0 typelib)?

    gi alone is not enough: a system python3-gi without GIMP 3's typelib (GIMP 3 as an
    AppImage, a Flatpak or in a chroot) cannot run the plug-in either."""
    code = "import gi; gi.require_version('Gimp', '3.0')"
    rc, _ = run_capture([python, "-c", code], timeout=30)
    return rc == 0


def gimp_interpreter_pin(has_gi=python_has_gi, system_python: str = "/usr/bin/python3"):
    """(python to pin or None, why). Linux only.

    GIMP runs a .py plug-in through its shebang, `#!/usr/bin/env python3`. When the
    python3 first on PATH (a venv, pyenv, conda) lacks the `gi` module, every Python
    plug-in fails with "No module named 'gi'". Pinning python3 in the profile's
    interpreters/ folder makes GIMP use the system Python that has gi."""
    if os_kind() != "linux":
        return None, "GIMP ships its own Python on this OS"
    first = shutil.which("python3")
    if first and has_gi(first):
        return None, f"python3 on PATH ({first}) has gi with GIMP 3's bindings"
    if Path(system_python).exists() and has_gi(system_python):
        why = (f"python3 on PATH ({first}) has no gi with GIMP 3's bindings" if first
               else "no python3 on PATH")
        return system_python, why + f"; GIMP is pointed at {system_python}"
    return None, ("no Python here has gi with GIMP 3's bindings; a distribution's GIMP 3 "
                  "brings them (Debian/Ubuntu: python3-gi, gir1.2-gimp-3.0), an AppImage or "
                  "Flatpak GIMP uses its own")


def interp_text(python: str) -> str:
    return f"python3={python}\n"


# ============================================================== torch choice

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
        """What torch the base Python has, as a dict, or None."""
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


# ============================================================== models

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


# Runs inside the venv: the installer itself never imports torch or core.
VENV_INFO_CODE = r"""
import json, os, sys
out = {"python": sys.executable, "version": sys.version.split()[0]}
try:
    import core
    out["core_path"] = os.path.dirname(os.path.dirname(os.path.abspath(core.__file__)))
except Exception as e:
    out["core_error"] = repr(e)
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_file"] = torch.__file__
    out["cuda"] = bool(torch.cuda.is_available())
    out["cuda_build"] = torch.version.cuda
    out["hip_build"] = getattr(torch.version, "hip", None)
    if out["cuda"]:
        out["gpu_name"] = torch.cuda.get_device_name(0)
    mps = getattr(torch.backends, "mps", None)
    out["mps"] = bool(mps and mps.is_available())
except Exception as e:
    out["torch_error"] = repr(e)
try:
    from core import weights
    out["model_dir"] = str(weights.cache_dir())
    out["models"] = {n: {"state": weights.status(n), "path": str(weights.model_path(n)),
                         "bundled": bool(weights.REGISTRY[n].bundled)} for n in weights.REGISTRY}
except Exception as e:
    out["weights_error"] = repr(e)
print(json.dumps(out))
"""

# Downloads one model with core.weights (verified, resumable) and shows progress.
DOWNLOAD_CODE = r"""
import sys, time
from core import weights
name, base = sys.argv[1], sys.argv[2]
url = base.rstrip("/") + "/" + weights.REGISTRY[name].filename if base else None
state = {"t": 0.0}
def progress(done, total):
    now = time.monotonic()
    if now - state["t"] < 0.25 and done != total:
        return
    state["t"] = now
    if total:
        sys.stdout.write("\r    %s: %5.1f%% of %.1f MB" % (name, 100.0 * done / total, total / 1e6))
    else:
        sys.stdout.write("\r    %s: %.1f MB" % (name, done / 1e6))
    sys.stdout.flush()
try:
    path = weights.download(name, progress=progress, url=url)
except (weights.ModelMissing, weights.VerificationError) as e:
    sys.stdout.write("\n")
    print("    FAILED: %s" % e)
    sys.exit(3)
sys.stdout.write("\n")
print("    %s: verified, %s" % (name, path))
"""


def venv_info(vpy: Path) -> dict:
    # cwd outside the repo and -I: the venv must import its installed core, not ours.
    rc, out = run_capture([vpy, "-I", "-c", VENV_INFO_CODE], timeout=300, cwd=str(vpy.parent))
    info = last_json_line(out) if rc == 0 else None
    return info or {"error": (out or "").strip()[-2000:] or f"exit {rc}"}


# ============================================================== self-check (through the plug-ins' client)

# Runs in the base Python, importing the front-end package the plug-ins import.
SELF_CHECK_CODE = r"""
import importlib, importlib.util, json, math, os, sys
package = sys.argv[1]
spec = importlib.util.spec_from_file_location("fbcnn_frontend", os.path.join(package, "__init__.py"),
                                              submodule_search_locations=[package])
sys.modules["fbcnn_frontend"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules["fbcnn_frontend"])
client = importlib.import_module("fbcnn_frontend.client")
path = client.__file__
W, H = 64, 48
px = bytearray()
for y in range(H):
    for x in range(W):
        # A smooth gradient flattened to 8x8 blocks: what a low JPEG quality does to skies.
        bx, by = x // 8 * 8 + 4, y // 8 * 8 + 4
        px += bytes((40 + bx * 2, 60 + by * 3, 200 - bx - by))
def blockiness(buf):
    # Mean jump across 8x8 block edges minus the mean jump inside blocks.
    edge = inner = ne = ni = 0
    for y in range(H):
        for x in range(W - 1):
            for c in range(3):
                d = abs(buf[(y * W + x + 1) * 3 + c] - buf[(y * W + x) * 3 + c])
                if x % 8 == 7:
                    edge += d; ne += 1
                else:
                    inner += d; ni += 1
    return edge / ne - inner / ni
out = {"client": path}
try:
    with client.Worker(timeout=float(sys.argv[2])) as w:
        hello = w.hello()
        out["hello"] = hello
        fmt = {"width": W, "height": H, "dtype": "u8", "order": "RGB"}
        res, meta = w.restore(bytes(px), fmt, model="auto", qf=int(sys.argv[3]), device="auto")
        meta = {k: v for k, v in meta.items() if k not in ("nbytes",)}
        out["result"] = meta
        out["size_ok"] = len(res) == len(px)
        out["changed"] = res != bytes(px)
        out["blockiness_before"] = round(blockiness(px), 3)
        out["blockiness_after"] = round(blockiness(res), 3) if out["size_ok"] else None
        mse = sum((a - b) ** 2 for a, b in zip(res, px)) / len(px) if out["size_ok"] else 1e9
        # A restoration smooths the block edges and stays close to the input; garbage
        # (wrong weights, a channel-order mix-up) fails the second test.
        out["psnr_vs_input"] = round(10 * math.log10(255.0 ** 2 / max(mse, 1e-9)), 2)
        out["ok"] = bool(out["size_ok"] and out["changed"]
                         and out["blockiness_after"] < out["blockiness_before"]
                         and out["psnr_vs_input"] >= 25.0)
except Exception as e:
    out["ok"] = False
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
"""


def self_check(frontend: Path, base_python: str, timeout: float = 300.0, qf: int = 20) -> dict:
    """Start the worker through the plug-ins' own client (`frontend`: the package's
    folder) and restore a built-in sample."""
    # -I: ignore PYTHONPATH and the cwd, exactly like an editor's embedded Python would
    # not see our repo; -B: no __pycache__ left in the plug-in folder.
    rc, out = run_capture([base_python, "-I", "-B", "-c", SELF_CHECK_CODE, str(frontend),
                           str(timeout), str(qf)], timeout=timeout + 60, cwd=tempfile.gettempdir())
    res = last_json_line(out or "")
    if not res:
        res = {"ok": False, "error": f"self-check did not run (exit {rc}): {(out or '').strip()[-1500:]}"}
    return res


# ============================================================== the plan

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


def plugin_sources() -> dict:
    return {"gimp": REPO / "gimp_plugin" / GIMP_PLUGIN,
            "krita_dir": REPO / "krita_plugin" / KRITA_PLUGIN,
            "krita_desktop": REPO / "krita_plugin" / f"{KRITA_PLUGIN}.desktop",
            "frontend": REPO / "core" / "frontend"}


def flatpak_override_command(app: str) -> str:
    return f"flatpak override --user --talk-name=org.freedesktop.Flatpak {app}"


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
                flatpak_cmds, sources, Manifest.load(manifest_path()).exists(), problems)


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
    say(f"  project          pip install {REPO} (core + bundled compact model, `fbcnn` CLI)")
    say(f"  models           {', '.join(plan.models) or 'none to download'} ({plan.models_why})"
        + (f"; from {plan.url_base}" if plan.url_base and plan.models else ""))
    if not plan.gimp:
        say("  GIMP 3           none found (use --gimp-dir to name a profile)")
    for g in plan.gimp:
        say(f"  {g.title():<16} {g.plugin_dir}" + ("" if g.exists else "  (profile created)"))
        if g.note:
            say(f"{'':19}note: {g.note}")
    if plan.gimp_pin:
        say(f"  GIMP python3     pin {plan.gimp_pin} in interpreters/python3.interp ({plan.gimp_pin_why})")
    if not plan.krita:
        say("  Krita            none found (use --krita-dir to name a resource folder)")
    for k in plan.krita:
        say(f"  {k.title():<16} {k.plugin_dir}" + ("" if k.exists else "  (folder created)"))
        say(f"                   enable in {k.kritarc} ([python] enable_{KRITA_PLUGIN}=true)")
    for path, fp in plan.configs:
        say(f"  config           {path}" + ("  (flatpak-spawn --host)" if fp else ""))
    say("  self-check       start the worker through the installed client, restore a sample")
    for p in plan.problems:
        say(f"  PROBLEM          {p}")
    if plan.krita and krita_running():
        say("  NOTE             Krita is running: quit it before installing, or it may overwrite "
            "kritarc on exit (re-run the installer then)")


# ============================================================== install steps

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


LINK_PTH = "fbcnn-linked-torch.pth"


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


def can_build_in_place(vpy: Path) -> bool:
    """True when the venv already has a setuptools that builds the project, so pip needs
    no isolated build environment (which it would fill from the index)."""
    code = ("import importlib.util, setuptools\n"
            "v = tuple(int(x) for x in setuptools.__version__.split('.')[:2])\n"
            "ok = v >= (70, 1) or (v >= (61, 0) and importlib.util.find_spec('wheel') is not None)\n"
            "raise SystemExit(0 if ok else 1)\n")
    rc, _ = run_capture([vpy, "-I", "-c", code], timeout=120, cwd=str(vpy.parent))
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


def venv_torch_fits(kind: str, info: dict) -> tuple:
    """(fits, why) for the torch the venv imports now (its own or the base's)."""
    if not info.get("torch"):
        return False, "the venv has no torch"
    return base_torch_suits(kind, {"version": info["torch"], "cuda": info.get("cuda_build"),
                                   "hip": info.get("hip_build"), "mps": kind == "mps"})


def torch_install_cmd(vpy: Path, choice: TorchChoice, replacing: bool) -> list:
    cmd = pip_cmd(vpy, TORCH_REQ)
    if choice.index_url:
        cmd += ["--index-url", choice.index_url]
    if replacing:
        # Replace the unfitting build (maybe the base's, seen through system site-packages)
        # together with its dependencies: a CUDA build needs its nvidia-* wheels.
        cmd += ["--upgrade", "--force-reinstall"]
    return cmd


def install_torch(vpy: Path, plan: Plan) -> None:
    info = venv_info(vpy)
    fits, why = venv_torch_fits(plan.torch.kind, info)
    if fits:
        say(f"  torch {info['torch']} is already usable in the venv ({info.get('torch_file')})")
        return
    say(f"  {why}" if not info.get("torch") else f"  torch {info['torch']} in the venv does not fit: {why}")
    if run_shown(torch_install_cmd(vpy, plan.torch, bool(info.get("torch"))), env=pip_env()) != 0:
        raise SystemExit("Installing torch failed (see pip's message above). Choose another build "
                         "with --torch cpu|cuda|rocm|mps or give --torch-index-url.")


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


def install_project(vpy: Path) -> str:
    """pip install the project; returns the folder holding the installed core package."""
    with tempfile.TemporaryDirectory(prefix="fbcnn-src-") as tmp:
        src = stage_project(Path(tmp))
        extra = ["--no-build-isolation"] if can_build_in_place(vpy) else []
        # Dependencies only when missing (a reused torch is never swapped here).
        if run_shown(pip_cmd(vpy, *extra, str(src)), env=pip_env()) != 0:
            raise SystemExit("Installing the project into the venv failed (see pip above).")
        info = venv_info(vpy)
        core_path = info.get("core_path")
        want = tree_digest(src / "core")
        if core_path and tree_digest(Path(core_path) / "core") != want:
            # Same version number as the installed one: some pip versions keep the old
            # files. A re-run must upgrade, so force it.
            say("  the installed core differs from this checkout; reinstalling it")
            if run_shown(pip_cmd(vpy, *extra, "--no-deps", "--force-reinstall", str(src)),
                         env=pip_env()) != 0:
                raise SystemExit("Reinstalling the project into the venv failed (see pip above).")
            info = venv_info(vpy)
            core_path = info.get("core_path")
        if not core_path:
            raise SystemExit("The venv cannot import core after pip install: "
                             f"{info.get('core_error') or info.get('error')}")
        if tree_digest(Path(core_path) / "core") != want:
            raise SystemExit(f"The core package in {core_path} does not match {REPO / 'core'} "
                             "after installing; remove the venv and run again.")
        if (REPO / "core" / "models").is_dir() and not any((Path(core_path) / "core" / "models").glob("*.pth")) \
                and any((REPO / "core" / "models").glob("*.pth")):
            raise SystemExit("The bundled model did not come along with the package (package-data).")
    return core_path


def download_models(vpy: Path, plan: Plan, manifest: Manifest, info: dict) -> list:
    """Fetch the asked-for models; returns problems. Files we fetch go into the manifest."""
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
        rc = run_shown([vpy, "-I", "-c", DOWNLOAD_CODE, name, plan.url_base or ""],
                       cwd=str(vpy.parent))
        if rc != 0:
            problems.append(f"model {name} could not be downloaded (see above)")
            continue
        if path is not None:
            for p in (path, path.with_name(path.name + ".verified")):
                manifest.add_file(p)
        manifest.save()
    return problems


def place_frontend(src: Path, plugin_dir: Path) -> Path:
    """The shared front-end package into a plug-in's folder (which the manifest owns as
    a whole), as the plug-ins import it; the host tests place it with this too."""
    dst = plugin_dir / FRONTEND_NAME
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return dst


def install_gimp(target: Target, plan: Plan, manifest: Manifest) -> list:
    src = plan.sources["gimp"]
    files = copy_tree(src, target.plugin_dir, manifest)
    place_frontend(plan.sources["frontend"], target.plugin_dir)
    main = target.plugin_dir / f"{GIMP_PLUGIN}.py"
    # GIMP silently skips a plug-in that is not executable.
    main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    notes = [f"{len(files) + len(list(target.frontend_path.rglob('*.py')))} files in {target.plugin_dir}"]
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
    pykrita = target.root / "pykrita"
    copy_tree(plan.sources["krita_dir"], target.plugin_dir, manifest)
    place_frontend(plan.sources["frontend"], target.plugin_dir)
    manual = plan.sources["krita_desktop"].parent / "Manual.html"
    if manual.is_file():
        # The .desktop names Manual.html; Krita's plug-in manager looks inside the package.
        shutil.copy2(manual, target.plugin_dir / "Manual.html")
    desktop = pykrita / f"{KRITA_PLUGIN}.desktop"
    write_file(desktop, plan.sources["krita_desktop"].read_bytes(), manifest)
    notes = [f"{len(list(target.plugin_dir.rglob('*.*'))) + 1} files in {pykrita}"]
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


def choose_client(plan: Plan, core_path: str | None) -> Path | None:
    """The front-end package a plug-in imports (its folder), for the self-check."""
    placed = [t for t in plan.gimp + plan.krita if (t.frontend_path / "client.py").is_file()]
    placed.sort(key=lambda t: t.kind == "flatpak")   # a native one first
    if placed:
        return placed[0].frontend_path
    if core_path and Path(core_path, "core", "frontend", "client.py").is_file():
        return Path(core_path, "core", "frontend")
    return None


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
    core_path = install_project(vpy)
    info = venv_info(vpy)
    say(f"  core installed in {core_path}")
    summary["installed"].append(f"worker Python   {vpy}")

    step("Models")
    summary["problems"] += download_models(vpy, plan, manifest, info)
    if not plan.models:
        say("  nothing to download (" + plan.models_why + ")")
    manifest.save()

    for host, targets, install, none_found in (
            ("GIMP 3", plan.gimp, install_gimp, "no GIMP 3 profile found; skipped (use --gimp-dir)"),
            ("Krita", plan.krita, install_krita, "no Krita resource folder found; skipped (use --krita-dir)")):
        step(f"{host.split()[0]} plug-in")
        if not targets:
            say(f"  {none_found}")
        for t in targets:
            for n in install(t, plan, manifest):
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
    client = choose_client(plan, core_path)
    check = self_check(client, plan.base_python) if client else {"ok": False, "error": "no client file"}
    print_self_check(check)
    if not check.get("ok"):
        first = str(check.get("error") or "see above").strip().splitlines()[0]
        summary["problems"].append("the self-check failed: " + first)
    info = venv_info(vpy)
    print_summary(plan, summary, info, check, link)
    return 0 if not summary["problems"] else 1


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


# ============================================================== uninstall

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
    for key in ("files", "trees"):
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


# ============================================================== check

def editors_found() -> list:
    """(app, where, version or None) of every GIMP and Krita on this machine."""
    found = [("GIMP", exe, program_version(exe)) for exe in gimp_programs()]
    found += [("Krita", exe, program_version(exe)) for exe in krita_programs()]
    for app, flatpak in (("GIMP", GIMP_FLATPAK), ("Krita", KRITA_FLATPAK)):
        if flatpak_installed(flatpak):
            found.append((app, f"Flatpak {flatpak}", flatpak_version(flatpak)))
    return found


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
    else:
        problems.append(f"the venv's torch does not import: {info.get('torch_error') or info.get('error')}")

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
    plan_like = Plan(sys.executable, venv, vpy.exists(), TorchChoice("cpu", None, False), [], "",
                     None, gimp, krita, None, "", [], [], plugin_sources(), False)
    client = choose_client(plan_like, cfg.get("core_path") if cfg else None)
    if client and cfg:
        res = self_check(client, args.python or sys.executable)
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


# ============================================================== command line

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
    p.add_argument("--no-gimp", action="store_true", help="skip GIMP")
    p.add_argument("--no-krita", action="store_true", help="skip Krita")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.uninstall:
        return uninstall(args)
    if args.check:
        return check(args)
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


if __name__ == "__main__":
    sys.exit(main())
