"""What the user and the log are told: the one log line, refusals, and worker
errors as advice that says what to do."""
import os
import sys
import time

from fbcnn_frontend import texts

TITLE = "Remove JPEG Artifacts"


def log(message):
    """One line on GIMP's terminal (absent on some platforms, hence the guard),
    and in the file named by FBCNN_GIMP_LOG when set, for diagnosing a setup;
    the headless tests read it to see what the dialog showed."""
    line = "fbcnn_gimp: %s\n" % message
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    path = os.environ.get("FBCNN_GIMP_LOG")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write("%.3f %s" % (time.time(), line))
        except OSError:
            pass


class Refused(Exception):
    """An input this filter does not process; the message says what to do."""


def advice(error):
    """A worker error as a message that says what to do, with the worker's last
    words when it failed."""
    text = texts.advice(error, "GIMP")
    tail = (getattr(error, "stderr_tail", "") or "").strip()
    return "%s\n\n%s" % (text, tail[-1500:]) if tail else text
