"""`fbcnn restore --jobs N` (issue #20 item 3): the real command with worker processes,
interrupted by SIGINT and killed by SIGKILL in the middle of a set; nothing partial
stays in the output folder and a re-run does exactly the rest.

"In the middle" is found by progress, not by time: the signal goes once the report
(flushed a line per finished input) has two lines, with dozens of inputs still to do.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import ROOT, run
from tests.test_archive import MODEL, files_under

COUNT = 48


# Big enough that the 46 inputs left when the signal goes take seconds of compute,
# against the milliseconds it takes to deliver it, even on a loaded machine (at 192 px
# a loaded CI host once finished them all first).
def pictures(folder, count=COUNT, size=320):
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, (x + y) // 2], axis=2).astype(np.float64)
    for i in range(count):
        sub = folder / f"set{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(sub / f"p{i:02d}.jpg", quality=20 + i % 30)
    return folder


def statuses(report) -> dict:
    recs = [json.loads(ln) for ln in report.read_text().splitlines()]
    assert len(recs) == len({r["path"] for r in recs}), "an input reported twice"
    return {r["path"]: r["status"] for r in recs}


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int16)


def test_jobs_2_writes_what_one_process_writes(tmp_path):
    src = pictures(tmp_path / "in", count=8)
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run(["restore", src, "-r", "--out-dir", one, "--jobs", "1", *MODEL], tmp_path)
    r2 = run(["restore", src, "-r", "--out-dir", two, "--jobs", "2", "--report",
              tmp_path / "r.jsonl", *MODEL], tmp_path)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert files_under(one) == files_under(two) and len(files_under(one)) == 8
    for rel in files_under(one):
        # Each worker has 1 of the 2 threads here, the single process both: the same
        # network and QF; at most 1 level apart where the runtime's sums fall differently.
        assert np.abs(pixels(one / rel) - pixels(two / rel)).max() <= 1, rel
    assert set(statuses(tmp_path / "r.jsonl").values()) == {"done"}
    assert "8 written, 0 skipped, 0 failed" in r2.stderr


def workers_of(pid: int) -> list:
    """The pool's worker processes of `pid` (multiprocessing's spawned children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def wait_gone(pids, limit=120.0) -> None:
    deadline = time.monotonic() + limit   # a bound against hanging, not a measurement
    while any(os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]
              for p in pids if os.path.exists(f"/proc/{p}/stat")):
        assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
        time.sleep(0.1)


def start_and_stop_midway(tmp_path, src, out, report, sig):
    cmd = [sys.executable, "-m", "core", "restore", str(src), "-r", "--out-dir", str(out),
           "--jobs", "2", "--report", str(report), *MODEL]
    env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")}
    # As from a terminal: SIGINT at its default, so that Python turns it into
    # KeyboardInterrupt. A test run started in the background of a script (`cmd &`)
    # inherits SIGINT ignored, and then the command rightly ignores Ctrl-C.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (report.exists() and len(report.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no progress in 5 minutes"
            time.sleep(0.02)
        workers = workers_of(proc.pid)
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=120)[1]
        wait_gone(workers)
    finally:
        proc.kill()
    return proc.returncode, stderr, workers


def assert_nothing_partial(out) -> list:
    names = files_under(out)
    assert not [n for n in names if os.path.basename(n).startswith(".")], names
    for rel in names:
        with Image.open(out / rel) as im:
            im.load()                                         # whole, not cut
    return names


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_jobs_run_stopped_midway_leaves_whole_files_and_a_rerun_does_the_rest(tmp_path, sig):
    src = pictures(tmp_path / "in")
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    rc, stderr, workers = start_and_stop_midway(tmp_path, src, out, report, sig)
    assert len(workers) == 2, "expected two worker processes"
    written = assert_nothing_partial(out)
    assert 2 <= len(written) < COUNT, f"{len(written)} written: the run was not stopped midway"
    first = statuses(report)
    done = {p for p, s in first.items() if s == "done"}
    assert {os.path.relpath(p, src) for p in done} <= {w[:-4] + ".jpg" for w in written}
    if sig == signal.SIGINT:
        assert rc == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
        # Every input is in the report: done, or not done (none was started and skipped).
        assert len(first) == COUNT and set(first.values()) <= {"done", "not-done"}
        assert "not done" in stderr
    else:
        assert rc == -signal.SIGKILL
    again = tmp_path / "again.jsonl"
    r = run(["restore", src, "-r", "--out-dir", out, "--jobs", "2", "--report", again, *MODEL],
            tmp_path)
    assert r.returncode == 0, r.stderr
    second = statuses(again)
    assert sum(s == "skipped" for s in second.values()) == len(written)
    assert sum(s == "done" for s in second.values()) == COUNT - len(written)   # exactly the rest
    assert len(assert_nothing_partial(out)) == COUNT
