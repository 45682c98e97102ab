"""What the user sees, and the child programs the installer runs: captured (their
output is read) or shown (pip and downloads stream to the terminal)."""
from __future__ import annotations

import json
import os
import subprocess


def say(msg: str = "") -> None:
    print(msg, flush=True)


def step(msg: str) -> None:
    say(f"\n==> {msg}")


def clean_env(extra: dict | None = None) -> dict:
    """The environment for child Pythons: no PYTHONPATH/PYTHONHOME leaking in (Krita,
    a dev shell) that could make the venv import the wrong core or stdlib."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra or {})
    return env


def run_capture(cmd, timeout: float = 60, env=None, cwd=None):
    """(returncode, stdout+stderr text); (None, reason) when it cannot run at all."""
    try:
        p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=env if env is not None else clean_env(), cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def run_shown(cmd, env=None, cwd=None) -> int:
    """Run with output streaming to the user's terminal (pip and download progress)."""
    say("    $ " + " ".join(str(c) for c in cmd))
    try:
        return subprocess.call([str(c) for c in cmd], env=env if env is not None else clean_env(),
                               cwd=cwd)
    except OSError as e:
        say(f"    cannot run {cmd[0]}: {e}")
        return 127


def last_json_line(text: str):
    """The last line of a child's output that parses as a JSON object (logs may precede it)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None
