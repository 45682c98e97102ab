"""Drive a real GIMP 3 from the tests: natively, or inside the shared Debian 13
chroot (tests/hosts/chroot.py) that tests/hosts/setup_gimp.sh fills on Debian 12.

The pieces:
- `find_gimp()` says how GIMP 3 can be run here (or None);
- `make_profile()` builds a throw-away GIMP profile with the plug-in installed
  the way the installer does it (plug-in folder + fbcnn_client.py next to it);
- `run_batch()` runs gimp-console-3.0 (or gimp-3.0 under Xvfb) on one
  python-fu-eval driver file and returns the completed process.

See ../shared/notes/gimp3-headless.md for why each detail is here.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

from tests.hosts import chroot
from tests.hosts.chroot import SYSTEM_PATH, chroot_command, python_prefixes

REPO = pathlib.Path(__file__).resolve().parents[2]
SETUP = REPO / "tests" / "hosts" / "setup_gimp.sh"
PLUGIN_DIR = REPO / "gimp_plugin" / "fbcnn_gimp"
CLIENT = REPO / "core" / "client.py"


class GimpHost:
    """Where GIMP 3 lives: `mode` is "native" or "chroot" (then `root` is set)."""

    def __init__(self, mode: str, root: pathlib.Path | None = None):
        self.mode = mode
        self.root = root

    def __repr__(self):
        return f"GimpHost({self.mode!r}, {str(self.root) if self.root else None!r})"


def find_gimp() -> GimpHost | None:
    """GIMP 3 as setup_gimp.sh left it, without installing anything."""
    forced = os.environ.get("FBCNN_GIMP_SETUP")
    if forced != "chroot" and shutil.which("gimp-console-3.0", path=SYSTEM_PATH):
        return GimpHost("native")
    if forced != "native" and chroot.ready("gimp"):
        return GimpHost("chroot", chroot.root())
    return None


def make_profile(tmp: pathlib.Path, *, plugin_src: pathlib.Path = PLUGIN_DIR,
                 client_src: pathlib.Path = CLIENT, python: str | None = None,
                 core_path: str | None = None) -> dict:
    """A fresh GIMP profile with the plug-in installed as the installer does it.

    Returns the environment the plug-in needs (profile, frontend config, HOME).
    """
    tmp = pathlib.Path(tmp)
    profile = tmp / "gimp-profile"
    dest = profile / "plug-ins" / "fbcnn_gimp"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plugin_src / "fbcnn_gimp.py", dest / "fbcnn_gimp.py")
    os.chmod(dest / "fbcnn_gimp.py", 0o755)
    if client_src.is_file():
        shutil.copy2(client_src, dest / "fbcnn_client.py")
    # GIMP starts .py plug-ins through their shebang; pin the system python3,
    # which has gi, whatever python3 comes first in PATH.
    interp = profile / "interpreters"
    interp.mkdir(parents=True, exist_ok=True)
    (interp / "python3.interp").write_text("python3=/usr/bin/python3\n")
    # No first-run welcome dialog over the screenshot.
    (profile / "gimprc").write_text("(show-welcome-dialog no)\n")
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    frontend = tmp / "frontend.json"
    frontend.write_text(json.dumps({
        "python": python or sys.executable,
        "core_path": core_path or str(REPO),
    }))
    return {
        "GIMP3_DIRECTORY": str(profile),
        "FBCNN_FRONTEND_CONFIG": str(frontend),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }


def _batch_args(driver: pathlib.Path, gui: bool) -> list[str]:
    code = f"exec(open({str(driver)!r}).read())"
    exe = "gimp-3.0" if gui else "gimp-console-3.0"
    args = [exe, "-n", "--batch-interpreter", "python-fu-eval", "-b", code, "--quit"]
    if not gui:
        args.insert(1, "-i")
    else:
        args[1:1] = ["--no-splash", "-d", "-f"]
    return args


def run_batch(host: GimpHost, driver: pathlib.Path, env: dict, *, binds=(),
              gui: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one batch driver in GIMP 3 and return the finished process.

    `env` is the whole environment (plus PATH and LANG); `binds` are host folders
    that must be visible at the same path inside the chroot (the repo, the tmp
    folder, the worker's Python are always added). `gui` runs gimp-3.0 under a
    private Xvfb for dialog screenshots.
    """
    full_env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    full_env.update(env)
    # `timeout` inside the chroot too: it kills GIMP's whole process group.
    cmd = ["timeout", "-k", "10", str(int(timeout))] + _batch_args(pathlib.Path(driver), gui)
    if gui:
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    if host.mode == "native":
        return subprocess.run(["/usr/bin/env", "-i"]
                              + [f"{k}={v}" for k, v in full_env.items()] + cmd,
                              capture_output=True, text=True, timeout=timeout + 60)
    paths = [str(REPO), str(pathlib.Path(driver).resolve().parent)]
    paths += [str(b) for b in binds] + python_prefixes()
    for key in ("GIMP3_DIRECTORY", "FBCNN_FRONTEND_CONFIG", "HOME"):
        if key in env:
            paths.append(str(pathlib.Path(env[key]).parent))
    return subprocess.run(chroot_command(host.root, paths, full_env, cmd),
                          capture_output=True, text=True, timeout=timeout + 60)


DRIVER = REPO / "tests" / "hosts" / "gimp_driver.py"


class BatchRun:
    """What one GIMP start did: per-job step records, the process, its time."""

    def __init__(self, results, proc, seconds):
        self.results, self.proc, self.seconds = results, proc, seconds

    def job(self, name) -> list:
        if name not in self.results:
            raise AssertionError(f"job {name!r} did not run; GIMP said:\n{self.log()}")
        return self.results[name]

    def step(self, name, op, index=0) -> dict:
        """The `index`-th record of step `op` in job `name`, failing loudly on exceptions."""
        records = self.job(name)
        for r in records:
            if "exception" in r:
                raise AssertionError(f"job {name!r} step {r['op']} raised:\n{r['exception']}"
                                     f"\nGIMP said:\n{self.log()}")
        found = [r for r in records if r["op"] == op]
        return found[index]

    def log(self) -> str:
        return (self.proc.stdout[-4000:] + "\n" + self.proc.stderr[-8000:]).strip()


def run_jobs(host: GimpHost, tmp: pathlib.Path, jobs: list, env: dict, *, gui=False,
             timeout=900, binds=()) -> BatchRun:
    """Run many driver jobs in one GIMP start (see gimp_driver.py for the steps)."""
    import time
    tmp = pathlib.Path(tmp)
    jobs_path, results_path = tmp / "jobs.json", tmp / "results.json"
    jobs_path.write_text(json.dumps(jobs))
    if results_path.exists():
        results_path.unlink()
    driver = tmp / "gimp_driver.py"
    shutil.copy2(DRIVER, driver)
    env = dict(env, FBCNN_GIMP_JOBS=str(jobs_path), FBCNN_GIMP_RESULTS=str(results_path))
    started = time.monotonic()
    proc = run_batch(host, driver, env, gui=gui, timeout=timeout, binds=binds)
    seconds = time.monotonic() - started
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return BatchRun(results, proc, seconds)
