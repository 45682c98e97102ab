"""`fbcnn restore --ray` (issue #20 item 4) on a real Ray cluster of two nodes on this
machine, on loopback only: a head (`ray start --head` on 127.0.0.1) and a second node
(`ray start --address`, on 127.0.0.2, so the driver attaches to the head alone), one
CPU each. A job over a few dozen small pictures (as file:// URIs) is compared with the
single-process command (at most 1 level apart: an actor has 1 thread, the single process 2); then the
same job while the second node is killed (its raylet, workers and monitor, SIGKILL)
once the report shows progress and that node is working: the job completes, every
output is right, every input is reported once, and no temporary file is left. And an
input whose actor is killed each of the 3 times it starts it is reported failed while
the others are done.

The cluster is stopped at the end of the module, also when a test fails. Without Ray
these tests are skipped and say so loudly; the test that --ray without Ray gives a
clear error runs everywhere.
"""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from core import ray_job
from bench.ray_cluster import Cluster, kill_node, node_processes
from tests.test_archive import files_under
from tests.test_cli import ROOT, run
from tests.test_jobs import pictures, pixels

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="RAY IS NOT INSTALLED: the Ray cluster tests did NOT run "
                         '(pip install ".[cluster]"; tests/run.sh installs it)')
COUNT = 48
MODEL = ["--model", "compact", "--device", "cpu", "--qf", "30"]
HANG = 300   # seconds: a bound against a hung job, never a measurement


# ---------------------------------------------------------------- without a cluster

def test_ray_without_ray_says_how_to_install_it_before_anything(tmp_path):
    src = pictures(tmp_path / "in", count=2, size=64)
    out = tmp_path / "out"
    r = run(["restore", "--ray", src, "-r", "--out-dir", out, *MODEL], tmp_path,
            prelude="import sys\nsys.modules['ray'] = None   # as if not installed")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"fbcnn: error: {ray_job.INSTALL}"]
    assert 'pip install ".[cluster]"' in r.stderr
    assert not out.exists()   # nothing planned, let alone computed


@pytest.mark.parametrize("argv, expected", [
    (["restore", "--ray", "in", "--out-dir", "o"], ["restore", "--ray=", "in", "--out-dir", "o"]),
    (["restore", "--ray", "head:6379", "in"], ["restore", "--ray", "head:6379", "in"]),
    (["restore", "--ray", "ray://10.0.0.1:10001", "in"], ["restore", "--ray", "ray://10.0.0.1:10001", "in"]),
    (["restore", "in", "--ray"], ["restore", "in", "--ray="]),
    (["restore", "--ray", "-r", "in"], ["restore", "--ray=", "-r", "in"]),
    (["restore", "--ray=auto", "in"], ["restore", "--ray=auto", "in"]),
])
def test_ray_takes_a_following_word_as_its_address_only_if_it_is_one(argv, expected):
    assert ray_job.split_address(argv) == expected


def test_the_actor_pool_one_per_gpu_else_one_per_node_with_the_smallest_nodes_cores():
    assert ray_job.pool_shape([{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 1}], None) == (3, {"num_gpus": 1}, None)
    assert ray_job.pool_shape([{"CPU": 16}, {"CPU": 4}], None) == (2, {"num_cpus": 4}, 4)
    assert ray_job.pool_shape([{"CPU": 16}, {"CPU": 4}], 10) == (10, {"num_cpus": 2}, 2)
    assert ray_job.pool_shape([{"CPU": 1}, {"CPU": 1}], None) == (2, {"num_cpus": 1}, 1)


@needs_ray
def test_ray_at_an_address_where_nothing_listens_stops_at_once_and_says_so(tmp_path):
    src = pictures(tmp_path / "in", count=2, size=64)
    with socket.socket() as s:   # a port of this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    report = tmp_path / "r.jsonl"
    r = run(["restore", "--ray", address, src, "-r", "--out-dir", tmp_path / "out",
             "--report", report, *MODEL], tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"fbcnn: error: cannot reach the Ray cluster at {address}: nothing answers" in r.stderr
    assert "Traceback" not in r.stderr
    assert {json.loads(ln)["status"] for ln in report.read_text().splitlines()} == {"not-done"}


# ---------------------------------------------------------------- the cluster

@pytest.fixture(scope="module")
def cluster():
    if not HAVE_RAY:
        pytest.skip("RAY IS NOT INSTALLED")
    c = Cluster()
    try:
        c.start_head()
        c.start_worker()
        yield c
    finally:
        c.stop()
        left = node_processes(c.root)
        assert not left, f"Ray processes outlived the cluster: {left}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The set and what one process writes for it."""
    tmp = tmp_path_factory.mktemp("ref")
    src = pictures(tmp / "in", count=COUNT, size=96)
    one = tmp / "one"
    r = run(["restore", src, "-r", "--out-dir", one, *MODEL], tmp)
    assert r.returncode == 0, r.stderr
    return src, one


def report_of(path) -> dict:
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]
    paths = [r["path"] for r in recs]
    assert len(paths) == len(set(paths)), "an input reported twice"
    return {r["path"]: r for r in recs}


def assert_same_as_one_process(out, one) -> None:
    names = files_under(out)
    assert not [n for n in names if os.path.basename(n).startswith(".")], names   # no temporaries
    assert names == files_under(one) and len(names) == COUNT
    for rel in names:
        assert np.abs(pixels(out / rel) - pixels(one / rel)).max() <= 1, rel


@needs_ray
def test_a_ray_job_writes_what_one_process_writes_and_reports_each_input_once(cluster, reference, tmp_path):
    """Inputs and outputs as file:// URIs: the actors read and write through pyarrow."""
    src, one = reference
    with_bad = tmp_path / "in"
    shutil.copytree(src, with_bad)
    (with_bad / "set1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG cut short")
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    r = run(["restore", "--ray", cluster.address, "file://" + str(with_bad), "-r",
             "--out-dir", "file://" + str(out), "--report", report, *MODEL], tmp_path)
    assert r.returncode == 1, r.stderr                       # the broken JPEG, only
    assert f"{COUNT} written, 0 skipped, 1 failed" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    recs = report_of(report)
    assert len(recs) == COUNT + 1
    broken = recs.pop("file://" + str(with_bad / "set1" / "broken.jpg"))
    assert broken["status"] == "failed" and broken["error"] and ray_job.DIED not in broken["error"]
    assert {rec["status"] for rec in recs.values()} == {"done"}
    assert {(rec["model"], rec["device"], rec["qf"]) for rec in recs.values()} == {("compact", "cpu", 30)}
    for path, rec in recs.items():
        rel = os.path.relpath(path[len("file://"):], with_bad)
        assert rec["output"] == "file://" + str(out / rel)[:-4] + ".png"
    assert_same_as_one_process(out, one)


def holders(fifo) -> list:
    """The other processes that have the named pipe open."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if any(os.readlink(f"/proc/{entry}/fd/{fd}") == str(fifo)
                       for fd in os.listdir(f"/proc/{entry}/fd")):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def wait_for_a_reader(fifo, deadline) -> int:
    """A write end of the FIFO once a reader is blocked opening it (an actor started
    the poisoned input): a non-blocking open for writing fails until then."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert time.monotonic() < deadline, "no actor started the poisoned input"
            time.sleep(0.02)


@needs_ray
def test_an_input_whose_worker_dies_three_times_is_reported_failed_and_the_job_finishes(cluster, tmp_path):
    """The poisoned input is a named pipe: the actor that starts it blocks opening it,
    and the test, seeing a reader there, kills that actor (SIGKILL, as the system's
    out-of-memory killer would). One actor (--jobs 1), so no other input is started
    when it dies. Ray restarts it and sends the input again; the fourth start is
    answered failed and the other inputs are done."""
    src = pictures(tmp_path / "in", count=4, size=64)
    fifo = src / "set0" / "poison.jpg"
    os.mkfifo(fifo)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "core", "restore", "--ray", cluster.address, str(src), "-r",
           "--out-dir", str(out), "--report", str(report), "--jobs", "1", *MODEL]
    proc, log = start_driver(cmd, tmp_path)
    try:
        deadline = time.monotonic() + HANG
        for _ in range(ray_job.TRIES):
            writer = wait_for_a_reader(fifo, deadline)
            while not (readers := holders(fifo)):   # its open returns as ours does
                assert time.monotonic() < deadline, "the reader never opened the pipe"
            assert all(node_processes(cluster.root).get(pid, "").startswith("ray::MapWorker")
                       for pid in readers), readers
            for pid in readers:
                os.kill(pid, signal.SIGKILL)
            while holders(fifo):   # all its threads gone, not only its first one
                assert time.monotonic() < deadline, "the killed actor lives on"
                time.sleep(0.02)
            os.close(writer)
        proc.wait(timeout=HANG)
        stderr = log.read_text()
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "4 written, 0 skipped, 1 failed" in stderr, stderr
    recs = report_of(report)
    assert recs.pop(str(fifo))["error"] == ray_job.DIED
    assert len(recs) == 4 and {rec["status"] for rec in recs.values()} == {"done"}


def start_driver(cmd, tmp_path):
    """The command in the background, its stderr to a file (a pipe nobody reads while
    the test watches could fill and stop it)."""
    log = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    return proc, log


def first_inodes(out, inodes: dict) -> None:
    for rel in files_under(out) if out.exists() else []:
        if not os.path.basename(rel).startswith("."):
            try:
                inodes.setdefault(rel, os.stat(out / rel).st_ino)
            except FileNotFoundError:
                pass


def worker_node_is_restoring(cluster) -> bool:
    return any(cmd.startswith("ray::MapWorker") for cmd in node_processes(cluster.worker).values())


@needs_ray
def test_a_ray_job_survives_the_loss_of_a_node_midway(cluster, reference, tmp_path):
    src, one = reference
    if not node_processes(cluster.worker):   # the module's first test may have run alone
        cluster.start_worker()
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "core", "restore", "--ray", cluster.address, str(src), "-r",
           "--out-dir", str(out), "--report", str(report), *MODEL]
    proc, log = start_driver(cmd, tmp_path)
    inodes = {}   # each output's inode when first seen: a second write would replace it
    try:
        deadline = time.monotonic() + HANG
        # Midway by progress: some inputs reported, and the second node at work.
        while not (report.exists() and len(report.read_text().splitlines()) >= 3
                   and worker_node_is_restoring(cluster)):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no progress on both nodes in 5 minutes"
            time.sleep(0.02)
        assert kill_node(cluster.worker) >= 2
        at_kill = len(report.read_text().splitlines())
        while proc.poll() is None:
            first_inodes(out, inodes)
            assert time.monotonic() < deadline, "the job did not finish in 5 minutes"
            time.sleep(0.05)
        stderr = log.read_text()
    finally:
        proc.kill()
    assert at_kill < COUNT, "the job had finished before the node was killed"
    assert proc.returncode == 0, stderr
    assert f"{COUNT} written, 0 skipped, 0 failed" in stderr, stderr
    recs = report_of(report)                                 # each input once: never twice
    assert len(recs) == COUNT and {rec["status"] for rec in recs.values()} == {"done"}
    assert_same_as_one_process(out, one)
    assert inodes and all(os.stat(out / rel).st_ino == ino for rel, ino in inodes.items()), \
        "an output was written again after it was first seen"
