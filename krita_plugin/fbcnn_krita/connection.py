"""The one worker process that Krita keeps, and waiting for its answers.

Krita runs for hours, so one worker stays up and keeps its models loaded; it
exits by itself after IDLE_TIMEOUT seconds without work, and the client starts
a fresh one on the next request. Every request runs on the client's background
thread (a Job); the GUI thread only polls it from a QTimer, so Krita keeps
painting while the network works.
"""
import signal

from .qt import QEventLoop, QObject, QTimer, pyqtSignal

IDLE_TIMEOUT = 600   # seconds the worker stays alive without work
SILENCE_TIMEOUT = 300  # seconds the worker may stay silent in one call (slow CPUs)
POLL_MS = 40

_worker = None

# Krita's embedded Python leaves SIGPIPE at its default action, so writing to a
# worker that has died would kill Krita itself. Ignored, the write raises
# BrokenPipeError instead, which the client reports as a dead worker.
try:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
except (AttributeError, ValueError):  # Windows has no SIGPIPE; not the main thread
    pass


class FbcnnError(Exception):
    """A failure the user can act on: title plus a message that says what to do."""

    def __init__(self, message, title="Remove JPEG Artifacts", details="", kind=""):
        super().__init__(message)
        self.title = title
        self.message = message
        self.details = details
        self.kind = kind


def _client():
    try:
        from .fbcnn_frontend import client
    except ImportError:
        raise FbcnnError(
            "The plug-in is incomplete: its fbcnn_frontend folder is missing.\n\n"
            "Run `python installer.py` from the FBCNN folder again, then restart Krita.",
            kind="not-configured") from None
    return client


def worker():
    """The shared worker, created on first use (the process starts with the first request)."""
    global _worker
    if _worker is None:
        client = _client()
        try:
            _worker = client.Worker(config=client.load_config(), timeout=SILENCE_TIMEOUT,
                                    idle_timeout=IDLE_TIMEOUT)
        except client.WorkerError as e:
            raise explain(e) from None
    return _worker


def shutdown():
    """Stop the worker (Krita is closing, or the settings changed)."""
    global _worker
    w, _worker = _worker, None
    if w is not None:
        w.close()


def explain(error):
    """A client WorkerError turned into an FbcnnError that says what to do."""
    from .fbcnn_frontend import texts
    return FbcnnError(texts.advice(error, "Krita"), details=getattr(error, "stderr_tail", ""),
                      kind=getattr(error, "kind", "internal"))


class Pending(QObject):
    """A worker request running in the background, watched from the GUI thread.

    Emits progressed(done, total) and then exactly one of finished(result) or
    failed(FbcnnError). cancel() asks the worker to stop; a cancelled request
    ends with failed(kind="cancelled").
    """

    progressed = pyqtSignal(int, int)
    finished = pyqtSignal(object)
    failed = pyqtSignal(object)

    def __init__(self, op, pixels=None, fmt=None, parent=None, **opts):
        super().__init__(parent)
        self._job = None
        self.outcome = None  # ("result", value) or ("error", FbcnnError) once ended
        self._last_progress = (0, 0)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        try:
            self._job = worker().submit(op, pixels, fmt, **opts)
        except FbcnnError as e:
            # Report on the next event-loop turn, like any other failure.
            error = e
            QTimer.singleShot(0, lambda: self._end("error", error))
            return
        self._timer.start()

    def cancel(self):
        if self._job is not None:
            self._job.cancel()

    def ended(self):
        return self.outcome is not None

    def _end(self, kind, value):
        if self.outcome is not None:
            return
        self.outcome = (kind, value)
        self._timer.stop()
        (self.finished if kind == "result" else self.failed).emit(value)

    def _poll(self):
        job = self._job
        if job.progress != self._last_progress:
            self._last_progress = job.progress
            self.progressed.emit(*job.progress)
        if not job.done():
            return
        try:
            result = job.result(0)
        except Exception as e:  # the client's WorkerError, or a bug: both end the request
            self._end("error", e if isinstance(e, FbcnnError) else _as_error(e))
            return
        self._end("result", result)


def _as_error(e):
    if hasattr(e, "kind"):
        return explain(e)
    return FbcnnError(f"Unexpected error: {type(e).__name__}: {e}", kind="internal")


def wait(pending):
    """Block the caller, not Krita, until pending ends; its result or raise its error."""
    loop = QEventLoop()
    pending.finished.connect(loop.quit)
    pending.failed.connect(loop.quit)
    if not pending.ended():
        loop.exec()
    kind, value = pending.outcome
    if kind == "error":
        raise value
    return value
