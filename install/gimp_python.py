"""GIMP's python3 (the PATH pitfall): GIMP starts a .py plug-in through its shebang,
and a python3 first on PATH without GIMP 3's bindings breaks every Python plug-in;
the profile's interpreters/python3.interp can pin one that has them."""
from __future__ import annotations

import shutil
from pathlib import Path

from .console import run_capture
from .paths import os_kind


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
