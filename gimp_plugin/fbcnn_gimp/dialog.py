"""The dialog: GIMP's standard widgets for the arguments, a detected-QF line, an
Auto toggle and a before/after preview at 100% that runs the same engine path,
grid and QF as the final run."""
from gi.repository import Gimp, GimpUi, GLib, Gtk

from fbcnn_frontend import client, texts

from filter_run import DEVICES, MODELS, submit_restore
from messages import TITLE, advice, log
from pixels import Region, read_pixels, to_display

PREVIEW = 200   # side of the before/after preview, in image pixels (100% zoom)
DEBOUNCE_MS = 300


class Preview:
    """Before/after of a PREVIEW-sized region at 100%, a navigator to pick it,
    and the worker requests behind it: the QF detection (once per model) and a
    debounced restore that a newer one cancels."""

    def __init__(self, filter_run, qf_label):
        self.filter_run = filter_run
        self.qf_label = qf_label
        d = filter_run.drawable
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
        return self.filter_run.drawable.get_thumbnail(
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
        data = read_pixels(self.filter_run.drawable, r, self.filter_run.fmt.babl)
        self.before.set_from_pixbuf(to_display(data, r, self.filter_run.fmt))

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
        filter_run = self.filter_run
        self.pending = False
        if filter_run.auto() and filter_run.cached_estimate() is None:
            self._detect()
            return
        qf = self.qf = filter_run.qf()
        self.status.set_text("Updating preview at QF %d ..." % qf)
        log("dialog: preview requested at QF %d" % qf)
        self.inner = self.region()
        self.job, self.outer, self.original = submit_restore(filter_run, self.inner, qf)
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
            pixels = self.filter_run.finish(self.inner, self.outer, self.original, result)
            self.after.set_from_pixbuf(to_display(pixels, self.inner, self.filter_run.fmt))
            self.status.set_text("Preview: same engine, grid and QF as the final run.")
            log("dialog: preview shown for %r at QF %d" % (self.inner, self.qf))
            self.log_geometry()
        return False

    # The QF, detected once per image (and model) in the background.
    def _detect(self):
        self.qf_label.set_text("Detecting the JPEG quality ...")
        pixels, fmt, opts = self.filter_run.estimate_request()
        self.detecting = self.filter_run.worker.submit("estimate", pixels, fmt, **opts)
        GLib.timeout_add(50, self._detected)

    def _detected(self):
        job = self.detecting
        if not job.done():
            return True
        self.detecting = None
        filter_run = self.filter_run
        try:
            estimate = job.result()
        except Exception as error:
            text = "QF detection failed: %s" % advice(error)
            self.qf_label.set_text(text)
            log("dialog: " + text)
            return False     # manual mode still previews
        filter_run.remember_estimate(estimate)
        self.qf_label.set_text(texts.describe_qf(estimate))
        log("dialog: %s" % texts.describe_qf(estimate))
        if filter_run.auto():
            filter_run.config.set_property("qf", estimate["qf"])  # the slider shows it
        self._start()
        return False

    def stop(self):
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None
        for job in (self.job, self.detecting):
            if job is not None and not job.done():
                job.cancel()


def run_dialog(procedure, config, filter_run):
    """Show the dialog; True when the user pressed OK."""
    GimpUi.init("fbcnn_gimp")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, TITLE)
    limit_choices(filter_run, config)
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
    auto.set_active(filter_run.auto())
    preview = Preview(filter_run, detected)

    def on_auto(button):
        # Auto is the qf-mode argument; the slider means something only in manual.
        config.set_property("qf-mode", "auto" if button.get_active() else "manual")
        slider.set_sensitive(not button.get_active())
        log("dialog: auto %s, slider sensitive %s"
            % (button.get_active(), slider.get_sensitive()))
        preview.schedule()

    auto.connect("toggled", on_auto)
    slider.set_sensitive(not filter_run.auto())
    # In Auto the slider only shows the detected QF: moving it changes nothing.
    config.connect("notify::qf", lambda *_: None if filter_run.auto() else preview.schedule())
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


def limit_choices(filter_run, config):
    """Only installed models and present devices can be picked: the others are greyed out."""
    hello = filter_run.hello()
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
