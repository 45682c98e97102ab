"""What the installer put in place, so --uninstall removes exactly that, and the
file operations that record into it as they go."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .console import say

MANIFEST_VERSION = 1
# Caches that Python and the editors drop into a source folder: never copied.
COPY_IGNORE = ("__pycache__", "*.pyc", "*.pyo")


class Manifest:
    """What the installer put in place, so --uninstall removes exactly that.

    files: single files we wrote; links: symbolic links we made (--dev), removed
    without touching what they point to; trees: folders that are wholly ours
    (plug-in folders, the venv); dirs: folders we had to create (removed only when
    empty); kritarc: per file, the value enable_fbcnn_krita had before we first
    touched it.
    """

    KEYS = ("files", "links", "trees", "dirs")

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

    @classmethod
    def scratch(cls) -> "Manifest":
        """One that is never saved: for placing files outside an install (the test harnesses)."""
        return cls(Path(os.devnull))

    def exists(self) -> bool:
        return self.path.exists()

    def _add(self, key: str, p: Path) -> None:
        s = str(p)
        if s not in self.data[key]:
            self.data[key].append(s)

    def add_file(self, p: Path) -> None:
        self._add("files", p)

    def add_link(self, p: Path) -> None:
        self._add("links", p)

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


def clear(p: Path) -> None:
    """Remove what is at p: a link itself (never what it points to), a file, a folder."""
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def copy_tree(src: Path, dst: Path, manifest: Manifest, skip=()) -> list:
    """Replace dst with a copy of src (no caches, nothing named in skip); dst becomes a
    tree we own."""
    # An upgrade: drop stale files of the previous version first (or an earlier --dev link).
    clear(dst)
    make_dirs(dst.parent, manifest)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*COPY_IGNORE, *skip))
    manifest.add_tree(dst)
    return sorted(p for p in dst.rglob("*") if p.is_file())


def link_path(link: Path, target: Path, manifest: Manifest, relative: bool = False) -> str | None:
    """Replace what is at `link` with a symbolic link to `target`, recorded as ours.
    Returns None, or why this system cannot make the link (Windows without the
    privilege): the caller copies instead."""
    clear(link)
    make_dirs(link.parent, manifest)
    to = os.path.relpath(target, link.parent) if relative else str(target)
    try:
        link.symlink_to(to, target_is_directory=Path(target).is_dir())
    except (OSError, NotImplementedError) as e:
        return str(e) or type(e).__name__
    manifest.add_link(link)
    return None


def remove_path(p: Path) -> bool:
    try:
        if p.is_symlink() or p.is_file() or p.is_dir():
            clear(p)
            return True
    except OSError as e:
        say(f"    could not remove {p}: {e}")
    return False
