"""Faults that need a whole process: a run killed in the middle, a 400 MP picture's
peak memory, the files a run leaves. The other fault cases (bad folders, existing
outputs, broken weights, unsafe pickles, a full disk, offline downloads, worker frames)
sit beside the code they test, in test_cli.py, test_weights.py and test_worker.py.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from core.network import Config, build
from tests.test_cli import ROOT, jpeg, model_file  # noqa: F401 - model_file is a fixture


def cli(*args) -> list:
    return [sys.executable, "-m", "core", "restore", *map(str, args), "--qf", "50", "--device", "cpu"]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads CPU time from /proc")
def test_a_run_killed_mid_file_leaves_the_finished_files_whole_and_nothing_else(tmp_path, model_file):
    small = jpeg(tmp_path / "a-small.jpg")
    big = tmp_path / "b-big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (2048, 2048, 3), np.uint8)).save(big)
    out = tmp_path / "out"
    env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cli(small, big, "--out-dir", out, "--model", model_file, "--tile", "256"),
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:       # a line per file, since stderr is a pipe
            if line.startswith("fbcnn: restoring 2/2"):
                break
        # Killed once it has computed a while on the big file (CPU time, not wall time:
        # the same point on a loaded machine).
        start, deadline = cpu_seconds(proc.pid), time.monotonic() + 300
        while cpu_seconds(proc.pid) < start + 1.0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed; make b-big bigger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.stderr.close()
    assert sorted(os.listdir(out)) == ["a-small.png"]       # no temporary or partial file
    with Image.open(out / "a-small.png") as im:
        im.load()                                            # whole, not cut
        assert im.size == (64, 48)


def test_results_are_ordinary_files_readable_as_the_umask_says(tmp_path, model_file):
    """mkstemp's private 0600 must not reach the result (a web server or another user
    could not read it)."""
    src = jpeg(tmp_path / "p.jpg")
    env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")}
    r = subprocess.run(["sh", "-c", 'umask 027 && exec "$@"', "sh",
                        *cli(src, "-o", tmp_path / "p.png", "--model", model_file)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o640


# A model as cheap as the engine's tiling allows: the bound is about the picture's
# arrays, not the network, and the compact model would take 5 minutes at 400 MP here.
MICRO = Config(in_nc=3, out_nc=3, nc=(4, 4, 4, 4), nb=1, qf_nc=4, residual=True)


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="reads the child's peak RSS with wait4")
def test_a_400_megapixel_tiff_stays_within_the_memory_bound(tmp_path):
    """The bound of issue #18: 1.5 GB + 8 bytes a pixel for 8-bit RGB (input and output
    at their own depth plus a little), here through the whole CLI: decode, restore,
    encode. The kernel's own peak for the child (wait4's ru_maxrss), not a sample."""
    torch.manual_seed(0)
    net = build(MICRO)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.1)
    model = tmp_path / "micro.pth"
    torch.save(net.state_dict(), model)
    h, w = 16000, 25000
    img = np.empty((h, w, 3), np.uint8)
    row = (128 + 60 * np.sin(np.arange(w) / 17.0)).astype(np.uint8)
    for y in range(0, h, 1000):        # a picture with content, made band by band
        img[y:y + 1000] = row[None, :, None] + (np.arange(1000)[:, None, None] % 7).astype(np.uint8)
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, img)
    del img
    dst = tmp_path / "big-restored.tif"
    env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cli(src, "-o", dst, "--model", model), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, stderr
    peak_mb = usage.ru_maxrss / 1024
    bound_mb = 1500 + 8 * h * w / 1e6
    assert peak_mb <= bound_mb, f"peak RSS {peak_mb:.0f} MB over the bound {bound_mb:.0f} MB"
    with tifffile.TiffFile(dst) as tif:
        assert tif.pages[0].shape == (h, w, 3) and tif.pages[0].dtype == np.uint8
    print(f"400 MP TIFF through the CLI: peak RSS {peak_mb:.0f} MB, bound {bound_mb:.0f} MB")
