"""The dialog: detected QF, QF controls, before/after preview, model, device, output.

It never blocks Krita: every worker request is a Pending that reports back to
the GUI thread. Only the newest preview request matters; older ones are
cancelled. Closing the dialog cancels whatever is running.
"""
import functools
import os
import traceback

from . import filter_run
from .fbcnn_frontend import client, regions, texts
from .messages import show_error
from .qt import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout,
                 QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QRadioButton,
                 QSlider, QSpinBox, Qt, QTimer, QVBoxLayout)
from .preview import AFTER, BEFORE, SPLIT, PreviewView, to_qimage
from .connection import FbcnnError, Pending

PREVIEW_SIZE = (384, 288)
# QDialog::Rejected: done() gets a plain int in both bindings, and PyQt6's enums
# don't compare equal to ints.
REJECTED = 0
DEBOUNCE_MS = 350


def reported(slot):
    """Slots never raise into Krita (its hook would open a crash report): show the error."""
    takes = slot.__code__.co_argcount - 1

    @functools.wraps(slot)
    def wrapper(self, *args):
        try:
            return slot(self, *args[:takes])  # Qt may pass more arguments than the slot takes
        except FbcnnError as e:
            self._set_state("failed")
            show_error(e, self)
        except Exception as e:
            self._set_state("failed")
            show_error(FbcnnError(f"Unexpected error: {type(e).__name__}: {e}. Please report "
                                  "this with the details.", details=traceback.format_exc()),
                       self)
    return wrapper


class FilterDialog(QDialog):
    def __init__(self, document, node, parent=None):
        super().__init__(parent)
        self.setObjectName("fbcnn_krita_dialog")
        self.setWindowTitle("Remove JPEG Artifacts")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.document, self.node = document, node
        self.target = filter_run.Target(document, node)  # refuses CMYK & co. before showing
        self.linear = "g10" in node.colorProfile() or "linear" in node.colorProfile().lower()
        self.detected = None       # the worker's estimate for the whole image
        self.preview_job = None
        self.run_job = None
        self.previews_requested = 0  # how many previews reached the worker (diagnostics)
        self.preview_center = self._initial_center()
        self.debounce = QTimer(self)  # restarted by every change; fires once things settle
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)
        self.debounce.timeout.connect(self.request_preview)
        self._build()
        self._load_settings()
        self._set_state("starting")
        self._start_job(Pending("hello", parent=self), self._on_hello)

    # ------------------------------------------------------------ layout

    def _build(self):
        self.detected_label = QLabel("Detecting the JPEG quality...")
        self.detected_label.setObjectName("detected")
        form = QFormLayout()
        form.addRow("Quality (QF):", self._build_qf_row())
        self._build_choices(form)
        layout = QVBoxLayout(self)
        layout.addWidget(self.detected_label)
        layout.addLayout(form)
        layout.addWidget(self._build_preview())
        layout.addLayout(self._build_progress_row())
        self.status = QLabel("")
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addWidget(self._build_buttons())

    def _build_qf_row(self):
        self.auto = QCheckBox("Auto")
        self.auto.setToolTip("Use the detected quality")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(1, 100)
        self.spin = QSpinBox()
        self.spin.setRange(1, 100)
        self.slider.valueChanged.connect(self.spin.setValue)
        self.spin.valueChanged.connect(self.slider.setValue)
        self.spin.valueChanged.connect(self._qf_changed)
        self.auto.toggled.connect(self._auto_toggled)
        row = QHBoxLayout()
        row.addWidget(self.auto)
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        return row

    def _build_preview(self):
        self.preview = PreviewView(PREVIEW_SIZE)
        self.preview.moved.connect(self._preview_moved)
        self.view_mode = QComboBox()
        for label, mode in (("Split: before | after", SPLIT), ("Before", BEFORE),
                            ("After", AFTER)):
            self.view_mode.addItem(label, mode)
        self.view_mode.currentIndexChanged.connect(
            lambda: self.preview.set_mode(self.view_mode.currentData()))
        box = QGroupBox("Preview at 100% (drag to move)")
        layout = QVBoxLayout(box)
        layout.addWidget(self.preview, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.view_mode)
        return box

    def _build_choices(self, form):
        self.model = QComboBox()
        self.model.setObjectName("model")
        self.device = QComboBox()
        self.device.setObjectName("device")
        self.model.currentIndexChanged.connect(self._model_changed)
        self.device.currentIndexChanged.connect(self.schedule_preview)
        self.new_layer = QRadioButton("New layer above")
        self.replace = QRadioButton("Replace layer")
        self.new_layer.setChecked(True)
        self.output_group = QButtonGroup(self)
        self.output_group.addButton(self.new_layer)
        self.output_group.addButton(self.replace)
        output_row = QHBoxLayout()
        output_row.addWidget(self.new_layer)
        output_row.addWidget(self.replace)
        output_row.addStretch(1)
        form.addRow("Model:", self.model)
        form.addRow("Device:", self.device)
        form.addRow("Output:", output_row)

    def _build_progress_row(self):
        self.progress = QProgressBar()
        self.progress.setObjectName("progress")
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self._cancel_run)
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        return row

    def _build_buttons(self):
        buttons = QDialogButtonBox()
        self.apply_button = buttons.addButton("Apply", QDialogButtonBox.ButtonRole.AcceptRole)
        self.apply_button.setObjectName("apply")
        self.apply_button.setEnabled(False)
        self.close_button = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.apply_button.clicked.connect(self.apply)
        self.close_button.clicked.connect(self.reject)
        return buttons

    def _load_settings(self):
        self.auto.setChecked(filter_run.setting("auto", "true") == "true")
        self.spin.setValue(_int(filter_run.setting("qf", "50"), 50))
        self.slider.setEnabled(not self.auto.isChecked())
        self.spin.setEnabled(not self.auto.isChecked())
        self.replace.setChecked(filter_run.setting("output", "new-layer") == "replace")
        index = self.view_mode.findData(filter_run.setting("view", SPLIT))
        self.view_mode.setCurrentIndex(max(0, index))

    def _save_settings(self):
        filter_run.write_setting("auto", "true" if self.auto.isChecked() else "false")
        filter_run.write_setting("qf", self.spin.value())
        filter_run.write_setting("output", self.output())
        filter_run.write_setting("view", self.view_mode.currentData())
        if self.model.count():
            filter_run.write_setting("model", self.model.currentData())
        if self.device.count():
            filter_run.write_setting("device", self.device.currentData())

    # ------------------------------------------------------------ choices

    def qf(self):
        if self.auto.isChecked() and self.detected is not None:
            return int(self.detected["qf"])
        return self.spin.value()

    def output(self):
        return "replace" if self.replace.isChecked() else "new-layer"

    def _initial_center(self):
        x, y, w, h = self.target.rect
        return (x + w // 2, y + h // 2)

    def _set_state(self, state):
        # A dynamic property, so scripts and tests can tell where the dialog is.
        self.setProperty("fbcnn_state", state)

    @reported
    def _on_hello(self, hello):
        """Offer only the models and devices the worker has."""
        self._fill(self.model, client.installed_models(hello), texts.MODEL_LABELS,
                   filter_run.setting("model", "auto"))
        self._fill(self.device, ["auto"] + [d for d in hello.get("devices", []) if d != "auto"],
                   texts.DEVICE_LABELS, filter_run.setting("device", "auto"))
        self.estimate()

    def _fill(self, combo, names, labels, saved):
        combo.blockSignals(True)
        combo.clear()
        if saved not in names and saved.endswith(".pth") and os.path.isfile(saved):
            names = names + [saved]  # a model file of the user's own
        for name in names:
            combo.addItem(labels.get(name, os.path.basename(name)), name)
        combo.setCurrentIndex(max(0, combo.findData(saved)))
        combo.blockSignals(False)

    # ------------------------------------------------------------ QF detection

    @reported
    def estimate(self):
        """One QF for the whole image, used by the preview and the full run alike."""
        self._set_state("estimating")
        self.detected_label.setText("Detecting the JPEG quality...")
        self._start_job(filter_run.estimate(self.target, self.model.currentData(), parent=self),
                        self._on_estimate)

    @reported
    def _on_estimate(self, detected):
        self.detected = detected
        self.detected_label.setText(
            texts.describe_qf(detected))
        if self.auto.isChecked():
            self.spin.setValue(int(detected["qf"]))
        self.apply_button.setEnabled(True)
        self.request_preview()

    def _auto_toggled(self, checked):
        self.slider.setEnabled(not checked)
        self.spin.setEnabled(not checked)
        if checked and self.detected is not None:
            self.spin.setValue(int(self.detected["qf"]))
        self.schedule_preview()

    def _qf_changed(self):
        self.schedule_preview()

    def _model_changed(self):
        # The network's own QF guess depends on the model; file tables do not.
        if self.detected is not None and self.detected["source"] == "network":
            self.estimate()
        else:
            self.schedule_preview()

    # ------------------------------------------------------------ preview

    def schedule_preview(self):
        if self.detected is not None and self.run_job is None:
            self._set_state("previewing")
            self.debounce.start()

    @reported
    def _preview_moved(self, dx, dy):
        cx, cy = self.preview_center
        self.preview_center = (cx + dx, cy + dy)
        self._show_before()
        self.schedule_preview()

    def _preview_rects(self):
        rect = regions.preview_rect(self.preview_center, PREVIEW_SIZE,
                                   self.target.width, self.target.height)
        self.preview_center = (rect[0] + rect[2] // 2, rect[1] + rect[3] // 2)
        context = regions.grow_to_grid(rect, regions.PREVIEW_CONTEXT, self.target.width,
                                      self.target.height)
        return rect, context

    def _show_before(self):
        rect, _ = self._preview_rects()
        self.preview.set_before(self._image(self.target.read(rect), rect))
        self.preview.set_message("Updating the preview...")

    def _image(self, data, rect):
        return to_qimage(data, self.target.layout, rect[2], rect[3], self.linear)

    @reported
    def request_preview(self):
        """Restore the preview region exactly as the full run would (same QF, grid, mask)."""
        if self.detected is None or self.run_job is not None:
            return
        self.debounce.stop()  # asked for now: a pending debounced request would repeat it
        if self.preview_job is not None:
            self.preview_job.cancel()  # stale: its answer will be ignored
        self.previews_requested += 1
        rect, context = self._preview_rects()
        before = self.target.read(rect)
        if self.preview.before is None:
            self.preview.set_before(self._image(before, rect))
        self.preview.set_message(f"Computing the preview at QF {self.qf()}...")
        self._set_state("previewing")
        job = filter_run.restore(self.target, context, self.qf(), self.model.currentData(),
                              self.device.currentData(), parent=self)
        self.preview_job = job
        job.finished.connect(lambda result: self._on_preview(job, result, rect, context, before))
        job.failed.connect(lambda error: self._on_preview_failed(job, error))

    @reported
    def _on_preview(self, job, result, rect, context, before):
        if job is not self.preview_job:
            return
        self.preview_job = None
        after = regions.crop(result[0], context, rect, self.target.layout.bytes_per_pixel)
        self.preview.set_images(self._image(before, rect), self._image(after, rect))
        self.status.setText("")
        self._set_state("ready")

    def _on_preview_failed(self, job, error):
        if job is not self.preview_job:
            return
        self.preview_job = None
        if getattr(error, "kind", "") != "cancelled":
            self.preview.set_message("No preview (see below)")
            self.status.setText(getattr(error, "message", str(error)))
        self._set_state("ready")

    # ------------------------------------------------------------ the full run

    @reported
    def apply(self):
        """Run on the whole layer (or the selection), then put the result in the document."""
        if self.detected is None or self.run_job is not None:
            return
        self._save_settings()
        try:
            # Read the document as it is now: it may have changed since the dialog opened.
            self.target = filter_run.Target(self.document, self.node)
        except FbcnnError as e:
            show_error(e, self)
            return
        if self.preview_job is not None:
            self.preview_job.cancel()
            self.preview_job = None
        self.debounce.stop()
        self._busy(True)
        qf = self.qf()
        source = self.detected["source"] if self.auto.isChecked() else "manual"
        job = filter_run.restore(self.target, self.target.rect, qf, self.model.currentData(),
                              self.device.currentData(), parent=self)
        self.run_job = job
        job.progressed.connect(self._on_progress)
        job.finished.connect(lambda result: self._on_run_done(result, qf, source))
        job.failed.connect(self._on_run_failed)
        self._set_state("running")

    def _busy(self, busy):
        for widget in (self.apply_button, self.auto, self.model, self.device, self.new_layer,
                       self.replace):
            widget.setEnabled(not busy)
        self.slider.setEnabled(not busy and not self.auto.isChecked())
        self.spin.setEnabled(not busy and not self.auto.isChecked())
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.status.setText("Removing JPEG artifacts..." if busy else "")

    def _on_progress(self, done, total):
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _cancel_run(self):
        if self.run_job is not None:
            self.status.setText("Cancelling...")
            self.run_job.cancel()

    @reported
    def _on_run_done(self, result, qf, source):
        data, info = result
        self.run_job = None
        try:
            filter_run.write_result(self.target, data, self.output(),
                                 f"JPEG artifacts removed, QF {qf}")
        except FbcnnError as e:
            self._busy(False)
            self._set_state("failed")
            show_error(e, self)
            return
        filter_run.record_run(self.target, qf, source, self.detected, info, self.output())
        self._set_state("done")
        self.accept()

    def _on_run_failed(self, error):
        self.run_job = None
        self._busy(False)
        if getattr(error, "kind", "") == "cancelled":
            self.status.setText("Cancelled; the document is unchanged.")
            self._set_state("ready")
            return
        self._set_state("failed")
        show_error(error, self)

    # ------------------------------------------------------------ plumbing

    def _start_job(self, job, on_result):
        job.finished.connect(on_result)
        job.failed.connect(self._on_setup_failed)

    def _on_setup_failed(self, error):
        """Without a worker, a model or a QF there is nothing to show: explain and close."""
        if getattr(error, "kind", "") == "cancelled":
            return
        self._set_state("failed")
        show_error(error, self)
        self.reject()

    def done(self, code):
        # Closing the dialog (Close, Esc, the window's X) stops all its work.
        for job in (self.preview_job, self.run_job):
            if job is not None:
                job.cancel()
        self.preview_job = self.run_job = None
        self.debounce.stop()
        if code == REJECTED:
            self._save_settings()
        super().done(code)


def _int(text, default):
    try:
        return min(100, max(1, int(text)))
    except (TypeError, ValueError):
        return default
