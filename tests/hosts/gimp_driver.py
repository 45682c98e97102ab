# Batch driver that runs inside GIMP 3 (python-fu-eval), started by
# tests/hosts/gimp.py as:  exec(open("gimp_driver.py").read())
#
# It reads a list of jobs (JSON, path in FBCNN_GIMP_JOBS), runs each job's steps
# on one image and writes what happened (JSON, path in FBCNN_GIMP_RESULTS).
# Pixels are dumped as raw bytes in a named babl format, so the tests compare
# them exactly with numpy. One GIMP start serves many jobs.
import json
import os
import subprocess
import time
import traceback

import gi
gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gegl, Gio

PROC = "plug-in-fbcnn-remove-jpeg-artifacts"
PRECISIONS = {
    "u8": Gimp.Precision.U8_NON_LINEAR,
    "u16": Gimp.Precision.U16_NON_LINEAR,
    "float": Gimp.Precision.FLOAT_NON_LINEAR,
}


def _target(state, which):
    """The drawable a step talks about."""
    if which in (None, "layer"):
        return state["layer"]
    if which == "top":
        return state["image"].get_layers()[0]
    if which == "group":
        return state["group"]
    if which == "mask":
        return state["layer"].get_mask()
    if which == "channel":
        return state["channel"]
    if isinstance(which, int):
        return state["image"].get_layers()[which]
    raise ValueError("unknown drawable %r" % (which,))


def step_load(state, s):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(s["path"]))
    state["image"] = image
    state["layer"] = image.get_layers()[0]
    parasite = image.get_parasite("jpeg-settings")
    return {"jpeg_settings": bytes(parasite.get_data()).hex() if parasite else None}


def step_create(state, s):
    """A new image from raw bytes: any precision, gray or RGB, with or without alpha."""
    w, h = s["width"], s["height"]
    base = Gimp.ImageBaseType.GRAY if s.get("gray") else Gimp.ImageBaseType.RGB
    image = Gimp.Image.new_with_precision(w, h, base, PRECISIONS[s.get("precision", "u8")])
    kind = ("GRAY" if s.get("gray") else "RGB") + ("A" if s.get("alpha") else "") + "_IMAGE"
    layer = Gimp.Layer.new(image, "Background", w, h, getattr(Gimp.ImageType, kind),
                           100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    with open(s["raw"], "rb") as f:
        data = f.read()
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), s["format"], data)
    buf.flush()
    state["image"], state["layer"] = image, layer
    return {}


def step_select_rect(state, s):
    image = state["image"]
    image.select_rectangle(Gimp.ChannelOps.REPLACE, s["x"], s["y"], s["w"], s["h"])
    if s.get("feather"):
        Gimp.Selection.feather(image, s["feather"])
    return {}


def step_add_mask(state, s):
    layer = state["layer"]
    mask = layer.create_mask(Gimp.AddMaskType.WHITE)
    layer.add_mask(mask)
    # A mask that is not all white, so a change to it would show.
    image = state["image"]
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 0, 0, layer.get_width() // 2,
                           layer.get_height())
    Gimp.context_set_foreground(_gray(0.25))
    mask.edit_fill(Gimp.FillType.FOREGROUND)
    Gimp.Selection.none(image)
    return {}


def _gray(v):
    color = Gegl.Color.new("black")
    color.set_rgba(v, v, v, 1.0)
    return color


def step_group(state, s):
    """Put the layer inside a new layer group."""
    image = state["image"]
    group = Gimp.GroupLayer.new(image, "Group")
    image.insert_layer(group, None, 0)
    image.reorder_item(state["layer"], group, 0)
    state["group"] = group
    return {}


def step_lock(state, s):
    state["layer"].set_lock_content(True)
    return {}


def step_channel(state, s):
    image = state["image"]
    channel = Gimp.Channel.new(image, "Channel", image.get_width(), image.get_height(),
                               50.0, _gray(0.0))
    image.insert_channel(channel, None, 0)
    state["channel"] = channel
    return {}


def step_special_layer(state, s):
    """Add a text, vector (3.2) or link (3.2) layer on top and make it the layer the
    next steps talk about. A GIMP without that kind says so: {"available": False}."""
    image, kind = state["image"], s["kind"]
    if kind == "text":
        layer = Gimp.TextLayer.new(image, "JPEG", Gimp.context_get_font(), 24.0,
                                   Gimp.Unit.pixel())
    elif kind == "vector":
        if not hasattr(Gimp, "VectorLayer"):
            return {"available": False}
        path = Gimp.Path.new(image, "outline")
        image.insert_path(path, None, 0)
        path.stroke_new_from_points(Gimp.PathStrokeType.BEZIER,
                                    [10, 10, 10, 10, 10, 10, 60, 10, 60, 10, 60, 10,
                                     60, 50, 60, 50, 60, 50], True)
        layer = Gimp.VectorLayer.new(image, path)
    elif kind == "link":
        if not hasattr(Gimp, "LinkLayer"):
            return {"available": False}
        layer = Gimp.LinkLayer.new(image, Gio.File.new_for_path(s["path"]))
    else:
        raise ValueError("unknown layer kind %r" % kind)
    image.insert_layer(layer, None, 0)
    state["layer"] = layer
    return {"available": True, "type": type(layer).__name__}


def step_precision(state, s):
    """Convert the image's precision, as Image > Precision does (or as a GIMP that
    loads JPEGs through a 16-bit pipeline would have it from the start)."""
    image = state["image"]
    image.convert_precision(PRECISIONS[s["precision"]])
    state["layer"] = image.get_layers()[0]
    return {"precision": image.get_precision().value_nick}


def _pixels(drawable, fmt="R'G'B'A u8") -> bytes:
    w, h = drawable.get_width(), drawable.get_height()
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt,
                                           Gegl.AbyssPolicy.CLAMP))


def step_dump(state, s):
    drawable = _target(state, s.get("which"))
    with open(s["path"], "wb") as f:
        f.write(_pixels(drawable, s["format"]))
    return {"width": drawable.get_width(), "height": drawable.get_height()}


def step_layers(state, s):
    image = state["image"]
    return {"layers": [l.get_name() for l in image.get_layers()],
            "precision": image.get_precision().value_nick}


def step_export(state, s):
    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, state["image"],
                   Gio.File.new_for_path(s["path"]), None)
    return {}


def step_filter(state, s):
    """Run the plug-in through the PDB, as a script would."""
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        raise RuntimeError("procedure %s is not registered" % PROC)
    cfg = proc.create_config()
    mode = getattr(Gimp.RunMode, s.get("run_mode", "NONINTERACTIVE"))
    cfg.set_property("run-mode", mode)
    cfg.set_property("image", state["image"])
    cfg.set_core_object_array("drawables", [_target(state, s.get("which"))])
    for key, value in s.get("args", {}).items():
        cfg.set_property(key, value)
    started = time.time()
    res = proc.run(cfg)
    out = {"status": res.index(0).value_nick, "seconds": round(time.time() - started, 3),
           "values": []}
    for i in range(1, res.length()):
        value = res.index(i)
        out["values"].append(value if isinstance(value, (int, str, float)) else str(value))
    return out


def step_lookup(state, s):
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        return {"found": False}
    return {"found": True,
            "arguments": [a.name for a in proc.get_arguments()],
            "menu_label": proc.get_menu_label(),
            "menu_paths": list(proc.get_menu_paths()),
            "image_types": proc.get_image_types()}


def step_display(state, s):
    """GUI runs only: show the image, so keyboard undo reaches it."""
    image = state["image"]
    was_enabled = image.undo_is_enabled()
    # Images made through the PDB (file_load in batch) start with undo off;
    # File > Open in the GUI gives one with undo on, as the user has it.
    if not was_enabled:
        image.undo_enable()
    state["display"] = Gimp.Display.new(image)
    Gimp.displays_flush()
    return {"undo_was_enabled": was_enabled, "undo_enabled": image.undo_is_enabled()}


def step_shell(state, s):
    """GUI runs only: a command (screenshot, key presses) run while GIMP runs."""
    if s.get("background"):
        subprocess.Popen(s["cmd"], shell=True)
        return {}
    done = subprocess.run(s["cmd"], shell=True, capture_output=True, text=True)
    return {"rc": done.returncode, "stdout": done.stdout[-2000:], "stderr": done.stderr[-2000:]}


# The image window's title, e.g. "[Untitled]-1.0 (RGB color 8-bit ...)" in 3.0 and
# "[q10] (imported)-1.0 (RGB color 8-bit ...)" in 3.2: "-IMAGE.VIEW (" is in both.
IMAGE_WINDOW = r"\]( \(imported\))?-[0-9]+\.[0-9]+ \("


def step_keys(state, s):
    """GUI runs only: press keys in the image window and wait until the pixels change.

    Key events reach GIMP asynchronously, and once in about six runs a Ctrl+Z sent
    with a fixed pause was lost. So the press is repeated (up to `tries` times) only
    if nothing changed within `wait` seconds; the record says how many it took. Extra
    undo/redo presses past the end of the history change nothing.
    """
    drawable = _target(state, s.get("which"))
    before = _pixels(drawable)
    cmd = ('W=$(xdotool search --sync --name "%s" | head -n1); xdotool windowfocus --sync "$W" key %s'
           % (s.get("window", IMAGE_WINDOW), s["combo"]))
    presses = 0
    for presses in range(1, s.get("tries", 3) + 1):
        subprocess.run(cmd, shell=True, capture_output=True, timeout=60)
        deadline = time.time() + s.get("wait", 6)
        while time.time() < deadline:
            if _pixels(drawable) != before:
                return {"presses": presses, "changed": True}
            time.sleep(0.2)
    return {"presses": presses, "changed": False}


def step_write_file(state, s):
    """Replace (or, with text null, delete) a file, e.g. to break the worker config."""
    if s.get("text") is None:
        if os.path.exists(s["path"]):
            os.unlink(s["path"])
    else:
        with open(s["path"], "w") as f:
            f.write(s["text"])
    return {}


def step_sleep(state, s):
    time.sleep(s["seconds"])
    return {}


STEPS = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("step_")}


def run_jobs():
    Gegl.init(None)
    with open(os.environ["FBCNN_GIMP_JOBS"]) as f:
        jobs = json.load(f)
    results = {}
    for job in jobs:
        state, record = {}, []
        for s in job["steps"]:
            try:
                record.append(dict(STEPS[s["op"]](state, s), op=s["op"]))
            except Exception:
                record.append({"op": s["op"], "exception": traceback.format_exc()})
                break
        if state.get("image") is not None and not job.get("keep"):
            state["image"].delete()
        results[job["name"]] = record
        with open(os.environ["FBCNN_GIMP_RESULTS"], "w") as f:
            json.dump(results, f, indent=1)


run_jobs()
