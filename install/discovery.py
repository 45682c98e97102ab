"""Finding GIMP and Krita: their programs and versions, GIMP 3's per-series profiles,
Krita's resource folders and kritarc, and so the targets to install into; advice
for a version outside the tested range."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .console import clean_env, run_capture, say
from .paths import (FRONTEND_NAME, GIMP_FLATPAK, GIMP_PLUGIN, KRITA_FLATPAK, KRITA_PLUGIN, appdata,
                    flatpak_app_dir, home, localappdata, mac_support, os_kind, xdg_config_home,
                    xdg_data_home)

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


def editors_found() -> list:
    """(app, where, version or None) of every GIMP and Krita on this machine."""
    found = [("GIMP", exe, program_version(exe)) for exe in gimp_programs()]
    found += [("Krita", exe, program_version(exe)) for exe in krita_programs()]
    for app, flatpak in (("GIMP", GIMP_FLATPAK), ("Krita", KRITA_FLATPAK)):
        if flatpak_installed(flatpak):
            found.append((app, f"Flatpak {flatpak}", flatpak_version(flatpak)))
    return found
