"""Run jobs in a real Krita under Xvfb, with a throwaway profile.

One KritaProfile per test session: HOME, XDG_* and TMPDIR point into a temp
folder; the plug-in (with core/frontend placed in as fbcnn_frontend, as the
installer does) and the test driver live in its pykrita folder and are enabled
in kritarc. Each run() starts Krita once with a job for the driver, enforces a
hard timeout from outside, and returns the driver's result JSON. Never run two
Kritas on one profile.

`krita_hosts()` lists the Kritas to test, each an `Editor` (chroot.py): the
host's own (5.1 on Debian 12, 5.2 on Debian 13), Krita 5.2 in the trixie chroot
on Debian 12, Krita 5.3 in the sid chroot and Krita 6 (Qt6, PyQt6) in the
experimental one. A chroot's Krita uses the host's Xvfb (its socket is
bind-mounted) and starts the worker from the host's Python, bind-mounted too.
"""
import json
import os
import pathlib
import select
import shutil
import signal
import socket
import struct
import subprocess
import time

from install import paths, placing
from tests.hosts.chroot import (HOST, SYSTEM_PATH, Editor, Place, debian_major, editors,
                                series_of)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "hosts" / "krita_driver"
PLUGINS = ("fbcnn_krita", "fbcnn_krita_driver")


class KritaError(RuntimeError):
    pass


def krita_hosts():
    """Every Krita the tests run against, oldest first; each says itself whether
    it is set up (`why_missing()`)."""
    if debian_major() >= 13:
        expected = {"5.2": HOST}
    else:
        expected = {"5.1": HOST, "5.2": Place("trixie")}
    expected.update({"5.3": Place("sid"), "6.0": Place("experimental")})
    return editors("krita", expected, oldest=(5, 1))


def why_not_available(host=None):
    """Why Krita can't run here (None when it can): the editor itself, its PyQt,
    and the host's Xvfb, which every Krita uses."""
    host = host or native_host()
    missing = host.why_missing()
    if missing:
        return missing
    if shutil.which("Xvfb") is None:
        return "Xvfb not installed (tests/hosts/setup.sh installs it)"
    pyqt = "PyQt6" if host.series.startswith("6") else "PyQt5"
    root = host.place.root or pathlib.Path("/")
    if not (root / "usr/lib/python3/dist-packages" / pyqt).is_dir():
        return f"{pyqt} is not installed in {host.place} (tests/hosts/setup.sh installs it)"
    return None


def native_host():
    """The host's own Krita (its version None when it has none)."""
    version = HOST.version("krita")
    series = ".".join(map(str, series_of(version))) if version else "native"
    return Editor("krita", series, HOST, version)


def base_env(host):
    """The environment a Krita start builds on (before the profile's variables)."""
    if host.place == HOST:
        return _inherited_env()
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _inherited_env():
    """This process's environment, cleaned for Krita."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "DISPLAY", "WAYLAND_DISPLAY",
                        "SESSION_MANAGER", "QT_QPA_PLATFORM")}
    # Krita embeds the system Python; a pyenv/venv python3 earlier on PATH makes it
    # pick up that installation's library, without PyQt5.
    env = {k: v for k, v in env.items() if not k.startswith(("PYENV", "VIRTUAL_ENV", "CONDA"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and ".pyenv" not in p and "venv" not in p and "conda" not in p]
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin"] + [p for p in path
                                                        if p not in ("/usr/bin", "/bin")])
    return env


class KritaProfile:
    """A throwaway Krita profile with the plug-in and the driver installed and enabled."""

    def __init__(self, root, host=None):
        self.root = pathlib.Path(root)
        self.host = host or native_host()
        self.home = self.root / "home"
        self.config = self.root / "config"
        self.data = self.root / "data"
        self.cache = self.root / "cache"
        self.runtime = self.root / "runtime"
        self.tmp = self.root / "tmp"
        for d in (self.home, self.config, self.data, self.cache, self.runtime, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime.chmod(0o700)
        self.pykrita = self.data / "krita" / "pykrita"
        self.runs = 0

    def install(self):
        """Place the plug-in (the installer's own placing: the package with fbcnn_frontend
        and the manual in it, its .desktop) and copy the driver in; enable both plug-ins."""
        self.pykrita.mkdir(parents=True, exist_ok=True)
        placing.place_krita_plugin(paths.plugin_sources(), self.pykrita)
        dest = self.pykrita / "fbcnn_krita_driver"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(DRIVER / "fbcnn_krita_driver", dest, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(DRIVER / "fbcnn_krita_driver.desktop", self.pykrita / "fbcnn_krita_driver.desktop")
        self.enable()

    def enable(self):
        """Set enable_NAME=true under [python] in kritarc (Krita rewrites the file on exit)."""
        kritarc = self.config / "kritarc"
        lines = kritarc.read_text().splitlines() if kritarc.exists() else []
        wanted = {f"enable_{name}=true" for name in PLUGINS}
        lines = [ln for ln in lines if ln.split("=")[0] not in
                 {w.split("=")[0] for w in wanted}]
        if "[python]" not in lines:
            lines += ["", "[python]"]
        at = lines.index("[python]") + 1
        lines[at:at] = sorted(wanted)
        kritarc.write_text("\n".join(lines) + "\n")

    def env(self, extra):
        env = base_env(self.host)
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.config),
                   XDG_DATA_HOME=str(self.data), XDG_CACHE_HOME=str(self.cache),
                   XDG_RUNTIME_DIR=str(self.runtime), TMPDIR=str(self.tmp),
                   QT_QPA_PLATFORM="xcb")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, steps, timeout=600, env=None, binds=()):
        """Start Krita once, let the driver run steps, return its result dict.

        The result has "steps" (one record per step id), "exceptions" (Python
        tracebacks inside Krita), "finished", "krita_version", and the harness
        adds "host", "wall_s", "returncode" and "log" (Krita's stdout+stderr
        file). `binds`: folders outside the profile that the steps use (needed
        when the host is the chroot).
        """
        self.runs += 1
        while (self.root / f"run{self.runs}").exists():  # another profile object's run
            self.runs += 1
        run_dir = self.root / f"run{self.runs}"
        run_dir.mkdir()
        result_path = run_dir / "result.json"
        job_path = run_dir / "job.json"
        job_path.write_text(json.dumps({"result": str(result_path), "steps": steps}, indent=1))
        self.enable()
        log_path = run_dir / "krita.log"
        started = time.monotonic()
        launched = time.time()
        with open(log_path, "wb") as log, Xvfb(log) as display:
            process_env = self.env(dict(env or {}, DISPLAY=display,
                                        FBCNN_KRITA_DRIVER_JOB=job_path))
            argv, popen_env = self.host.place.command(["krita", "--nosplash"], process_env,
                                                      [self.root, "/tmp/.X11-unix", *binds])
            krita = subprocess.Popen(argv, env=popen_env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.tmp,
                                     # Own process group: a timeout kills Krita and
                                     # its worker together.
                                     preexec_fn=os.setpgrp)
            try:
                returncode = krita.wait(timeout)
            except subprocess.TimeoutExpired:
                returncode = "timeout"
            # Anything Krita started (the worker) must be gone soon after it quits.
            leftover = _group_alive(krita.pid, grace=5)
            _kill_group(krita)
        result = json.loads(result_path.read_text()) if result_path.exists() else {
            "steps": {}, "exceptions": [], "finished": False}
        result.update(host=self.host.id, wall_s=round(time.monotonic() - started, 3),
                      returncode=returncode,
                      leftover_processes=leftover, log=str(log_path))
        if "driver_started" in result:  # Krita's start-up, until the driver's first step
            result["startup_s"] = round(result["driver_started"] - launched, 3)
        if returncode == "timeout":
            result["error"] = f"Krita was killed after {timeout} s; log: {log_path}"
        return result


class Xvfb:
    """An Xvfb server on a display number it picks itself (-displayfd)."""

    def __init__(self, log):
        self.log = log
        self.process = None

    def __enter__(self):
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1200x24",
             # -noreset: without it the server resets when its last client leaves
             # (our readiness probe), and Krita connecting then is refused.
             "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,), stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        os.close(write_fd)
        number = b""
        deadline = time.monotonic() + 30
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while not number.endswith(b"\n"):
                ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    self.__exit__()
                    raise KritaError("Xvfb did not report a display within 30 s")
                chunk = pipe.read(1)
                if not chunk:
                    self.__exit__()
                    raise KritaError("Xvfb exited before reporting a display")
                number += chunk
        number = int(number.decode().strip())
        _wait_for_x(number, deadline)
        return f":{number}"

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_for_x(number, deadline):
    """Wait until the server completes an X11 handshake.

    -displayfd reports the number early; a client that connects right then can
    be refused ("could not connect to display"), so Krita would abort.
    """
    path = f"/tmp/.X11-unix/X{number}"
    # Connection setup: little-endian, protocol 11.0, no authorization.
    request = struct.pack("<BxHHHH2x", ord("l"), 11, 0, 0, 0)
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(request)
                if sock.recv(8)[:1] == b"\x01":  # 1: Success
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise KritaError(f"the X server on :{number} does not accept connections")
        time.sleep(0.1)


def _group_alive(pgid, grace):
    """Whether a live (not zombie) process of the group remains after grace seconds."""
    deadline = time.monotonic() + grace
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False


def _group_members(pgid):
    members = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def _kill_group(process):
    """Kill Krita and anything it started (the worker), by process group."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
