"""The Filter menu entry: Filter > Remove JPEG Artifacts..."""
from krita import Extension, Krita

from . import connection
from .messages import show_error
from .connection import FbcnnError

ACTION_ID = "fbcnn_remove_jpeg_artifacts"

# The open dialog; kept here so Python does not collect it while it is shown.
_dialog = None


class FbcnnExtension(Extension):
    def setup(self):
        # One worker for the whole Krita session; stop it when Krita quits.
        Krita.instance().notifier().applicationClosing.connect(connection.shutdown)

    def createActions(self, window):
        action = window.createAction(ACTION_ID, "Remove JPEG Artifacts...", "filter")
        action.setToolTip("Remove JPEG compression artifacts with the FBCNN network")
        action.triggered.connect(open_dialog)


def open_dialog():
    """Show the dialog for the active layer, or say why it cannot run."""
    global _dialog
    from .dialog import FilterDialog
    app = Krita.instance()
    window = app.activeWindow()
    parent = window.qwindow() if window is not None else None
    if _dialog is not None and _dialog.isVisible():
        _dialog.raise_()
        _dialog.activateWindow()
        return
    document = app.activeDocument()
    try:
        _dialog = FilterDialog(document, document.activeNode() if document else None, parent)
    except FbcnnError as e:
        show_error(e, parent)
        return
    _dialog.finished.connect(_forget_dialog)
    _dialog.show()


def _forget_dialog():
    global _dialog
    _dialog = None
