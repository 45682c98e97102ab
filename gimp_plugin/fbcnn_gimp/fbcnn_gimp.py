#!/usr/bin/env python3
# FBCNN JPEG artifact removal for GIMP 3 (Filters > Enhance > Remove JPEG Artifacts...)
#
# The story of one run: read the layer's pixels in its own bit depth, ask the
# FBCNN worker (a separate Python that has torch) to restore them, and write the
# result back through GIMP's shadow buffer, so that selections, undo and alpha
# behave as in any GIMP filter.  The worker is reached through the fbcnn_frontend
# package (its client, texts and regions, shared with the Krita plug-in), which the
# installer copies next to this file.  This file uses only GIMP's own Python: the
# standard library and gi.
import os
import sys
import time
from array import array

import gi
gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
gi.require_version("Gtk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import Gimp, GimpUi, Gegl, Babl, GObject, GLib, Gtk, GdkPixbuf

from fbcnn_frontend import client, regions, texts

PROC_NAME = "plug-in-fbcnn-remove-jpeg-artifacts"
TITLE = "Remove JPEG Artifacts"
PREVIEW = 200   # side of the before/after preview, in image pixels (100% zoom)
DEBOUNCE_MS = 300

# (dialog nick, worker model name); the labels are fbcnn_frontend.texts'.
MODELS = [("auto", "auto"), ("compact", "compact"), ("color", "fbcnn_color"),
          ("gray", "fbcnn_gray"), ("gray-double", "fbcnn_gray_double")]
# Dialog nick = worker device name; Intel accelerators are reached through
# OpenVINO, offered only where the worker lists them.
DEVICES = ["auto", "gpu", "cpu", "intel-gpu", "npu"]


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


# --------------------------------------------------------------------------
# Pixels: what we read, in which format, and where it goes back.

class PixelFormat:
    """The drawable's pixels as both babl and the worker name them."""

    def __init__(self, drawable):
        precision = drawable.get_image().get_precision().value_nick  # e.g. "u16-non-linear"
        if precision.startswith("u8"):
            babl_type, self.dtype, self.sample = "u8", "u8", "B"
        elif precision.startswith("u16"):
            babl_type, self.dtype, self.sample = "u16", "u16", "H"
        else:  # u32, half, float, double: float keeps every one of them intact enough
            babl_type, self.dtype, self.sample = "float", "f32", "f"
        self.gray = drawable.is_gray()
        self.alpha = drawable.has_alpha()
        self.order = ("Y" if self.gray else "RGB") + ("A" if self.alpha else "")
        model = ("Y'" if self.gray else "R'G'B'") + ("A" if self.alpha else "")
        self.babl = in_layer_space(model + " " + babl_type, drawable)
        # What QF detection reads: 8-bit, no alpha, same colour space.
        self.babl_u8 = in_layer_space(("Y'" if self.gray else "R'G'B'") + " u8", drawable)
        self.channels = len(self.order)
        self.pixel_bytes = self.channels * array(self.sample).itemsize

    def descriptor(self, w, h):
        return {"width": w, "height": h, "dtype": self.dtype, "order": self.order}


def in_layer_space(encoding, drawable):
    """A babl format name in the layer's own colour space: the network must see
    the values as the JPEG stored them, not converted to sRGB (an Adobe RGB
    photo would lose its saturated colours on the way back)."""
    return Babl.get_name(Babl.format_with_space(encoding, drawable.get_format()))


class Region:
    """A rectangle in drawable coordinates."""

    def __init__(self, x, y, w, h):
        self.x, self.y, self.w, self.h = x, y, w, h

    def rect(self):
        return Gegl.Rectangle.new(self.x, self.y, self.w, self.h)

    def __repr__(self):
        return "Region(%d, %d, %d, %d)" % (self.x, self.y, self.w, self.h)


def read_pixels(drawable, region, babl):
    buf = drawable.get_buffer()
    return bytes(buf.get(region.rect(), 1.0, babl, Gegl.AbyssPolicy.CLAMP))


def with_context(drawable, inner):
    """`inner` grown by the run's context, snapped outward to the image's 8-px grid
    and clipped to the layer, plus its origin in image coordinates (the tiles then
    sit on the JPEG blocks, wherever the layer and the selection start). The preview
    asks with the same context, so it is exactly what the run produces."""
    _, ox, oy = drawable.get_offsets()
    x, y, w, h = regions.grow_to_grid((inner.x, inner.y, inner.w, inner.h), regions.RUN_CONTEXT,
                                      drawable.get_width(), drawable.get_height(), (ox, oy))
    return Region(x, y, w, h), (ox + x, oy + y)


def crop(data, outer, inner, pixel_bytes):
    """The bytes of `inner` out of the bytes of `outer`."""
    return regions.crop(data, (outer.x, outer.y, outer.w, outer.h),
                        (inner.x, inner.y, inner.w, inner.h), pixel_bytes)


def keep_alpha(result, original, fmt):
    """The result with the ORIGINAL alpha samples: alpha must stay bit-identical,
    whatever the network or a float round trip would do to it."""
    if not fmt.alpha:
        return result
    out, src = array(fmt.sample), array(fmt.sample)
    out.frombytes(result)
    src.frombytes(original)
    n = fmt.channels
    out[n - 1::n] = src[n - 1::n]
    return out.tobytes()


def to_display(data, region, fmt):
    """Any of our formats as 8-bit RGB for a GdkPixbuf; babl does the conversion."""
    buf = Gegl.Buffer.new(fmt.babl, 0, 0, region.w, region.h)
    rect = Gegl.Rectangle.new(0, 0, region.w, region.h)
    buf.set(rect, fmt.babl, data)
    rgb = bytes(buf.get(rect, 1.0, "R'G'B' u8", Gegl.AbyssPolicy.CLAMP))
    return GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(rgb), GdkPixbuf.Colorspace.RGB,
                                           False, 8, region.w, region.h, region.w * 3)


def the_layer(drawables):
    """The one pixel layer we can filter, or Refused with what to do instead."""
    if len(drawables) != 1:
        raise Refused("Select exactly one layer, then run %s again." % TITLE)
    drawable = drawables[0]
    if drawable.is_group_layer():
        raise Refused("%s works on pixel layers, not on layer groups. Select a layer "
                      "inside the group, or merge the group first." % TITLE)
    if not drawable.is_layer() or drawable.is_layer_mask():
        raise Refused("%s works on image layers only, not on layer masks or channels. "
                      "Select the layer itself in the Layers dialog." % TITLE)
    refusal = non_raster_refusal(drawable)
    if refusal:
        raise Refused(refusal)
    if drawable.is_indexed():
        raise Refused("%s needs an RGB or grayscale image. Use Image > Mode > RGB first."
                      % TITLE)
    return drawable


# Layers whose pixels GIMP renders from something else (text, a path, a linked
# file): writing pixels into them would throw that source away or be undone by
# the next render. GIMP 3.0 has only text layers; 3.2 adds vector and link
# layers, hence the getattr.
NON_RASTER = [
    ("is_text_layer", "a text layer",
     "Use Layer > Discard Text Information (or Layer > Rasterize in GIMP 3.2) first, "
     "or pick a raster layer."),
    ("is_vector_layer", "a vector layer",
     "Use Layer > Rasterize first, or pick a raster layer."),
    ("is_link_layer", "a link layer (its pixels come from another file)",
     "Use Layer > Rasterize first, or pick a raster layer."),
]


def non_raster_refusal(drawable):
    """What to tell the user when the layer is not made of pixels, else None."""
    for method, what, todo in NON_RASTER:
        test = getattr(drawable, method, None)
        if test is not None and test():
            return "%s works on raster layers; '%s' is %s. %s" % (
                TITLE, drawable.get_name(), what, todo)
    return None


def qf_hints(image):
    """What the image knows about its JPEG origin, for the worker's QF detection:
    first the loader's jpeg-settings parasite, then the original file."""
    hints = {}
    parasite = image.get_parasite("jpeg-settings")
    if parasite is not None:
        hints["jpeg_settings"] = bytes(parasite.get_data()).hex()
    gfile = image.get_imported_file() or image.get_file()
    path = gfile.get_path() if gfile is not None else None
    if path:
        hints["source_path"] = path
    return hints


# --------------------------------------------------------------------------
# The worker, and what to tell the user when it fails.

def open_worker():
    return client.Worker()


def advice(error):
    """A worker error as a message that says what to do, with the worker's last
    words when it failed."""
    text = texts.advice(error, "GIMP")
    tail = (getattr(error, "stderr_tail", "") or "").strip()
    return "%s\n\n%s" % (text, tail[-1500:]) if tail else text


class Session:
    """One use of the filter on one layer: what the preview and the final run
    share, so that the preview is exactly what the run produces."""

    def __init__(self, image, drawable, config):
        self.image, self.drawable, self.config = image, drawable, config
        self.fmt = PixelFormat(drawable)
        self.hints = qf_hints(image)
        self.worker = open_worker()
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


def submit_restore(session, inner, qf):
    """Start restoring `inner` on the worker's thread; poll the returned job."""
    outer, pixels, fmt, opts = session.restore_request(inner, qf)
    job = session.worker.submit("restore", pixels, fmt, **opts)
    return job, outer, pixels


# --------------------------------------------------------------------------
# The final run.

def apply_filter(session):
    """Restore the selection (or the whole layer) and write it back as one undo
    step. Returns the QF used and where it came from."""
    drawable, image = session.drawable, session.image
    new_layer = session.config.get_property("output") == "new-layer"
    if drawable.get_lock_content() and not new_layer:
        raise Refused("The layer's pixels are locked. Unlock them in the Layers dialog, "
                      "or choose Output: New layer above.")
    ok, x, y, w, h = drawable.mask_intersect()
    if not ok or w <= 0 or h <= 0:
        raise Refused("The selection does not touch the active layer; there is nothing "
                      "to filter. Select an area on the layer, or Select > None.")
    inner = Region(x, y, w, h)

    Gimp.progress_init("Removing JPEG artifacts")
    if session.auto():
        Gimp.progress_set_text("Detecting JPEG quality")
        estimate = session.estimate()
        qf, source = estimate["qf"], estimate["source"]
    else:
        qf, source = session.config.get_property("qf"), "manual"

    Gimp.progress_set_text("Removing JPEG artifacts (QF %d)" % qf)
    # GIMP calls must stay on this thread, so poll the job's progress here.
    # GIMP's progress Cancel ends this plug-in process: the worker then sees its
    # pipe close and stops, and the image has not been touched yet.
    job, outer, original = submit_restore(session, inner, qf)
    log("run: restoring %r at QF %d (%s), plug-in pid %d"
        % (inner, qf, source, os.getpid()))
    while not job.done():
        done, total = job.progress
        Gimp.progress_update(done / total if total else 0.0)
        time.sleep(0.1)
    result, _info = job.result()
    pixels = session.finish(inner, outer, original, result)
    Gimp.progress_update(1.0)

    write_back(image, drawable, inner, session.fmt, pixels, new_layer)
    Gimp.progress_end()
    return qf, source


def write_back(image, drawable, inner, fmt, pixels, new_layer):
    """Through the shadow buffer, so GIMP blends by the selection (feathering
    included) and records one undo step named for the filter."""
    image.undo_group_start()
    target = None
    try:
        target = result_layer(image, drawable) if new_layer else drawable
        shadow = target.get_shadow_buffer()
        shadow.set(inner.rect(), fmt.babl, pixels)
        shadow.flush()
        target.merge_shadow(True)
        target.update(inner.x, inner.y, inner.w, inner.h)
    except Exception:
        if new_layer and target is not None:
            image.remove_layer(target)   # no half-made result left behind
        raise
    finally:
        image.undo_group_end()
    Gimp.displays_flush()


def result_layer(image, drawable):
    """A copy of the layer right above it, to receive the result."""
    layer = drawable.copy()
    layer.set_name("%s (JPEG artifacts removed)" % drawable.get_name())
    image.insert_layer(layer, drawable.get_parent(), image.get_item_position(drawable))
    return layer


# --------------------------------------------------------------------------
# The dialog: the standard widgets, a detected-QF line, an Auto toggle and a
# before/after preview at 100% that runs the same engine path as the final run.

class Preview:
    """Before/after of a PREVIEW-sized region at 100%, a navigator to pick it,
    and the worker requests behind it: the QF detection (once per model) and a
    debounced restore that a newer one cancels."""

    def __init__(self, session, qf_label):
        self.session = session
        self.qf_label = qf_label
        d = session.drawable
        self.width, self.height = d.get_width(), d.get_height()
        self.cx, self.cy = self.width // 2, self.height // 2
        self.timer = None
        self.job = None          # the restore in flight
        self.detecting = None    # the QF detection in flight
        self.pending = False     # a request waits for the one in flight to end
        self.drag = None
        self.before = Gtk.Image()
        self.after = Gtk.Image()
        self.thumb = self._thumbnail()
        self.navigator = Gtk.Image()
        self.widget = self._layout()
        self._show_before()
        self._draw_navigator()

    # Layout and input.
    def _layout(self):
        frame = Gtk.Frame(label="Preview (100%)")
        grid = Gtk.Grid(column_spacing=8, row_spacing=4, margin=6)
        nav_box = self.nav_box = Gtk.EventBox()
        nav_box.add(self.navigator)
        nav_box.connect("button-press-event", self._on_nav)
        nav_box.connect("motion-notify-event", self._on_nav)
        nav_box.set_tooltip_text("Click or drag to choose the preview region")
        before_box = Gtk.EventBox()
        before_box.add(self.before)
        before_box.connect("button-press-event", self._on_press)
        before_box.connect("motion-notify-event", self._on_drag)
        before_box.connect("button-release-event", self._on_release)
        before_box.set_tooltip_text("Drag to move the preview region")
        for col, (label, child) in enumerate((("Region", nav_box), ("Before", before_box),
                                              ("After", self.after))):
            grid.attach(Gtk.Label(label=label), col, 0, 1, 1)
            grid.attach(child, col, 1, 1, 1)
        self.status = Gtk.Label(label="", xalign=0)
        grid.attach(self.status, 0, 2, 3, 1)
        frame.add(grid)
        return frame

    def region(self):
        w, h = min(PREVIEW, self.width), min(PREVIEW, self.height)
        x = min(max(self.cx - w // 2, 0), self.width - w)
        y = min(max(self.cy - h // 2, 0), self.height - h)
        return Region(x, y, w, h)

    def _thumbnail(self):
        self.nav_scale = 120.0 / max(self.width, self.height)
        return self.session.drawable.get_thumbnail(
            max(1, int(self.width * self.nav_scale)), max(1, int(self.height * self.nav_scale)),
            Gimp.PixbufTransparency.SMALL_CHECKS)

    def _draw_navigator(self):
        """The thumbnail with the preview region outlined."""
        pb = self.thumb.copy()
        r, s = self.region(), self.nav_scale
        x0, y0 = int(r.x * s), int(r.y * s)
        x1 = min(pb.get_width() - 1, int((r.x + r.w) * s))
        y1 = min(pb.get_height() - 1, int((r.y + r.h) * s))
        for (x, y, w, h) in ((x0, y0, x1 - x0 + 1, 1), (x0, y1, x1 - x0 + 1, 1),
                             (x0, y0, 1, y1 - y0 + 1), (x1, y0, 1, y1 - y0 + 1)):
            if w > 0 and h > 0:
                pb.new_subpixbuf(x, y, w, h).fill(0xff3030ff)
        self.navigator.set_from_pixbuf(pb)

    def _move_to(self, cx, cy):
        self.cx = min(max(int(cx), 0), self.width - 1)
        self.cy = min(max(int(cy), 0), self.height - 1)
        self._draw_navigator()
        self._show_before()
        self.after.clear()
        self.schedule()

    def _on_nav(self, _box, event):
        self._move_to(event.x / self.nav_scale, event.y / self.nav_scale)
        return True

    def _on_press(self, _box, event):
        self.drag = (event.x, event.y, self.cx, self.cy)
        return True

    def _on_drag(self, _box, event):
        if self.drag is not None:
            x, y, cx, cy = self.drag
            self.cx = min(max(int(cx - (event.x - x)), 0), self.width - 1)
            self.cy = min(max(int(cy - (event.y - y)), 0), self.height - 1)
            self._show_before()
        return True

    def _on_release(self, _box, _event):
        self.drag = None
        self._move_to(self.cx, self.cy)
        return True

    def _show_before(self):
        r = self.region()
        data = read_pixels(self.session.drawable, r, self.session.fmt.babl)
        self.before.set_from_pixbuf(to_display(data, r, self.session.fmt))

    def log_geometry(self):
        """Where the navigator sits on the screen (for scripted UI tests)."""
        window = self.nav_box.get_window()
        if window is not None:
            origin = window.get_origin()
            log("dialog: navigator at %d,%d" % (origin[-2], origin[-1]))

    # Requests: debounced; a newer one cancels the stale one in flight.
    def schedule(self):
        if self.timer is not None:
            GLib.source_remove(self.timer)
        self.timer = GLib.timeout_add(DEBOUNCE_MS, self._fire)

    def _fire(self):
        self.timer = None
        self.pending = True
        if self.job is not None and not self.job.done():
            self.job.cancel()        # _poll starts the new request when it ends
            log("dialog: cancelled a stale preview request")
        elif self.detecting is None:
            self._start()
        return False

    def _start(self):
        session = self.session
        self.pending = False
        if session.auto() and session.cached_estimate() is None:
            self._detect()
            return
        qf = self.qf = session.qf()
        self.status.set_text("Updating preview at QF %d ..." % qf)
        log("dialog: preview requested at QF %d" % qf)
        self.inner = self.region()
        self.job, self.outer, self.original = submit_restore(session, self.inner, qf)
        GLib.timeout_add(50, self._poll)

    def _poll(self):
        job = self.job
        if not job.done():
            return True
        self.job = None
        try:
            result, _info = job.result()
        except Exception as error:  # a cancelled stale request, or a worker error
            if getattr(error, "kind", "") != "cancelled":
                self.status.set_text("Preview failed: %s" % advice(error))
                log("dialog: preview failed: %s" % error)
            result = None
        if self.pending:
            self._start()
        elif result is not None:
            pixels = self.session.finish(self.inner, self.outer, self.original, result)
            self.after.set_from_pixbuf(to_display(pixels, self.inner, self.session.fmt))
            self.status.set_text("Preview: same engine, grid and QF as the final run.")
            log("dialog: preview shown for %r at QF %d" % (self.inner, self.qf))
            self.log_geometry()
        return False

    # The QF, detected once per image (and model) in the background.
    def _detect(self):
        self.qf_label.set_text("Detecting the JPEG quality ...")
        pixels, fmt, opts = self.session.estimate_request()
        self.detecting = self.session.worker.submit("estimate", pixels, fmt, **opts)
        GLib.timeout_add(50, self._detected)

    def _detected(self):
        job = self.detecting
        if not job.done():
            return True
        self.detecting = None
        session = self.session
        try:
            estimate = job.result()
        except Exception as error:
            text = "QF detection failed: %s" % advice(error)
            self.qf_label.set_text(text)
            log("dialog: " + text)
            return False     # manual mode still previews
        session.remember_estimate(estimate)
        self.qf_label.set_text(texts.describe_qf(estimate))
        log("dialog: %s" % texts.describe_qf(estimate))
        if session.auto():
            session.config.set_property("qf", estimate["qf"])  # the slider shows it
        self._start()
        return False

    def stop(self):
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None
        for job in (self.job, self.detecting):
            if job is not None and not job.done():
                job.cancel()


def run_dialog(procedure, config, session):
    """Show the dialog; True when the user pressed OK."""
    GimpUi.init("fbcnn_gimp")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, TITLE)
    limit_choices(session, config)
    slider = dialog.get_spin_scale("qf", 1.0)     # a slider rather than a bare spin button
    # Combo boxes in every GIMP: 3.2 would draw the short choices as radio frames,
    # whose titles carry no mnemonic (GIMP warns), and 3.0 draws combos anyway.
    for prop in ("model", "output", "device"):
        dialog.get_widget(prop, Gtk.ComboBox.__gtype__)
    dialog.fill(["qf", "model", "output", "device"])
    area = dialog.get_content_area()

    detected = Gtk.Label(label="", xalign=0)
    detected.set_line_wrap(True)
    detected.set_max_width_chars(60)
    auto = Gtk.CheckButton.new_with_mnemonic("_Auto: use the detected quality")
    auto.set_active(session.auto())
    preview = Preview(session, detected)

    def on_auto(button):
        # Auto is the qf-mode argument; the slider means something only in manual.
        config.set_property("qf-mode", "auto" if button.get_active() else "manual")
        slider.set_sensitive(not button.get_active())
        log("dialog: auto %s, slider sensitive %s"
            % (button.get_active(), slider.get_sensitive()))
        preview.schedule()

    auto.connect("toggled", on_auto)
    slider.set_sensitive(not session.auto())
    # In Auto the slider only shows the detected QF: moving it changes nothing.
    config.connect("notify::qf", lambda *_: None if session.auto() else preview.schedule())
    for prop in ("model", "device"):
        config.connect("notify::" + prop, lambda *_: preview.schedule())

    top = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4, margin=6)
    top.pack_start(detected, False, False, 0)
    top.pack_start(auto, False, False, 0)
    area.pack_start(top, False, False, 0)
    area.reorder_child(top, 0)
    area.pack_start(preview.widget, True, True, 0)
    area.show_all()
    log("dialog: open, auto %s, slider sensitive %s"
        % (auto.get_active(), slider.get_sensitive()))

    preview.schedule()
    try:
        return dialog.run()
    finally:
        preview.stop()
        dialog.destroy()


def limit_choices(session, config):
    """Only installed models and present devices can be picked: the others are greyed out."""
    hello = session.hello()
    installed = set(client.installed_models(hello))
    devices = set(hello.get("devices", []))
    offered = {"model": [], "device": []}
    for prop, items, usable in (
            ("model", MODELS, lambda name: name in installed),
            # "gpu" means any GPU the worker has; intel-gpu and npu only when listed.
            ("device", [(nick, nick) for nick in DEVICES],
             lambda name: name not in ("intel-gpu", "npu") or name in devices)):
        choice = Gimp.param_spec_choice_get_choice(config.find_property(prop))
        for nick, name in items:
            choice.set_sensitive(nick, usable(name))
            if usable(name):
                offered[prop].append(nick)
    log("dialog: models offered: %s" % ", ".join(offered["model"]))
    log("dialog: devices offered: %s" % ", ".join(offered["device"]))


def check_model_installed(session):
    """A clear message, before any work, when the chosen model is not there."""
    name = session.options()["model"]
    if name == "auto" or "/" in name or name.endswith(".pth"):
        return
    models = dict((m["name"], m) for m in session.hello().get("models", []))
    entry = models.get(name)
    if entry is not None and entry.get("state") in ("missing", "corrupt"):
        raise Refused("The model '%s' is %s. Download it with the FBCNN installer, or "
                      "choose the Compact model." % (name, entry.get("state")))


# --------------------------------------------------------------------------
# Registration.

class FbcnnPlugIn(Gimp.PlugIn):

    def do_query_procedures(self):
        return [PROC_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Remove JPEG _Artifacts...")
        procedure.add_menu_path("<Image>/Filters/Enhance")
        procedure.set_documentation(
            "Remove JPEG compression artifacts with FBCNN",
            "Removes the blocks, ringing and colour smears of JPEG compression with "
            "FBCNN (Jiang et al., ICCV 2021). The JPEG quality (QF) is read from the "
            "file or predicted; set it by hand for stronger or gentler cleaning. "
            "Works on the selection, at the layer's own bit depth; alpha is kept.",
            name)
        procedure.set_attribution("FBCNN for GIMP and Krita contributors",
                                  "FBCNN: Jiaxi Jiang, Kai Zhang, Radu Timofte; "
                                  "Apache-2.0", "2026")
        flags = GObject.ParamFlags.READWRITE
        procedure.add_choice_argument("qf-mode", "QF mode", "Detect the JPEG quality, or use qf",
                                      choice([("auto", "Auto"), ("manual", "Manual")]),
                                      "auto", flags)
        procedure.add_int_argument("qf", "_Quality (QF)",
                                   "JPEG quality to undo, 1..100; lower cleans harder",
                                   1, 100, 50, flags)
        procedure.add_choice_argument("model", "_Model", "Which FBCNN model to use",
                                      choice([(n, texts.model_label(m)) for n, m in MODELS]), "auto", flags)
        procedure.add_choice_argument("output", "O_utput", "Where the result goes",
                                      choice([("replace", "Replace layer pixels"),
                                              ("new-layer", "New layer above")]),
                                      "replace", flags)
        procedure.add_choice_argument("device", "_Device", "Where the network runs",
                                      choice([(d, texts.DEVICE_LABELS[d]) for d in DEVICES]), "auto", flags)
        procedure.add_string_argument("model-file", "Model file",
                                      "A .pth file to use instead of 'model' (scripts)",
                                      "", flags)
        procedure.add_int_return_value("qf-used", "QF used", "The QF the filter used",
                                       0, 100, 0, flags)
        procedure.add_string_return_value("qf-source", "QF source",
                                          "file, double-jpeg, network or manual", "", flags)
        return procedure


def choice(items):
    c = Gimp.Choice.new()
    for i, (nick, label) in enumerate(items):
        c.add(nick, i, label, "")
    return c


def run(procedure, run_mode, image, drawables, config, data):
    """The story: check the layer, (ask the user), restore, write back."""
    session = None
    try:
        session = Session(image, the_layer(drawables), config)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            if not run_dialog(procedure, config, session):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        check_model_installed(session)
        qf, source = apply_filter(session)
    except Exception as error:  # every failure leaves the image as it was
        return failure(procedure, error)
    finally:
        if session is not None:
            session.close()
    result = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)
    result.truncate(1)         # drop the default return values, keep the status
    result.append(qf)          # qf-used
    result.append(source)      # qf-source
    return result


def failure(procedure, error):
    Gimp.progress_end()
    if isinstance(error, Refused):
        message = str(error)
    elif hasattr(error, "kind"):
        message = advice(error)
    else:
        message = "%s failed: %s: %s" % (TITLE, type(error).__name__, error)
    Gimp.message(message)
    return procedure.new_return_values(
        Gimp.PDBStatusType.EXECUTION_ERROR,
        GLib.Error.new_literal(Gimp.PlugIn.error_quark(), message, 0))


Gimp.main(FbcnnPlugIn.__gtype__, sys.argv)
