"""The worker process: ``python -m core.worker [--idle-timeout SECONDS]``.

Serves the framed protocol of docs/contracts.md on stdin/stdout. A reader thread
takes frames off stdin so that a ``cancel`` reaches a restore that is running;
the main thread runs one request at a time and keeps one Engine per device, so
models stay loaded between requests. stdout carries frames only: everything
else, including stray prints from libraries, goes to stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import queue
import sys
import threading
import time
import traceback

from core import weights
from core.engine import Cancelled, Engine
from core.frontend.protocol import PROTOCOL_VERSION, FrameError, read_frame, skip, write_frame
from core.payload import (BadRequest, apply_mask, from_canonical, parse_format, split_payload,
                          to_canonical)

log = logging.getLogger("fbcnn.worker")

VERSION = "0.1.0"
# ---------------------------------------------------------------- request fields

def opt_qf(req):
    qf = req.get("qf", "auto")
    if qf is None or qf == "auto":
        return None
    if not isinstance(qf, int) or isinstance(qf, bool) or not 1 <= qf <= 100:
        raise BadRequest(f"qf must be 'auto' or an integer 1..100, not {qf!r}")
    return qf


def opt_origin(req):
    origin = req.get("origin", [0, 0])
    if (not isinstance(origin, (list, tuple)) or len(origin) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in origin)):
        raise BadRequest(f"origin must be [x, y] with integers >= 0, not {origin!r}")
    return tuple(origin)


def opt_tile(req):
    tile = req.get("tile")
    if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 16):
        raise BadRequest(f"tile must be an integer >= 16 or absent, not {tile!r}")
    return tile


def opt_jpeg_settings(req):
    js = req.get("jpeg_settings")
    if js is None:
        return None
    try:
        return bytes.fromhex(js)
    except (TypeError, ValueError):
        raise BadRequest("jpeg_settings must be a hex string") from None


def opt_source_path(req):
    p = req.get("source_path")
    if p is not None and not isinstance(p, str):
        raise BadRequest(f"source_path must be a string, not {p!r}")
    return p or None


def opt_model(req):
    """The model name or path; unknown names are refused here with the choices."""
    model = req.get("model", "auto") or "auto"
    if not isinstance(model, str):
        raise BadRequest(f"model must be a string, not {model!r}")
    registry = weights.REGISTRY
    if model == "auto" or model in registry:
        return model
    if model.endswith(".pth") or os.sep in model or (os.altsep and os.altsep in model):
        if not os.path.isfile(model):
            raise BadRequest(f"model file {model} does not exist")
        return model
    raise BadRequest(f"unknown model {model!r}; choose one of {['auto', *registry]} "
                     "or give the path to a .pth file")


# ---------------------------------------------------------------- devices and engines

def resolve_device(name, warnings: list) -> str:
    """A present device for a request's `device` (auto|cpu|gpu|cuda|mps); the engine decides."""
    from core.devices import pick_device
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"device must be a string, not {name!r}")
    device, warns = pick_device(name or "auto")
    warnings.extend(warns)
    return device


def resolve_runtime(name) -> str:
    """A request's `runtime` (auto|torch|openvino), checked; the engine resolves auto."""
    from core.devices import RUNTIMES
    if name is not None and name not in RUNTIMES:
        raise BadRequest(f"runtime must be one of {', '.join(RUNTIMES)}, not {name!r}")
    return name or "auto"


class Engines:
    """One Engine per (device, runtime), made on first use and kept: the Engine caches
    models, and OpenVINO's compiled ones."""

    def __init__(self, precision="auto"):
        self.precision = precision
        self._engines = {}

    def get(self, device: str, runtime: str = "auto"):
        key = (device, runtime)
        if key not in self._engines:
            t = time.monotonic()
            try:
                self._engines[key] = Engine(device, self.precision, runtime)
            except ValueError as err:  # e.g. openvino asked for on a GPU, or not installed
                raise BadRequest(str(err)) from None
            log.info("engine for %s (%s) ready in %.2f s", device, self._engines[key].runtime,
                     time.monotonic() - t)
        return self._engines[key]


# ---------------------------------------------------------------- replies

def error_kind(exc: BaseException) -> str:
    if isinstance(exc, Cancelled):
        return "cancelled"
    if isinstance(exc, (weights.ModelMissing, weights.VerificationError)):
        return "missing-model"  # a file that failed verification is moved aside: fetch it again
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" \
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()):
        return "out-of-memory"
    if isinstance(exc, ValueError):
        return "bad-request"
    return "internal"


# ---------------------------------------------------------------- the server

class Server:
    def __init__(self, stdin, stdout, idle_timeout=None, precision="auto"):
        self.stdin = stdin
        self.stdout = stdout
        self.idle_timeout = idle_timeout
        self.engines = Engines(precision)
        self.requests = queue.Queue()
        self.write_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.pending = set()       # ids queued or running: the only ones a cancel can hit
        self.cancelled = set()     # ids cancelled before or while they run
        self.current = None        # id of the running request
        self.stopping = threading.Event()
        self.reader_failed = False
        self.shutting_down = False  # a shutdown is queued: what queues before it is moot

    # -- output

    def send(self, header: dict, *payloads):
        try:
            with self.write_lock:
                write_frame(self.stdout, header, *payloads)
        except (BrokenPipeError, OSError, ValueError) as e:
            # The client has gone; nobody reads our answers any more.
            log.info("cannot write to the client (%s); stopping", e)
            self.stopping.set()
            self.cancel_all()

    def error(self, rid, kind: str, message: str):
        self.send({"id": rid, "type": "error", "kind": kind, "message": message})

    # -- input thread

    def cancel_all(self):
        with self.state_lock:
            if self.current is not None:
                self.cancelled.add(self.current)

    def read_loop(self):
        """Take frames off stdin; cancels act at once, everything else queues."""
        try:
            while True:
                try:
                    frame = read_frame(self.stdin)
                except FrameError as e:
                    rid = e.header.get("id") if e.header else None
                    self.error(rid, "bad-request", f"malformed frame: {e}")
                    if e.fatal or (e.discard and not skip(self.stdin, e.discard)):
                        break
                    continue
                if frame is None:
                    break
                header, payload = frame
                if header.get("op") == "cancel":
                    self.on_cancel(header)
                    continue
                if header.get("op") == "shutdown":
                    # Do not make the client wait for a restore nobody wants now.
                    self.shutting_down = True
                    self.cancel_all()
                rid = header.get("id")
                if isinstance(rid, int):
                    with self.state_lock:
                        self.pending.add(rid)
                self.requests.put((header, payload))
        except EOFError as e:
            log.info("stdin ended inside a frame (%s); stopping", e)
        except (OSError, ValueError) as e:
            log.info("stdin failed (%s); stopping", e)
        except BaseException:  # a dead reader must not leave a worker that never answers
            log.error("the stdin reader failed:\n%s", traceback.format_exc())
            self.reader_failed = True
        # The client has gone: stop what runs, then let the main loop end.
        self.cancel_all()
        self.requests.put(None)

    def on_cancel(self, header):
        target = header.get("target")
        if not isinstance(target, int) or isinstance(target, bool):
            self.error(header.get("id"), "bad-request", f"cancel needs an integer target, not {target!r}")
            return
        with self.state_lock:
            # A cancel that crossed its target's reply is dropped, so a client
            # that reuses ids does not cancel a later request by accident.
            if target in self.pending:
                self.cancelled.add(target)

    def is_cancelled(self, rid) -> bool:
        return rid in self.cancelled

    # -- main loop

    def serve(self) -> int:
        threading.Thread(target=self.read_loop, daemon=True, name="stdin").start()
        while not self.stopping.is_set():
            try:
                item = self.requests.get(timeout=self.idle_timeout)
            except queue.Empty:
                log.info("idle for %s s; exiting", self.idle_timeout)
                return 0
            if item is None:
                return 1 if self.reader_failed else 0
            header, payload = item
            if self.handle(header, payload) == "shutdown":
                return 0
        return 0

    def handle(self, header: dict, payload):
        rid = header.get("id")
        op = header.get("op")
        self.current = rid if isinstance(rid, int) else None
        try:
            if not isinstance(rid, int) or isinstance(rid, bool):
                raise BadRequest(f"every request needs an integer id, not {rid!r}")
            if rid in self.cancelled or (self.shutting_down and op != "shutdown"):
                self.error(rid, "cancelled", "cancelled before it started")
                return None
            if op == "shutdown":
                self.send({"id": rid, "type": "result"})
                return "shutdown"
            handler = {"hello": self.op_hello, "estimate": self.op_estimate,
                       "restore": self.op_restore}.get(op)
            if handler is None:
                raise BadRequest(f"unknown op {op!r}; expected hello, estimate, restore, "
                                 "cancel or shutdown")
            handler(rid, header, payload)
        except BadRequest as e:
            self.error(rid, "bad-request", str(e))
        except Exception as e:  # every failure becomes a reply; the worker keeps serving
            kind = error_kind(e)
            if kind == "internal":
                log.error("request %s (%s) failed:\n%s", rid, op, traceback.format_exc())
                self.error(rid, kind, f"{type(e).__name__}: {e}")
            else:
                self.error(rid, kind, str(e))
        finally:
            if isinstance(rid, int):
                with self.state_lock:
                    self.cancelled.discard(rid)
                    self.pending.discard(rid)
            self.current = None
        return None

    # -- operations

    def op_hello(self, rid, req, payload):
        from importlib.metadata import version
        models = []
        for name, entry in weights.REGISTRY.items():
            try:
                state = weights.status(name)
                path = str(weights.model_path(name))
            except Exception as e:  # one broken entry must not hide the others
                state, path = f"error: {e}", ""
            models.append({"name": name, "state": state, "path": path,
                           "size": getattr(entry, "size", None)})
        from core.devices import available_devices, pick_runtime
        devices = available_devices()
        # Which runtime each device uses by default, e.g. {"cpu": "openvino"}.
        runtimes = {d: pick_runtime("auto", d) for d in devices}
        self.send({"id": rid, "type": "result", "version": VERSION, "protocol": PROTOCOL_VERSION,
                   "python": platform.python_version(), "torch": version("torch"),
                   "devices": devices, "default_device": resolve_device("auto", []),
                   "runtimes": runtimes,
                   "models": models, "default_model": "auto", "pid": os.getpid()})

    def _pixels(self, req, payload, with_mask=False):
        fmt = parse_format(req)
        data, mask = split_payload(fmt, payload, with_mask)
        return fmt, data, mask

    def op_estimate(self, rid, req, payload):
        fmt, data, _ = self._pixels(req, payload)
        warnings = []
        engine = self.engines.get(resolve_device(req.get("device"), warnings))
        est = engine.estimate(to_canonical(fmt, data), model=opt_model(req),
                              source_path=opt_source_path(req),
                              jpeg_settings=opt_jpeg_settings(req))
        self.send({"id": rid, "type": "result", "qf": int(est.qf), "source": est.source,
                   "details": est.details or {}})

    def op_restore(self, rid, req, payload):
        with_mask = req.get("mask", False)
        if not isinstance(with_mask, bool):
            raise BadRequest(f"mask must be true or false, not {with_mask!r}")
        fmt, data, mask = self._pixels(req, payload, with_mask)
        opts = dict(model=opt_model(req), qf=opt_qf(req), origin=opt_origin(req),
                    tile=opt_tile(req), source_path=opt_source_path(req),
                    jpeg_settings=opt_jpeg_settings(req))
        warnings = []
        engine = self.engines.get(resolve_device(req.get("device"), warnings),
                                  resolve_runtime(req.get("runtime")))
        canon = to_canonical(fmt, data)
        orig = canon.copy() if mask is not None else None  # the engine may work in place
        t = time.monotonic()
        res = engine.restore(canon, progress=lambda done, total: self.progress(rid, done, total),
                             cancel=lambda: self.is_cancelled(rid), **opts)
        if self.is_cancelled(rid):
            # The cancel came after the last check inside the engine; the
            # client asked for no result, so it gets none.
            raise Cancelled("cancelled")
        if mask is not None:
            out = apply_mask(fmt, data, mask, res.pixels, orig)
        else:
            out = from_canonical(fmt, res.pixels)
        seconds = time.monotonic() - t
        log.info("restore %s: %dx%d %s %s in %.2f s", rid, fmt["width"], fmt["height"],
                 fmt["order"], fmt["dtype"], seconds)
        header = {"id": rid, "type": "result", **fmt, "qf_used": res.qf_used,
                  "qf_detected": res.qf_detected, "qf_source": res.qf_source,
                  "details": res.details or {}, "model": res.model,
                  "device": res.device, "runtime": res.runtime,
                  "warnings": warnings + list(res.warnings or []),
                  "seconds": round(seconds, 4)}
        self.send(header, memoryview(out).cast("B"))

    def progress(self, rid, done, total):
        self.send({"id": rid, "type": "progress", "done": int(done), "total": int(total)})


# ---------------------------------------------------------------- entry point

def _claim_stdout():
    """A private binary handle on the real stdout; fd 1 then points at stderr.

    Anything that prints, from Python or from C, lands in stderr instead of
    corrupting the frame stream.
    """
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=1 << 16)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                    help="exit after this long without a request (default: never)")
    ap.add_argument("--precision", default="auto", help="passed to the Engine")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="fbcnn-worker %(levelname)s: %(message)s")
    out = _claim_stdout()
    # Unbuffered, on a private descriptor: interpreter shutdown then has no
    # buffer lock to fight over with the reader thread blocked in read().
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    log.info("ready (pid %d, Python %s)", os.getpid(), platform.python_version())
    server = Server(stdin, out, idle_timeout=args.idle_timeout, precision=args.precision)
    try:
        return server.serve()
    finally:
        try:
            out.flush()
        except OSError:
            pass


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # The stdin reader may still sit in read(); leave without tearing down
    # threads (a normal exit can abort on a daemon thread holding stdin).
    os._exit(code)
