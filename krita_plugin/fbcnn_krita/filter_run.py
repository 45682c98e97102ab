"""One filter run: read a layer, let the worker restore it, put the result back.

Everything that can fail (the colour model, the worker, the model, memory)
fails before the document is touched; the write-back at the end is a single
step that Krita can undo.
"""
import os
import time

from krita import Krita

from . import pixels
from .fbcnn_frontend import regions
from .connection import FbcnnError, Pending, wait

OUTPUTS = ("new-layer", "replace")
SETTINGS_GROUP = "fbcnn_krita"
LAYER_TYPES = ("paintlayer", "grouplayer", "filelayer", "filllayer", "clonelayer",
               "vectorlayer", "filterlayer")

# What the last run did, for scripts and tests: QF used and detected, its source,
# model, device, processed rectangle, seconds.
last_run = {}


def setting(name, default):
    return Krita.instance().readSetting(SETTINGS_GROUP, name, str(default))


def write_setting(name, value):
    Krita.instance().writeSetting(SETTINGS_GROUP, name, str(value))


def jpeg_source(document):
    """The document's file when it is a JPEG (its tables tell the QF), else None."""
    path = document.fileName()
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            return path if f.read(3) == b"\xff\xd8\xff" else None
    except OSError:
        return None


class Target:
    """A layer of a document, the rectangle to process and how its bytes are laid out."""

    def __init__(self, document, node):
        if document is None:
            raise FbcnnError("Open an image first.")
        if node is None:
            raise FbcnnError("Select the layer to filter in the Layers docker first.")
        if node.type() not in LAYER_TYPES:
            raise FbcnnError(f"The active node is a {node.type()}, not a layer. Select a "
                             "paint layer in the Layers docker and run the filter again.")
        try:
            self.layout = pixels.layout_for(node.colorModel(), node.colorDepth())
        except pixels.UnsupportedLayer as e:
            raise FbcnnError(str(e), kind="unsupported") from None
        self.document = document
        self.node = node
        self.width, self.height = document.width(), document.height()
        self.source_path = jpeg_source(document)
        self.selection = document.selection()
        if self.selection is not None:
            bounds = regions.clip_rect((self.selection.x(), self.selection.y(),
                                       self.selection.width(), self.selection.height()),
                                      self.width, self.height)
            if bounds[2] == 0 or bounds[3] == 0:
                raise FbcnnError("The selection is empty or outside the canvas. Select the "
                                 "area to filter, or deselect (Select > Deselect) to filter "
                                 "the whole layer.")
            self.rect = regions.grow_to_grid(bounds, regions.RUN_CONTEXT, self.width, self.height)
        else:
            self.rect = (0, 0, self.width, self.height)

    def canvas(self):
        return (0, 0, self.width, self.height)

    def read(self, rect):
        return bytes(self.node.pixelData(*rect))

    def mask(self, rect):
        """Selection strength for rect (0 outside the selection), or None without one."""
        if self.selection is None:
            return None
        return bytes(self.selection.pixelData(*rect))

    def fmt(self, rect):
        return pixels.pixel_format(self.layout, rect[2], rect[3])


def estimate(target, model, parent=None):
    """Pending estimate of the QF over the whole layer: one QF for the image."""
    canvas = target.canvas()
    return Pending("estimate", target.read(canvas), target.fmt(canvas), parent=parent,
                   model=model, source_path=target.source_path)


def restore(target, rect, qf, model, device, parent=None):
    """Pending restore of rect with a fixed QF, on the image's 8-px grid (origin)."""
    return Pending("restore", target.read(rect), target.fmt(rect), parent=parent,
                   mask=target.mask(rect), qf=qf, model=model, device=device,
                   origin=[rect[0], rect[1]], source_path=target.source_path)


def write_result(target, data, output, label):
    """Put restored pixels into the document in one undoable step; returns the new node."""
    x, y, w, h = target.rect
    expected = w * h * target.layout.bytes_per_pixel
    if len(data) != expected:
        raise FbcnnError(f"The worker returned {len(data)} bytes instead of {expected}; "
                         "the document was not changed. Please report this.", kind="internal")
    doc, node = target.document, target.node
    parent = node.parentNode()
    if output == "replace":
        # In-place setPixelData cannot be undone; a swapped duplicate can.
        result = node.duplicate()
        result.setName(node.name())
        result.setPixelData(data, x, y, w, h)
        parent.addChildNode(result, node)
        node.remove()
    else:
        result = doc.createNode(f"{node.name()} ({label})", "paintlayer")
        if (result.colorModel(), result.colorDepth()) != (node.colorModel(), node.colorDepth()):
            result.setColorSpace(node.colorModel(), node.colorDepth(), node.colorProfile())
        result.setPixelData(data, x, y, w, h)
        parent.addChildNode(result, node)
    doc.setActiveNode(result)
    doc.refreshProjection()
    doc.waitForDone()
    return result


def check_arguments(qf, output):
    if qf is not None and qf != "auto":
        if isinstance(qf, bool) or not isinstance(qf, int) or not 1 <= qf <= 100:
            raise ValueError(f"qf must be None (auto) or an int from 1 to 100, not {qf!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")


def run(document, node, qf=None, output="new-layer", *, model=None, device=None):
    """Remove JPEG artifacts from node without a dialog; returns the node with the result.

    qf: None (auto: detected once for the whole image) or an int 1..100.
    output: "new-layer" (a new layer above node) or "replace" (undoable).
    model, device: as in the dialog ("auto", "compact", "cpu", "gpu", or a .pth
    path); by default the dialog's last choices.
    Returns once the result is in the document. Raises FbcnnError with a message
    that says what to do; the document is then unchanged.
    """
    check_arguments(qf, output)
    model = model or setting("model", "auto")
    device = device or setting("device", "auto")
    started = time.monotonic()
    target = Target(document, node)
    detected = None
    if qf in (None, "auto"):
        detected = wait(estimate(target, model))
        qf, source = int(detected["qf"]), detected["source"]
    else:
        source = "manual"
    data, info = wait(restore(target, target.rect, qf, model, device))
    result = write_result(target, data, output, f"JPEG artifacts removed, QF {qf}")
    record_run(target, qf, source, detected, info, output, time.monotonic() - started)
    return result


def record_run(target, qf, source, detected, info, output, seconds=None):
    """What the last run did, in last_run, for scripts and tests (dialog or not)."""
    last_run.clear()
    last_run.update(qf_used=qf, qf_source=source,
                    qf_detected=detected["qf"] if detected else None,
                    details=detected.get("details", {}) if detected else {},
                    model=info.get("model"), device=info.get("device"),
                    warnings=info.get("warnings", []), rect=list(target.rect), output=output,
                    seconds=None if seconds is None else round(seconds, 3))
