"""One run of the filter on one layer, from the dialog's previews to the final
write: the settings as the worker names them, the QF (estimated once per image),
and the restore requests, so that the preview is exactly what the run produces."""
import os
import time

from gi.repository import Gimp

from fbcnn_frontend import client

from messages import Refused, log
from pixels import PixelFormat, Region, crop, keep_alpha, qf_hints, read_pixels, with_context, write_back

# (dialog nick, worker model name); the labels are fbcnn_frontend.texts'.
MODELS = [("auto", "auto"), ("compact", "compact"), ("color", "fbcnn_color"),
          ("gray", "fbcnn_gray"), ("gray-double", "fbcnn_gray_double")]
# Dialog nick = worker device name; Intel accelerators are reached through
# OpenVINO, offered only where the worker lists them.
DEVICES = ["auto", "gpu", "cpu", "intel-gpu", "npu"]


class FilterRun:
    """One run of the filter on one layer: what the preview and the final run
    share, so that the preview is exactly what the run produces."""

    def __init__(self, image, drawable, config):
        self.image, self.drawable, self.config = image, drawable, config
        self.fmt = PixelFormat(drawable)
        self.hints = qf_hints(image)
        self.worker = client.Worker()
        self.estimates = {}
        self._hello = None

    def close(self):
        self.worker.close()

    def hello(self):
        """The worker's self-description (models installed, devices); asked once."""
        if self._hello is None:
            self._hello = self.worker.hello()
        return self._hello

    # The settings, as the worker names them.
    def model(self):
        nick = self.config.get_property("model")
        return dict(MODELS).get(nick, nick)

    def options(self):
        opts = {"model": self.model(), "device": self.config.get_property("device")}
        model_file = self.config.get_property("model-file")
        if model_file:
            opts["model"] = model_file
        return opts

    def auto(self):
        return self.config.get_property("qf-mode") == "auto"

    # QF: estimated once per image (not per selection or preview crop), so the
    # strength is the same everywhere and the preview matches the final run.
    def estimate_request(self):
        fmt = {"width": self.drawable.get_width(), "height": self.drawable.get_height(),
               "dtype": "u8", "order": "Y" if self.fmt.gray else "RGB"}
        whole = Region(0, 0, fmt["width"], fmt["height"])
        pixels = read_pixels(self.drawable, whole, self.fmt.babl_u8)
        return pixels, fmt, dict(self.hints, model=self.options()["model"])

    def cached_estimate(self):
        return self.estimates.get(self.options()["model"])

    def remember_estimate(self, estimate):
        self.estimates[self.options()["model"]] = estimate

    def estimate(self):
        if self.cached_estimate() is None:
            pixels, fmt, opts = self.estimate_request()
            self.remember_estimate(self.worker.estimate(pixels, fmt, **opts))
        return self.cached_estimate()

    def qf(self):
        return self.estimate()["qf"] if self.auto() else self.config.get_property("qf")

    def restore_request(self, inner, qf):
        """Pixels of `inner` plus context, and the worker options to restore them."""
        outer, origin = with_context(self.drawable, inner)
        pixels = read_pixels(self.drawable, outer, self.fmt.babl)
        opts = dict(self.options(), qf=qf, origin=list(origin), **self.hints)
        return outer, pixels, self.fmt.descriptor(outer.w, outer.h), opts

    def finish(self, inner, outer, original, result):
        return crop(keep_alpha(result, original, self.fmt), outer, inner, self.fmt.pixel_bytes)


def submit_restore(filter_run, inner, qf):
    """Start restoring `inner` on the worker's thread; poll the returned job."""
    outer, pixels, fmt, opts = filter_run.restore_request(inner, qf)
    job = filter_run.worker.submit("restore", pixels, fmt, **opts)
    return job, outer, pixels


def apply_filter(filter_run):
    """Restore the selection (or the whole layer) and write it back as one undo
    step. Returns the QF used and where it came from."""
    drawable, image = filter_run.drawable, filter_run.image
    new_layer = filter_run.config.get_property("output") == "new-layer"
    if drawable.get_lock_content() and not new_layer:
        raise Refused("The layer's pixels are locked. Unlock them in the Layers dialog, "
                      "or choose Output: New layer above.")
    ok, x, y, w, h = drawable.mask_intersect()
    if not ok or w <= 0 or h <= 0:
        raise Refused("The selection does not touch the active layer; there is nothing "
                      "to filter. Select an area on the layer, or Select > None.")
    inner = Region(x, y, w, h)

    Gimp.progress_init("Removing JPEG artifacts")
    if filter_run.auto():
        Gimp.progress_set_text("Detecting JPEG quality")
        estimate = filter_run.estimate()
        qf, source = estimate["qf"], estimate["source"]
    else:
        qf, source = filter_run.config.get_property("qf"), "manual"

    Gimp.progress_set_text("Removing JPEG artifacts (QF %d)" % qf)
    # GIMP calls must stay on this thread, so poll the job's progress here.
    # GIMP's progress Cancel ends this plug-in process: the worker then sees its
    # pipe close and stops, and the image has not been touched yet.
    job, outer, original = submit_restore(filter_run, inner, qf)
    log("run: restoring %r at QF %d (%s), plug-in pid %d"
        % (inner, qf, source, os.getpid()))
    while not job.done():
        done, total = job.progress
        Gimp.progress_update(done / total if total else 0.0)
        time.sleep(0.1)
    result, _info = job.result()
    pixels = filter_run.finish(inner, outer, original, result)
    Gimp.progress_update(1.0)

    write_back(image, drawable, inner, filter_run.fmt, pixels, new_layer)
    Gimp.progress_end()
    return qf, source


def check_model_installed(filter_run):
    """A clear message, before any work, when the chosen model is not there."""
    name = filter_run.options()["model"]
    if name == "auto" or "/" in name or name.endswith(".pth"):
        return
    models = dict((m["name"], m) for m in filter_run.hello().get("models", []))
    entry = models.get(name)
    if entry is not None and entry.get("state") in ("missing", "corrupt"):
        raise Refused("The model '%s' is %s. Download it with the FBCNN installer, or "
                      "choose the Compact model." % (name, entry.get("state")))
