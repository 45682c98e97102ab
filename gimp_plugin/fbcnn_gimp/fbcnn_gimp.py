#!/usr/bin/env python3
# FBCNN JPEG artifact removal for GIMP 3 (Filters > Enhance > Remove JPEG Artifacts...)
#
# The story of one run: read the layer's pixels in its own bit depth (pixels.py),
# ask the FBCNN worker (a separate Python that has torch) to restore them
# (filter_run.py, with the dialog's preview in dialog.py), and write the result
# back through GIMP's shadow buffer. The worker is reached through the
# fbcnn_frontend package (client, texts and regions, shared with the Krita
# plug-in), which the installer places next to this file. Only GIMP's own Python
# runs here: the standard library and gi.
import sys

import gi
# Before any module of ours imports gi.repository.
gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
gi.require_version("Gtk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import Gimp, GLib, GObject

from fbcnn_frontend import texts

from dialog import run_dialog
from filter_run import DEVICES, MODELS, FilterRun, apply_filter, check_model_installed
from messages import TITLE, Refused, advice
from pixels import the_layer

PROC_NAME = "plug-in-fbcnn-remove-jpeg-artifacts"


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
    filter_run = None
    try:
        filter_run = FilterRun(image, the_layer(drawables), config)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            if not run_dialog(procedure, config, filter_run):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        check_model_installed(filter_run)
        qf, source = apply_filter(filter_run)
    except Exception as error:  # every failure leaves the image as it was
        return failure(procedure, error)
    finally:
        if filter_run is not None:
            filter_run.close()
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
