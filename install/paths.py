"""Where things are: the per-user folders of each OS, the project's data dir, the
venv's files, and the sources in this checkout that the installer places."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .self_check import load_frontend

REPO = Path(__file__).resolve().parent.parent
GIMP_PLUGIN = "fbcnn_gimp"
KRITA_PLUGIN = "fbcnn_krita"
GIMP_FLATPAK = "org.gimp.GIMP"
KRITA_FLATPAK = "org.kde.krita"
# The shared front-end package (core/frontend in the repo), placed in each plug-in's
# folder under this name; both plug-ins import it so.
FRONTEND_NAME = "fbcnn_frontend"


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


def frontend_config_path() -> Path:
    """Where the plug-ins read frontend.json: the client's own config_path(), from this
    checkout's core/frontend (standard library only, so the installer may run it)."""
    client = load_frontend(REPO / "core" / "frontend", "_fbcnn_installer_frontend", "client")
    return Path(client.config_path())


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


def plugin_sources() -> dict:
    """The pieces in this checkout that go into the editors' folders."""
    return {"gimp": REPO / "gimp_plugin" / GIMP_PLUGIN,
            "krita_dir": REPO / "krita_plugin" / KRITA_PLUGIN,
            "krita_desktop": REPO / "krita_plugin" / f"{KRITA_PLUGIN}.desktop",
            "frontend": REPO / "core" / "frontend"}
