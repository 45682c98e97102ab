"""The GIMP 3 plug-in, driven in a real GIMP 3 (headless batch; Xvfb for the dialog).

Every test runs on each GIMP build, named by its version in the test ids:
[gimp-3.0.4] (apt on Debian 13, the trixie chroot on Debian 12) and [gimp-3.2.6]
(the sid chroot). All batch jobs of one build share ONE GIMP start (module
fixture `batch`); each test asserts on the pixels its job dumped.
tests/hosts/setup.sh installs the GIMPs; tests/run.sh runs it first.

Environment: FBCNN_UPDATE_SCREENSHOT=1 copies the dialog screenshot into
docs/gimp-dialog.png; FBCNN_TEST_CORE_PATH points the worker at another copy of
the `core` package (default: this checkout).
"""
import json
import os
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from tests.hosts import gimp as gh

pytestmark = pytest.mark.gimp

REPO = gh.REPO
TRAINED = REPO / "core" / "models" / "fbcnn_compact.pth"
SMALL = (160, 128)          # the small test images (w, h)
SEL = (37, 29, 70, 50)      # a selection that is not on the 8-px grid


def loud_skip(msg):
    msg = "SKIPPED LOUDLY: " + msg
    warnings.warn(msg)
    pytest.skip(msg)


HOSTS = gh.gimp_hosts()


@pytest.fixture(scope="module", params=HOSTS, ids=[h.id for h in HOSTS])
def host(request):
    h = request.param
    if h.why_missing():
        loud_skip(h.why_missing())
    return h


@pytest.fixture(scope="module")
def work(tmp_path_factory, host):
    return tmp_path_factory.mktemp(host.id)


@pytest.fixture(scope="module")
def model_args(work):
    """The trained bundled model when present, else random weights (development)."""
    if TRAINED.is_file():
        return {"model": "compact"}
    import torch
    from core import network, weights
    torch.manual_seed(0)
    path = work / "random_compact.pth"
    torch.save(network.build(weights.COMPACT_CONFIG).state_dict(), path)
    return {"model-file": str(path)}


def need_trained_model():
    if not TRAINED.is_file():
        loud_skip(f"{TRAINED} is absent: quality bars need the trained compact model "
                  "(random weights were used for the pixel-plumbing checks)")


def gimp_env(work):
    env = gh.make_profile(work, core_path=os.environ.get("FBCNN_TEST_CORE_PATH"))
    # No downloaded official models: "auto" means compact, and "color" is missing.
    env["FBCNN_MODEL_DIR"] = str(work / "models")
    (work / "models").mkdir(exist_ok=True)
    return env


# ------------------------------------------------------------------ inputs

def prepare_inputs(work):
    """JPEGs made with Pillow, and raw pixels for images built inside GIMP."""
    gt = np.asarray(Image.open(shared_path("datasets", "val", "McMaster", "01.png"))
                    .convert("RGB"))
    Image.fromarray(gt).save(work / "q10.jpg", quality=10)
    small = np.asarray(Image.open(shared_path("datasets", "val", "McMaster", "02.png"))
                       .convert("RGB"))[:SMALL[1], :SMALL[0]]
    Image.fromarray(small).save(work / "small.jpg", quality=15)
    decoded = np.asarray(Image.open(work / "small.jpg").convert("RGB"))
    w, h = SMALL

    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.where(xx < 20, 0, np.clip(xx * 255 // w + 40, 0, 255)).astype(np.uint8)
    (work / "rgba.raw").write_bytes(np.dstack([decoded, alpha]).tobytes())

    # 16 bit: the JPEG content on the left, a smooth 2D gradient (thousands of
    # levels) on the right half.
    u16 = decoded.astype(np.uint16) * 257
    grad = (20000 + 90 * xx + 53 * yy).astype(np.uint16)
    u16[:, w // 2:] = np.dstack([grad] * 3)[:, w // 2:]
    (work / "u16.raw").write_bytes(u16.tobytes())

    f32 = np.dstack([decoded / 255.0, alpha / 255.0]).astype(np.float32)
    (work / "f32.raw").write_bytes(f32.tobytes())
    gray = (0.299 * decoded[..., 0] + 0.587 * decoded[..., 1] + 0.114 * decoded[..., 2])
    (work / "gray.raw").write_bytes(np.round(gray).astype(np.uint8).tobytes())
    # Big enough that the restore is still running when the cancel comes.
    Image.fromarray(gt).resize((1500, 1500)).save(work / "big.jpg", quality=10)
    (work / "cancel.sh").write_text(CANCEL_SCRIPT)
    return gt


CANCEL_SCRIPT = r"""#!/bin/sh
# What GIMP does when the user presses Cancel on a plug-in's progress: it kills
# the plug-in process. Then see whether the worker (its child) goes away.
LOG=$1; OUT=$2; i=0
until grep -q "run: restoring" "$LOG" 2>/dev/null; do
    sleep 0.1; i=$((i + 1)); [ $i -gt 1200 ] && exit 1
done
PID=$(grep "run: restoring" "$LOG" | tail -n1 | sed 's/.*plug-in pid //')
WORKER=$(pgrep -P "$PID" | head -n1)
sleep 1
kill -9 "$PID"
echo "killed $PID worker $WORKER" > "$OUT/cancel.txt"
i=0
while kill -0 "$WORKER" 2>/dev/null; do
    sleep 0.2; i=$((i + 1)); [ $i -gt 100 ] && { echo "worker alive" >> "$OUT/cancel.txt"; exit 0; }
done
echo "worker gone" >> "$OUT/cancel.txt"
"""


def build_jobs(work, model_args):
    w, h = SMALL
    J = str(work)

    def dump(name, fmt="R'G'B' u8", which=None):
        return {"op": "dump", "path": f"{J}/{name}.raw", "format": fmt, "which": which}

    def filt(**args):
        return {"op": "filter", "args": dict(model_args, **args)}

    def load(path="small.jpg"):
        return {"op": "load", "path": f"{J}/{path}"}

    def create(raw, fmt, precision="u8", alpha=False, gray=False):
        return {"op": "create", "width": w, "height": h, "raw": f"{J}/{raw}", "format": fmt,
                "precision": precision, "alpha": alpha, "gray": gray}

    frontend = json.loads((work / "frontend.json").read_text())
    broken = dict(frontend, python="/nonexistent/bin/python3")
    crashing = dict(frontend, python="/bin/false")
    restore_cfg = {"op": "write_file", "path": f"{J}/frontend.json", "text": json.dumps(frontend)}

    def with_config(text):
        return {"op": "write_file", "path": f"{J}/frontend.json", "text": text}

    return [
        {"name": "lookup", "steps": [{"op": "lookup"}]},
        {"name": "cancel", "steps": [
            load("big.jpg"), dump("cancel_before"),
            {"op": "shell", "background": True,
             "cmd": f"sh {J}/cancel.sh {J}/plugin.log {J} > {J}/cancel.log 2>&1"},
            filt(), {"op": "sleep", "seconds": 3}, dump("cancel_after")]},
        {"name": "auto", "steps": [load("q10.jpg"), dump("auto_before"), filt(),
                                   dump("auto_after")]},
        {"name": "qf5", "steps": [load(), dump("qf_before"),
                                  filt(**{"qf-mode": "manual", "qf": 5}), dump("qf5")]},
        {"name": "qf60", "steps": [load(), filt(**{"qf-mode": "manual", "qf": 60}),
                                   dump("qf60")]},
        {"name": "selection", "steps": [
            load(), {"op": "select_rect", "x": SEL[0], "y": SEL[1], "w": SEL[2], "h": SEL[3]},
            dump("sel_before"), filt(), dump("sel_after")]},
        {"name": "feather", "steps": [
            load(), {"op": "select_rect", "x": 40, "y": 32, "w": 80, "h": 64, "feather": 16.0},
            dump("feather_before"), filt(), dump("feather_after")]},
        {"name": "rgba", "steps": [
            create("rgba.raw", "R'G'B'A u8", alpha=True), dump("rgba_before", "R'G'B'A u8"),
            filt(), dump("rgba_after", "R'G'B'A u8")]},
        {"name": "u16", "steps": [
            create("u16.raw", "R'G'B' u16", precision="u16"), dump("u16_before", "R'G'B' u16"),
            filt(**{"qf-mode": "manual", "qf": 20}), dump("u16_after", "R'G'B' u16")]},
        {"name": "float", "steps": [
            create("f32.raw", "R'G'B'A float", precision="float", alpha=True),
            dump("f32_before", "R'G'B'A float"), filt(**{"qf-mode": "manual", "qf": 15}),
            dump("f32_after", "R'G'B'A float")]},
        {"name": "gray", "steps": [
            create("gray.raw", "Y' u8", gray=True), dump("gray_before", "Y' u8"),
            filt(**{"qf-mode": "manual", "qf": 15}), dump("gray_after", "Y' u8")]},
        {"name": "newlayer", "steps": [
            load(), dump("nl_before"), filt(output="new-layer"), {"op": "layers"},
            dump("nl_top", which="top"), dump("nl_orig", which=1)]},
        {"name": "mask", "steps": [
            load(), {"op": "add_mask"}, dump("mask_before", "Y u8", which="mask"),
            dump("mask_px_before"), filt(), dump("mask_after", "Y u8", which="mask"),
            dump("mask_px_after")]},
        {"name": "broken-python", "steps": [
            load(), dump("broken_before"), with_config(json.dumps(broken)), filt(),
            restore_cfg, dump("broken_after")]},
        {"name": "crashing-worker", "steps": [
            load(), with_config(json.dumps(crashing)), filt(), restore_cfg,
            dump("crash_after")]},
        {"name": "not-configured", "steps": [
            load(), {"op": "write_file", "path": f"{J}/frontend.json", "text": None}, filt(),
            restore_cfg, dump("nocfg_after")]},
        {"name": "missing-model", "steps": [
            load(), {"op": "filter", "args": {"model": "color"}}, dump("missing_after")]},
        {"name": "group", "steps": [load(), {"op": "group"},
                                    {"op": "filter", "args": model_args, "which": "group"}]},
        {"name": "layer-mask", "steps": [load(), {"op": "add_mask"},
                                         {"op": "filter", "args": model_args,
                                          "which": "mask"}]},
        {"name": "channel", "steps": [load(), {"op": "channel"},
                                      {"op": "filter", "args": model_args,
                                       "which": "channel"}]},
        {"name": "locked", "steps": [load(), {"op": "lock"}, filt(), dump("locked_after")]},
        # Layers rendered from text, a path or another file are refused, image untouched.
        *({"name": f"{kind}-layer", "steps": [
            load(), {"op": "special_layer", "kind": kind, "path": f"{J}/small.jpg"},
            dump(f"{kind}_before", "R'G'B'A u8"), filt(), dump(f"{kind}_after", "R'G'B'A u8"),
            {"op": "layers"}]} for kind in ("text", "vector", "link")),
        # A JPEG carried in a 16-bit image (as GIMP's next release will load it): the
        # QF still comes from the file's tables, the result stays 16-bit.
        {"name": "jpeg16", "steps": [
            load("q10.jpg"), {"op": "precision", "precision": "u16"},
            dump("jpeg16_before", "R'G'B' u16"), filt(), dump("jpeg16_after", "R'G'B' u16"),
            {"op": "layers"}]},
        {"name": "full", "steps": [load(), filt(), dump("full_after")]},
    ]


@pytest.fixture(scope="module")
def batch(host, work, model_args):
    gt = prepare_inputs(work)
    env = gimp_env(work)
    env["FBCNN_GIMP_LOG"] = str(work / "plugin.log")
    core_path = os.environ.get("FBCNN_TEST_CORE_PATH")
    run = gh.run_jobs(host, work, build_jobs(work, model_args), env, timeout=1500,
                      binds=[core_path] if core_path else [])
    sys.stderr.write(f"\n[gimp] one GIMP start ran {len(run.results)} jobs in "
                     f"{run.seconds:.1f} s ({host.id}, {host.place})\n")
    (work / "gimp.log").write_text(run.log())
    run.gt = gt
    run.dir = work
    return run


def raw(run, name, dtype=np.uint8, channels=3, size=SMALL):
    data = np.fromfile(run.dir / f"{name}.raw", dtype=dtype)
    return data.reshape(size[1], size[0], channels)


def ok(run, job):
    rec = run.step(job, "filter")
    assert rec["status"] == "success", f"{job}: {rec}\n{run.log()}"
    return rec


def error(run, job):
    rec = run.step(job, "filter")
    assert rec["status"] == "execution-error", f"{job}: {rec}"
    message = rec["values"][0] if rec["values"] else ""
    return message


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def smoothness(a):
    """Mean absolute difference of neighbours: lower is smoother."""
    a = a.astype(np.float64)
    return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()


# ------------------------------------------------------------------ tests

def test_procedure_is_registered(batch):
    rec = batch.step("lookup", "lookup")
    assert rec["found"], batch.log()
    assert rec["arguments"][3:8] == ["qf-mode", "qf", "model", "output", "device"]
    assert rec["menu_paths"] == ["<Image>/Filters/Enhance"]
    assert rec["menu_label"] == "Remove JPEG _Artifacts..."
    assert rec["image_types"] == "RGB*, GRAY*"


def test_auto_detects_qf_10_from_the_file(batch):
    rec = ok(batch, "auto")
    assert rec["values"][:2] == [10, "file"], rec
    assert batch.step("auto", "load")["jpeg_settings"].startswith("030a")


def psnr_gain_over_gimps_decode(batch):
    """PSNR of the filtered image minus that of GIMP's own decode, vs ground truth."""
    ok(batch, "auto")
    size = (500, 500)
    before = raw(batch, "auto_before", size=size)   # GIMP's own decode
    after = raw(batch, "auto_after", size=size)
    assert not np.array_equal(before, after)
    need_trained_model()
    gain = psnr(after, batch.gt) - psnr(before, batch.gt)
    sys.stderr.write(f"\n[gimp] PSNR {psnr(before, batch.gt):.2f} -> "
                     f"{psnr(after, batch.gt):.2f} dB ({gain:+.2f})\n")
    return gain


def test_auto_improves_psnr_over_gimps_decode(batch):
    assert psnr_gain_over_gimps_decode(batch) > 0.2


def test_auto_raises_psnr_by_1db(batch):
    gain = psnr_gain_over_gimps_decode(batch)
    assert gain >= 1.0, f"PSNR gain {gain:.2f} dB < 1.0 dB"


def test_manual_qf_5_and_60_differ(batch):
    assert ok(batch, "qf5")["values"][:2] == [5, "manual"]
    assert ok(batch, "qf60")["values"][:2] == [60, "manual"]
    q5, q60 = raw(batch, "qf5"), raw(batch, "qf60")
    assert np.abs(q5.astype(int) - q60.astype(int)).mean() > 0.5


def test_manual_qf_5_is_smoother_than_60(batch):
    ok(batch, "qf5"), ok(batch, "qf60")
    need_trained_model()
    assert smoothness(raw(batch, "qf5")) < smoothness(raw(batch, "qf60"))


def test_selection_leaves_outside_bit_identical(batch):
    ok(batch, "selection")
    before, after = raw(batch, "sel_before"), raw(batch, "sel_after")
    x, y, w, h = SEL
    inside = np.zeros(before.shape[:2], bool)
    inside[y:y + h, x:x + w] = True
    assert np.array_equal(before[~inside], after[~inside])
    assert not np.array_equal(before[inside], after[inside])


def test_selection_matches_the_whole_layer_run(batch):
    """A crop (selection or preview) is restored on the same grid with the same
    QF as the whole layer, so what the preview shows is what the run gives."""
    ok(batch, "selection"), ok(batch, "full")
    x, y, w, h = SEL
    part = raw(batch, "sel_after")[y:y + h, x:x + w].astype(int)
    whole = raw(batch, "full_after")[y:y + h, x:x + w].astype(int)
    diff = np.abs(part - whole)
    assert diff.max() <= 2 and diff.mean() < 0.25, (diff.max(), diff.mean())


def test_feathered_selection_blends(batch):
    ok(batch, "feather")
    before = raw(batch, "feather_before").astype(int)
    after = raw(batch, "feather_after").astype(int)
    changed = np.any(before != after, axis=2)
    # Nothing changes well outside the feathered rectangle, the middle changes.
    far = np.ones(changed.shape, bool)
    far[32 - 16:32 + 64 + 16, 40 - 16:40 + 80 + 16] = False
    assert not changed[far].any()
    assert changed[50:80, 60:100].mean() > 0.5
    # In the feathered border the result is part way between before and the
    # full-strength result, as GIMP blends any filter through the selection.
    full = raw(batch, "full_after").astype(int)
    ring = np.zeros(changed.shape, bool)
    ring[32 - 4:32 + 4, 60:100] = True
    delta = full - before
    strong = ring[..., None] & (np.abs(delta) >= 12)
    ratio = (after - before)[strong] / delta[strong]
    assert strong.sum() > 20 and 0.1 < np.median(ratio) < 0.9, np.median(ratio)


def test_rgba_alpha_is_bit_identical(batch):
    ok(batch, "rgba")
    before = raw(batch, "rgba_before", channels=4)
    after = raw(batch, "rgba_after", channels=4)
    assert np.array_equal(before[..., 3], after[..., 3])
    visible = before[..., 3] > 0
    assert not np.array_equal(before[..., :3][visible], after[..., :3][visible])


def test_16_bit_keeps_more_than_256_levels(batch):
    ok(batch, "u16")
    before = raw(batch, "u16_before", np.uint16)
    after = raw(batch, "u16_after", np.uint16)
    assert not np.array_equal(before, after)
    region = after[8:-8, SMALL[0] // 2 + 8:-8, 1]
    levels = np.unique(region).size
    assert levels > 256, f"only {levels} levels: squeezed through 8 bits?"
    assert np.any(region % 257 != 0)


def test_16_bit_jpeg_keeps_its_file_qf_and_precision(batch):
    rec = ok(batch, "jpeg16")
    assert rec["values"][:2] == [10, "file"], rec
    assert batch.step("jpeg16", "layers")["precision"].startswith("u16"), \
        batch.step("jpeg16", "layers")
    size = (500, 500)
    before = raw(batch, "jpeg16_before", np.uint16, size=size)
    after = raw(batch, "jpeg16_after", np.uint16, size=size)
    assert np.any(after != before)
    # Written at 16 bits, not squeezed through 8: values off the 257-multiples.
    assert np.mean(after % 257 != 0) > 0.5
    if TRAINED.is_file():
        # The same restoration as the 8-bit run, within 16-bit rounding.
        eight = raw(batch, "auto_after", size=size).astype(np.float64)
        assert np.abs(after / 257.0 - eight).mean() < 1.0


@pytest.mark.parametrize("kind", ["text", "vector", "link"])
def test_refuses_text_vector_and_link_layers(batch, host, kind):
    added = batch.step(f"{kind}-layer", "special_layer")
    if not added["available"]:
        assert kind in ("vector", "link") and host.series == "3.0"
        pytest.skip(f"GIMP {host.version} has no {kind} layers (they came with 3.2)")
    message = error(batch, f"{kind}-layer")
    assert f"a {kind} layer" in message and "Rasterize" in message, message
    assert "raster layer" in message, message
    dumped = batch.step(f"{kind}-layer", "dump")
    w, h = dumped["width"], dumped["height"]
    before = np.fromfile(batch.dir / f"{kind}_before.raw", np.uint8)
    after = np.fromfile(batch.dir / f"{kind}_after.raw", np.uint8)
    assert before.size == w * h * 4 and np.array_equal(before, after)
    assert len(batch.step(f"{kind}-layer", "layers")["layers"]) == 2


def test_float_layer_keeps_alpha_and_changes_colour(batch):
    ok(batch, "float")
    before = raw(batch, "f32_before", np.float32, 4)
    after = raw(batch, "f32_after", np.float32, 4)
    assert np.array_equal(before[..., 3].view(np.uint32), after[..., 3].view(np.uint32))
    assert np.abs(before[..., :3] - after[..., :3]).max() > 1e-3


def test_gray_layer(batch):
    ok(batch, "gray")
    before = raw(batch, "gray_before", channels=1)
    after = raw(batch, "gray_after", channels=1)
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 0.2


def test_new_layer_keeps_the_original(batch):
    ok(batch, "newlayer")
    layers = batch.step("newlayer", "layers")["layers"]
    assert len(layers) == 2 and "JPEG artifacts removed" in layers[0], layers
    before = raw(batch, "nl_before")
    assert np.array_equal(raw(batch, "nl_orig"), before)
    assert not np.array_equal(raw(batch, "nl_top"), before)


def test_layer_mask_is_unchanged(batch):
    ok(batch, "mask")
    assert np.array_equal(raw(batch, "mask_before", channels=1),
                          raw(batch, "mask_after", channels=1))
    assert not np.array_equal(raw(batch, "mask_px_before"), raw(batch, "mask_px_after"))


def test_cancel_stops_the_worker_and_leaves_the_image(batch):
    rec = batch.step("cancel", "filter")
    assert rec["status"] != "success", rec
    report = (batch.dir / "cancel.txt").read_text()
    assert report.startswith("killed") and "worker gone" in report, report
    size = (1500, 1500)
    assert np.array_equal(raw(batch, "cancel_after", size=size),
                          raw(batch, "cancel_before", size=size))


@pytest.mark.parametrize("job,after,words", [
    ("broken-python", "broken_after", ["cannot start", "installer"]),
    ("crashing-worker", "crash_after", ["exited", "installer"]),
    ("not-configured", "nocfg_after", ["not set up", "installer"]),
    ("missing-model", "missing_after", ["fbcnn_color", "Compact"]),
    ("locked", "locked_after", ["locked", "New layer"]),
])
def test_errors_say_what_to_do_and_leave_the_image(batch, job, after, words):
    message = error(batch, job)
    for word in words:
        assert word.lower() in message.lower(), message
    assert np.array_equal(raw(batch, after), raw(batch, "broken_before"))


@pytest.mark.parametrize("job,words", [
    ("group", ["layer groups"]),
    ("layer-mask", ["layer masks"]),
    ("channel", ["channels"]),
])
def test_refuses_groups_masks_and_channels(batch, job, words):
    message = error(batch, job)
    for word in words:
        assert word in message, message


# ------------------------------------------------------------------ the dialog (Xvfb)

SHOT_SCRIPT = r"""#!/bin/sh
# Runs beside GIMP under Xvfb, like a user: waits for the dialog's first preview,
# takes the screenshot, turns Auto off, moves the QF slider up five steps at
# once (one debounced preview should follow), then presses OK (Alt+O).
LOG=$1; OUT=$2
wait_for() {
    i=0
    until grep -q "$1" "$LOG" 2>/dev/null; do
        sleep 0.5; i=$((i + 1)); [ $i -gt 400 ] && return 1
    done
}
wait_for "preview shown\|preview failed\|detection failed"
sleep 1
W=$(xdotool search --name "^Remove JPEG Artifacts$" | head -n1)
import -window "$W" "$OUT/dialog.png"
date +%s.%N > "$OUT/shot_time"
xdotool windowfocus --sync "$W" key alt+a
wait_for "auto False"
xdotool key alt+q key Up key Up key Up key Up key Up
wait_for "preview shown.* at QF 15"
sleep 1
import -window "$W" "$OUT/dialog_manual.png"
# Click the navigator's top-left corner: the preview moves there.
X=$(grep -o "navigator at [0-9]*,[0-9]*" "$LOG" | tail -n1 | sed 's/.* //')
xdotool mousemove "$(( ${X%,*} + 3 ))" "$(( ${X#*,} + 3 ))" click 1
wait_for "preview shown for Region(0, 0,"
sleep 1
xdotool windowfocus --sync "$W" key alt+o
"""

def keys(combo):
    """Press keys in the image window (GIMP's own undo/redo shortcuts) until the pixels change."""
    return {"op": "keys", "combo": combo}


@pytest.fixture(scope="module")
def gui_run(host, work, model_args):
    """One GIMP (with its UI) under Xvfb: the dialog, OK, undo, last values."""
    gui = work / "gui"
    gui.mkdir()
    gt = np.asarray(Image.open(shared_path("datasets", "val", "McMaster", "01.png"))
                    .convert("RGB"))
    Image.fromarray(gt).save(gui / "q10.jpg", quality=10)
    (gui / "shot.sh").write_text(SHOT_SCRIPT)
    env = gimp_env(gui)
    env["FBCNN_GIMP_LOG"] = str(gui / "plugin.log")
    G = str(gui)

    def dump(name):
        return {"op": "dump", "path": f"{G}/{name}.raw", "format": "R'G'B' u8"}

    jobs = [{"name": "dialog", "keep": True, "steps": [
        {"op": "load", "path": f"{G}/q10.jpg"}, {"op": "display"}, dump("before"),
        {"op": "shell", "background": True,
         "cmd": f"sh {G}/shot.sh {G}/plugin.log {G} > {G}/shot.log 2>&1"},
        {"op": "filter", "run_mode": "INTERACTIVE", "args": model_args}, dump("after_ok"),
        keys("ctrl+z"), dump("after_undo"), keys("ctrl+y"), dump("after_redo"),
        keys("ctrl+z"),
        {"op": "filter", "run_mode": "WITH_LAST_VALS", "args": {}}, dump("after_last"),
    ]}]
    core_path = os.environ.get("FBCNN_TEST_CORE_PATH")
    run = gh.run_jobs(host, gui, jobs, env, gui=True, timeout=600,
                      binds=[work] + ([core_path] if core_path else []))
    sys.stderr.write(f"\n[gimp] GIMP with UI under Xvfb ran the dialog job in "
                     f"{run.seconds:.1f} s\n")
    (gui / "gimp.log").write_text(run.log())
    run.dir = gui
    run.plugin_log = (gui / "plugin.log").read_text() if (gui / "plugin.log").exists() else ""
    # One picture, one source: the newest GIMP's dialog.
    if (os.environ.get("FBCNN_UPDATE_SCREENSHOT") and host == HOSTS[-1]
            and (gui / "dialog.png").exists()):
        import shutil
        shutil.copy2(gui / "dialog.png", REPO / "docs" / "gimp-dialog.png")
    return run


def test_dialog_shows_detected_qf_and_preview(gui_run):
    log = gui_run.plugin_log
    assert "dialog: open, auto True, slider sensitive False" in log, gui_run.log()
    offered = [l for l in log.splitlines() if "models offered" in l][0]
    assert "auto" in offered and "color" not in offered, offered  # none downloaded
    if TRAINED.is_file():
        assert "compact" in offered, offered
    # No Intel GPU or NPU here: those choices are greyed out.
    devices = [l for l in log.splitlines() if "devices offered" in l][0]
    assert devices.endswith("devices offered: auto, gpu, cpu"), devices
    shot_time = float((gui_run.dir / "shot_time").read_text())
    lines = {}
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        lines.setdefault(text.split(" for ")[0], float(stamp))
    detected = "fbcnn_gimp: dialog: Detected QF 10 (file quantization tables)"
    assert detected in lines and lines[detected] < shot_time, log
    shown = "fbcnn_gimp: dialog: preview shown"
    assert shown in lines and lines[shown] < shot_time, log
    shot = Image.open(gui_run.dir / "dialog.png")
    assert shot.width >= 400 and shot.height >= 300
    assert np.asarray(shot.convert("L")).std() > 20   # not a blank window


def test_dialog_draws_without_gimp_warnings(gui_run):
    """GIMP checks every dialog widget for a mnemonic and complains on stderr
    ("no mnemonic for property output" on 3.2's radio frames); our dialog gives it
    nothing to complain about, and no Python warning escapes the plug-in."""
    log = gui_run.proc.stdout + gui_run.proc.stderr   # all of it, not the tail
    assert "batch command executed successfully" in log, gui_run.log()
    for text in ("no mnemonic", "ResourceWarning", "DeprecationWarning", "Traceback"):
        assert text not in log, [line for line in log.splitlines() if text in line]


def test_dialog_manual_slider_updates_the_preview_debounced(gui_run):
    log = gui_run.plugin_log
    assert "dialog: auto False, slider sensitive True" in log, log
    after_toggle = log[log.index("dialog: auto False"):]
    # Five quick slider steps: one debounced request at the final QF (a request
    # for the toggle itself may still have been running, and is then cancelled).
    requests = [l for l in after_toggle.splitlines() if "preview requested" in l]
    assert requests[-1].endswith("at QF 15") and len(requests) <= 3, requests
    assert "preview shown for" in after_toggle.split("at QF 15")[-1] or \
        any(l.endswith("at QF 15") and "shown" in l for l in after_toggle.splitlines())


def test_dialog_navigator_moves_the_preview(gui_run):
    log = gui_run.plugin_log
    assert "preview shown for Region(0, 0, 200, 200) at QF 15" in log, log


def test_dialog_ok_applies_and_undo_is_one_step(gui_run):
    rec = gui_run.step("dialog", "filter", 0)
    assert rec["status"] == "success" and rec["values"][:2] == [15, "manual"], rec
    size = (500, 500)
    before = raw(gui_run, "before", size=size)
    after = raw(gui_run, "after_ok", size=size)
    assert not np.array_equal(before, after)
    # One Ctrl+Z restores the original exactly, one Ctrl+Y the result: the
    # filter is one undo step.
    assert gui_run.step("dialog", "display")["undo_enabled"]
    undo, redo = gui_run.step("dialog", "keys", 0), gui_run.step("dialog", "keys", 1)
    assert undo["changed"] and redo["changed"], (undo, redo)
    sys.stderr.write(f"\n[gimp] undo took {undo['presses']} Ctrl+Z, redo {redo['presses']} Ctrl+Y\n")
    assert np.array_equal(raw(gui_run, "after_undo", size=size), before)
    assert np.array_equal(raw(gui_run, "after_redo", size=size), after)


def test_with_last_vals_repeats_the_dialog_run(gui_run):
    rec = gui_run.step("dialog", "filter", 1)
    assert rec["status"] == "success", rec
    size = (500, 500)
    assert np.array_equal(raw(gui_run, "after_last", size=size),
                          raw(gui_run, "after_ok", size=size))
