"""Where results go, checked before any compute, and written whole or not at all.

Every output folder must exist or be creatable, and writable; no output may be an
input or the output of another input; an existing file is skipped with a message
unless overwriting was asked for, never replaced silently. A result is written to a
unique temporary name in its own folder, then renamed over the target, so a killed
run leaves complete files or none, and two runs into one folder never share a name.
Temporary names say whose they are (`.fbcnn-HOST-PID.*.tmp.png`): a process killed
before it could remove its own leaves one behind, and the next run into that folder
removes those of dead processes of this host, and nobody else's.
"""
from __future__ import annotations

import os
import pathlib
import re
import secrets
import socket
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from core import storage


class OutputError(Exception):
    """An output that cannot be written at all: nothing should be computed."""


@dataclass(frozen=True)
class Target:
    src: pathlib.Path
    dst: pathlib.Path
    skip: Optional[str] = None   # why this input is not written (its output exists), or None


def ensure_writable_folder(folder: pathlib.Path) -> None:
    """Create the folder (with its parents) if needed and prove it takes a new file."""
    if isinstance(folder, storage.Uri):
        return _ensure_writable_uri(folder)
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
    remove_stale_temporaries(folder)


def _ensure_writable_uri(folder) -> None:
    probe = folder / (temp_prefix("probe") + "tmp.png")
    try:
        storage.make_folder(folder)
        storage.put_bytes(probe, b"")
        storage.remove(probe)
    except OSError as err:
        raise OutputError(f"cannot write into the output folder {folder}: {err}") from None
    remove_stale_temporaries(folder)


SHOWN_CLASHES = 10


def plan(inputs: Iterable[pathlib.Path], dst_for: Callable[[pathlib.Path], pathlib.Path],
         overwrite: bool = False) -> list[Target]:
    """One Target per input, its folder checked. Raises OutputError for a folder that
    cannot take files (every input there would fail the same way) and for outputs that
    clash (an input's own file, or two inputs with one output, like x.jpg and x.png):
    which one should win is the user's call, so nothing is computed until they decide."""
    inputs = list(inputs)
    sources = {p.resolve(): p for p in inputs}
    taken: dict = {}
    checked: set = set()
    targets, clashes = [], []
    for src in inputs:
        dst = dst_for(src)
        folder = dst.parent
        if folder.resolve() not in checked:
            ensure_writable_folder(folder)
            checked.add(folder.resolve())
        key = dst.resolve()
        if key in sources:
            clashes.append(f"{src}: its output would overwrite the input {sources[key]}")
        elif key in taken:
            clashes.append(f"{taken[key]} and {src} both map to {dst}")
        taken.setdefault(key, src)
        skip = f"{dst} exists; use --overwrite to replace it" if not overwrite and dst.exists() else None
        targets.append(Target(src, dst, skip))
    if clashes:
        more = len(clashes) - SHOWN_CLASHES
        raise OutputError("outputs clash, nothing was restored (rename the inputs, or choose "
                          "another output):\n  " + "\n  ".join(clashes[:SHOWN_CLASHES])
                          + (f"\n  and {more} more" if more > 0 else ""))
    return targets


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


TEMP_NAME = re.compile(r"^\.fbcnn-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\..*\.tmp\.(png|tiff?)$")


def temp_prefix(stem: str) -> str:
    return f".fbcnn-{_host()}-{os.getpid()}.{stem}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process: alive, and not ours to judge
    return True


def remove_stale_temporaries(folder: pathlib.Path) -> list:
    """Remove our temporary files left in folder by processes of this host that no
    longer run (a SIGKILL or a power cut gives no chance to clean up); returns them.
    A live process's, or another host's on a shared folder, is never touched."""
    removed = []
    host = _host()
    try:
        names = storage.names_in(folder) if isinstance(folder, storage.Uri) else os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = TEMP_NAME.match(name)
        if m and m["host"] == host and not _alive(int(m["pid"])):
            try:
                if isinstance(folder, storage.Uri):
                    storage.remove(folder / name)
                else:
                    os.unlink(folder / name)
                removed.append(folder / name)
            except OSError:
                pass
    return removed


def write_atomically(dst: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """write(tmp) to a unique name beside dst (same suffix, so the writer picks the
    format), then rename it over dst; nothing of it remains if anything fails. A URI
    goes through storage.store: the same promise, kept by its filesystem's means."""
    if isinstance(dst, storage.Uri):
        return storage.store(dst, write, lambda: _temp_name(dst))
    fd, name = tempfile.mkstemp(prefix=temp_prefix(dst.stem), suffix=".tmp" + dst.suffix,
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


def _temp_name(dst) -> str:
    """A unique temporary name for dst's folder, of the form stale-temporary cleanup knows."""
    return temp_prefix(dst.stem) + secrets.token_hex(4) + ".tmp" + dst.suffix


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
