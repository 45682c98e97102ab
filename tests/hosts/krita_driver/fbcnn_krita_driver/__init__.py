"""Test-only driver: runs a JSON job inside a real Krita, then quits.

Inert unless the environment variable FBCNN_KRITA_DRIVER_JOB names a job file.
The job is a list of steps (open, create, select, run, dialog, undo, dump, ...);
each step's outcome goes into the result JSON, which is rewritten after every
step so a run that is killed from outside still tells how far it got. Pixels
leave Krita as raw files (node.pixelData) and are checked by pytest.
"""
import json
import os
import sys
import time
import traceback

from krita import Extension, InfoObject, Krita, Selection
# The plug-in's own choice of PyQt5 or PyQt6: the driver runs in every Krita it does.
from fbcnn_krita.qt import (QT_MAJOR, QApplication, QComboBox, QLabel, QMessageBox, QPushButton,
                            QTimer, sip)

ENV = "FBCNN_KRITA_DRIVER_JOB"
POLL_MS = 50
_started = False
_runner = None


class Wait:
    """Yielded by a step: resume when predicate() is truthy, fail after timeout seconds."""

    def __init__(self, predicate, timeout, what):
        self.predicate, self.timeout, self.what = predicate, timeout, what


class Runner:
    def __init__(self, job_path):
        with open(job_path) as f:
            self.job = json.load(f)
        self.out = self.job["result"]
        self.results = {"steps": {}, "exceptions": [], "finished": False,
                        "krita_version": Krita.instance().version(),
                        "python": sys.version.split()[0], "qt_major": QT_MAJOR,
                        "driver_started": time.time()}
        self.docs = {}
        self.last_result = None
        self.max_gap = 0.0
        self.t0 = time.monotonic()

    # -- the coroutine machinery

    def start(self):
        sys.excepthook = self._excepthook  # Krita's own hook opens a modal dialog
        self.gen = self.main()
        self._advance(None)

    def _excepthook(self, kind, value, tb):
        self.results["exceptions"].append("".join(traceback.format_exception(kind, value, tb)))
        self.save()

    def _advance(self, value):
        try:
            wait = self.gen.send(value)
        except StopIteration:
            return
        deadline = time.monotonic() + wait.timeout
        last = [time.monotonic()]

        def check():
            # The longest pause between two polls shows whether Krita's GUI thread
            # was ever blocked (the polls are 50 ms apart when it is free).
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last[0])
            last[0] = now
            try:
                got = wait.predicate()
            except Exception:  # a predicate that breaks counts as not yet
                got = None
            if got:
                self._advance(got)
            elif time.monotonic() > deadline:
                self._advance(TimeoutError(f"timed out after {wait.timeout} s waiting for "
                                           f"{wait.what}"))
            else:
                QTimer.singleShot(POLL_MS, check)
        QTimer.singleShot(POLL_MS, check)

    def main(self):
        for step in self.job["steps"]:
            name = step["id"]
            record = {"op": step["op"], "ok": False}
            self.results["steps"][name] = record
            started = time.monotonic()
            try:
                handler = getattr(self, "op_" + step["op"])
                outcome = handler(step, record)
                if hasattr(outcome, "send"):  # a step that waits
                    value = None
                    while True:
                        try:
                            wait = outcome.send(value)
                        except StopIteration:
                            break
                        value = yield wait
                        if isinstance(value, TimeoutError):
                            outcome.throw(value)
                record["ok"] = True
            except Exception:
                record["error"] = traceback.format_exc()
            record["seconds"] = round(time.monotonic() - started, 3)
            self.save()
        yield from self.quit()

    def save(self):
        self.results["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, default=str)
        os.replace(tmp, self.out)

    def quit(self):
        for doc in Krita.instance().documents():
            doc.setModified(False)
            doc.close()
        self.results["finished"] = True
        self.save()
        yield Wait(lambda: True, 1, "a last event-loop turn")
        Krita.instance().action("file_quit").trigger()

    # -- helpers

    def doc(self, step):
        return self.docs[step["doc"]]

    def node(self, step, doc=None):
        doc = doc or self.doc(step)
        name = step.get("node")
        if name is None:
            return doc.activeNode()
        if name == "@result":  # the node the last run returned
            return self.last_result
        if name.startswith("#"):  # "#0": the bottom top-level layer, whatever its name
            return doc.topLevelNodes()[int(name[1:])]
        found = [n for n in _all_nodes(doc.rootNode()) if n.name() == name]
        if not found:
            raise LookupError(f"no layer named {name!r}; layers: {layer_names(doc)}")
        return found[0]

    def show(self, doc):
        """Make doc the active document in the window, so actions act on it."""
        app = Krita.instance()
        window = app.activeWindow()
        for view in window.views():
            if view.document() == doc:
                window.showView(view)
                view.setVisible()
        app.setActiveDocument(doc)

    def describe(self, doc, record):
        record.update(width=doc.width(), height=doc.height(), color_model=doc.colorModel(),
                      color_depth=doc.colorDepth(), file_name=doc.fileName(),
                      layers=layer_names(doc), active=doc.activeNode().name())

    # -- steps

    def op_probe(self, step, record):
        """Is the plug-in loaded, and is its action in the Filter menu?"""
        import fbcnn_krita
        app = Krita.instance()
        action = app.action(fbcnn_krita.ACTION_ID)
        record["action"] = None if action is None else action.text()
        record["plugin_file"] = fbcnn_krita.__file__
        window = app.activeWindow().qwindow()
        menus = {m.text().replace("&", ""): m.menu() for m in window.menuBar().actions()}
        record["menus"] = sorted(menus)
        record["filter_menu"] = [a.objectName() for a in menus["Filter"].actions()]
        try:
            from fbcnn_krita.fbcnn_frontend import client
            record["client"] = client.__file__
        except ImportError as e:
            record["client"] = f"missing: {e}"

    def op_open(self, step, record):
        app = Krita.instance()
        doc = app.openDocument(step["path"])
        if doc is None:
            raise RuntimeError(f"Krita could not open {step['path']}")
        app.activeWindow().addView(doc)
        doc.waitForDone()
        yield from view_settled(doc)
        self.docs[step["doc"]] = doc
        self.describe(doc, record)

    def op_create(self, step, record):
        app = Krita.instance()
        doc = app.createDocument(step["width"], step["height"], step["doc"], step["model"],
                                 step["depth"], step.get("profile", ""), 72.0)
        app.activeWindow().addView(doc)
        yield from view_settled(doc)
        layer = doc.topLevelNodes()[-1]
        layer.setName(step.get("layer", "image"))
        with open(step["raw"], "rb") as f:
            layer.setPixelData(f.read(), 0, 0, step["width"], step["height"])
        doc.setActiveNode(layer)
        doc.refreshProjection()
        doc.waitForDone()
        self.docs[step["doc"]] = doc
        self.describe(doc, record)
        record["profile"] = layer.colorProfile()

    def op_select(self, step, record):
        doc = self.doc(step)
        x, y, w, h = step["rect"]
        selection = Selection()
        if "raw" in step:
            with open(step["raw"], "rb") as f:
                selection.setPixelData(f.read(), x, y, w, h)
        else:
            selection.select(x, y, w, h, 255)
        doc.setSelection(selection)
        doc.waitForDone()
        current = doc.selection()
        record["bounds"] = [current.x(), current.y(), current.width(), current.height()]

    def op_deselect(self, step, record):
        doc = self.doc(step)
        doc.setSelection(None)
        record["selection"] = doc.selection() is not None

    def op_dump(self, step, record):
        doc = self.doc(step)
        doc.waitForDone()
        rect = step.get("rect") or [0, 0, doc.width(), doc.height()]
        if step.get("node") == "@projection":  # the composited image
            node, data = doc.rootNode(), bytes(doc.pixelData(*rect))
        else:
            node = self.node(step, doc)
            data = bytes(node.pixelData(*rect))
        with open(step["out"], "wb") as f:
            f.write(data)
        self.describe(doc, record)
        record.update(node=node.name(), node_color_model=node.colorModel(),
                      node_color_depth=node.colorDepth(), rect=rect, nbytes=len(data),
                      modified=doc.modified())

    def op_run(self, step, record):
        import fbcnn_krita
        doc = self.doc(step)
        node = self.node(step, doc)
        started = time.monotonic()
        try:
            result = fbcnn_krita.run(doc, node, **step.get("kwargs", {}))
        except Exception as e:  # the test asserts on the kind of error and its text
            record["raised"] = {"type": type(e).__name__, "message": str(e),
                                "kind": getattr(e, "kind", None),
                                "details": getattr(e, "details", "")}
            return
        finally:
            record["run_s"] = round(time.monotonic() - started, 3)
        self.last_result = result
        record["result_node"] = result.name()
        record["last_run"] = dict(fbcnn_krita.last_run)
        self.describe(doc, record)

    def op_exec(self, step, record):
        """Run a snippet (exploration and debugging): globals doc, node, app, record."""
        doc = self.docs.get(step.get("doc"))
        scope = {"doc": doc, "node": self.node(step, doc) if doc else None,
                 "app": Krita.instance(), "record": record, "driver": self}
        exec(step["code"], scope)

    def op_undo(self, step, record):
        doc = self.doc(step)
        self.show(doc)
        for _ in range(step.get("times", 1)):
            Krita.instance().action("edit_undo").trigger()
            doc.waitForDone()
        doc.refreshProjection()
        doc.waitForDone()
        self.describe(doc, record)

    def op_set_config(self, step, record):
        """Point the plug-in at another frontend.json; the next request starts a new worker."""
        import fbcnn_krita.connection
        fbcnn_krita.connection.shutdown()
        os.environ["FBCNN_FRONTEND_CONFIG"] = step["path"]

    def op_export(self, step, record):
        doc = self.doc(step)
        doc.setBatchmode(True)  # openDocument resets it; an options dialog would hang
        deadline = time.monotonic() + 30
        while not doc.exportImage(step["path"], InfoObject()):
            if time.monotonic() > deadline:
                raise RuntimeError("exportImage kept failing")
            doc.waitForDone()
            time.sleep(0.2)

    def op_close(self, step, record):
        doc = self.docs.pop(step["doc"])
        doc.setModified(False)
        doc.close()

    def op_dialog(self, step, record):
        """Open the dialog with the action, watch it, screenshot it, apply or close it."""
        app = Krita.instance()
        doc = self.doc(step)
        self.show(doc)
        doc.setActiveNode(self.node(step, doc))
        for key, value in step.get("settings", {}).items():
            app.writeSetting("fbcnn_krita", key, str(value))
        timeout = step.get("timeout", 120)
        started = time.monotonic()
        # Posted, not called: the plug-in may open a modal box, and this step must keep
        # polling (from inside that box's event loop) to read and close it.
        QTimer.singleShot(0, app.action("fbcnn_remove_jpeg_artifacts").trigger)
        dialog = yield Wait(lambda: find_dialog() or error_box(), timeout, "the dialog")
        if isinstance(dialog, QMessageBox):
            record["error_box"] = close_box(dialog)
            return
        record["open_s"] = round(time.monotonic() - started, 3)
        state = yield Wait(lambda: settled(dialog, ("ready",)), timeout, "the first preview")
        record["first_preview_s"] = round(time.monotonic() - started, 3)
        if state == "closed":
            raise RuntimeError("the dialog closed before its preview was ready")
        if state == "error":
            record["error_box"] = close_box(error_box())
            record["dialog_closed"] = yield Wait(lambda: gone(dialog), 10, "the dialog to close")
            return
        record["detected"] = dialog.findChild(QLabel, "detected").text()
        record["models"] = combo_items(dialog.findChild(QComboBox, "model"))
        record["devices"] = combo_items(dialog.findChild(QComboBox, "device"))
        record["status"] = dialog.findChild(QLabel, "status").text()
        if step.get("screenshot"):
            dialog.grab().save(step["screenshot"])
            record["screenshot"] = step["screenshot"]
        for qf in step.get("qf_values", []):
            # Drive the slider like a user: untick Auto, move the QF, wait for the preview.
            dialog.auto.setChecked(False)
            dialog.spin.setValue(qf)
            state = yield Wait(lambda: settled(dialog, ("ready",)), timeout,
                               f"the preview at QF {qf}")
            if state != "ready":
                raise RuntimeError(f"the preview at QF {qf} ended as {state}")
            shot = step["preview_shots"].replace(".png", f"-qf{qf}.png")
            dialog.preview.grab().save(shot)
            record.setdefault("previews", []).append(shot)
        if step.get("burst"):
            # Many slider moves in a row: the debounce must turn them into one preview.
            before = dialog.previews_requested
            for qf in step["burst"]:
                dialog.spin.setValue(qf)
            yield Wait(lambda: settled(dialog, ("ready",)), timeout, "the burst preview")
            record["burst_previews"] = dialog.previews_requested - before
        if step.get("drag"):
            # Move the region as a drag on the preview would.
            record["center_before_drag"] = list(dialog.preview_center)
            dialog.preview.moved.emit(*step["drag"])
            yield Wait(lambda: settled(dialog, ("ready",)), timeout, "the dragged preview")
            record["center_after_drag"] = list(dialog.preview_center)
            shot = step["preview_shots"].replace(".png", "-dragged.png")
            dialog.preview.grab().save(shot)
            record["dragged_preview"] = shot
        if step.get("final_auto"):
            dialog.auto.setChecked(True)
            yield Wait(lambda: settled(dialog, ("ready",)), timeout, "the auto preview")
        then = step.get("then", "close")
        if then == "close":
            dialog.reject()
            record["dialog_closed"] = yield Wait(lambda: gone(dialog), 10, "the dialog to close")
            return
        if then == "apply":
            # The GUI thread's gaps at rest, on this machine under its present load:
            # the yardstick for the gaps during the run.
            self.max_gap = 0.0
            until = time.monotonic() + 2.0
            yield Wait(lambda: time.monotonic() > until, 30, "the rest measurement")
            record["rest_max_gap_s"] = round(self.max_gap, 3)
        applied = time.monotonic()
        self.max_gap = 0.0
        QTimer.singleShot(0, dialog.findChild(QPushButton, "apply").click)
        if then == "apply":
            outcome = yield Wait(lambda: gone(dialog) or error_box(), timeout, "the full run")
            if isinstance(outcome, QMessageBox):
                record["error_box"] = close_box(outcome)
            record["apply_s"] = round(time.monotonic() - applied, 3)
            record["max_gap_s"] = round(self.max_gap, 3)
        else:
            yield Wait(lambda: settled(dialog, ("running",)), timeout, "the run to start")
            if then == "cancel":
                # Cancel from the progress row; the dialog stays open for another try.
                QTimer.singleShot(0, dialog.findChild(QPushButton, "cancel").click)
                state = yield Wait(lambda: settled(dialog, ("ready", "done", "failed")),
                                   timeout, "the cancel")
                record["state_after_cancel"] = state
                record["status"] = dialog.findChild(QLabel, "status").text()
                dialog.reject()
            else:  # "close_running": closing the dialog must stop the run
                QTimer.singleShot(0, dialog.reject)
            record["dialog_closed"] = yield Wait(lambda: gone(dialog), 10, "the dialog to close")
            # Give a run that was not stopped time to write its result anyway.
            until = time.monotonic() + step.get("linger", 4)
            yield Wait(lambda: time.monotonic() > until, 30, "the linger time")
        import fbcnn_krita
        record["last_run"] = dict(fbcnn_krita.last_run)
        doc.waitForDone()
        self.describe(doc, record)


def view_settled(doc):
    """Wait until the document's new view has a current layer, as it has by the time
    a user can click anything.

    Krita 5.1 sets it inside addView; 5.2 only once the event loop runs (until then
    doc.activeNode() is None and setActiveNode() changes nothing, even with
    processEvents()).
    """
    yield Wait(lambda: doc.activeNode() is not None, 30, "the new view's current layer")


# -- widget helpers

def combo_items(combo):
    return [[combo.itemText(i), combo.itemData(i)] for i in range(combo.count())]


def find_dialog():
    for widget in QApplication.topLevelWidgets():
        if widget.objectName() == "fbcnn_krita_dialog" and widget.isVisible():
            return widget
    return None


def error_box():
    widget = QApplication.activeModalWidget()
    if isinstance(widget, QMessageBox) and widget.objectName() == "fbcnn_error":
        return widget
    return None


def close_box(box):
    text = {"title": box.windowTitle(), "text": box.text(), "details": box.detailedText()}
    box.accept()
    return text


def settled(dialog, states):
    """The dialog's state once it is one of states, "error" when a box is up."""
    if error_box():
        return "error"
    if gone(dialog):
        return "closed"
    state = dialog.property("fbcnn_state")
    return state if state in states else None


def gone(dialog):
    return sip.isdeleted(dialog) or not dialog.isVisible()


def _all_nodes(node):
    for child in node.childNodes():
        yield child
        yield from _all_nodes(child)


def layer_names(doc):
    return [n.name() for n in _all_nodes(doc.rootNode())]


class DriverExtension(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        # windowCreated comes too late; start from here, once, after the event loop runs.
        global _started, _runner
        path = os.environ.get(ENV)
        if path and not _started:
            _started = True
            _runner = Runner(path)
            QTimer.singleShot(200, _runner.start)


Krita.instance().addExtension(DriverExtension(Krita.instance()))
