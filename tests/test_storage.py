"""Inputs and outputs as URIs (core/storage.py), through the real `fbcnn restore` and
pyarrow's local filesystem (`file://`): the one pyarrow filesystem reachable here
(no S3 or GCS on these machines). The same code serves `--ray`'s actors
(tests/test_ray.py runs a cluster job on file:// URIs).
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from core import outputs, storage
from tests.test_archive import files_under
from tests.test_cli import run
from tests.test_jobs import pictures, pixels

needs_pyarrow = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None,
    reason='PYARROW IS NOT INSTALLED: the URI tests did NOT run (pip install ".[cluster]")')
MODEL = ["--model", "compact", "--device", "cpu", "--qf", "30"]


def uri(path) -> str:
    return "file://" + str(path)


def test_a_uri_behaves_like_a_path_where_the_archive_code_uses_one():
    u = storage.Uri("s3://bucket/archive/a/b.jpg?region=eu-west-1")
    assert (u.name, u.stem, u.suffix) == ("b.jpg", "b", ".jpg")
    assert str(u.parent) == "s3://bucket/archive/a?region=eu-west-1"
    assert str(u.parent.parent / "x" / "y.png") == "s3://bucket/archive/x/y.png?region=eu-west-1"
    assert str(u.with_suffix(".png")) == "s3://bucket/archive/a/b.png?region=eu-west-1"
    assert u == storage.as_path(str(u)) and len({u, storage.Uri(str(u))}) == 1
    assert isinstance(storage.as_path("C:/photos/a.jpg"), type(storage.as_path("a")))   # a drive
    with pytest.raises(TypeError):
        open(u)   # never taken for a local file


@needs_pyarrow
def test_restore_reads_and_writes_file_uris_as_it_does_folders(tmp_path):
    src = pictures(tmp_path / "in", count=6, size=64)
    (src / "notes.txt").write_text("not a picture")
    local, out = tmp_path / "local", tmp_path / "out"
    r = run(["restore", src, "-r", "--out-dir", local, *MODEL], tmp_path)
    assert r.returncode == 0, r.stderr
    args = ["restore", uri(src), "-r", "--out-dir", uri(out), "--report", tmp_path / "r.jsonl", *MODEL]
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6 written, 0 skipped, 0 failed; 1 file(s) that are not images left alone" in r.stderr
    assert files_under(out) == files_under(local) and len(files_under(out)) == 6   # no temporaries
    for rel in files_under(out):
        assert np.array_equal(pixels(out / rel), pixels(local / rel)), rel   # one process, same sums
    recs = [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["status"] for r in recs} == {"done"}
    for rec in recs:   # the report names the URIs
        rel = os.path.relpath(rec["path"][len("file://"):], src)
        assert rec["path"] == uri(src / rel) and rec["output"] == uri(out / rel)[:-4] + ".png"
    r = run(args, tmp_path)   # a re-run finds the outputs through pyarrow and skips them
    assert r.returncode == 0 and "0 written, 6 skipped, 0 failed" in r.stderr, r.stderr


@needs_pyarrow
def test_a_stored_result_is_whole_or_absent_and_leaves_no_temporary(tmp_path):
    dst = storage.Uri(uri(tmp_path / "x.png"))

    def fails(tmp):
        tmp.write_bytes(b"half a picture")
        raise RuntimeError("the encoder failed")

    with pytest.raises(RuntimeError):
        outputs.write_atomically(dst, fails)
    assert os.listdir(tmp_path) == []
    outputs.write_atomically(dst, lambda tmp: tmp.write_bytes(b"a whole picture"))
    assert os.listdir(tmp_path) == ["x.png"] and (tmp_path / "x.png").read_bytes() == b"a whole picture"


@needs_pyarrow
def test_a_uri_output_folder_that_cannot_be_written_stops_before_any_compute(tmp_path):
    src = pictures(tmp_path / "in", count=1, size=64)
    (tmp_path / "file").write_text("a file where a folder should be")
    r = run(["restore", src, "-r", "--out-dir", uri(tmp_path / "file" / "out"), *MODEL], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "cannot write into the output folder file://" in r.stderr and "Traceback" not in r.stderr


def test_a_uri_without_pyarrow_is_a_clear_error_before_anything(tmp_path):
    src = pictures(tmp_path / "in", count=1, size=64)
    out = tmp_path / "out"
    r = run(["restore", src, "-r", "--out-dir", uri(out), *MODEL], tmp_path,
            prelude="import sys\nsys.modules['pyarrow'] = None   # as if not installed")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"fbcnn: error: {uri(out)}: URIs are read and written with pyarrow, which is not "
        f'installed: pip install ".[cluster]" (or pip install pyarrow)']
    assert not out.exists()
