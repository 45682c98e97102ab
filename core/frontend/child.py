"""One running worker process: its pipes, a reader thread for the replies and a
bounded tail of its stderr. Standard library only, like the rest of this package."""
from __future__ import annotations

import collections
import queue
import subprocess
import sys
import threading
import time

from .protocol import PROTOCOL, FrameError, read_frame, write_frame

_STDERR_LINES = 200


class WorkerProcess:
    """One running worker: its pipes, a stdout reader and a bounded stderr tail."""

    def __init__(self, cmd, cwd, env):
        self.version_checked = False   # until its hello has said the protocol version
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = 0x08000000  # CREATE_NO_WINDOW: no console flashes up
        self.popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      bufsize=0, **kwargs)  # OSError: the caller explains
        self.replies = queue.Queue()
        self.stderr = collections.deque(maxlen=_STDERR_LINES)
        self._stderr_done = threading.Event()
        self.write_lock = threading.Lock()
        self.missed_deadline = False
        self._released = False
        self._release_lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True, name="fbcnn-stdout"),
            threading.Thread(target=self._read_stderr, daemon=True, name="fbcnn-stderr")]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self):
        stream = self.popen.stdout
        try:
            while True:
                frame = read_frame(stream)
                if frame is None:
                    break
                self.replies.put(frame)
        except (EOFError, OSError, ValueError) as e:  # ValueError: a closed pipe
            self.stderr.append(f"[client] reply stream ended: {e}")
        except FrameError as e:
            self.replies.put(({"type": "error", "kind": PROTOCOL,
                               "message": f"unreadable reply from the worker: {e}"}, b""))
        self.replies.put(None)  # EOF marker

    def _read_stderr(self):
        try:
            for line in iter(self.popen.stderr.readline, b""):
                self.stderr.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            self._stderr_done.set()

    def stderr_tail(self, wait: float = 0.0) -> str:
        if wait:
            self._stderr_done.wait(wait)
        return "\n".join(list(self.stderr)[-40:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, header, payloads, deadline: float):
        """Write a frame; a worker that stops reading is killed at the deadline."""
        # A hung worker with a full pipe would block write() forever; killing it
        # from a timer turns that into a BrokenPipeError here.
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), self.kill_hung)
        timer.daemon = True
        timer.start()
        try:
            with self.write_lock:
                write_frame(self.popen.stdin, header, *payloads)
        finally:
            timer.cancel()

    def kill_hung(self):
        self.missed_deadline = True
        self.kill()

    def kill(self):
        try:
            self.popen.kill()
        except OSError:
            pass

    def close(self, grace: float):
        """End the process (EOF on stdin first, then a kill) and release its pipes."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.release(grace)

    def release(self, wait: float):
        """Close the three pipes, once; left open, each one is a ResourceWarning when
        the Popen is collected (GIMP 3.2 shows them)."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        # The readers see EOF once the process is gone; letting them finish keeps the
        # last stderr lines. A grandchild holding the pipes (flatpak-spawn) must not
        # hang us: the wait is bounded, and a reader cut off ends on the closed pipe.
        deadline = time.monotonic() + wait
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            try:
                stream.close()
            except OSError:
                pass
