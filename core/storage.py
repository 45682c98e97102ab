"""Inputs and outputs as URIs (`s3://bucket/archive`, `gs://...`, `file:///srv/x`):
anything pyarrow's `FileSystem.from_uri` understands, so a cluster needs no shared disk.

A Uri offers the part of pathlib's interface that the archive code uses (`/`, name,
stem, suffix, parent, with_suffix, exists, is_dir, resolve), so walking, planning and
mirroring treat it like a Path; reading and writing go through pyarrow. Reading
copies the file to a local temporary first: the pictures' readers and the JPEG's
quantization tables want a file. A result is written whole to a local temporary and
then stored: on an object store in one upload (the object appears only when the
upload completes), elsewhere under a temporary name beside the target, then moved
over it. pyarrow is imported only when a URI is used.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import tempfile
from pathlib import PurePosixPath
from typing import Callable

URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://(?P<authority>[^/?#]*)"
                 r"(?P<path>[^?#]*)(?P<query>\?[^#]*)?$")   # two letters at least: C:\ is a drive
# Filesystems whose single upload is atomic: no temporary object, no move (a copy there).
ONE_PUT = frozenset({"s3", "gcs", "abfs"})
_filesystems: dict = {}   # per process: (scheme, authority, query) -> (fs, base path)


def is_uri(text) -> bool:
    return isinstance(text, Uri) or (isinstance(text, str) and URI.match(text) is not None)


def as_path(text):
    """A Uri for a URI, else a pathlib.Path (the command line's and Ray rows' paths)."""
    return text if isinstance(text, (Uri, pathlib.Path)) else Uri(text) if is_uri(text) \
        else pathlib.Path(text)


def check_available(paths) -> None:
    """OSError, saying how to install it, when a URI is given and pyarrow is missing."""
    import importlib.util
    uris = [str(p) for p in paths if isinstance(p, Uri)]
    if uris and importlib.util.find_spec("pyarrow") is None:
        raise OSError(f"{uris[0]}: URIs are read and written with pyarrow, which is not "
                      f'installed: pip install ".[cluster]" (or pip install pyarrow)')


class Uri:
    """A file or folder on a pyarrow filesystem. Never an os.PathLike: handing one to
    open() by mistake fails instead of writing a local file named `s3:/...`."""

    def __init__(self, text: str):
        m = URI.match(text)
        if m is None:
            raise ValueError(f"not a URI: {text!r}")
        self.scheme, self.authority, self.query = m["scheme"].lower(), m["authority"], m["query"] or ""
        self.path = PurePosixPath(m["path"] or "/")

    def _with(self, path: PurePosixPath) -> "Uri":
        new = object.__new__(Uri)
        new.scheme, new.authority, new.query, new.path = self.scheme, self.authority, self.query, path
        return new

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}{self.query}"

    def __repr__(self) -> str:
        return f"Uri({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Uri) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, rel) -> "Uri":
        return self._with(self.path / str(rel))

    name = property(lambda self: self.path.name)
    stem = property(lambda self: self.path.stem)
    suffix = property(lambda self: self.path.suffix)
    parent = property(lambda self: self._with(self.path.parent))

    def with_suffix(self, suffix: str) -> "Uri":
        return self._with(self.path.with_suffix(suffix))

    def resolve(self) -> "Uri":
        return self

    # -- through pyarrow
    def fs(self):
        """(pyarrow filesystem, this URI's path on it)."""
        key = (self.scheme, self.authority, self.query)
        if key not in _filesystems:
            from pyarrow.fs import FileSystem
            _filesystems[key] = FileSystem.from_uri(f"{self.scheme}://{self.authority}/{self.query}")
        fs, base = _filesystems[key]
        return fs, (base.rstrip("/") + str(self.path)).rstrip("/") or "/"

    def _type(self):
        fs, path = self.fs()
        return fs.get_file_info(path).type

    def exists(self) -> bool:
        from pyarrow.fs import FileType
        return self._type() != FileType.NotFound

    def is_dir(self) -> bool:
        from pyarrow.fs import FileType
        return self._type() == FileType.Directory

    def is_object_store(self) -> bool:
        return self.fs()[0].type_name in ONE_PUT


def listing(top: Uri, recursive: bool):
    """(files, folders) under top, as Uris, sorted (runs and reports are reproducible)."""
    from pyarrow.fs import FileSelector, FileType
    fs, base = top.fs()
    files, folders = [], []
    for info in fs.get_file_info(FileSelector(base, recursive=recursive)):
        rel = PurePosixPath(info.path).relative_to(PurePosixPath(base))
        if info.type == FileType.Directory:
            folders.append(top / rel)
        elif info.type == FileType.File:
            files.append(top / rel)
    return sorted(files, key=str), sorted(folders, key=str)


def names_in(folder: Uri) -> list:
    from pyarrow.fs import FileSelector
    fs, path = folder.fs()
    return [PurePosixPath(i.path).name for i in fs.get_file_info(FileSelector(path, allow_not_found=True))]


def remove(uri: Uri) -> None:
    fs, path = uri.fs()
    fs.delete_file(path)


def make_folder(folder: Uri) -> None:
    fs, path = folder.fs()
    if not folder.is_object_store():   # an object store has no folders, only key prefixes
        fs.create_dir(path, recursive=True)


@contextlib.contextmanager
def local_copy(src):
    """A local file with src's content: src itself if it is one."""
    if not isinstance(src, Uri):
        yield src
        return
    fs, path = src.fs()
    fd, name = tempfile.mkstemp(prefix=".fbcnn-in-", suffix=src.suffix)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as stream:
            shutil.copyfileobj(stream, out, 1 << 20)
        yield pathlib.Path(name)
    finally:
        os.unlink(name)


def store(dst: Uri, write: Callable[[pathlib.Path], None], temp_name: Callable[[], str]) -> None:
    """write(local temporary), then put it at dst whole: one upload on an object store;
    elsewhere an upload to temp_name() beside dst and a move over it (a rename on a
    filesystem), the temporary removed if anything fails."""
    fd, name = tempfile.mkstemp(prefix=".fbcnn-out-", suffix=".tmp" + dst.suffix)
    os.close(fd)
    local = pathlib.Path(name)
    try:
        write(local)
        fs, path = dst.fs()
        if dst.is_object_store():
            _upload(fs, local, path)
            return
        tmp = (dst.parent / temp_name()).fs()[1]
        try:
            _upload(fs, local, tmp)
            fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.delete_file(tmp)
            raise
    finally:
        local.unlink(missing_ok=True)


def _upload(fs, local: pathlib.Path, path: str) -> None:
    _put(fs, path, local.read_bytes())


def put_bytes(uri: Uri, data: bytes) -> None:
    _put(*uri.fs(), data)


def _put(fs, path: str, data: bytes) -> None:
    # One write of the whole file: a signal's Python exception comes before or after a
    # C call, never within it, so the stream never closes on half a picture.
    stream = fs.open_output_stream(path)
    stream.write(data)
    stream.close()
