"""Every error the user sees goes through show_error: one box, one look."""
from .qt import QMessageBox


def show_error(error, parent=None):
    """A modal message box with what went wrong and what to do (details folded away)."""
    box = QMessageBox(parent)
    box.setObjectName("fbcnn_error")
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(getattr(error, "title", "Remove JPEG Artifacts"))
    box.setText(getattr(error, "message", str(error)))
    details = getattr(error, "details", "")
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.exec()
