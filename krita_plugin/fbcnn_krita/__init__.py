"""FBCNN for Krita: Filter > Remove JPEG Artifacts...

Scripts can run the filter without the dialog:

    import fbcnn_krita
    doc = Krita.instance().activeDocument()
    node = fbcnn_krita.run(doc, doc.activeNode(), qf=None, output="new-layer")

run() returns once the result is in the document, with the node that holds
it; it raises fbcnn_krita.FbcnnError (with a message saying what to do) and
leaves the document unchanged when something is wrong.
"""
from krita import Krita

from .extension import ACTION_ID, FbcnnExtension, open_dialog
from .filter_run import last_run, run
from .connection import FbcnnError

__all__ = ["run", "FbcnnError", "ACTION_ID", "open_dialog", "last_run"]

Krita.instance().addExtension(FbcnnExtension(Krita.instance()))
