"""A whole archive as inputs: folders walked into files, their outputs mirrored under one
folder, and the report of what became of each input.

`fbcnn restore DIR --out-dir OUT` takes DIR's own image files; with -r it descends,
and `DIR/a/b/c.jpg` becomes `OUT/a/b/c.png`. A file named on the command line goes to
`OUT/<name>.png` as before. What cannot be walked (an unreadable folder, a symbolic
link back into a folder being walked, a broken link) is reported and the walk goes on.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from core import storage

# What Pillow (and the 16-bit readers of core.images) open; other files in a folder
# are counted as "not images", never tried: an archive holds .txt, .xml, thumbs.db...
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff",
                            ".bmp", ".webp", ".ppm", ".pgm", ".pnm"})


@dataclass(frozen=True)
class Item:
    src: pathlib.Path
    rel: Optional[pathlib.PurePath]   # its path under the walked folder; None for a named file


@dataclass
class Walk:
    items: list = field(default_factory=list)
    not_images: int = 0
    problems: list = field(default_factory=list)   # lines to report: the walk went on
    folders: int = 0                               # folders given on the command line


def is_image(path) -> bool:
    return pathlib.PurePath(path).suffix.lower() in IMAGE_SUFFIXES


def walk(inputs, recursive: bool, exclude: Optional[pathlib.Path] = None) -> Walk:
    """The image files of inputs: files as given (whatever their name: the user chose
    them), folders walked (sorted, so runs and reports are reproducible). `exclude` (the
    output folder) is never entered: a re-run would restore the results again."""
    found = Walk()
    skip = exclude.resolve() if exclude is not None and exclude.exists() else None
    for path in inputs:
        path = storage.as_path(path)
        if isinstance(path, storage.Uri) and path.is_dir():
            found.folders += 1
            _walk_uri(path, recursive, skip, found)
        elif path.is_dir():
            found.folders += 1
            _walk_folder(path, recursive, skip, found)
        else:
            found.items.append(Item(path, None))   # a missing file fails when read, by name
    return found


def _walk_folder(top: pathlib.Path, recursive: bool, skip, found: Walk) -> None:
    seen = set()   # (device, inode) of every folder entered: a link back is a loop

    def unreadable(err: OSError):
        found.problems.append(f"{err.filename}: cannot read the folder: {err.strerror or err}")

    not_entered = 0
    for folder, subfolders, files in os.walk(top, onerror=unreadable, followlinks=True):
        here = pathlib.Path(folder)
        st = here.stat()
        if (st.st_dev, st.st_ino) in seen:
            found.problems.append(f"{here}: a symbolic link to a folder already walked "
                                  f"(a loop?); not entered again")
            subfolders[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        subfolders.sort()
        if skip is not None:
            subfolders[:] = [d for d in subfolders if (here / d).resolve() != skip]
        for name in sorted(files):
            src = here / name
            if not is_image(name):
                found.not_images += 1
            elif not src.exists():
                found.problems.append(f"{src}: a broken symbolic link")
            else:
                found.items.append(Item(src, src.relative_to(top)))
        if not recursive:
            not_entered += len(subfolders)
            subfolders[:] = []
    if not_entered:
        found.problems.append(_not_entered(top, not_entered))


def _walk_uri(top: storage.Uri, recursive: bool, skip, found: Walk) -> None:
    """A folder behind a URI: no links, so no loops (an object store has only keys)."""
    try:
        files, folders = storage.listing(top, recursive)
    except OSError as err:
        found.problems.append(f"{top}: cannot read the folder: {err}")
        return
    if skip is not None:
        inside = str(skip).rstrip("/") + "/"
        files = [f for f in files if not str(f).startswith(inside)]
    for src in files:
        if is_image(src.name):
            found.items.append(Item(src, src.path.relative_to(top.path)))
        else:
            found.not_images += 1
    if folders and not recursive:
        found.problems.append(_not_entered(top, len(folders)))


def _not_entered(top, count: int) -> str:
    return f"{top}: {count} subfolder(s) not entered; use -r to restore the whole tree"


def mirrored(out_dir: pathlib.Path, item: Item) -> pathlib.Path:
    rel = item.rel if item.rel is not None else pathlib.PurePath(item.src.name)
    return out_dir / rel.with_suffix(".png")


# ---------------------------------------------------------------- the report

STATUSES = ("done", "skipped", "failed", "not-done")


def record(src, dst, status: str, result=None, seconds: Optional[float] = None,
           error: Optional[str] = None) -> dict:
    """One input's line of the report; `result` is the engine's Result or None."""
    return {"path": str(src), "output": str(dst) if dst is not None else None, "status": status,
            "qf": int(result.qf_used) if result is not None else None,
            "qf_source": result.qf_source if result is not None else None,
            "model": str(result.model) if result is not None else None,
            "device": result.device if result is not None else None,
            "runtime": result.runtime if result is not None else None,
            "seconds": round(seconds, 3) if seconds is not None else None,
            "error": error}


class Report:
    """Counts every input's status and, given a path, writes it as one JSON line as soon
    as it is known (flushed: a killed run's report holds everything finished before)."""

    def __init__(self, path: Optional[pathlib.Path]):
        self.counts = Counter()
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8")

    def add(self, rec: dict) -> None:
        with self._lock:
            self.counts[rec["status"]] += 1
            if self._file is not None:
                self._file.write(json.dumps(rec) + "\n")
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def summary(self, not_images: int = 0) -> str:
        c = self.counts
        text = f"{c['done']} written, {c['skipped']} skipped, {c['failed']} failed"
        if c["not-done"]:
            text += f", {c['not-done']} not done"
        if not_images:
            text += f"; {not_images} file(s) that are not images left alone"
        return text


def open_report(path: Optional[pathlib.Path]) -> Report:
    try:
        return Report(path)
    except OSError as err:
        raise OSError(f"cannot write the report {path}: {err.strerror or err}") from None


def say(line: str) -> None:
    print(f"fbcnn: {line}", file=sys.stderr, flush=True)
