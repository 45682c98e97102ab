"""A whole archive through the real `fbcnn restore` (issue #20 items 1-2): folder trees
mirrored, non-images counted, resume, --overwrite, the report, and the faults that
must be reported (a corrupt file, a loop, an unreadable folder) or refused before any
compute (clashing outputs, a read-only output folder). The bundled compact model on
small pictures, in a subprocess each time.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core import outputs
from tests.test_cli import ROOT, jpeg, messages, run

MODEL = ["--model", "compact", "--device", "cpu"]


def tree(root):
    """in/top.jpg, in/notes.txt, in/a/broken.jpg, in/a/b/c.jpg, in/a/b/deep.png"""
    (root / "a" / "b").mkdir(parents=True)
    jpeg(root / "top.jpg", quality=20)
    (root / "notes.txt").write_text("not a picture")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG cut after its first bytes")
    jpeg(root / "a" / "b" / "c.jpg", quality=40, h=64, w=96)
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 56, 3), np.uint8)).save(
        root / "a" / "b" / "deep.png")
    return root


def report_lines(path) -> dict:
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    return {os.path.relpath(rec["path"], path.parent / "in"): rec for rec in lines}


def files_under(folder) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


def test_a_tree_is_mirrored_and_the_report_has_a_line_per_input(tmp_path):
    src = tree(tmp_path / "in")
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    r = run(["restore", src, "-r", "--out-dir", out, "--report", report, *MODEL], tmp_path)
    assert r.returncode == 1, r.stderr                     # the corrupt JPEG failed
    assert files_under(out) == ["a/b/c.png", "a/b/deep.png", "top.png"]
    with Image.open(out / "a" / "b" / "c.png") as im:
        assert im.format == "PNG" and im.size == (96, 64)
    recs = report_lines(report)
    assert sorted(recs) == ["a/b/c.jpg", "a/b/deep.png", "a/broken.jpg", "top.jpg"]
    assert {k: v["status"] for k, v in recs.items()} == {
        "a/b/c.jpg": "done", "a/b/deep.png": "done", "a/broken.jpg": "failed", "top.jpg": "done"}
    assert recs["top.jpg"]["qf"] == 20 and recs["top.jpg"]["qf_source"] == "file"
    assert recs["a/b/deep.png"]["qf_source"] == "network"
    done = recs["a/b/c.jpg"]
    assert done["model"] == "compact" and done["device"] == "cpu" and done["seconds"] > 0
    assert done["output"] == str(out / "a" / "b" / "c.png") and done["error"] is None
    assert recs["a/broken.jpg"]["error"] and recs["a/broken.jpg"]["qf"] is None
    assert "3 written, 0 skipped, 1 failed; 1 file(s) that are not images left alone" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_re_run_skips_what_is_done_and_overwrite_redoes_it(tmp_path):
    """The output folder inside the input tree: a re-run must not take the results
    for new inputs."""
    src = tree(tmp_path / "in")
    (src / "a" / "broken.jpg").unlink()
    out, report = src / "restored", tmp_path / "report.jsonl"
    args = ["restore", src, "-r", "--out-dir", out, "--report", report, *MODEL]
    assert run(args, tmp_path).returncode == 0
    (out / "top.png").write_bytes(b"the user's own file")
    (out / "a" / "b" / "c.png").unlink()                   # as if the run had stopped before it
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    statuses = {k: v["status"] for k, v in report_lines(report).items()}
    assert statuses == {"a/b/c.jpg": "done", "a/b/deep.png": "skipped", "top.jpg": "skipped"}
    assert (out / "top.png").read_bytes() == b"the user's own file"
    assert "1 written, 2 skipped, 0 failed" in r.stderr
    r = run(args + ["--overwrite"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert set(v["status"] for v in report_lines(report).values()) == {"done"}
    with Image.open(out / "top.png") as im:
        assert im.size == (64, 48)
    assert files_under(out) == ["a/b/c.png", "a/b/deep.png", "top.png"]


def test_a_folder_without_r_gives_its_own_files_and_says_what_it_left(tmp_path):
    src = tree(tmp_path / "in")
    out = tmp_path / "out"
    r = run(["restore", src, "--out-dir", out, *MODEL], tmp_path)
    assert r.returncode == 0, r.stderr
    assert files_under(out) == ["top.png"]
    assert "1 subfolder(s) not entered; use -r" in r.stderr


def test_clashing_outputs_stop_everything_before_any_compute(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    jpeg(src / "x.jpg")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "x.png")
    jpeg(src / "y.jpg")
    out = tmp_path / "out"
    r = run(["restore", src, "--out-dir", out, *MODEL], tmp_path)
    assert r.returncode == 2
    assert f"{src / 'x.jpg'} and {src / 'x.png'} both map to {out / 'x.png'}" in r.stderr
    assert os.listdir(out) == [] and "restoring" not in r.stderr


def test_a_folder_needs_out_dir(tmp_path):
    src = tree(tmp_path / "in")
    r = run(["restore", src, *MODEL], tmp_path)
    assert r.returncode == 2 and "needs --out-dir" in r.stderr
    assert not list(src.rglob("*.fbcnn.png"))


def without_root_powers() -> list:
    """A prefix that makes root obey file modes (it reads any folder otherwise)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("as root, needs setpriv to drop the capability to read any folder")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def test_a_symlink_loop_and_an_unreadable_folder_are_reported_not_fatal(tmp_path):
    src = tree(tmp_path / "in")
    (src / "a" / "b" / "back").symlink_to(src / "a")
    locked = src / "locked"
    locked.mkdir()
    jpeg(locked / "hidden.jpg")
    locked.chmod(0)
    try:
        out = tmp_path / "out"
        cmd = [*without_root_powers(), sys.executable, "-m", "core", "restore", str(src), "-r",
               "--out-dir", str(out), *MODEL]
        env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")}
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
    assert r.returncode == 1, r.stderr                     # the corrupt JPEG only
    assert files_under(out) == ["a/b/c.png", "a/b/deep.png", "top.png"]
    problems = messages(r.stderr)
    assert any(str(src / "a" / "b" / "back") in ln and "loop" in ln for ln in problems), r.stderr
    assert any(str(locked) in ln and "cannot read the folder" in ln for ln in problems), r.stderr


def test_a_read_only_output_folder_is_a_clear_error_before_any_compute(tmp_path):
    src = tree(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    cli = [sys.executable, "-m", "core", "restore", str(src), "-r", "--out-dir", str(out), *MODEL]
    if os.geteuid() == 0:   # root writes anywhere the mount allows: make the mount read-only
        if shutil.which("unshare") is None:
            pytest.skip("as root, needs unshare to mount a read-only folder")
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs -o ro tmpfs {out} && exec "$@"', "sh", *cli]
    else:
        out.chmod(0o555)
        cmd = cli
    env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out.chmod(0o755)
    assert r.returncode == 2, r.stderr
    assert f"cannot create the output folder {out / 'a' / 'b'}" in r.stderr \
        or f"cannot write into the output folder {out}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "restoring" not in r.stderr


def test_stale_temporaries_of_dead_processes_are_removed_and_no_others(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    jpeg(src / "x.jpg")
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    host = outputs.temp_prefix("x").split(".")[1].rsplit("-", 1)[0]   # ".fbcnn-HOST-PID.x."
    assert host.startswith("fbcnn-") and socket.gethostname()
    stale = out / f".{host}-{dead.pid}.x.abc123.tmp.png"
    live = out / f".{host}-{os.getpid()}.x.def456.tmp.png"
    other_host = out / f".fbcnn-elsewhere-{dead.pid}.x.ghi789.tmp.png"
    users = out / ".x.tmp.png"
    for p in (stale, live, other_host, users):
        p.write_bytes(b"half a file")
    r = run(["restore", src, "--out-dir", out, *MODEL], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [live.name, other_host.name, users.name, "x.png"])
