"""Talk to the FBCNN worker (``python -m core.worker``) from an editor's Python.

Standard library only, and nothing from ``core`` outside this package: the installer
copies the package into the GIMP and Krita plug-in folders as ``fbcnn_frontend``,
where numpy and torch do not exist. Keep it working on Python 3.9 to 3.13.
"""
from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time

# Re-exported: a plug-in needs only `client` for the kinds and the pixel descriptor.
from .child import WorkerProcess
from .protocol import (NOT_CONFIGURED, PROTOCOL_VERSION, TIMEOUT,  # noqa: F401
                       VERSION_MISMATCH, WORKER_DIED, frame_nbytes, pixel_format)



class WorkerError(Exception):
    """A failed call. ``kind`` is one of the worker's error kinds or a client one."""

    def __init__(self, kind: str, message: str, stderr_tail: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.stderr_tail = stderr_tail

    def __str__(self):
        if self.stderr_tail:
            return f"{self.message}\n--- worker stderr (last lines) ---\n{self.stderr_tail}"
        return self.message


# ---------------------------------------------------------------- configuration

def config_path() -> pathlib.Path:
    """Where the installer writes frontend.json; FBCNN_FRONTEND_CONFIG overrides."""
    env = os.environ.get("FBCNN_FRONTEND_CONFIG")
    if env:
        return pathlib.Path(env)
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(pathlib.Path.home() / "AppData" / "Roaming")
        return pathlib.Path(base) / "fbcnn" / "frontend.json"
    if sys.platform == "darwin":
        return pathlib.Path.home() / "Library" / "Application Support" / "fbcnn" / "frontend.json"
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = str(pathlib.Path.home() / ".config")
    return pathlib.Path(base) / "fbcnn" / "frontend.json"


_SETUP_HINT = ("Run `python installer.py` from the FBCNN folder (it sets up the Python "
               "that runs the network), then restart the editor.")


def load_config(path=None) -> dict:
    """The installer's frontend.json, or WorkerError(not-configured) saying what to do."""
    path = pathlib.Path(path) if path else config_path()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkerError(NOT_CONFIGURED, f"FBCNN is not set up: {path} does not exist. "
                          + _SETUP_HINT) from None
    except (OSError, ValueError) as e:
        raise WorkerError(NOT_CONFIGURED, f"FBCNN's settings file {path} cannot be read ({e}). "
                          + _SETUP_HINT) from None
    if not isinstance(config, dict) or not config.get("python") or not config.get("core_path"):
        raise WorkerError(NOT_CONFIGURED, f"FBCNN's settings file {path} lacks 'python' or "
                          "'core_path'. " + _SETUP_HINT)
    return config


def in_flatpak() -> bool:
    return os.path.exists("/.flatpak-info")


# ---------------------------------------------------------------- the worker

class Worker:
    """A worker process, started on first use and restarted if it has gone away.

    ``timeout`` is how long the worker may stay silent during a call (start-up,
    model loading, between progress reports) before it counts as hung; it is
    then killed and the call raises WorkerError(kind="timeout"). Calls are
    serialised: one request at a time per Worker.
    """

    def __init__(self, python=None, core_path=None, config=None, timeout: float = 120.0,
                 idle_timeout: float | None = None, grace: float = 3.0):
        if python is None or core_path is None:
            config = dict(config) if config is not None else load_config()
            python = python or config.get("python")
            core_path = core_path or config.get("core_path")
        config = config or {}
        if not python or not core_path:
            raise WorkerError(NOT_CONFIGURED, "no worker python or core_path given. " + _SETUP_HINT)
        self.python = str(python)
        self.core_path = str(core_path)
        self.flatpak = bool(config.get("flatpak_spawn")) or in_flatpak()
        self.timeout = float(timeout)
        self.idle_timeout = idle_timeout
        self.grace = float(grace)
        self._proc = None
        self._lock = threading.Lock()
        self._next_id = 0

    # -- process management

    def command(self) -> list:
        cmd = [self.python, "-m", "core.worker"]
        if self.idle_timeout:
            cmd += ["--idle-timeout", str(self.idle_timeout)]
        if self.flatpak:
            # The host's Python must run outside the sandbox; the sandbox's
            # environment is not passed, so name the folder and blank the
            # variables that would point the host Python elsewhere.
            cmd = ["flatpak-spawn", "--host", f"--directory={self.core_path}",
                   "--env=PYTHONPATH=", "--env=PYTHONHOME="] + cmd
        return cmd

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONUNBUFFERED"] = "1"  # stderr lines reach the tail as they are written
        return env

    def _process(self) -> WorkerProcess:
        if self._proc is not None and not self._proc.alive():
            self._end(self._proc)  # it ran out its idle timeout
        if self._proc is None:
            cmd = self.command()
            try:
                self._proc = WorkerProcess(cmd, self.core_path, self._env())
            except OSError as e:
                raise WorkerError(WORKER_DIED, f"cannot start the FBCNN worker {cmd[0]!r}: {e}. "
                                  + _SETUP_HINT) from None
        return self._proc

    def _end(self, proc: WorkerProcess):
        """End a process and close its pipes; the next call starts a fresh one."""
        if self._proc is proc:
            self._proc = None
        proc.close(self.grace)

    def close(self):
        """Ask the worker to shut down; kill it if it has not gone after the grace period."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.alive():
                try:
                    self._next_id += 1
                    proc.send({"op": "shutdown", "id": self._next_id}, (),
                              time.monotonic() + self.grace)
                except (OSError, ValueError):
                    pass
            if proc is not None:
                self._end(proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests

    def hello(self, timeout=None) -> dict:
        header, _ = self._call({"op": "hello"}, (), timeout=timeout)
        return header

    def estimate(self, pixels, fmt: dict, *, progress=None, cancel_event=None, timeout=None,
                 **opts) -> dict:
        pixels = _as_buffer(pixels)
        _check_pixels(pixels, fmt)
        header, _ = self._call(dict(_request_opts(opts), op="estimate", **_fmt(fmt)), (pixels,),
                               progress=progress, cancel_event=cancel_event, timeout=timeout)
        return header

    def restore(self, pixels, fmt: dict, *, mask=None, progress=None, cancel_event=None,
                timeout=None, **opts):
        """(result pixels as bytes in the request's layout, result header)."""
        pixels = _as_buffer(pixels)
        _check_pixels(pixels, fmt)
        parts = (pixels,)
        request = dict(_request_opts(opts), op="restore", **_fmt(fmt))
        if mask is not None:
            mask = _as_buffer(mask)
            if mask.nbytes != fmt["width"] * fmt["height"]:
                raise WorkerError("bad-request", f"the mask has {mask.nbytes} bytes; a "
                                  f"{fmt['width']}x{fmt['height']} image needs one per pixel")
            request["mask"] = True
            parts = (pixels, mask)
        header, payload = self._call(request, parts, progress=progress,
                                     cancel_event=cancel_event, timeout=timeout)
        return bytes(payload), header

    def submit(self, op: str, pixels=None, fmt=None, **opts) -> "Job":
        """Run hello/estimate/restore on a background thread so a UI stays responsive."""
        if op not in ("hello", "estimate", "restore"):
            raise ValueError(f"cannot submit {op!r}")
        return Job(self, op, pixels, fmt, opts)

    def _call(self, request, parts, progress=None, cancel_event=None, timeout=None):
        with self._lock:
            try:
                return self._exchange(request, parts, progress, cancel_event, timeout)
            except WorkerError as e:
                # A worker that exits cleanly before answering ran out its idle
                # timeout just as we wrote; a fresh one can take the request.
                if e.kind == WORKER_DIED and getattr(e, "returncode", None) == 0:
                    return self._exchange(request, parts, progress, cancel_event, timeout)
                raise

    def _exchange(self, request, parts, progress, cancel_event, timeout):
        timeout = self.timeout if timeout is None else float(timeout)
        if cancel_event is not None and cancel_event.is_set():
            # Cancelled while it queued behind another call: never send it.
            raise WorkerError("cancelled", "cancelled")
        proc = self._process()
        if not proc.version_checked and request.get("op") != "hello":
            self._exchange({"op": "hello"}, (), None, None, timeout)   # checks the version
        self._next_id += 1
        rid = request["id"] = self._next_id
        try:
            proc.send(request, parts, time.monotonic() + timeout)
        except (OSError, ValueError):
            self._raise_dead(proc, "while sending the request", timeout)
        deadline = time.monotonic() + timeout
        cancel_sent = False
        callback_error = None
        while True:
            if cancel_event is not None and cancel_event.is_set() and not cancel_sent:
                cancel_sent = True
                try:
                    proc.send({"op": "cancel", "id": -rid, "target": rid}, (),
                              time.monotonic() + timeout)
                except (OSError, ValueError):
                    self._raise_dead(proc, "while cancelling", timeout)
            wait = deadline - time.monotonic()
            if wait <= 0:
                proc.kill_hung()
                tail = proc.stderr_tail(0.5)
                self._end(proc)
                raise WorkerError(TIMEOUT, f"the FBCNN worker did not answer within {timeout:g} s "
                                  "and was stopped", tail)
            try:
                frame = proc.replies.get(timeout=min(wait, 0.1))
            except queue.Empty:
                continue
            if frame is None:
                self._raise_dead(proc, "before answering", timeout)
            header, payload = frame
            if header.get("id") not in (rid, None) or header.get("type") is None:
                continue  # a stray reply to an earlier, abandoned request
            deadline = time.monotonic() + timeout  # any reply proves the worker is alive
            kind = header.get("type")
            if kind == "progress":
                if progress is not None and callback_error is None:
                    try:
                        progress(header.get("done", 0), header.get("total", 0))
                    except Exception as e:  # noqa: BLE001 - re-raised once the worker is done
                        # Stop the request, but read its end, so the next call
                        # does not start with this one's replies in the pipe.
                        callback_error = e
                        if cancel_event is None:
                            cancel_event = threading.Event()
                        cancel_event.set()
                continue
            if callback_error is not None:
                raise callback_error
            if kind == "error":
                raise WorkerError(header.get("kind", "internal"), header.get("message", ""),
                                  proc.stderr_tail() if header.get("kind") == "internal" else "")
            if cancel_sent:
                raise WorkerError("cancelled", "cancelled")
            for k in ("id", "type", "nbytes"):
                header.pop(k, None)
            if request.get("op") == "hello":
                _check_version(header)
                proc.version_checked = True
            return header, payload

    def _raise_dead(self, proc, when, timeout):
        try:
            rc = proc.popen.wait(min(timeout, self.grace))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.popen.wait()
        tail = proc.stderr_tail(0.5 if proc.missed_deadline else 1.0)
        self._end(proc)
        if proc.missed_deadline:
            raise WorkerError(TIMEOUT, f"the FBCNN worker stopped reading for {timeout:g} s "
                              "and was stopped", tail)
        err = WorkerError(WORKER_DIED, f"the FBCNN worker ({self.python}) {exit_text(rc)} "
                          f"{when}", tail)
        err.returncode = rc
        raise err


def installed_models(hello: dict) -> list:
    """The models a dialog may offer: "auto", then those on disk, from a hello reply."""
    return ["auto"] + [m["name"] for m in hello.get("models", [])
                       if m.get("state") in ("bundled", "downloaded") and m.get("name") != "auto"]


def _check_version(hello: dict) -> None:
    theirs = hello.get("protocol")
    if theirs != PROTOCOL_VERSION:
        raise WorkerError(VERSION_MISMATCH, "the plug-in and the worker are from different versions "
                          f"(protocol {PROTOCOL_VERSION} here, {theirs or 'none'} in the worker): "
                          "re-run the installer (python installer.py), then restart the editor")


def exit_text(rc: int) -> str:
    """How a process ended, in words: a signal by name, SIGKILL with the likely cause
    (the kernel's out-of-memory killer sends it)."""
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory? the system kills the largest process when memory runs out)" \
            if -rc == getattr(signal, "SIGKILL", 9) else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {rc}"


class Job:
    """A request running on a background thread.

    ``progress`` (the optional callback in opts) is called on that thread; a UI
    that must not be touched from other threads can poll ``job.progress``
    (done, total) instead.
    """

    def __init__(self, worker: Worker, op: str, pixels, fmt, opts):
        self.progress = (0, 0)
        self._callback = opts.pop("progress", None)
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._result = None
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(worker, op, pixels, fmt, opts),
                                        daemon=True, name=f"fbcnn-{op}")
        self._thread.start()

    def _on_progress(self, done, total):
        self.progress = (done, total)
        if self._callback is not None:
            self._callback(done, total)

    def _run(self, worker, op, pixels, fmt, opts):
        try:
            if op == "hello":
                self._result = worker.hello(timeout=opts.get("timeout"))
            else:
                self._result = getattr(worker, op)(pixels, fmt, progress=self._on_progress,
                                                   cancel_event=self._cancel, **opts)
        except BaseException as e:  # handed to whoever calls result()
            self._error = e
        finally:
            self._done.set()

    def cancel(self):
        self._cancel.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout=None):
        """The call's return value; raises its WorkerError. A wait that runs out raises
        WorkerError(kind="timeout") and leaves the job running."""
        if not self._done.wait(timeout):
            raise WorkerError(TIMEOUT, f"no result after {timeout:g} s; the job is still running")
        if self._error is not None:
            raise self._error
        return self._result


def _as_buffer(data) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)  # e.g. a QByteArray
    return memoryview(data)


def _fmt(fmt: dict) -> dict:
    return {k: fmt[k] for k in ("width", "height", "dtype", "order")}


def _check_pixels(pixels: memoryview, fmt: dict):
    try:
        fmt = pixel_format(fmt["width"], fmt["height"], fmt["dtype"], fmt["order"])
    except (KeyError, TypeError, ValueError) as e:
        raise WorkerError("bad-request", f"bad pixel format {fmt!r}: {e}") from None
    if pixels.nbytes != frame_nbytes(fmt):
        raise WorkerError("bad-request", f"{pixels.nbytes} bytes of pixels, but {fmt['width']}x"
                          f"{fmt['height']} {fmt['order']} {fmt['dtype']} needs {frame_nbytes(fmt)}")


def _request_opts(opts: dict) -> dict:
    out = {k: v for k, v in opts.items() if v is not None}
    js = out.get("jpeg_settings")
    if isinstance(js, (bytes, bytearray, memoryview)):
        out["jpeg_settings"] = bytes(js).hex()
    if "origin" in out:
        out["origin"] = [int(v) for v in out["origin"]]
    if "source_path" in out:
        out["source_path"] = str(out["source_path"])
    return out
