"""The Qt binding of the Krita we run in: PyQt6 in Krita 6, PyQt5 in Krita 5.

Krita 6 replaces Python's import so that `import PyQt5` raises "This version of
Krita is not compatible with PyQt5!" (Krita 5 blocks PyQt6 the same way), so the
choice comes from Krita's own answer, never from trying an import. Krita 5.1
and 5.2 predate `qt_major_version()`; they are Qt 5. Every other module imports
its Qt names from here and uses spellings both bindings accept (scoped enums,
`exec()`, `position()`).
"""
import pykrita

QT_MAJOR = pykrita.qt_major_version() if hasattr(pykrita, "qt_major_version") else 5

if QT_MAJOR >= 6:
    from PyQt6 import sip
    from PyQt6.QtCore import QEventLoop, QObject, QPoint, QRect, Qt, QTimer, pyqtSignal
    from PyQt6.QtGui import QColor, QImage, QPainter, QPen
    from PyQt6.QtWidgets import (QApplication, QButtonGroup, QCheckBox, QComboBox, QDialog,
                                 QDialogButtonBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                                 QMessageBox, QProgressBar, QPushButton, QRadioButton,
                                 QSizePolicy, QSlider, QSpinBox, QVBoxLayout, QWidget)
else:
    from PyQt5 import sip
    from PyQt5.QtCore import QEventLoop, QObject, QPoint, QRect, Qt, QTimer, pyqtSignal
    from PyQt5.QtGui import QColor, QImage, QPainter, QPen
    from PyQt5.QtWidgets import (QApplication, QButtonGroup, QCheckBox, QComboBox, QDialog,
                                 QDialogButtonBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                                 QMessageBox, QProgressBar, QPushButton, QRadioButton,
                                 QSizePolicy, QSlider, QSpinBox, QVBoxLayout, QWidget)


def event_position(event):
    """A mouse event's position as a QPoint: `position()` (a QPointF) where Qt 6
    deprecates `pos()`; PyQt5 5.15's events have only `pos()`."""
    if hasattr(event, "position"):
        return event.position().toPoint()
    return event.pos()


__all__ = ["QT_MAJOR", "event_position", "sip", "QEventLoop", "QObject", "QPoint", "QRect",
           "Qt", "QTimer", "pyqtSignal", "QColor", "QImage", "QPainter", "QPen", "QApplication",
           "QButtonGroup", "QCheckBox", "QComboBox", "QDialog", "QDialogButtonBox",
           "QFormLayout", "QGroupBox", "QHBoxLayout", "QLabel", "QMessageBox", "QProgressBar",
           "QPushButton", "QRadioButton", "QSizePolicy", "QSlider", "QSpinBox", "QVBoxLayout",
           "QWidget"]
