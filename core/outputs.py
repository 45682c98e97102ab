"""Where results go, checked before any compute, and written whole or not at all.

Every output folder must exist or be creatable, and writable; no output may be an
input or the output of another input; an existing file is skipped with a message
unless overwriting was asked for, never replaced silently. A result is written to a
unique temporary name in its own folder, then renamed over the target, so a killed
run leaves complete files or none, and two runs into one folder never share a name.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Optional


class OutputError(Exception):
    """An output that cannot be written at all: nothing should be computed."""


@dataclass(frozen=True)
class Target:
    src: pathlib.Path
    dst: pathlib.Path
    skip: Optional[str] = None   # why this input is not written, or None
    error: bool = False          # skipped as a failure (a clash), not by choice (it exists)


def ensure_writable_folder(folder: pathlib.Path) -> None:
    """Create the folder (with its parents) if needed and prove it takes a new file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder {folder}: "
                          f"{err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".fbcnn-probe-", dir=folder)
    except OSError as err:
        raise OutputError(f"cannot write into the output folder {folder}: "
                          f"{err.strerror or err}") from None
    os.close(fd)
    os.unlink(probe)


def plan(inputs: Iterable[pathlib.Path], dst_for: Callable[[pathlib.Path], pathlib.Path],
         overwrite: bool = False) -> list[Target]:
    """One Target per input, its folder checked; raises OutputError for a folder that
    cannot take files (every input there would fail the same way)."""
    inputs = list(inputs)
    sources = {p.resolve() for p in inputs}
    taken: dict = {}
    checked: set = set()
    targets = []
    for src in inputs:
        dst = dst_for(src)
        folder = dst.parent
        if folder.resolve() not in checked:
            ensure_writable_folder(folder)
            checked.add(folder.resolve())
        key = dst.resolve()
        error = key in sources or key in taken
        if key in sources:
            skip = f"would overwrite the input {dst}; choose another output"
        elif key in taken:
            skip = f"{taken[key]} also maps to {dst}; rename one or use -o"
        elif dst.exists() and not overwrite:
            skip = f"{dst} exists; use --overwrite to replace it"
        else:
            skip = None
        taken.setdefault(key, src)
        targets.append(Target(src, dst, skip, error))
    return targets


def write_atomically(dst: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """write(tmp) to a unique name beside dst (same suffix, so the writer picks the
    format), then rename it over dst; nothing of it remains if anything fails."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".tmp" + dst.suffix,
                                dir=dst.parent)
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); a result is an ordinary file, readable
        # as the user's umask says, like one that was written directly.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can
    only be read by setting it, which races with other threads creating files)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
