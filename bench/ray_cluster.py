"""A Ray cluster of two nodes on this machine, loopback only, for bench/batch.py and
tests/test_ray.py: a head (`ray start --head`, 127.0.0.1) and a second node (`ray start
--address`, 127.0.0.2: the driver, which looks for a node of its own address, attaches
to the head alone), each with its own temp dir, so that each node's processes can be
found and one node killed alone. Stopped by killing exactly its processes, never by
`ray stop` (which stops every Ray of the machine).
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_LIMIT = 300   # seconds: a bound against a hung start, never a measurement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes():
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found[int(entry)] = (int(stat[1]), cmd)
    return found


def node_processes(temp_dir: str) -> dict:
    """pid -> command line of one node's processes: those naming its temp dir (its
    raylet, GCS, monitors) and all their descendants (workers rename themselves)."""
    procs = processes()
    mine = {pid for pid, (_, cmd) in procs.items() if temp_dir + "/" in cmd}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return {pid: procs[pid][1] for pid in mine}


def kill_node(temp_dir: str) -> int:
    killed = 0
    for pid in node_processes(temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


class Cluster:
    def __init__(self):
        # Short: Ray's socket paths under it must fit in 107 bytes.
        self.root = tempfile.mkdtemp(prefix="fbray", dir="/tmp")
        self.head, self.worker = self.root + "/h", self.root + "/w"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.ray = str(pathlib.Path(sys.executable).parent / "ray")
        # The nodes' workers import this checkout's core, as an installed project would be.
        self.env = {**os.environ, "PYTHONPATH": ROOT, "RAY_USAGE_STATS_ENABLED": "0"}

    def __enter__(self) -> "Cluster":
        try:
            self.start_head()
            self.start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, *args) -> None:
        r = subprocess.run([self.ray, "start", "--num-cpus", "1", "--disable-usage-stats", *args],
                           env=self.env, capture_output=True, text=True, timeout=START_LIMIT)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    def start_head(self) -> None:
        self.start("--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                   "--include-dashboard", "false", "--temp-dir", self.head)

    def start_worker(self) -> None:
        self.start("--address", self.address, "--node-ip-address", "127.0.0.2",
                   "--temp-dir", self.worker)

    def stop(self) -> None:
        for _ in range(2):   # again: a worker being started as the first pass ran
            kill_node(self.worker)
            kill_node(self.head)
        shutil.rmtree(self.root, ignore_errors=True)
