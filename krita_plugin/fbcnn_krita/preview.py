"""The before/after preview: a crop of the layer at 100%, split or toggled.

Dragging moves the region; the dialog is told where it ended up and asks the
worker for a new "after" image.
"""
from .qt import (QColor, QImage, QPainter, QPen, QPoint, QRect, QSizePolicy, Qt, QWidget,
                 event_position, pyqtSignal)

from . import pixels

SPLIT, BEFORE, AFTER = "split", "before", "after"


def to_qimage(data, layout, width, height, linear=False):
    """A QImage (it owns a copy of the bytes) of raw layer pixels."""
    bgra = pixels.to_display_bgra(data, layout, linear)
    return QImage(bgra, width, height, width * 4, QImage.Format.Format_ARGB32).copy()


class PreviewView(QWidget):
    moved = pyqtSignal(int, int)  # the region was dragged by (dx, dy) image pixels

    def __init__(self, size, parent=None):
        super().__init__(parent)
        self.setObjectName("preview")
        self.setMinimumSize(*size)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setToolTip("Drag to move the previewed region")
        self.before = None
        self.after = None
        self.mode = SPLIT
        self.message = "Starting the worker..."
        self._press = None
        self._drag = QPoint(0, 0)

    def sizeHint(self):
        return self.minimumSize()

    def set_images(self, before, after):
        self.before, self.after = before, after
        self._drag = QPoint(0, 0)
        self.update()

    def set_before(self, before):
        """A new region: show its original at once, the result follows."""
        self.before, self.after = before, None
        self._drag = QPoint(0, 0)
        self.update()

    def set_mode(self, mode):
        self.mode = mode
        self.update()

    def set_message(self, text):
        self.message = text
        self.update()

    # -- dragging moves the region (the image follows the mouse, like a hand tool)

    def mousePressEvent(self, event):
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event_position(event)
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event):
        if self._press is not None:
            self._drag = event_position(event) - self._press
            self.update()

    def mouseReleaseEvent(self, event):
        if self._press is None:
            return
        delta = event_position(event) - self._press
        self._press = None
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        if delta.manhattanLength() > 2:
            self.moved.emit(-delta.x(), -delta.y())
        else:
            self._drag = QPoint(0, 0)
            self.update()

    # -- painting

    def _checkerboard(self, painter):
        painter.fillRect(self.rect(), QColor(200, 200, 200))
        step = 8
        for y in range(0, self.height(), step):
            for x in range((y // step) % 2 * step, self.width(), 2 * step):
                painter.fillRect(x, y, step, step, QColor(240, 240, 240))

    def paintEvent(self, event):
        painter = QPainter(self)
        self._checkerboard(painter)
        origin = self._drag
        middle = self.width() // 2
        if self.before is not None:
            if self.mode == AFTER and self.after is not None:
                painter.drawImage(origin, self.after)
            elif self.mode == SPLIT and self.after is not None:
                painter.drawImage(origin, self.before)
                painter.setClipRect(QRect(middle, 0, self.width() - middle, self.height()))
                painter.drawImage(origin, self.after)
                painter.setClipping(False)
            else:
                painter.drawImage(origin, self.before)
        if self.mode == SPLIT:
            painter.setPen(QPen(QColor(255, 255, 255), 1))
            painter.drawLine(middle, 0, middle, self.height())
        self._labels(painter, middle)
        painter.end()

    def _labels(self, painter, middle):
        painter.setPen(QColor(255, 255, 255))
        if self.after is None:
            painter.fillRect(0, self.height() - 22, self.width(), 22, QColor(0, 0, 0, 150))
            painter.drawText(QRect(6, self.height() - 22, self.width() - 12, 22),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, self.message)
            return
        tags = {SPLIT: [("Before", 4), ("After", middle + 4)],
                BEFORE: [("Before", 4)], AFTER: [("After", 4)]}[self.mode]
        for text, x in tags:
            painter.fillRect(x, 4, 52, 18, QColor(0, 0, 0, 150))
            painter.drawText(QRect(x, 4, 52, 18), Qt.AlignmentFlag.AlignCenter, text)
