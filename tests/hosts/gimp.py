"""Drive a real GIMP 3 from the tests: each GIMP build this machine has (3.0 and
3.2), on the host or in a chroot (tests/hosts/chroot.py) that setup.sh fills.

The pieces:
- `gimp_hosts()` lists the GIMPs to test, each an `Editor` that knows its
  version, test id and place;
- `make_profile()` builds a throw-away GIMP profile with the plug-in installed
  the way the installer does it (plug-in folder + the fbcnn_frontend package in it);
- `run_batch()` runs gimp-console-3 (or gimp-3 under Xvfb) on one
  python-fu-eval driver file and returns the completed process.

See docs/editors-headless.md for why each detail is here.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import installer
from tests.hosts.chroot import HOST, SYSTEM_PATH, Editor, Place, debian_major, editors

REPO = pathlib.Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "gimp_plugin" / "fbcnn_gimp"
FRONTEND = REPO / "core" / "frontend"
DRIVER = REPO / "tests" / "hosts" / "gimp_driver.py"


def gimp_hosts() -> list:
    """GIMP 3.0 (the host's own on Debian 13, else the trixie chroot's) and 3.2
    (the sid chroot's), plus any other GIMP 3 that is installed."""
    expected = {"3.0": HOST if debian_major() >= 13 else Place("trixie"),
                "3.2": Place("sid")}
    return editors("gimp", expected, oldest=(3, 0))


def make_profile(tmp: pathlib.Path, *, plugin_src: pathlib.Path = PLUGIN_DIR,
                 python: str | None = None,
                 core_path: str | None = None) -> dict:
    """A fresh GIMP profile with the plug-in installed as the installer does it.

    Returns the environment the plug-in needs (profile, frontend config, HOME).
    """
    tmp = pathlib.Path(tmp)
    profile = tmp / "gimp-profile"
    dest = profile / "plug-ins" / "fbcnn_gimp"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(plugin_src, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.chmod(dest / "fbcnn_gimp.py", 0o755)
    installer.place_frontend(FRONTEND, dest)
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
    # gimp-3 and gimp-console-3 exist in 3.0 and 3.2; the "-3.0" names only in 3.0.
    exe = "gimp-3" if gui else "gimp-console-3"
    args = [exe, "-n", "--batch-interpreter", "python-fu-eval", "-b", code, "--quit"]
    if not gui:
        args.insert(1, "-i")
    else:
        args[1:1] = ["--no-splash", "-d", "-f"]
    return args


def run_batch(host: Editor, driver: pathlib.Path, env: dict, *, binds=(),
              gui: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one batch driver in GIMP 3 and return the finished process.

    `env` is the whole environment (plus PATH and LANG); `binds` are host folders
    that must be visible at the same path inside a chroot (the driver's folder,
    the profile and the worker's Python are always added). `gui` runs gimp-3
    under a private Xvfb for dialog screenshots.
    """
    full_env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    full_env.update(env)
    # `timeout` inside the chroot too: it kills GIMP's whole process group.
    cmd = ["timeout", "-k", "10", str(int(timeout))] + _batch_args(pathlib.Path(driver), gui)
    if gui:
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    paths = [pathlib.Path(driver).resolve().parent, *binds]
    for key in ("GIMP3_DIRECTORY", "FBCNN_FRONTEND_CONFIG", "HOME"):
        if key in env:
            paths.append(pathlib.Path(env[key]).parent)
    argv, popen_env = host.place.command(["/usr/bin/env", "-i"] + [
        f"{k}={v}" for k, v in full_env.items()] + cmd, {}, paths)
    return subprocess.run(argv, env=popen_env or None, capture_output=True, text=True,
                          timeout=timeout + 60)


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


def run_jobs(host: Editor, tmp: pathlib.Path, jobs: list, env: dict, *, gui=False,
             timeout=900, binds=()) -> BatchRun:
    """Run many driver jobs in one GIMP start (see gimp_driver.py for the steps)."""
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
